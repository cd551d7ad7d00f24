//! The stand-in through HTTP as a client sees it: tokens, batch_create's rules, rate limits,
//! faults, log ids and shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{
    codes, Api, DedupMode, Fault, Standin, StandinConfig, BATCH_CREATE_PATH, MAX_BODY_BYTES,
    SCOPE_RULE, SCOPE_TASK, SCOPE_TASK_READONLY, TOKEN_PATH, USER_FLOWS_PATH,
};

const SECRET: &str = "standin-secret";

fn rec(user: &str, idem: Option<&str>) -> Value {
    let mut r = json!({
        "user_id": user,
        "creator_id": format!("c{user}"),
        "location_name": "Front door",
        "check_time": "1700000000",
        "comment": "clock in",
    });
    if let Some(id) = idem {
        r["idempotent_id"] = json!(id);
    }
    r
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn token(c: &reqwest::Client, s: &Standin) -> String {
    let v: Value = c
        .post(format!("{}{TOKEN_PATH}", s.base_url()))
        .json(&json!({"app_id": "cli_standin", "app_secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["tenant_access_token"].as_str().unwrap().to_owned()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post_batch(c: &reqwest::Client, s: &Standin, token: &str, body: &Value) -> Answer {
    let resp = c
        .post(format!(
            "{}{BATCH_CREATE_PATH}?employee_type=employee_id",
            s.base_url()
        ))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

fn batch(records: Vec<Value>) -> Value {
    json!({ "flow_records": records })
}

#[tokio::test]
async fn token_issue_and_refusal() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let url = format!("{}{TOKEN_PATH}", s.base_url());
    let resp = c
        .post(&url)
        .json(&json!({"app_id": "cli_standin", "app_secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-tt-logid"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 0);
    assert_eq!(v["msg"], "ok");
    assert_eq!(v["expire"], 7200);
    assert!(v.get("data").is_none());
    let t1 = v["tenant_access_token"].as_str().unwrap().to_owned();
    assert!(t1.starts_with("t-standin-"));
    // Plenty of time left: the platform hands out the same token again.
    assert_eq!(token(&c, &s).await, t1);

    for (app_id, secret) in [("cli_standin", "wrong-secret"), ("cli_other", SECRET)] {
        let resp = c
            .post(&url)
            .json(&json!({"app_id": app_id, "app_secret": secret}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let log_id = resp.headers()["x-tt-logid"].to_str().unwrap().to_owned();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains(SECRET) && !text.contains("wrong-secret"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["code"], codes::BAD_CREDENTIALS);
        assert_eq!(v["error"]["log_id"], log_id.as_str());
    }
    let resp = c.post(&url).body("not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // A rotated secret: the old one is refused, the new one accepted.
    s.set_app_secret("rotated");
    let v: Value = c
        .post(&url)
        .json(&json!({"app_id": "cli_standin", "app_secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], codes::BAD_CREDENTIALS);
    let v: Value = c
        .post(&url)
        .json(&json!({"app_id": "cli_standin", "app_secret": "rotated"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 0);
    let st = s.stats();
    assert_eq!(st.token_requests, 7);
    assert_eq!(st.rejected_requests, 4);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let cfg = StandinConfig {
        token_ttl_secs: 1,
        ..Default::default()
    };
    let s = Standin::start(cfg).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", None)]))
            .await
            .body["code"],
        0
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", None)])).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], codes::TOKEN_INVALID);
    // Less than 30 min left: a fresh token each time.
    let t2 = token(&c, &s).await;
    assert_ne!(t2, t);
    assert_eq!(
        post_batch(&c, &s, &t2, &batch(vec![rec("u1", None)]))
            .await
            .body["code"],
        0
    );
}

#[tokio::test]
async fn batch_accepted_and_stored() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let records = vec![
        rec("u1", Some("k1")),
        rec("u2", Some("k2")),
        rec("u3", None),
    ];
    let a = post_batch(&c, &s, &t, &batch(records.clone())).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["code"], 0);
    assert_eq!(a.body["msg"], "success");
    assert_eq!(a.body["data"]["flow_records"], json!(records));
    assert!(a.body.get("error").is_none());
    let log_id = a.headers["x-tt-logid"].to_str().unwrap().to_owned();
    assert!(log_id.contains("standin"));

    s.wait_stored(3).await;
    s.wait_requests(1).await;
    let stored = s.stored();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].record, records[0]);
    assert_eq!(stored[2].record, records[2]);
    assert!(stored.iter().all(|f| f.log_id == log_id));
    assert_eq!(stored[1].employee_type, "employee_id");
    assert_eq!(stored[0].idempotent_id(), Some("k1"));
    let counts = s.write_counts();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts["k1"], 1);
    // store times by idempotent id: the first write of each, none for a record without an id
    let times = s.store_times();
    assert_eq!(times.len(), 2);
    assert_eq!(times["k1"], stored[0].stored_at);
    assert_eq!(times["k2"], stored[1].stored_at);
    let st = s.stats();
    assert_eq!(st.batch_requests, 1);
    assert_eq!(st.records_stored, 3);
    assert_eq!(st.rejected_requests, 0);
    assert_eq!(st.max_requests_in_any_second, 1);
    assert_eq!(st.max_concurrent, 1);
}

#[tokio::test]
async fn more_than_50_records_refused() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let many: Vec<Value> = (0..51).map(|i| rec(&format!("u{i}"), None)).collect();
    let a = post_batch(&c, &s, &t, &batch(many)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], codes::GENERIC);
    assert_eq!(a.body["msg"], "operate too much flow");
    assert_eq!(
        a.body["error"]["log_id"],
        a.headers["x-tt-logid"].to_str().unwrap()
    );

    let a = post_batch(&c, &s, &t, &batch(vec![])).await;
    assert_eq!(a.body["code"], codes::PARAM_INVALID);
    let a = post_batch(&c, &s, &t, &json!({"records": []})).await;
    assert_eq!(a.body["code"], codes::PARAM_INVALID);

    let fifty: Vec<Value> = (0..50).map(|i| rec(&format!("u{i}"), None)).collect();
    assert_eq!(post_batch(&c, &s, &t, &batch(fifty)).await.body["code"], 0);
    assert_eq!(s.stored().len(), 50);
    assert_eq!(s.stats().rejected_requests, 3);
}

#[tokio::test]
async fn missing_required_field_rejects_whole_batch() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let mut bad = rec("u2", Some("k2"));
    bad.as_object_mut().unwrap().remove("comment");
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1")), bad])).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], codes::PARAM_INVALID);
    let msg = a.body["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("param is invalid: flow_records[1].comment"),
        "{msg}"
    );

    let mut empty = rec("u2", None);
    empty["location_name"] = json!("");
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", None), empty])).await;
    assert!(a.body["msg"]
        .as_str()
        .unwrap()
        .contains("flow_records[1].location_name"));

    let mut old = rec("u1", None);
    old["check_time"] = json!("1640966399");
    let a = post_batch(&c, &s, &t, &batch(vec![old])).await;
    assert!(a.body["msg"]
        .as_str()
        .unwrap()
        .contains("flow_records[0].check_time"));

    for bad_time in [
        json!("1700000000000x"),
        json!(1700000000),
        json!("-1"),
        json!("1.5e9"),
    ] {
        let mut r = rec("u1", None);
        r["check_time"] = bad_time;
        let a = post_batch(&c, &s, &t, &batch(vec![r])).await;
        assert_eq!(a.body["code"], codes::PARAM_INVALID);
    }
    let a = post_batch(&c, &s, &t, &batch(vec![json!("not an object")])).await;
    assert_eq!(a.body["code"], codes::PARAM_INVALID);

    assert!(s.stored().is_empty());
    assert!(s.write_counts().is_empty());
    assert_eq!(s.stats().records_stored, 0);
}

#[tokio::test]
async fn unknown_user_listed_in_msg_others_stored() {
    let known: HashSet<String> = ["u1", "u3"].iter().map(|s| s.to_string()).collect();
    let cfg = StandinConfig {
        known_users: Some(known),
        ..Default::default()
    };
    let s = Standin::start(cfg).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let records = vec![
        rec("u1", Some("k1")),
        rec("u2", Some("k2")),
        rec("u3", Some("k3")),
        rec("u4", Some("k4")),
    ];
    let a = post_batch(&c, &s, &t, &batch(records.clone())).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["code"], 0);
    assert_eq!(a.body["msg"], "[u2-cu2, u4-cu4]");
    assert_eq!(
        a.body["data"]["flow_records"],
        json!([records[0].clone(), records[2].clone()])
    );
    let stored: Vec<String> = s
        .stored()
        .iter()
        .map(|f| f.record["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, vec!["u1", "u3"]);
    assert_eq!(s.stats().records_unknown_user, 2);
    assert_eq!(s.stats().rejected_requests, 0);

    // Once the user exists the record goes through.
    s.set_known_users(None);
    let a = post_batch(&c, &s, &t, &batch(vec![records[1].clone()])).await;
    assert_eq!(a.body["msg"], "success");
    assert_eq!(s.stored().len(), 3);
}

#[tokio::test]
async fn silent_dedup_answers_like_created() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let records = vec![
        rec("u1", Some("k1")),
        rec("u2", Some("k2")),
        rec("u3", None),
    ];
    assert_eq!(
        post_batch(&c, &s, &t, &batch(records.clone())).await.body["code"],
        0
    );
    let a = post_batch(&c, &s, &t, &batch(records.clone())).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["code"], 0);
    assert_eq!(a.body["msg"], "success");
    assert_eq!(a.body["data"]["flow_records"], json!(records));
    // k1/k2 not stored again; the record without idempotent_id is.
    assert_eq!(s.stored().len(), 4);
    assert_eq!(s.write_counts()["k1"], 1);
    assert_eq!(s.write_counts()["k2"], 1);
    let st = s.stats();
    assert_eq!(st.records_duplicate, 2);
    assert_eq!(st.records_stored, 4);

    // Repeated within one batch: stored once.
    let a = post_batch(
        &c,
        &s,
        &t,
        &batch(vec![rec("u9", Some("k9")), rec("u9", Some("k9"))]),
    )
    .await;
    assert_eq!(a.body["code"], 0);
    assert_eq!(s.write_counts()["k9"], 1);
}

#[tokio::test]
async fn conflict_dedup_refuses_whole_batch() {
    let cfg = StandinConfig {
        dedup: DedupMode::Conflict,
        ..Default::default()
    };
    let s = Standin::start(cfg).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1"))]))
            .await
            .body["code"],
        0
    );
    let a = post_batch(
        &c,
        &s,
        &t,
        &batch(vec![rec("u2", Some("k2")), rec("u1", Some("k1"))]),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], codes::GENERIC);
    assert_eq!(a.body["msg"], "the object already exists");
    // Repeated within the batch.
    let a = post_batch(
        &c,
        &s,
        &t,
        &batch(vec![rec("u3", Some("k3")), rec("u3", Some("k3"))]),
    )
    .await;
    assert_eq!(a.body["msg"], "the object already exists");
    assert_eq!(s.stored().len(), 1);
    assert!(!s.write_counts().contains_key("k2"));
    assert_eq!(s.stats().records_duplicate, 2);

    // Off: everything stored, write_counts shows the double write.
    s.set_dedup(DedupMode::Off);
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1"))]))
            .await
            .body["code"],
        0
    );
    assert_eq!(s.write_counts()["k1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_returns_429_with_headers() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let mut tasks = JoinSet::new();
    for i in 0..60 {
        let (c, s, t) = (c.clone(), s.clone(), t.clone());
        tasks.spawn(async move {
            post_batch(&c, &s, &t, &batch(vec![rec(&format!("u{i}"), None)])).await
        });
    }
    let mut limited = 0u64;
    let mut ok = 0u64;
    while let Some(a) = tasks.join_next().await {
        let a = a.unwrap();
        if a.status == 429 {
            limited += 1;
            assert_eq!(a.body["code"], codes::RATE_LIMITED);
            assert_eq!(a.body["msg"], "request trigger frequency limit");
            assert_eq!(a.headers["x-ogw-ratelimit-limit"], "50");
            let reset: u64 = a.headers["x-ogw-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(reset >= 1);
            assert!(a.headers.contains_key("x-tt-logid"));
        } else {
            assert_eq!(a.body["code"], 0);
            ok += 1;
        }
    }
    assert!(limited >= 10, "limited {limited}");
    let st = s.stats();
    assert_eq!(st.rate_limited, limited);
    assert_eq!(st.injected_rate_limited, 0);
    assert!(st.max_requests_in_any_second <= 50);
    assert_eq!(st.records_stored, ok);

    // After a second the window has slid on.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", None)]))
            .await
            .status,
        200
    );

    // An injected 429 is counted apart.
    s.push_fault(Fault::RateLimited { reset_secs: 7 });
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", None)])).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.headers["x-ogw-ratelimit-reset"], "7");
    let st = s.stats();
    assert_eq!(st.rate_limited, limited);
    assert_eq!(st.injected_rate_limited, 1);
}

#[tokio::test]
async fn lose_response_after_apply_stores_record() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    s.push_fault(Fault::LoseResponseAfterApply);
    let err = c
        .post(format!(
            "{}{BATCH_CREATE_PATH}?employee_type=employee_no",
            s.base_url()
        ))
        .bearer_auth(&t)
        .json(&batch(vec![rec("u1", Some("k1"))]))
        .send()
        .await
        .expect_err("the reply must be lost");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(s.stored().len(), 1);
    assert_eq!(s.write_counts()["k1"], 1);
    let st = s.stats();
    assert_eq!(st.lost_responses, 1);
    assert_eq!(st.injected_faults, 1);

    // The retry is deduplicated and answered normally.
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1"))])).await;
    assert_eq!(a.body["code"], 0);
    assert_eq!(s.stored().len(), 1);
    assert_eq!(s.stats().records_duplicate, 1);
}

#[tokio::test]
async fn close_before_apply_stores_nothing() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    s.push_fault(Fault::CloseBeforeApply);
    let url = format!(
        "{}{BATCH_CREATE_PATH}?employee_type=employee_id",
        s.base_url()
    );
    let res = c
        .post(&url)
        .bearer_auth(&t)
        .json(&batch(vec![rec("u1", Some("k1"))]))
        .send()
        .await;
    assert!(res.is_err());
    assert!(s.stored().is_empty());
    assert_eq!(s.stats().lost_responses, 1);
}

#[tokio::test]
async fn injected_error_faults_apply_nothing() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let cases = [
        (Fault::ServerError, 500, codes::INTERNAL),
        (Fault::NoRowAffected, 400, codes::GENERIC),
        (Fault::TokenInvalid, 400, codes::TOKEN_INVALID),
        (Fault::ScopeMissing, 400, codes::SCOPE_MISSING),
        (Fault::NoPermission, 400, codes::NO_PERMISSION),
    ];
    for (f, _, _) in &cases {
        s.push_fault(f.clone());
    }
    for (f, status, code) in &cases {
        let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1"))])).await;
        assert_eq!(a.status, *status, "{f:?}");
        assert_eq!(a.body["code"], *code, "{f:?}");
        assert!(a.body["error"]["log_id"].is_string());
    }
    assert!(s.stored().is_empty());
    assert_eq!(s.pending_faults(), 0);
    assert_eq!(s.stats().injected_faults, 5);
    assert_eq!(s.stats().rejected_requests, 5);
    // Queue drained: normal again.
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", Some("k1"))]))
            .await
            .body["code"],
        0
    );

    // Sticky until cleared.
    s.set_sticky_fault(Some(Fault::ServerError));
    for _ in 0..3 {
        assert_eq!(
            post_batch(&c, &s, &t, &batch(vec![rec("u2", None)]))
                .await
                .status,
            500
        );
    }
    s.set_sticky_fault(None);
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u2", None)]))
            .await
            .status,
        200
    );
    assert_eq!(s.stored().len(), 2);
}

#[tokio::test]
async fn delay_fault_and_latency_hold_the_reply() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    s.push_fault(Fault::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", None)])).await;
    assert_eq!(a.body["code"], 0);
    assert!(started.elapsed() >= Duration::from_millis(150));

    s.set_latency(Duration::from_millis(100));
    let started = Instant::now();
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u2", None)])).await;
    assert_eq!(a.body["code"], 0);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(s.stored().len(), 2);

    // Requests held by the latency overlap: max_concurrent sees them.
    let mut tasks = JoinSet::new();
    for i in 0..4 {
        let (c, s, t) = (c.clone(), s.clone(), t.clone());
        tasks.spawn(async move {
            post_batch(&c, &s, &t, &batch(vec![rec(&format!("p{i}"), None)])).await
        });
    }
    while let Some(a) = tasks.join_next().await {
        assert_eq!(a.unwrap().body["code"], 0);
    }
    assert!(s.stats().max_concurrent >= 2, "{:?}", s.stats());
}

#[tokio::test]
async fn revoke_tokens_gives_99991663() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", None)]))
            .await
            .body["code"],
        0
    );
    s.revoke_tokens();
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u2", None)])).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], codes::TOKEN_INVALID);
    let t2 = token(&c, &s).await;
    assert_ne!(t2, t);
    assert_eq!(
        post_batch(&c, &s, &t2, &batch(vec![rec("u2", None)]))
            .await
            .body["code"],
        0
    );
    assert_eq!(s.stored().len(), 2);
}

#[tokio::test]
async fn request_checks_auth_employee_type_body_and_paths() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    let url = format!("{}{BATCH_CREATE_PATH}", s.base_url());
    let body = batch(vec![rec("u1", None)]);

    let v: Value = c
        .post(format!("{url}?employee_type=employee_id"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], codes::TOKEN_MISSING);
    let v: Value = c
        .post(format!("{url}?employee_type=employee_id"))
        .bearer_auth("t-nope")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], codes::TOKEN_INVALID);
    for q in ["", "?employee_type=open_id", "?employee_type="] {
        let v: Value = c
            .post(format!("{url}{q}"))
            .bearer_auth(&t)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["code"], codes::PARAM_INVALID, "{q}");
        assert_eq!(v["msg"], "param is invalid: employee_type invalid");
    }
    let v: Value = c
        .post(format!("{url}?employee_type=employee_id"))
        .bearer_auth(&t)
        .body("{\"flow_records\": [")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], codes::PARAM_INVALID);

    let big = vec![b' '; MAX_BODY_BYTES + 10];
    let resp = c
        .post(format!("{url}?employee_type=employee_id"))
        .bearer_auth(&t)
        .body(big)
        .send()
        .await;
    // Refused after 4 MiB: normally a 400; the client may instead see the connection closed
    // while it was still sending the rest. Either way nothing is stored.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 400);
    }

    let resp = c
        .get(format!("{}/open-apis/nothing", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], codes::PARAM_INVALID);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(s.stored().is_empty());
}

#[tokio::test]
async fn log_ids_are_unique() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let resp = c.get(s.base_url()).send().await.unwrap();
        let id = resp.headers()["x-tt-logid"].to_str().unwrap().to_owned();
        assert!(seen.insert(id));
    }
}

#[tokio::test]
async fn keep_alive_and_shutdown() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;
    for i in 0..5 {
        let a = post_batch(&c, &s, &t, &batch(vec![rec(&format!("u{i}"), None)])).await;
        assert_eq!(a.body["code"], 0);
    }
    let addr = s.addr();
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_stored(6).await })
    };
    let _ = post_batch(&c, &s, &t, &batch(vec![rec("u9", None)])).await;
    waiter.await.unwrap();
    s.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

async fn get_flow(c: &reqwest::Client, s: &Standin, token: &str, id: &str) -> Answer {
    let resp = c
        .get(format!(
            "{}{USER_FLOWS_PATH}/{id}?employee_type=employee_id",
            s.base_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.json().await.unwrap(),
    }
}

#[tokio::test]
async fn the_read_of_one_record_is_admitted_like_a_write_and_finds_nothing() {
    let s = Standin::start(StandinConfig::default()).await.unwrap();
    let c = client();
    let t = token(&c, &s).await;

    // admitted: the attendance service's "record not found" (the stand-in's records have no id)
    let a = get_flow(&c, &s, &t, "0").await;
    assert_eq!(
        (a.status, a.body["code"].as_i64()),
        (400, Some(codes::GENERIC))
    );
    assert_eq!(a.body["msg"], "rule does not exist");
    assert!(a.headers.contains_key("x-tt-logid"));
    assert_eq!(
        get_flow(&c, &s, "t-nope", "0").await.body["code"],
        codes::TOKEN_INVALID
    );
    assert_eq!(s.requests_to(Api::UserFlowGet), 2);
    assert_eq!(s.stats().batch_requests, 0);
    assert!(s.stored().is_empty());

    // either attendance scope lets the app read; without both, 99991672 naming them
    s.set_scopes([SCOPE_TASK_READONLY]);
    assert_eq!(get_flow(&c, &s, &t, "0").await.body["code"], codes::GENERIC);
    s.set_scopes([SCOPE_RULE]);
    let a = get_flow(&c, &s, &t, "0").await;
    assert_eq!(a.body["code"], codes::SCOPE_MISSING);
    let msg = a.body["msg"].as_str().unwrap();
    assert!(
        msg.contains("attendance:task, attendance:task:readonly"),
        "{msg}"
    );
    // and the writes need attendance:task itself
    let a = post_batch(&c, &s, &t, &batch(vec![rec("u1", None)])).await;
    assert_eq!(a.body["code"], codes::SCOPE_MISSING);
    assert!(s.stored().is_empty());
    s.set_scopes([SCOPE_TASK]);
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u1", None)]))
            .await
            .body["code"],
        0
    );

    // an IP allow-list without this caller: 99991401 on the attendance endpoints, not on the token
    s.set_ip_allow_list(Some(HashSet::from(["192.0.2.7".parse().unwrap()])));
    let a = get_flow(&c, &s, &t, "0").await;
    assert_eq!(a.body["code"], codes::IP_NOT_ALLOWED);
    assert!(a.body["msg"].as_str().unwrap().contains("127.0.0.1"));
    assert_eq!(
        post_batch(&c, &s, &t, &batch(vec![rec("u2", None)]))
            .await
            .body["code"],
        codes::IP_NOT_ALLOWED
    );
    assert!(!token(&c, &s).await.is_empty());
    s.set_ip_allow_list(Some(HashSet::from(["127.0.0.1".parse().unwrap()])));
    assert_eq!(get_flow(&c, &s, &t, "0").await.body["code"], codes::GENERIC);
    assert_eq!(s.stored().len(), 1);

    // only a numeric id is a record id: other paths under user_flows/ are not the read
    let resp = c
        .get(format!("{}{USER_FLOWS_PATH}/batch_create", s.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = c
        .get(format!("{}{USER_FLOWS_PATH}/0", s.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], codes::PARAM_INVALID, "no employee_type");
}
