//! The durable outbox: every record bound for the platform lives here, in SQLite, from the moment a
//! source hands it over until the platform has accepted it (and for `queue.retention_days` after).
//!
//! # Storage
//! One table, `outbox`, one row per record (punches; approval items, report rows and accrual updates share
//! it through the `kind` column). A row holds the record exactly as it will be sent (`payload`, JSON),
//! its idempotent key (`idem`) and unique key (`ukey`: the idempotent key behind a time-ordered
//! prefix, UNIQUE per kind, so a re-read record is a no-op and inserts append to the index), the device and device user it came from, and its
//! delivery state. The database runs in WAL mode with `synchronous=FULL`; both pragmas are read back
//! after being set, and opening fails if either did not take effect (SQLite ignores a misspelt pragma).
//! The schema is versioned with `rusqlite_migration` (`PRAGMA user_version`); a file written by a newer
//! clockbridge is refused, never downgraded.
//!
//! # States
//! ```text
//!             insert                   claim                 2xx + code 0
//!  source ──────────────► pending ───────────────► in_flight ─────────────► delivered ──► pruned
//!             │  ▲  ▲                                 │  │                   (after retention)
//!             │  │  └────── transient failure ────────┘  │ rejected for good
//!             │  │          (next_attempt_at = backoff)   ▼
//!             │  └── mapping gains the user ── unmapped   dead ── operator retries ──► pending
//!             └─► unmapped (no mapping) / dead (before 2022, far future)
//! ```
//! `attempts`, `next_attempt_at`, `first_attempt_at`, `last_attempt_at` and the last platform error
//! (`err_code`, `err_msg`, `err_log_id`) travel with the row; a dead row also has a `dead_reason`.
//!
//! # What is committed when, and why a crash loses nothing
//! - **Insert**: a group of records is inserted in one transaction; the source is told "committed" only
//!   after `COMMIT` returns (fsync of the WAL with `synchronous=FULL`). A crash before that loses only
//!   records no one was told about; a clock that needs an acknowledgement has not received it.
//! - **Claim**: one transaction moves up to 50 due `pending` rows to `in_flight` and returns them:
//!   live punches first, then the backlog, which keeps at least half of each batch while it has
//!   due rows (the order and its bound: `claim`). A crash
//!   after the claim leaves them `in_flight`; [`Queue::open`] puts every `in_flight` row back to
//!   `pending`, so they are sent again. That re-send is harmless: every record carries its idempotent id.
//! - **Outcome**: after the platform answers, one transaction moves the claimed rows to `delivered`,
//!   `dead` or back to `pending`. Each update is guarded by `status = in_flight`, and the number of rows
//!   changed is checked: a row is never acknowledged twice or acknowledged without having been claimed.
//!   A crash between the platform's answer and this commit leaves the rows `in_flight`: re-sent on start.
//! - **Counts** per kind, device and state are kept in `counts` (by [`Queue::insert`] in the inserting
//!   transaction, and by triggers on state changes and deletes), so `status` is O(devices),
//!   not O(rows), with millions of rows. Claims and the next-due lookup use the `(kind, status,
//!   next_attempt_at, id)` index, and live claims the partial index of pending live rows; the
//!   backlog's oldest event time (`status`) is read from the partial index of pending rows, which
//!   holds the event time (a scan of its entries: O(pending rows), no row read).
//!
//! # Threading
//! All SQLite work runs on one dedicated thread that owns the connection; async callers send closures
//! over a channel and await a oneshot reply (`Queue::call`, private to the queue). No SQLite call ever runs on the async
//! runtime's threads.
//!
//! # Files
//! `open` (what may be opened or created, pragmas, migrations, the database thread), `lock` (one
//! daemon per queue), `insert` (the one
//! insert path), `claim`, `outcome` (acknowledgements and pruning),
//! `remap` (what the queue knows of a kind; unmapped rows), `dlq` (dead letters), `counts`
//! (the read model behind `status` and `/metrics`), `unmapped` (the device users whose rows wait
//! for a mapping, with the names their devices know), `runtime` (the daemon's snapshots), `store`
//! (each device's source state and user names), `faults` (what the file did wrong: damage, writes
//! failing; read by the health model), `reconcile` (the rows of a time range, and putting rows the
//! platform does not show back to pending).

mod claim;
mod counts;
mod dlq;
pub mod faults;
mod insert;
pub mod lock;
mod migrations;
mod open;
mod outcome;
mod reconcile;
mod remap;
mod runtime;
pub mod store;
mod unmapped;

pub use claim::live_cap;
pub use counts::{
    read_backlog, read_counts, read_oldest_outstanding, BacklogReading, Counts, QueueReading,
    StateCounts,
};
pub use dlq::{read_dead_letters, DeadLetter, DeadSelection, RetryReport};
pub use faults::{Fault, Faults};
pub use insert::LATEST_SUFFIX_LEN;
pub use open::{open_read_only, side_file};
pub use reconcile::RangeRow;
pub use remap::{KindRules, KindsOf, Remap};
pub use runtime::read_runtime;
pub use unmapped::{read_waiting_users, Waiting, WaitingUser};

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A queue failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database could not be opened or is not a clockbridge queue.
    #[error("queue {path}: cannot open: {reason}")]
    Open { path: String, reason: String },
    /// A pragma did not take effect.
    #[error("queue {path}: {pragma} is {actual:?}, expected {expected:?}: the filesystem may not support it (WAL needs a local disk, not NFS)")]
    Pragma {
        path: String,
        pragma: &'static str,
        actual: String,
        expected: &'static str,
    },
    /// The schema could not be brought up to date.
    #[error("queue {path}: schema migration failed: {reason}: keep the file and report this")]
    Migration { path: String, reason: String },
    /// An SQLite statement failed.
    #[error("queue: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An acknowledgement touched fewer rows than it named: they were not in flight.
    #[error("queue: {expected} rows acknowledged but only {changed} were in flight")]
    NotClaimed { expected: usize, changed: usize },
    /// The database thread has stopped.
    #[error("queue: the database thread has stopped")]
    Closed,
}

type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Delivery state of a row (stored as an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending = 0,
    InFlight = 1,
    Delivered = 2,
    Dead = 3,
    Unmapped = 4,
}

impl Status {
    pub fn from_i64(v: i64) -> Option<Status> {
        Some(match v {
            0 => Status::Pending,
            1 => Status::InFlight,
            2 => Status::Delivered,
            3 => Status::Dead,
            4 => Status::Unmapped,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InFlight => "in_flight",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Unmapped => "unmapped",
        }
    }
}

/// The raw status of a dead letter an operator dropped (`dlq drop`). Its row stays as a tombstone,
/// outside [`Status`]: never sent, listed or counted (its copy is in the `dropped` table), but its
/// unique key keeps the same record, read again, out of the queue.
pub const STATUS_DROPPED: i64 = 5;

/// A record to insert.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub kind: &'static str,
    /// The idempotent key sent to the platform.
    pub idem: String,
    /// The queue's unique key: the idempotent key behind a prefix that sorts by event time (for
    /// punches, the device-local time the key is derived from). Exactly as unique as `idem`, but new
    /// keys land at the end of the index instead of on random pages, which keeps inserts fast with
    /// millions of rows.
    pub ukey: String,
    pub device_id: String,
    /// The device user id (for punches).
    pub subject: String,
    pub user_id: Option<String>,
    /// Unix seconds of the event (check_time).
    pub event_time: i64,
    pub payload: String,
    pub status: Status,
    /// For records dead on arrival: (reason, message).
    pub dead: Option<(String, String)>,
    /// Claimed before the backlog (see the claim order in the module doc): a punch read as it
    /// happens ([`crate::punch::LIVE_WINDOW_SECS`]). Decided once, at insert; HR records never are.
    pub live: bool,
}

/// What an insert did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertStatus {
    Pending,
    Unmapped,
    Dead(String),
    /// Already in the queue: nothing changed.
    Duplicate,
}

/// A claimed row, ready to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub idem: String,
    pub device_id: String,
    pub user_id: Option<String>,
    pub payload: String,
    /// Attempts including this one.
    pub attempts: i64,
}

/// The platform's answer that made a row fail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: Option<i64>,
    pub message: String,
    pub log_id: Option<String>,
}

/// What opening the queue found.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenReport {
    /// Rows that were in flight when the previous process stopped; now pending again.
    pub requeued_in_flight: usize,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the queue; cheap to clone. The database thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct Queue {
    tx: std::sync::mpsc::Sender<Job>,
    path: Arc<PathBuf>,
    /// What the file did wrong since it was opened (every call is recorded; see [`faults`]).
    faults: Arc<faults::FaultLog>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Queue {
    /// Runs `f` on the database thread and returns its result. Crate-private: everything outside
    /// the queue goes through its typed methods (the one caller outside `queue` is the ZKTeco
    /// source's watermark table).
    ///
    /// Its outcome is recorded in the queue's [`Faults`] (a damaged file, writes failing).
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (faults, path) = (self.faults.clone(), self.path.clone());
        self.call_unrecorded(move |conn| {
            let before = conn.total_changes();
            let r = f(conn);
            faults.record(&path, &r, conn.total_changes() != before);
            r
        })
        .await
    }

    /// [`Queue::call`] without recording the outcome in [`Faults`] (the status snapshot: a tiny
    /// write that may succeed on a full disk proves nothing about the queue's rows).
    async fn call_unrecorded<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// What the queue file did wrong since it was opened: damage (for good), writes failing (until
    /// one succeeds). Read by the health model.
    pub fn faults(&self) -> Faults {
        self.faults.get()
    }

    /// Asks the database thread a question that needs no database: `on_answer` runs on that thread
    /// when it reaches the question (after every job sent before it), even if the caller stopped
    /// waiting. Returns once it ran. Used to tell a busy thread from a stuck one (`/healthz`).
    pub async fn ping(&self, on_answer: impl FnOnce() + Send + 'static) -> Result<()> {
        self.call(move |_| {
            on_answer();
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
