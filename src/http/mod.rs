//! The optional HTTP endpoint (`[http] listen`): `/healthz`, `/metrics` and `/status` for monitoring.
//!
//! - `GET /healthz`: JSON `{ "ready", "healthy", "problems", "conditions", "devices", "sender",
//!   "hr_senders" }` (see [`healthz`]): the health model's verdict now ([`crate::health`]: the same
//!   judgment as the systemd watchdog and the `STATUS=` line). HTTP 200 when no condition holds, 503
//!   otherwise, with one sentence per condition in `problems` and each condition in `conditions`
//!   (`kind`, `message`, `since`, `restart`). A look waits [`QUEUE_PROBE_WAIT`] for the queue's
//!   database thread; a question it leaves unanswered is remembered by the next look. A device being
//!   offline is reported in `devices` but does not fail the check: a clock that is switched off is not
//!   a reason to restart the daemon.
//! - `GET /metrics`: the OpenMetrics text format; see [`crate::metrics`] for the list.
//! - `GET /status`: the object `clockbridge status --json` prints ([`crate::status::read`], read from
//!   the queue file on a blocking thread), with the health conditions of this moment.
//! - `HEAD` on each of them answers as `GET` does (status, headers, `Content-Length`), without the
//!   body.
//!
//! Small and robust by construction: HTTP/1.1 only (hyper), `GET` and `HEAD` only (405 otherwise, 404
//! for any other path), request bodies are never read, request heads are limited to
//! [`MAX_REQUEST_HEAD`] bytes and must arrive within [`HEADER_READ_TIMEOUT`] (which also closes idle
//! keep-alive connections), at most [`MAX_CONNECTIONS`] connections are served at once (more wait in
//! the listen backlog), every request is answered within [`REQUEST_TIMEOUT`], and at most
//! [`STATUS_READERS`] `/status` reads run at once. The endpoint has no authentication: the
//! configuration accepts only a loopback address unless `http.allow_remote` is set.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
use crate::health::Monitor;
use crate::server::STOP_GRACE;

pub mod healthz;

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

/// What the handlers read: the daemon's live state, through its health model.
pub struct State {
    pub cfg: Arc<Config>,
    /// The health model, and through it the live parts (queue, devices, senders).
    pub monitor: Arc<Monitor>,
    /// Unix seconds.
    pub started_at: i64,
    status_readers: Arc<Semaphore>,
}

impl State {
    pub fn new(cfg: Arc<Config>, monitor: Arc<Monitor>, started_at: i64) -> State {
        State {
            cfg,
            monitor,
            started_at,
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
    /// Serves on `listener` (from [`bind`]) until [`HttpServer::stop`].
    pub fn start(listener: Listener, state: State) -> HttpServer {
        let Listener { listener, address } = listener;
        let state = Arc::new(state);
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

    /// Stops accepting, lets requests in progress finish (briefly), and closes every connection
    /// (`/healthz` says "stopping" from [`crate::health::Monitor::set_stopping`] on).
    pub async fn stop(self) {
        self.state.monitor.set_stopping();
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
        let Some((stream, _peer)) = crate::server::accept(&listener, &stop, "http").await else {
            break;
        };
        conns.spawn(serve_connection(
            stream,
            state.clone(),
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    crate::server::drain(conns).await;
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
    // HEAD answers as GET does, without the body (hyper sends no body for a HEAD request, and keeps
    // the body's Content-Length)
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed: use GET or HEAD\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
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

async fn healthz(state: &State) -> Response<Full<Bytes>> {
    let verdict = state.monitor.assess(QUEUE_PROBE_WAIT).await;
    let (code, body) = healthz::body(&verdict, state.monitor.parts());
    json_reply(code, &body)
}

async fn metrics(state: &State) -> Response<Full<Bytes>> {
    let parts = state.monitor.parts();
    let mut scrape = crate::metrics::gather(
        &parts.queue,
        &parts.devices,
        &parts.sender,
        state.started_at,
        METRICS_QUEUE_TIMEOUT,
    )
    .await;
    scrape.lanes = parts
        .senders
        .iter()
        .filter(|(_, s)| !Arc::ptr_eq(s, &parts.sender))
        .map(|(k, s)| (k.to_string(), s.snapshot()))
        .collect();
    scrape.conditions = state.monitor.last().conditions;
    scrape.reconcile = parts
        .reconcile
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
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
        Ok(Ok(mut s)) => {
            // this process is the daemon: its health now, rather than as of its last snapshot
            s.conditions = state.monitor.assess(QUEUE_PROBE_WAIT).await.conditions;
            json_reply(StatusCode::OK, &s)
        }
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
mod tests;
