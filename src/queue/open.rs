//! Opening the queue file: directory, pragmas (read back, never assumed), migrations, the rows left in
//! flight by the previous process, and the database thread. Also the read-only opening used by
//! `clockbridge status` beside a running daemon.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use super::{migrations, Job, OpenReport, Queue, QueueError, Result};

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
                faults: Default::default(),
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
