//! Opening the queue file: what may be opened and what may be created, pragmas (read back, never
//! assumed), migrations, the rows left in flight by the previous process, and the database thread.
//! Also the read-only opening used by `clockbridge status` beside a running daemon.
//!
//! Guarantees:
//! - **A queue is created only where nothing is**: no file at `queue.path`, no `-wal`, no `-shm`.
//!   It is built whole under a temporary name (pragmas, schema) and then linked into place, so a
//!   crash while creating it never leaves a half-made queue at the path.
//! - **A queue file that exists is opened only if it is one**: a file of any size (0 bytes included)
//!   must be an SQLite database whose schema version and tables are a clockbridge queue's. Anything
//!   else (truncated, another program's file, a table dropped by hand, random bytes, a `-wal` whose
//!   queue file is gone) is refused with an error naming the path and what to do, and nothing is
//!   written to it, its `-wal` or its `-shm`. A queue is never recreated over records that may still
//!   be recoverable.
//! - A queue that cannot be written (file, directory or filesystem read-only) is refused at open with
//!   one error naming the path and what to check, not at the first write.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OpenFlags, MAIN_DB};

use super::{migrations, Job, OpenReport, Queue, QueueError, Result};

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The size of an SQLite database header: a database file is never shorter (its first page).
const SQLITE_HEADER: u64 = 100;
/// What to do with a file that is not a queue clockbridge can use.
const MOVE_ASIDE: &str = "keep it (with its -wal and -shm files) for inspection, and restore the queue from a backup, or move them all aside to start an empty queue (the records in them are then not sent): clockbridge never recreates a queue that exists";

fn open_error(p: &Path, reason: String) -> QueueError {
    QueueError::Open {
        path: p.display().to_string(),
        reason,
    }
}

/// `PATH-wal`, `PATH-shm`: the files SQLite keeps beside a database in WAL mode.
pub fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `-wal` and `-shm` files that exist beside `path`.
fn journal_files(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm"]
        .iter()
        .map(|s| side_file(path, s))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The directory of the queue file (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What is at the queue's path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing at all: a queue may be created.
    Nothing,
    /// A file with an SQLite header: to be opened and checked.
    Database,
}

/// Looks at the queue's path without opening it with SQLite (which would treat an empty file as an
/// empty database, and could touch the `-wal`).
fn look(path: &Path) -> Result<Found> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let left = journal_files(path);
            if left.is_empty() {
                return Ok(Found::Nothing);
            }
            return Err(open_error(
                path,
                format!(
                    "the file is missing but {} {} still there (the queue was moved or deleted without them; the -wal may hold queued records): put the queue file back; to start an empty queue instead, move {} aside",
                    list(&left),
                    if left.len() == 1 { "is" } else { "are" },
                    if left.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        Err(e) => {
            return Err(open_error(
                path,
                format!(
                    "cannot look at it: {e}: check that clockbridge's user may enter {}",
                    dir_of(path).display()
                ),
            ))
        }
    };
    if !meta.is_file() {
        return Err(open_error(
            path,
            "is not a file: queue.path must name the queue file (e.g. /var/lib/clockbridge/queue.db), not a directory or a device".into(),
        ));
    }
    if meta.len() == 0 {
        let wal = side_file(path, "-wal");
        let wal_note = match wal.metadata() {
            Ok(m) => format!(
                " {} ({} bytes) may still hold queued records: leave it where it is;",
                wal.display(),
                m.len()
            ),
            Err(_) => String::new(),
        };
        return Err(open_error(
            path,
            format!(
                "is empty (0 bytes): a clockbridge queue never is, so it was truncated (or created by hand), and it is not a readable clockbridge queue;{wal_note} {MOVE_ASIDE}"
            ),
        ));
    }
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if let Err(e) = &read {
        if e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(cannot_read(path, e));
        }
    }
    if read.is_ok() && &head == SQLITE_MAGIC && meta.len() >= SQLITE_HEADER {
        return Ok(Found::Database);
    }
    Err(open_error(
        path,
        format!(
            "is not an SQLite database ({} bytes that do not start with \"SQLite format 3\"): the file is not a readable clockbridge queue (corrupt, or another program's file?): {MOVE_ASIDE}",
            meta.len()
        ),
    ))
}

fn cannot_read(path: &Path, e: &std::io::Error) -> QueueError {
    open_error(
        path,
        format!(
            "cannot read it: {e}: it belongs to the user clockbridge runs as (mode 0600): run this as root or as that user"
        ),
    )
}

/// The error for a queue that cannot be written: what to check, once, with the path.
fn not_writable(path: &Path, detail: &str) -> QueueError {
    let dir = dir_of(path);
    open_error(
        path,
        format!(
            "cannot write it ({detail}): the file, its -wal and -shm files and its directory {dir} must be writable by the user clockbridge runs as (uid {uid}), on a filesystem mounted read-write: check `ls -ld {dir} {file}*` and `findmnt -T {dir}` (under systemd: StateDirectory=, or ReadWritePaths= if you moved queue.path)",
            dir = dir.display(),
            file = path.display(),
            uid = nix::unistd::getuid(),
        ),
    )
}

/// An SQLite error while opening, as an error naming the path and what to check.
fn classify(path: &Path, e: rusqlite::Error) -> QueueError {
    let code = e.sqlite_error_code();
    let text = e.to_string();
    match code {
        Some(ErrorCode::ReadOnly) => not_writable(path, &text),
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => not_writable(
            path,
            &format!("{text}: SQLite could not open it, or create its -wal or -shm file"),
        ),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => open_error(
            path,
            format!("{text}: the file is not a readable clockbridge queue (corrupt?): {MOVE_ASIDE}"),
        ),
        Some(ErrorCode::DiskFull) => open_error(
            path,
            format!(
                "{text}: free space on the disk of {}, then start again",
                dir_of(path).display()
            ),
        ),
        Some(ErrorCode::SystemIoFailure) => open_error(
            path,
            format!(
                "{text}: an I/O error: check the disk (`dmesg`), that it is not full, and that the filesystem is still mounted read-write"
            ),
        ),
        _ => open_error(path, text),
    }
}

fn set_pragmas(conn: &Connection, path: &Path) -> Result<()> {
    let p = path.display().to_string();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Pragma {
            path: p,
            pragma: "journal_mode",
            actual: mode,
            expected: "wal",
        });
    }
    conn.execute_batch("PRAGMA synchronous=FULL;")
        .map_err(|e| classify(path, e))?;
    fit_cache(conn);
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if sync != 2 {
        return Err(QueueError::Pragma {
            path: p,
            pragma: "synchronous",
            actual: sync.to_string(),
            expected: "2 (FULL)",
        });
    }
    Ok(())
}

/// The page cache for a queue file of `file_bytes`: an eighth of the file, at least 2 MiB and at
/// most 16 MiB (in KiB). A large backlog needs the cache: with 1,000,000 rows, a claim took 3.9x
/// its time at 10,000 rows with a fixed 4 MiB cache and 1.06x with 16 MiB (`cargo bench --bench
/// queue`); a small queue does not, and a fixed 16 MiB cache filled with pages of rows just written
/// made a gateway reading a 100,000-event log hold 38 MiB instead of 24.
pub(crate) fn cache_kib(file_bytes: u64) -> i64 {
    (file_bytes / 8 / 1024).clamp(2048, 16384) as i64
}

/// Sizes the page cache to the file as it is now (see [`cache_kib`]); the database thread calls it
/// again as the queue grows or shrinks. A failure leaves the cache as it was: it costs speed, never
/// data.
pub(crate) fn fit_cache(conn: &Connection) {
    let bytes = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0);
    let _ = conn.execute_batch(&format!(
        "PRAGMA cache_size=-{};",
        cache_kib(bytes.max(0) as u64)
    ));
}

/// Checks that the database at `path` is a clockbridge queue: a schema version, and every table that
/// version holds.
fn check_schema(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if version == 0 {
        return Err(open_error(
            path,
            format!(
                "is an SQLite database but not a clockbridge queue (it has no schema version): check queue.path; if the file is another program's, give clockbridge a path of its own; if it is the queue, {MOVE_ASIDE}"
            ),
        ));
    }
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .map_err(|e| classify(path, e))?;
    let have: Vec<String> = st
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| classify(path, e))?;
    let missing: Vec<&str> = migrations::TABLES
        .iter()
        .filter(|(_, since, until)| *since <= version && until.is_none_or(|u| version < u))
        .map(|(name, _, _)| *name)
        .filter(|name| !have.iter().any(|h| h == name))
        .collect();
    if !missing.is_empty() {
        return Err(open_error(
            path,
            format!(
                "is not a whole clockbridge queue: schema version {version} but no table {} (dropped by hand, or another program's file?): {MOVE_ASIDE}",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Creates a new queue at `path`, where nothing is: built whole under a temporary name beside it,
/// then linked into place (never over a file that appeared meanwhile).
fn create(path: &Path) -> Result<()> {
    let dir = dir_of(path);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| {
            open_error(
                path,
                format!(
                    "cannot create directory {}: {e}: create it, writable by the user clockbridge runs as",
                    dir.display()
                ),
            )
        })?;
    }
    let tmp = side_file(path, &format!(".creating-{}", std::process::id()));
    let remove_tmp = || {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(side_file(&tmp, suffix));
        }
    };
    remove_tmp();
    let built = (|| {
        let mut conn = Connection::open(&tmp).map_err(|e| classify(path, e))?;
        set_pragmas(&conn, path)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|e| QueueError::Migration {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        // closing the last connection checkpoints the WAL into the file (synced) and removes it
        conn.close().map_err(|(_, e)| classify(path, e))?;
        if side_file(&tmp, "-wal").exists() {
            return Err(open_error(
                path,
                format!(
                    "the new queue {} kept its -wal after closing: the filesystem may not support SQLite's WAL (put the queue on a local disk)",
                    tmp.display()
                ),
            ));
        }
        // a hard link never replaces a file: a queue another process created meanwhile is kept
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // filesystems without hard links (vfat): a rename, after a last look
            Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(|e| {
                open_error(path, format!("cannot move the new queue into place: {e}"))
            }),
            Err(_) => Ok(()),
        }
    })();
    remove_tmp();
    built?;
    // the new name is durable once the directory is
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How many times (about one a millisecond) a statement retries while another process holds the
/// queue's write lock (`import`, `submit`, `dlq`) before it fails with `SQLITE_BUSY`: about 10 s.
const BUSY_TRIES: i32 = 10_000;

/// The busy handler of read-write connections: retry every millisecond, up to [`BUSY_TRIES`].
/// SQLite's own (`busy_timeout`) backs off to 100 ms between tries, and a process that commits
/// back to back (an import) almost never leaves its lock free at the moment of such a try: the
/// daemon's writes (live punches, claims, outcomes) would wait for the whole import. Polling every
/// millisecond, they get the lock in the pause `import` makes between its transactions.
fn busy_poll(tries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(1));
    tries < BUSY_TRIES
}

/// Opens the queue at `path` for writing, creating it only where nothing is, and checks it.
fn open_conn(path: &Path) -> Result<Connection> {
    if look(path)? == Found::Nothing {
        create(path)?;
        look(path)?;
    }
    // no CREATE: a file that vanished since is an error, not a new queue
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(path, e))?;
    // SQLite opens a file it may not write read-only, silently: refuse it now, not at the first write
    if conn.is_readonly(MAIN_DB).unwrap_or(false) {
        let why = match std::fs::OpenOptions::new().write(true).open(path) {
            Err(e) => e.to_string(),
            Ok(_) => "opened read-only".into(),
        };
        return Err(not_writable(path, &why));
    }
    conn.busy_handler(Some(busy_poll))
        .map_err(|e| classify(path, e))?;
    // the schema first: setting the journal mode writes to the file
    check_schema(&conn, path)?;
    set_pragmas(&conn, path)?;
    Ok(conn)
}

/// How many jobs of the database thread between two sizings of the page cache.
const FIT_CACHE_EVERY: u32 = 1024;

impl Queue {
    /// Opens and migrates the queue at `path` (creating it only where nothing is: see the module
    /// documentation), checks the pragmas, puts rows that were in flight back to pending, and starts
    /// the database thread.
    pub fn open(path: &Path) -> Result<(Queue, OpenReport)> {
        Self::open_with(path, true)
    }

    /// Opens the queue for a tool running beside the daemon (`import`): like [`Queue::open`], but rows
    /// in flight are left alone, since they belong to the running daemon.
    pub fn open_beside_daemon(path: &Path) -> Result<Queue> {
        Self::open_with(path, false).map(|(q, _)| q)
    }

    /// Opens an existing queue for a tool that reads or changes the rows already there (`dlq`): like
    /// [`Queue::open_beside_daemon`], but a path where no queue is is refused, never created (a
    /// wrong `queue.path` would otherwise get an empty queue and answer "no dead letters").
    pub fn open_existing_beside_daemon(path: &Path) -> Result<Queue> {
        if look(path)? == Found::Nothing {
            return Err(missing(path));
        }
        Self::open_beside_daemon(path)
    }

    fn open_with(path: &Path, requeue: bool) -> Result<(Queue, OpenReport)> {
        let p = path.display().to_string();
        let mut conn = open_conn(path)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|e| match e {
                rusqlite_migration::Error::RusqliteError { err, .. } => classify(path, err),
                e => QueueError::Migration {
                    path: p.clone(),
                    reason: e.to_string(),
                },
            })?;
        let requeued = if requeue {
            conn.execute("UPDATE outbox SET status = 0 WHERE status = 1", [])
                .map_err(|e| classify(path, e))?
        } else {
            0
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("clockbridge-queue".into())
            .spawn(move || {
                let mut conn = conn;
                let mut jobs = 0u32;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                    jobs = jobs.wrapping_add(1);
                    if jobs.is_multiple_of(FIT_CACHE_EVERY) {
                        fit_cache(&conn);
                    }
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

/// The refusal of a queue path where nothing is, for the commands that never create one.
fn missing(path: &Path) -> QueueError {
    open_error(
        path,
        "does not exist: check queue.path in the configuration (the daemon creates the queue when it first starts: clockbridge run)".into(),
    )
}

/// Opens an existing queue read-only (for `status` while the daemon runs). Never creates, migrates
/// or writes anything; refuses what [`Queue::open`] refuses.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    if look(path)? == Found::Nothing {
        return Err(missing(path));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| classify(path, e))?;
    check_schema(&conn, path)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_follows_the_file_between_2_and_16_mib() {
        assert_eq!(cache_kib(0), 2048);
        assert_eq!(cache_kib(10 << 20), 2048);
        assert_eq!(cache_kib(40 << 20), 5120);
        assert_eq!(cache_kib(128 << 20), 16384);
        assert_eq!(cache_kib(4 << 30), 16384);
    }

    #[test]
    fn an_opened_queue_gets_the_cache_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let conn = {
            drop(Queue::open(&path).unwrap());
            open_conn(&path).unwrap()
        };
        let kib: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -2048, "a new queue is small: the least cache");
        conn.execute_batch(
            "CREATE TABLE filler(b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) INSERT INTO filler SELECT randomblob(8000) FROM n;",
        )
        .unwrap();
        fit_cache(&conn);
        let kib: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        let bytes: i64 = conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(bytes > 32 << 20, "{bytes}");
        assert_eq!(kib, -cache_kib(bytes as u64));
        assert!(kib < -2048);
    }

    /// The files in `dir`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn refused(path: &Path) -> String {
        let e = match Queue::open(path) {
            Ok(_) => panic!("{} was opened", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with(&format!("queue {}: cannot open: ", path.display())),
            "{e}"
        );
        // the read-only opening (`status`) refuses it too
        assert!(open_read_only(path).is_err());
        e
    }

    #[test]
    fn a_new_queue_is_created_only_where_nothing_is_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("queue.db");
        let (q, _) = Queue::open(&path).unwrap();
        drop(q);
        // no temporary file left behind; the closed queue is one file
        let left = files(&dir.path().join("sub"));
        assert!(
            left.iter()
                .all(|f| f.starts_with("queue.db") && !f.contains("creating")),
            "{left:?}"
        );
        let conn = open_read_only(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations::VERSION);
        // and it opens again
        Queue::open(&path).unwrap();
    }

    #[test]
    fn a_truncated_queue_is_refused_and_its_wal_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        std::fs::write(&path, b"").unwrap();
        let wal: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(side_file(&path, "-wal"), &wal).unwrap();
        let e = refused(&path);
        assert!(e.contains("is empty (0 bytes)"), "{e}");
        assert!(
            e.contains(&format!(
                "{}-wal (40000 bytes) may still hold queued records",
                path.display()
            )),
            "{e}"
        );
        assert!(e.contains("never recreates"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert!(
            std::fs::read(side_file(&path, "-wal")).unwrap() == wal,
            "the -wal was changed"
        );
        assert_eq!(files(dir.path()), ["queue.db", "queue.db-wal"]);
    }

    #[test]
    fn an_empty_file_without_a_wal_is_refused_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        std::fs::write(&path, b"").unwrap();
        let e = refused(&path);
        assert!(e.contains("is empty (0 bytes)"), "{e}");
        assert_eq!(files(dir.path()), ["queue.db"]);
    }

    #[test]
    fn a_wal_or_shm_without_its_queue_file_is_refused_and_nothing_is_created() {
        for left in [&["-wal"][..], &["-shm"], &["-wal", "-shm"]] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("queue.db");
            for suffix in left {
                std::fs::write(side_file(&path, suffix), b"journal").unwrap();
            }
            let e = refused(&path);
            assert!(e.contains("the file is missing but"), "{e}");
            for suffix in left {
                assert!(e.contains(&format!("{}{suffix}", path.display())), "{e}");
                assert_eq!(std::fs::read(side_file(&path, suffix)).unwrap(), b"journal");
            }
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_queue_without_its_outbox_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        drop(Queue::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE outbox")
            .unwrap();
        let e = refused(&path);
        assert!(e.contains("is not a whole clockbridge queue"), "{e}");
        assert!(e.contains("no table outbox"), "{e}");
    }

    #[test]
    fn another_programs_database_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('a');")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = refused(&path);
        assert!(e.contains("not a clockbridge queue"), "{e}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the file was changed"
        );
        // the same with a schema version of its own
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 2")
            .unwrap();
        let e = refused(&path);
        assert!(
            e.contains("no table outbox, counts, totals, runtime, dropped"),
            "{e}"
        );
    }

    #[test]
    fn a_short_file_or_random_bytes_are_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        for content in [&b"SQLite"[..], &[0x42u8; 8192][..]] {
            std::fs::write(&path, content).unwrap();
            let e = refused(&path);
            assert!(e.contains("is not an SQLite database"), "{e}");
            assert!(
                std::fs::read(&path).unwrap() == content,
                "the file was changed"
            );
        }
    }

    #[test]
    fn a_directory_at_the_queue_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = refused(dir.path());
        assert!(e.contains("is not a file"), "{e}");
    }
}
