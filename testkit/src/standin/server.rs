//! The server: a real HTTP/1.1 server (hyper 1, keep-alive) on one listener, the shared state
//! behind one lock (never held across an await), the routing of each request to its endpoint, and
//! the one path every write request takes (fault, body, apply, latency, reply).
//!
//! Every reply carries a unique `X-Tt-Logid` header; error bodies repeat it in `error.log_id`.
//! Request bodies above 4 MiB are refused without being buffered. A request the stand-in drops on
//! purpose ([`DropConnection`]) makes hyper close the connection without a reply.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use super::admit::{admit, Window};
use super::config::{StandinConfig, StandinStats};
use super::faults::{self, Fault};
use super::platform::{
    codes, Api, BATCH_CREATE_PATH, LEAVE_ACCRUAL_PATH, MAX_BODY_BYTES, QUERY_PATH, TOKEN_PATH,
    UPLOAD_REPORT_PATH, USER_APPROVALS_PATH,
};
use super::reply::{param_invalid, too_large_reply, Reply};
use super::user_flows::StoredFlow;
use super::{hr, query, token, user_flows};

/// How long in-flight requests may take to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Error of the service future: makes hyper close the connection without writing a reply.
#[derive(Debug, thiserror::Error)]
#[error("stand-in dropped the connection without a reply (simulated lost response)")]
pub(super) struct DropConnection;

/// Mutable state, behind one lock (never held across an await).
pub(super) struct Inner {
    pub(super) cfg: StandinConfig,
    /// token -> expiry.
    pub(super) tokens: HashMap<String, Instant>,
    /// The token handed out to the last good token request.
    pub(super) current_token: Option<String>,
    /// Queued faults per endpoint, and the one for every request once they are empty.
    pub(super) faults: HashMap<Api, VecDeque<Fault>>,
    pub(super) sticky: Option<Fault>,
    /// Each endpoint's rate-limit window.
    pub(super) windows: HashMap<Api, Window>,
    /// Each endpoint's requests that reached the rate limit: (when, admitted).
    pub(super) rate_log: HashMap<Api, Vec<(Instant, bool)>>,
    pub(super) stats: StandinStats,
    /// Requests received per endpoint (every one, whatever its fate).
    pub(super) requests: HashMap<Api, u64>,
    /// The raw bodies of write requests, while [`Standin::set_record_bodies`] is on.
    pub(super) bodies: Option<Vec<(Api, String)>>,
    pub(super) flows: Vec<StoredFlow>,
    pub(super) counts: HashMap<String, usize>,
    /// `user_flows/query`'s index: user id -> positions in `flows`, for the first `.0` flows (new
    /// flows are appended to it; a removal drops it, and the next query rebuilds it).
    pub(super) by_user: Option<(usize, HashMap<String, Vec<usize>>)>,
    /// idempotent ids of flows made invalid ([`Standin::invalidate_flow`]).
    pub(super) invalid: std::collections::HashSet<String>,
    pub(super) hr: hr::HrState,
}

pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    pub(super) stored_tx: watch::Sender<usize>,
    pub(super) requests_tx: watch::Sender<u64>,
    log_seq: AtomicU64,
    log_nonce: u16,
    in_flight: AtomicU64,
    pub(super) max_concurrent: AtomicU64,
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
    pub(super) shared: Arc<Shared>,
    ctl: Arc<Control>,
}

impl std::fmt::Debug for Standin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standin")
            .field("addr", &self.ctl.addr)
            .finish_non_exhaustive()
    }
}

pub(super) fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
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
                faults: HashMap::new(),
                sticky: None,
                windows: HashMap::new(),
                rate_log: HashMap::new(),
                stats: StandinStats::default(),
                requests: HashMap::new(),
                bodies: None,
                flows: Vec::new(),
                counts: HashMap::new(),
                invalid: std::collections::HashSet::new(),
                by_user: None,
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

    /// Starts (or stops) keeping the raw body of every write request.
    pub fn set_record_bodies(&self, on: bool) {
        lock(&self.shared.inner).bodies = on.then(Vec::new);
    }

    /// The raw bodies kept since [`Standin::set_record_bodies`], in arrival order.
    pub fn recorded_bodies(&self) -> Vec<(Api, String)> {
        lock(&self.shared.inner).bodies.clone().unwrap_or_default()
    }

    /// Requests received by `api` (every one, whatever its fate).
    pub fn requests_to(&self, api: Api) -> u64 {
        lock(&self.shared.inner)
            .requests
            .get(&api)
            .copied()
            .unwrap_or(0)
    }

    /// Every request to `api` that reached the rate limit (its token, address and scope were
    /// good), in order: when it arrived, and whether it was admitted (`false`: answered 429).
    pub fn rate_log(&self, api: Api) -> Vec<(Instant, bool)> {
        lock(&self.shared.inner)
            .rate_log
            .get(&api)
            .cloned()
            .unwrap_or_default()
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
                    conns.spawn(serve_connection(stream, peer.ip(), shared.clone(), conn_shutdown.clone()));
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
    peer: IpAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { handle(shared, req, peer).await }
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
        let body = match reply.raw.take() {
            Some(raw) => raw,
            None => serde_json::to_vec(&reply.body).unwrap_or_default(),
        };
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

/// Routes a request from `peer` to its endpoint.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let log_id = shared.next_log_id();
    let path = req.uri().path().to_owned();
    debug!(method = %req.method(), path = %path, log_id, "stand-in: request");
    let api = if req.method() == Method::POST && path == TOKEN_PATH {
        let reply = token::handle_token(&shared, req).await?;
        return Ok(shared.finish(reply, &log_id));
    } else if req.method() == Method::POST && path == BATCH_CREATE_PATH {
        Api::UserFlows
    } else if req.method() == Method::POST && path == USER_APPROVALS_PATH {
        Api::UserApprovals
    } else if req.method() == Method::POST && path == UPLOAD_REPORT_PATH {
        Api::UploadReport
    } else if req.method() == Method::PATCH
        && path
            .strip_prefix(LEAVE_ACCRUAL_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
    {
        Api::LeaveAccrual
    } else if req.method() == Method::POST && path == QUERY_PATH {
        Api::UserFlowQuery
    } else if req.method() == Method::GET && user_flows::record_id(&path).is_some() {
        Api::UserFlowGet
    } else {
        let reply = Reply::err(
            StatusCode::NOT_FOUND,
            codes::PARAM_INVALID,
            "param is invalid: no such endpoint (404 page not found)",
        );
        return Ok(shared.finish(reply, &log_id));
    };
    handle_write(&shared, api, req, &log_id, peer).await
}

/// The one path of every request to an attendance endpoint (the writes, and the read of one
/// record): count it, take its fault, keep its body (if asked), apply it or not as the fault says,
/// wait the configured latency, then reply, or drop the connection without a reply.
async fn handle_write(
    shared: &Shared,
    api: Api,
    req: Request<Incoming>,
    log_id: &str,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let _in_flight = (api == Api::UserFlows).then(|| InFlight::enter(shared));
    let (fault, batch_requests) = {
        let mut g = lock(&shared.inner);
        *g.requests.entry(api).or_default() += 1;
        if api == Api::UserFlows {
            g.stats.batch_requests += 1;
        }
        (faults::take(&mut g, api), g.stats.batch_requests)
    };
    if api == Api::UserFlows {
        shared.requests_tx.send_replace(batch_requests);
    }

    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    if let Ok(b) = &body {
        if let Some(list) = lock(&shared.inner).bodies.as_mut() {
            list.push((api, String::from_utf8_lossy(b).into_owned()));
        }
    }
    let run = |body| apply(shared, api, &parts, body, log_id, peer);
    let mut lose_after_apply = false;
    let reply = match fault {
        Some(Fault::CloseBeforeApply) => {
            debug!(log_id, "stand-in: fault: closing before apply");
            lock(&shared.inner).stats.lost_responses += 1;
            return Err(DropConnection);
        }
        Some(Fault::Delay(d)) => {
            debug!(log_id, delay = ?d, "stand-in: fault: delaying");
            tokio::time::sleep(d).await;
            run(body)
        }
        Some(Fault::LoseResponseAfterApply) => {
            lose_after_apply = true;
            run(body)
        }
        Some(f) => faults::error_reply(shared, &f).unwrap_or_else(|| param_invalid("fault")),
        None => run(body),
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

/// Admits a request (token, IP allow-list, scope, rate limit), then applies its endpoint's rules.
fn apply(
    shared: &Shared,
    api: Api,
    parts: &hyper::http::request::Parts,
    body: Result<Bytes, BodyError>,
    log_id: &str,
    peer: IpAddr,
) -> Reply {
    if let Some(refused) = admit(shared, parts, api, peer) {
        return refused;
    }
    match api {
        Api::UserFlows => user_flows::apply(shared, parts, body, log_id),
        Api::UserFlowGet => user_flows::get(parts),
        Api::UserFlowQuery => match body {
            Ok(body) => query::query(shared, parts, &body),
            Err(_) => too_large_reply(),
        },
        Api::UserApprovals | Api::UploadReport | Api::LeaveAccrual => match body {
            Ok(body) => hr::apply(shared, api, parts, &body, log_id),
            Err(_) => too_large_reply(),
        },
    }
}

pub(super) enum BodyError {
    TooLarge,
    Broken,
}

pub(super) async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}
