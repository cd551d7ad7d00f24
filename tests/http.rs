//! The `[http]` endpoint of a running daemon: `/metrics` parses and shows the live figures,
//! `/healthz` reports readiness and why it is not healthy, `/status` is `status --json`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use clockbridge::config::Config;
use clockbridge::daemon::{self, RunOptions};
use clockbridge_testkit::standin::StandinConfig;
use prometheus_parse::Value;
use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;

use crate::util::*;

/// A listening line clock and the endpoint on a free loopback port.
const WITH_HTTP: &str = r#"
[http]
listen = "127.0.0.1:0"

[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let r = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, content_type, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_healthz_and_status_show_the_running_daemon() {
    // user 999 is unknown to the platform: its punch becomes a dead letter
    let env = Env::new(StandinConfig {
        known_users: Some(HashSet::from(["1".to_string(), "23".to_string()])),
        ..StandinConfig::default()
    })
    .await;
    let cfg = env.config_with(WITH_HTTP, &[]);
    let running = env.start(WITH_HTTP).await;
    let addr = running.http_addr().expect("the endpoint is on");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let stats = running.devices["door-1"].stats.clone();
    let clock = stats.wait_listening().await;

    // the clock stays connected (online) while we look
    let mut conn = tokio::net::TcpStream::connect(clock).await.unwrap();
    conn.write_all(
        b"        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0\n       23\t2026-03-02 09:01:12\t0\t15\t0\t0\t0\n        1\t2026-03-02 18:02:40\t1\t1\t0\t0\t0\n      999\t2026-03-02 09:30:00\t0\t1\t0\t0\t0\nnot a punch\n",
    )
    .await
    .unwrap();
    running
        .wait_for(PATIENCE, |c| {
            c.total.delivered == 3
                && c.total.dead == 1
                && stats.lines_read.load(Ordering::Relaxed) == 5
        })
        .await
        .unwrap();
    let requests = running.sender_stats.requests.load(Ordering::Relaxed);
    assert!(requests >= 1);

    // /metrics
    let (code, content_type, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = parse_metrics(&text);
    let records = |state: &str| {
        metric(
            &m,
            "clockbridge_queue_records",
            &[("kind", "user_flow"), ("state", state)],
        )
    };
    assert_eq!(records("delivered"), 3.0, "{text}");
    assert_eq!(records("dead"), 1.0, "{text}");
    assert_eq!(records("pending"), 0.0, "{text}");
    assert_eq!(records("in_flight"), 0.0, "{text}");
    assert_eq!(records("unmapped"), 0.0, "{text}");
    let device = [("device", "door-1")];
    assert_eq!(
        metric(
            &m,
            "clockbridge_device_queue_records",
            &[("device", "door-1"), ("state", "dead")]
        ),
        1.0
    );
    assert_eq!(metric(&m, "clockbridge_queue_up", &[]), 1.0);
    assert_eq!(
        metric(&m, "clockbridge_queue_oldest_outstanding_age_seconds", &[]),
        0.0
    );
    assert_eq!(
        metric(&m, "clockbridge_sender_delivered_records_total", &[]),
        3.0
    );
    assert_eq!(
        metric(&m, "clockbridge_sender_dead_records_total", &[]),
        1.0
    );
    assert_eq!(
        metric(&m, "clockbridge_sender_requests_total", &[]),
        requests as f64
    );
    for reason in clockbridge::sender::RETRY_REASONS {
        assert_eq!(
            metric(
                &m,
                "clockbridge_sender_retried_records_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    assert_eq!(
        metric(&m, "clockbridge_sender_rate_limited_total", &[]),
        0.0
    );
    assert_eq!(metric(&m, "clockbridge_sender_blocked", &[]), 0.0);
    assert!(metric(&m, "clockbridge_sender_heartbeat_age_seconds", &[]) < 60.0);
    assert_eq!(metric(&m, "clockbridge_device_online", &device), 1.0);
    assert_eq!(metric(&m, "clockbridge_device_connections", &device), 1.0);
    assert_eq!(
        metric(&m, "clockbridge_device_lines_read_total", &device),
        5.0
    );
    assert_eq!(
        metric(&m, "clockbridge_device_punches_read_total", &device),
        4.0
    );
    assert_eq!(
        metric(&m, "clockbridge_device_malformed_lines_total", &device),
        1.0
    );
    assert_eq!(
        metric(&m, "clockbridge_device_queued_punches_total", &device),
        4.0
    );
    assert_eq!(
        metric(&m, "clockbridge_device_duplicate_punches_total", &device),
        0.0
    );
    assert!(
        metric(
            &m,
            "clockbridge_device_last_line_timestamp_seconds",
            &device
        ) > 1.7e9
    );
    assert_eq!(
        metric(
            &m,
            "clockbridge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // the latency histogram counts every request
    let histogram = m
        .samples
        .iter()
        .find(|s| s.metric == "clockbridge_upstream_latency_seconds")
        .expect("latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    assert_eq!(buckets.len(), 11, "{buckets:?}");
    let inf = buckets.last().unwrap();
    assert!(inf.less_than.is_infinite());
    assert_eq!(inf.count, requests as f64);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(buckets[0].less_than, 0.025);
    assert_eq!(
        metric(&m, "clockbridge_upstream_latency_seconds_count", &[]),
        requests as f64
    );
    assert!(m.docs.contains_key("clockbridge_sender_retried_records"));

    // /healthz
    let (code, content_type, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(content_type, "application/json");
    let h: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["healthy"], true, "{h}");
    assert_eq!(h["problems"], serde_json::json!([]), "{h}");
    assert_eq!(h["devices"]["door-1"]["online"], true, "{h}");
    assert_eq!(h["sender"]["state"], "ok", "{h}");
    assert!(
        h["sender"]["heartbeat_age_secs"].as_f64().unwrap() < 60.0,
        "{h}"
    );

    // /status: the same object as `clockbridge status --json` (read both ways until no snapshot
    // was written in between)
    let mut last = None;
    for _ in 0..20 {
        let before = serde_json::to_value(clockbridge::status::read(&cfg).unwrap()).unwrap();
        let (code, content_type, body) = get(addr, "/status").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(content_type, "application/json");
        let served: Json = serde_json::from_str(&body).unwrap();
        let after = serde_json::to_value(clockbridge::status::read(&cfg).unwrap()).unwrap();
        if served == before || served == after {
            last = None;
            assert_eq!(served["queue"]["delivered"], 3);
            assert_eq!(served["queue"]["dead"], 1);
            assert_eq!(served["dead_letters"][0]["device_user_id"], "999");
            break;
        }
        last = Some((served, after));
    }
    assert!(
        last.is_none(),
        "/status differs from status::read: {last:?}"
    );

    // anything else
    let (code, _, _) = get(addr, "/").await;
    assert_eq!(code, 404);
    let (code, _, _) = get(addr, "/metrics/extra").await;
    assert_eq!(code, 404);
    let r = client()
        .post(format!("http://{addr}/metrics"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    // HEAD: the answer of GET, without its body
    for path in ["/healthz", "/metrics", "/status"] {
        let (get_code, get_type, get_body) = get(addr, path).await;
        let r = client()
            .head(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), get_code, "HEAD {path}");
        assert_eq!(
            r.headers()[reqwest::header::CONTENT_TYPE],
            get_type.as_str()
        );
        let length: usize = r.headers()[reqwest::header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 0 && !get_body.is_empty(), "HEAD {path}");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "HEAD {path} sent a body"
        );
    }

    conn.shutdown().await.unwrap();
    drop(conn);
    running.stop().await;
    // stopped with the daemon
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_and_says_why_while_the_app_is_blocked() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.set_app_secret("rotated-secret");
    let running = env.start("[http]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = running.http_addr().unwrap();
    submit_all(&running, punches("door-1", 3)).await;
    let mut rx = running.sender_stats.subscribe();
    while running.sender_stats.snapshot().state != "blocked" {
        rx.changed().await.unwrap();
    }
    let (code, _, body) = get(addr, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    let h: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["healthy"], false, "{h}");
    assert_eq!(h["sender"]["state"], "blocked", "{h}");
    let problems = h["problems"].to_string();
    assert!(
        problems.contains("blocked") && problems.contains("app secret"),
        "{h}"
    );
    assert!(
        !body.contains("standin-secret"),
        "the secret leaked: {body}"
    );
    let (_, _, text) = get(addr, "/metrics").await;
    let m = parse_metrics(&text);
    assert_eq!(metric(&m, "clockbridge_sender_blocked", &[]), 1.0);
    assert!(metric(&m, "clockbridge_sender_app_blocked_total", &[]) >= 1.0);
    assert_eq!(
        metric(
            &m,
            "clockbridge_queue_records",
            &[("kind", "user_flow"), ("state", "dead")]
        ),
        0.0
    );
    running.stop().await;
}

#[tokio::test]
async fn the_endpoint_is_off_by_default_loopback_only_and_a_taken_port_stops_the_start() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    assert_eq!(running.http_addr(), None);
    running.stop().await;

    // a remote address needs allow_remote
    let text = env.toml("[http]\nlisten = \"0.0.0.0:9477\"\n");
    let e = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http.listen") && e.contains("0.0.0.0:9477"),
        "{e}"
    );
    assert!(e.contains("allow_remote"), "{e}");
    let text = env.toml("[http]\nlisten = \"0.0.0.0:9477\"\nallow_remote = true\n");
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap();

    // the port is taken: the start fails, naming the key and the address
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = env.config_with(&format!("[http]\nlisten = \"{addr}\"\n"), &[]);
    let e = match daemon::start(cfg.clone(), RunOptions::for_config(&cfg)).await {
        Ok(running) => {
            running.stop().await;
            panic!("started on a taken port");
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("http.listen"), "{e}");
    assert!(e.contains(&addr.to_string()), "{e}");
}
