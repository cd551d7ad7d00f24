//! Live figures of one device's source, shared by the source task that counts them, the ingest stage
//! that counts what it committed, and the readers (`status` snapshots, `/metrics`, `/status`).
//!
//! It is its own module so that the flow's dependencies point one way: sources and the ingest stage
//! both write here, and neither imports the other's internals for it.
//!
//! Guarantees:
//! - Counters are lock-free atomics; the few values behind a mutex (the last error, the kind's figures)
//!   are never held across an await, and a poisoned lock is read through, never a panic.
//! - A kind of clock keeps its own figures (a ZKTeco terminal's serial number, clock skew, watermark...)
//!   as its own serialisable type ([`DeviceStats::update_figures`]); a snapshot carries them as plain
//!   members, so `status --json` shows them beside the common counters, and a reader that does not know
//!   the kind still passes them on unchanged.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

/// A kind's own figures: any serialisable value (members that are absent are skipped).
pub trait Figures: Serialize + Default + Send + std::fmt::Debug + 'static {}
impl<T: Serialize + Default + Send + std::fmt::Debug + 'static> Figures for T {}

/// A kind's figures behind the type eraser.
trait AnyFigures: Send + std::fmt::Debug {
    fn to_members(&self) -> serde_json::Map<String, serde_json::Value>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Figures> AnyFigures for T {
    fn to_members(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
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
    /// Unix seconds of the last punch newly committed to the queue (0: none since start).
    pub last_punch_at: AtomicI64,
    /// The last error, for `status`.
    pub last_error: Mutex<Option<String>>,
    /// Acknowledgements written back to the clock (each after its punch was committed).
    pub acks_written: AtomicU64,
    /// Woken when the device's state changes (a connection opens or closes, an error is set or
    /// cleared): see [`DeviceStats::wait_for`].
    changed: Notify,
    /// The address a listening device is bound to (known once bound).
    listening: Mutex<Option<watch::Sender<Option<SocketAddr>>>>,
    /// What the device's kind reports besides the common counters (see [`DeviceStats::update_figures`]).
    figures: Mutex<Option<Box<dyn AnyFigures>>>,
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
    /// waiter may look at (`set_error`, `clear_error` and `update_figures` call it themselves).
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

    /// Changes the kind's figures (of type `T`, created with its default on first use) and wakes
    /// [`DeviceStats::wait_for`] callers.
    pub fn update_figures<T: Figures>(&self, f: impl FnOnce(&mut T)) {
        {
            let mut slot = self.figures.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = !matches!(slot.as_mut().map(|b| b.as_any_mut().is::<T>()), Some(true));
            if fresh {
                *slot = Some(Box::new(T::default()));
            }
            if let Some(t) = slot
                .as_mut()
                .and_then(|b| b.as_any_mut().downcast_mut::<T>())
            {
                f(t);
            }
        }
        self.notify_changed();
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
            last_punch_at: match self.last_punch_at.load(Ordering::Relaxed) {
                0 => None,
                t => Some(t),
            },
            last_error: self.last_error(),
            figures: self
                .figures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|f| f.to_members())
                .unwrap_or_default(),
        }
    }
}

/// What `status` shows of a device's source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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
    /// When the last punch was newly committed to the queue (absent before the first since start,
    /// and in snapshots of older versions).
    #[serde(default)]
    pub last_punch_at: Option<i64>,
    pub last_error: Option<String>,
    /// The kind's own figures (a `zk` device's serial number, clock skew, watermark...), as members
    /// of the snapshot itself; empty for kinds without any.
    #[serde(flatten, default)]
    pub figures: serde_json::Map<String, serde_json::Value>,
}

impl DeviceSnapshot {
    /// The kind's figures as their type (members it does not know are ignored; missing ones take
    /// their defaults).
    pub fn figures<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(serde_json::Value::Object(self.figures.clone())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    struct Made {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        polls: Option<u64>,
    }

    #[test]
    fn a_kinds_figures_are_members_of_the_snapshot_and_read_back_typed() {
        let s = DeviceStats::new();
        assert!(s.snapshot().figures.is_empty());
        s.update_figures(|m: &mut Made| m.polls = Some(3));
        s.update_figures(|m: &mut Made| m.serial = Some("ABC".into()));
        let snap = s.snapshot();
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["polls"], 3);
        assert_eq!(json["serial"], "ABC");
        assert_eq!(json["punches_read"], 0);
        // through JSON (the daemon's snapshot in the queue) and back
        let back: DeviceSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
        assert_eq!(
            back.figures::<Made>(),
            Made {
                serial: Some("ABC".into()),
                polls: Some(3)
            }
        );
    }
}
