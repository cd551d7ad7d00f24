//! Clock sources: each configured device runs as its own task that reads punches and hands them to
//! the ingest stage through a [`PunchSink`].
//!
//! A kind of clock is one folder here (`tcp/`, `serial/`, `zk/`), its `pub mod` line and its entry in
//! [`KINDS`]. The folder holds the kind's keys and their checks (its spec), its source task, its
//! figures for `status` and `/metrics`, and what it keeps across restarts (through
//! [`crate::queue::store`]). What a kind is to the rest of clockbridge is the [`Kind`] trait; every
//! source starts from one [`SourceContext`].
//!
//! Guarantees shared by every source:
//! - A device never blocks another: each runs in its own task, with its own reconnect back-off.
//! - Bad input (malformed or over-long lines, invalid bytes, a dropped connection) is counted in the
//!   device's [`DeviceStats`] and logged with the device id; it is never fatal.
//! - A punch counts as taken only once the ingest stage has committed it to the queue
//!   ([`PunchSink::submit_committed`]); sources that acknowledge to the clock do so only after that.

pub mod formats;
pub mod kind;
pub mod line_check;
pub mod line_spec;
pub mod lines;
pub mod reconnect;
pub mod session;

pub mod adms;
pub mod hikvision;
pub mod serial;
pub mod tcp;
pub mod zk;

/// The registry: every kind of clock, in the order `check-config` lists them. Adding a kind is its
/// folder, its `pub mod` line above and one entry here. (A macro could declare both at once, but
/// rustfmt does not follow modules declared inside a macro, so `cargo fmt` would skip the kind's files.)
pub static KINDS: &[&dyn Kind] = &[
    &tcp::KIND,
    &serial::KIND,
    &zk::KIND,
    &adms::KIND,
    &hikvision::KIND,
];

pub use crate::device_stats::{DeviceSnapshot, DeviceStats};
pub use crate::ingest::{IngestOutcome, PunchSink};
pub use kind::{ClockCount, ClockCounted, DeviceSpec, Kind, SourceContext};

/// How often `poll_command` is written when `poll_interval` is absent.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 5;

/// The kind named `name` (`kind = "..."`).
pub fn kind(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

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

/// Test support shared by the source tests: one device task under test.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::{DeviceSpec, DeviceStats, PunchSink, SourceContext};
    use crate::queue::store::DeviceStore;

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    /// The context of a test device `id` in Asia/Shanghai (poll every 5 s, back-off up to 60 s).
    pub fn context(id: &str, sink: PunchSink) -> SourceContext {
        SourceContext {
            id: id.to_string(),
            tz: chrono_tz::Asia::Shanghai,
            poll_interval: Duration::from_secs(super::DEFAULT_POLL_INTERVAL_SECS),
            reconnect_max_secs: 60,
            sink,
            stats: DeviceStats::new(),
            shutdown: CancellationToken::new(),
            store: DeviceStore::in_memory(id),
        }
    }

    /// A device task started from its spec, with its stats and its stop switch.
    pub struct Running {
        pub stats: Arc<DeviceStats>,
        shutdown: CancellationToken,
        pub task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Starts `spec` with `ctx` (see [`context`]).
        pub fn start(spec: &dyn DeviceSpec, ctx: SourceContext) -> Running {
            let (stats, shutdown) = (ctx.stats.clone(), ctx.shutdown.clone());
            let task = tokio::spawn(spec.start(ctx));
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
