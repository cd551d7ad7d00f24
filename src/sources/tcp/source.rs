//! The TCP line source: punches read as text lines from a TCP connection, in either direction.
//!
//! - `mode = "listen"`: we bind `address` and any number of clocks (or serial-to-Ethernet converters)
//!   dial us; each connection is served by its own task. If the address cannot be bound, the error is
//!   recorded and binding is retried with back-off.
//! - `mode = "connect"`: we dial the clock at `address` (10 s connect timeout), read until the
//!   connection ends, then dial again with exponential back-off with jitter (200 ms up to
//!   `reconnect_max_secs`), reset after a connection that delivered data.
//!
//! Each connection runs the shared line session ([`LineDevice::serve`]), so TCP clocks get the same
//! parsing, counting, acknowledgements (`ack_template`) and polling (`poll_command`) as serial ones.
//!
//! Guarantees:
//! - Nothing a clock sends is fatal: bad, over-long or binary lines are counted as `malformed` and
//!   logged (at most [`MALFORMED_LOGGED`] lines per connection, then a summary once a minute), and the
//!   next line is read as usual. Memory per connection is bounded by `max_line_length` plus a read
//!   buffer ([`crate::sources::lines::LineReader`]).
//! - Failures are logged without flooding: the first one, then at most once a minute while they go on,
//!   and once at INFO when the device is back.
//! - Punches are handed to the ingest stage in the order they were read, one connection at a time;
//!   when the ingest channel is full, reading pauses (TCP flow control holds the clock back). With
//!   `ack_template`, each record is acknowledged on its connection only after it is committed.
//! - Cancelling `shutdown` stops accepting and reading promptly and closes every connection; a punch
//!   already read gets a short grace period to be handed over. [`run`] returns only then.
//! - Sockets have TCP keep-alive on with [`KEEPALIVE`] timings (first probe after 5 min of silence,
//!   then every 30 s, 4 unanswered probes end it), so a peer that vanished without closing is noticed
//!   within about 7 minutes and its descriptor freed.
//! - A listening device has at most `max_connections` connections open, and all listening devices
//!   together at most [`crate::limits::clock_connections`] (`[limits] max_clock_connections` within
//!   the process's limit of open files, less a reserve), so a flood of connections cannot take the
//!   descriptors that uploads, the queue and `/healthz` need. A connection beyond a cap is accepted and
//!   closed at once: counted in the device's figures ([`super::figures`]) and logged as a WARN at
//!   most once a minute per device, with an INFO once connections are accepted again.
//! - A connection of a listening device whose clock sends nothing for `idle_timeout` is closed
//!   ([`super::idle`]; logged at INFO and counted).

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

pub use crate::sources::reconnect::MIN_BACKOFF;
pub use crate::sources::session::MALFORMED_LOGGED;

use super::figures::TcpFigures;
use super::idle::{is_idle_timeout, Idle};
use super::spec::{TcpMode, TcpSpec};
use crate::limits::ConnectionBudget;
use crate::sources::kind::SourceContext;
use crate::sources::reconnect::{Attempt, Attempts, Failure, Link, Quiet, Reconnect};
use crate::sources::session::{End, LineDevice};
use crate::sources::SourceError;

/// Longest wait for a connection to the clock.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
const LISTEN_BACKLOG: u32 = 1024;
/// TCP keep-alive of every clock connection: the first probe after this much silence, then one
/// every [`KEEPALIVE_INTERVAL`], and the connection ends after [`KEEPALIVE_RETRIES`] unanswered.
pub const KEEPALIVE: Duration = Duration::from_secs(300);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_RETRIES: u32 = 4;

/// What every connection of one device needs: the shared line handling, and where to listen or dial.
struct Device {
    line: LineDevice,
    address: String,
    reconnect_max_secs: u64,
    /// `listen`: this device's connections (`max_connections` permits).
    own: Arc<Semaphore>,
    max_connections: usize,
    /// `listen`: every listening device's connections together.
    all: ConnectionBudget,
    idle_timeout: Option<Duration>,
}

impl Device {
    /// The reconnect loop of this device.
    fn reconnect(&self) -> Reconnect {
        Reconnect::new(
            format!("device {} ({})", self.id(), self.address),
            self.stats().clone(),
            self.stop().clone(),
            self.reconnect_max_secs,
        )
    }
}

impl Deref for Device {
    type Target = LineDevice;
    fn deref(&self) -> &LineDevice {
        &self.line
    }
}

/// Runs a TCP line device until `ctx.shutdown` is cancelled; see the module documentation.
///
/// Never returns early: errors are recorded in the device's stats and retried; a configuration this
/// source cannot use (a bad `ack_template` or `poll_command`) is logged and recorded, and the task
/// idles until shutdown.
pub async fn run(spec: TcpSpec, ctx: SourceContext) {
    let address = spec.address.trim();
    if address.is_empty() {
        let msg = format!(
            "device {}: a tcp device needs mode = \"listen\" or \"connect\" and address = \"host:port\"",
            ctx.id
        );
        tracing::error!("{msg}");
        ctx.stats.set_error(msg);
        ctx.shutdown.cancelled().await;
        return;
    }
    let line = match LineDevice::new(&ctx, &spec.lines) {
        Ok(line) => line,
        Err(e) => {
            tracing::error!("{e}");
            ctx.stats.set_error(e);
            ctx.shutdown.cancelled().await;
            return;
        }
    };
    let dev = Arc::new(Device {
        line,
        address: address.to_string(),
        reconnect_max_secs: ctx.reconnect_max_secs,
        own: Arc::new(Semaphore::new(spec.max_connections)),
        max_connections: spec.max_connections,
        all: crate::limits::clock_connections().clone(),
        idle_timeout: spec.idle_timeout(),
    });
    match spec.mode {
        TcpMode::Listen => listen(&dev).await,
        TcpMode::Connect => connect(&dev).await,
    }
    // Stopped because the ingest stage is gone: wait for the daemon to finish stopping.
    ctx.shutdown.cancelled().await;
}

// ---------------------------------------------------------------------------------------------------
// listen mode

async fn listen(dev: &Arc<Device>) {
    dev.reconnect().run(&mut Listener(dev)).await
}

/// Binds the address (the attempt), then accepts connections until stopped.
struct Listener<'a>(&'a Arc<Device>);

impl Attempts for Listener<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Attempt {
        let dev = self.0;
        let bound = tokio::select! {
            _ = dev.stop().cancelled() => return Attempt::Stop,
            r = bind(&dev.address) => r,
        };
        match bound {
            Ok(listener) => {
                let local = listener.local_addr().unwrap_or_else(|_| {
                    // cannot fail for a bound socket; keep going with the configured address
                    dev.address
                        .parse()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
                });
                link.up(&format!("listening on {local}"));
                dev.stats().update_figures(|f: &mut TcpFigures| {
                    f.max_connections = Some(dev.max_connections as u64);
                    f.connections_refused.get_or_insert(0);
                    f.connections_closed_idle.get_or_insert(0);
                });
                dev.stats().set_listening(local);
                accept(dev, listener, local).await;
                Attempt::Stop
            }
            Err(source) => Attempt::Retry(
                Failure::new(SourceError::Bind {
                    device: dev.id().to_string(),
                    address: dev.address.clone(),
                    source,
                })
                .serious(),
            ),
        }
    }
}

/// Why a connection was refused.
enum Full {
    /// The device has `max_connections` open.
    Device,
    /// All listening devices together have the process's cap open.
    All,
}

/// The places a connection holds while it is open: one of its device's, one of the process's.
struct Admitted {
    _own: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Device {
    /// Room for one more connection, or why not.
    fn admit(&self) -> Result<Admitted, Full> {
        let own = self
            .own
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Device)?;
        let all = self.all.try_take().ok_or(Full::All)?;
        Ok(Admitted {
            _own: own,
            _all: all,
        })
    }

    /// Closes a connection beyond a cap: counted at once, logged at most once a minute.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Full, refusals: &mut Quiet) {
        self.stats().update_figures(|f: &mut TcpFigures| {
            *f.connections_refused.get_or_insert(0) += 1;
            f.last_refused_at = Some(chrono::Utc::now().timestamp());
        });
        drop(stream);
        if refusals.failed() {
            let limit = match why {
                Full::Device => format!(
                    "the device has max_connections = {} open",
                    self.max_connections
                ),
                Full::All => format!(
                    "all listening devices together have [limits] max_clock_connections = {} open (within the limit of open files)",
                    self.all.cap()
                ),
            };
            tracing::warn!(
                "device {} ({}): refused a connection from {peer}: {limit}; {} refused since the last accepted one (logged at most once a minute): if these are real clocks, raise the limit; otherwise find the host that opens them",
                self.id(),
                self.address,
                refusals.failures()
            );
        }
    }
}

/// Accepts connections until stopped, each served by its own task; returns once every one has ended.
async fn accept(dev: &Arc<Device>, listener: TcpListener, local: SocketAddr) {
    let connections = TaskTracker::new();
    let mut accept_failures = Quiet::default();
    let mut refusals = Quiet::default();
    loop {
        let accepted = tokio::select! {
            _ = dev.stop().cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                accept_failures.recovered();
                let admitted = match dev.admit() {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        dev.refuse(stream, peer, why, &mut refusals);
                        continue;
                    }
                };
                if let Some(n) = refusals.recovered() {
                    tracing::info!(
                        "device {} ({local}): accepting connections again ({n} refused at a limit before)",
                        dev.id()
                    );
                }
                let dev = Arc::clone(dev);
                connections.spawn(async move {
                    serve_accepted(&dev, stream, peer).await;
                    drop(admitted);
                });
            }
            Err(e) => {
                if accept_failures.failed() {
                    tracing::warn!(
                        "device {} ({local}): cannot accept a connection: {e} (failure {})",
                        dev.id(),
                        accept_failures.failures()
                    );
                }
                if !dev.pause(ACCEPT_ERROR_PAUSE).await {
                    break;
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Binds a listening socket with SO_KEEPALIVE (inherited by accepted sockets) on the first address
/// `address` resolves to that can be bound.
async fn bind(address: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        match bind_one(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| no_address(address)))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // best effort: a socket without keep-alive still works
    let _ = socket.set_keepalive(true);
    Ok(socket)
}

/// Keep-alive with [`KEEPALIVE`] timings on a connection (best effort: the kernel's defaults, a first
/// probe after 2 h, remain otherwise).
fn keepalive(stream: &TcpStream) {
    let timings = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&timings);
}

fn no_address(address: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    )
}

async fn serve_accepted(dev: &Device, stream: TcpStream, peer: SocketAddr) {
    tracing::info!("device {} ({peer}): clock connected", dev.id());
    dev.stats().clear_error();
    keepalive(&stream);
    let served = match dev.idle_timeout {
        Some(timeout) => {
            dev.serve(Idle::new(stream, timeout), &peer.to_string())
                .await
        }
        None => dev.serve(stream, &peer.to_string()).await,
    };
    match served.end {
        End::Read(e) if is_idle_timeout(&e) => {
            tracing::info!(
                "device {} ({peer}): connection closed: {e} after {} lines; the clock connects again when it has something to send",
                dev.id(),
                served.lines
            );
            dev.stats().update_figures(|f: &mut TcpFigures| {
                *f.connections_closed_idle.get_or_insert(0) += 1;
            });
        }
        End::Eof => tracing::info!(
            "device {} ({peer}): connection closed by the clock after {} lines",
            dev.id(),
            served.lines
        ),
        End::Read(source) | End::Write(source) => {
            let err = SourceError::Read {
                device: dev.id().to_string(),
                address: peer.to_string(),
                source,
            };
            tracing::warn!("{err} (after {} lines)", served.lines);
            dev.stats().set_error(&err);
        }
        End::SinkClosed => dev.sink_closed(),
        End::Stopped => {
            tracing::debug!("device {} ({peer}): connection closed (stopping)", dev.id())
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// connect mode

async fn connect(dev: &Device) {
    dev.reconnect().run(&mut Dialer(dev)).await
}

/// Dials the clock and serves the connection (the attempt).
struct Dialer<'a>(&'a Device);

impl Attempts for Dialer<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Attempt {
        let dev = self.0;
        let dialed = tokio::select! {
            _ = dev.stop().cancelled() => return Attempt::Stop,
            r = tokio::time::timeout(CONNECT_TIMEOUT, dial(&dev.address)) => r,
        };
        let dialed = dialed.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        });
        let (stream, peer) = match dialed {
            Ok(dialed) => dialed,
            Err(source) => {
                return Attempt::Retry(Failure::new(SourceError::Connect {
                    device: dev.id().to_string(),
                    address: dev.address.clone(),
                    source,
                }))
            }
        };
        link.up("connected");
        let served = dev.serve(stream, &peer.to_string()).await;
        if served.lines > 0 {
            link.progressed();
        }
        Attempt::Retry(match served.end {
            End::Stopped => return Attempt::Stop,
            End::SinkClosed => {
                dev.sink_closed();
                return Attempt::Stop;
            }
            End::Eof => Failure::ended(format!(
                "device {} ({}): the clock closed the connection after {} lines; reconnecting",
                dev.id(),
                dev.address,
                served.lines
            )),
            End::Read(source) | End::Write(source) => Failure::after_lines(
                SourceError::Read {
                    device: dev.id().to_string(),
                    address: dev.address.clone(),
                    source,
                },
                served.lines,
            ),
        })
    }
}

/// Dials the first address `address` resolves to that answers, with SO_KEEPALIVE set.
async fn dial(address: &str) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let attempt = match new_socket(addr) {
            Ok(socket) => socket.connect(addr).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(stream) => {
                keepalive(&stream);
                return Ok((stream, addr));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| no_address(address)))
}

#[cfg(test)]
mod tests;
