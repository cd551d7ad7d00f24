//! Inbox directories (`[inbox]`): HR systems drop files, the running daemon queues them.
//!
//! Guarantees:
//! - **Only complete files.** Dot-files and names ending in `.tmp` or `.part` are never read (write
//!   under such a name, then rename into the directory). A file is taken only when its size and
//!   modification time are the same on two looks one `poll_interval` apart, so even a file written
//!   in place is not read half-written.
//! - **All or nothing, as `submit`.** The file is validated whole and queued in one transaction, then
//!   moved to `done/` with `NAME.report.json` beside it (what was queued), or, if any record breaks a
//!   rule, to `rejected/` with `NAME.report.json` listing each problem with its line; nothing of a
//!   rejected file is queued.
//! - **Crash-safe.** The move happens after the commit; a crash in between leaves the file in the
//!   inbox, and taking it again queues nothing new (every record is already queued: duplicates).
//! - A queue failure (disk full) leaves the file where it is, to be tried again at the next look.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{submit_file, HrKind, Issue, ReportArgs, SubmitError};
use crate::config::InboxConfig;
use crate::queue::Queue;

/// Figures of one inbox directory, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxSnapshot {
    pub path: String,
    /// Files queued and moved to `done/` since the daemon started.
    pub files_done: u64,
    /// Files refused and moved to `rejected/`.
    pub files_rejected: u64,
    /// Records newly queued from the inbox.
    pub records_queued: u64,
    pub last_file: Option<String>,
    pub last_error: Option<String>,
}

/// Shared figures, keyed by the `[inbox]` key (`approvals`, `archive_reports`, `leave_accruals`).
pub type InboxStats = Arc<Mutex<BTreeMap<String, InboxSnapshot>>>;

/// What lands beside a processed file.
#[derive(Debug, Serialize)]
struct FileReport<'a> {
    file: &'a str,
    kind: &'static str,
    /// `queued` or `rejected`.
    status: &'static str,
    processed_at: String,
    records: usize,
    queued: usize,
    duplicates: usize,
    errors: &'a [Issue],
}

fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

/// `dir/sub/name`, or `name.1`, `name.2`... if taken.
fn target(dir: &Path, sub: &str, name: &str) -> PathBuf {
    let base = dir.join(sub);
    let mut p = base.join(name);
    let mut i = 1;
    while p.exists()
        || base
            .join(format!(
                "{}.report.json",
                p.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ))
            .exists()
    {
        p = base.join(format!("{name}.{i}"));
        i += 1;
    }
    p
}

/// Creates every configured directory with its `done/` and `rejected/` (the daemon calls it before
/// it reports ready, so an HR system can drop files as soon as the service has started).
pub fn prepare(cfg: &InboxConfig, stats: &InboxStats) {
    for (_, key, dir) in &cfg.dirs() {
        for d in [dir.clone(), dir.join("done"), dir.join("rejected")] {
            if let Err(e) = std::fs::create_dir_all(&d) {
                tracing::error!(dir = %d.display(), error = %e, "inbox.{key}: cannot create the directory: check the path and its permissions");
            }
        }
        stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .path = dir.display().to_string();
    }
}

/// Watches every configured directory until `stop` (after [`prepare`]).
pub async fn run(
    cfg: InboxConfig,
    queue: Queue,
    wakes: HashMap<&'static str, Arc<Notify>>,
    stats: InboxStats,
    progress: Arc<crate::sender::SenderStats>,
    stop: CancellationToken,
) {
    let dirs = cfg.dirs();
    // validated with the configuration
    let encoding = cfg.text_encoding().unwrap_or(encoding_rs::UTF_8);
    let mut seen: HashMap<PathBuf, (u64, Option<SystemTime>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.poll_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut still = HashMap::new();
        for (kind, key, dir) in &dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) => {
                    note_error(&stats, key, format!("cannot list {}: {e}", dir.display()));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    !ignored(&name) && e.file_type().map(|t| t.is_file()).unwrap_or(false)
                })
                .map(|e| e.path())
                .collect();
            files.sort();
            for path in files {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let sig = (meta.len(), meta.modified().ok());
                if seen.get(&path) != Some(&sig) {
                    // first look, or still changing: take it at the next look if it stays so
                    still.insert(path, sig);
                    continue;
                }
                if stop.is_cancelled() {
                    return;
                }
                take(&queue, *kind, key, dir, &path, encoding, &stats).await;
                if let Some(w) = wakes.get(kind.queue_kind()) {
                    w.notify_one();
                }
                progress.bump();
            }
        }
        seen = still;
    }
}

fn note_error(stats: &InboxStats, key: &str, e: String) {
    stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.to_string())
        .or_default()
        .last_error = Some(e);
}

/// Queues one file and moves it with its report.
async fn take(
    queue: &Queue,
    kind: HrKind,
    key: &str,
    dir: &Path,
    path: &Path,
    encoding: &'static encoding_rs::Encoding,
    stats: &InboxStats,
) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let result = submit_file(queue, kind, path, &ReportArgs::default(), encoding).await;
    let (sub, report, issues) = match &result {
        Ok(r) => ("done", Some(r), Vec::new()),
        Err(SubmitError::Invalid { issues, .. }) => ("rejected", None, issues.clone()),
        Err(e) => {
            // a queue failure or an unreadable file: left in place, tried again
            tracing::error!(file = %path.display(), error = %e, "inbox.{key}: cannot take the file; it stays in the inbox and is tried again");
            note_error(stats, key, e.to_string());
            return;
        }
    };
    let to = target(dir, sub, &name);
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::error!(file = %path.display(), to = %to.display(), error = %e, "inbox.{key}: cannot move the file (its records are queued; taking it again queues nothing new)");
        note_error(stats, key, format!("cannot move {}: {e}", path.display()));
        return;
    }
    let shown = to.display().to_string();
    let body = FileReport {
        file: &shown,
        kind: kind.queue_kind(),
        status: if report.is_some() {
            "queued"
        } else {
            "rejected"
        },
        processed_at: chrono::Utc::now().to_rfc3339(),
        records: report.map(|r| r.records).unwrap_or(0),
        queued: report.map(|r| r.queued).unwrap_or(0),
        duplicates: report.map(|r| r.duplicates).unwrap_or(0),
        errors: &issues,
    };
    let report_path = PathBuf::from(format!("{shown}.report.json"));
    if let Err(e) = std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&body).unwrap_or_default() + "\n",
    ) {
        tracing::warn!(file = %report_path.display(), error = %e, "inbox.{key}: cannot write the report");
    }
    let mut g = stats.lock().unwrap_or_else(|p| p.into_inner());
    let s = g.entry(key.to_string()).or_default();
    s.last_file = Some(shown.clone());
    match report {
        Some(r) => {
            s.files_done += 1;
            s.records_queued += r.queued as u64;
            tracing::info!(file = %shown, records = r.records, queued = r.queued, duplicates = r.duplicates, "inbox.{key}: file queued and moved to done/");
        }
        None => {
            s.files_rejected += 1;
            let first = issues.first().map(|i| i.to_string()).unwrap_or_default();
            s.last_error = Some(format!("{name}: {first}"));
            tracing::warn!(file = %shown, problems = issues.len(), first = %first, "inbox.{key}: file refused, nothing queued; moved to rejected/ with a report of every problem");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for n in [".x.csv", "a.csv.tmp", "a.json.part"] {
            assert!(ignored(n), "{n}");
        }
        assert!(!ignored("a.csv"));
    }

    #[test]
    fn targets_never_overwrite() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("done")).unwrap();
        assert_eq!(
            target(d.path(), "done", "a.csv"),
            d.path().join("done/a.csv")
        );
        std::fs::write(d.path().join("done/a.csv"), "").unwrap();
        assert_eq!(
            target(d.path(), "done", "a.csv"),
            d.path().join("done/a.csv.1")
        );
    }
}
