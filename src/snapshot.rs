//! What the running daemon writes every few seconds for `clockbridge status`, which runs in another
//! process (and for `/status`): its figures and its health verdict. The daemon writes it
//! ([`crate::daemon`], through a [`SnapshotWriter`]); [`crate::status`] reads it.
//!
//! It goes to two places, and `status` believes the newer:
//! - the queue's `runtime` table (row [`RUNTIME_KEY`]), with the queue's own guarantees;
//! - the status file beside the queue (`QUEUE.status`, e.g. `/var/lib/clockbridge/queue.db.status`),
//!   written in place into [`FILE_RESERVE`] bytes reserved (written, not only allocated) when the
//!   daemon starts. A full disk refuses every write to the queue, the snapshot's row included, but
//!   not a write over bytes the file already has: so while the disk is full, `status` still shows
//!   the daemon's live figures and the storage condition, instead of its last snapshot from before
//!   (issue 16, break 3). A snapshot larger than the reserve makes the file grow (while there is
//!   space). Where the file cannot be written at all, the table alone is used.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::health::Condition;
use crate::inbox::InboxSnapshot;
use crate::queue::Queue;
use crate::sender::SenderSnapshot;
use crate::sources::DeviceSnapshot;

/// Key of the daemon's snapshot in the queue's `runtime` table.
pub const RUNTIME_KEY: &str = "daemon";

/// Bytes the status file keeps for its snapshot: room for a hundred devices and every condition.
pub const FILE_RESERVE: u64 = 128 * 1024;

/// What the daemon writes for `status` every few seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeSnapshot {
    pub pid: u32,
    pub version: String,
    pub started_at: i64,
    pub devices: HashMap<String, DeviceSnapshot>,
    pub sender: SenderSnapshot,
    pub mapping_rows: Option<usize>,
    /// The senders of every lane but the punch lane (`sender`), by queue kind (`user_approval`,
    /// `archive_report`, `leave_accrual`).
    #[serde(default)]
    pub senders: BTreeMap<String, SenderSnapshot>,
    /// The inbox directories, by `[inbox]` key.
    #[serde(default)]
    pub inbox: BTreeMap<String, InboxSnapshot>,
    /// The health model's conditions when the snapshot was taken (none: healthy); see
    /// [`crate::health`].
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last scheduled reconcile (`[reconcile] schedule`), once one has run.
    #[serde(default)]
    pub reconcile: Option<crate::reconcile::schedule::LastCheck>,
}

impl RuntimeSnapshot {
    /// The snapshot with the last scheduled reconcile in it.
    pub fn with_reconcile(mut self, last: &crate::reconcile::schedule::Shared) -> RuntimeSnapshot {
        self.reconcile = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self
    }
}

/// The status file of the queue at `queue`: `QUEUE.status` beside it.
pub fn file_path(queue: &Path) -> PathBuf {
    crate::queue::side_file(queue, ".status")
}

/// The status file's content: one JSON object, then spaces up to the file's length.
#[derive(Serialize, Deserialize)]
struct Stored<S> {
    /// When the snapshot was taken (Unix ms).
    at: i64,
    snapshot: S,
}

/// The status file, open for the daemon's life.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    /// The file's length: every write covers it all (the JSON, then spaces).
    len: u64,
}

impl SnapshotFile {
    /// Opens (or creates) the status file of the queue at `queue` and reserves [`FILE_RESERVE`]
    /// bytes in it by writing them.
    pub fn create(queue: &Path) -> std::io::Result<SnapshotFile> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(file_path(queue))?;
        let len = file.metadata()?.len();
        if len < FILE_RESERVE {
            // written, not only allocated: an allocated but unwritten extent may need space of its
            // own on the first write (ext4), which a full disk does not have
            file.write_all_at(&vec![b' '; (FILE_RESERVE - len) as usize], len)?;
        }
        Ok(SnapshotFile {
            file,
            len: len.max(FILE_RESERVE),
        })
    }

    /// Writes `snapshot`, taken at `at_ms` (Unix ms), over the previous one.
    pub fn write(&mut self, snapshot: &RuntimeSnapshot, at_ms: i64) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(&Stored {
            at: at_ms,
            snapshot,
        })?;
        text.push(b'\n');
        let len = (text.len() as u64).max(self.len);
        text.resize(len as usize, b' ');
        self.file.write_all_at(&text, 0)?;
        self.len = len;
        Ok(())
    }
}

/// The snapshot in the status file of the queue at `queue`, and when it was taken (Unix ms);
/// `None` when there is none or it cannot be read (a write under way: the table's copy serves).
pub fn read_file(queue: &Path) -> Option<(RuntimeSnapshot, i64)> {
    let text = std::fs::read(file_path(queue)).ok()?;
    let stored: Stored<RuntimeSnapshot> = serde_json::from_slice(text.trim_ascii()).ok()?;
    Some((stored.snapshot, stored.at))
}

/// Writes the daemon's snapshots to the queue's `runtime` table and to the status file.
#[derive(Clone)]
pub struct SnapshotWriter {
    queue: Queue,
    file: Option<Arc<Mutex<SnapshotFile>>>,
}

impl SnapshotWriter {
    /// A writer for `queue`; prepares its status file (a WARN when it cannot: `status` then has
    /// only the table's copy, which a full disk stops).
    pub fn new(queue: Queue) -> SnapshotWriter {
        let file = match SnapshotFile::create(queue.path()) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                tracing::warn!(
                    "status file {}: cannot prepare it: {e}: `clockbridge status` shows only what the daemon last wrote into the queue (nothing new while the queue's disk is full)",
                    file_path(queue.path()).display()
                );
                None
            }
        };
        SnapshotWriter { queue, file }
    }

    /// Writes `snapshot` to both places (failures are logged at DEBUG: the health model reports
    /// the queue's; a failing status file was reported at start, or is on the queue's disk).
    pub async fn write(&self, snapshot: &RuntimeSnapshot) {
        let at = crate::queue::now_ms();
        if let Some(file) = &self.file {
            let (file, snap) = (file.clone(), snapshot.clone());
            let written = tokio::task::spawn_blocking(move || {
                file.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(&snap, at)
            })
            .await;
            if let Ok(Err(e)) = written {
                tracing::debug!(error = %e, "status file not written");
            }
        }
        match serde_json::to_string(snapshot) {
            Ok(json) => {
                if let Err(e) = self.queue.put_runtime(RUNTIME_KEY, json).await {
                    tracing::debug!(error = %e, "status snapshot not written to the queue");
                }
            }
            Err(e) => tracing::debug!(error = %e, "status snapshot not serialised"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pid: u32, devices: usize) -> RuntimeSnapshot {
        RuntimeSnapshot {
            reconcile: None,
            pid,
            version: "0.1.0".into(),
            devices: (0..devices)
                .map(|i| (format!("door-{i}"), DeviceSnapshot::default()))
                .collect(),
            ..RuntimeSnapshot::default()
        }
    }

    #[test]
    fn the_status_file_is_reserved_once_and_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue.db");
        assert!(read_file(&queue).is_none());
        let mut f = SnapshotFile::create(&queue).unwrap();
        assert_eq!(
            std::fs::metadata(file_path(&queue)).unwrap().len(),
            FILE_RESERVE
        );
        // nothing written yet: spaces only
        assert!(read_file(&queue).is_none());

        f.write(&snap(42, 3), 1_000).unwrap();
        let (s, at) = read_file(&queue).unwrap();
        assert_eq!((s.pid, s.devices.len(), at), (42, 3, 1_000));
        // a shorter one replaces it whole, in the same bytes
        f.write(&snap(42, 0), 2_000).unwrap();
        let (s, at) = read_file(&queue).unwrap();
        assert_eq!((s.devices.len(), at), (0, 2_000));
        assert_eq!(
            std::fs::metadata(file_path(&queue)).unwrap().len(),
            FILE_RESERVE
        );

        // a larger one than the reserve grows the file, and stays readable when shorter again
        f.write(&snap(42, 2_000), 3_000).unwrap();
        let grown = std::fs::metadata(file_path(&queue)).unwrap().len();
        assert!(grown > FILE_RESERVE);
        assert_eq!(read_file(&queue).unwrap().0.devices.len(), 2_000);
        f.write(&snap(42, 1), 4_000).unwrap();
        assert_eq!(read_file(&queue).unwrap().0.devices.len(), 1);
        assert_eq!(std::fs::metadata(file_path(&queue)).unwrap().len(), grown);

        // the next daemon keeps the file and its reserve
        drop(f);
        let mut f = SnapshotFile::create(&queue).unwrap();
        assert_eq!(read_file(&queue).unwrap().1, 4_000);
        f.write(&snap(7, 1), 5_000).unwrap();
        assert_eq!(read_file(&queue).unwrap().0.pid, 7);
    }
}
