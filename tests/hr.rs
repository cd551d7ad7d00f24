//! HR data end to end: files submitted (CLI, in-process, inbox), validated whole, queued, and delivered
//! to the stand-in's user_approvals, upload_report and leave_accrual_record endpoints.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clockbridge::daemon::Running;
use clockbridge::feishu::lanes::accruals::KIND as KIND_LEAVE_ACCRUAL;
use clockbridge::feishu::lanes::approvals::KIND as KIND_USER_APPROVAL;
use clockbridge::feishu::lanes::reports::KIND as KIND_ARCHIVE_REPORT;
use clockbridge::hr::{submit_file, HrKind, ReportArgs, SubmitReport};
use clockbridge::queue::StateCounts;
use clockbridge_testkit::standin::{AccrualRecord, Api, DedupMode, Fault, StandinConfig};
use serde_json::{json, Value};

use crate::util::*;

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Submits in-process (as the CLI does) and wakes the kind's sender.
async fn submit(running: &Running, kind: HrKind, path: &Path, args: &ReportArgs) -> SubmitReport {
    let r = submit_file(&running.queue, kind, path, args, encoding_rs::UTF_8)
        .await
        .unwrap();
    running.wake_kind(kind.queue_kind());
    r
}

fn kind(c: &clockbridge::queue::Counts, k: &str) -> StateCounts {
    c.by_kind.get(k).copied().unwrap_or_default()
}

/// Waits until the counts of kind `k` satisfy `pred`, and returns them.
async fn wait_kind(
    running: &Running,
    k: &'static str,
    pred: impl Fn(StateCounts) -> bool,
) -> StateCounts {
    let c = running
        .wait_for(PATIENCE, |c| pred(kind(c, k)))
        .await
        .unwrap();
    kind(&c, k)
}

fn leave(user: &str, id: &str, day: u32) -> Value {
    json!({"type": "leave", "user_id": user, "date": format!("202603{day:02}"),
        "uniq_id": "annual", "unit": 1, "interval": 28800,
        "start_time": format!("2026-03-{day:02} 09:00:00"), "end_time": format!("2026-03-{day:02} 18:00:00"),
        "i18n_names": {"ch": "年假", "en": "Annual leave"}, "default_locale": "ch",
        "reason": "family", "idempotent_id": id})
}

fn approvals_body() -> Value {
    json!({"user_approval": {"user_id": "abd754f7", "date": "20260302",
        "leaves": [leave("abd754f7", "hr-leave-1", 2).as_object().unwrap().iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "user_id" | "date"))
            .map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>()],
        "overtime_works": [{"duration": 2.5, "unit": 2, "category": 2, "type": 1,
            "start_time": "2026-03-07 09:00:00", "end_time": "2026-03-07 11:30:00", "reason": "release"}],
        "trips": [{"start_time": "2026-03-03 09:00:00", "end_time": "2026-03-04 18:00:00", "reason": "training",
            "approve_pass_time": "2026-03-01 12:00:00", "approve_apply_time": "2026-03-01 11:00:00",
            "transportation": [2], "trip_type": 2}]}})
}

// ---------------------------------------------------------------- approvals

#[tokio::test]
async fn a_gb18030_approvals_csv_is_refused_as_utf8_and_delivered_with_its_encoding() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    let cfg = env.write_config("");
    // a spreadsheet on a Chinese Windows saves CSV in the system code page
    let csv = "type,user_id,date,start_time,end_time,idempotent_id,reason,unit,interval,uniq_id,name_ch,default_locale\n\
               leave,u-gbk,20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,HR-GBK-1,探亲 家事,1,28800,annual,年假,ch\n";
    let (bytes, _, _) = encoding_rs::GB18030.encode(csv);
    let file = env.dir.path().join("approvals-gbk.csv");
    std::fs::write(&file, &bytes).unwrap();

    let out = cli(&["submit", "approvals", file.to_str().unwrap()], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: the file is not UTF-8 text"),
        "{stderr}"
    );
    assert_eq!(
        running.queue.counts().await.unwrap().total.outstanding(),
        0,
        "nothing of a refused file is queued"
    );

    let out = cli(
        &[
            "submit",
            "approvals",
            "--encoding",
            "gb18030",
            file.to_str().unwrap(),
        ],
        &cfg,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_kind(&running, KIND_USER_APPROVAL, |k| k.delivered == 1).await;
    let stored = env.standin.approvals();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].item["reason"], "探亲 家事");
    assert_eq!(stored[0].item["i18n_names"]["ch"], "年假");
    running.stop().await;
}

#[tokio::test]
async fn approvals_file_is_queued_beside_the_daemon_and_delivered_once() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    let cfg = env.write_config("");
    let file = write(
        env.dir.path(),
        "approvals.json",
        &serde_json::to_string_pretty(&approvals_body()).unwrap(),
    );
    let out = cli(&["submit", "approvals", file.to_str().unwrap()], &cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 records: 3 queued"), "{stdout}");
    // another process queued them: the idle sender picks them up on its next look
    wait_kind(&running, KIND_USER_APPROVAL, |k| k.delivered == 3).await;
    let stored = env.standin.approvals();
    assert_eq!(stored.len(), 3);
    let types: HashSet<String> = stored.iter().map(|a| a.item_type.clone()).collect();
    assert_eq!(
        types,
        HashSet::from(["leave".into(), "overtime".into(), "trip".into()])
    );
    assert!(env
        .standin
        .approval_write_counts()
        .values()
        .all(|n| *n == 1));
    assert_eq!(env.standin.approval_write_counts()["leave:hr-leave-1"], 1);

    // the same file again: nothing new
    let out = cli(&["submit", "approvals", file.to_str().unwrap()], &cfg);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 queued, 3 already queued"));
    let st = cli(&["status", "--json"], &cfg);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["kinds"]["user_approval"]["delivered"], 3);
    assert_eq!(v["kinds"]["archive_report"]["pending"], 0);
    assert_eq!(v["queue"]["delivered"], 3);
    let text = String::from_utf8_lossy(&cli(&["status"], &cfg).stdout).to_string();
    assert!(text.contains("hr records:"), "{text}");
    assert!(
        text.contains("user_approval   pending 0  in flight 0  delivered 3  dead 0"),
        "{text}"
    );
    let snap = running.snapshot();
    assert_eq!(snap.senders["user_approval"].delivered, 3);
    assert_eq!(snap.senders["user_approval"].requests, 3);
    running.stop().await;
    assert_eq!(env.standin.approvals().len(), 3);
}

#[tokio::test]
async fn approvals_file_with_one_bad_record_is_refused_whole_with_the_line_named() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    let csv = "type,user_id,date,start_time,end_time,unit,interval,uniq_id,name_ch,default_locale,reason,idempotent_id\n\
        leave,u1,20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,1,28800,annual,年假,ch,family,l-1\n\
        leave,u2,20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,9,28800,annual,年假,ch,family,l-2\n\
        leave,u3,20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,1,28800,annual,年假,ch,family,l-3\n";
    let file = write(env.dir.path(), "approvals.csv", csv);
    let out = cli(&["submit", "approvals", file.to_str().unwrap()], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused, nothing queued (1 problem)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3: item.leaves[0].unit: 9 is not one of 1 (day)"),
        "{stderr}"
    );
    let conn = clockbridge::queue::open_read_only(&env.queue_path()).unwrap();
    let c = clockbridge::queue::read_counts(&conn).unwrap();
    assert_eq!(c.total, StateCounts::default(), "nothing may be queued");
}

#[tokio::test]
async fn approval_lost_response_after_the_write_is_retried_without_a_second_leave() {
    for dedup in [DedupMode::Silent, DedupMode::Conflict] {
        let env = Env::new(StandinConfig {
            dedup,
            ..StandinConfig::default()
        })
        .await;
        env.standin
            .push_fault_on(Api::UserApprovals, Fault::LoseResponseAfterApply);
        let running = env.start("").await;
        let file = write(
            env.dir.path(),
            "a.jsonl",
            &format!("{}\n", leave("u1", "hr-9", 2)),
        );
        submit(&running, HrKind::Approvals, &file, &ReportArgs::default()).await;
        wait_kind(&running, KIND_USER_APPROVAL, |k| k.delivered == 1).await;
        assert_eq!(env.standin.requests_to(Api::UserApprovals), 2, "{dedup:?}");
        assert_eq!(
            env.standin.approvals().len(),
            1,
            "{dedup:?}: one leave only"
        );
        assert_eq!(env.standin.approval_write_counts()["leave:hr-9"], 1);
        assert_eq!(env.standin.stats().lost_responses, 1);
        running.stop().await;
    }
}

#[tokio::test]
async fn approval_lost_response_then_no_row_affected_is_retried_and_delivered_once() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin
        .push_fault_on(Api::UserApprovals, Fault::LoseResponseAfterApply);
    env.standin
        .push_fault_on(Api::UserApprovals, Fault::NoRowAffected);
    let running = env.start("").await;
    let file = write(
        env.dir.path(),
        "a.jsonl",
        &format!("{}\n", leave("u1", "hr-9", 2)),
    );
    submit(&running, HrKind::Approvals, &file, &ReportArgs::default()).await;
    let k = wait_kind(&running, KIND_USER_APPROVAL, |k| k.delivered == 1).await;
    assert_eq!(k.dead, 0);
    assert_eq!(env.standin.requests_to(Api::UserApprovals), 3);
    assert_eq!(env.standin.approvals().len(), 1, "one leave only");
    assert_eq!(env.standin.approval_write_counts()["leave:hr-9"], 1);
    running.stop().await;
}

#[tokio::test]
async fn approval_refusals_become_dead_letters_with_the_platforms_code_and_the_rest_is_delivered() {
    let env = Env::new(StandinConfig {
        known_users: Some(HashSet::from(["u1".to_string(), "u3".to_string()])),
        ..StandinConfig::default()
    })
    .await;
    // the first request (u1's item) meets the platform's own item checks: 1225001 with error records
    env.standin.push_fault_on(
        Api::UserApprovals,
        Fault::Custom {
            status: 400,
            code: 1225001,
            msg: "param is invalis".into(),
        },
    );
    let running = env.start("").await;
    let lines: Vec<String> = [("u1", "a"), ("ghost", "b"), ("u3", "c")]
        .iter()
        .map(|(u, id)| leave(u, id, 2).to_string())
        .collect();
    let file = write(env.dir.path(), "a.jsonl", &lines.join("\n"));
    submit(&running, HrKind::Approvals, &file, &ReportArgs::default()).await;
    wait_kind(&running, KIND_USER_APPROVAL, |k| {
        k.dead == 2 && k.delivered == 1
    })
    .await;
    let dead = running.queue.dead_letters(10).await.unwrap();
    let codes: HashSet<(String, Option<i64>)> = dead
        .iter()
        .map(|d| (d.device_user_id.clone(), d.code))
        .collect();
    assert_eq!(
        codes,
        HashSet::from([
            ("u1".into(), Some(1225001)),
            ("ghost".into(), Some(1220004))
        ])
    );
    assert!(dead
        .iter()
        .all(|d| d.kind == KIND_USER_APPROVAL && d.log_id.is_some()));
    assert_eq!(env.standin.approvals().len(), 1);
    assert_eq!(env.standin.approvals()[0].user_id, "u3");

    // after the fix, `dlq retry` sends u1's item again
    let retried = running
        .queue
        .retry_dead_selected(
            clockbridge::feishu::lanes::rules,
            clockbridge::queue::DeadSelection {
                reason: Some("1225001".into()),
                ..Default::default()
            },
            None,
            i64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(retried.pending, 1);
    running.wake_kind(KIND_USER_APPROVAL);
    wait_kind(&running, KIND_USER_APPROVAL, |k| k.delivered == 2).await;
    running.stop().await;
}

// ---------------------------------------------------------------- archived reports

fn report_rows(members: &[&str], value: &str) -> String {
    members
        .iter()
        .map(|m| {
            json!({"member_id": m, "start_time": "20260301", "end_time": "20260331",
                "field_datas": [{"code": "late_count", "value": value}, {"code": "absent_days", "value": "0"}]})
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn report_args() -> ReportArgs {
    ReportArgs {
        archive_rule_id: Some("7".into()),
        month: Some("202603".into()),
        operator_id: Some("op1".into()),
    }
}

#[tokio::test]
async fn archive_report_rows_are_sent_50_to_a_call_and_delivered() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    let cfg = env.write_config("");
    let members: Vec<String> = (0..120).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let file = write(env.dir.path(), "report.jsonl", &report_rows(&refs, "1"));
    let out = cli(
        &[
            "submit",
            "archive-report",
            "--rule",
            "7",
            "--month",
            "202603",
            "--operator",
            "op1",
            file.to_str().unwrap(),
        ],
        &cfg,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_kind(&running, KIND_ARCHIVE_REPORT, |k| k.delivered == 120).await;
    assert_eq!(
        env.standin.requests_to(Api::UploadReport),
        3,
        "50 + 50 + 20"
    );
    let values = env.standin.report_values();
    assert_eq!(values.len(), 120);
    let key = (
        "7".to_string(),
        "202603".to_string(),
        "m5".to_string(),
        "20260301".to_string(),
        "20260331".to_string(),
    );
    assert_eq!(values[&key]["late_count"], "1");
    running.stop().await;
}

#[tokio::test]
async fn archive_report_file_with_one_bad_row_is_refused_whole_with_the_line_named() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    let csv = "member_id,start_time,end_time,late_count\nm1,20260301,20260331,1\n\nm2,2026-03-01,20260331,1\n";
    let file = write(env.dir.path(), "report.csv", csv);
    let out = cli(
        &[
            "submit",
            "archive-report",
            "--rule",
            "7",
            "--month",
            "202603",
            "--operator",
            "op1",
            file.to_str().unwrap(),
        ],
        &cfg,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(
            "line 4: row.start_time: \"2026-03-01\" is not a date in the format yyyyMMdd"
        ),
        "{stderr}"
    );
    let out = cli(&["submit", "archive-report", file.to_str().unwrap()], &cfg);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("archive_rule_id: is required (or --rule)")
    );
    let conn = clockbridge::queue::open_read_only(&env.queue_path()).unwrap();
    assert_eq!(
        clockbridge::queue::read_counts(&conn).unwrap().total,
        StateCounts::default()
    );
}

#[tokio::test]
async fn archive_report_lost_response_is_resent_and_the_values_stay_the_same() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin
        .push_fault_on(Api::UploadReport, Fault::LoseResponseAfterApply);
    let running = env.start("").await;
    let file = write(env.dir.path(), "r.jsonl", &report_rows(&["m1", "m2"], "3"));
    submit(&running, HrKind::ArchiveReport, &file, &report_args()).await;
    wait_kind(&running, KIND_ARCHIVE_REPORT, |k| k.delivered == 2).await;
    assert_eq!(env.standin.requests_to(Api::UploadReport), 2);
    // written twice (an upload sets absolute values), the same values
    assert_eq!(env.standin.report_rows_written(), 4);
    let values = env.standin.report_values();
    assert_eq!(values.len(), 2);
    assert!(values.values().all(|f| f["late_count"] == "3"));
    running.stop().await;
}

#[tokio::test]
async fn archive_report_lost_response_then_no_row_affected_is_retried_and_delivered() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin
        .push_fault_on(Api::UploadReport, Fault::LoseResponseAfterApply);
    env.standin
        .push_fault_on(Api::UploadReport, Fault::NoRowAffected);
    let running = env.start("").await;
    let file = write(env.dir.path(), "r.jsonl", &report_rows(&["m1", "m2"], "3"));
    submit(&running, HrKind::ArchiveReport, &file, &report_args()).await;
    let k = wait_kind(&running, KIND_ARCHIVE_REPORT, |k| k.delivered == 2).await;
    assert_eq!(k.dead, 0);
    assert_eq!(env.standin.requests_to(Api::UploadReport), 3);
    let values = env.standin.report_values();
    assert_eq!(values.len(), 2);
    assert!(values.values().all(|f| f["late_count"] == "3"));
    running.stop().await;
}

#[tokio::test]
async fn archive_report_reply_listing_invalid_members_and_codes_marks_just_those_rows_dead() {
    let env = Env::new(StandinConfig {
        known_users: Some(HashSet::from(["m1".to_string(), "m3".to_string()])),
        ..StandinConfig::default()
    })
    .await;
    env.standin.set_report_codes(Some(HashSet::from([
        "late_count".to_string(),
        "absent_days".to_string(),
    ])));
    let running = env.start("[http]\nlisten = \"127.0.0.1:0\"\n").await;
    let mut rows = report_rows(&["m1", "m2"], "1");
    rows.push('\n');
    rows.push_str(
        &json!({"member_id": "m3", "start_time": "20260301", "end_time": "20260331",
            "field_datas": [{"code": "late_count", "value": "2"}, {"code": "no_such_code", "value": "5"}]})
        .to_string(),
    );
    let file = write(env.dir.path(), "r.jsonl", &rows);
    submit(&running, HrKind::ArchiveReport, &file, &report_args()).await;
    wait_kind(&running, KIND_ARCHIVE_REPORT, |k| {
        k.delivered == 1 && k.dead == 2
    })
    .await;
    assert_eq!(
        env.standin.requests_to(Api::UploadReport),
        1,
        "one call, no split"
    );
    let dead = running.queue.dead_letters(10).await.unwrap();
    let reasons: HashSet<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d.device_user_id.clone(),
                d.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        HashSet::from([
            ("m2".into(), "invalid_member_id".into()),
            ("m3".into(), "invalid_code".into())
        ])
    );
    let m2 = dead.iter().find(|d| d.device_user_id == "m2").unwrap();
    assert_eq!(m2.code, Some(0));
    assert!(
        m2.message
            .as_deref()
            .unwrap()
            .contains("invalid_member_id [\"m2\"]"),
        "{m2:?}"
    );
    assert!(m2.log_id.is_some());
    let metrics = reqwest::get(format!("http://{}/metrics", running.http_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "clockbridge_hr_dead_records_total{kind=\"archive_report\"} 2",
        "clockbridge_hr_delivered_records_total{kind=\"archive_report\"} 1",
        "clockbridge_queue_records{kind=\"archive_report\",state=\"dead\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn a_newer_report_value_is_never_overtaken_by_an_older_one() {
    let env = Env::new(StandinConfig::default()).await;
    // the first upload (the older value) fails and backs off; the newer one must wait for it
    env.standin
        .push_fault_on(Api::UploadReport, Fault::ServerError);
    let running = env.start("").await;
    let older = write(env.dir.path(), "a.jsonl", &report_rows(&["m1"], "1"));
    let newer = write(env.dir.path(), "b.jsonl", &report_rows(&["m1"], "2"));
    let a = submit(&running, HrKind::ArchiveReport, &older, &report_args()).await;
    let b = submit(&running, HrKind::ArchiveReport, &newer, &report_args()).await;
    assert_eq!((a.queued, b.queued), (1, 1));
    wait_kind(&running, KIND_ARCHIVE_REPORT, |k| k.delivered == 2).await;
    let values = env.standin.report_values();
    assert_eq!(values.values().next().unwrap()["late_count"], "2");
    // the latest value again: no change; the older one again: a new, newest value
    let again = submit(&running, HrKind::ArchiveReport, &newer, &report_args()).await;
    assert_eq!((again.queued, again.duplicates), (0, 1));
    let back = submit(&running, HrKind::ArchiveReport, &older, &report_args()).await;
    assert_eq!(back.queued, 1);
    wait_kind(&running, KIND_ARCHIVE_REPORT, |k| k.delivered == 3).await;
    assert_eq!(
        env.standin.report_values().values().next().unwrap()["late_count"],
        "1"
    );
    running.stop().await;
}

// ---------------------------------------------------------------- leave accruals

fn record(id: &str, emp: &str) -> AccrualRecord {
    AccrualRecord {
        id: id.into(),
        employment_id: emp.into(),
        leave_type_id: "7111688079785723436".into(),
        quantity: "5".into(),
        expiration_date: "2026-12-31".into(),
        granted_by: 2,
        patches: 0,
    }
}

const ACCRUAL_CSV_HEADER: &str =
    "leave_granting_record_id,employment_id,leave_type_id,quantity,expiration_date,reason,user_id_type\n";

fn accrual_line(id: &str, emp: &str, q: &str) -> String {
    format!("{id},{emp},7111688079785723436,{q},2027-03-31,annual top-up,user_id\n")
}

#[tokio::test]
async fn leave_accrual_updates_are_applied_and_resubmitting_is_a_no_op() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.add_accrual_record(record("g1", "e1"));
    env.standin.add_accrual_record(record("g2", "e2"));
    let running = env.start("").await;
    let cfg = env.write_config("");
    let csv = format!(
        "{ACCRUAL_CSV_HEADER}{}{}",
        accrual_line("g1", "e1", "7.5"),
        accrual_line("g2", "e2", "-1")
    );
    let file = write(env.dir.path(), "accruals.csv", &csv);
    let out = cli(&["submit", "leave-accruals", file.to_str().unwrap()], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_kind(&running, KIND_LEAVE_ACCRUAL, |k| k.delivered == 2).await;
    let g1 = env.standin.accrual_record("g1").unwrap();
    assert_eq!(
        (
            g1.quantity.as_str(),
            g1.expiration_date.as_str(),
            g1.patches
        ),
        ("7.5", "2027-03-31", 1)
    );
    assert_eq!(env.standin.accrual_record("g2").unwrap().quantity, "-1");
    let out = cli(&["submit", "leave-accruals", file.to_str().unwrap()], &cfg);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 queued, 2 already queued"));
    running.stop().await;
    assert_eq!(env.standin.accrual_record("g1").unwrap().patches, 1);
}

#[tokio::test]
async fn leave_accrual_file_with_one_bad_quantity_is_refused_whole_with_the_line_named() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    let csv = format!(
        "{ACCRUAL_CSV_HEADER}{}{}{}",
        accrual_line("g1", "e1", "1"),
        accrual_line("g2", "e2", "1.1234567"),
        accrual_line("g3", "e3", "10000"),
    );
    let file = write(env.dir.path(), "accruals.csv", &csv);
    let out = cli(&["submit", "leave-accruals", file.to_str().unwrap()], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("(2 problems)"), "{stderr}");
    assert!(
        stderr.contains(
            "line 3: quantity: \"1.1234567\" may have at most 6 decimal places (1220026)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4: quantity: \"10000\" must be within -9999 to 9999 (1220025)"),
        "{stderr}"
    );
    let conn = clockbridge::queue::open_read_only(&env.queue_path()).unwrap();
    assert_eq!(
        clockbridge::queue::read_counts(&conn).unwrap().total,
        StateCounts::default()
    );
}

#[tokio::test]
async fn leave_accrual_lost_response_then_retry_sets_the_same_value() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.add_accrual_record(record("g1", "e1"));
    env.standin
        .push_fault_on(Api::LeaveAccrual, Fault::LoseResponseAfterApply);
    let running = env.start("").await;
    let file = write(
        env.dir.path(),
        "a.csv",
        &format!("{ACCRUAL_CSV_HEADER}{}", accrual_line("g1", "e1", "3")),
    );
    submit(
        &running,
        HrKind::LeaveAccruals,
        &file,
        &ReportArgs::default(),
    )
    .await;
    wait_kind(&running, KIND_LEAVE_ACCRUAL, |k| k.delivered == 1).await;
    let g1 = env.standin.accrual_record("g1").unwrap();
    assert_eq!((g1.quantity.as_str(), g1.patches), ("3", 2));
    running.stop().await;
}

#[tokio::test]
async fn leave_accrual_lost_response_then_no_row_affected_is_retried_not_dead() {
    // 1220600 is on the accrual page's list of refusals, but "no row affected" is the
    // integration guide's conflict to retry: the update must not end as a dead letter
    let env = Env::new(StandinConfig::default()).await;
    env.standin.add_accrual_record(record("g1", "e1"));
    env.standin
        .push_fault_on(Api::LeaveAccrual, Fault::LoseResponseAfterApply);
    env.standin
        .push_fault_on(Api::LeaveAccrual, Fault::NoRowAffected);
    let running = env.start("").await;
    let file = write(
        env.dir.path(),
        "a.csv",
        &format!("{ACCRUAL_CSV_HEADER}{}", accrual_line("g1", "e1", "3")),
    );
    submit(
        &running,
        HrKind::LeaveAccruals,
        &file,
        &ReportArgs::default(),
    )
    .await;
    let k = wait_kind(&running, KIND_LEAVE_ACCRUAL, |k| k.delivered == 1).await;
    assert_eq!(k.dead, 0);
    let g1 = env.standin.accrual_record("g1").unwrap();
    // applied by the lost request and by the last one: the same absolute value
    assert_eq!((g1.quantity.as_str(), g1.patches), ("3", 2));
    assert_eq!(env.standin.requests_to(Api::LeaveAccrual), 3);
    running.stop().await;
}

#[tokio::test]
async fn leave_accrual_permanent_errors_are_dead_letters_and_granting_record_exists_is_delivered() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.add_accrual_record(record("g1", "e1"));
    env.standin.add_accrual_record(AccrualRecord {
        granted_by: 1,
        ..record("sys", "e3")
    });
    env.standin.push_fault_on(
        Api::LeaveAccrual,
        Fault::Custom {
            status: 400,
            code: 1220010,
            msg: "Granting record already exists".into(),
        },
    );
    let running = env.start("").await;
    let csv = format!(
        "{ACCRUAL_CSV_HEADER}{}{}{}",
        accrual_line("g1", "e1", "2"),
        accrual_line("nope", "e2", "2"),
        accrual_line("sys", "e3", "2"),
    );
    let file = write(env.dir.path(), "a.csv", &csv);
    submit(
        &running,
        HrKind::LeaveAccruals,
        &file,
        &ReportArgs::default(),
    )
    .await;
    wait_kind(&running, KIND_LEAVE_ACCRUAL, |k| {
        k.delivered == 1 && k.dead == 2
    })
    .await;
    let dead = running.queue.dead_letters(10).await.unwrap();
    let codes: HashSet<(String, Option<i64>)> = dead
        .iter()
        .map(|d| (d.device_user_id.clone(), d.code))
        .collect();
    assert_eq!(
        codes,
        HashSet::from([("e2".into(), Some(1220005)), ("e3".into(), Some(1220031))])
    );
    // the record appears, the dead letter is retried and delivered
    env.standin.add_accrual_record(record("nope", "e2"));
    running
        .queue
        .retry_dead_selected(
            clockbridge::feishu::lanes::rules,
            clockbridge::queue::DeadSelection {
                reason: Some("1220005".into()),
                ..Default::default()
            },
            None,
            i64::MAX,
        )
        .await
        .unwrap();
    running.wake_kind(KIND_LEAVE_ACCRUAL);
    wait_kind(&running, KIND_LEAVE_ACCRUAL, |k| k.delivered == 2).await;
    assert_eq!(env.standin.accrual_record("nope").unwrap().quantity, "2");
    running.stop().await;
}

// ---------------------------------------------------------------- inbox

/// Drops `good` (written under a .part name, then renamed) and `bad` into the `key` inbox, and
/// checks they end in done/ and rejected/ with their reports.
async fn inbox_case(
    key: &str,
    queue_kind: &'static str,
    good: (&str, String),
    bad: (&str, String),
    bad_line: &str,
) {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.add_accrual_record(record("g1", "e1"));
    let dir = env.dir.path().join(format!("inbox-{key}"));
    let running = env
        .start(&format!(
            "[inbox]\n{key} = \"{}\"\npoll_interval = 1\n",
            dir.display()
        ))
        .await;
    // the directories exist once the daemon has started (before systemd hears READY=1)
    assert!(dir.join("done").is_dir() && dir.join("rejected").is_dir());
    let part = write(&dir, &format!("{}.part", good.0), &good.1);
    std::fs::rename(&part, dir.join(good.0)).unwrap();
    write(&dir, bad.0, &bad.1);
    write(&dir, ".hidden.json", "garbage");
    let (done, rejected) = (dir.join("done"), dir.join("rejected"));
    running
        .wait_for(PATIENCE, |c| {
            kind(c, queue_kind).delivered >= 1
                && rejected.join(format!("{}.report.json", bad.0)).exists()
                && done.join(format!("{}.report.json", good.0)).exists()
        })
        .await
        .unwrap();
    assert!(!dir.join(good.0).exists() && !dir.join(bad.0).exists());
    assert!(done.join(good.0).exists() && rejected.join(bad.0).exists());
    assert!(
        dir.join(".hidden.json").exists(),
        "dot-files are never taken"
    );
    let ok: Value = serde_json::from_str(
        &std::fs::read_to_string(done.join(format!("{}.report.json", good.0))).unwrap(),
    )
    .unwrap();
    assert_eq!(ok["status"], "queued");
    assert_eq!(ok["queued"], 1);
    let no: Value = serde_json::from_str(
        &std::fs::read_to_string(rejected.join(format!("{}.report.json", bad.0))).unwrap(),
    )
    .unwrap();
    assert_eq!(no["status"], "rejected");
    assert_eq!(no["queued"], 0);
    let first = &no["errors"][0];
    assert!(
        format!(
            "line {}: {}",
            first["line"],
            first["message"].as_str().unwrap()
        )
        .contains(bad_line),
        "{no}"
    );
    let c = running.queue.counts().await.unwrap();
    assert_eq!(
        kind(&c, queue_kind).delivered + kind(&c, queue_kind).outstanding(),
        1,
        "nothing of the bad file"
    );
    let snap = running.snapshot();
    assert_eq!(snap.inbox[key].files_done, 1);
    assert_eq!(snap.inbox[key].files_rejected, 1);
    running.stop().await;
}

#[tokio::test]
async fn inbox_moves_an_approvals_file_to_done_and_a_bad_one_to_rejected() {
    let mut bad = leave("u2", "x", 2);
    bad["default_locale"] = json!("de");
    inbox_case(
        "approvals",
        KIND_USER_APPROVAL,
        (
            "good.json",
            serde_json::to_string_pretty(&json!([leave("u1", "ok-1", 2)])).unwrap(),
        ),
        ("bad.jsonl", format!("{}\n{bad}\n", leave("u3", "ok-3", 3))),
        "line 2: item.leaves[0].default_locale: \"de\"",
    )
    .await;
}

#[tokio::test]
async fn inbox_moves_an_archive_report_file_to_done_and_a_bad_one_to_rejected() {
    let good = json!({"month": "202603", "operator_id": "op1", "archive_rule_id": "7",
        "archive_report_datas": [{"member_id": "m1", "start_time": "20260301", "end_time": "20260331",
            "field_datas": [{"code": "late_count", "value": "1"}]}]});
    inbox_case(
        "archive_reports",
        KIND_ARCHIVE_REPORT,
        ("good.json", good.to_string()),
        (
            "bad.csv",
            "member_id,start_time,end_time,archive_rule_id,month,operator_id,late_count\nm2,20260301,20260331,7,2026-03,op1,1\n".into(),
        ),
        "line 2: month: \"2026-03\" is not a month in the format yyyyMM",
    )
    .await;
}

#[tokio::test]
async fn inbox_moves_a_leave_accruals_file_to_done_and_a_bad_one_to_rejected() {
    inbox_case(
        "leave_accruals",
        KIND_LEAVE_ACCRUAL,
        (
            "good.csv",
            format!("{ACCRUAL_CSV_HEADER}{}", accrual_line("g1", "e1", "4")),
        ),
        (
            "bad.csv",
            format!("{ACCRUAL_CSV_HEADER}{}", accrual_line("g1", "e1", "abc")),
        ),
        "line 2: quantity: \"abc\" must be a decimal number",
    )
    .await;
}
