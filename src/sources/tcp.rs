//! The TCP line source: punches read as text lines from a TCP connection, in either direction.
//!
//! - `mode = "listen"`: we bind `address` and any number of clocks (or serial-to-Ethernet converters)
//!   dial us; each connection is served by its own task. If the address cannot be bound, the error is
//!   recorded and binding is retried with back-off.
//! - `mode = "connect"`: we dial the clock at `address` (10 s connect timeout), read until the
//!   connection ends, then dial again with exponential back-off with jitter (200 ms up to
//!   `reconnect_max_secs`), reset after a connection that delivered data.
//!
//! Guarantees:
//! - Nothing a clock sends is fatal: bad, over-long or binary lines are counted as `malformed` and
//!   logged (at most [`MALFORMED_LOGGED`] lines per connection, then a summary once a minute), and the
//!   next line is read as usual. Memory per connection is bounded by `max_line_length` plus a read
//!   buffer ([`LineReader`]).
//! - Failures are logged without flooding: the first one, then at most once a minute while they go on,
//!   and once at INFO when the device is back.
//! - Punches are handed to the ingest stage in the order they were read, one connection at a time;
//!   when the ingest channel is full, reading pauses (TCP flow control holds the clock back).
//! - Cancelling `shutdown` stops accepting and reading promptly and closes every connection; a punch
//!   already read gets a short grace period to be handed over. [`run`] returns only then.
//! - Sockets have SO_KEEPALIVE set (accepted ones inherit it from the listener on Linux), so a peer that
//!   vanished without closing is eventually noticed.

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{LineReader, LineRef};
use super::{DeviceStats, PunchSink, SourceError};
use crate::config::{DeviceConfig, LineFormat, TcpMode};
use crate::formats;

/// Longest wait for a connection to the clock.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect / re-bind delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Malformed lines logged one by one per connection, before they are only summarised.
pub const MALFORMED_LOGGED: u64 = 10;
/// Shortest interval between two repeated log lines of the same kind.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a punch already read may wait for the ingest channel once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// While lines keep arriving, the stop signal is also checked every this many lines.
const STOP_CHECK_EVERY: u64 = 1024;
const LISTEN_BACKLOG: u32 = 1024;

/// What every connection of one device needs.
struct Device {
    id: String,
    address: String,
    format: LineFormat,
    max_line: usize,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    /// The daemon's shutdown.
    shutdown: CancellationToken,
    /// Cancelled on shutdown, or when the ingest stage is gone (nothing can be delivered any more).
    stop: CancellationToken,
    backoff: ExponentialBuilder,
    max_backoff: Duration,
}

impl Device {
    fn next_delay(&self, backoff: &mut ExponentialBackoff) -> Duration {
        // jitter may add up to 100%: the cap is a promise to the operator
        backoff
            .next()
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Sleeps `d`, or less if stopped; false when stopped.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The ingest stage is gone: record it and stop the device (it idles until shutdown).
    fn sink_closed(&self) {
        let err = SourceError::SinkClosed {
            device: self.id.clone(),
        };
        if !self.shutdown.is_cancelled() {
            tracing::warn!("{err}: no more punches are read from this device");
        }
        self.stats.set_error(&err);
        self.stop.cancel();
    }
}

/// Runs a TCP line device until `shutdown` is cancelled; see the module documentation.
///
/// Never returns early: errors are recorded in `stats` and retried; a configuration this source cannot
/// use (no address or mode) is logged and recorded, and the task idles until shutdown.
pub async fn run(
    cfg: DeviceConfig,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    shutdown: CancellationToken,
) {
    let address = cfg
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let (Some(address), Some(mode)) = (address, cfg.mode) else {
        let msg = format!(
            "device {}: a tcp device needs mode = \"listen\" or \"connect\" and address = \"host:port\"",
            cfg.id
        );
        tracing::error!("{msg}");
        stats.set_error(msg);
        shutdown.cancelled().await;
        return;
    };
    let max_backoff = Duration::from_secs(cfg.reconnect_max_secs.max(1)).max(MIN_BACKOFF);
    let dev = Arc::new(Device {
        id: cfg.id.clone(),
        address: address.to_string(),
        format: cfg.format,
        max_line: cfg.max_line_length,
        sink,
        stats,
        stop: shutdown.child_token(),
        shutdown: shutdown.clone(),
        backoff: ExponentialBuilder::new()
            .with_min_delay(MIN_BACKOFF)
            .with_max_delay(max_backoff)
            .with_jitter()
            .without_max_times(),
        max_backoff,
    });
    match mode {
        TcpMode::Listen => listen(&dev).await,
        TcpMode::Connect => connect(&dev).await,
    }
    // Stopped because the ingest stage is gone: wait for the daemon to finish stopping.
    shutdown.cancelled().await;
}

// ---------------------------------------------------------------------------------------------------
// listen mode

async fn listen(dev: &Arc<Device>) {
    let mut backoff = dev.backoff.build();
    let mut bind_failures = Quiet::default();
    let listener = loop {
        let bound = tokio::select! {
            _ = dev.stop.cancelled() => return,
            r = bind(&dev.address) => r,
        };
        match bound {
            Ok(l) => break l,
            Err(source) => {
                let err = SourceError::Bind {
                    device: dev.id.clone(),
                    address: dev.address.clone(),
                    source,
                };
                if bind_failures.failed() {
                    tracing::error!(
                        "{err} (failed attempt {}; retrying with back-off up to {} s; repeats are logged at most once a minute)",
                        bind_failures.failures,
                        dev.max_backoff.as_secs()
                    );
                }
                dev.stats.set_error(&err);
                if !dev.pause(dev.next_delay(&mut backoff)).await {
                    return;
                }
            }
        }
    };
    let local = listener.local_addr().unwrap_or_else(|_| {
        // cannot fail for a bound socket; keep going with the configured address if it does
        dev.address
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    });
    dev.stats.clear_error();
    dev.stats.set_listening(local);
    match bind_failures.recovered() {
        Some(n) => tracing::info!(
            "device {}: listening on {local} (after {n} failed attempts)",
            dev.id
        ),
        None => tracing::info!("device {}: listening on {local}", dev.id),
    }

    let connections = TaskTracker::new();
    let mut accept_failures = Quiet::default();
    loop {
        let accepted = tokio::select! {
            _ = dev.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                accept_failures.recovered();
                let dev = Arc::clone(dev);
                connections.spawn(async move { serve_accepted(&dev, stream, peer).await });
            }
            Err(e) => {
                if accept_failures.failed() {
                    tracing::warn!(
                        "device {} ({local}): cannot accept a connection: {e} (failure {})",
                        dev.id,
                        accept_failures.failures
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

fn no_address(address: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    )
}

async fn serve_accepted(dev: &Device, stream: TcpStream, peer: SocketAddr) {
    tracing::info!("device {} ({peer}): clock connected", dev.id);
    dev.stats.clear_error();
    let served = serve(dev, stream, peer).await;
    match served.end {
        End::Eof => tracing::info!(
            "device {} ({peer}): connection closed by the clock after {} lines",
            dev.id,
            served.lines
        ),
        End::Read(source) => {
            let err = SourceError::Read {
                device: dev.id.clone(),
                address: peer.to_string(),
                source,
            };
            tracing::warn!("{err} (after {} lines)", served.lines);
            dev.stats.set_error(&err);
        }
        End::SinkClosed => dev.sink_closed(),
        End::Stopped => {
            tracing::debug!("device {} ({peer}): connection closed (stopping)", dev.id)
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// connect mode

async fn connect(dev: &Device) {
    let mut backoff = dev.backoff.build();
    let mut failures = Quiet::default();
    let mut ever_connected = false;
    loop {
        let dialed = tokio::select! {
            _ = dev.stop.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, dial(&dev.address)) => r,
        };
        let dialed = dialed.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        });
        match dialed {
            Ok((stream, peer)) => {
                match failures.recovered() {
                    Some(n) => tracing::info!(
                        "device {} ({}): connected again after {n} failures",
                        dev.id,
                        dev.address
                    ),
                    None if !ever_connected => {
                        tracing::info!("device {} ({}): connected", dev.id, dev.address)
                    }
                    None => tracing::debug!("device {} ({}): connected", dev.id, dev.address),
                }
                ever_connected = true;
                dev.stats.clear_error();
                let served = serve(dev, stream, peer).await;
                if served.lines > 0 {
                    backoff = dev.backoff.build();
                }
                match served.end {
                    End::Stopped => return,
                    End::SinkClosed => {
                        dev.sink_closed();
                        return;
                    }
                    End::Eof => {
                        let msg = format!(
                            "device {} ({}): the clock closed the connection after {} lines; reconnecting",
                            dev.id, dev.address, served.lines
                        );
                        if failures.failed() {
                            tracing::warn!("{msg}");
                        }
                        dev.stats.set_error(msg);
                    }
                    End::Read(source) => {
                        let err = SourceError::Read {
                            device: dev.id.clone(),
                            address: dev.address.clone(),
                            source,
                        };
                        if failures.failed() {
                            tracing::warn!("{err} (after {} lines); reconnecting", served.lines);
                        }
                        dev.stats.set_error(&err);
                    }
                }
            }
            Err(source) => {
                let err = SourceError::Connect {
                    device: dev.id.clone(),
                    address: dev.address.clone(),
                    source,
                };
                if failures.failed() {
                    tracing::warn!(
                        "{err} (failed attempt {}; retrying with back-off up to {} s; repeats are logged at most once a minute)",
                        failures.failures,
                        dev.max_backoff.as_secs()
                    );
                }
                dev.stats.set_error(&err);
            }
        }
        if !dev.pause(dev.next_delay(&mut backoff)).await {
            return;
        }
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
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| no_address(address)))
}

// ---------------------------------------------------------------------------------------------------
// one connection

/// Why a connection ended.
enum End {
    Eof,
    Read(io::Error),
    SinkClosed,
    Stopped,
}

struct Served {
    end: End,
    /// Lines read (good or bad).
    lines: u64,
}

/// Counts a connection as open for as long as it lives (whatever way it ends).
struct OpenConnection<'a>(&'a DeviceStats);

impl<'a> OpenConnection<'a> {
    fn new(stats: &'a DeviceStats) -> Self {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        DeviceStats::incr(&stats.connects);
        OpenConnection(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads lines from one connection until it ends, handing punches to the sink.
async fn serve(dev: &Device, stream: TcpStream, peer: SocketAddr) -> Served {
    let _open = OpenConnection::new(&dev.stats);
    let mut reader = LineReader::new(stream, dev.max_line);
    let mut malformed = MalformedLog::default();
    let mut line_no: u64 = 0;
    let end = loop {
        // Reading comes first in the select below, so a busy connection would never look at the stop
        // signal: check it now and then.
        if line_no % STOP_CHECK_EVERY == STOP_CHECK_EVERY - 1 && dev.stop.is_cancelled() {
            break End::Stopped;
        }
        let next = tokio::select! {
            biased;
            r = reader.next_line_ref() => r,
            _ = dev.stop.cancelled() => break End::Stopped,
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => break End::Eof,
            Err(e) => break End::Read(e),
        };
        line_no += 1;
        DeviceStats::incr(&dev.stats.lines_read);
        dev.stats.last_line_at.store(unix_now(), Ordering::Relaxed);
        let punch = match line {
            LineRef::Text(text) => match formats::parse_line(dev.format, &dev.id, text) {
                Ok(p) => p,
                Err(e) => {
                    DeviceStats::incr(&dev.stats.malformed);
                    malformed.report(dev, peer, line_no, &e, Some(text));
                    continue;
                }
            },
            LineRef::TooLong { len_seen } => {
                DeviceStats::incr(&dev.stats.malformed);
                let reason = format!(
                    "line is too long: {len_seen} bytes, more than max_line_length = {}",
                    dev.max_line
                );
                malformed.report(dev, peer, line_no, &reason, None);
                continue;
            }
        };
        DeviceStats::incr(&dev.stats.punches_read);
        let submit = dev.sink.submit(punch);
        tokio::pin!(submit);
        let submitted = tokio::select! {
            biased;
            r = &mut submit => r,
            _ = dev.stop.cancelled() => {
                // The punch is read but not handed over: give the ingest stage a moment to take it.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut submit).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) if !dev.shutdown.is_cancelled() => break End::SinkClosed,
                    _ => tracing::warn!(
                        "device {} ({peer}): stopping: the punch of line {line_no} could not be handed to the queue in time; it is still in the clock's log",
                        dev.id
                    ),
                }
                break End::Stopped;
            }
        };
        if submitted.is_err() {
            break End::SinkClosed;
        }
    };
    malformed.finish(dev, peer);
    Served {
        end,
        lines: line_no,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Logs malformed lines of one connection without flooding: the first [`MALFORMED_LOGGED`] one by one,
/// then a count (with the latest line) at most once a minute, and the rest of the count at the end.
#[derive(Default)]
struct MalformedLog {
    logged: u64,
    /// Not logged since the last summary.
    suppressed: u64,
    last_summary: Option<Instant>,
}

impl MalformedLog {
    fn report(
        &mut self,
        dev: &Device,
        peer: SocketAddr,
        line_no: u64,
        reason: &dyn Display,
        text: Option<&[u8]>,
    ) {
        let sample = text.map(formats::sample);
        let sample = sample
            .as_deref()
            .map(|s| format!(": \"{s}\""))
            .unwrap_or_default();
        if self.logged < MALFORMED_LOGGED {
            self.logged += 1;
            let more = if self.logged == MALFORMED_LOGGED {
                " (further malformed lines from this connection are summarised once a minute)"
            } else {
                ""
            };
            tracing::warn!(
                "device {} ({peer}): malformed line {line_no}: {reason}{sample}{more}",
                dev.id
            );
            self.last_summary = Some(Instant::now());
            return;
        }
        self.suppressed += 1;
        let now = Instant::now();
        if self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                "device {} ({peer}): {} more malformed lines in the last minute; latest: line {line_no}: {reason}{sample}",
                dev.id,
                self.suppressed
            );
            self.suppressed = 0;
            self.last_summary = Some(now);
        }
    }

    fn finish(&mut self, dev: &Device, peer: SocketAddr) {
        if self.suppressed > 0 {
            tracing::warn!(
                "device {} ({peer}): {} more malformed lines before the connection ended",
                dev.id,
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

/// Rate limit for a repeating failure: log the first, then at most once a minute; say when it is over.
#[derive(Default)]
struct Quiet {
    /// Failures since the last success.
    failures: u64,
    /// A failure of this run of failures was logged.
    logged: bool,
    last_logged: Option<Instant>,
}

impl Quiet {
    /// Counts a failure; true when it should be logged.
    fn failed(&mut self) -> bool {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            self.last_logged = Some(now);
            self.logged = true;
            true
        } else {
            false
        }
    }

    /// A success: the number of failures before it, when they were logged (so the recovery should be).
    fn recovered(&mut self) -> Option<u64> {
        let n = self.failures;
        let logged = self.logged;
        self.failures = 0;
        self.logged = false;
        logged.then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceKind;
    use crate::ingest::IngestItem;
    use crate::punch::Punch;
    use std::collections::BTreeSet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    fn device(mode: TcpMode, address: &str, max_line_length: usize) -> DeviceConfig {
        DeviceConfig {
            id: "door-1".into(),
            kind: DeviceKind::Tcp,
            mode: Some(mode),
            address: Some(address.into()),
            format: LineFormat::ZkAttlog,
            timezone: "Asia/Shanghai".into(),
            location_name: None,
            max_line_length,
            reconnect_max_secs: 2,
            enabled: true,
        }
    }

    struct Running {
        stats: Arc<DeviceStats>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        fn start(cfg: DeviceConfig, sink: PunchSink) -> Running {
            let stats = DeviceStats::new();
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run(cfg, sink, stats.clone(), shutdown.clone()));
            Running {
                stats,
                shutdown,
                task,
            }
        }

        async fn stop(self) -> Arc<DeviceStats> {
            self.shutdown.cancel();
            tokio::time::timeout(GUARD, self.task)
                .await
                .expect("run did not stop after shutdown")
                .expect("run panicked");
            self.stats
        }

        fn get(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
            c.load(Ordering::Relaxed)
        }
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
        let dev = Running::start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
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
        let dev = Running::start(device(TcpMode::Listen, "127.0.0.1:0", 64), sink);
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
        let dev = Running::start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);

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
        let dev = Running::start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
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
        let dev = Running::start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);
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
        let dev = Running::start(device(TcpMode::Listen, &addr.to_string(), 1024), sink);
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
        let dev = Running::start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
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

    /// `cargo test --release --lib tcp_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput measurement"]
    async fn tcp_throughput() {
        const N: u32 = 1_000_000;
        let (sink, mut rx) = PunchSink::channel(4096);
        let dev = Running::start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
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
