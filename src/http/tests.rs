use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::health::{Limits, Parts};
use crate::ingest::DeviceInfo;
use crate::queue::Queue;
use crate::sender::SenderStats;
use crate::sources::DeviceStats;

/// A monitor over the queue at `path`, one offline device, a punch sender that has turned and an
/// accrual sender.
fn monitor(path: &std::path::Path) -> (Arc<Monitor>, Arc<SenderStats>, Arc<SenderStats>) {
    let (queue, _) = Queue::open(path).unwrap();
    let sender = Arc::new(SenderStats::default());
    sender
        .heartbeat
        .store(crate::queue::now_ms(), Ordering::Relaxed);
    let accruals = Arc::new(SenderStats::default());
    let stats = DeviceStats::new();
    stats.set_error("connection refused");
    let devices = HashMap::from([(
        "door-1".to_string(),
        DeviceInfo {
            kind: "tcp".into(),
            tz: chrono_tz::Asia::Shanghai,
            location: "door-1".into(),
            stats,
        },
    )]);
    let m = Monitor::new(Parts {
        reconcile: Default::default(),
        queue,
        devices: Arc::new(devices),
        sender: sender.clone(),
        senders: vec![
            ("user_flow", sender.clone()),
            ("leave_accrual", accruals.clone()),
        ],
        storage: Default::default(),
        inbox: Default::default(),
        limits: Limits::new(Duration::from_secs(60), Duration::from_secs(15)),
        request_timeout_secs: 15,
    });
    (m, sender, accruals)
}

#[tokio::test]
async fn healthy_despite_an_offline_device_and_503_with_the_reason_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (m, sender, accruals) = monitor(&dir.path().join("q.db"));
    let (code, h) = healthz::body(&m.assess(QUEUE_PROBE_WAIT).await, m.parts());
    assert_eq!(code, StatusCode::OK);
    assert!(h.ready && h.healthy, "{h:?}");
    assert!(h.problems.is_empty() && h.conditions.is_empty());
    assert!(!h.devices["door-1"].online);
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(v["devices"]["door-1"]["online"], false);
    assert_eq!(v["devices"]["door-1"]["last_error"], "connection refused");
    assert_eq!(v["sender"]["state"], "ok");
    assert_eq!(v["sender"]["heartbeat_max_age_secs"], 95.0);
    assert_eq!(v["hr_senders"]["leave_accrual"]["state"], "ok");
    assert!(v["hr_senders"].get("user_flow").is_none(), "{v}");

    // every request of the accrual sender times out: a condition, named
    for _ in 0..3 {
        accruals.record_timing(true);
    }
    let (code, h) = healthz::body(&m.assess(QUEUE_PROBE_WAIT).await, m.parts());
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.ready && !h.healthy, "{h:?}");
    assert!(
        h.problems[0].starts_with("sender leave_accrual: its last 3 requests got no answer"),
        "{h:?}"
    );
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(v["conditions"][0]["kind"], "upstream_timeouts");
    assert_eq!(v["conditions"][0]["subject"], "leave_accrual");
    assert_eq!(v["hr_senders"]["leave_accrual"]["timeouts_in_a_row"], 3);
    accruals.record_timing(false);

    // stopping: not ready
    drop(sender);
    m.set_stopping();
    let (code, h) = healthz::body(&m.assess(QUEUE_PROBE_WAIT).await, m.parts());
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!h.ready, "{h:?}");
    assert_eq!(h.problems, vec!["the daemon is stopping".to_string()]);
}

/// A server over an empty queue, with no devices.
async fn server(dir: &tempfile::TempDir) -> HttpServer {
    let path = dir.path().join("queue.db");
    let cfg = Config::from_toml_with_env(
        &format!(
            "[feishu]\napp_id = \"cli_x\"\napp_secret = \"s\"\n[queue]\npath = {:?}\n",
            path.display().to_string()
        ),
        "t",
        std::iter::empty(),
    )
    .unwrap();
    let (monitor, _, _) = monitor(&path);
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    HttpServer::start(listener, State::new(Arc::new(cfg), monitor, 1_772_400_000))
}

/// Sends `raw` on a fresh connection and reads until the server closes it (or 10 s pass).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, method: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn routes_methods_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir).await;
    let addr = srv.local_addr();

    let r = exchange(addr, &get("/nope", "GET")).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = exchange(addr, &get("/metrics", "POST")).await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
    let r = exchange(addr, &get("/healthz", "DELETE")).await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // a query string does not change the route
    let r = exchange(addr, &get("/healthz?verbose=1", "GET")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"ready\": true"), "{r}");

    // a POST with a body it never reads, then the server still answers
    let r = exchange(
        addr,
        b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // garbage and an HTTP/2 preface are refused without harm
    let r = exchange(addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = exchange(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(!r.starts_with("HTTP/1.1 200"), "{r}");
    // an oversized head: refused, connection closed
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_REQUEST_HEAD * 2)
    );
    let r = exchange(addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let r = exchange(addr, &get("/metrics", "GET")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("application/openmetrics-text"), "{r}");
    assert!(r.contains("clockbridge_queue_up 1"), "{r}");
    assert!(
        r.contains("clockbridge_start_time_seconds 1772400000"),
        "{r}"
    );
    let r = exchange(addr, &get("/status", "GET")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"queue\""), "{r}");

    // keep-alive: two requests on one connection
    let two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let r = exchange(addr, two).await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    srv.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

/// The status line and the headers of an answer, lower case, and what follows them.
fn split_answer(r: &str) -> (String, &str) {
    let (head, rest) = r.split_once("\r\n\r\n").expect("a whole head");
    (head.to_ascii_lowercase(), rest)
}

#[tokio::test]
async fn head_answers_as_get_does_without_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir).await;
    let addr = srv.local_addr();
    for path in ["/healthz", "/metrics", "/status"] {
        let got = exchange(addr, &get(path, "GET")).await;
        let (get_head, get_body) = split_answer(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(!get_body.is_empty(), "{got}");
        // HEAD then GET on one connection: if HEAD sent a body, the GET's answer would not start
        // right after HEAD's head
        let raw = format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let both = exchange(addr, raw.as_bytes()).await;
        let (head_head, after) = split_answer(&both);
        assert!(both.starts_with("HTTP/1.1 200"), "{both}");
        assert!(
            after.starts_with("HTTP/1.1 200"),
            "HEAD {path} sent a body: {both}"
        );
        let header = |h: &str, name: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        };
        assert_eq!(
            header(&head_head, "content-type"),
            header(&get_head, "content-type"),
            "{both}"
        );
        let length: usize = header(&head_head, "content-length")
            .expect("HEAD keeps the length of the body")
            .parse()
            .unwrap();
        assert!(length > 0, "{both}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn stopping_is_reported_then_the_server_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir).await;
    let addr = srv.local_addr();
    // an idle keep-alive connection must not hold up the stop
    let idle = TcpStream::connect(addr).await.unwrap();
    srv.state.monitor.set_stopping();
    let r = exchange(addr, &get("/healthz", "GET")).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("stopping"), "{r}");
    tokio::time::timeout(Duration::from_secs(10), srv.stop())
        .await
        .expect("stop hung on an idle connection");
    drop(idle);
}

#[tokio::test]
async fn a_bind_error_names_the_key_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let e = bind(addr).await.unwrap_err().to_string();
    assert!(e.contains("http.listen"), "{e}");
    assert!(e.contains(&addr.to_string()), "{e}");
}
