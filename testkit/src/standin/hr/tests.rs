//! The HR endpoints of the stand-in, through HTTP as a client sees them.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::standin::{
    codes, AccrualRecord, Api, DedupMode, Standin, StandinConfig, LEAVE_ACCRUAL_PATH, TOKEN_PATH,
    UPLOAD_REPORT_PATH, USER_APPROVALS_PATH,
};

async fn setup() -> (Standin, reqwest::Client, String) {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = reqwest::Client::new();
    let v: Value = c
        .post(format!("{}{TOKEN_PATH}", s.base_url()))
        .json(&json!({"app_id": "cli_standin", "app_secret": "standin-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = v["tenant_access_token"].as_str().unwrap().to_string();
    (s, c, t)
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    t: &str,
    body: Value,
) -> (u16, Value) {
    let r = c
        .request(method, url)
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn approvals_are_checked_deduplicated_and_stored() {
    let (s, c, t) = setup().await;
    let url = format!(
        "{}{}?employee_type=employee_id",
        s.base_url(),
        USER_APPROVALS_PATH
    );
    let out = json!({"uniq_id": "9496E43696967658A512969523E89870", "unit": 1, "interval": 3600,
        "start_time": "2021-01-04 09:00:00", "end_time": "2021-01-04 19:00:00",
        "i18n_names": {"ch": "外出"}, "default_locale": "ch", "reason": "r", "idempotent_id": "o1"});
    let (st, v) = call(
        &c,
        reqwest::Method::POST,
        url.clone(),
        &t,
        json!({"user_approval": {"user_id": "u", "date": "20210104", "outs": [out.clone()]}}),
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (400, Some(1_225_001)));
    assert!(v["data"]["OutErrorRecords"]
        .as_str()
        .unwrap()
        .contains("shorter than 14"));
    let mut ok = out;
    ok["uniq_id"] = json!("city");
    let body = json!({"user_approval": {"user_id": "u", "date": "20210104", "outs": [ok]}});
    for _ in 0..2 {
        let (st, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body.clone()).await;
        assert_eq!((st, v["code"].as_i64()), (200, Some(0)));
    }
    assert_eq!(s.approvals().len(), 1);
    assert_eq!(s.approval_write_counts()["out:o1"], 1);
    s.set_dedup(DedupMode::Conflict);
    let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body).await;
    assert_eq!(v["msg"], "the object already exists");
    let (_, v) = call(
        &c,
        reqwest::Method::POST,
        url,
        &t,
        json!({"user_approval": {"colour": 1}}),
    )
    .await;
    assert_eq!(v["code"], codes::PARAM_INVALID);
    assert_eq!(s.requests_to(Api::UserApprovals), 5);
}

#[tokio::test]
async fn report_replies_list_unknown_members_and_codes() {
    let (s, c, t) = setup().await;
    s.set_known_users(Some(HashSet::from(["m1".to_string()])));
    s.set_report_codes(Some(HashSet::from(["a".to_string()])));
    s.set_archive_rules(Some(HashSet::from(["1".to_string()])));
    let url = format!(
        "{}{}?employee_type=employee_id",
        s.base_url(),
        UPLOAD_REPORT_PATH
    );
    let row = |m: &str| {
        json!({"member_id": m, "start_time": "20240901", "end_time": "20240930",
        "field_datas": [{"code": "a", "value": "1"}, {"code": "zz", "value": "2"}]})
    };
    let body = json!({"month": "202409", "operator_id": "op", "archive_rule_id": "1",
        "archive_report_datas": [row("m1"), row("m9")]});
    let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body.clone()).await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["invalid_member_id"], json!(["m9"]));
    assert_eq!(v["data"]["invalid_code"], json!(["zz"]));
    let stored = s.report_values();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored.values().next().unwrap().len(), 1);
    let mut other = body.clone();
    other["archive_rule_id"] = json!("2");
    let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, other).await;
    assert_eq!(v["msg"], "archive_rule_id not exist");
    let mut big = body;
    big["archive_report_datas"] = Value::Array((0..51).map(|_| row("m1")).collect());
    let (_, v) = call(&c, reqwest::Method::POST, url, &t, big).await;
    assert_eq!(v["code"], codes::PARAM_INVALID);
}

#[tokio::test]
async fn accrual_patches_follow_the_error_table() {
    let (s, c, t) = setup().await;
    s.add_accrual_record(AccrualRecord {
        id: "g1".into(),
        employment_id: "e1".into(),
        leave_type_id: "lt".into(),
        quantity: "1".into(),
        granted_by: 2,
        ..AccrualRecord::default()
    });
    let url = |q: &str| format!("{}{}/lt?user_id_type={q}", s.base_url(), LEAVE_ACCRUAL_PATH);
    let body = |id: &str, q: &str| {
        json!({"leave_granting_record_id": id, "employment_id": "e1",
        "leave_type_id": "lt", "reason": [{"lang": "zh_CN", "value": "x"}], "quantity": q})
    };
    let cases = [
        (url("user_id"), body("g1", "12000"), 1_220_025),
        (url("user_id"), body("g1", "1.1234567"), 1_220_026),
        (url("user_id"), body("g1", "x"), 1_220_004),
        (url("user_id"), body("nope", "1"), 1_220_005),
        (url("employee_id"), body("g1", "1"), 1_220_016),
    ];
    for (u, b, code) in cases {
        let (st, v) = call(&c, reqwest::Method::PATCH, u, &t, b).await;
        assert_eq!((st, v["code"].as_i64()), (400, Some(code)), "{v}");
    }
    let (_, v) = call(
        &c,
        reqwest::Method::PATCH,
        url("user_id"),
        &t,
        body("g1", "2.5"),
    )
    .await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["record"]["granting_quantity"], "2.5");
    assert_eq!(s.accrual_record("g1").unwrap().patches, 1);
}
