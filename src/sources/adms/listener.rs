//! The `[adms]` listener: one HTTP/1.1 server (hyper) that every pushing terminal dials, bound when
//! the daemon starts (a taken port stops the start) and served only while an `adms` device is
//! configured.
//!
//! Bounded by construction: at most `adms.max_connections_per_address` connections from one IP
//! address (more are closed at once, logged once a minute) and [`MAX_CONNECTIONS`] in all (more wait
//! in the kernel's backlog); a request head must arrive within `adms.header_timeout` (which also
//! closes a connection idle between requests) and be at most [`MAX_REQUEST_HEAD`] bytes; bodies are
//! capped and timed by [`super::hub::Hub`]. A slow or hostile client holds one connection slot of its
//! own address, never the others'.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use crate::server::STOP_GRACE;

/// Connections served at once, from all terminals.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest request head (request line and headers).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The listener could not bind: a start-up error.
#[derive(Debug, thiserror::Error)]
#[error("adms.listen {address}: cannot listen: {source}: check that the port is free and that the address belongs to this host")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `address` (done early at start-up, so that a taken port stops the start).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// The running listener.
pub struct AdmsServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AdmsServer {
    /// Serves `listener` for `hub` until [`AdmsServer::stop`].
    pub fn start(listener: TcpListener, hub: Arc<Hub>) -> AdmsServer {
        let address = listener.local_addr().unwrap_or_else(|_| hub.cfg.listen);
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, hub, stop.clone()));
        tracing::info!(%address, "adms: listening for terminals that push (iclock)");
        AdmsServer {
            address,
            stop,
            task,
        }
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting and lets requests in progress finish briefly.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "adms: the listener task failed");
        }
    }
}

/// Connections per address, and when a refusal was last logged.
#[derive(Default)]
struct PerAddress {
    open: HashMap<IpAddr, usize>,
    last_logged: Option<Instant>,
}

struct Slot {
    ip: IpAddr,
    book: Arc<Mutex<PerAddress>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = b.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                b.open.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, hub: Arc<Hub>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let book = Arc::new(Mutex::new(PerAddress::default()));
    let cap = hub.cfg.max_connections_per_address;
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let Some((stream, peer)) = crate::server::accept(&listener, &stop, "adms").await else {
            break;
        };
        let slot = {
            let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
            let n = b.open.entry(peer.ip()).or_insert(0);
            if *n >= cap {
                let log = b
                    .last_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
                if log {
                    b.last_logged = Some(Instant::now());
                    tracing::warn!(
                        "adms: {} already has {cap} connections open (adms.max_connections_per_address): a new one was closed (logged once a minute)",
                        peer.ip()
                    );
                }
                continue;
            }
            *n += 1;
            Slot {
                ip: peer.ip(),
                book: book.clone(),
            }
        };
        conns.spawn(serve_connection(
            stream,
            peer,
            hub.clone(),
            stop.clone(),
            (slot, permit),
        ));
    }
    drop(listener);
    crate::server::drain(conns).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    stop: CancellationToken,
    _slot: (Slot, tokio::sync::OwnedSemaphorePermit),
) {
    let _ = stream.set_nodelay(true);
    let header_timeout = Duration::from_secs(hub.cfg.header_timeout_secs);
    // the address alone: a terminal's port changes with every connection
    let peer_text = peer.ip().to_string();
    let svc = service_fn(move |req| {
        let (hub, peer) = (hub.clone(), peer_text.clone());
        async move {
            let (code, text) = hub.handle(req, &peer).await;
            Ok::<_, Infallible>(reply(code, text))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "adms: connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, conn.as_mut()).await;
        }
    }
}

fn reply(code: u16, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if code == 413 {
        // the rest of the body is not read: the connection cannot carry another request
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}
