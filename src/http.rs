//! The optional HTTP endpoint (`[http] listen`): `/healthz`, `/metrics` and `/status` for monitoring.
//!
//! - `GET /healthz`: JSON `{ "ready", "healthy", "problems", "devices", "sender", "hr_senders" }`. HTTP
//!   200 when the daemon is ready (started, not stopping, and the queue's database thread answers),
//!   neither the punch sender nor an HR sender is blocked by an application-level failure
//!   (credentials, scope, permission), and the punch sender's claim loop has turned recently (its heartbeat is at most [`heartbeat_max_age`] old); 503
//!   otherwise, with one sentence per reason in `problems`. The limits are the systemd watchdog's
//!   ([`crate::service`]): the database thread counts as stuck once a question has waited more than
//!   [`DB_ANSWER_LIMIT`] (a check waits [`QUEUE_PROBE_WAIT`] for the answer, and a later check
//!   remembers a question still unanswered), and the heartbeat limit is the watchdog's
//!   `sender_idle`. A device being offline is reported in `devices` but does not fail the check: a
//!   clock that is switched off is not a reason to restart the daemon.
//! - `GET /metrics`: the OpenMetrics text format; see [`crate::metrics`] for the list.
//! - `GET /status`: exactly the object `clockbridge status --json` prints ([`crate::status::read`], read
//!   from the queue file on a blocking thread).
//!
//! Small and robust by construction: HTTP/1.1 only (hyper), `GET` only (405 otherwise, 404 for any other
//! path), request bodies are never read, request heads are limited to [`MAX_REQUEST_HEAD`] bytes and must
//! arrive within [`HEADER_READ_TIMEOUT`] (which also closes idle keep-alive connections), at most
//! [`MAX_CONNECTIONS`] connections are served at once (more wait in the listen backlog), every request is
//! answered within [`REQUEST_TIMEOUT`], and at most [`STATUS_READERS`] `/status` reads run at once. The
//! endpoint has no authentication: the configuration accepts only a loopback address unless
//! `http.allow_remote` is set.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::DeviceInfo;
use crate::queue::Queue;
use crate::sender::{SenderSnapshot, SenderStats};
use crate::service::{Limits, DB_ANSWER_LIMIT};
use crate::sources::DeviceSnapshot;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// A request head (request line and headers) must arrive within this; an idle keep-alive connection
/// is closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (larger: 431 and the connection is closed).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Every request is answered within this (503 otherwise).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `/healthz` waits for the queue's database thread (a healthy one answers in ms).
pub const QUEUE_PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long `/metrics` waits for the queue figures (then it reports `clockbridge_queue_up 0`).
pub const METRICS_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// `/status` reads running at once (each opens the queue file read-only on a blocking thread).
pub const STATUS_READERS: usize = 2;
/// How long open connections may finish their request when the server stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The endpoint could not listen: a start-up error.
#[derive(Debug, thiserror::Error)]
#[error("http.listen {address}: cannot listen: {source}: check that the port is free (is another clockbridge running?) and that the address belongs to this host")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// A bound listening socket, not yet served.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    address: SocketAddr,
}

impl Listener {
    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

/// Binds the listening socket (done first thing at start-up, so a taken port stops the start before
/// anything else runs).
pub async fn bind(address: SocketAddr) -> Result<Listener, BindError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { address, source })?;
    Ok(Listener {
        listener,
        address: bound,
    })
}

/// The longest the sender's claim loop may legitimately go without turning: the systemd watchdog's
/// limit for the sender ([`Limits::sender_idle`]: a rate-limit window, an application-error pause, a
/// request with its token fetches, a slow queue, whichever is longest), so `/healthz` and the
/// watchdog agree on when the sender is stuck.
pub fn heartbeat_max_age(cfg: &Config) -> Duration {
    Limits::for_config(cfg).sender_idle
}

/// Whether the queue's database thread answers, asked by every `/healthz`. The thread serves its
/// questions in order, so the oldest question not yet answered tells how long it has been stuck,
/// across checks: a check that stops waiting leaves its question queued, and the question itself
/// records its answer when the thread gets to it.
#[derive(Debug, Default)]
pub struct DbProbe {
    /// When the oldest question still unanswered was asked.
    unanswered_since: Arc<std::sync::Mutex<Option<Instant>>>,
}

fn lock_slot(
    slot: &std::sync::Mutex<Option<Instant>>,
) -> std::sync::MutexGuard<'_, Option<Instant>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl DbProbe {
    /// `Ok` when the thread answers within `wait`, or has been silent for at most `limit`.
    pub async fn check(
        &self,
        queue: &Queue,
        wait: Duration,
        limit: Duration,
    ) -> Result<(), String> {
        let asked = Instant::now();
        let since = *lock_slot(&self.unanswered_since).get_or_insert(asked);
        let slot = self.unanswered_since.clone();
        let question = queue.ping(move || {
            // answered: so was every question asked before this one
            let mut oldest = lock_slot(&slot);
            if *oldest <= Some(asked) {
                *oldest = None;
            }
        });
        match tokio::time::timeout(wait, question).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => {
                let waited = since.elapsed();
                if waited > limit {
                    Err(format!(
                        "the database thread has not answered for {} s (limit {} s)",
                        waited.as_secs(),
                        limit.as_secs()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// What the handlers read: the daemon's live state.
pub struct State {
    pub cfg: Arc<Config>,
    pub queue: Queue,
    pub devices: Arc<std::collections::HashMap<String, DeviceInfo>>,
    pub sender: Arc<SenderStats>,
    /// The HR senders, by queue kind (for `/metrics`).
    pub lanes: std::collections::BTreeMap<&'static str, Arc<SenderStats>>,
    /// Unix seconds.
    pub started_at: i64,
    ready: AtomicBool,
    heartbeat_max_age: Duration,
    db_probe: DbProbe,
    status_readers: Arc<Semaphore>,
}

impl State {
    pub fn new(
        cfg: Arc<Config>,
        queue: Queue,
        devices: Arc<std::collections::HashMap<String, DeviceInfo>>,
        sender: Arc<SenderStats>,
        started_at: i64,
    ) -> State {
        State {
            heartbeat_max_age: heartbeat_max_age(&cfg),
            cfg,
            queue,
            devices,
            sender,
            lanes: Default::default(),
            started_at,
            ready: AtomicBool::new(false),
            db_probe: DbProbe::default(),
            status_readers: Arc::new(Semaphore::new(STATUS_READERS)),
        }
    }
}

/// The running endpoint.
pub struct HttpServer {
    address: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves on `listener` (from [`bind`]) until [`HttpServer::stop`]; `/healthz` reports ready from
    /// now on.
    pub fn start(listener: Listener, state: State) -> HttpServer {
        let Listener { listener, address } = listener;
        let state = Arc::new(state);
        state.ready.store(true, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        tracing::info!(%address, "http: serving /healthz, /metrics and /status");
        HttpServer {
            address,
            state,
            stop,
            task,
        }
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// From now on `/healthz` answers 503 "stopping" (the daemon is shutting down).
    pub fn set_stopping(&self) {
        self.state.ready.store(false, Ordering::Relaxed);
    }

    /// Stops accepting, lets requests in progress finish (briefly), and closes every connection.
    pub async fn stop(self) {
        self.set_stopping();
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "http: the server task failed");
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        while let Some(res) = conns.try_join_next() {
            if let Err(e) = res {
                tracing::warn!(error = %e, "http: a connection task failed");
            }
        }
        // over the limit, new connections wait in the kernel's backlog
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // e.g. too many open files: back off instead of spinning
                    tracing::debug!(error = %e, "http: accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        conns.spawn(serve_connection(
            stream,
            state.clone(),
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(STOP_GRACE + Duration::from_millis(500), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "http: connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, conn.as_mut()).await;
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_reply(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(status, JSON, body)
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot encode the answer: {e}\n"),
        ),
    }
}

/// Answers one request; never fails (an error is an HTTP status with the reason in the body).
async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/metrics" | "/status") {
        return reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: the endpoints are /healthz, /metrics and /status\n",
        );
    }
    if req.method() != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed: use GET\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let answer = async {
        match path {
            "/healthz" => healthz(state).await,
            "/metrics" => metrics(state).await,
            _ => status(state).await,
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(r) => r,
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!(
                "no answer within {} s: the daemon is overloaded or stuck\n",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// The `/healthz` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// Started, not stopping, and the queue answers.
    pub ready: bool,
    /// What the HTTP status says: ready, the sender not blocked, its heartbeat fresh.
    pub healthy: bool,
    /// Why it is not healthy (empty when it is).
    pub problems: Vec<String>,
    pub devices: BTreeMap<String, DeviceHealth>,
    pub sender: SenderHealth,
    /// The HR senders (one per endpoint: `user_approval`, `archive_report`, `leave_accrual`).
    pub hr_senders: BTreeMap<String, HrSenderHealth>,
}

/// An HR sender in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HrSenderHealth {
    /// `ok`, or `blocked` while an application-level failure stops this endpoint's uploads.
    pub state: String,
    /// The fix, while blocked.
    pub blocked_reason: Option<String>,
    /// Unix seconds of the last accepted upload.
    pub last_success_at: Option<i64>,
}

/// A device in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceHealth {
    pub online: bool,
    pub connections: u64,
    /// Unix seconds of the last line received.
    pub last_line_at: Option<i64>,
    pub last_error: Option<String>,
}

/// The sender in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SenderHealth {
    /// `ok`, or `blocked` while an application-level failure stops every upload.
    pub state: String,
    /// The fix, while blocked.
    pub blocked_reason: Option<String>,
    /// Seconds since the claim loop last turned (`null` before its first turn).
    pub heartbeat_age_secs: Option<f64>,
    /// The age above which the heartbeat counts as stale.
    pub heartbeat_max_age_secs: f64,
    /// Unix seconds of the last accepted upload.
    pub last_success_at: Option<i64>,
}

/// What `/healthz` is computed from.
#[derive(Debug, Clone)]
pub struct HealthInput {
    /// The daemon has started and is not stopping.
    pub running: bool,
    /// `Err(why)` when the queue did not answer.
    pub queue: Result<(), String>,
    pub sender: SenderSnapshot,
    pub heartbeat_age_secs: Option<f64>,
    pub heartbeat_max_age: Duration,
    pub devices: BTreeMap<String, DeviceSnapshot>,
    /// The HR senders, by kind.
    pub hr_senders: BTreeMap<String, SenderSnapshot>,
}

/// The verdict of `/healthz`: 200 or 503, and the body.
pub fn evaluate(input: HealthInput) -> (StatusCode, Health) {
    let mut problems = Vec::new();
    if !input.running {
        problems.push("the daemon is stopping".to_string());
    }
    if let Err(why) = &input.queue {
        problems.push(format!("queue: {why}"));
    }
    let ready = problems.is_empty();
    if let Some(reason) = &input.sender.blocked_reason {
        problems.push(format!(
            "sender blocked, every record stays queued: {reason}"
        ));
    }
    for (kind, hr) in &input.hr_senders {
        if let Some(reason) = &hr.blocked_reason {
            problems.push(format!(
                "sender {kind} blocked, its records stay queued: {reason}"
            ));
        }
    }
    let max_age = input.heartbeat_max_age.as_secs_f64();
    match input.heartbeat_age_secs {
        None => problems.push("sender: its loop has not turned yet (starting)".to_string()),
        Some(age) if age > max_age => problems.push(format!(
            "sender: its loop last turned {age:.0} s ago (more than {max_age:.0} s): it is stuck or has stopped"
        )),
        Some(_) => {}
    }
    let healthy = problems.is_empty();
    let health = Health {
        ready,
        healthy,
        problems,
        devices: input
            .devices
            .into_iter()
            .map(|(id, d)| {
                (
                    id,
                    DeviceHealth {
                        online: d.online,
                        connections: d.connections,
                        last_line_at: d.last_line_at,
                        last_error: d.last_error,
                    },
                )
            })
            .collect(),
        sender: SenderHealth {
            state: if input.sender.blocked_reason.is_some() {
                "blocked".into()
            } else {
                "ok".into()
            },
            blocked_reason: input.sender.blocked_reason,
            heartbeat_age_secs: input.heartbeat_age_secs,
            heartbeat_max_age_secs: max_age,
            last_success_at: input.sender.last_success_at,
        },
        hr_senders: input
            .hr_senders
            .into_iter()
            .map(|(kind, hr)| {
                (
                    kind,
                    HrSenderHealth {
                        state: if hr.blocked_reason.is_some() {
                            "blocked".into()
                        } else {
                            "ok".into()
                        },
                        blocked_reason: hr.blocked_reason,
                        last_success_at: hr.last_success_at,
                    },
                )
            })
            .collect(),
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, health)
}

async fn healthz(state: &State) -> Response<Full<Bytes>> {
    let running = state.ready.load(Ordering::Relaxed);
    let queue = state
        .db_probe
        .check(&state.queue, QUEUE_PROBE_WAIT, DB_ANSWER_LIMIT)
        .await;
    let (code, health) = evaluate(HealthInput {
        running,
        queue,
        sender: state.sender.snapshot(),
        heartbeat_age_secs: crate::metrics::heartbeat_age(
            state.sender.heartbeat.load(Ordering::Relaxed),
        ),
        heartbeat_max_age: state.heartbeat_max_age,
        devices: state
            .devices
            .iter()
            .map(|(id, d)| (id.clone(), d.stats.snapshot()))
            .collect(),
        hr_senders: state
            .lanes
            .iter()
            .map(|(k, s)| (k.to_string(), s.snapshot()))
            .collect(),
    });
    json_reply(code, &health)
}

async fn metrics(state: &State) -> Response<Full<Bytes>> {
    let mut scrape = crate::metrics::gather(
        &state.queue,
        &state.devices,
        &state.sender,
        state.started_at,
        METRICS_QUEUE_TIMEOUT,
    )
    .await;
    scrape.lanes = state
        .lanes
        .iter()
        .map(|(k, s)| (k.to_string(), s.snapshot()))
        .collect();
    match crate::metrics::render(scrape) {
        Ok(text) => reply(StatusCode::OK, crate::metrics::CONTENT_TYPE, text),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

async fn status(state: &State) -> Response<Full<Bytes>> {
    let unavailable =
        |error: String| json_reply(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error });
    // the permit travels with the blocking read, so a request that times out still holds its slot
    // until the read ends
    let Ok(permit) = state.status_readers.clone().acquire_owned().await else {
        return unavailable("the daemon is stopping".into());
    };
    let cfg = state.cfg.clone();
    let read = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        crate::status::read(&cfg)
    });
    match read.await {
        Ok(Ok(s)) => json_reply(StatusCode::OK, &s),
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ErrorBody {
                error: format!("the status read failed: {e}"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn input() -> HealthInput {
        let mut devices = BTreeMap::new();
        devices.insert(
            "door-1".to_string(),
            DeviceSnapshot {
                online: false,
                last_error: Some("connection refused".into()),
                ..DeviceSnapshot::default()
            },
        );
        HealthInput {
            running: true,
            queue: Ok(()),
            sender: SenderSnapshot {
                state: "ok".into(),
                ..SenderSnapshot::default()
            },
            heartbeat_age_secs: Some(1.5),
            heartbeat_max_age: Duration::from_secs(95),
            devices,
            hr_senders: [(
                "leave_accrual".to_string(),
                SenderSnapshot {
                    state: "ok".into(),
                    ..SenderSnapshot::default()
                },
            )]
            .into(),
        }
    }

    #[test]
    fn healthy_despite_an_offline_device() {
        let (code, h) = evaluate(input());
        assert_eq!(code, StatusCode::OK);
        assert!(h.ready && h.healthy, "{h:?}");
        assert!(h.problems.is_empty());
        assert!(!h.devices["door-1"].online);
        assert_eq!(h.sender.state, "ok");
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["devices"]["door-1"]["online"], false);
        assert_eq!(v["sender"]["heartbeat_age_secs"], 1.5);
        assert_eq!(v["hr_senders"]["leave_accrual"]["state"], "ok");
    }

    #[test]
    fn each_problem_gives_503_and_says_why() {
        let blocked = HealthInput {
            sender: SenderSnapshot {
                state: "blocked".into(),
                blocked_reason: Some("enable the attendance scope".into()),
                ..SenderSnapshot::default()
            },
            ..input()
        };
        let cases: Vec<(HealthInput, bool, &str)> = vec![
            (
                HealthInput {
                    running: false,
                    ..input()
                },
                false,
                "stopping",
            ),
            (
                HealthInput {
                    queue: Err("the database thread has stopped".into()),
                    ..input()
                },
                false,
                "queue: the database thread has stopped",
            ),
            (blocked, true, "enable the attendance scope"),
            (
                HealthInput {
                    hr_senders: [(
                        "leave_accrual".to_string(),
                        SenderSnapshot {
                            state: "blocked".into(),
                            blocked_reason: Some("add the scope attendance:rule".into()),
                            ..SenderSnapshot::default()
                        },
                    )]
                    .into(),
                    ..input()
                },
                true,
                "sender leave_accrual blocked, its records stay queued: add the scope attendance:rule",
            ),
            (
                HealthInput {
                    heartbeat_age_secs: Some(96.0),
                    ..input()
                },
                true,
                "stuck",
            ),
            (
                HealthInput {
                    heartbeat_age_secs: None,
                    ..input()
                },
                true,
                "not turned yet",
            ),
        ];
        for (case, ready, why) in cases {
            let (code, h) = evaluate(case);
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{h:?}");
            assert!(!h.healthy);
            assert_eq!(h.ready, ready, "{h:?}");
            assert!(h.problems.iter().any(|p| p.contains(why)), "{why}: {h:?}");
        }
        let (_, h) = evaluate(HealthInput {
            sender: SenderSnapshot {
                blocked_reason: Some("x".into()),
                ..SenderSnapshot::default()
            },
            ..input()
        });
        assert_eq!(h.sender.state, "blocked");
    }

    #[test]
    fn heartbeat_allowance_is_the_watchdogs() {
        let cfg = Config::from_toml_with_env(
            "[feishu]\napp_id = \"cli_x\"\napp_secret = \"s\"\n",
            "t",
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(
            heartbeat_max_age(&cfg),
            Limits::for_config(&cfg).sender_idle
        );
        assert!(heartbeat_max_age(&cfg) >= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_busy_database_thread_is_stuck_only_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(&dir.path().join("q.db")).unwrap();
        let probe = DbProbe::default();
        let (wait, limit) = (Duration::from_millis(100), Duration::from_millis(600));
        probe.check(&queue, wait, limit).await.unwrap();
        // hold the database thread for a while
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = {
            let q = queue.clone();
            tokio::spawn(async move {
                q.ping(move || {
                    let _ = held.recv_timeout(Duration::from_secs(30));
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // busy, but not for long yet: fine
        probe.check(&queue, wait, limit).await.unwrap();
        tokio::time::sleep(limit).await;
        // the first unanswered question is now older than the limit
        let e = probe.check(&queue, wait, limit).await.unwrap_err();
        assert!(e.contains("has not answered"), "{e}");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // the questions left behind record their own answers, so the count starts afresh
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock_slot(&probe.unanswered_since).is_some() {
            assert!(
                Instant::now() < deadline,
                "the old questions were never answered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        probe.check(&queue, wait, limit).await.unwrap();
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
        let (queue, _) = Queue::open(&path).unwrap();
        let sender = Arc::new(SenderStats::default());
        sender
            .heartbeat
            .store(crate::queue::now_ms(), Ordering::Relaxed);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        HttpServer::start(
            listener,
            State::new(
                Arc::new(cfg),
                queue,
                Arc::new(HashMap::new()),
                sender,
                1_772_400_000,
            ),
        )
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
        assert!(r.to_ascii_lowercase().contains("allow: get"), "{r}");
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

    #[tokio::test]
    async fn stopping_is_reported_then_the_server_closes_idle_connections() {
        let dir = tempfile::tempdir().unwrap();
        let srv = server(&dir).await;
        let addr = srv.local_addr();
        // an idle keep-alive connection must not hold up the stop
        let idle = TcpStream::connect(addr).await.unwrap();
        srv.set_stopping();
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
}
