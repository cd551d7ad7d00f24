//! Clock sources: each configured device runs as its own task that reads punches and hands them to
//! the ingest stage through a [`PunchSink`].
//!
//! Guarantees shared by every source:
//! - A device never blocks another: each runs in its own task, with its own reconnect back-off.
//! - Bad input (malformed or over-long lines, invalid bytes, a dropped connection) is counted in the
//!   device's [`DeviceStats`] and logged with the device id; it is never fatal.
//! - A punch counts as taken only once the ingest stage has committed it to the queue
//!   ([`PunchSink::submit_committed`]); sources that acknowledge to the clock do so only after that.

pub mod formats;
pub mod lines;
pub mod serial;
pub mod session;
pub mod tcp;
pub mod zk;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{DeviceConfig, DeviceKind};
pub use crate::ingest::{IngestOutcome, PunchSink};
use crate::queue::Queue;

/// A source failure that stops one connection attempt (the source retries with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Binding a listening socket failed.
    #[error("device {device}: cannot listen on {address}: {source}: check that the port is free and the address belongs to this host")]
    Bind {
        device: String,
        address: String,
        source: std::io::Error,
    },
    /// Dialing the clock failed.
    #[error("device {device} ({address}): cannot connect: {source}: check that the clock is on and reachable")]
    Connect {
        device: String,
        address: String,
        source: std::io::Error,
    },
    /// Reading from an established connection failed.
    #[error("device {device} ({address}): connection lost: {source}")]
    Read {
        device: String,
        address: String,
        source: std::io::Error,
    },
    /// The ingest stage is gone (the daemon is stopping).
    #[error("device {device}: the queue is closed (the daemon is stopping)")]
    SinkClosed { device: String },
}

/// Live counters of one device, read by `status` and the status snapshot.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Lines (or records) received, good or bad.
    pub lines_read: AtomicU64,
    /// Punches parsed and handed to the queue.
    pub punches_read: AtomicU64,
    /// Lines that did not parse (or were too long, or not text).
    pub malformed: AtomicU64,
    /// Punches newly committed to the queue.
    pub queued: AtomicU64,
    /// Punches that were already in the queue (re-sent or re-read).
    pub duplicates: AtomicU64,
    /// Connections open right now.
    pub connections: AtomicI64,
    /// Connections made since start.
    pub connects: AtomicU64,
    /// Unix seconds of the last line received (0: never).
    pub last_line_at: AtomicI64,
    /// The last error, for `status`.
    pub last_error: Mutex<Option<String>>,
    /// Acknowledgements written back to the clock (each after its punch was committed).
    pub acks_written: AtomicU64,
    /// Woken when the device's state changes (a connection opens or closes, an error is set or
    /// cleared): see [`DeviceStats::wait_for`].
    changed: Notify,
    /// The address a listening device is bound to (known once bound).
    listening: Mutex<Option<watch::Sender<Option<SocketAddr>>>>,
    /// What a `zk` device reports (serial number, clock skew, watermark...).
    pub zk: Mutex<ZkFigures>,
}

/// The figures of a `zk` device, shown by `status` (every member absent for other kinds).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ZkFigures {
    /// The device's serial number (`~SerialNumber`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Device clock minus gateway clock, in seconds (positive: the device is ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// When the skew was measured (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_measured_at: Option<i64>,
    /// When clockbridge last set the device's clock (`sync_clock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_set_at: Option<i64>,
    /// Attendance records on the device at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_records: Option<u64>,
    /// Users on the device at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_users: Option<u64>,
    /// Records of the device's log committed to the queue (the watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<u64>,
    /// When the last poll completed (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<i64>,
    /// Polls completed since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polls: Option<u64>,
    /// Whether realtime events are subscribed on the current connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<bool>,
    /// Realtime punches received since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_events: Option<u64>,
    /// When clockbridge last cleared the device's log (`clear_device_log`), and how many records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cleared_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_cleared: Option<u64>,
    /// The last anomaly (log shrank, serial number changed, clock skew), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning_at: Option<i64>,
    /// Device users whose punches wait for a mapping, with their names from the device (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped_users: Vec<UnmappedUser>,
}

/// A device user without a mapping, and the name the device knows.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UnmappedUser {
    pub device_user_id: String,
    pub name: Option<String>,
}

impl DeviceStats {
    pub fn new() -> Arc<Self> {
        Arc::new(DeviceStats::default())
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        self.notify_changed();
    }

    pub fn clear_error(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.notify_changed();
    }

    /// Wakes [`DeviceStats::wait_for`] callers: call after changing `connections` or other state a
    /// waiter may look at (`set_error` and `clear_error` call it themselves).
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until `cond` holds. `cond` is re-checked after every [`DeviceStats::notify_changed`], so
    /// it should look at state whose changes are notified (connections, connects, the last error).
    pub async fn wait_for(&self, mut cond: impl FnMut(&DeviceStats) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // registered before the check, so a change between the check and the await is not missed
            changed.as_mut().enable();
            if cond(self) {
                return;
            }
            changed.await;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn listening_tx(&self) -> watch::Sender<Option<SocketAddr>> {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Records the bound address of a listening device.
    pub fn set_listening(&self, addr: SocketAddr) {
        self.listening_tx().send_replace(Some(addr));
    }

    /// Waits until a listening device is bound and returns its address.
    pub async fn wait_listening(&self) -> SocketAddr {
        let mut rx = self.listening_tx().subscribe();
        loop {
            if let Some(a) = *rx.borrow_and_update() {
                return a;
            }
            if rx.changed().await.is_err() {
                // the sender lives in self, so this cannot happen while self is alive
                std::future::pending::<()>().await;
            }
        }
    }

    /// A serialisable snapshot.
    pub fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            online: self.connections.load(Ordering::Relaxed) > 0,
            connections: self.connections.load(Ordering::Relaxed).max(0) as u64,
            connects: self.connects.load(Ordering::Relaxed),
            lines_read: self.lines_read.load(Ordering::Relaxed),
            punches_read: self.punches_read.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            acks_written: self.acks_written.load(Ordering::Relaxed),
            last_line_at: match self.last_line_at.load(Ordering::Relaxed) {
                0 => None,
                t => Some(t),
            },
            last_error: self.last_error(),
            zk: self.zk.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Changes the `zk` figures.
    pub fn update_zk(&self, f: impl FnOnce(&mut ZkFigures)) {
        f(&mut self.zk.lock().unwrap_or_else(|p| p.into_inner()));
        self.notify_changed();
    }
}

/// What `status` shows of a device's source.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub online: bool,
    pub connections: u64,
    pub connects: u64,
    pub lines_read: u64,
    pub punches_read: u64,
    pub malformed: u64,
    pub queued: u64,
    pub duplicates: u64,
    /// Acknowledgements written back to the clock (absent in snapshots of older versions).
    #[serde(default)]
    pub acks_written: u64,
    pub last_line_at: Option<i64>,
    pub last_error: Option<String>,
    /// `zk` devices only: serial number, clock skew, watermark... (flattened; absent for other kinds).
    #[serde(flatten, default)]
    pub zk: ZkFigures,
}

/// Runs one device until `shutdown` is cancelled. Never returns early on errors: it retries.
pub async fn run_device(
    cfg: DeviceConfig,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    shutdown: CancellationToken,
) {
    run_device_with_queue(cfg, sink, stats, shutdown, None).await
}

/// [`run_device`], with the queue where `zk` devices keep their watermarks (without it, a `zk`
/// device's watermark lives in memory only, and each start reads its whole log again: duplicates are
/// still recognised by their idempotent keys).
pub async fn run_device_with_queue(
    cfg: DeviceConfig,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    shutdown: CancellationToken,
    queue: Option<Queue>,
) {
    match cfg.kind {
        DeviceKind::Tcp => tcp::run(cfg, sink, stats, shutdown).await,
        DeviceKind::Serial => serial::run(cfg, sink, stats, shutdown).await,
        DeviceKind::Zk => zk::run(cfg, sink, stats, shutdown, queue).await,
    }
}

/// Test support shared by the source tests: one device task under test.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::{run_device, DeviceStats, PunchSink};
    use crate::config::DeviceConfig;

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    /// A device task started by [`run_device`], with its stats and its stop switch.
    pub struct Running {
        pub stats: Arc<DeviceStats>,
        shutdown: CancellationToken,
        pub task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        pub fn start(cfg: DeviceConfig, sink: PunchSink) -> Running {
            let stats = DeviceStats::new();
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run_device(cfg, sink, stats.clone(), shutdown.clone()));
            Running {
                stats,
                shutdown,
                task,
            }
        }

        /// Stops the task and checks it ends promptly, without panicking.
        pub async fn stop(self) -> Arc<DeviceStats> {
            self.shutdown.cancel();
            tokio::time::timeout(GUARD, self.task)
                .await
                .expect("run did not stop after shutdown")
                .expect("run panicked");
            self.stats
        }

        /// Waits until `cond` holds (checked on every state change of the device).
        pub async fn until(&self, what: &str, cond: impl FnMut(&DeviceStats) -> bool) {
            tokio::time::timeout(GUARD, self.stats.wait_for(cond))
                .await
                .unwrap_or_else(|_| panic!("device never {what}: {:?}", self.stats.snapshot()));
        }

        /// Waits until the device has one open connection and `connects` connections so far.
        pub async fn online(&self, connects: u64) {
            self.until("came online", |s| {
                s.connections.load(Ordering::Relaxed) == 1
                    && s.connects.load(Ordering::Relaxed) == connects
            })
            .await
        }

        pub fn get(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
            c.load(Ordering::Relaxed)
        }
    }
}
