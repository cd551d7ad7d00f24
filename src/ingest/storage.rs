//! Whether punches can be committed now, shared by the sources and the ingest writer: the gate the
//! sources wait at before they read more from a clock, and the tally of punches a stop could not
//! keep.
//!
//! - **The gate.** The writer closes it when a commit fails (disk full, I/O error) and opens it again
//!   when a commit succeeds. A source waits at it before each read from its clock
//!   ([`super::PunchSink::ready`]), so while nothing can be committed no more is read: the clocks are
//!   held back by TCP flow control (or the serial line's buffer), and what is at risk is what the
//!   kernel buffers, the punches already in the channel and the group being retried, not a channel
//!   filling up behind a writer that cannot commit. The closed gate is also the health model's
//!   *storage* condition ([`crate::health`]).
//! - **What a stop could not keep.** A stop that finds punches it cannot commit gives up on them
//!   after [`super::STOP_COMMIT_BUDGET`] and counts them here, per device, split by who still has
//!   them: a punch whose source waits for its commit (a clock with `ack_template`, a ZKTeco terminal)
//!   is still held by the clock; any other is lost. [`Storage::report`] logs the count per device.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;

use super::DeviceInfo;
use crate::queue::now_ms;

/// Why the gate is closed: commits fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Unix ms of the first failed commit of this episode.
    pub since_ms: i64,
    /// The latest error.
    pub error: String,
    /// Punches handed over and not committed: the group being retried and the channel.
    pub punches: usize,
}

/// Punches of one device a stop could not commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotKept {
    /// Gone: their source had already answered for them (a line clock without `ack_template`).
    pub lost: u64,
    /// Still held by the clock: their source waited for their commit (not acknowledged, watermark not
    /// advanced).
    pub clock_keeps: u64,
}

/// The gate and the tally; see the module documentation.
#[derive(Debug)]
pub struct Storage {
    open: watch::Sender<bool>,
    held: Mutex<Option<Held>>,
    not_kept: Mutex<BTreeMap<String, NotKept>>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            open: watch::Sender::new(true),
            held: Mutex::new(None),
            not_kept: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Returns once commits succeed (at once while they do). Cancel-safe.
    pub async fn ready(&self) {
        let mut rx = self.open.subscribe();
        // the sender lives as long as `self`
        let _ = rx.wait_for(|open| *open).await;
    }

    /// True while commits succeed.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Why the gate is closed (`None` while it is open).
    pub fn held(&self) -> Option<Held> {
        lock(&self.held).clone()
    }

    /// A commit failed with `error`; `punches` are waiting for one.
    pub(crate) fn close(&self, error: String, punches: usize) {
        let mut h = lock(&self.held);
        let since_ms = h.as_ref().map_or_else(now_ms, |h| h.since_ms);
        *h = Some(Held {
            since_ms,
            error,
            punches,
        });
        drop(h);
        self.open.send_replace(false);
    }

    /// A commit succeeded.
    pub(crate) fn reopen(&self) {
        *lock(&self.held) = None;
        self.open.send_replace(true);
    }

    /// Counts `n` punches of `device` that will not be committed; `clock_keeps`: their source waited
    /// for their commit, so the clock still holds them.
    pub fn not_kept(&self, device: &str, clock_keeps: bool, n: u64) {
        if n == 0 {
            return;
        }
        let mut t = lock(&self.not_kept);
        let e = t.entry(device.to_string()).or_default();
        if clock_keeps {
            e.clock_keeps += n;
        } else {
            e.lost += n;
        }
    }

    /// What was counted so far, by device.
    pub fn not_kept_so_far(&self) -> BTreeMap<String, NotKept> {
        lock(&self.not_kept).clone()
    }

    /// Logs, per device, the punches a stop could not commit and whether the clock still holds them
    /// (ERROR for lost ones, WARN for those the clock keeps); returns the totals (lost, kept by the
    /// clocks).
    pub fn report(&self, devices: &HashMap<String, DeviceInfo>) -> (u64, u64) {
        let tally = self.not_kept_so_far();
        let why = match self.held() {
            Some(h) => format!("the queue refused writes: {}", h.error),
            None => "the queue did not commit them before the stop".to_string(),
        };
        let (mut lost, mut kept) = (0, 0);
        for (id, n) in &tally {
            let kind = devices.get(id).map_or("", |d| d.kind.as_str());
            if n.lost > 0 {
                lost += n.lost;
                tracing::error!(
                    device = %id,
                    punches = n.lost,
                    "device {id}: {} punches read from the clock were not committed ({why}) and are lost: a {} clock without ack_template does not keep what it has sent; if the clock keeps a log of its own, export it and load it with `clockbridge import --device {id}`",
                    n.lost,
                    if kind.is_empty() { "line" } else { kind },
                );
            }
            if n.clock_keeps > 0 {
                kept += n.clock_keeps;
                let held = if kind == "zk" {
                    "they stay in the terminal's log, and its watermark did not pass them: they are read again at the next start"
                } else {
                    "they were not acknowledged, so the clock keeps them and sends them again"
                };
                tracing::warn!(
                    device = %id,
                    punches = n.clock_keeps,
                    "device {id}: {} punches were not committed ({why}); the clock still holds them: {held}",
                    n.clock_keeps,
                );
            }
        }
        (lost, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_closes_on_a_failed_commit_and_opens_on_the_next_success() {
        let s = std::sync::Arc::new(Storage::default());
        assert!(s.is_open());
        s.ready().await;
        s.close("database or disk is full".into(), 10);
        s.close("database or disk is full".into(), 12);
        let h = s.held().unwrap();
        assert_eq!(h.punches, 12);
        assert!(!s.is_open());
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.ready().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        s.reopen();
        waiter.await.unwrap();
        assert_eq!(s.held(), None);
    }

    #[test]
    fn not_kept_punches_are_counted_per_device_and_custody() {
        let s = Storage::default();
        s.not_kept("door-1", false, 3);
        s.not_kept("door-1", false, 2);
        s.not_kept("door-2", true, 4);
        s.not_kept("door-3", true, 0);
        let t = s.not_kept_so_far();
        assert_eq!(
            t["door-1"],
            NotKept {
                lost: 5,
                clock_keeps: 0
            }
        );
        assert_eq!(t["door-2"].clock_keeps, 4);
        assert!(!t.contains_key("door-3"));
        assert_eq!(s.report(&HashMap::new()), (5, 4));
    }
}
