//! The delivery path end to end: a TCP clock to the stand-in, pacing, restarts.

use std::collections::HashSet;
use std::sync::Arc;

use clockbridge::feishu::lanes::user_flows::KIND as KIND_USER_FLOW;
use clockbridge::queue::Queue;
use clockbridge_testkit::standin::StandinConfig;
use tokio::io::AsyncWriteExt;

use crate::util::*;

const LISTEN_DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
location_name = "HQ 1F door"
"#;

#[tokio::test]
async fn tcp_clock_punches_reach_the_platform_once_with_every_required_field() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(LISTEN_DEVICE).await;
    let stats = running.devices["door-1"].stats.clone();
    let addr = stats.wait_listening().await;

    let sample = "        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0\n       23\t2026-03-02 09:01:12\t0\t15\t0\t0\t0\n        1\t2026-03-02 18:02:40\t1\t1\t0\t0\t0\n     1005\t2026-03-02 12:00:03\t2\t4\t0\t0\t0\n     1005\t2026-03-02 12:58:41\t3\t4\t0\t0\t0\n       23\t2026-03-02 18:30:00\t255\t15\t0\t0\t0\n";
    // the clock sends its log, then (after a reconnect) the whole log again plus garbage
    for text in [sample.to_string(), format!("{sample}garbage\n")] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(text.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    }
    env.standin.wait_stored(6).await;
    running
        .wait_for(PATIENCE, |c| {
            c.total.delivered == 6
                && stats.lines_read.load(std::sync::atomic::Ordering::Relaxed) == 13
        })
        .await
        .unwrap();
    let snap = stats.snapshot();
    assert_eq!(snap.duplicates, 6);
    assert_eq!(snap.malformed, 1);
    assert_eq!(assert_each_written_once(&env.standin), 6);

    let stored = env.standin.stored();
    let first = stored
        .iter()
        .find(|f| f.record["external_id"] == "door-1/1/20260302085959")
        .expect("punch of user 1 at 08:59:59");
    let r = &first.record;
    assert_eq!(r["user_id"], "1");
    assert_eq!(r["creator_id"], "1");
    assert_eq!(r["location_name"], "HQ 1F door");
    assert_eq!(r["check_time"], "1772413199"); // 2026-03-02 08:59:59 +08:00
    assert_eq!(r["device_id"], "door-1");
    assert_eq!(r["type"], 7);
    assert_eq!(r["comment"], "clockbridge door-1: check-in, fingerprint");
    assert_eq!(r["idempotent_id"].as_str().unwrap().len(), 32);
    assert_eq!(first.employee_type, "employee_id");
    // the unknown state code is kept, not dropped
    assert!(stored
        .iter()
        .any(|f| f.record["comment"] == "clockbridge door-1: state 255, face"));
    running.stop().await;
}

#[tokio::test]
async fn pacing_stays_under_the_rate_limit_with_requests_in_flight() {
    let env = Env::new(StandinConfig {
        latency: std::time::Duration::from_millis(150),
        ..StandinConfig::default()
    })
    .await;
    // the mechanism, at a rate with room for the scheduling jitter of a test run that shares two
    // cores with every other test (the benchmark measures the default rate on a quiet machine)
    let running = env
        .start_with(
            "",
            &[("CLOCKBRIDGE__SENDER__MAX_REQUESTS_PER_SECOND", "45")],
        )
        .await;
    let n = 4000;
    let sink = running.sink().unwrap();
    for p in punches("door-1", n) {
        sink.submit(p).await.unwrap();
    }
    drop(sink);
    env.standin.wait_stored(n).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == n as u64)
        .await
        .unwrap();
    let st = env.standin.stats();
    assert_eq!(st.rate_limited, 0, "the daemon caused 429s: {st:?}");
    assert!(st.max_requests_in_any_second <= 50, "{st:?}");
    // with 150 ms per reply, reaching the rate needs several requests in flight
    assert!(
        st.max_concurrent >= 4,
        "requests were not pipelined: {st:?}"
    );
    // backlog: batches are full
    assert!(st.batch_requests <= (n / 50) as u64 + 2, "{st:?}");
    assert_eq!(assert_each_written_once(&env.standin), n);
    running.stop().await;
}

#[tokio::test]
async fn restart_resends_claimed_rows_once() {
    let env = Env::new(StandinConfig::default()).await;
    // a previous run queued 120 punches and claimed 100 of them, then died before any answer
    {
        let (q, _) = Queue::open(&env.queue_path()).unwrap();
        let recs = records(&punches("door-1", 120));
        q.insert(Arc::new(recs)).await.unwrap();
        assert_eq!(q.claim(KIND_USER_FLOW, 50).await.unwrap().len(), 50);
        assert_eq!(q.claim(KIND_USER_FLOW, 50).await.unwrap().len(), 50);
        assert_eq!(q.counts().await.unwrap().total.in_flight, 100);
    }
    let running = env.start("").await;
    expect_delivered_once(&env, &running, 120).await;
    running.stop().await;
}

#[tokio::test]
async fn partial_batches_are_sent_after_the_linger() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start_with("", &[("CLOCKBRIDGE__SENDER__LINGER_MS", "400")])
        .await;
    let sink = running.sink().unwrap();
    for p in punches("door-1", 3) {
        sink.submit(p).await.unwrap();
    }
    env.standin.wait_stored(3).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 3)
        .await
        .unwrap();
    // three punches arriving within the linger go out in one request, not one each
    let requests: HashSet<_> = env
        .standin
        .stored()
        .iter()
        .map(|f| f.log_id.clone())
        .collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(env.standin.stats().batch_requests, 1);
    running.stop().await;
}
