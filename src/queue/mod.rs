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
//! - **Claim**: one statement moves up to 50 due `pending` rows to `in_flight` and returns them. A crash
//!   after the claim leaves them `in_flight`; [`Queue::open`] puts every `in_flight` row back to
//!   `pending`, so they are sent again. That re-send is harmless: every record carries its idempotent id.
//! - **Outcome**: after the platform answers, one transaction moves the claimed rows to `delivered`,
//!   `dead` or back to `pending`. Each update is guarded by `status = in_flight`, and the number of rows
//!   changed is checked: a row is never acknowledged twice or acknowledged without having been claimed.
//!   A crash between the platform's answer and this commit leaves the rows `in_flight`: re-sent on start.
//! - **Counts** per kind, device and state are kept in `counts` (by [`Queue::insert`] in the inserting
//!   transaction, and by triggers on state changes and deletes), so `status` is O(devices),
//!   not O(rows), with millions of rows. Claims and the next-due lookup use the `(kind, status,
//!   next_attempt_at, id)` index.
//!
//! # Threading
//! All SQLite work runs on one dedicated thread that owns the connection; async callers send closures
//! over a channel and await a oneshot reply ([`Queue::call`]). No SQLite call ever runs on the async
//! runtime's threads.

mod migrations;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::mapping::Mapping;
use crate::punch::Normalised;

/// Record kinds in the outbox.
pub const KIND_USER_FLOW: &str = "user_flow";
/// One approval item (leave, outing, overtime, trip) for `user_approvals`.
pub const KIND_USER_APPROVAL: &str = "user_approval";
/// One archived report row for `archive_rule/upload_report`.
pub const KIND_ARCHIVE_REPORT: &str = "archive_report";
/// One leave accrual update for `leave_accrual_record` PATCH.
pub const KIND_LEAVE_ACCRUAL: &str = "leave_accrual";
/// Every kind, as `status` lists them.
pub const KINDS: [&str; 4] = [
    KIND_USER_FLOW,
    KIND_USER_APPROVAL,
    KIND_ARCHIVE_REPORT,
    KIND_LEAVE_ACCRUAL,
];

/// Length of the suffix [`Queue::insert_latest`] puts behind an ordering key in `ukey`:
/// `#` + 32 hex digits of the value's hash + `#` + an 8-digit generation.
pub const LATEST_SUFFIX_LEN: usize = 42;

/// Whether rows of `kind` carry an ordering key (values that overwrite each other: a newer one is
/// never sent before an older one of the same key).
pub fn is_ordered_kind(kind: &str) -> bool {
    kind == KIND_ARCHIVE_REPORT || kind == KIND_LEAVE_ACCRUAL
}

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
}

impl NewRecord {
    /// The row for a normalised punch.
    pub fn from_punch(n: &Normalised) -> NewRecord {
        let user_id = (!n.flow.user_id.is_empty()).then(|| n.flow.user_id.clone());
        let (status, dead) = match (n.unsendable, &user_id) {
            (Some(u), _) => (
                Status::Dead,
                Some((u.reason().to_string(), u.message().to_string())),
            ),
            (None, None) => (Status::Unmapped, None),
            (None, Some(_)) => (Status::Pending, None),
        };
        NewRecord {
            kind: KIND_USER_FLOW,
            idem: n.idempotent_key.clone(),
            ukey: format!(
                "{}{}",
                n.punch.local_time.format("%Y%m%d%H%M%S"),
                n.idempotent_key
            ),
            device_id: n.punch.device_id.clone(),
            subject: n.punch.device_user_id.clone(),
            user_id,
            event_time: n.check_time,
            payload: serde_json::to_string(&n.flow).unwrap_or_default(),
            status,
            dead,
        }
    }
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

/// Counts of rows per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub unmapped: u64,
}

impl StateCounts {
    fn add(&mut self, status: Status, n: u64) {
        match status {
            Status::Pending => self.pending += n,
            Status::InFlight => self.in_flight += n,
            Status::Delivered => self.delivered += n,
            Status::Dead => self.dead += n,
            Status::Unmapped => self.unmapped += n,
        }
    }
    /// Rows not yet settled (pending or in flight).
    pub fn outstanding(&self) -> u64 {
        self.pending + self.in_flight
    }
}

/// Counts overall, per kind and per device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: StateCounts,
    pub by_kind: HashMap<String, StateCounts>,
    pub by_device: HashMap<String, StateCounts>,
    /// Delivered rows already pruned (so delivered + pruned = all ever delivered).
    pub pruned_delivered: u64,
}

/// A dead letter, as listed by `status`. Every time is Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub kind: String,
    pub device_id: String,
    pub device_user_id: String,
    pub event_time: i64,
    pub reason: Option<String>,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub log_id: Option<String>,
    pub attempts: i64,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub created_at: i64,
}

/// Which dead letters a `dlq` command acts on: all that match every given filter.
#[derive(Debug, Clone, Default)]
pub struct DeadSelection {
    /// These rows only (`None`: every dead letter).
    pub ids: Option<Vec<i64>>,
    /// Records of this kind (`user_flow`...).
    pub kind: Option<String>,
    /// A platform code (`1220001`) or a reason (`before_2022`, `rejected`, `rejected_record`...).
    pub reason: Option<String>,
}

impl DeadSelection {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.ids
            .as_ref()
            .map(|ids| ids.contains(&d.id))
            .unwrap_or(true)
            && self.kind.as_ref().map(|k| *k == d.kind).unwrap_or(true)
            && self
                .reason
                .as_ref()
                .map(|r| {
                    d.reason.as_deref() == Some(r.as_str())
                        || d.code.map(|c| c.to_string()) == Some(r.clone())
                })
                .unwrap_or(true)
    }
}

/// What a retry of dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Pending again: sent within seconds.
    pub pending: usize,
    /// Their user is no longer in the mapping: waiting as unmapped.
    pub unmapped: usize,
    /// Still not importable (before 2022 or far in the future): left dead.
    pub kept: usize,
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn open_conn(path: &Path) -> Result<Connection> {
    let p = path.display().to_string();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Open {
                path: p.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
    }
    let conn = Connection::open(path).map_err(|e| QueueError::Open {
        path: p.clone(),
        reason: format!("{e}: check the path and its permissions"),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    set_pragmas(&conn, &p)?;
    Ok(conn)
}

fn set_pragmas(conn: &Connection, p: &str) -> Result<()> {
    let not_db = |e: rusqlite::Error| {
        QueueError::Open {
        path: p.to_string(),
        reason: format!(
            "{e}: the file is not a readable clockbridge queue (corrupt?): move it aside and keep it for inspection; clockbridge never recreates it silently"
        ),
    }
    };
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(not_db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Pragma {
            path: p.to_string(),
            pragma: "journal_mode",
            actual: mode,
            expected: "wal",
        });
    }
    // 16 MiB of page cache (allocated only as used): keeps the indexes' upper levels in memory with
    // millions of rows
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA cache_size=-16384;")
        .map_err(not_db)?;
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(not_db)?;
    if sync != 2 {
        return Err(QueueError::Pragma {
            path: p.to_string(),
            pragma: "synchronous",
            actual: sync.to_string(),
            expected: "2 (FULL)",
        });
    }
    Ok(())
}

impl Queue {
    /// Opens (creating if needed) and migrates the queue at `path`, checks the pragmas, puts rows that
    /// were in flight back to pending, and starts the database thread.
    pub fn open(path: &Path) -> Result<(Queue, OpenReport)> {
        Self::open_with(path, true)
    }

    /// Opens the queue for a tool running beside the daemon (`import`): like [`Queue::open`], but rows
    /// in flight are left alone, since they belong to the running daemon.
    pub fn open_beside_daemon(path: &Path) -> Result<Queue> {
        Self::open_with(path, false).map(|(q, _)| q)
    }

    fn open_with(path: &Path, requeue: bool) -> Result<(Queue, OpenReport)> {
        let p = path.display().to_string();
        let mut conn = open_conn(path)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|e| QueueError::Migration {
                path: p.clone(),
                reason: e.to_string(),
            })?;
        let requeued = if requeue {
            conn.execute("UPDATE outbox SET status = 0 WHERE status = 1", [])?
        } else {
            0
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("clockbridge-queue".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| QueueError::Open {
                path: p,
                reason: format!("cannot start the database thread: {e}"),
            })?;
        Ok((
            Queue {
                tx,
                path: Arc::new(path.to_path_buf()),
            },
            OpenReport {
                requeued_in_flight: requeued,
            },
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
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

    /// Inserts records in one transaction. Records whose `(kind, ukey)` is already present are left
    /// untouched and reported as [`InsertStatus::Duplicate`].
    pub async fn insert(&self, records: Arc<Vec<NewRecord>>) -> Result<Vec<InsertStatus>> {
        self.call(move |conn| insert_records(conn, &records, now_ms()))
            .await
    }

    /// Inserts records whose `ukey` is an ordering key (the target a value overwrites: a report row,
    /// a granting record) and whose `idem` is the 32-hex hash of the value, in one transaction. A
    /// record whose value equals the latest queued value of its key is a duplicate (nothing changes);
    /// otherwise it is stored behind the others of its key, with `ukey` =
    /// `KEY#HASH#GENERATION`, and [`Queue::claim_latest`] never sends it before them.
    pub async fn insert_latest(&self, records: Arc<Vec<NewRecord>>) -> Result<Vec<InsertStatus>> {
        self.call(move |conn| insert_latest(conn, &records, now_ms()))
            .await
    }

    /// Claims up to `limit` due pending rows of an ordered kind that share the `device_id` (the
    /// request group) of the oldest due one, skipping rows that have an older pending or in-flight row
    /// of the same ordering key (so values of one key go out one at a time, oldest first).
    pub async fn claim_latest(&self, kind: &'static str, limit: usize) -> Result<Vec<Claimed>> {
        self.call(move |conn| claim_latest(conn, kind, limit, now_ms()))
            .await
    }

    /// Puts every in-flight row of `kind` back to pending. Returns how many.
    pub async fn requeue_in_flight_of(&self, kind: &'static str) -> Result<usize> {
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE outbox SET status = 0 WHERE status = 1 AND kind = ?1",
                params![kind],
            )?)
        })
        .await
    }

    /// Claims up to `limit` due pending rows of `kind` (oldest due first), marking them in flight.
    pub async fn claim(&self, kind: &'static str, limit: usize) -> Result<Vec<Claimed>> {
        self.call(move |conn| claim(conn, kind, limit, now_ms()))
            .await
    }

    /// How many rows of `kind` are due now, counting at most `limit`.
    pub async fn ready_count(&self, kind: &'static str, limit: usize) -> Result<usize> {
        self.call(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?2 LIMIT ?3)",
                )?
                .query_row(params![kind, now_ms(), limit as i64], |r| r.get(0))?;
            Ok(n as usize)
        })
        .await
    }

    /// When the earliest pending row of `kind` becomes due (Unix ms), if any.
    pub async fn next_due(&self, kind: &'static str) -> Result<Option<i64>> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_at) FROM outbox WHERE kind = ?1 AND status = 0",
                )?
                .query_row(params![kind], |r| r.get::<_, Option<i64>>(0))?)
        })
        .await
    }

    /// Marks claimed rows delivered.
    pub async fn mark_delivered(&self, ids: Vec<i64>) -> Result<()> {
        self.call(move |conn| {
            let now = now_ms();
            update_claimed(
                conn,
                "UPDATE outbox SET status = 2, delivered_at = ?2, err_code = NULL, err_msg = NULL, err_log_id = NULL
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| st.execute(params![id, now]),
            )
        })
        .await
    }

    /// Returns claimed rows to pending, due at `next_attempt_at` (Unix ms), recording the error.
    /// With `refund_attempt` the attempt is not counted (the request was never processed, e.g. 429).
    pub async fn mark_retry(
        &self,
        ids: Vec<i64>,
        next_attempt_at: i64,
        error: Option<ErrorInfo>,
        refund_attempt: bool,
    ) -> Result<()> {
        self.call(move |conn| {
            let e = error.as_ref();
            update_claimed(
                conn,
                "UPDATE outbox SET status = 0, next_attempt_at = ?2, attempts = attempts - ?3,
                        err_code = coalesce(?4, err_code), err_msg = coalesce(?5, err_msg),
                        err_log_id = coalesce(?6, err_log_id)
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| {
                    st.execute(params![
                        id,
                        next_attempt_at,
                        refund_attempt as i64,
                        e.and_then(|e| e.code),
                        e.map(|e| e.message.as_str()),
                        e.and_then(|e| e.log_id.as_deref()),
                    ])
                },
            )
        })
        .await
    }

    /// Marks claimed rows dead (rejected for good), with the platform's answer.
    pub async fn mark_dead(&self, ids: Vec<i64>, reason: String, error: ErrorInfo) -> Result<()> {
        self.call(move |conn| {
            update_claimed(
                conn,
                "UPDATE outbox SET status = 3, dead_reason = ?2, err_code = ?3, err_msg = ?4, err_log_id = ?5
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| st.execute(params![id, reason, error.code, error.message, error.log_id]),
            )
        })
        .await
    }

    /// Puts every in-flight row back to pending (used on a clean shutdown for requests that were
    /// abandoned). Returns how many.
    pub async fn requeue_in_flight(&self) -> Result<usize> {
        self.call(|conn| Ok(conn.execute("UPDATE outbox SET status = 0 WHERE status = 1", [])?))
            .await
    }

    /// Gives unmapped rows whose user the mapping now knows their Feishu user id and makes them
    /// pending. Returns how many were released.
    pub async fn release_unmapped(&self, mapping: Arc<Mapping>) -> Result<usize> {
        self.call(move |conn| {
            let pairs: Vec<(String, String)> = conn
                .prepare_cached("SELECT DISTINCT device_id, subject FROM outbox WHERE status = 4")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let tx = conn.transaction()?;
            let mut released = 0;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, user_id = ?3, next_attempt_at = 0,
                        payload = json_set(payload, '$.user_id', ?3, '$.creator_id', ?3)
                     WHERE status = 4 AND device_id = ?1 AND subject = ?2",
                )?;
                for (dev, sub) in pairs {
                    if let Some(uid) = mapping.lookup(&dev, &sub) {
                        released += st.execute(params![dev, sub, uid])?;
                    }
                }
            }
            tx.commit()?;
            Ok(released)
        })
        .await
    }

    /// Counts per state, kind and device (O(devices), from the trigger-maintained table).
    pub async fn counts(&self) -> Result<Counts> {
        self.call(|conn| read_counts(conn)).await
    }

    /// The most recent dead letters (newest first), at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| read_dead_letters(conn, limit)).await
    }

    /// Makes dead rows pending again (all of them with `None`). Returns how many.
    pub async fn retry_dead(&self, ids: Option<Vec<i64>>) -> Result<usize> {
        let sel = DeadSelection {
            ids,
            ..DeadSelection::default()
        };
        Ok(self.retry_dead_selected(sel, None, i64::MAX).await?.pending)
    }

    /// The dead letters `sel` names, oldest first.
    pub async fn list_dead(&self, sel: DeadSelection) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| select_dead(conn, &sel)).await
    }

    /// Retries the dead letters `sel` names. With a `mapping`, punches get their user id from it again
    /// (so a corrected mapping row fixes them; a user no longer mapped makes the punch `unmapped`).
    /// Punches whose time the platform still cannot import (before 2022, or later than
    /// `latest_event_time`) stay dead and are counted as `kept`.
    pub async fn retry_dead_selected(
        &self,
        sel: DeadSelection,
        mapping: Option<Arc<Mapping>>,
        latest_event_time: i64,
    ) -> Result<RetryReport> {
        self.call(move |conn| {
            let rows = select_dead(conn, &sel)?;
            let tx = conn.transaction()?;
            let mut report = RetryReport::default();
            {
                let mut plain = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, next_attempt_at = 0, dead_reason = NULL WHERE id = ?1 AND status = 3",
                )?;
                let mut remap = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, next_attempt_at = 0, dead_reason = NULL, user_id = ?2,
                        payload = json_set(payload, '$.user_id', ?2, '$.creator_id', ?2)
                     WHERE id = ?1 AND status = 3",
                )?;
                let mut unmap = tx.prepare_cached(
                    "UPDATE outbox SET status = 4, next_attempt_at = 0, dead_reason = NULL, user_id = NULL,
                        payload = json_set(payload, '$.user_id', '', '$.creator_id', '')
                     WHERE id = ?1 AND status = 3",
                )?;
                for d in rows {
                    if is_ordered_kind(&d.kind) && superseded(&tx, d.id)? {
                        // a newer value of the same target is queued or delivered: re-sending this
                        // older one would overwrite it
                        report.kept += 1;
                        continue;
                    }
                    let punch = d.kind == KIND_USER_FLOW;
                    if punch
                        && (d.event_time < crate::punch::EARLIEST_IMPORTABLE
                            || d.event_time > latest_event_time)
                    {
                        report.kept += 1;
                        continue;
                    }
                    match (&mapping, punch) {
                        (Some(m), true) => match m.lookup(&d.device_id, &d.device_user_id) {
                            Some(uid) => report.pending += remap.execute(params![d.id, uid])?,
                            None => report.unmapped += unmap.execute(params![d.id])?,
                        },
                        _ => report.pending += plain.execute(params![d.id])?,
                    }
                }
            }
            tx.commit()?;
            Ok(report)
        })
        .await
    }

    /// Removes the dead letters `sel` names from the queue, keeping a copy of each in `dropped`
    /// (never sent). Returns what was dropped.
    pub async fn drop_dead(&self, sel: DeadSelection) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| {
            let rows = select_dead(conn, &sel)?;
            let tx = conn.transaction()?;
            let mut dropped = Vec::with_capacity(rows.len());
            {
                let mut keep = tx.prepare_cached(
                    "INSERT INTO dropped (kind, idem, device_id, subject, event_time, payload, dead_reason,
                        err_code, err_msg, err_log_id, attempts, created_at, dropped_at)
                     SELECT kind, idem, device_id, subject, event_time, payload, dead_reason,
                        err_code, err_msg, err_log_id, attempts, created_at, ?2
                     FROM outbox WHERE id = ?1 AND status = 3",
                )?;
                // the row stays as a tombstone (status 5, payload cleared) so that its unique key stays
                // taken: the same punch read again (a clock's full re-read) does not come back
                let mut del = tx.prepare_cached(
                    "UPDATE outbox SET status = 5, payload = '' WHERE id = ?1 AND status = 3",
                )?;
                let now = now_ms();
                for d in rows {
                    if keep.execute(params![d.id, now])? == 1 && del.execute(params![d.id])? == 1 {
                        dropped.push(d);
                    }
                }
            }
            tx.commit()?;
            Ok(dropped)
        })
        .await
    }

    /// Deletes delivered rows delivered before `before_ms`, in chunks. Returns how many.
    pub async fn prune_delivered(&self, before_ms: i64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = self
                .call(move |conn| {
                    let tx = conn.transaction()?;
                    let n = tx.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 2 AND delivered_at < ?1 LIMIT 5000)",
                        params![before_ms],
                    )?;
                    tx.execute(
                        "UPDATE totals SET value = value + ?1 WHERE name = 'pruned_delivered'",
                        params![n as i64],
                    )?;
                    tx.commit()?;
                    Ok(n as u64)
                })
                .await?;
            total += n;
            if n < 5000 {
                return Ok(total);
            }
        }
    }

    /// Stores a runtime snapshot (JSON) under `key`, for `status` in another process.
    pub async fn put_runtime(&self, key: &'static str, value: String) -> Result<()> {
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO runtime(key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![key, value, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// Reads a runtime snapshot and when it was written (Unix ms).
    pub async fn get_runtime(&self, key: &'static str) -> Result<Option<(String, i64)>> {
        self.call(move |conn| read_runtime(conn, key)).await
    }
}

/// Applies `sql` (guarded by `status = 1`) to each claimed row in one transaction, and commits only if
/// every row was in flight: an outcome is never recorded for a row that was not claimed.
fn update_claimed(
    conn: &mut Connection,
    sql: &str,
    ids: &[i64],
    mut exec: impl FnMut(&mut rusqlite::CachedStatement<'_>, i64) -> rusqlite::Result<usize>,
) -> Result<()> {
    let tx = conn.transaction()?;
    let mut changed = 0;
    {
        let mut st = tx.prepare_cached(sql)?;
        for id in ids {
            changed += exec(&mut st, *id)?;
        }
    }
    if changed != ids.len() {
        return Err(QueueError::NotClaimed {
            expected: ids.len(),
            changed,
        });
    }
    tx.commit()?;
    Ok(())
}

fn insert_records(
    conn: &mut Connection,
    records: &[NewRecord],
    now: i64,
) -> Result<Vec<InsertStatus>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(records.len());
    // rows inserted per (kind, device, status): added to `counts` once, in the same transaction
    let mut added: HashMap<(&str, &str, i64), i64> = HashMap::new();
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO outbox (kind, idem, ukey, device_id, subject, user_id, event_time, payload, status, next_attempt_at, created_at, dead_reason, err_msg)
             VALUES (?1, ?2, ?12, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)
             ON CONFLICT(kind, ukey) DO NOTHING",
        )?;
        for r in records {
            let (reason, msg) = match &r.dead {
                Some((a, b)) => (Some(a.as_str()), Some(b.as_str())),
                None => (None, None),
            };
            let n = st.execute(params![
                r.kind,
                r.idem,
                r.device_id,
                r.subject,
                r.user_id,
                r.event_time,
                r.payload,
                r.status as i64,
                now,
                reason,
                msg,
                r.ukey
            ])?;
            out.push(if n == 0 {
                InsertStatus::Duplicate
            } else {
                *added
                    .entry((r.kind, r.device_id.as_str(), r.status as i64))
                    .or_default() += 1;
                match r.status {
                    Status::Unmapped => InsertStatus::Unmapped,
                    Status::Dead => InsertStatus::Dead(reason.unwrap_or("dead").to_string()),
                    _ => InsertStatus::Pending,
                }
            });
        }
        let mut count = tx.prepare_cached(
            "INSERT INTO counts (kind, device_id, status, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, device_id, status) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((kind, dev, status), n) in added {
            count.execute(params![kind, dev, status, n])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The ordering key of an ordered row's `ukey` (without the hash and generation).
fn ordering_key(ukey: &str) -> &str {
    ukey.get(..ukey.len().saturating_sub(LATEST_SUFFIX_LEN))
        .unwrap_or("")
}

fn insert_latest(
    conn: &mut Connection,
    records: &[NewRecord],
    now: i64,
) -> Result<Vec<InsertStatus>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(records.len());
    let mut added: HashMap<(&str, &str), i64> = HashMap::new();
    {
        let mut latest = tx.prepare_cached(
            "SELECT ukey, (SELECT count(*) FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3)
             FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3 ORDER BY id DESC LIMIT 1",
        )?;
        let mut ins = tx.prepare_cached(
            "INSERT INTO outbox (kind, idem, ukey, device_id, subject, user_id, event_time, payload, status, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9)
             ON CONFLICT(kind, ukey) DO NOTHING",
        )?;
        for r in records {
            let (lo, hi) = (format!("{}#", r.ukey), format!("{}$", r.ukey));
            let last: Option<(String, i64)> = latest
                .query_row(params![r.kind, lo, hi], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let same = last.as_ref().is_some_and(|(u, _)| {
                u.len() == r.ukey.len() + LATEST_SUFFIX_LEN
                    && u.get(r.ukey.len() + 1..r.ukey.len() + 33) == Some(r.idem.as_str())
            });
            if same {
                out.push(InsertStatus::Duplicate);
                continue;
            }
            let generation = last.map(|(_, n)| n).unwrap_or(0);
            let ukey = format!("{}#{}#{generation:08}", r.ukey, r.idem);
            let n = ins.execute(params![
                r.kind,
                r.idem,
                ukey,
                r.device_id,
                r.subject,
                r.user_id,
                r.event_time,
                r.payload,
                now
            ])?;
            if n == 0 {
                out.push(InsertStatus::Duplicate);
            } else {
                *added.entry((r.kind, r.device_id.as_str())).or_default() += 1;
                out.push(InsertStatus::Pending);
            }
        }
        let mut count = tx.prepare_cached(
            "INSERT INTO counts (kind, device_id, status, n) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT (kind, device_id, status) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((kind, dev), n) in added {
            count.execute(params![kind, dev, n])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Whether an ordered row has a newer row of the same ordering key.
fn superseded(conn: &Connection, id: i64) -> Result<bool> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT kind, ukey FROM outbox WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((kind, ukey)) = row else {
        return Ok(false);
    };
    let key = ordering_key(&ukey);
    let newer: i64 = conn.query_row(
        "SELECT count(*) FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3 AND id > ?4",
        params![kind, format!("{key}#"), format!("{key}$"), id],
        |r| r.get(0),
    )?;
    Ok(newer > 0)
}

/// No older pending or in-flight row of the same ordering key (`{t}` is the outer row's alias).
const NO_OLDER_OPEN: &str = "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.kind = {t}.kind
    AND p.ukey >= substr({t}.ukey, 1, length({t}.ukey) - 42) || '#'
    AND p.ukey < substr({t}.ukey, 1, length({t}.ukey) - 42) || '$'
    AND p.id < {t}.id AND p.status IN (0, 1))";

fn claim_latest(conn: &mut Connection, kind: &str, limit: usize, now: i64) -> Result<Vec<Claimed>> {
    let sql = format!(
        "UPDATE outbox SET status = 1, attempts = attempts + 1, last_attempt_at = ?3,
                first_attempt_at = coalesce(first_attempt_at, ?3)
         WHERE id IN (SELECT o.id FROM outbox o
                      WHERE o.kind = ?1 AND o.status = 0 AND o.next_attempt_at <= ?3 AND {o_ok}
                        AND o.device_id = (SELECT f.device_id FROM outbox f
                            WHERE f.kind = ?1 AND f.status = 0 AND f.next_attempt_at <= ?3 AND {f_ok}
                            ORDER BY f.next_attempt_at, f.id LIMIT 1)
                      ORDER BY o.next_attempt_at, o.id LIMIT ?2)
         RETURNING id, idem, device_id, user_id, payload, attempts",
        o_ok = NO_OLDER_OPEN.replace("{t}", "o"),
        f_ok = NO_OLDER_OPEN.replace("{t}", "f"),
    );
    let mut st = conn.prepare_cached(&sql)?;
    claimed_rows(&mut st, kind, limit, now)
}

/// Runs a claim statement (`?1` kind, `?2` limit, `?3` now; `RETURNING id, idem, device_id, user_id,
/// payload, attempts`) and returns the rows in id order.
fn claimed_rows(
    st: &mut rusqlite::CachedStatement<'_>,
    kind: &str,
    limit: usize,
    now: i64,
) -> Result<Vec<Claimed>> {
    let mut rows: Vec<Claimed> = st
        .query_map(params![kind, limit as i64, now], |r| {
            Ok(Claimed {
                id: r.get(0)?,
                idem: r.get(1)?,
                device_id: r.get(2)?,
                user_id: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|c| c.id);
    Ok(rows)
}

fn claim(conn: &mut Connection, kind: &str, limit: usize, now: i64) -> Result<Vec<Claimed>> {
    let mut st = conn.prepare_cached(
        "UPDATE outbox SET status = 1, attempts = attempts + 1, last_attempt_at = ?3,
                first_attempt_at = coalesce(first_attempt_at, ?3)
         WHERE id IN (SELECT id FROM outbox WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?3
                      ORDER BY next_attempt_at, id LIMIT ?2)
         RETURNING id, idem, device_id, user_id, payload, attempts",
    )?;
    claimed_rows(&mut st, kind, limit, now)
}

/// Counts from an open connection (also used by the read-only `status` path).
pub fn read_counts(conn: &Connection) -> Result<Counts> {
    let mut c = Counts::default();
    let mut st =
        conn.prepare_cached("SELECT kind, device_id, status, n FROM counts WHERE n <> 0")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (kind, dev, status, n) = row?;
        let Some(status) = Status::from_i64(status) else {
            continue;
        };
        let n = n.max(0) as u64;
        c.total.add(status, n);
        c.by_kind.entry(kind).or_default().add(status, n);
        c.by_device.entry(dev).or_default().add(status, n);
    }
    c.pruned_delivered = conn
        .query_row(
            "SELECT value FROM totals WHERE name = 'pruned_delivered'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0)
        .max(0) as u64;
    Ok(c)
}

/// Every dead letter `sel` names, oldest first.
fn select_dead(conn: &Connection, sel: &DeadSelection) -> Result<Vec<DeadLetter>> {
    let mut all = read_dead_letters(conn, usize::MAX >> 1)?;
    all.retain(|d| sel.matches(d));
    all.reverse();
    Ok(all)
}

/// The newest dead letters from an open connection.
pub fn read_dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut st = conn.prepare_cached(
        "SELECT id, kind, device_id, subject, event_time, dead_reason, err_code, err_msg, err_log_id,
                attempts, first_attempt_at, last_attempt_at, created_at
         FROM outbox WHERE status = 3 ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st
        .query_map(params![limit as i64], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                kind: r.get(1)?,
                device_id: r.get(2)?,
                device_user_id: r.get(3)?,
                event_time: r.get(4)?,
                reason: r.get(5)?,
                code: r.get(6)?,
                message: r.get(7)?,
                log_id: r.get(8)?,
                attempts: r.get(9)?,
                first_attempt_at: r.get::<_, Option<i64>>(10)?.map(|t| t / 1000),
                last_attempt_at: r.get::<_, Option<i64>>(11)?.map(|t| t / 1000),
                created_at: r.get::<_, i64>(12)? / 1000,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A runtime snapshot from an open connection.
pub fn read_runtime(conn: &Connection, key: &str) -> Result<Option<(String, i64)>> {
    Ok(conn
        .query_row(
            "SELECT value, updated_at FROM runtime WHERE key = ?1",
            params![key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The oldest outstanding (pending or in-flight) row's creation time, Unix ms.
pub fn read_oldest_outstanding(conn: &Connection) -> Result<Option<i64>> {
    // two lookups, each on its own small partial index
    let pending: Option<i64> = conn.query_row(
        "SELECT min(created_at) FROM outbox WHERE status = 0",
        [],
        |r| r.get(0),
    )?;
    let in_flight: Option<i64> = conn.query_row(
        "SELECT min(created_at) FROM outbox WHERE status = 1",
        [],
        |r| r.get(0),
    )?;
    Ok(match (pending, in_flight) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Opens an existing queue read-only (for `status` while the daemon runs). Never creates or
/// migrates anything.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let p = path.display().to_string();
    if !path.exists() {
        return Err(QueueError::Open {
            path: p,
            reason: "does not exist yet: start the daemon (clockbridge run) to create it".into(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| QueueError::Open {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| QueueError::Open {
            path: p.clone(),
            reason: format!("{e}: the file is not a readable clockbridge queue (corrupt?)"),
        })?;
    if version == 0 {
        return Err(QueueError::Open {
            path: p,
            reason: "is not a clockbridge queue (no schema)".into(),
        });
    }
    Ok(conn)
}

#[cfg(test)]
mod tests;
