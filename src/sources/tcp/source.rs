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
mod tests {
    use super::*;
    use crate::ingest::{IngestItem, IngestOutcome, PunchSink};
    use crate::punch::Punch;
    use crate::sources::formats::LineFormat;
    use crate::sources::line_spec::LineSpec;
    use crate::sources::test_support::{context, Running};
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    fn device(mode: TcpMode, address: &str, max_line_length: usize) -> TcpSpec {
        TcpSpec {
            lines: LineSpec {
                format: LineFormat::ZkAttlog,
                max_line_length,
                ..LineSpec::default()
            },
            ..TcpSpec::new(mode, address)
        }
    }

    /// Starts device `door-1` (back-off up to 2 s).
    fn start(spec: TcpSpec, sink: PunchSink) -> Running {
        start_every(spec, 5, sink)
    }

    /// [`start`], polled every `poll_secs`.
    fn start_every(spec: TcpSpec, poll_secs: u64, sink: PunchSink) -> Running {
        let ctx = SourceContext {
            reconnect_max_secs: 2,
            poll_interval: Duration::from_secs(poll_secs),
            ..context("door-1", sink)
        };
        Running::start(&spec, ctx)
    }

    fn line(pin: u32, minute: u32) -> String {
        format!("{pin:>9}\t2026-03-02 08:{minute:02}:00\t0\t1\t0\t0\t0\r\n")
    }

    async fn recv(rx: &mut mpsc::Receiver<IngestItem>) -> Punch {
        tokio::time::timeout(GUARD, rx.recv())
            .await
            .expect("no punch arrived")
            .expect("sink closed")
            .punch
    }

    fn key(p: &Punch) -> (String, String) {
        (p.device_user_id.clone(), p.local_time.to_string())
    }

    #[tokio::test]
    async fn listen_mode_two_concurrent_clients() {
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
        let addr = dev.stats.wait_listening().await;
        assert!(addr.port() != 0);

        let mut clients = Vec::new();
        for pin in [1u32, 2] {
            clients.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for m in 0..50 {
                    // small writes interleave the two clients
                    s.write_all(line(pin, m).as_bytes()).await.unwrap();
                }
                s.shutdown().await.unwrap();
            }));
        }
        let mut got = BTreeSet::new();
        for _ in 0..100 {
            let p = recv(&mut rx).await;
            assert_eq!(p.device_id, "door-1");
            assert_eq!(
                (p.state, p.verify, p.workcode.clone()),
                (Some(0), Some(1), None)
            );
            got.insert(key(&p));
        }
        let mut want = BTreeSet::new();
        for pin in [1u32, 2] {
            for m in 0..50 {
                want.insert((pin.to_string(), format!("2026-03-02 08:{m:02}:00")));
            }
        }
        assert_eq!(got, want);
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(dev.get(&dev.stats.punches_read), 100);
        assert_eq!(dev.get(&dev.stats.lines_read), 100);
        assert_eq!(dev.get(&dev.stats.malformed), 0);
        assert_eq!(dev.get(&dev.stats.connects), 2);
        assert!(dev.stats.last_line_at.load(Ordering::Relaxed) > 0);
        let stats = dev.stop().await;
        assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn malformed_and_over_long_lines_are_counted_and_skipped() {
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 64), sink);
        let addr = dev.stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut data = line(7, 1);
        data.push_str("this is not a punch\n");
        data.push_str(&"x".repeat(10_000));
        data.push('\n');
        data.push_str("\u{0}\u{1}garbage\t2026-99-99 99:99:99\n");
        data.push_str(&line(7, 2));
        s.write_all(data.as_bytes()).await.unwrap();

        let first = recv(&mut rx).await;
        assert_eq!(first.local_time.to_string(), "2026-03-02 08:01:00");
        let second = recv(&mut rx).await;
        assert_eq!(second.local_time.to_string(), "2026-03-02 08:02:00");
        assert_eq!(dev.get(&dev.stats.malformed), 3);
        s.write_all(b"\xff\xfe\n").await.unwrap();
        s.write_all(line(7, 3).as_bytes()).await.unwrap();
        let third = recv(&mut rx).await;
        assert_eq!(third.local_time.to_string(), "2026-03-02 08:03:00");
        assert_eq!(dev.get(&dev.stats.malformed), 4);
        assert_eq!(dev.get(&dev.stats.lines_read), 7);
        assert_eq!(dev.get(&dev.stats.punches_read), 3);
        // the connection is still open and usable
        s.write_all(line(7, 4).as_bytes()).await.unwrap();
        assert_eq!(
            recv(&mut rx).await.local_time.to_string(),
            "2026-03-02 08:04:00"
        );
        dev.stop().await;
    }

    #[tokio::test]
    async fn connect_mode_reconnects_after_the_clock_closes() {
        let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = clock.local_addr().unwrap();
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);

        let (mut c1, _) = clock.accept().await.unwrap();
        for m in 0..3 {
            c1.write_all(line(5, m).as_bytes()).await.unwrap();
        }
        drop(c1);
        let mut got = BTreeSet::new();
        for _ in 0..3 {
            got.insert(key(&recv(&mut rx).await));
        }

        let (mut c2, _) = clock.accept().await.unwrap();
        for m in 10..13 {
            c2.write_all(line(5, m).as_bytes()).await.unwrap();
        }
        for _ in 0..3 {
            got.insert(key(&recv(&mut rx).await));
        }
        let minutes: Vec<String> = got.iter().map(|(_, t)| t[14..16].to_string()).collect();
        assert_eq!(minutes, ["00", "01", "02", "10", "11", "12"]);
        assert_eq!(dev.get(&dev.stats.connects), 2);
        assert_eq!(dev.stats.connections.load(Ordering::Relaxed), 1);

        // shutdown closes the live connection
        let stats = dev.stop().await;
        assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, c2.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
    }

    #[tokio::test]
    async fn shutdown_stops_listener_and_open_connections() {
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
        let addr = dev.stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(line(9, 0).as_bytes()).await.unwrap();
        recv(&mut rx).await; // the connection is being served

        let stats = dev.stop().await;
        assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
        // the port is released: nobody accepts any more
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_stops_a_device_that_keeps_failing_to_connect() {
        // a port nobody listens on
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let (sink, _rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);
        while dev.stats.last_error().is_none() {
            tokio::task::yield_now().await;
        }
        let e = dev.stats.last_error().unwrap();
        assert!(e.contains("door-1") && e.contains("cannot connect"), "{e}");
        assert_eq!(dev.get(&dev.stats.connects), 0);
        dev.stop().await;
    }

    #[tokio::test]
    async fn bind_failure_is_recorded_and_retried() {
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = blocker.local_addr().unwrap();
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Listen, &addr.to_string(), 1024), sink);
        while dev.stats.last_error().is_none() {
            tokio::task::yield_now().await;
        }
        let e = dev.stats.last_error().unwrap();
        assert!(e.contains("cannot listen on"), "{e}");
        drop(blocker);
        let bound = tokio::time::timeout(GUARD, dev.stats.wait_listening())
            .await
            .expect("bind was not retried");
        assert_eq!(bound, addr);
        assert_eq!(dev.stats.last_error(), None);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(line(3, 3).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "3");
        dev.stop().await;
    }

    #[tokio::test]
    async fn closed_sink_stops_reading_but_not_the_task() {
        let (sink, rx) = PunchSink::channel(16);
        drop(rx);
        let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
        let addr = dev.stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(line(1, 1).as_bytes()).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
        let e = dev.stats.last_error().unwrap_or_default();
        assert!(e.contains("queue is closed"), "{e}");
        assert!(!dev.task.is_finished());
        dev.stop().await;
    }

    #[tokio::test]
    async fn listen_mode_acknowledges_committed_punches() {
        let (sink, mut rx) = PunchSink::channel(16);
        let mut cfg = device(TcpMode::Listen, "127.0.0.1:0", 1024);
        cfg.lines.ack_template = Some(r"ACK {user} {time} {state}\r\n".into());
        let dev = start(cfg, sink);
        let addr = dev.stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(line(7, 1).as_bytes()).await.unwrap();
        s.write_all(line(8, 2).as_bytes()).await.unwrap();

        let first = tokio::time::timeout(GUARD, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.punch.device_user_id, "7");
        // not answered yet: nothing may have been written back
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::ZERO, s.read(&mut buf))
                .await
                .is_err(),
            "acknowledged before the commit"
        );
        first.ack.unwrap().send(IngestOutcome::Queued).unwrap();
        let want = b"ACK 7 2026-03-02 08:01:00 0\r\n";
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(GUARD, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, want);

        // a failed commit is not acknowledged: the next bytes are the third line's ack
        let second = tokio::time::timeout(GUARD, rx.recv())
            .await
            .unwrap()
            .unwrap();
        second
            .ack
            .unwrap()
            .send(IngestOutcome::Failed("disk full".into()))
            .unwrap();
        s.write_all(line(9, 3).as_bytes()).await.unwrap();
        let third = tokio::time::timeout(GUARD, rx.recv())
            .await
            .unwrap()
            .unwrap();
        third.ack.unwrap().send(IngestOutcome::Duplicate).unwrap();
        let want = b"ACK 9 2026-03-02 08:03:00 0\r\n";
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(GUARD, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(dev.get(&dev.stats.acks_written), 2);
        assert_eq!(dev.get(&dev.stats.punches_read), 3);
        dev.stop().await;
    }

    #[tokio::test]
    async fn connect_mode_writes_the_poll_command_on_connect() {
        let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = clock.local_addr().unwrap();
        let (sink, mut rx) = PunchSink::channel(16);
        let mut cfg = device(TcpMode::Connect, &addr.to_string(), 1024);
        cfg.lines.poll_command = Some(r"POLL\r\n".into());
        let dev = start_every(cfg, 60, sink);
        let (mut c, _) = clock.accept().await.unwrap();
        let mut got = [0u8; 6];
        tokio::time::timeout(GUARD, c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"POLL\r\n");
        c.write_all(line(5, 5).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "5");
        dev.stop().await;
    }

    #[tokio::test]
    async fn a_bad_ack_template_is_reported_and_the_device_idles() {
        let (sink, _rx) = PunchSink::channel(16);
        let mut cfg = device(TcpMode::Listen, "127.0.0.1:0", 1024);
        cfg.lines.ack_template = Some("{nope}".into());
        let dev = start(cfg, sink);
        tokio::time::timeout(GUARD, dev.stats.wait_for(|s| s.last_error().is_some()))
            .await
            .unwrap();
        let e = dev.stats.last_error().unwrap();
        assert!(
            e.starts_with("device door-1: ack_template: placeholder"),
            "{e}"
        );
        assert!(!dev.task.is_finished());
        dev.stop().await;
    }

    fn figures(dev: &Running) -> TcpFigures {
        dev.stats.snapshot().figures()
    }

    #[tokio::test]
    async fn a_listening_device_refuses_connections_beyond_max_connections_and_counts_them() {
        let (sink, mut rx) = PunchSink::channel(16);
        let spec = TcpSpec {
            max_connections: 2,
            ..device(TcpMode::Listen, "127.0.0.1:0", 1024)
        };
        let dev = start(spec, sink);
        let addr = dev.stats.wait_listening().await;
        assert_eq!(
            figures(&dev),
            TcpFigures {
                max_connections: Some(2),
                connections_refused: Some(0),
                connections_closed_idle: Some(0),
                last_refused_at: None,
            }
        );
        // two clocks are served (each gets a punch through)
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(line(1, 1).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "1");
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(line(2, 2).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "2");

        // a third is closed at once, and counted before it is closed
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, third.read(&mut buf))
            .await
            .expect("the connection beyond max_connections stayed open")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let f = figures(&dev);
        assert_eq!(f.connections_refused, Some(1));
        assert!(f.last_refused_at.is_some());
        assert_eq!(dev.stats.connections.load(Ordering::Relaxed), 2);

        // a place freed is a place taken again
        drop(first);
        dev.until("the first connection ended", |s| {
            s.connections.load(Ordering::Relaxed) == 1
        })
        .await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth.write_all(line(4, 4).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "4");
        second.write_all(line(2, 3).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "2");
        assert_eq!(figures(&dev).connections_refused, Some(1));
        dev.stop().await;
    }

    #[tokio::test]
    async fn a_connection_that_stays_silent_for_idle_timeout_is_closed_and_counted() {
        let (sink, mut rx) = PunchSink::channel(16);
        let spec = TcpSpec {
            idle_timeout_secs: 1,
            ..device(TcpMode::Listen, "127.0.0.1:0", 1024)
        };
        let dev = start(spec, sink);
        let addr = dev.stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(line(5, 5).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "5");
        // then silence: the daemon closes it (the test waits for the close, whenever it comes)
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("the silent connection was never closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        dev.until("the close is counted", |s| {
            s.snapshot().figures::<TcpFigures>().connections_closed_idle == Some(1)
        })
        .await;
        // not an error of the device
        assert_eq!(dev.stats.last_error(), None);
        dev.stop().await;
    }

    #[tokio::test]
    async fn connect_mode_has_no_listening_figures() {
        let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = clock.local_addr().unwrap();
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);
        let (mut c, _) = clock.accept().await.unwrap();
        c.write_all(line(6, 6).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.device_user_id, "6");
        assert_eq!(figures(&dev), TcpFigures::default());
        dev.stop().await;
    }

    /// `cargo test --release --lib tcp_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput measurement"]
    async fn tcp_throughput() {
        const N: u32 = 1_000_000;
        let (sink, mut rx) = PunchSink::channel(4096);
        let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
        let addr = dev.stats.wait_listening().await;
        let mut data = Vec::with_capacity(N as usize * 48);
        for i in 0..N {
            data.extend_from_slice(
                format!(
                    "{:>9}\t2026-03-02 {:02}:{:02}:{:02}\t0\t1\t0\t0\t0\r\n",
                    i % 5000,
                    (i / 3600) % 24,
                    (i / 60) % 60,
                    i % 60
                )
                .as_bytes(),
            );
        }
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&data).await.unwrap();
        });
        let mut n = 0u32;
        let mut items = Vec::with_capacity(4096);
        while n < N {
            items.clear();
            n += rx.recv_many(&mut items, 4096).await as u32;
        }
        let secs = start.elapsed().as_secs_f64();
        writer.await.unwrap();
        println!(
            "{N} punches in {secs:.3} s: {:.0} punches/s",
            f64::from(N) / secs
        );
        assert_eq!(dev.get(&dev.stats.malformed), 0);
        dev.stop().await;
    }
}
