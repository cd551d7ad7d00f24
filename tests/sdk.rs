//! The official Python SDK (`lark-oapi`) parses every request body clockbridge sends, for all four
//! endpoints, into its own request-body models, with no unknown field and no mistyped value.

use clockbridge::feishu::lanes::accruals::KIND as KIND_LEAVE_ACCRUAL;
use clockbridge::feishu::lanes::approvals::KIND as KIND_USER_APPROVAL;
use clockbridge::feishu::lanes::reports::KIND as KIND_ARCHIVE_REPORT;
use clockbridge::hr::{submit_file, HrKind, ReportArgs};
use clockbridge_testkit::standin::{AccrualRecord, Api, StandinConfig};
use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn every_request_body_parses_into_the_official_sdk_models() {
    let python = python_with("lark_oapi");
    let env = Env::new(StandinConfig::default()).await;
    env.standin.set_record_bodies(true);
    env.standin.add_accrual_record(AccrualRecord {
        id: "6893014062142064135".into(),
        employment_id: "6982509313466189342".into(),
        leave_type_id: "7111688079785723436".into(),
        quantity: "1".into(),
        expiration_date: "2026-12-31".into(),
        granted_by: 2,
        patches: 0,
    });
    let running = env.start("").await;
    submit_all(&running, punches("door-1", 60)).await;

    // every field each page lets a caller send
    let approvals = json!({"user_approval": {"user_id": "abd754f7", "date": "20260302", "time_zone": "Asia/Shanghai",
        "outs": [{"uniq_id": "out-city", "unit": 2, "interval": 3600, "start_time": "2026-03-02 09:00:00",
            "end_time": "2026-03-02 10:00:00", "i18n_names": {"ch": "外出", "en": "Out", "ja": "外出"},
            "default_locale": "en", "reason": "bank", "idempotent_id": "o-1"}],
        "leaves": [{"uniq_id": "annual", "unit": 1, "interval": 28800, "start_time": "2026-03-03 09:00:00",
            "end_time": "2026-03-03 18:00:00", "i18n_names": {"ch": "年假"}, "default_locale": "ch",
            "reason": "family"}],
        "overtime_works": [{"duration": 1.5, "unit": 2, "category": 3, "type": 2,
            "start_time": "2026-03-07 09:00:00", "end_time": "2026-03-07 10:30:00", "reason": "release", "idempotent_id": "ot-1"}],
        "trips": [{"start_time": "2026-03-04 09:00:00", "end_time": "2026-03-05 18:00:00", "reason": "training",
            "approve_pass_time": "2026-03-01 12:00:00", "approve_apply_time": "2026-03-01 11:00:00",
            "departure": {"region_level": "l3", "region_id": "6863333418483058189"},
            "destinations": [{"region_level": "l3", "region_id": "1"}, {"region_id": "2"}],
            "transportation": [1, 4], "trip_type": 2, "remarks": "by train"}]}});
    let report = json!({"month": "202603", "operator_id": "op1", "archive_rule_id": "7",
        "archive_report_datas": [{"member_id": "m1", "start_time": "20260301", "end_time": "20260331",
            "field_datas": [{"code": "late_count", "value": "1"}, {"code": "note"}]}]});
    let accrual = json!({"leave_granting_record_id": "6893014062142064135", "employment_id": "6982509313466189342",
        "leave_type_id": "7111688079785723436", "reason": [{"lang": "zh_CN", "value": "年度发放"}, {"lang": "en_US", "value": "yearly"}],
        "time_offset": 480, "expiration_date": "2027-01-01", "quantity": "10.5", "user_id_type": "user_id"});
    for (kind, name, body) in [
        (HrKind::Approvals, "a.json", approvals),
        (HrKind::ArchiveReport, "r.json", report),
        (HrKind::LeaveAccruals, "l.json", accrual),
    ] {
        let p = env.dir.path().join(name);
        std::fs::write(&p, body.to_string()).unwrap();
        submit_file(
            &running.queue,
            kind,
            &p,
            &ReportArgs::default(),
            encoding_rs::UTF_8,
        )
        .await
        .unwrap();
        running.wake_kind(kind.queue_kind());
    }
    running
        .wait_for(PATIENCE, |c| {
            let d = |k: &str| c.by_kind.get(k).map(|s| s.delivered).unwrap_or(0);
            c.total.dead == 0
                && d("user_flow") == 60
                && d(KIND_USER_APPROVAL) == 4
                && d(KIND_ARCHIVE_REPORT) == 1
                && d(KIND_LEAVE_ACCRUAL) == 1
        })
        .await
        .unwrap();
    running.stop().await;

    let dir = env.dir.path().join("bodies");
    std::fs::create_dir_all(&dir).unwrap();
    let bodies = env.standin.recorded_bodies();
    for (i, (api, body)) in bodies.iter().enumerate() {
        let name = match api {
            Api::UserFlows => "user_flows",
            Api::UserApprovals => "user_approvals",
            Api::UploadReport => "upload_report",
            Api::LeaveAccrual => "leave_accrual",
            // reads are not writes the SDK's types check
            Api::UserFlowGet | Api::UserFlowQuery => continue,
        };
        std::fs::write(dir.join(format!("{name}-{i:03}.json")), body).unwrap();
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_bodies.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checked"), "{stdout}");
}
