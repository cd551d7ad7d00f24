//! A local stand-in for the Feishu / Lark open platform.
//!
//! # Why it exists
//! The bridge must deliver every punch exactly once to `user_flows/batch_create`, through token
//! expiry, rate limits, lost replies and refusals. Those paths cannot be exercised against the real
//! platform on demand, so integration tests, the delivery benchmark and the `demo` command talk to
//! this stand-in instead. It is a real HTTP/1.1 server (hyper 1, keep-alive) that answers like the
//! platform does, records every write, and lets the caller inject faults.
//!
//! # Rules it enforces (as documented by the platform; see `shared/api-docs/003_*`, `002_*` and
//! `shared/notes/feishu-platform.md`)
//! - `POST /open-apis/auth/v3/tenant_access_token/internal`: the right `app_id` / `app_secret`
//!   gives a flat `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":…}`; asking again
//!   while the current token has at least 30 minutes left returns that same token with its
//!   remaining lifetime, otherwise a new one (the old stays valid until it expires). Wrong
//!   credentials give HTTP 400 code 99991543.
//! - `POST /open-apis/attendance/v1/user_flows/batch_create?employee_type=…`, checked in order:
//!   injected fault; `Authorization: Bearer` (99991661 missing, 99991663 unknown / expired /
//!   revoked); a sliding one-second rate limit per endpoint (HTTP 429, code 99991400, headers
//!   `x-ogw-ratelimit-limit` / `x-ogw-ratelimit-reset`); `employee_type` is `employee_id` or
//!   `employee_no` (1220001); 1..=50 records (1220600 "operate too much flow" above 50, 1220001 for
//!   none); the five required non-empty strings per record and `check_time` as Unix seconds not
//!   before 2022-01-01 +08:00 (1220001, the whole batch refused); deduplication by
//!   `idempotent_id` ([`DedupMode`]); unknown users listed in `msg` as
//!   `[userid-creatorid, …]` while the others are stored.
//! - Every reply carries a unique `X-Tt-Logid` header; error bodies repeat it in
//!   `error.log_id`. Request bodies above 4 MiB are refused without being buffered.
//! - Error replies never echo the request body, so the app secret never appears in them.
//!
//! - The HR endpoints (`user_approvals`, `archive_rule/upload_report`, `leave_accrual_record`
//!   PATCH) follow their own pages: see [`hr`].
//!
//! A batch is applied atomically (one lock), then the configured latency is slept, then the reply
//! is sent. [`Fault::LoseResponseAfterApply`] makes the service future fail after the write: hyper
//! then closes the connection without a reply, which is exactly a reply lost on the way back.
//!
//! # Safety of use
//! [`Standin::start`] and the tests only ever bind loopback (`127.0.0.1`). [`Standin::bind`] and
//! [`serve_forever`] bind whatever address they are given (for the `standin` CLI command); the
//! stand-in has no real security and must not be exposed beyond a test host.
//!
//! The server runs until [`Standin::shutdown`] is called or the last [`Standin`] handle is dropped.
//! It logs at `debug` level only and never panics on bad input.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

mod hr;

pub use hr::{AccrualRecord, Api, ReportKey, StoredApproval};

/// Path of the tenant token endpoint.
pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
/// Path of the punch import endpoint.
pub const BATCH_CREATE_PATH: &str = "/open-apis/attendance/v1/user_flows/batch_create";
/// Largest request body accepted (bigger ones are refused with HTTP 400, never buffered).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most records one batch_create call may carry.
pub const MAX_RECORDS_PER_BATCH: usize = 50;
/// Earliest accepted `check_time`: 2022-01-01 00:00:00 +08:00, in Unix seconds.
pub const MIN_CHECK_TIME: u64 = 1_640_966_400;
/// A token with less than this left is replaced by a new one when a token is asked for.
const TOKEN_REUSE_MIN_LEFT: Duration = Duration::from_secs(30 * 60);
/// How long in-flight requests may take to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Required non-empty string fields of a `user_flow`, in the order they are checked.
const REQUIRED_FIELDS: [&str; 5] = [
    "user_id",
    "creator_id",
    "location_name",
    "check_time",
    "comment",
];

/// Platform error codes used by the stand-in.
pub mod codes {
    /// Success.
    pub const OK: i64 = 0;
    /// Parameter validation failed.
    pub const PARAM_INVALID: i64 = 1_220_001;
    /// No data permission.
    pub const NO_PERMISSION: i64 = 1_220_005;
    /// Generic attendance error (too many flows, duplicate, no row affected).
    pub const GENERIC: i64 = 1_220_600;
    /// Internal server error.
    pub const INTERNAL: i64 = 1_225_000;
    /// Rate limit exceeded.
    pub const RATE_LIMITED: i64 = 99_991_400;
    /// app_id or app_secret wrong.
    pub const BAD_CREDENTIALS: i64 = 99_991_543;
    /// Authorization header missing.
    pub const TOKEN_MISSING: i64 = 99_991_661;
    /// Tenant access token invalid (unknown, expired or revoked).
    pub const TOKEN_INVALID: i64 = 99_991_663;
    /// Required scope not enabled for the app.
    pub const SCOPE_MISSING: i64 = 99_991_672;
    /// Malformed token request.
    pub const INVALID_PARAM: i64 = 10_003;
    /// batch_create: a user id refused at validation (whole batch).
    pub const USER_INVALID: i64 = 1_220_004;
}

/// Settings of a stand-in. Every field can also be changed while it runs (see [`Standin`]).
#[derive(Clone)]
pub struct StandinConfig {
    /// The only app_id accepted by the token endpoint.
    pub app_id: String,
    /// The only app_secret accepted by the token endpoint.
    pub app_secret: String,
    /// Lifetime of issued tokens, seconds (the platform's is 7200).
    pub token_ttl_secs: u64,
    /// Added before every batch_create reply.
    pub latency: Duration,
    /// batch_create requests admitted per sliding second; 0 disables the limit.
    pub rate_limit_per_sec: u32,
    /// `None`: every user exists. `Some(set)`: only these `user_id`s exist.
    pub known_users: Option<HashSet<String>>,
    /// What happens to a record whose `idempotent_id` is already stored.
    pub dedup: DedupMode,
    /// Users whose records make the platform refuse the *whole* batch with 1220004 ("user_id is not
    /// exist or does not have permission"), as it does for ids it rejects at validation.
    pub invalid_users: HashSet<String>,
}

impl Default for StandinConfig {
    fn default() -> Self {
        StandinConfig {
            app_id: "cli_standin".to_owned(),
            app_secret: "standin-secret".to_owned(),
            token_ttl_secs: 7200,
            latency: Duration::ZERO,
            rate_limit_per_sec: 50,
            known_users: None,
            dedup: DedupMode::Silent,
            invalid_users: HashSet::new(),
        }
    }
}

impl std::fmt::Debug for StandinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandinConfig")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("latency", &self.latency)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("known_users", &self.known_users.as_ref().map(HashSet::len))
            .field("dedup", &self.dedup)
            .finish()
    }
}

/// Handling of records whose `idempotent_id` is already stored (records without one are never
/// deduplicated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum DedupMode {
    /// The record is not stored again, counts as a duplicate and is answered like a created one.
    #[default]
    Silent,
    /// The whole batch is refused (400, 1220600 "the object already exists"), nothing applied.
    Conflict,
    /// No deduplication at all: every record is stored, so [`Standin::write_counts`] shows double
    /// deliveries. Not the platform's behaviour; for checking a client's exactly-once claim.
    Off,
}

/// A fault injected into one batch_create request (queued) or all of them (sticky).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Handle the request normally (applying the write if it is valid), then drop the connection
    /// with no reply, whatever the reply would have been.
    LoseResponseAfterApply,
    /// Drop the connection with no reply, apply nothing.
    CloseBeforeApply,
    /// HTTP 500, code 1225000 "internal server error", nothing applied.
    ServerError,
    /// HTTP 400, code 1220600 "no row affected", nothing applied.
    NoRowAffected,
    /// HTTP 429, code 99991400, with the rate-limit headers; `reset_secs` goes in
    /// `x-ogw-ratelimit-reset`. Counted in `injected_rate_limited`, not in `rate_limited`.
    RateLimited {
        /// Value of the `x-ogw-ratelimit-reset` header.
        reset_secs: u64,
    },
    /// HTTP 400, code 99991663 (token invalid), nothing applied. The token itself stays valid.
    TokenInvalid,
    /// HTTP 400, code 99991672 (scope `attendance:task` missing), nothing applied.
    ScopeMissing,
    /// HTTP 400, code 1220005 "no permission", nothing applied.
    NoPermission,
    /// Hold the request this long, then handle it normally.
    Delay(Duration),
    /// Any reply: HTTP `status`, body code `code` and `msg`, nothing applied.
    Custom { status: u16, code: i64, msg: String },
}

/// Counters of a stand-in, see [`Standin::stats`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct StandinStats {
    /// Token requests received (good or bad).
    pub token_requests: u64,
    /// batch_create requests received (every one, whatever its fate).
    pub batch_requests: u64,
    /// Records written (applied).
    pub records_stored: u64,
    /// Records skipped or refused because their idempotent_id was already stored (or repeated
    /// within the batch).
    pub records_duplicate: u64,
    /// Records refused because their user does not exist.
    pub records_unknown_user: u64,
    /// Requests (any endpoint) answered with a body code other than 0.
    pub rejected_requests: u64,
    /// HTTP 429 replies caused by the client exceeding the limit (injected ones not included).
    pub rate_limited: u64,
    /// HTTP 429 replies caused by an injected [`Fault::RateLimited`].
    pub injected_rate_limited: u64,
    /// Faults taken from the queue or the sticky slot (every kind, including delays).
    pub injected_faults: u64,
    /// Requests whose connection was dropped without any reply (both
    /// [`Fault::LoseResponseAfterApply`] and [`Fault::CloseBeforeApply`]).
    pub lost_responses: u64,
    /// Highest number of batch_create requests admitted in any sliding one-second window.
    pub max_requests_in_any_second: u64,
    /// Most batch_create requests being handled at once (from arrival to reply).
    pub max_concurrent: u64,
}

/// One record written by batch_create.
#[derive(Clone, Debug)]
pub struct StoredFlow {
    /// The record as the client sent it.
    pub record: Value,
    /// When it was written.
    pub stored_at: SystemTime,
    /// `X-Tt-Logid` of the request that wrote it.
    pub log_id: String,
    /// The request's `employee_type` (`employee_id` or `employee_no`).
    pub employee_type: String,
}

impl StoredFlow {
    /// The record's `idempotent_id`, if it has a non-empty one.
    pub fn idempotent_id(&self) -> Option<&str> {
        idempotent_id_of(&self.record)
    }
}

/// Error of the service future: makes hyper close the connection without writing a reply.
#[derive(Debug, thiserror::Error)]
#[error("stand-in dropped the connection without a reply (simulated lost response)")]
struct DropConnection;

/// Mutable state, behind one lock (never held across an await).
struct Inner {
    cfg: StandinConfig,
    /// token -> expiry.
    tokens: HashMap<String, Instant>,
    /// The token handed out to the last good token request.
    current_token: Option<String>,
    faults: VecDeque<Fault>,
    sticky: Option<Fault>,
    /// Admission times of batch_create requests within the last second.
    window: VecDeque<Instant>,
    stats: StandinStats,
    flows: Vec<StoredFlow>,
    counts: HashMap<String, usize>,
    hr: hr::HrState,
}

struct Shared {
    inner: Mutex<Inner>,
    stored_tx: watch::Sender<usize>,
    requests_tx: watch::Sender<u64>,
    log_seq: AtomicU64,
    log_nonce: u16,
    in_flight: AtomicU64,
    max_concurrent: AtomicU64,
}

/// Stops the server when the last handle goes.
struct Control {
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

/// Handle to a running stand-in. Cheap to clone; the server stops on [`Standin::shutdown`] or
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Standin {
    shared: Arc<Shared>,
    ctl: Arc<Control>,
}

impl std::fmt::Debug for Standin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standin")
            .field("addr", &self.ctl.addr)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Standin {
    /// Starts a stand-in on `127.0.0.1` with a free port.
    pub async fn start(cfg: StandinConfig) -> std::io::Result<Standin> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts a stand-in on `addr`.
    pub async fn bind(addr: SocketAddr, cfg: StandinConfig) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stored_tx, _) = watch::channel(0usize);
        let (requests_tx, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                cfg,
                tokens: HashMap::new(),
                current_token: None,
                faults: VecDeque::new(),
                sticky: None,
                window: VecDeque::new(),
                stats: StandinStats::default(),
                flows: Vec::new(),
                counts: HashMap::new(),
                hr: hr::HrState::default(),
            }),
            stored_tx,
            requests_tx,
            log_seq: AtomicU64::new(0),
            log_nonce: rand::rng().random_range(0..10_000),
            in_flight: AtomicU64::new(0),
            max_concurrent: AtomicU64::new(0),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        debug!(%addr, "stand-in listening");
        Ok(Standin {
            shared,
            ctl: Arc::new(Control {
                addr,
                shutdown_tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// `http://IP:PORT`, to use as the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.ctl.addr)
    }

    /// Queues a fault for one future batch_create request (FIFO, one per request).
    pub fn push_fault(&self, f: Fault) {
        lock(&self.shared.inner).faults.push_back(f);
    }

    /// Number of queued faults not yet taken.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.inner).faults.len()
    }

    /// Sets (or clears) a fault applied to every batch_create request; queued faults go first.
    pub fn set_sticky_fault(&self, f: Option<Fault>) {
        lock(&self.shared.inner).sticky = f;
    }

    /// Replaces the set of users whose records make the whole batch invalid (1220004).
    pub fn set_invalid_users(&self, users: HashSet<String>) {
        lock(&self.shared.inner).cfg.invalid_users = users;
    }

    /// Replaces the set of existing users (`None`: every user exists).
    pub fn set_known_users(&self, users: Option<HashSet<String>>) {
        lock(&self.shared.inner).cfg.known_users = users;
    }

    /// Changes the latency added before every batch_create reply.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.shared.inner).cfg.latency = d;
    }

    /// Changes the deduplication mode.
    pub fn set_dedup(&self, m: DedupMode) {
        lock(&self.shared.inner).cfg.dedup = m;
    }

    /// Changes the rate limit (requests per sliding second; 0 disables it).
    pub fn set_rate_limit(&self, per_sec: u32) {
        lock(&self.shared.inner).cfg.rate_limit_per_sec = per_sec;
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, secs: u64) {
        lock(&self.shared.inner).cfg.token_ttl_secs = secs;
    }

    /// Changes the accepted app secret (a rotated secret); issued tokens stay valid.
    pub fn set_app_secret(&self, s: &str) {
        lock(&self.shared.inner).cfg.app_secret = s.to_owned();
    }

    /// Invalidates every issued token: their next use gets 99991663.
    pub fn revoke_tokens(&self) {
        let mut g = lock(&self.shared.inner);
        g.tokens.clear();
        g.current_token = None;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StandinStats {
        let mut s = lock(&self.shared.inner).stats.clone();
        s.max_concurrent = self.shared.max_concurrent.load(Ordering::Relaxed);
        s
    }

    /// Every record written, in order of writing.
    pub fn stored(&self) -> Vec<StoredFlow> {
        lock(&self.shared.inner).flows.clone()
    }

    /// Number of records written so far.
    pub fn stored_len(&self) -> usize {
        lock(&self.shared.inner).flows.len()
    }

    /// idempotent_id -> number of times a record with it was written (records without one are
    /// not in it).
    pub fn write_counts(&self) -> HashMap<String, usize> {
        lock(&self.shared.inner).counts.clone()
    }

    /// Resolves once at least `n` records are stored.
    pub async fn wait_stored(&self, n: usize) {
        let mut rx = self.shared.stored_tx.subscribe();
        // The sender lives in `self.shared`, so this cannot fail while `self` is borrowed.
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Resolves once at least `n` batch_create requests have been received.
    pub async fn wait_requests(&self, n: u64) {
        let mut rx = self.shared.requests_tx.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Stops accepting, lets in-flight requests finish (up to 2 s), closes every connection.
    pub async fn shutdown(self) {
        self.ctl.shutdown_tx.send_replace(true);
        let task = self
            .ctl
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Runs a stand-in on `addr` until the process ends (for a `standin` CLI command).
pub async fn serve_forever(addr: SocketAddr, cfg: StandinConfig) -> std::io::Result<()> {
    serve_until(addr, cfg, std::future::pending::<()>()).await
}

/// Runs a stand-in on `addr` until `stop` resolves, then shuts it down.
pub async fn serve_until<F>(addr: SocketAddr, cfg: StandinConfig, stop: F) -> std::io::Result<()>
where
    F: Future<Output = ()>,
{
    let standin = Standin::bind(addr, cfg).await?;
    stop.await;
    standin.shutdown().await;
    Ok(())
}

/// Resolves once shutdown is asked for (or every handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Err means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let conn_shutdown = shutdown_rx.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown_rx) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "stand-in: connection accepted");
                    conns.spawn(serve_connection(stream, shared.clone(), conn_shutdown.clone()));
                }
                Err(e) => {
                    // e.g. too many open files: back off a little instead of spinning.
                    debug!(error = %e, "stand-in: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(500), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    debug!("stand-in stopped");
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                debug!(error = %e, "stand-in: connection ended");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
}

/// A reply being built.
struct Reply {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
        }
    }

    /// An error reply; `error.log_id` is filled in by [`Shared::finish`].
    fn err(status: StatusCode, code: i64, msg: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "code": code, "msg": msg.into() }),
            headers: Vec::new(),
        }
    }

    fn code(&self) -> i64 {
        self.body.get("code").and_then(Value::as_i64).unwrap_or(-1)
    }
}

fn param_invalid(detail: impl std::fmt::Display) -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::PARAM_INVALID,
        format!("param is invalid: {detail}"),
    )
}

fn rate_limited_reply(limit: u32, reset_secs: u64) -> Reply {
    let mut r = Reply::err(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        "request trigger frequency limit",
    );
    r.headers.push(("x-ogw-ratelimit-limit", limit.to_string()));
    r.headers
        .push(("x-ogw-ratelimit-reset", reset_secs.to_string()));
    r
}

fn token_invalid_reply() -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::TOKEN_INVALID,
        "Invalid access token for authorization. Please make a request with token attached.",
    )
}

/// Tracks one batch_create request in flight.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_concurrent.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn next_log_id(&self) -> String {
        let seq = self.log_seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!(
            "{}{:04}standin{:06}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            self.log_nonce,
            seq
        )
    }

    /// Turns a reply into a response: log id header (and `error.log_id` on errors), counters.
    fn finish(&self, mut reply: Reply, log_id: &str) -> Response<Full<Bytes>> {
        let code = reply.code();
        if code != codes::OK {
            lock(&self.inner).stats.rejected_requests += 1;
            if let Some(obj) = reply.body.as_object_mut() {
                obj.insert("error".to_owned(), json!({ "log_id": log_id }));
            }
        }
        let body = serde_json::to_vec(&reply.body).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = reply.status;
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(log_id) {
            headers.insert(HeaderName::from_static("x-tt-logid"), v);
        }
        for (name, value) in reply.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        debug!(status = %reply.status, code, log_id, "stand-in: reply");
        resp
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let log_id = shared.next_log_id();
    let path = req.uri().path().to_owned();
    debug!(method = %req.method(), path = %path, log_id, "stand-in: request");
    if req.method() == Method::POST && path == TOKEN_PATH {
        let reply = handle_token(&shared, req).await?;
        Ok(shared.finish(reply, &log_id))
    } else if req.method() == Method::POST && path == BATCH_CREATE_PATH {
        handle_batch(&shared, req, &log_id).await
    } else if req.method() == Method::POST && path == crate::feishu::USER_APPROVALS_PATH {
        hr::handle_hr(&shared, Api::UserApprovals, req, &log_id).await
    } else if req.method() == Method::POST && path == crate::feishu::UPLOAD_REPORT_PATH {
        hr::handle_hr(&shared, Api::UploadReport, req, &log_id).await
    } else if req.method() == Method::PATCH
        && path.starts_with(&format!("{}/", crate::feishu::LEAVE_ACCRUAL_PATH))
    {
        hr::handle_hr(&shared, Api::LeaveAccrual, req, &log_id).await
    } else {
        let reply = Reply::err(
            StatusCode::NOT_FOUND,
            codes::PARAM_INVALID,
            "param is invalid: no such endpoint (404 page not found)",
        );
        Ok(shared.finish(reply, &log_id))
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn too_large_reply() -> Reply {
    param_invalid(format!("request body larger than {MAX_BODY_BYTES} bytes"))
}

async fn handle_token(shared: &Shared, req: Request<Incoming>) -> Result<Reply, DropConnection> {
    lock(&shared.inner).stats.token_requests += 1;
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Ok(too_large_reply()),
        Err(BodyError::Broken) => return Err(DropConnection),
    };
    #[derive(serde::Deserialize)]
    struct Creds {
        app_id: String,
        app_secret: String,
    }
    let Ok(creds) = serde_json::from_slice::<Creds>(&body) else {
        return Ok(Reply::err(
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAM,
            "invalid param: body must be {\"app_id\":...,\"app_secret\":...}",
        ));
    };
    let mut g = lock(&shared.inner);
    if creds.app_id != g.cfg.app_id || creds.app_secret != g.cfg.app_secret {
        return Ok(Reply::err(
            StatusCode::BAD_REQUEST,
            codes::BAD_CREDENTIALS,
            "app_id or app_secret is invalid",
        ));
    }
    let now = Instant::now();
    g.tokens.retain(|_, expiry| *expiry > now);
    if let Some(current) = g.current_token.clone() {
        if let Some(expiry) = g.tokens.get(&current) {
            let left = expiry.saturating_duration_since(now);
            if left >= TOKEN_REUSE_MIN_LEFT {
                return Ok(Reply::ok(json!({
                    "code": 0,
                    "msg": "ok",
                    "tenant_access_token": current,
                    "expire": left.as_secs(),
                })));
            }
        }
    }
    let ttl = g.cfg.token_ttl_secs;
    let token = format!("t-standin-{:032x}", rand::rng().random::<u128>());
    let expiry = now
        .checked_add(Duration::from_secs(ttl))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
    g.tokens.insert(token.clone(), expiry);
    g.current_token = Some(token.clone());
    debug!("stand-in: token issued");
    Ok(Reply::ok(json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": token,
        "expire": ttl,
    })))
}

async fn handle_batch(
    shared: &Shared,
    req: Request<Incoming>,
    log_id: &str,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let _in_flight = InFlight::enter(shared);
    let (fault, received) = {
        let mut g = lock(&shared.inner);
        g.stats.batch_requests += 1;
        let fault = g.faults.pop_front().or_else(|| g.sticky.clone());
        if fault.is_some() {
            g.stats.injected_faults += 1;
        }
        (fault, g.stats.batch_requests)
    };
    shared.requests_tx.send_replace(received);

    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    if let Ok(b) = &body {
        if let Some(list) = lock(&shared.inner).hr.bodies.as_mut() {
            list.push((Api::UserFlows, String::from_utf8_lossy(b).into_owned()));
        }
    }
    let mut lose_after_apply = false;
    let reply = match fault {
        Some(Fault::CloseBeforeApply) => {
            debug!(log_id, "stand-in: fault: closing before apply");
            lock(&shared.inner).stats.lost_responses += 1;
            return Err(DropConnection);
        }
        Some(Fault::ServerError) => Reply::err(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal server error",
        ),
        Some(Fault::NoRowAffected) => {
            Reply::err(StatusCode::BAD_REQUEST, codes::GENERIC, "no row affected")
        }
        Some(Fault::RateLimited { reset_secs }) => {
            let mut g = lock(&shared.inner);
            g.stats.injected_rate_limited += 1;
            rate_limited_reply(g.cfg.rate_limit_per_sec, reset_secs)
        }
        Some(Fault::TokenInvalid) => token_invalid_reply(),
        Some(Fault::ScopeMissing) => Reply::err(
            StatusCode::BAD_REQUEST,
            codes::SCOPE_MISSING,
            "Access denied. One of the following scopes is required: [attendance:task]. \
             Please enable one of the scopes for the app.",
        ),
        Some(Fault::NoPermission) => Reply::err(
            StatusCode::BAD_REQUEST,
            codes::NO_PERMISSION,
            "no permission",
        ),
        Some(f @ Fault::Custom { .. }) => {
            hr::fault_reply(shared, &f).unwrap_or_else(|| param_invalid("fault"))
        }
        Some(Fault::Delay(d)) => {
            debug!(log_id, delay = ?d, "stand-in: fault: delaying");
            tokio::time::sleep(d).await;
            process_batch(shared, &parts, body, log_id)
        }
        Some(Fault::LoseResponseAfterApply) => {
            lose_after_apply = true;
            process_batch(shared, &parts, body, log_id)
        }
        None => process_batch(shared, &parts, body, log_id),
    };

    let latency = lock(&shared.inner).cfg.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if lose_after_apply {
        debug!(
            log_id,
            code = reply.code(),
            "stand-in: fault: dropping the reply"
        );
        lock(&shared.inner).stats.lost_responses += 1;
        return Err(DropConnection);
    }
    Ok(shared.finish(reply, log_id))
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn idempotent_id_of(record: &Value) -> Option<&str> {
    record
        .get("idempotent_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn bearer_token(parts: &hyper::http::request::Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks one record; `Err` is the detail after `flow_records[i].`.
fn check_record(record: &Value) -> Result<(), String> {
    let Some(obj) = record.as_object() else {
        return Err(" must be an object".to_owned());
    };
    for field in REQUIRED_FIELDS {
        match obj.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => return Err(format!(".{field} is empty")),
            Some(_) => return Err(format!(".{field} must be a string")),
            None => return Err(format!(".{field} is required")),
        }
    }
    let check_time = obj.get("check_time").and_then(Value::as_str).unwrap_or("");
    let valid_digits = !check_time.is_empty() && check_time.bytes().all(|b| b.is_ascii_digit());
    match check_time.parse::<u64>() {
        Ok(t) if valid_digits && t >= MIN_CHECK_TIME => {}
        Ok(_) if valid_digits => {
            return Err(format!(
                ".check_time is before 2022-01-01 +08:00 ({MIN_CHECK_TIME}): only later punches can be imported"
            ))
        }
        _ => return Err(".check_time must be Unix seconds as a decimal string".to_owned()),
    }
    match obj.get("idempotent_id") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(".idempotent_id must be a string".to_owned()),
    }
}

/// Steps b to i of the batch_create rules (all but the fault and the latency).
fn process_batch(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Result<Bytes, BodyError>,
    log_id: &str,
) -> Reply {
    // b. token
    let Some(token) = bearer_token(parts) else {
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::TOKEN_MISSING,
            "Missing access token for authorization. Please make a request with token attached.",
        );
    };
    {
        let mut g = lock(&shared.inner);
        let now = Instant::now();
        let valid = g.tokens.get(token).is_some_and(|expiry| *expiry > now);
        if !valid {
            return token_invalid_reply();
        }

        // c. rate limit over admitted requests, sliding one-second window
        let limit = g.cfg.rate_limit_per_sec;
        let window = Duration::from_secs(1);
        while g
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            g.window.pop_front();
        }
        if limit > 0 && g.window.len() >= limit as usize {
            let oldest = g.window.front().copied().unwrap_or(now);
            let frees_in = (oldest + window).saturating_duration_since(now);
            let reset = frees_in.as_secs() + u64::from(frees_in.subsec_nanos() > 0);
            g.stats.rate_limited += 1;
            return rate_limited_reply(limit, reset.max(1));
        }
        g.window.push_back(now);
        let admitted = g.window.len() as u64;
        if admitted > g.stats.max_requests_in_any_second {
            g.stats.max_requests_in_any_second = admitted;
        }
    }

    // d. employee_type
    let employee_type = match query_param(parts.uri.query(), "employee_type") {
        Some(t @ ("employee_id" | "employee_no")) => t.to_owned(),
        _ => return param_invalid("employee_type invalid"),
    };

    // e. body
    let body = match body {
        Ok(b) => b,
        Err(_) => return too_large_reply(),
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return param_invalid("request body is not valid JSON"),
    };
    let Some(records) = parsed.get("flow_records").and_then(Value::as_array) else {
        return param_invalid("flow_records is required and must be an array");
    };
    if records.is_empty() {
        return param_invalid("flow_records is empty");
    }
    if records.len() > MAX_RECORDS_PER_BATCH {
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::GENERIC,
            "operate too much flow",
        );
    }

    // f. every record valid, or nothing applied
    for (i, record) in records.iter().enumerate() {
        if let Err(detail) = check_record(record) {
            return param_invalid(format!("flow_records[{i}]{detail}"));
        }
    }
    {
        let g = lock(&shared.inner);
        for (i, record) in records.iter().enumerate() {
            let user = record.get("user_id").and_then(Value::as_str).unwrap_or("");
            if g.cfg.invalid_users.contains(user) {
                return Reply::err(
                    StatusCode::BAD_REQUEST,
                    codes::USER_INVALID,
                    format!("param is invalid: flow_records[{i}].user_id is not exist or does not have permission"),
                );
            }
        }
    }

    // g, h, i under one lock
    let stored_total;
    let reply = {
        let mut g = lock(&shared.inner);
        let dedup = g.cfg.dedup;
        if dedup == DedupMode::Conflict {
            let mut seen = HashSet::new();
            let conflicts = records
                .iter()
                .filter_map(idempotent_id_of)
                .filter(|id| !seen.insert(*id) || g.counts.contains_key(*id))
                .count();
            if conflicts > 0 {
                g.stats.records_duplicate += conflicts as u64;
                return Reply::err(
                    StatusCode::BAD_REQUEST,
                    codes::GENERIC,
                    "the object already exists",
                );
            }
        }
        let stored_at = SystemTime::now();
        let mut answered = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        for record in records {
            let id = idempotent_id_of(record);
            if dedup == DedupMode::Silent && id.is_some_and(|id| g.counts.contains_key(id)) {
                g.stats.records_duplicate += 1;
                answered.push(record.clone());
                continue;
            }
            let user = record.get("user_id").and_then(Value::as_str).unwrap_or("");
            let known = match &g.cfg.known_users {
                None => true,
                Some(users) => users.contains(user),
            };
            if !known {
                let creator = record
                    .get("creator_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                failed.push(format!("{user}-{creator}"));
                g.stats.records_unknown_user += 1;
                continue;
            }
            if let Some(id) = id {
                *g.counts.entry(id.to_owned()).or_insert(0) += 1;
            }
            g.flows.push(StoredFlow {
                record: record.clone(),
                stored_at,
                log_id: log_id.to_owned(),
                employee_type: employee_type.clone(),
            });
            g.stats.records_stored += 1;
            answered.push(record.clone());
        }
        stored_total = g.flows.len();
        let msg = if failed.is_empty() {
            "success".to_owned()
        } else {
            format!("[{}]", failed.join(", "))
        };
        Reply::ok(json!({
            "code": 0,
            "msg": msg,
            "data": { "flow_records": answered },
        }))
    };
    shared.stored_tx.send_replace(stored_total);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
