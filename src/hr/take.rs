//! Taking one HR file: checked whole, then queued in chunks — in time linear in its size, in memory
//! that does not grow with it (but for 8 bytes per approval item), and never on the async runtime's
//! threads nor holding the queue's thread for more than one chunk.
//!
//! 1. **Check** ([`check`]): the file is read as a stream ([`super::input::Units`]) and every record is
//!    checked against its page; the records are built and dropped. For approvals the hash of each
//!    item's unique key is kept; when two hashes agree the file is read once more to find the real
//!    duplicates and their lines. The first [`ISSUES_KEPT`] problems are kept (reading stops there).
//!    Any problem: nothing is queued.
//! 2. **Queue** ([`queue_checked`]): the file is read again from the same open file and its records are
//!    inserted [`INSERT_CHUNK`] at a time, each chunk in its own transaction through the queue's
//!    public insert API. Between two chunks the queue's thread serves everyone else (ingest commits,
//!    the senders' claims, the watchdog's question).
//!
//! **A crash between two chunks** leaves the first chunks committed and the file where it was: taking
//! it again inserts every record again, and the queue's unique keys make the ones already there
//! duplicates, so exactly what was missing is queued (approvals are keyed by their idempotent id;
//! report rows and accrual updates by target and value). The inbox moves the file only after the last
//! chunk committed. A file that changes between the two readings (written in place while being taken)
//! is noticed (a record that no longer passes, a different count, size or time) and left to be taken
//! again whole.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::input::{Problem, Unit, Units};
use super::{
    accruals, approvals, names, queue_records, reports, HrKind, Issue, ReportArgs, SubmitError,
    SubmitReport,
};
use crate::queue::{InsertStatus, NewRecord, Queue};

/// Records inserted per transaction.
pub const INSERT_CHUNK: usize = 1000;
/// Problems kept (and reported) per file; the check stops at this many.
pub const ISSUES_KEPT: usize = 1000;
/// Records listed by name in a [`SubmitReport`] (`submit --json`).
pub const ITEMS_LISTED: usize = 10_000;

/// How a file is taken.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub args: ReportArgs,
    pub encoding: &'static encoding_rs::Encoding,
    /// Larger files are refused unread (`[inbox] max_file_size`, `submit --max-file-size`).
    pub max_file_size: Option<u64>,
    /// Checked between records and chunks: the work stops, and the file is left as it is.
    pub stop: Option<CancellationToken>,
    /// Refuse a path that is (or became) a symbolic link (the inbox; `submit` follows links).
    pub no_symlink: bool,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            args: ReportArgs::default(),
            encoding: encoding_rs::UTF_8,
            max_file_size: None,
            stop: None,
            no_symlink: false,
        }
    }
}

/// A file that passed the check.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub records: usize,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

/// Takes the file at `path`: checks it whole, then queues it in chunks. Blocking: run it on a
/// blocking thread; `rt` is the runtime the queue's async calls are driven on.
pub fn take(
    queue: &Queue,
    rt: &tokio::runtime::Handle,
    kind: HrKind,
    path: &Path,
    opts: &SubmitOptions,
) -> Result<SubmitReport, SubmitError> {
    let shown = names::escape_path(path);
    let file = File::open(path).map_err(|e| SubmitError::Read {
        path: shown.clone(),
        source: e,
    })?;
    if opts.no_symlink {
        // what was opened must be the regular file that is at the path now, not a link's target
        use std::os::unix::fs::MetadataExt;
        let opened = file.metadata();
        let here = std::fs::symlink_metadata(path);
        let same = matches!((&opened, &here), (Ok(a), Ok(b))
            if b.file_type().is_file() && a.dev() == b.dev() && a.ino() == b.ino());
        if !same {
            return Err(SubmitError::Read {
                path: shown,
                source: std::io::Error::other(
                    "not a regular file (a symbolic link?): only files themselves are taken",
                ),
            });
        }
    }
    let checked = check(&file, kind, path, opts)?;
    queue_checked(queue, rt, &file, kind, path, opts, checked)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The records of one unit, or its problems.
fn records_of(kind: HrKind, unit: &Unit, args: &ReportArgs) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let one = std::slice::from_ref(unit);
    match kind {
        HrKind::Approvals => approvals::records(one),
        HrKind::ArchiveReport => reports::records(one, args),
        HrKind::LeaveAccruals => accruals::records(one),
    }
}

/// Counts the bytes read and fails once there are more than the limit (a file that grows while read).
struct Limited<R> {
    inner: R,
    read: Arc<AtomicU64>,
    max: Option<u64>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.max.is_some_and(|m| total > m) {
            return Err(std::io::Error::other(
                "the file is larger than max_file_size",
            ));
        }
        Ok(n)
    }
}

/// The file's units from its start.
fn units<'f>(
    file: &'f File,
    path: &Path,
    opts: &SubmitOptions,
) -> Result<(Units<Limited<&'f File>>, Arc<AtomicU64>), SubmitError> {
    let shown = names::escape_path(path);
    let meta = file.metadata().map_err(|e| SubmitError::Read {
        path: shown.clone(),
        source: e,
    })?;
    if let Some(max) = opts.max_file_size {
        if meta.len() > max {
            return Err(SubmitError::TooLarge {
                path: shown,
                size: meta.len(),
                max,
            });
        }
    }
    let mut f = file;
    f.seek(SeekFrom::Start(0)).map_err(|e| SubmitError::Read {
        path: shown,
        source: e,
    })?;
    let read = Arc::new(AtomicU64::new(0));
    let limited = Limited {
        inner: file,
        read: read.clone(),
        max: opts.max_file_size,
    };
    Ok((Units::new(limited, &name_of(path), opts.encoding), read))
}

/// The error for a read that failed (or found the file grown past the limit).
fn read_failed(
    path: &Path,
    e: std::io::Error,
    read: &AtomicU64,
    opts: &SubmitOptions,
) -> SubmitError {
    let size = read.load(Ordering::Relaxed);
    match opts.max_file_size {
        Some(max) if size > max => SubmitError::TooLarge {
            path: names::escape_path(path),
            size,
            max,
        },
        _ => SubmitError::Read {
            path: names::escape_path(path),
            source: e,
        },
    }
}

fn stopping(opts: &SubmitOptions) -> bool {
    opts.stop.as_ref().is_some_and(|s| s.is_cancelled())
}

/// Step 1: every record of the file checked, nothing kept but counts, problems and (approvals) one
/// hash per item.
pub fn check(
    file: &File,
    kind: HrKind,
    path: &Path,
    opts: &SubmitOptions,
) -> Result<Checked, SubmitError> {
    let shown = names::escape_path(path);
    let (size, modified) = file
        .metadata()
        .map(|m| (m.len(), m.modified().ok()))
        .map_err(|e| SubmitError::Read {
            path: shown.clone(),
            source: e,
        })?;
    let hasher = std::hash::RandomState::new();
    let mut hashes: Vec<u64> = Vec::new();
    let mut issues = Vec::new();
    let mut records = 0usize;
    let mut complete = true;
    let (reader, read) = units(file, path, opts)?;
    for (n, u) in reader.enumerate() {
        if n % 256 == 0 && stopping(opts) {
            return Err(SubmitError::Stopped {
                path: shown,
                queued: 0,
            });
        }
        match u {
            Ok(unit) => match records_of(kind, &unit, &opts.args) {
                Ok(recs) => {
                    records += recs.len();
                    if kind == HrKind::Approvals {
                        hashes.extend(recs.iter().map(|r| hasher.hash_one(&r.ukey)));
                    }
                }
                Err(is) => issues.extend(is),
            },
            Err(Problem::Issue(i)) => issues.push(i),
            Err(Problem::Io(e)) => return Err(read_failed(path, e, &read, opts)),
        }
        if issues.len() >= ISSUES_KEPT {
            issues.truncate(ISSUES_KEPT);
            complete = false;
            break;
        }
    }
    if kind == HrKind::Approvals && complete {
        hashes.sort_unstable();
        let mut suspects: Vec<u64> = hashes
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        drop(hashes);
        suspects.dedup();
        if !suspects.is_empty() {
            complete = duplicates(file, path, opts, &hasher, &suspects, &mut issues)?;
        }
    }
    if issues.is_empty() {
        return Ok(Checked {
            records,
            size,
            modified,
        });
    }
    issues.sort_by_key(|i| i.line);
    Err(SubmitError::Invalid {
        kind,
        path: shown,
        issues,
        complete,
    })
}

/// Reads the file again for the approval items whose key hash is among `suspects`, and reports each
/// item whose type and id came before. Returns whether every problem was kept.
fn duplicates(
    file: &File,
    path: &Path,
    opts: &SubmitOptions,
    hasher: &std::hash::RandomState,
    suspects: &[u64],
    issues: &mut Vec<Issue>,
) -> Result<bool, SubmitError> {
    let mut first: HashMap<String, u64> = HashMap::new();
    let (reader, read) = units(file, path, opts)?;
    for u in reader {
        let unit = match u {
            Ok(u) => u,
            Err(Problem::Io(e)) => return Err(read_failed(path, e, &read, opts)),
            Err(Problem::Issue(_)) => continue,
        };
        let Ok(recs) = records_of(HrKind::Approvals, &unit, &opts.args) else {
            continue;
        };
        for r in recs {
            if suspects.binary_search(&hasher.hash_one(&r.ukey)).is_err() {
                continue;
            }
            let line = unit.line();
            if let Some(at) = first.get(&r.ukey) {
                let item = r.ukey.split_once(':').map(|(t, _)| t).unwrap_or("item");
                issues.push(Issue::new(
                    line,
                    format!(
                        "{item} with idempotent_id {:?} appears twice in the file (first on line {at}): each item needs its own id",
                        r.idem
                    ),
                ));
                if issues.len() >= ISSUES_KEPT {
                    return Ok(false);
                }
            } else {
                first.insert(r.ukey, line);
            }
        }
    }
    Ok(true)
}

/// Step 2: the checked file read again and queued, [`INSERT_CHUNK`] records per transaction.
pub fn queue_checked(
    queue: &Queue,
    rt: &tokio::runtime::Handle,
    file: &File,
    kind: HrKind,
    path: &Path,
    opts: &SubmitOptions,
    checked: Checked,
) -> Result<SubmitReport, SubmitError> {
    let shown = names::escape_path(path);
    let changed = |queued| SubmitError::Changed {
        path: shown.clone(),
        queued,
    };
    let now = file.metadata().map(|m| (m.len(), m.modified().ok())).ok();
    if now != Some((checked.size, checked.modified)) {
        return Err(changed(0));
    }
    let (reader, read) = units(file, path, opts)?;
    let mut report = SubmitReport {
        file: shown.clone(),
        kind,
        records: 0,
        queued: 0,
        duplicates: 0,
        items: Vec::new(),
        items_omitted: 0,
    };
    let mut chunk: Vec<NewRecord> = Vec::with_capacity(INSERT_CHUNK);
    let flush = |chunk: &mut Vec<NewRecord>, report: &mut SubmitReport| {
        if chunk.is_empty() {
            return Ok(());
        }
        for r in chunk.iter() {
            if report.items.len() < ITEMS_LISTED {
                report
                    .items
                    .push(format!("{} {} {}", r.kind, r.subject, r.idem));
            } else {
                report.items_omitted += 1;
            }
        }
        let n = chunk.len();
        let statuses = rt.block_on(queue_records(queue, kind, std::mem::take(chunk)))?;
        let dups = statuses
            .iter()
            .filter(|s| **s == InsertStatus::Duplicate)
            .count();
        report.records += n;
        report.duplicates += dups;
        report.queued += n - dups;
        Ok::<(), SubmitError>(())
    };
    // a chunk not yet inserted when the work stops or the file turns out changed is dropped: what is
    // committed is always a prefix of the checked file
    for u in reader {
        if stopping(opts) {
            return Err(SubmitError::Stopped {
                path: shown,
                queued: report.queued,
            });
        }
        match u {
            Ok(unit) => match records_of(kind, &unit, &opts.args) {
                Ok(recs) => chunk.extend(recs),
                Err(_) => return Err(changed(report.queued)),
            },
            Err(Problem::Io(e)) => return Err(read_failed(path, e, &read, opts)),
            Err(Problem::Issue(_)) => return Err(changed(report.queued)),
        }
        if chunk.len() >= INSERT_CHUNK {
            flush(&mut chunk, &mut report)?;
        }
    }
    flush(&mut chunk, &mut report)?;
    if report.records != checked.records {
        return Err(changed(report.queued));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv(path: &Path, rows: std::ops::Range<usize>, bad: &[usize], dup: Option<(usize, usize)>) {
        let mut w = std::io::BufWriter::new(File::create(path).unwrap());
        writeln!(w, "type,user_id,date,start_time,end_time,idempotent_id,reason,unit,interval,uniq_id,name_ch,default_locale").unwrap();
        for i in rows {
            let id = match dup {
                Some((a, b)) if i == b => a,
                _ => i,
            };
            let unit = if bad.contains(&i) { 9 } else { 1 };
            writeln!(w, "leave,u{},20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,HR-{id},family,{unit},28800,annual,年假,ch", i % 50).unwrap();
        }
    }

    fn queue() -> (tempfile::TempDir, Queue) {
        let d = tempfile::tempdir().unwrap();
        let (q, _) = Queue::open(&d.path().join("q.db")).unwrap();
        (d, q)
    }

    async fn run(q: &Queue, path: &Path, opts: SubmitOptions) -> Result<SubmitReport, SubmitError> {
        super::super::submit_file_with(q, HrKind::Approvals, path, &opts).await
    }

    #[tokio::test]
    async fn a_prefix_already_queued_by_an_interrupted_take_is_not_queued_again() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        // what an attempt interrupted after the first chunks had committed
        csv(&f, 0..2 * INSERT_CHUNK + 7, &[], None);
        let r = run(&q, &f, SubmitOptions::default()).await.unwrap();
        assert_eq!(
            (r.records, r.queued),
            (2 * INSERT_CHUNK + 7, 2 * INSERT_CHUNK + 7)
        );
        csv(&f, 0..3 * INSERT_CHUNK + 500, &[], None);
        let r = run(&q, &f, SubmitOptions::default()).await.unwrap();
        assert_eq!(r.records, 3 * INSERT_CHUNK + 500);
        assert_eq!(r.duplicates, 2 * INSERT_CHUNK + 7);
        assert_eq!(r.queued, INSERT_CHUNK + 493);
        assert_eq!(
            q.counts().await.unwrap().total.pending,
            (3 * INSERT_CHUNK + 500) as u64
        );
        assert_eq!(r.items.len() + r.items_omitted, r.records);
    }

    #[tokio::test]
    async fn a_duplicate_far_from_its_first_is_found_with_both_lines_and_nothing_is_queued() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        csv(&f, 0..20_000, &[], Some((5, 15_000)));
        match run(&q, &f, SubmitOptions::default()).await {
            Err(SubmitError::Invalid {
                issues, complete, ..
            }) => {
                assert!(complete);
                assert_eq!(issues.len(), 1, "{issues:?}");
                assert_eq!(issues[0].line, 15_002);
                assert!(
                    issues[0]
                        .message
                        .contains("\"HR-5\" appears twice in the file (first on line 7)"),
                    "{issues:?}"
                );
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(q.counts().await.unwrap().total.pending, 0);
    }

    #[tokio::test]
    async fn the_check_stops_after_the_kept_problems_and_says_so() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        let bad: Vec<usize> = (0..3000).collect();
        csv(&f, 0..3000, &bad, None);
        match run(&q, &f, SubmitOptions::default()).await {
            Err(e @ SubmitError::Invalid { .. }) => {
                let SubmitError::Invalid {
                    issues, complete, ..
                } = &e
                else {
                    unreachable!()
                };
                assert!(!complete);
                assert_eq!(issues.len(), ISSUES_KEPT);
                assert!(
                    e.to_string()
                        .contains("1000 problems or more: the check stopped there"),
                    "{e}"
                );
            }
            r => panic!("{r:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_over_the_limit_is_refused_unread() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        csv(&f, 0..10, &[], None);
        let opts = SubmitOptions {
            max_file_size: Some(100),
            ..SubmitOptions::default()
        };
        assert!(matches!(
            run(&q, &f, opts).await,
            Err(SubmitError::TooLarge { max: 100, .. })
        ));
    }

    #[tokio::test]
    async fn a_file_rewritten_between_its_check_and_its_queuing_is_not_queued() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        csv(&f, 0..10, &[], None);
        let opts = SubmitOptions::default();
        let file = File::open(&f).unwrap();
        let checked = check(&file, HrKind::Approvals, &f, &opts).unwrap();
        // written in place, with a bad row
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"leave,u1,2026,x,y,HR-x,family,1,1,annual,a,ch\n")
            .unwrap();
        let rt = tokio::runtime::Handle::current();
        let q2 = q.clone();
        let r = tokio::task::spawn_blocking(move || {
            queue_checked(&q2, &rt, &file, HrKind::Approvals, &f, &opts, checked)
        })
        .await
        .unwrap();
        assert!(
            matches!(r, Err(SubmitError::Changed { queued: 0, .. })),
            "{r:?}"
        );
        assert_eq!(q.counts().await.unwrap().total.pending, 0);
    }

    #[tokio::test]
    async fn a_stop_request_leaves_the_file_unqueued() {
        let (d, q) = queue();
        let f = d.path().join("a.csv");
        csv(&f, 0..10, &[], None);
        let stop = CancellationToken::new();
        stop.cancel();
        let opts = SubmitOptions {
            stop: Some(stop),
            ..SubmitOptions::default()
        };
        assert!(matches!(
            run(&q, &f, opts).await,
            Err(SubmitError::Stopped { queued: 0, .. })
        ));
    }
}
