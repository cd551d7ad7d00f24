//! Inbox directories (`[inbox]`): HR systems drop files, the running daemon queues them.
//!
//! Guarantees:
//! - **Only complete files.** Dot-files and names ending in `.tmp` or `.part` are never read (write
//!   under such a name, then rename into the directory). A file is taken only when its size and
//!   modification time are the same on two looks one `poll_interval` apart, so even a file written
//!   in place is not read half-written.
//! - **All or nothing, as `submit`.** The file is checked whole and queued ([`crate::hr::take`]: streamed,
//!   on a blocking thread, in chunks), then moved to `done/` with `NAME.report.json` beside it (what
//!   was queued), or, if any record breaks a rule, to `rejected/` with `NAME.report.json` listing each
//!   problem with its line; nothing of a rejected file is queued. A file over `max_file_size` is
//!   refused unread, the same way.
//! - **Crash-safe.** The move happens after the last chunk committed; a crash before that leaves the
//!   file in the inbox, and taking it again queues only what is missing (the rest are duplicates).
//! - **Never retried forever.** Before a file is taken, the attempt is recorded in
//!   `.clockbridge-taking.json` in its directory; a file during which the daemon died
//!   [`MAX_INTERRUPTED`] times (out of memory, killed, a crash) is set aside in `rejected/` with a
//!   report that says so. A file that cannot be moved is reported once and left alone until it
//!   changes; any other error is logged once (until it changes) and the file is tried again.
//! - **Nothing outside the inbox.** A symbolic link in the inbox is never followed: it is moved to
//!   `rejected/` with a report. A `done/` or `rejected/` that is not a real directory (a symbolic
//!   link that could lead elsewhere) stops the directory's work with an ERROR and a `condition` in
//!   `status` until it is fixed.
//! - **Names are escaped** in every log line and report (see [`crate::hr::names`]); a name too long to
//!   gain `.report.json` (or `.1`) is shortened the same way every time.
//! - A queue failure (disk full) leaves the file where it is, to be tried again at the next look.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::InboxConfig;
use crate::hr::names::{escape, escape_path, escape_text, fit, NAME_MAX};
use crate::hr::{submit_file_with, HrKind, Issue, SubmitError, SubmitOptions, SubmitReport};
use crate::queue::Queue;

/// A file during which the daemon died this many times is set aside.
pub const MAX_INTERRUPTED: u32 = 3;
/// The record of the file being taken, in each inbox directory (a dot-file: never taken itself).
pub const MARKER: &str = ".clockbridge-taking.json";
const REPORT_SUFFIX: &str = ".report.json";

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
    /// What stops the directory's work while it lasts (`done/` is a symbolic link...).
    #[serde(default)]
    pub condition: Option<String>,
}

/// Shared figures, keyed by the `[inbox]` key (`approvals`, `archive_reports`, `leave_accruals`).
pub type InboxStats = Arc<Mutex<BTreeMap<String, InboxSnapshot>>>;

/// What lands beside a processed file.
#[derive(Debug, Serialize)]
struct FileReport<'a> {
    /// Where the file is now.
    file: &'a str,
    /// Its name in the inbox (escaped).
    name: &'a str,
    kind: &'static str,
    /// `queued` or `rejected`.
    status: &'static str,
    processed_at: String,
    records: usize,
    queued: usize,
    duplicates: usize,
    errors: &'a [Issue],
    /// Every problem is listed (false: the check stopped after the first ones).
    complete: bool,
}

/// The attempt in progress, as [`MARKER`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Attempt {
    /// The file's name, escaped.
    name: String,
    size: u64,
    modified_ns: Option<u128>,
    /// Attempts started (the last one is the one in progress, or interrupted).
    attempts: u32,
}

fn ignored(name: &OsStr) -> bool {
    let b = std::os::unix::ffi::OsStrExt::as_bytes(name);
    b.starts_with(b".") || b.ends_with(b".tmp") || b.ends_with(b".part")
}

fn taken(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// `dir/sub/name`, or `name.1`, `name.2`... if taken; always short enough for `.report.json`.
fn target(dir: &Path, sub: &str, name: &OsStr) -> PathBuf {
    let base = dir.join(sub);
    let room = NAME_MAX - REPORT_SUFFIX.len();
    let mut i = 0u64;
    loop {
        let suffix = if i == 0 {
            String::new()
        } else {
            format!(".{i}")
        };
        let n = fit(name, &suffix, room);
        let p = base.join(&n);
        if !taken(&p) && !taken(&report_path(&p)) {
            return p;
        }
        i += 1;
    }
}

fn report_path(moved: &Path) -> PathBuf {
    let mut n: OsString = moved.file_name().unwrap_or_default().to_owned();
    n.push(REPORT_SUFFIX);
    moved.with_file_name(n)
}

/// Why `dir/sub` cannot receive files, if it cannot (created when missing).
fn unsafe_subdir(dir: &Path, sub: &str) -> Option<String> {
    let p = dir.join(sub);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => None,
        Ok(m) if m.file_type().is_symlink() => Some(format!(
            "{} is a symbolic link{}: files are never moved through it (it could lead outside the inbox); replace it with a directory",
            escape_path(&p),
            std::fs::read_link(&p)
                .map(|t| format!(" (to {})", escape_path(&t)))
                .unwrap_or_default()
        )),
        Ok(_) => Some(format!(
            "{} is not a directory: replace it with one",
            escape_path(&p)
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&p) {
            Ok(()) => None,
            Err(e) => Some(format!("cannot create {}: {e}", escape_path(&p))),
        },
        Err(e) => Some(format!("cannot look at {}: {e}", escape_path(&p))),
    }
}

/// Creates every configured directory with its `done/` and `rejected/` (the daemon calls it before
/// it reports ready, so an HR system can drop files as soon as the service has started).
pub fn prepare(cfg: &InboxConfig, stats: &InboxStats) {
    for (_, key, dir) in &cfg.dirs() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::error!(dir = %escape_path(dir), error = %e, "inbox.{key}: cannot create the directory: check the path and its permissions");
        }
        let why = ["done", "rejected"]
            .iter()
            .find_map(|sub| unsafe_subdir(dir, sub));
        if let Some(w) = &why {
            tracing::error!("inbox.{key}: {w}; no file of this directory is taken until then");
        }
        let mut g = stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.entry(key.to_string()).or_default();
        s.path = dir.display().to_string();
        // (the watcher logs it again only when it changes)
        s.condition = why;
    }
}

/// What the watcher remembers between looks.
#[derive(Default)]
struct Memory {
    /// Size and time of each candidate at the previous look.
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    /// The last error logged per file (logged again only when it changes).
    logged: HashMap<PathBuf, String>,
    /// Files whose records are queued but that could not be moved: left alone while unchanged.
    stuck: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    /// Entries reported once that stay (a symbolic link that cannot be moved).
    reported: HashSet<PathBuf>,
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
    let opts = SubmitOptions {
        // validated with the configuration
        encoding: cfg.text_encoding().unwrap_or(encoding_rs::UTF_8),
        max_file_size: Some(cfg.max_file_size),
        stop: Some(stop.clone()),
        no_symlink: true,
        ..SubmitOptions::default()
    };
    let mut mem = Memory::default();
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.poll_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut still = HashMap::new();
        for (kind, key, dir) in &dirs {
            let ctx = Ctx {
                queue: &queue,
                kind: *kind,
                key,
                dir,
                stats: &stats,
                opts: &opts,
            };
            // the places files are moved to must be real directories inside the inbox
            let why = ["done", "rejected"]
                .iter()
                .find_map(|sub| unsafe_subdir(dir, sub));
            if ctx.set_condition(why) {
                continue;
            }
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) => {
                    let msg = format!("cannot list {}: {e}", escape_path(dir));
                    ctx.log_once(&mut mem, dir, &msg);
                    note_error(&stats, key, msg);
                    continue;
                }
            };
            let mut files = Vec::new();
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                if ignored(&name) {
                    continue;
                }
                match e.file_type() {
                    Ok(t) if t.is_symlink() => {
                        let path = e.path();
                        if !mem.reported.contains(&path) {
                            ctx.set_aside_link(&mut mem, &path, &name);
                        }
                    }
                    Ok(t) if t.is_file() => files.push(e.path()),
                    _ => {}
                }
            }
            files.sort();
            for path in files {
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let sig = (meta.len(), meta.modified().ok());
                if mem.stuck.get(&path) == Some(&sig) {
                    continue;
                }
                if mem.seen.get(&path) != Some(&sig) {
                    // first look, or still changing: take it at the next look if it stays so
                    still.insert(path, sig);
                    continue;
                }
                if stop.is_cancelled() {
                    return;
                }
                ctx.take(&mut mem, &path, sig).await;
                if let Some(w) = wakes.get(kind.queue_kind()) {
                    w.notify_one();
                }
                progress.bump();
            }
        }
        mem.seen = still;
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

fn modified_ns(t: Option<SystemTime>) -> Option<u128> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
}

/// One directory's work.
struct Ctx<'a> {
    queue: &'a Queue,
    kind: HrKind,
    key: &'a str,
    dir: &'a Path,
    stats: &'a InboxStats,
    opts: &'a SubmitOptions,
}

impl Ctx<'_> {
    /// Sets (or clears) the directory's condition, logging the change; true while there is one.
    fn set_condition(&self, why: Option<String>) -> bool {
        let key = self.key;
        let mut g = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.entry(key.to_string()).or_default();
        if s.condition != why {
            match &why {
                Some(w) => tracing::error!(
                    "inbox.{key}: {w}; no file of this directory is taken until then"
                ),
                None => {
                    tracing::info!("inbox.{key}: the directory is usable again; files are taken")
                }
            }
            s.condition = why.clone();
        }
        why.is_some()
    }

    /// Logs `msg` about `path` as an ERROR unless it is what was logged last for it.
    fn log_once(&self, mem: &mut Memory, path: &Path, msg: &str) {
        if mem.logged.get(path).map(String::as_str) != Some(msg) {
            tracing::error!("inbox.{}: {msg}", self.key);
            mem.logged.insert(path.to_path_buf(), msg.to_string());
        }
    }

    fn read_attempt(&self) -> Option<Attempt> {
        let text = std::fs::read(self.dir.join(MARKER)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write_attempt(&self, a: &Attempt) {
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let body = serde_json::to_vec(a).unwrap_or_default();
        let r =
            std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, self.dir.join(MARKER)));
        if let Err(e) = r {
            tracing::warn!(error = %e, "inbox.{}: cannot record the attempt in {MARKER}: a file the daemon dies on would be tried again at every start", self.key);
        }
    }

    fn clear_attempt(&self) {
        let _ = std::fs::remove_file(self.dir.join(MARKER));
    }

    /// Takes one file: the crash-loop guard, the work, the move and the report.
    async fn take(&self, mem: &mut Memory, path: &Path, sig: (u64, Option<SystemTime>)) {
        let key = self.key;
        let name = path.file_name().unwrap_or_default().to_owned();
        let shown = escape_path(path);
        let prev = self.read_attempt();
        let this = Attempt {
            name: escape(&name),
            size: sig.0,
            modified_ns: modified_ns(sig.1),
            attempts: 1,
        };
        let attempts = match prev {
            Some(p)
                if Attempt {
                    attempts: 1,
                    ..p.clone()
                } == this =>
            {
                p.attempts + 1
            }
            _ => 1,
        };
        if attempts > MAX_INTERRUPTED {
            let msg = format!(
                "the daemon stopped {} times while taking this file (killed, out of memory, or a crash) and it is set aside so that it cannot stop the daemon again; records already queued from it stay queued (each once); find the cause in the log (the \"taking the file\" lines), then put the file back to queue the rest",
                attempts - 1
            );
            tracing::error!(file = %shown, attempts = attempts - 1, "inbox.{key}: the daemon died while taking this file {} times: moving it to rejected/ with a report", attempts - 1);
            self.finish(mem, path, &name, sig, Err(vec![Issue::new(0, msg)]), true);
            self.clear_attempt();
            return;
        }
        tracing::info!(file = %shown, bytes = sig.0, attempt = attempts, "inbox.{key}: taking the file");
        self.write_attempt(&Attempt { attempts, ..this });
        let result = submit_file_with(self.queue, self.kind, path, self.opts).await;
        match result {
            Ok(r) => {
                self.finish(mem, path, &name, sig, Ok(&r), true);
            }
            Err(SubmitError::Invalid {
                issues, complete, ..
            }) => {
                self.finish(mem, path, &name, sig, Err(issues), complete);
            }
            Err(e @ (SubmitError::TooLarge { .. } | SubmitError::Failed { .. })) => {
                let msg = e.to_string();
                self.finish(mem, path, &name, sig, Err(vec![Issue::new(0, msg)]), true);
            }
            Err(e @ SubmitError::Stopped { .. }) => {
                tracing::info!(file = %shown, "inbox.{key}: {e}");
            }
            Err(e) => {
                // a queue failure, an unreadable file, a file changed while taken: tried again
                let msg = format!("{e}; the file stays in the inbox and is tried again");
                self.log_once(mem, path, &msg);
                note_error(self.stats, key, e.to_string());
            }
        }
        self.clear_attempt();
    }

    /// A symbolic link in the inbox: moved to `rejected/` (the link itself) with a report.
    fn set_aside_link(&self, mem: &mut Memory, path: &Path, name: &OsStr) {
        let key = self.key;
        let to = std::fs::read_link(path)
            .map(|t| escape_path(&t))
            .unwrap_or_default();
        let msg = format!(
            "a symbolic link (to {to}): links are never followed (they could lead outside the inbox); put the file itself in the inbox"
        );
        tracing::error!(file = %escape_path(path), "inbox.{key}: {msg}; moving the link to rejected/");
        let meta = std::fs::symlink_metadata(path).ok();
        let sig = (
            meta.as_ref().map(|m| m.len()).unwrap_or(0),
            meta.and_then(|m| m.modified().ok()),
        );
        if !self.finish(mem, path, name, sig, Err(vec![Issue::new(0, msg)]), true) {
            mem.reported.insert(path.to_path_buf());
        }
    }

    /// Moves the file to `done/` (queued) or `rejected/` (problems) and writes its report; false if
    /// it could not be moved.
    fn finish(
        &self,
        mem: &mut Memory,
        path: &Path,
        name: &OsStr,
        sig: (u64, Option<SystemTime>),
        outcome: Result<&SubmitReport, Vec<Issue>>,
        complete: bool,
    ) -> bool {
        let key = self.key;
        let sub = if outcome.is_ok() { "done" } else { "rejected" };
        // checked again just before the move: a directory swapped for a link since the look is refused
        if self.set_condition(unsafe_subdir(self.dir, sub)) {
            return false;
        }
        let to = target(self.dir, sub, name);
        if let Err(e) = std::fs::rename(path, &to) {
            let msg = format!(
                "cannot move {} to {}: {e}{}; it is left alone until it changes",
                escape_path(path),
                escape_path(&to),
                if outcome.is_ok() {
                    " (its records are queued; taking it again queues nothing new)"
                } else {
                    ""
                }
            );
            self.log_once(mem, path, &msg);
            note_error(self.stats, key, msg);
            mem.stuck.insert(path.to_path_buf(), sig);
            return false;
        }
        mem.logged.remove(path);
        mem.stuck.remove(path);
        let shown = escape_path(&to);
        let name_shown = escape(name);
        let (report, issues) = match &outcome {
            Ok(r) => (Some(*r), &[][..]),
            Err(i) => (None, &i[..]),
        };
        let body = FileReport {
            file: &shown,
            name: &name_shown,
            kind: self.kind.queue_kind(),
            status: if report.is_some() {
                "queued"
            } else {
                "rejected"
            },
            processed_at: chrono::Utc::now().to_rfc3339(),
            records: report.map(|r| r.records).unwrap_or(0),
            queued: report.map(|r| r.queued).unwrap_or(0),
            duplicates: report.map(|r| r.duplicates).unwrap_or(0),
            errors: issues,
            complete,
        };
        let rp = report_path(&to);
        if let Err(e) = std::fs::write(
            &rp,
            serde_json::to_string_pretty(&body).unwrap_or_default() + "\n",
        ) {
            tracing::warn!(file = %escape_path(&rp), error = %e, "inbox.{key}: cannot write the report");
        }
        let mut g = self.stats.lock().unwrap_or_else(|p| p.into_inner());
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
                let first = escape_text(&issues.first().map(|i| i.to_string()).unwrap_or_default());
                s.last_error = Some(format!("{name_shown}: {first}"));
                tracing::warn!(file = %shown, problems = issues.len(), first = %first, "inbox.{key}: file refused, nothing queued; moved to rejected/ with a report of every problem");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for n in [".x.csv", "a.csv.tmp", "a.json.part", MARKER] {
            assert!(ignored(OsStr::new(n)), "{n}");
        }
        assert!(!ignored(OsStr::new("a.csv")));
    }

    #[test]
    fn targets_never_overwrite() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("done")).unwrap();
        let a = OsStr::new("a.csv");
        assert_eq!(target(d.path(), "done", a), d.path().join("done/a.csv"));
        std::fs::write(d.path().join("done/a.csv"), "").unwrap();
        assert_eq!(target(d.path(), "done", a), d.path().join("done/a.csv.1"));
        // a name of 254 bytes, twice: both moved names and their reports fit in 255 bytes
        let long = OsString::from(format!("{}.csv", "n".repeat(250)));
        let first = target(d.path(), "done", &long);
        std::fs::write(&first, "").unwrap();
        let second = target(d.path(), "done", &long);
        assert_ne!(first, second);
        for p in [&first, &second] {
            let r = report_path(p);
            assert!(r.file_name().unwrap().len() <= NAME_MAX, "{}", r.display());
            std::fs::write(&r, "").unwrap();
        }
    }
}
