//! What the queue file itself has done wrong since the daemon started, seen by every call on the
//! database thread ([`super::Queue`]'s one door): the health model ([`crate::health`]) reads it, so a
//! damaged or unwritable queue fails `/healthz`, shows in `STATUS=` and in `status`, however few of the
//! daemon's calls hit the bad part.
//!
//! - **Damage** (`SQLITE_CORRUPT`, `SQLITE_NOTADB`): kept until the process ends, since a damaged file
//!   does not heal and the calls that succeed may only be those that miss the damaged pages. The
//!   first one logs an ERROR saying what to do: stop clockbridge, recover the file with `sqlite3
//!   .recover`, and which files lie beside it (clockbridge makes no backup of its own).
//! - **Writes failing** (`SQLITE_FULL`, `SQLITE_IOERR*`, `SQLITE_READONLY`, `SQLITE_CANTOPEN`,
//!   `SQLITE_PERM`): held from the first failure until a later call changed queue rows and returned
//!   successfully (so a read that succeeds on a full disk does not clear it). The daemon's status
//!   snapshot is written without touching this record ([`super::Queue::put_runtime`]): a tiny update
//!   that may squeeze onto a full disk proves nothing about the punches.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::ErrorCode;
use serde::{Deserialize, Serialize};

use super::{now_ms, QueueError};

/// One kind of fault, while it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Unix ms of the first failure of this episode.
    pub since_ms: i64,
    /// Unix ms of the latest failure.
    pub last_ms: i64,
    /// The latest error, as SQLite said it.
    pub error: String,
    /// Failed calls in this episode.
    pub count: u64,
}

/// The faults now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The file is damaged (until the process ends).
    pub damaged: Option<Fault>,
    /// Writes fail (disk full, I/O error, read-only) and none has succeeded since.
    pub writes_failing: Option<Fault>,
}

/// The class of an SQLite error, for the health model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The file is damaged or not a database.
    Damaged,
    /// The file cannot be written (or read) by the system: space, I/O, permissions.
    Storage,
    /// Anything else (busy, a constraint, a bug): not a property of the file.
    Other,
}

/// The class of `e`.
pub fn classify(e: &QueueError) -> ErrorClass {
    let QueueError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = e else {
        return ErrorClass::Other;
    };
    match f.code {
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => ErrorClass::Damaged,
        ErrorCode::DiskFull
        | ErrorCode::SystemIoFailure
        | ErrorCode::ReadOnly
        | ErrorCode::CannotOpen
        | ErrorCode::PermissionDenied => ErrorClass::Storage,
        _ => ErrorClass::Other,
    }
}

/// The record behind [`Faults`], shared by every handle of one queue.
#[derive(Debug, Default)]
pub struct FaultLog {
    state: Mutex<Faults>,
}

impl FaultLog {
    /// The faults now.
    pub fn get(&self) -> Faults {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of one call on the queue at `path`: `changed` tells whether it changed
    /// rows (and, with `Ok`, committed them).
    pub(super) fn record<T>(&self, path: &Path, result: &Result<T, QueueError>, changed: bool) {
        match result {
            Ok(_) if changed => {
                let mut s = self.lock();
                if let Some(f) = s.writes_failing.take() {
                    tracing::info!(
                        queue = %path.display(),
                        failed_calls = f.count,
                        "queue: writes succeed again"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                let class = classify(e);
                if class == ErrorClass::Other {
                    return;
                }
                let now = now_ms();
                let mut s = self.lock();
                let slot = match class {
                    ErrorClass::Damaged => &mut s.damaged,
                    _ => &mut s.writes_failing,
                };
                match slot {
                    Some(f) => {
                        f.last_ms = now;
                        f.count += 1;
                        f.error = e.to_string();
                    }
                    None => {
                        *slot = Some(Fault {
                            since_ms: now,
                            last_ms: now,
                            error: e.to_string(),
                            count: 1,
                        });
                        if class == ErrorClass::Damaged {
                            drop(s);
                            tracing::error!("{}", damaged_advice(path, e));
                        }
                    }
                }
            }
        }
    }
}

/// The ERROR logged when the queue file turns out damaged: what happened, what to do, and what
/// files lie beside it.
pub fn damaged_advice(path: &Path, e: &QueueError) -> String {
    let p = path.display();
    format!(
        "queue {p} is damaged ({e}): rows on the damaged pages can be neither sent nor changed, and \
         /healthz fails until the file is repaired. To repair it: stop clockbridge (systemctl stop \
         clockbridge); keep a copy of the directory; run `sqlite3 {p} '.recover' | sqlite3 \
         {p}.recovered` (sqlite3 3.29 or later with the sqlite_dbpage table, which the sqlite3 \
         of Debian 12 lacks: see the README); move {p} and its -wal and -shm files aside and \
         {p}.recovered in its place (owner and mode as before); start clockbridge: rows that were \
         delivered may be sent again and are absorbed by their idempotent ids. clockbridge keeps no \
         backup of its own; {}",
        beside(path)
    )
}

/// The files next to the queue whose name starts with its name (its -wal and -shm, copies).
fn beside(path: &Path) -> String {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return "no other file lies beside it".into();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(name.as_ref()) && n != name.as_ref())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        format!("no other file lies beside it in {}", dir.display())
    } else {
        format!(
            "beside it in {}: {} (a -wal file holds the latest commits: keep it with the file)",
            dir.display(),
            found.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> QueueError {
        QueueError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn errors_are_classed_by_what_they_say_of_the_file() {
        use rusqlite::ffi;
        assert_eq!(classify(&sqlite(ffi::SQLITE_CORRUPT)), ErrorClass::Damaged);
        assert_eq!(classify(&sqlite(ffi::SQLITE_NOTADB)), ErrorClass::Damaged);
        assert_eq!(classify(&sqlite(ffi::SQLITE_FULL)), ErrorClass::Storage);
        assert_eq!(
            classify(&sqlite(ffi::SQLITE_IOERR_WRITE)),
            ErrorClass::Storage
        );
        assert_eq!(classify(&sqlite(ffi::SQLITE_READONLY)), ErrorClass::Storage);
        assert_eq!(classify(&sqlite(ffi::SQLITE_BUSY)), ErrorClass::Other);
        assert_eq!(classify(&sqlite(ffi::SQLITE_CONSTRAINT)), ErrorClass::Other);
        assert_eq!(classify(&QueueError::Closed), ErrorClass::Other);
    }

    #[test]
    fn a_write_failure_holds_until_a_write_succeeds_and_damage_holds_for_good() {
        let log = FaultLog::default();
        let p = Path::new("/nonexistent/queue.db");
        log.record::<()>(p, &Err(sqlite(rusqlite::ffi::SQLITE_FULL)), false);
        log.record::<()>(p, &Err(sqlite(rusqlite::ffi::SQLITE_FULL)), true);
        let f = log.get().writes_failing.expect("recorded");
        assert_eq!(f.count, 2);
        assert!(f.error.contains("full"), "{}", f.error);
        // a read that succeeds proves nothing
        log.record(p, &Ok(()), false);
        assert!(log.get().writes_failing.is_some());
        log.record(p, &Ok(()), true);
        assert_eq!(log.get().writes_failing, None);

        log.record::<()>(p, &Err(sqlite(rusqlite::ffi::SQLITE_CORRUPT)), false);
        log.record(p, &Ok(()), true);
        assert!(log.get().damaged.is_some());
        // a busy database is not a fault of the file
        log.record::<()>(p, &Err(sqlite(rusqlite::ffi::SQLITE_BUSY)), false);
        assert_eq!(log.get().writes_failing, None);
    }

    #[test]
    fn the_advice_names_the_recovery_and_the_files_beside_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        std::fs::write(&q, b"x").unwrap();
        std::fs::write(dir.path().join("queue.db-wal"), b"x").unwrap();
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let text = damaged_advice(&q, &sqlite(rusqlite::ffi::SQLITE_CORRUPT));
        assert!(text.contains("stop clockbridge"), "{text}");
        assert!(text.contains(".recover"), "{text}");
        assert!(text.contains("queue.db-wal"), "{text}");
        assert!(!text.contains("other.txt"), "{text}");
        assert!(text.contains("no backup of its own"), "{text}");
        let alone = dir.path().join("alone.db");
        let text = damaged_advice(&alone, &sqlite(rusqlite::ffi::SQLITE_CORRUPT));
        assert!(text.contains("no other file lies beside it"), "{text}");
    }
}
