//! [`Monitor`]: the live parts of a running daemon the health model looks at, and the one place that
//! looks ([`Monitor::assess`]); `/healthz`, the watchdog's supervisor and the status snapshot all ask
//! it, so they cannot disagree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{judge, sender_activity, DbProbe, Limits, Observation, SenderTracker, Verdict};
use crate::inbox::InboxStats;
use crate::ingest::{DeviceInfo, Storage};
use crate::queue::{now_ms, Queue};
use crate::sender::SenderStats;

/// The parts of a running daemon the health model looks at.
#[derive(Clone)]
pub struct Parts {
    pub queue: Queue,
    pub devices: Arc<HashMap<String, DeviceInfo>>,
    /// The punch lane's sender (its activity is the watchdog's).
    pub sender: Arc<SenderStats>,
    /// Every lane's sender by record kind, the punch lane's first.
    pub senders: Vec<(&'static str, Arc<SenderStats>)>,
    /// The ingest writer's storage gate.
    pub storage: Arc<Storage>,
    pub inbox: InboxStats,
    pub limits: Limits,
    /// `feishu.request_timeout_secs`.
    pub request_timeout_secs: u64,
    /// The last scheduled reconcile, for `/metrics` and the status snapshot.
    pub reconcile: crate::reconcile::schedule::Shared,
}

/// See the module documentation.
pub struct Monitor {
    parts: Parts,
    stopping: AtomicBool,
    probe: DbProbe,
    tracker: Mutex<SenderTracker>,
    last: Mutex<Verdict>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitor {
    /// Starts watching `parts`; the sender counts as active from now.
    pub fn new(parts: Parts) -> Arc<Monitor> {
        let tracker = SenderTracker::new(
            Instant::now(),
            parts.sender.heartbeat.load(Ordering::Relaxed),
            sender_activity(&parts.sender),
        );
        Arc::new(Monitor {
            parts,
            stopping: AtomicBool::new(false),
            probe: DbProbe::default(),
            tracker: Mutex::new(tracker),
            last: Mutex::new(Verdict::default()),
        })
    }

    /// What is watched.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The daemon is stopping (SIGTERM): from now on the verdict says so.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// True once [`Monitor::set_stopping`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Looks at every part now (waiting at most `wait` for the database thread's answer) and judges.
    pub async fn assess(&self, wait: Duration) -> Verdict {
        let p = &self.parts;
        let db = self.probe.check(&p.queue, wait).await;
        let now = Instant::now();
        let heartbeat = p.sender.heartbeat.load(Ordering::Relaxed);
        let active_at = {
            let mut t = lock(&self.tracker);
            t.observe(now, now_ms(), heartbeat, sender_activity(&p.sender));
            t.active_at()
        };
        let inbox = lock(&p.inbox)
            .iter()
            .filter_map(|(k, s)| s.condition.clone().map(|c| (k.clone(), c)))
            .collect();
        let o = Observation {
            now,
            stopping: self.stopping(),
            db,
            sender_active_at: active_at,
            sender_started: heartbeat != 0,
            faults: p.queue.faults(),
            held: p.storage.held(),
            senders: p
                .senders
                .iter()
                .map(|(k, s)| (k.to_string(), s.snapshot()))
                .collect(),
            inbox,
            queue_path: p.queue.path().display().to_string(),
            request_timeout_secs: p.request_timeout_secs,
        };
        let v = judge(&o, &p.limits);
        *lock(&self.last) = v.clone();
        v
    }

    /// The latest verdict (empty before the first look).
    pub fn last(&self) -> Verdict {
        lock(&self.last).clone()
    }
}
