//! One daemon per queue: `clockbridge run` holds an exclusive lock on a file beside the queue
//! (`QUEUE.lock`, e.g. `/var/lib/clockbridge/queue.db.lock`) for its whole life, with its pid written
//! in it.
//!
//! Why: a second daemon on the same queue would put the first one's in-flight rows back to pending
//! (it takes them for the leftovers of a crash) and send them again beside it: the idempotent ids
//! absorb the copies, but two senders double the request rate, and `status` sees only one of them.
//!
//! Guarantees:
//! - [`DaemonLock::acquire`] succeeds for one process at a time; a second gets
//!   [`LockError::Held`] with the holder's pid, before it has touched the queue.
//! - The lock is an `flock(2)` lock (`LOCK_EX`, through [`std::fs::File::try_lock`]): the kernel
//!   releases it when the process ends, however it ends (SIGKILL, a crash, a power cut), so a stale
//!   lock never blocks a restart. The file itself stays; its pid is only believed while the lock is
//!   held.
//! - [`holder`] tells another process (`clockbridge status`) whether a daemon holds the lock, and its
//!   pid, without taking the queue away from it: it tries a shared lock for an instant; a daemon
//!   starting in that instant tries again for up to [`ACQUIRE_PATIENCE`] before it gives up.
//! - The tools that work beside a daemon (`import`, `submit`, `status`, `unmapped`, `dlq`) never take the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long [`DaemonLock::acquire`] keeps trying while the lock is busy but names no live holder
/// (another process is looking at it with [`holder`], or a daemon is writing its pid).
pub const ACQUIRE_PATIENCE: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon runs on this queue.
    #[error("queue {path} is in use by clockbridge pid {pid}: only one daemon may run on a queue: stop that one first (systemctl stop clockbridge), or give this one another queue.path (import, submit, status, unmapped and dlq work beside a running daemon)")]
    Held { pid: u32, path: String },
    /// The lock is held, but its holder never wrote its pid (not a clockbridge of this version?).
    #[error("queue {path} is in use by another process (it holds {lock} but wrote no pid in it): only one daemon may run on a queue: find it with `fuser -v {lock}`")]
    HeldUnknown { path: String, lock: String },
    /// The lock file cannot be created, opened or locked.
    #[error("queue {path}: cannot lock {lock}: {reason}")]
    Io {
        path: String,
        lock: String,
        reason: String,
    },
}

/// The lock file of the queue at `queue`: `QUEUE.lock` beside it.
pub fn lock_path(queue: &Path) -> PathBuf {
    super::side_file(queue, ".lock")
}

/// The daemon's exclusive lock on its queue, held until dropped.
#[derive(Debug)]
pub struct DaemonLock {
    /// Holds the `flock`: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock of the queue at `queue` (creating its directory and the lock file if needed)
    /// and writes this process's pid into it; fails with the holder's pid when another process
    /// holds it.
    pub fn acquire(queue: &Path) -> Result<DaemonLock, LockError> {
        let lock = lock_path(queue);
        let io = |what: &str, e: std::io::Error| LockError::Io {
            path: queue.display().to_string(),
            lock: lock.display().to_string(),
            reason: format!("{what}: {e}: {}", hint(&e)),
        };
        if let Some(dir) = queue.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io(&format!("cannot create directory {}", dir.display()), e))?;
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(|e| io("cannot open", e))?;
        let deadline = std::time::Instant::now() + ACQUIRE_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if let Some(pid) = read_pid(&mut file).filter(|&p| alive(p)) {
                        return Err(LockError::Held {
                            pid,
                            path: queue.display().to_string(),
                        });
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(LockError::HeldUnknown {
                            path: queue.display().to_string(),
                            lock: lock.display().to_string(),
                        });
                    }
                    // a `holder` probe holds a shared lock for an instant; a starting daemon writes
                    // its pid right after locking: either is over within a few milliseconds
                    std::thread::sleep(RETRY_EVERY);
                }
                Err(TryLockError::Error(e)) => return Err(io("cannot lock", e)),
            }
        }
        let pid = std::process::id();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|e| io("cannot write the pid", e))?;
        Ok(DaemonLock {
            _file: file,
            path: lock,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What [`probe`] found at a queue's lock file.
#[derive(Debug)]
pub enum Probe {
    /// No process holds the lock (or there is no lock file: no daemon of this version ever ran).
    Free,
    /// A process holds it: its pid (when written and alive) and when it took the lock (the lock
    /// file's modification time: the pid is written right after locking).
    Held {
        pid: Option<u32>,
        since: Option<SystemTime>,
    },
    /// The lock file could not be looked at (e.g. permission denied: run `status` as root).
    Unknown(String),
}

/// The pid of the daemon that holds the lock of the queue at `queue`, if one does.
pub fn holder(queue: &Path) -> Option<u32> {
    match probe(queue) {
        Probe::Held { pid, .. } => pid,
        Probe::Free | Probe::Unknown(_) => None,
    }
}

/// Whether a process holds the lock of the queue at `queue`, without keeping it from that process.
pub fn probe(queue: &Path) -> Probe {
    let lock = lock_path(queue);
    let mut file = match File::open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Free,
        Err(e) => return Probe::Unknown(format!("{}: {e}", lock.display())),
    };
    match file.try_lock_shared() {
        // nobody holds it exclusively; the shared lock goes with `file` at once
        Ok(()) => Probe::Free,
        Err(TryLockError::WouldBlock) => {
            // a daemon that just took the lock may not have written its pid yet
            let deadline = std::time::Instant::now() + ACQUIRE_PATIENCE;
            let pid = loop {
                match read_pid(&mut file) {
                    Some(pid) => break Some(pid),
                    None if std::time::Instant::now() >= deadline => break None,
                    None => std::thread::sleep(RETRY_EVERY),
                }
            };
            Probe::Held {
                pid,
                since: file.metadata().and_then(|m| m.modified()).ok(),
            }
        }
        Err(TryLockError::Error(e)) => Probe::Unknown(format!("{}: {e}", lock.display())),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&p| p != 0)
}

/// Whether a process with this pid exists (as far as this process can see: `/proc`).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    // without /proc (not Linux, or hidden), believe the file: the lock is held after all
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// What to check for an error on the lock file.
fn hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(nix::libc::ENOLCK) {
        return "this filesystem does not support locks (NFS?): put the queue on a local disk";
    }
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => {
            "the filesystem is mounted read-only: remount it read-write (`findmnt -T DIR` shows how it is mounted)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "the queue's directory must be writable by the user clockbridge runs as (under systemd: StateDirectory=, or ReadWritePaths= if you moved queue.path)"
        }
        _ => "check the queue's directory: it must exist, be writable and be on a local disk",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_queue_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("sub").join("queue.db");
        assert!(matches!(probe(&queue), Probe::Free));
        let first = DaemonLock::acquire(&queue).unwrap();
        assert_eq!(first.path(), dir.path().join("sub").join("queue.db.lock"));
        // flock locks belong to the open file: a second open in the same process conflicts too
        let e = DaemonLock::acquire(&queue).unwrap_err();
        assert!(
            matches!(e, LockError::Held { pid, .. } if pid == std::process::id()),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "queue {} is in use by clockbridge pid {}: ",
                queue.display(),
                std::process::id()
            )),
            "{msg}"
        );
        assert_eq!(holder(&queue), Some(std::process::id()));
        assert!(matches!(probe(&queue), Probe::Held { since: Some(_), .. }));
        // the probe did not take the lock away from its holder
        assert!(DaemonLock::acquire(&queue).is_err());
        drop(first);
        assert_eq!(holder(&queue), None);
        let again = DaemonLock::acquire(&queue).unwrap();
        assert_eq!(holder(&queue), Some(std::process::id()));
        drop(again);
    }

    #[test]
    fn a_stale_pid_in_a_free_lock_file_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue.db");
        std::fs::write(lock_path(&queue), "4000000\n").unwrap();
        assert!(matches!(probe(&queue), Probe::Free));
        assert_eq!(holder(&queue), None);
        let lock = DaemonLock::acquire(&queue).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_names_the_path_and_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        // a directory where the lock file should be: it cannot be opened as a file
        let queue = dir.path().join("queue.db");
        std::fs::create_dir(lock_path(&queue)).unwrap();
        let e = DaemonLock::acquire(&queue).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "queue {}: cannot lock {}.lock: cannot open: ",
                queue.display(),
                queue.display()
            )),
            "{e}"
        );
    }
}
