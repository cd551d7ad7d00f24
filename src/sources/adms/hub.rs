//! The listener's routing: which terminal a request is for (by `SN=`), what it asks
//! ([`super::protocol::route`]), and the terminals that are not configured.
//!
//! Guarantees:
//! - The allow-list is the configured devices: a request with an unknown (or no) SN is refused with
//!   403 and never answered `OK`, so the terminal keeps its records; it is logged once per SN per
//!   hour with its address, and every `adms` device's figures list it for `status` (at most
//!   [`UNKNOWN_KEPT`] SNs, the oldest forgotten first; forgotten after a day without a request).
//! - A body is read only for a known terminal, up to `adms.max_body_size` (413 beyond it, the
//!   connection closed), with no more than `adms.idle_timeout` between two of its chunks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;

use super::figures::{AdmsFigures, UnknownTerminal};
use super::protocol::{self, Route};
use super::spec::{AdmsConfig, AdmsSpec};
use super::terminal::{Answer, Terminal};
use crate::sources::kind::SourceContext;

/// Unknown SNs remembered for `status`.
pub const UNKNOWN_KEPT: usize = 32;
/// An unknown SN is logged again after this.
const UNKNOWN_LOG_EVERY: Duration = Duration::from_secs(3600);
/// An unknown SN is forgotten after this without a request.
const UNKNOWN_FORGET_SECS: i64 = 86_400;

/// The terminals behind one listener.
pub struct Hub {
    pub cfg: AdmsConfig,
    /// The configured serial numbers (a request for one not attached yet, or no longer, gets 503).
    expected: std::collections::HashSet<String>,
    terminals: RwLock<HashMap<String, Arc<Terminal>>>,
    unknown: Mutex<Unknown>,
}

#[derive(Default)]
struct Unknown {
    seen: HashMap<String, (UnknownTerminal, Instant)>,
    version: u64,
}

impl Hub {
    /// The hub of the terminals with serial numbers `expected`.
    pub fn new(cfg: AdmsConfig, expected: impl IntoIterator<Item = String>) -> Arc<Hub> {
        Arc::new(Hub {
            cfg,
            expected: expected.into_iter().collect(),
            terminals: RwLock::default(),
            unknown: Mutex::default(),
        })
    }

    fn terminal(&self, sn: &str) -> Option<Arc<Terminal>> {
        self.terminals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(sn)
            .cloned()
    }

    /// Makes the terminal of `spec` known to the hub (its stamps read from the queue): from now on
    /// its requests are answered. The daemon registers every terminal before the listener accepts,
    /// so that a terminal's first request after a gateway restart never meets "starting" (a 503,
    /// after which firmware waits its `ErrorDelay`, 30 s by default).
    pub async fn register(&self, spec: AdmsSpec, ctx: &SourceContext) -> Arc<Terminal> {
        let term = Arc::new(Terminal::new(spec, ctx).await);
        self.terminals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(term.sn.clone(), term.clone());
        term
    }

    /// The task of a registered terminal until `ctx.shutdown`: every second its online state is
    /// updated (its stamps saved every 30 s and at the end); then it is removed from the hub.
    pub async fn serve(self: Arc<Self>, term: Arc<Terminal>, ctx: SourceContext) {
        let mut shown_version = u64::MAX;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            term.tick(false).await;
            if let Some((v, list)) = self.unknown_since(shown_version) {
                shown_version = v;
                term.stats
                    .update_figures(|f: &mut AdmsFigures| f.unknown_terminals = list);
            }
        }
        term.tick(true).await;
        self.terminals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&term.sn);
    }

    /// The unknown terminals, when they changed since `version`.
    fn unknown_since(&self, version: u64) -> Option<(u64, Vec<UnknownTerminal>)> {
        let mut u = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        let now = chrono::Utc::now().timestamp();
        let before = u.seen.len();
        u.seen
            .retain(|_, (t, _)| now - t.last_at < UNKNOWN_FORGET_SECS);
        if u.seen.len() != before {
            u.version += 1;
        }
        if u.version == version {
            return None;
        }
        let mut list: Vec<UnknownTerminal> = u.seen.values().map(|(t, _)| t.clone()).collect();
        list.sort_by(|a, b| a.serial_number.cmp(&b.serial_number));
        Some((u.version, list))
    }

    /// Refuses an unknown SN, logging it once per hour.
    fn refuse_unknown(&self, sn: &str, peer: &str) -> Answer {
        let sn: String = sn.chars().take(64).collect();
        let now = chrono::Utc::now().timestamp();
        let mut u = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        let log = match u.seen.get_mut(&sn) {
            Some((t, logged)) => {
                t.requests += 1;
                t.last_at = now;
                t.address = peer.to_string();
                if logged.elapsed() >= UNKNOWN_LOG_EVERY {
                    *logged = Instant::now();
                    true
                } else {
                    false
                }
            }
            None => {
                if u.seen.len() >= UNKNOWN_KEPT {
                    if let Some(oldest) = u
                        .seen
                        .iter()
                        .min_by_key(|(_, (t, _))| t.last_at)
                        .map(|(k, _)| k.clone())
                    {
                        u.seen.remove(&oldest);
                    }
                }
                u.seen.insert(
                    sn.clone(),
                    (
                        UnknownTerminal {
                            serial_number: sn.clone(),
                            address: peer.to_string(),
                            first_at: now,
                            last_at: now,
                            requests: 1,
                        },
                        Instant::now(),
                    ),
                );
                true
            }
        };
        u.version += 1;
        drop(u);
        if log {
            let shown = crate::logging::visible(&sn);
            tracing::warn!(
                "adms: an unknown terminal SN={shown} from {peer} tried to push: refused with 403 (it keeps its records); if it is yours, add a [[devices]] entry with kind = \"adms\" and serial_number = \"{shown}\" (logged once an hour per SN)"
            );
        }
        (
            403,
            "FAIL: unknown terminal: add its SN to the gateway's devices\n".into(),
        )
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: &str) -> Answer {
        let q = protocol::parse_query(req.uri().query().unwrap_or(""));
        let route = protocol::route(req.method().as_str(), req.uri().path(), &q);
        if route == Route::NotFound {
            return (404, "not found: terminals push to /iclock/\n".into());
        }
        let sn = q.sn.as_deref().unwrap_or("").trim();
        if sn.is_empty() {
            return (400, "FAIL: no SN in the request\n".into());
        }
        let Some(term) = self.terminal(sn) else {
            if self.expected.contains(sn) {
                // configured, its task starting or stopping: the terminal sends again
                return (503, "FAIL: the gateway is starting or stopping\n".into());
            }
            return self.refuse_unknown(sn, peer);
        };
        term.touch(peer);
        match route {
            Route::Handshake => term.handshake(),
            Route::GetRequest => term.getrequest(&q).await,
            Route::Ping => (200, "OK\n".into()),
            _ => {
                let body = match self.read_body(&term, req, peer).await {
                    Ok(b) => b,
                    Err(a) => return a,
                };
                match route {
                    Route::AttLog => term.attlog(&q, &body, peer).await,
                    Route::OperLog => term.operlog(&q, &body).await,
                    Route::Options => {
                        term.info(protocol::parse_options(&body));
                        (200, "OK\n".into())
                    }
                    Route::DeviceCmd => term.devicecmd(&body).await,
                    _ => (200, "OK\n".into()),
                }
            }
        }
    }

    /// The request's body, at most `max_body_size` bytes, with at most `idle_timeout` between
    /// chunks.
    async fn read_body(
        &self,
        term: &Terminal,
        req: Request<Incoming>,
        peer: &str,
    ) -> Result<Bytes, Answer> {
        let max = self.cfg.max_body_size;
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(term.too_large(peer, declared, max));
        }
        let idle = Duration::from_secs(self.cfg.idle_timeout_secs);
        let mut body = req.into_body();
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max) as usize);
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    tracing::warn!(
                        "device {} (SN {}, {peer}): its request body stopped arriving for {} s (adms.idle_timeout): dropped, the terminal sends it again",
                        term.id,
                        term.sn,
                        idle.as_secs()
                    );
                    return Err(term.refuse(408, "body too slow"));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::debug!("device {} ({peer}): body broken: {e}", term.id);
                    return Err(term.refuse(400, "body broken"));
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > max {
                    return Err(term.too_large(peer, declared, max));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    }
}
