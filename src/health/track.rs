//! The two observations that need memory across looks: whether the queue's database thread answers
//! ([`DbProbe`]) and when the punch sender was last active ([`SenderTracker`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::queue::{Queue, QueueError};
use crate::sender::SenderStats;

/// What a look saw of the database thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbState {
    /// The question was answered.
    Answered,
    /// A question asked at `since` (the oldest still unanswered) has no answer yet.
    Waiting { since: Instant },
    /// The thread has stopped: every call fails.
    Gone,
}

/// Asks the queue's database thread a question that needs no database, on behalf of every caller
/// (`/healthz`, the watchdog, the snapshot). The thread serves its questions in order, so the oldest
/// question not yet answered tells how long it has been stuck, across looks: a look that stops
/// waiting leaves its question queued, and the question records its own answer when the thread gets
/// to it.
#[derive(Debug, Default)]
pub struct DbProbe {
    /// When the oldest question still unanswered was asked.
    unanswered_since: Arc<Mutex<Option<Instant>>>,
}

fn lock_slot(slot: &Mutex<Option<Instant>>) -> std::sync::MutexGuard<'_, Option<Instant>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl DbProbe {
    /// Asks, and waits at most `wait` for the answer.
    pub async fn check(&self, queue: &Queue, wait: Duration) -> DbState {
        let asked = Instant::now();
        let since = *lock_slot(&self.unanswered_since).get_or_insert(asked);
        let slot = self.unanswered_since.clone();
        let question = queue.ping(move || {
            // answered: so was every question asked before this one
            let mut oldest = lock_slot(&slot);
            if *oldest <= Some(asked) {
                *oldest = None;
            }
        });
        match tokio::time::timeout(wait, question).await {
            Ok(Ok(())) => DbState::Answered,
            Ok(Err(QueueError::Closed)) => DbState::Gone,
            // a ping fails only when the thread is gone; any other answer is an answer
            Ok(Err(_)) => DbState::Answered,
            Err(_) => DbState::Waiting { since },
        }
    }

    /// True while a question is unanswered.
    pub fn waiting(&self) -> bool {
        lock_slot(&self.unanswered_since).is_some()
    }
}

/// Turns the sender's counters, observed at each look, into the monotonic time of its last activity.
///
/// The sender's heartbeat is wall-clock time (Unix ms). A heartbeat that changed since the previous
/// look is dated by its wall-clock age, clamped to the time since that look, so a wall-clock jump
/// (NTP setting the clock of a box without RTC after boot) can neither age it nor make it look fresh
/// beyond one look. Requests started and replies received are dated at the look that sees them (at
/// most one look late: this errs towards not restarting).
#[derive(Debug, Clone)]
pub struct SenderTracker {
    heartbeat_ms: i64,
    activity: u64,
    seen_at: Instant,
    active_at: Instant,
}

impl SenderTracker {
    /// Starts tracking at `now` with the current counters; the sender counts as active at `now`.
    pub fn new(now: Instant, heartbeat_ms: i64, activity: u64) -> SenderTracker {
        SenderTracker {
            heartbeat_ms,
            activity,
            seen_at: now,
            active_at: now,
        }
    }

    /// Records an observation made at `now` (wall clock `now_ms`): the heartbeat (Unix ms) and the
    /// number of requests started plus replies received.
    pub fn observe(&mut self, now: Instant, now_ms: i64, heartbeat_ms: i64, activity: u64) {
        let now = now.max(self.seen_at);
        let window = now.saturating_duration_since(self.seen_at);
        if heartbeat_ms != self.heartbeat_ms {
            // the loop turned since the last look: date the turn by its wall-clock age, but never
            // before the last look (the wall clock may have jumped)
            let age = Duration::from_millis(now_ms.saturating_sub(heartbeat_ms).max(0) as u64)
                .min(window);
            let at = now.checked_sub(age).unwrap_or(self.seen_at);
            self.active_at = self.active_at.max(at);
            self.heartbeat_ms = heartbeat_ms;
        }
        if activity != self.activity {
            self.active_at = now;
            self.activity = activity;
        }
        self.seen_at = now;
    }

    /// The monotonic time of the sender's last known activity.
    pub fn active_at(&self) -> Instant {
        self.active_at
    }
}

/// Requests started plus replies received by the sender (changes whenever a request starts or ends).
pub fn sender_activity(stats: &SenderStats) -> u64 {
    let (cumulative, _) = stats.latency.cumulative();
    let replies = cumulative.last().copied().unwrap_or(0);
    stats.requests.load(Ordering::Relaxed).wrapping_add(replies)
}
