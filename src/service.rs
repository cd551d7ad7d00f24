//! Running under systemd (`Type=notify`): readiness, status lines, stopping, and a watchdog that is
//! fed only while the pipeline makes progress.
//!
//! # Notifications
//! Sent with sd-notify 0.5 to `$NOTIFY_SOCKET`; outside systemd (no `NOTIFY_SOCKET`) nothing is sent
//! and no supervisor task runs.
//! - `STATUS=starting: ...` before [`crate::daemon::start`];
//! - `READY=1` with `STATUS=ready: 3 devices (1 online), queue 12 pending, ...` only after
//!   `daemon::start` returned: the queue is open and migrated, in-flight rows of a previous run are
//!   pending again, the ingest writer, the sender and every source task are running. A start that
//!   fails sends `STATUS=failed to start: <error>` and the process exits 1 (systemd then restarts it);
//! - `STATUS=running: ...` refreshed while running (every half watchdog interval, or every
//!   [`STATUS_INTERVAL`] without a watchdog), and `STATUS=stuck: ...` when a check below fails;
//! - `STOPPING=1` with `STATUS=stopping: ...` as soon as SIGTERM (or SIGINT) arrives, before the
//!   orderly stop begins.
//!
//! # Watchdog: what "progress" means
//! When systemd sets `WATCHDOG_USEC` (`WatchdogSec=` in the unit), a supervisor task wakes every half
//! interval and sends `WATCHDOG=1` only if both checks pass:
//!
//! 1. **The database thread answers.** Every tick asks the queue's thread for the (O(devices)) counts
//!    through [`Queue::counts`], keeping at most one question outstanding. The check fails when a
//!    question has waited longer than [`DB_ANSWER_LIMIT`] (30 s: three times the 10 s SQLite busy
//!    timeout, so a few statements waiting on another process's write lock are not a failure), or at
//!    once when the thread is gone ([`QueueError::Closed`]). An SQLite error is an answer: the thread
//!    is alive (the error is logged as a warning).
//! 2. **The sender is alive.** Its activity is the latest of: a turn of its claim loop
//!    ([`SenderStats::heartbeat`] changed), a request started ([`SenderStats::requests`] changed) or a
//!    reply received (the latency histogram's count changed). The check fails when there has been no
//!    activity for longer than [`Limits::sender_idle`]: the longest wait the sender may legitimately
//!    make between two such signals, which is the largest of
//!    - [`IDLE_RECHECK`] (5 s): an idle claim loop re-checks the queue at least this often;
//!    - `sender.app_error_pause_secs` (default 60): every request pauses after a credential or scope
//!      error;
//!    - [`RATE_LIMIT_PAUSE_MAX`] (60 s): the longest rate-limit pause (`x-ogw-ratelimit-reset` is
//!      clamped to 60 s by the classifier);
//!    - 4 × `feishu.request_timeout_secs` (default 4 × 15 s): one write can take a token fetch, the
//!      request, a token re-fetch after a rejected token and the re-send, each up to the timeout;
//!    - [`SENDER_DB_BACKOFF_MAX`] (25.6 s): the sender's longest back-off after a failed queue read;
//!
//!    plus [`DB_ANSWER_LIMIT`] (the sender's own queue calls may each be that slow without the first
//!    check failing) and [`SLACK`] (5 s: rate limiter spacing, scheduling). With the defaults that is
//!    60 + 30 + 5 = 95 s.
//!
//! The sender's heartbeat is wall-clock time (Unix ms). It is turned into monotonic time here: a
//! heartbeat that changed since the previous tick is dated by its wall-clock age, clamped to the time
//! since that tick, so a wall-clock jump (NTP setting the clock of a box without RTC after boot) can
//! neither age it nor make it look fresh beyond one tick. Requests and replies are dated at the tick
//! that sees them (at most half a watchdog interval late: this errs towards not restarting).
//!
//! A third check is implicit: the ping is sent by a task on the async runtime, so a starved or
//! deadlocked runtime stops the pings too.
//!
//! When a check fails the task logs one ERROR naming the stuck part (and an INFO if it recovers), sets
//! `STATUS=stuck: ...` and stops pinging: systemd kills the service `WatchdogSec=` after the last ping
//! and `Restart=on-failure` starts it again. A stuck part is therefore restarted within about
//! its limit + `WatchdogSec=` (95 s + 60 s with the defaults and the shipped unit). Nothing is lost by
//! that kill: rows in flight are re-sent on start with their idempotent id.
//!
//! The decision is the pure function [`judge`] of observed times; [`SenderTracker`] turns observed
//! counters into the sender's last activity.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::Running;
use crate::queue::{now_ms, Counts, Queue, QueueError};
use crate::sender::{SenderStats, IDLE_RECHECK};

/// How long a queue call may wait for the database thread before it counts as stuck.
pub const DB_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// The longest rate-limit pause (the classifier clamps `x-ogw-ratelimit-reset` to 1..=60 s).
pub const RATE_LIMIT_PAUSE_MAX: Duration = Duration::from_secs(60);

/// The sender's longest back-off after a failed queue read (200 ms << 7).
pub const SENDER_DB_BACKOFF_MAX: Duration = Duration::from_millis(25_600);

/// Added to the sender's limit for rate limiter spacing and scheduling.
pub const SLACK: Duration = Duration::from_secs(5);

/// How often `STATUS=` is refreshed when there is no watchdog.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of the watchdog's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for an answer of the database thread.
    pub db_answer: Duration,
    /// Longest time without sender activity (loop turn, request started, reply received).
    pub sender_idle: Duration,
}

impl Limits {
    /// The limits for an application-level pause and a request timeout (see the module docs).
    pub fn new(app_error_pause: Duration, request_timeout: Duration) -> Limits {
        let longest_wait = IDLE_RECHECK
            .max(app_error_pause)
            .max(RATE_LIMIT_PAUSE_MAX)
            .max(request_timeout.saturating_mul(4))
            .max(SENDER_DB_BACKOFF_MAX);
        Limits {
            db_answer: DB_ANSWER_LIMIT,
            sender_idle: longest_wait + DB_ANSWER_LIMIT + SLACK,
        }
    }

    /// The limits for `cfg`.
    pub fn for_config(cfg: &Config) -> Limits {
        Limits::new(
            Duration::from_secs(cfg.sender.app_error_pause_secs),
            cfg.feishu.request_timeout(),
        )
    }
}

/// What the watchdog saw of the database thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbState {
    /// The last question was answered.
    Answered,
    /// A question asked at `since` is not answered yet.
    Waiting { since: Instant },
    /// The thread has stopped: every call fails.
    Gone,
}

/// A part of the pipeline that makes no progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stuck {
    /// The database thread has stopped.
    DatabaseGone,
    /// The database thread has not answered for `waited`.
    Database { waited: Duration, limit: Duration },
    /// The sender has shown no activity for `idle`.
    Sender { idle: Duration, limit: Duration },
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stuck::DatabaseGone => write!(f, "the queue's database thread has stopped"),
            Stuck::Database { waited, limit } => write!(
                f,
                "the queue's database thread has not answered for {} s (limit {} s)",
                waited.as_secs(),
                limit.as_secs()
            ),
            Stuck::Sender { idle, limit } => write!(
                f,
                "the sender has not turned its claim loop, started or finished a request for {} s (limit {} s)",
                idle.as_secs(),
                limit.as_secs()
            ),
        }
    }
}

/// The watchdog's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every check passed: ping.
    Progressing,
    /// These parts are stuck: do not ping.
    Stuck(Vec<Stuck>),
}

/// Decides whether the pipeline makes progress, from what was observed at `now`: the database thread's
/// state and the sender's last activity (see the module docs).
pub fn judge(now: Instant, db: DbState, sender_active_at: Instant, limits: &Limits) -> Health {
    let mut stuck = Vec::new();
    match db {
        DbState::Answered => {}
        DbState::Gone => stuck.push(Stuck::DatabaseGone),
        DbState::Waiting { since } => {
            let waited = now.saturating_duration_since(since);
            if waited > limits.db_answer {
                stuck.push(Stuck::Database {
                    waited,
                    limit: limits.db_answer,
                });
            }
        }
    }
    let idle = now.saturating_duration_since(sender_active_at);
    if idle > limits.sender_idle {
        stuck.push(Stuck::Sender {
            idle,
            limit: limits.sender_idle,
        });
    }
    if stuck.is_empty() {
        Health::Progressing
    } else {
        Health::Stuck(stuck)
    }
}

/// Turns the sender's counters, observed at each tick, into the monotonic time of its last activity.
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
fn sender_activity(stats: &SenderStats) -> u64 {
    let (cumulative, _) = stats.latency.cumulative();
    let replies = cumulative.last().copied().unwrap_or(0);
    stats.requests.load(Ordering::Relaxed).wrapping_add(replies)
}

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn under_service_manager() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `states` to the service manager; a failure is logged once (later ones at debug level).
pub fn notify(states: &[NotifyState]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "systemd: cannot send a notification to NOTIFY_SOCKET");
        } else {
            tracing::debug!(error = %e, "systemd: cannot send a notification");
        }
    }
}

/// Sends `STATUS=<text>`.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// The `STATUS=` text: `<what>: 3 devices (1 online), queue 12 pending, 0 in flight, ...`.
pub fn status_line(
    what: &str,
    devices: usize,
    online: usize,
    counts: Option<&Counts>,
    blocked: Option<&str>,
) -> String {
    let mut s = format!(
        "{what}: {devices} device{} ({online} online)",
        if devices == 1 { "" } else { "s" }
    );
    match counts {
        Some(c) => {
            let t = &c.total;
            s.push_str(&format!(
                ", queue {} pending, {} in flight, {} dead, {} unmapped",
                t.pending, t.in_flight, t.dead, t.unmapped
            ));
        }
        None => s.push_str(", queue not answering"),
    }
    match blocked {
        Some(reason) => s.push_str(&format!("; uploads blocked: {reason}")),
        None => s.push_str("; uploads ok"),
    }
    s
}

fn running_status(running_parts: &Parts, what: &str, counts: Option<&Counts>) -> String {
    let online = running_parts
        .devices
        .values()
        .filter(|d| d.stats.snapshot().online)
        .count();
    let sender = running_parts.sender_stats.snapshot();
    status_line(
        what,
        running_parts.devices.len(),
        online,
        counts,
        sender.blocked_reason.as_deref(),
    )
}

/// The parts of a running daemon the supervisor watches.
struct Parts {
    queue: Queue,
    devices: Arc<std::collections::HashMap<String, crate::ingest::DeviceInfo>>,
    sender_stats: Arc<SenderStats>,
}

/// The systemd side of a running daemon: readiness sent, the supervisor (status and watchdog) running.
pub struct Service {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Service {
    /// Sends `STATUS=starting: ...` (call it before `daemon::start`).
    pub fn starting() {
        status("starting: opening the queue, starting the sender and the sources");
    }

    /// Sends `STATUS=failed to start: <error>`.
    pub fn failed(error: &dyn std::fmt::Display) {
        status(&format!("failed to start: {error:#}"));
    }

    /// Sends `READY=1` with a status line for `running` (call it after `daemon::start` returned), and
    /// starts the supervisor: status refreshes, and the watchdog when systemd asked for one.
    pub async fn ready(running: &Running, limits: Limits) -> Service {
        let stop = CancellationToken::new();
        if !under_service_manager() {
            return Service { stop, task: None };
        }
        let parts = Parts {
            queue: running.queue.clone(),
            devices: running.devices.clone(),
            sender_stats: running.sender_stats.clone(),
        };
        // the status line only: a slow answer must not hold READY=1 back for long
        let counts = tokio::time::timeout(Duration::from_secs(5), parts.queue.counts())
            .await
            .ok()
            .and_then(Result::ok);
        let line = running_status(&parts, "ready", counts.as_ref());
        notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        let watchdog = sd_notify::watchdog_enabled().filter(|w| !w.is_zero());
        match watchdog {
            Some(every) => tracing::info!(
                watchdog_ms = every.as_millis() as u64,
                db_limit_secs = limits.db_answer.as_secs(),
                sender_limit_secs = limits.sender_idle.as_secs(),
                "systemd: ready; watchdog pinged while the pipeline makes progress"
            ),
            None => tracing::info!("systemd: ready (no watchdog)"),
        }
        let task = tokio::spawn(supervise(
            parts,
            limits,
            watchdog,
            line,
            stop.clone(),
            Arc::new(notify),
        ));
        Service {
            stop,
            task: Some(task),
        }
    }

    /// Ends the supervisor (no ping can follow), then sends `STOPPING=1` with a status line. systemd
    /// does not watch a stopping service, so the watchdog stays quiet from here on.
    pub async fn stopping(mut self, why: &str) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!(
                "stopping ({why}): committing received punches, finishing requests in flight"
            )),
        ]);
    }
}

type Probe = Pin<Box<dyn Future<Output = Result<Counts, QueueError>> + Send>>;

/// Where the supervisor's notifications go ([`notify`], or a test's collector).
type Notifier = Arc<dyn Fn(&[NotifyState<'_>]) + Send + Sync>;

async fn supervise(
    parts: Parts,
    limits: Limits,
    watchdog: Option<Duration>,
    mut last_status: String,
    stop: CancellationToken,
    out: Notifier,
) {
    let every = watchdog.map(|w| w / 2).unwrap_or(STATUS_INTERVAL);
    let every = every.max(Duration::from_millis(10));
    // how long a tick waits for the database's answer before deciding (a healthy one answers in ms)
    let probe_wait = (every / 2).min(Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = SenderTracker::new(
        Instant::now(),
        parts.sender_stats.heartbeat.load(Ordering::Relaxed),
        sender_activity(&parts.sender_stats),
    );
    let mut probe: Option<(Instant, Probe)> = None;
    let mut counts: Option<Counts> = None;
    let mut was_stuck = false;
    let mut db_error_logged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let (since, fut) = probe.get_or_insert_with(|| {
            let q = parts.queue.clone();
            (Instant::now(), Box::pin(async move { q.counts().await }))
        });
        let answer = tokio::select! {
            a = tokio::time::timeout(probe_wait, fut) => a,
            _ = stop.cancelled() => return,
        };
        let db = match answer {
            Err(_) => DbState::Waiting { since: *since },
            Ok(Ok(c)) => {
                counts = Some(c);
                probe = None;
                db_error_logged = false;
                DbState::Answered
            }
            Ok(Err(QueueError::Closed)) => {
                counts = None;
                probe = None;
                DbState::Gone
            }
            Ok(Err(e)) => {
                // an answer all the same: the database thread is alive
                if !db_error_logged {
                    tracing::warn!(error = %e, "watchdog: the queue answers with an error");
                    db_error_logged = true;
                }
                probe = None;
                DbState::Answered
            }
        };
        let now = Instant::now();
        tracker.observe(
            now,
            now_ms(),
            parts.sender_stats.heartbeat.load(Ordering::Relaxed),
            sender_activity(&parts.sender_stats),
        );
        let health = judge(now, db, tracker.active_at(), &limits);
        let line = match &health {
            Health::Progressing => {
                if was_stuck {
                    tracing::info!("watchdog: the pipeline makes progress again");
                    was_stuck = false;
                }
                if watchdog.is_some() {
                    out(&[NotifyState::Watchdog]);
                }
                let fresh = matches!(db, DbState::Answered);
                running_status(&parts, "running", counts.as_ref().filter(|_| fresh))
            }
            Health::Stuck(parts_stuck) => {
                let what: Vec<String> = parts_stuck.iter().map(ToString::to_string).collect();
                let what = what.join("; ");
                if !was_stuck {
                    if watchdog.is_some() {
                        tracing::error!(
                            stuck = %what,
                            "watchdog: the pipeline is stuck; no more pings, so systemd restarts clockbridge (Restart=on-failure)"
                        );
                    } else {
                        tracing::error!(
                            stuck = %what,
                            "watchdog: the pipeline is stuck (no systemd watchdog configured: restart clockbridge)"
                        );
                    }
                    was_stuck = true;
                }
                format!("stuck: {what}")
            }
        };
        if line != last_status {
            out(&[NotifyState::Status(&line)]);
            last_status = line;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::StateCounts;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn defaults() -> Limits {
        Limits::new(S(60), S(15))
    }

    #[test]
    fn limits_cover_every_legitimate_wait_of_the_sender() {
        let l = defaults();
        assert_eq!(l.db_answer, S(30));
        // the app-level pause (60 s) and 4 × 15 s requests, plus the database limit and slack
        assert_eq!(l.sender_idle, S(95));
        // a long app-level pause dominates
        assert_eq!(Limits::new(S(600), S(15)).sender_idle, S(635));
        // so does a long request timeout (4 × 300 s)
        assert_eq!(Limits::new(S(60), S(300)).sender_idle, S(1235));
        // short settings never go below the rate-limit pause
        let short = Limits::new(S(1), S(1));
        assert!(short.sender_idle >= RATE_LIMIT_PAUSE_MAX + DB_ANSWER_LIMIT);
        assert!(short.sender_idle > IDLE_RECHECK && short.sender_idle > SENDER_DB_BACKOFF_MAX);
    }

    #[test]
    fn database_answered_and_sender_recent_is_progress() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        assert_eq!(
            judge(now, DbState::Answered, now - S(4), &defaults()),
            Health::Progressing
        );
    }

    #[test]
    fn a_sender_paused_for_the_app_error_pause_is_still_progress() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        // paused 60 s by a credential error, then a slow database answer: within 95 s
        assert_eq!(
            judge(now, DbState::Answered, now - S(94), &defaults()),
            Health::Progressing
        );
    }

    #[test]
    fn a_database_question_waiting_within_the_limit_is_still_progress() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        let db = DbState::Waiting { since: now - S(29) };
        assert_eq!(judge(now, db, now, &defaults()), Health::Progressing);
    }

    #[test]
    fn a_database_question_unanswered_past_the_limit_is_stuck() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        let db = DbState::Waiting { since: now - S(31) };
        let Health::Stuck(parts) = judge(now, db, now, &defaults()) else {
            panic!("not stuck")
        };
        assert_eq!(
            parts,
            vec![Stuck::Database {
                waited: S(31),
                limit: S(30)
            }]
        );
        assert!(parts[0].to_string().contains("database thread"));
    }

    #[test]
    fn a_stopped_database_thread_is_stuck_at_once() {
        let now = Instant::now();
        assert_eq!(
            judge(now, DbState::Gone, now, &defaults()),
            Health::Stuck(vec![Stuck::DatabaseGone])
        );
    }

    #[test]
    fn a_sender_idle_past_its_limit_is_stuck_and_named() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        let Health::Stuck(parts) = judge(now, DbState::Answered, now - S(96), &defaults()) else {
            panic!("not stuck")
        };
        assert_eq!(
            parts,
            vec![Stuck::Sender {
                idle: S(96),
                limit: S(95)
            }]
        );
        assert!(parts[0].to_string().starts_with("the sender"));
    }

    #[test]
    fn both_parts_stuck_are_both_named() {
        let t0 = Instant::now();
        let now = t0 + S(500);
        let db = DbState::Waiting { since: now - S(40) };
        let Health::Stuck(parts) = judge(now, db, now - S(200), &defaults()) else {
            panic!("not stuck")
        };
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn a_sender_active_after_now_is_not_idle() {
        // observations may race the decision by a few microseconds
        let now = Instant::now();
        assert_eq!(
            judge(now, DbState::Answered, now + S(1), &defaults()),
            Health::Progressing
        );
    }

    #[test]
    fn tracker_dates_a_heartbeat_by_its_wall_clock_age() {
        let t0 = Instant::now();
        let mut t = SenderTracker::new(t0, 1_000_000, 0);
        // 30 s later the heartbeat turned 3 s ago
        t.observe(t0 + S(30), 1_030_000, 1_027_000, 0);
        assert_eq!(t.active_at(), t0 + S(27));
        // nothing changes for 100 s: the last activity stays where it was
        t.observe(t0 + S(130), 1_130_000, 1_027_000, 0);
        assert_eq!(t.active_at(), t0 + S(27));
        assert!(matches!(
            judge(t0 + S(130), DbState::Answered, t.active_at(), &defaults()),
            Health::Stuck(_)
        ));
    }

    #[test]
    fn tracker_is_not_fooled_by_wall_clock_jumps() {
        let t0 = Instant::now();
        let mut t = SenderTracker::new(t0, 1_000_000, 0);
        // the wall clock jumped a year ahead (NTP after boot): the new heartbeat looks a year old to
        // the wall clock, but it changed since the last look, 30 s ago
        t.observe(t0 + S(30), 1_000_000 + 365 * 86_400_000, 1_025_000, 0);
        assert_eq!(t.active_at(), t0);
        // a heartbeat written after the jump is dated normally
        let base = 1_000_000 + 365 * 86_400_000;
        t.observe(t0 + S(60), base + 30_000, base + 28_000, 0);
        assert_eq!(t.active_at(), t0 + S(58));
        // the clock jumped back: a heartbeat "in the future" is dated now, not later
        t.observe(t0 + S(90), 0, base + 60_000, 0);
        assert_eq!(t.active_at(), t0 + S(90));
    }

    #[test]
    fn tracker_counts_requests_and_replies_as_activity() {
        let t0 = Instant::now();
        // the claim loop waits for a permit (heartbeat frozen) while requests keep finishing
        let mut t = SenderTracker::new(t0, 1_000_000, 10);
        t.observe(t0 + S(30), 1_030_000, 1_000_000, 12);
        t.observe(t0 + S(60), 1_060_000, 1_000_000, 14);
        t.observe(t0 + S(90), 1_090_000, 1_000_000, 16);
        t.observe(t0 + S(120), 1_120_000, 1_000_000, 18);
        assert_eq!(t.active_at(), t0 + S(120));
        assert_eq!(
            judge(t0 + S(120), DbState::Answered, t.active_at(), &defaults()),
            Health::Progressing
        );
    }

    /// Runs the supervisor on a real queue with a 200 ms watchdog; returns what it sends.
    fn supervised(
        limits: Limits,
    ) -> (
        Arc<SenderStats>,
        std::sync::mpsc::Receiver<String>,
        CancellationToken,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = Queue::open(&dir.path().join("queue.db")).unwrap();
        let sender_stats = Arc::new(SenderStats::default());
        sender_stats.heartbeat.store(now_ms(), Ordering::Relaxed);
        let parts = Parts {
            queue,
            devices: Arc::new(Default::default()),
            sender_stats: sender_stats.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let out: Notifier = Arc::new(move |states: &[NotifyState<'_>]| {
            for s in states {
                let _ = tx.lock().unwrap().send(s.to_string());
            }
        });
        let stop = CancellationToken::new();
        tokio::spawn(supervise(
            parts,
            limits,
            Some(Duration::from_millis(200)),
            String::new(),
            stop.clone(),
            out,
        ));
        (sender_stats, rx, stop, dir)
    }

    /// Receives notifications until one satisfies `pred`; fails after 30 s with what came.
    fn until(rx: &std::sync::mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + S(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(m) => {
                    let done = pred(&m);
                    seen.push(m);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("condition not met; received {seen:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pings_stop_while_the_sender_is_stuck_and_resume_when_it_moves() {
        let limits = Limits {
            db_answer: S(30),
            sender_idle: Duration::from_millis(1500),
        };
        let (stats, rx, stop, _dir) = supervised(limits);
        let rx = tokio::task::spawn_blocking(move || {
            // healthy: pings
            until(&rx, |m| m == "WATCHDOG=1");
            until(&rx, |m| m == "WATCHDOG=1");
            // the sender never turns again: a stuck status, and no ping after it
            until(&rx, |m| m.starts_with("STATUS=stuck: the sender"));
            rx
        })
        .await
        .unwrap();
        // several ticks (100 ms each) pass without a ping
        let quiet_until = Instant::now() + Duration::from_millis(500);
        while let Ok(m) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now())) {
            assert_ne!(m, "WATCHDOG=1", "pinged while stuck");
        }
        // a request starts: the sender is alive again
        stats.requests.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let seen = until(&rx, |m| m.starts_with("STATUS=running: 0 devices"));
            assert!(seen.contains(&"WATCHDOG=1".to_string()), "{seen:?}");
            until(&rx, |m| m == "WATCHDOG=1");
        })
        .await
        .unwrap();
        stop.cancel();
    }

    #[test]
    fn status_line_says_what_it_is_doing() {
        let counts = Counts {
            total: StateCounts {
                pending: 12,
                in_flight: 2,
                delivered: 300,
                dead: 1,
                unmapped: 0,
            },
            ..Counts::default()
        };
        assert_eq!(
            status_line("ready", 3, 2, Some(&counts), None),
            "ready: 3 devices (2 online), queue 12 pending, 2 in flight, 1 dead, 0 unmapped; uploads ok"
        );
        assert_eq!(
            status_line("running", 1, 0, None, Some("check the App Secret")),
            "running: 1 device (0 online), queue not answering; uploads blocked: check the App Secret"
        );
    }
}
