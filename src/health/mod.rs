//! The one health model of the running daemon: what is wrong with it now, judged in one place and
//! shown everywhere: `/healthz` ([`crate::http`]), the systemd watchdog and the `STATUS=` line
//! ([`crate::service`]), and the status snapshot that `clockbridge status` and `/status` read
//! ([`crate::snapshot`]).
//!
//! [`Monitor::assess`] observes the live parts (the queue's database thread and its [`Faults`], the
//! ingest writer's storage gate, the senders, the inbox) and [`judge`], a pure function of that
//! [`Observation`], returns a [`Verdict`]: the list of [`Condition`]s that hold. Each condition says
//! what is wrong and what to do, and whether a restart is the remedy:
//!
//! | condition | when | restart (watchdog stops pinging) |
//! | --- | --- | --- |
//! | `database_stuck` | the queue's database thread has stopped, or left a question unanswered for more than [`DB_ANSWER_LIMIT`] | yes |
//! | `sender_stuck` | the punch sender neither turned its claim loop nor started or finished a request for [`Limits::sender_idle`] | yes |
//! | `storage_failing` | commits fail (disk full, I/O error, read-only): the clocks are no longer read | no: a restart frees no space |
//! | `queue_damaged` | SQLite found the queue file damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`); held until the process ends | no: a restart does not repair the file |
//! | `upstream_timeouts` | a sender's last [`UPSTREAM_TIMEOUT_STREAK`] or more requests all timed out (`feishu.request_timeout_secs`) | no |
//! | `sender_blocked` | a sender is paused by an application-level failure (credentials, scope, permission) | no |
//! | `inbox_stopped` | an inbox directory's `done/` or `rejected/` is not a real directory | no |
//! | `starting` | the punch sender has not turned its loop yet | no |
//! | `stopping` | SIGTERM: the daemon is stopping | no |
//!
//! Every condition makes `/healthz` answer 503 and is listed in its body, in `STATUS=` and in
//! `status`. Only the conditions a restart can cure stop the watchdog's pings (systemd then kills and
//! restarts the daemon); the others leave a running daemon that says what is wrong, since killing it
//! would cure nothing and could lose the punches it still holds in memory. Devices that are offline
//! are shown but are no condition: a clock switched off is no reason to fail the daemon.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ingest::Held;
use crate::queue::Faults;
use crate::sender::{SenderSnapshot, IDLE_RECHECK};

mod monitor;
mod track;

pub use monitor::{Monitor, Parts};
pub use track::{sender_activity, DbProbe, DbState, SenderTracker};

/// How long a queue call may wait for the database thread before it counts as stuck: three times the
/// 10 s SQLite busy timeout, so a few statements waiting on another process's write lock are not a
/// failure.
pub const DB_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// The longest rate-limit pause (the classifier clamps `x-ogw-ratelimit-reset` to 1..=60 s).
pub const RATE_LIMIT_PAUSE_MAX: Duration = Duration::from_secs(60);

/// The sender's longest back-off after a failed queue read (200 ms << 7).
pub const SENDER_DB_BACKOFF_MAX: Duration = Duration::from_millis(25_600);

/// Added to the sender's limit for rate limiter spacing and scheduling.
pub const SLACK: Duration = Duration::from_secs(5);

/// Consecutive timed-out requests of one sender that make the `upstream_timeouts` condition.
pub const UPSTREAM_TIMEOUT_STREAK: u64 = 3;

/// The limits of the checks that restart the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for an answer of the database thread.
    pub db_answer: Duration,
    /// Longest time without sender activity (loop turn, request started, reply received).
    pub sender_idle: Duration,
}

impl Limits {
    /// The limits for an application-level pause and a request timeout: the sender's longest
    /// legitimate wait between two signs of activity is the largest of [`IDLE_RECHECK`] (an idle
    /// claim loop re-checks the queue at least this often), `sender.app_error_pause_secs` (every
    /// request pauses after a credential or scope error), [`RATE_LIMIT_PAUSE_MAX`], 4 ×
    /// `feishu.request_timeout_secs` (a token fetch, the request, a token re-fetch and the re-send,
    /// each up to the timeout) and [`SENDER_DB_BACKOFF_MAX`]; plus [`DB_ANSWER_LIMIT`] (the sender's
    /// own queue calls may each be that slow) and [`SLACK`]. With the defaults: 60 + 30 + 5 = 95 s.
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

/// What a condition is about (its stable name in JSON: `storage_failing`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    DatabaseStuck,
    SenderStuck,
    StorageFailing,
    QueueDamaged,
    UpstreamTimeouts,
    SenderBlocked,
    InboxStopped,
    Starting,
    Stopping,
}

impl ConditionKind {
    /// Every kind, in the order of the table above.
    pub const ALL: [ConditionKind; 9] = [
        ConditionKind::DatabaseStuck,
        ConditionKind::SenderStuck,
        ConditionKind::StorageFailing,
        ConditionKind::QueueDamaged,
        ConditionKind::UpstreamTimeouts,
        ConditionKind::SenderBlocked,
        ConditionKind::InboxStopped,
        ConditionKind::Starting,
        ConditionKind::Stopping,
    ];

    /// The stable name (as in JSON and the `/metrics` label).
    pub fn name(self) -> &'static str {
        match self {
            ConditionKind::DatabaseStuck => "database_stuck",
            ConditionKind::SenderStuck => "sender_stuck",
            ConditionKind::StorageFailing => "storage_failing",
            ConditionKind::QueueDamaged => "queue_damaged",
            ConditionKind::UpstreamTimeouts => "upstream_timeouts",
            ConditionKind::SenderBlocked => "sender_blocked",
            ConditionKind::InboxStopped => "inbox_stopped",
            ConditionKind::Starting => "starting",
            ConditionKind::Stopping => "stopping",
        }
    }
}

/// One thing wrong with the daemon now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: ConditionKind,
    /// What it concerns: a sender's record kind, an inbox key (absent for the daemon as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Since when it holds (Unix seconds), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// What is wrong and what to do, in one sentence.
    pub message: String,
    /// A restart is the remedy: the watchdog stops pinging while it holds.
    pub restart: bool,
}

/// The verdict: every condition that holds (none: healthy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub conditions: Vec<Condition>,
}

impl Verdict {
    /// No condition holds: `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Started, not stopping, and the queue's database thread answers.
    pub fn ready(&self) -> bool {
        !self.conditions.iter().any(|c| {
            matches!(
                c.kind,
                ConditionKind::Stopping | ConditionKind::DatabaseStuck
            )
        })
    }

    /// Some condition is cured only by a restart: the watchdog stops pinging.
    pub fn restart(&self) -> bool {
        self.conditions.iter().any(|c| c.restart)
    }

    /// The conditions' messages.
    pub fn problems(&self) -> Vec<String> {
        self.conditions.iter().map(|c| c.message.clone()).collect()
    }

    /// The messages of the conditions for which `pick` holds, joined with "; ".
    pub fn summary(&self, pick: impl Fn(&Condition) -> bool) -> String {
        let v: Vec<&str> = self
            .conditions
            .iter()
            .filter(|c| pick(c))
            .map(|c| c.message.as_str())
            .collect();
        v.join("; ")
    }
}

/// Everything [`judge`] looks at, observed at one moment.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now: Instant,
    /// The daemon is stopping.
    pub stopping: bool,
    /// The queue's database thread.
    pub db: DbState,
    /// The punch sender's last activity ([`SenderTracker`]).
    pub sender_active_at: Instant,
    /// The punch sender's claim loop has turned at least once.
    pub sender_started: bool,
    /// The queue file: damage, writes failing.
    pub faults: Faults,
    /// The ingest writer's failing commits (its storage gate is closed).
    pub held: Option<Held>,
    /// Every sender, by record kind (the punch lane's first).
    pub senders: Vec<(String, SenderSnapshot)>,
    /// The inbox directories' conditions, by `[inbox]` key.
    pub inbox: Vec<(String, String)>,
    /// The queue file, for messages.
    pub queue_path: String,
    /// `feishu.request_timeout_secs`, for messages.
    pub request_timeout_secs: u64,
}

/// Unix ms as an RFC 3339 time (UTC, seconds), for messages.
pub fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The conditions that hold in `o` (see the module documentation), those a restart cures first.
pub fn judge(o: &Observation, limits: &Limits) -> Verdict {
    let mut c = Vec::new();
    let mut add = |kind, subject: Option<&str>, since_ms: Option<i64>, message: String| {
        let restart = matches!(
            kind,
            ConditionKind::DatabaseStuck | ConditionKind::SenderStuck
        );
        c.push(Condition {
            kind,
            subject: subject.map(str::to_string),
            since: since_ms.map(|ms| ms.div_euclid(1000)),
            message,
            restart,
        });
    };
    match o.db {
        DbState::Answered => {}
        DbState::Gone => add(
            ConditionKind::DatabaseStuck,
            None,
            None,
            "the queue's database thread has stopped: restart clockbridge".into(),
        ),
        DbState::Waiting { since } => {
            let waited = o.now.saturating_duration_since(since);
            if waited > limits.db_answer {
                add(
                    ConditionKind::DatabaseStuck,
                    None,
                    None,
                    format!(
                        "the queue's database thread has not answered for {} s (limit {} s): the disk or the queue file hangs",
                        waited.as_secs(),
                        limits.db_answer.as_secs()
                    ),
                );
            }
        }
    }
    let idle = o.now.saturating_duration_since(o.sender_active_at);
    if idle > limits.sender_idle {
        add(
            ConditionKind::SenderStuck,
            None,
            None,
            format!(
                "the sender has not turned its claim loop, started or finished a request for {} s (limit {} s)",
                idle.as_secs(),
                limits.sender_idle.as_secs()
            ),
        );
    }
    let q = &o.queue_path;
    match (&o.held, &o.faults.writes_failing) {
        (Some(h), _) => add(
            ConditionKind::StorageFailing,
            None,
            Some(h.since_ms),
            format!(
                "storage: queue {q} refuses commits since {} ({}): free space on its disk or fix the I/O error; {} punches wait in memory and reading from the clocks is paused until a commit succeeds",
                at(h.since_ms),
                h.error,
                h.punches
            ),
        ),
        (None, Some(f)) => add(
            ConditionKind::StorageFailing,
            None,
            Some(f.since_ms),
            format!(
                "storage: queue {q} refuses writes since {} ({}): free space on its disk or fix the I/O error; outcomes and new records wait until a write succeeds",
                at(f.since_ms),
                f.error
            ),
        ),
        (None, None) => {}
    }
    if let Some(f) = &o.faults.damaged {
        add(
            ConditionKind::QueueDamaged,
            None,
            Some(f.since_ms),
            format!(
                "queue {q} is damaged ({}, first seen {}, {} failed calls): rows on the damaged pages are neither sent nor changed: stop clockbridge and recover the file with `sqlite3 {q} '.recover' | sqlite3 {q}.recovered` (see the log and the README, Troubleshooting)",
                f.error,
                at(f.since_ms),
                f.count
            ),
        );
    }
    for (kind, s) in &o.senders {
        if s.timeouts_in_a_row >= UPSTREAM_TIMEOUT_STREAK {
            add(
                ConditionKind::UpstreamTimeouts,
                Some(kind),
                s.timing_out_since.map(|t| t * 1000),
                format!(
                    "sender {kind}: its last {} requests got no answer within feishu.request_timeout_secs = {} s{}: the platform, or the network to it, is slower than that; the records stay queued and are retried: check the network path, or raise feishu.request_timeout_secs",
                    s.timeouts_in_a_row,
                    o.request_timeout_secs,
                    s.timing_out_since
                        .map(|t| format!(" (since {})", at(t * 1000)))
                        .unwrap_or_default()
                ),
            );
        }
    }
    for (kind, s) in &o.senders {
        if let Some(reason) = &s.blocked_reason {
            add(
                ConditionKind::SenderBlocked,
                Some(kind),
                None,
                format!("sender {kind} blocked, its records stay queued: {reason}"),
            );
        }
    }
    for (key, why) in &o.inbox {
        add(
            ConditionKind::InboxStopped,
            Some(key),
            None,
            format!("inbox.{key}: {why}; no file of this directory is taken until then"),
        );
    }
    if !o.sender_started {
        add(
            ConditionKind::Starting,
            None,
            None,
            "the sender has not turned its loop yet (starting)".into(),
        );
    }
    if o.stopping {
        add(
            ConditionKind::Stopping,
            None,
            None,
            "the daemon is stopping".into(),
        );
    }
    c.sort_by_key(|c| !c.restart);
    Verdict { conditions: c }
}

#[cfg(test)]
mod tests;
