//! `clockbridge import --device ID FILE...`: backfill a device's punches from exported log files
//! (a ZKTeco USB `attlog.dat`, a CSV export, anything the device's configured format reads).
//!
//! Guarantees:
//! - The same punch model, idempotent key and queue as live punches: importing a file twice, or a file
//!   that overlaps what the clock already sent, queues nothing new (each is counted as a duplicate).
//! - Constant memory: the file is streamed through the sources' line splitter
//!   ([`crate::sources::lines::FileLines`]: a fixed read buffer, lines capped at the device's
//!   `max_line_length`), with at most two batches of records in memory, whatever its size.
//! - Large transactions (one per batch of up to 5,000 records), each committed with
//!   `synchronous=FULL` before the summary counts it.
//! - Every line is accounted for: queued, duplicate, unmapped, dead (e.g. before 2022), or rejected with
//!   its line number and reason. A file that ends mid-line or holds binary data is reported as such.
//! - Safe beside a running daemon: rows the daemon has in flight are left alone, and the daemon picks
//!   the new rows up within seconds. The imported punches are backlog unless they are recent (see
//!   [`crate::punch::LIVE_WINDOW_SECS`]), so the daemon keeps sending live punches first; and the
//!   import pauses [`YIELD_TO_DAEMON`] after each transaction, so the daemon's own writes (a live
//!   punch's commit, its claims) wait for one transaction at most, not for the whole file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Config, DeviceConfig};
use crate::feishu::lanes::user_flows;
use crate::mapping::{Mapping, MappingError};
use crate::punch::normalise;
use crate::queue::{InsertStatus, NewRecord, Queue, QueueError};
use crate::sources::formats::{sample, LineParser};
use crate::sources::line_spec::{LineFormat, LineSpec};
use crate::sources::lines::FileLines;

/// The exit code of `clockbridge import` when a file's lines were all rejected (1: it could not run).
pub const EXIT_NOTHING_READ: u8 = 3;
/// Lines kept as they were read, to try other delimiters on when no line gave a punch.
const HINT_LINES: usize = 20;

/// Records per insert transaction.
pub const BATCH: usize = 5_000;

/// While a daemon runs on the queue, how long the import pauses after each transaction, so that
/// the daemon's own writes (a live punch's commit, claims, outcomes) get the queue between two of
/// its transactions instead of after the whole import: SQLite lets one process write at a time, and
/// the daemon's connection polls for the lock every millisecond (`queue::open`).
pub const YIELD_TO_DAEMON: Duration = Duration::from_millis(10);

/// Rejected lines listed in a report (all are counted).
pub const REJECTED_LISTED: usize = 50;

/// An import could not run at all (as opposed to lines it rejected).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import: device {device:?} is not in the configuration (devices: {known}): use --device with one of them")]
    UnknownDevice { device: String, known: String },
    #[error("import {path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("import: device {device}: {source}")]
    Format {
        device: String,
        source: crate::sources::formats::FormatError,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar on a terminal, plain periodic lines otherwise.
    Auto,
    /// Plain lines every few seconds.
    Plain,
    /// Nothing.
    Quiet,
}

/// A line that was not imported.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
    pub sample: String,
}

/// Punches of one file kept as dead letters for one reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeadReason {
    pub count: u64,
    /// The first such punch's message.
    pub first: String,
}

/// What became of one file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    pub path: String,
    pub bytes: u64,
    /// Lines read (empty lines included in the numbering, not counted here).
    pub lines: u64,
    /// Header lines consumed (`header = true`).
    pub headers: u64,
    pub queued: u64,
    pub duplicates: u64,
    pub unmapped: u64,
    pub dead: u64,
    pub rejected: u64,
    /// The first rejected lines, with their numbers.
    pub rejected_lines: Vec<Rejected>,
    /// The file's last line has no line ending (the export may have been cut short).
    pub ends_mid_line: bool,
    /// Lines holding control bytes (NUL and the like): a sign of a binary or damaged file.
    pub binary_lines: u64,
    /// Punches kept as dead letters, by reason (`before_2022`, `far_future`), with the first one's
    /// message (what is wrong with its time and what to check).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dead_reasons: std::collections::BTreeMap<String, DeadReason>,
    /// When no line gave a punch: what would (another `delimiter` for a csv device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub seconds: f64,
}

impl FileReport {
    /// Punches committed to the queue in any state.
    pub fn committed(&self) -> u64 {
        self.queued + self.unmapped + self.dead
    }

    /// Lines were read but none gave a punch (every one rejected): the wrong file, device or
    /// format. `clockbridge import` then exits with [`EXIT_NOTHING_READ`].
    pub fn nothing_read(&self) -> bool {
        self.rejected > 0 && self.committed() + self.duplicates == 0
    }

    /// The human summary of this file.
    pub fn render(&self) -> String {
        let mut o = format!(
            "{}: {} lines read in {:.1} s ({:.0} lines/s): {} punches queued, {} already known (duplicates), {} unmapped, {} dead, {} rejected\n",
            self.path,
            self.lines,
            self.seconds,
            self.lines as f64 / self.seconds.max(1e-9),
            self.queued,
            self.duplicates,
            self.unmapped,
            self.dead,
            self.rejected
        );
        for r in &self.rejected_lines {
            o.push_str(&format!("  line {}: {}: {}\n", r.line, r.reason, r.sample));
        }
        if self.rejected as usize > self.rejected_lines.len() {
            o.push_str(&format!(
                "  ... and {} more rejected lines\n",
                self.rejected as usize - self.rejected_lines.len()
            ));
        }
        if self.ends_mid_line {
            o.push_str("  warning: the file ends mid-line (no line ending after the last line): the export may have been cut short; check the last punch\n");
        }
        for (reason, d) in &self.dead_reasons {
            o.push_str(&format!(
                "  dead ({reason}): {}, kept as dead letters (clockbridge dlq list --reason {reason}); the first: {}\n",
                d.count, d.first
            ));
        }
        if let Some(h) = &self.hint {
            o.push_str(&format!("  hint: {h}\n"));
        }
        if self.binary_lines > 0 {
            o.push_str(&format!(
                "  warning: {} lines hold binary data (control bytes): is this the right file, and is it intact?\n",
                self.binary_lines
            ));
        }
        o
    }
}

/// One batch of records on its way to the queue.
struct Batch {
    records: Vec<NewRecord>,
}

/// Imports `files` for device `device_id` of `cfg` into the queue.
pub async fn import(
    cfg: &Config,
    device_id: &str,
    files: &[PathBuf],
    progress: Progress,
) -> Result<Vec<FileReport>, ImportError> {
    let device = cfg
        .device(device_id)
        .ok_or_else(|| ImportError::UnknownDevice {
            device: device_id.to_string(),
            known: cfg
                .devices
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?
        .clone();
    let lines = device.spec.lines().cloned().unwrap_or_default();
    let parser =
        LineParser::new(&device.id, device.tz(), &lines).map_err(|e| ImportError::Format {
            device: device.id.clone(),
            source: e,
        })?;
    let mapping = Arc::new(Mapping::load(&cfg.mapping)?);
    let path = cfg.queue.path.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open_beside_daemon(&path))
        .await
        .map_err(|e| QueueError::Open {
            path: cfg.queue.path.display().to_string(),
            reason: e.to_string(),
        })??;
    // a daemon on the queue (or one that may be: its lock cannot be looked at) gets a pause between
    // two transactions
    let target = Target {
        pause: match crate::queue::lock::probe(&cfg.queue.path) {
            crate::queue::lock::Probe::Free => None,
            _ => Some(YIELD_TO_DAEMON),
        },
        queue,
    };
    let mut reports = Vec::new();
    for file in files {
        reports.push(
            import_file(
                &target,
                &device,
                &parser,
                &mapping,
                cfg.queue.max_future_secs,
                file,
                progress,
            )
            .await?,
        );
    }
    Ok(reports)
}

/// Where the records go: the queue, and the pause after each transaction while a daemon runs.
struct Target {
    queue: Queue,
    pause: Option<Duration>,
}

async fn import_file(
    target: &Target,
    device: &DeviceConfig,
    parser: &LineParser,
    mapping: &Arc<Mapping>,
    max_future_secs: i64,
    file: &Path,
    progress: Progress,
) -> Result<FileReport, ImportError> {
    let started = Instant::now();
    let read_err = |e| ImportError::Read {
        path: file.display().to_string(),
        source: e,
    };
    let f = std::fs::File::open(file).map_err(read_err)?;
    let bytes = f.metadata().map_err(read_err)?.len();
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let bar = ProgressShow::new(progress, file, bytes);
    let reader = {
        let (device, parser, mapping, bar) =
            (device.clone(), parser.clone(), mapping.clone(), bar.clone());
        let path = file.display().to_string();
        tokio::task::spawn_blocking(move || {
            read_file(
                f,
                &path,
                &device,
                &parser,
                &mapping,
                max_future_secs,
                tx,
                &bar,
            )
        })
    };
    let mut report = FileReport::default();
    while let Some(batch) = rx.recv().await {
        let records = Arc::new(batch.records);
        let statuses = target.queue.insert(records.clone()).await?;
        for (st, rec) in statuses.into_iter().zip(records.iter()) {
            match st {
                InsertStatus::Pending => report.queued += 1,
                InsertStatus::Duplicate => report.duplicates += 1,
                InsertStatus::Unmapped => report.unmapped += 1,
                InsertStatus::Dead(reason) => {
                    report.dead += 1;
                    let r = report.dead_reasons.entry(reason).or_default();
                    r.count += 1;
                    if r.first.is_empty() {
                        r.first = rec.dead.as_ref().map(|d| d.1.clone()).unwrap_or_default();
                    }
                }
            }
        }
        if let Some(pause) = target.pause {
            tokio::time::sleep(pause).await;
        }
    }
    let read = reader.await.map_err(|e| ImportError::Read {
        path: file.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })??;
    bar.finish();
    report.path = file.display().to_string();
    report.bytes = bytes;
    report.lines = read.lines;
    report.headers = read.headers;
    report.rejected = read.rejected;
    report.rejected_lines = read.rejected_lines;
    report.ends_mid_line = read.ends_mid_line;
    report.binary_lines = read.binary_lines;
    report.hint = read.hint;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[derive(Default)]
struct ReadOutcome {
    lines: u64,
    headers: u64,
    rejected: u64,
    rejected_lines: Vec<Rejected>,
    ends_mid_line: bool,
    binary_lines: u64,
    hint: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn read_file(
    f: std::fs::File,
    path: &str,
    device: &DeviceConfig,
    parser: &LineParser,
    mapping: &Mapping,
    max_future_secs: i64,
    tx: mpsc::Sender<Batch>,
    bar: &ProgressShow,
) -> Result<ReadOutcome, ImportError> {
    let tz = device.tz();
    let location = device.location().to_string();
    let mut session = parser.session();
    // a kind without line keys (a ZKTeco terminal's USB export) reads with the defaults
    let max_line_length = device
        .spec
        .lines()
        .map_or(LineSpec::default().max_line_length, |l| l.max_line_length);
    let mut lines = FileLines::new(f, max_line_length);
    let mut out = ReadOutcome::default();
    let mut punches = 0u64;
    let mut first: Vec<Vec<u8>> = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut bytes_seen = 0u64;
    let now = chrono::Utc::now();
    let reject = |out: &mut ReadOutcome, no: u64, reason: String, text: &[u8]| {
        out.rejected += 1;
        if out.rejected_lines.len() < REJECTED_LISTED {
            out.rejected_lines.push(Rejected {
                line: no,
                reason,
                sample: sample(text),
            });
        }
    };
    loop {
        let next = lines.next_line().map_err(|e| ImportError::Read {
            path: path.to_string(),
            source: e,
        })?;
        let Some(line) = next else { break };
        out.lines += 1;
        let (no, text) = (line.no, line.text);
        if let Some(len) = line.too_long {
            bytes_seen += len as u64 + 1;
            reject(
                &mut out,
                no,
                format!("line of {len} bytes is longer than max_line_length ({max_line_length})"),
                text,
            );
        } else {
            bytes_seen += text.len() as u64 + 1;
            if text.iter().any(|&b| b < 0x20 && b != b'\t') {
                out.binary_lines += 1;
            }
            if first.len() < HINT_LINES {
                first.push(text.to_vec());
            }
            match session.parse(text) {
                Ok(Some(p)) => {
                    punches += 1;
                    let user = mapping.lookup(&p.device_id, &p.device_user_id);
                    let n = normalise(p, tz, &location, user.as_deref(), now, max_future_secs);
                    batch.push(user_flows::record(&n));
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.blocking_send(Batch { records: full }).is_err() {
                            break; // the inserting side failed; it reports why
                        }
                    }
                }
                Ok(None) => out.headers += 1,
                Err(e) => reject(&mut out, no, e.to_string(), text),
            }
        }
        if out.lines % 8192 == 0 {
            bar.set(bytes_seen, out.lines);
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Batch { records: batch });
    }
    out.ends_mid_line = lines.ended_mid_line();
    if punches == 0 && out.rejected > 0 {
        if let Some(spec) = device.spec.lines() {
            out.hint = delimiter_hint(&device.id, tz, spec, &first);
        }
    }
    bar.set(bytes_seen, out.lines);
    Ok(out)
}

/// For a csv device whose file gave no punch: the delimiter with which the first lines all read
/// as punches (or headers), said as the key to set.
fn delimiter_hint(
    device: &str,
    tz: chrono_tz::Tz,
    spec: &LineSpec,
    first: &[Vec<u8>],
) -> Option<String> {
    if spec.format != LineFormat::Csv || first.is_empty() {
        return None;
    }
    let current = spec.delimiter.as_deref().unwrap_or(",");
    let current = if current == "\\t" { "\t" } else { current };
    [
        (",", "\",\"", "commas"),
        (";", "\";\"", "semicolons"),
        ("\t", "\"\\t\"", "tabs"),
        ("|", "\"|\"", "vertical bars"),
    ]
    .into_iter()
    .filter(|(d, _, _)| *d != current)
    .find_map(|(d, shown, name)| {
        let mut s = spec.clone();
        s.delimiter = Some(d.to_string());
        let parser = LineParser::new(device, tz, &s).ok()?;
        let mut session = parser.session();
        let mut punches = 0;
        for line in first {
            match session.parse(line) {
                Ok(Some(_)) => punches += 1,
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        (punches > 0).then(|| {
            format!(
                "the lines look separated by {name}: with delimiter = {shown} in device {device}'s [[devices]] block, the first {punches} read as punches"
            )
        })
    })
}

/// Progress on standard error: an `indicatif` bar on a terminal, plain lines otherwise.
#[derive(Clone)]
struct ProgressShow {
    bar: Option<indicatif::ProgressBar>,
    plain: Option<Arc<std::sync::Mutex<(Instant, String, u64)>>>,
}

impl ProgressShow {
    fn new(mode: Progress, file: &Path, bytes: u64) -> ProgressShow {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let name = file.display().to_string();
        match mode {
            Progress::Quiet => ProgressShow {
                bar: None,
                plain: None,
            },
            Progress::Auto if tty => {
                let bar = indicatif::ProgressBar::new(bytes);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(name);
                ProgressShow {
                    bar: Some(bar),
                    plain: None,
                }
            }
            _ => ProgressShow {
                bar: None,
                plain: Some(Arc::new(std::sync::Mutex::new((
                    Instant::now(),
                    name,
                    bytes,
                )))),
            },
        }
    }

    fn set(&self, bytes: u64, lines: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
        if let Some(p) = &self.plain {
            let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
            if g.0.elapsed() >= Duration::from_secs(5) {
                g.0 = Instant::now();
                let pct = if g.2 == 0 {
                    100.0
                } else {
                    (bytes as f64 * 100.0 / g.2 as f64).min(100.0)
                };
                eprintln!("import {}: {pct:.0}% ({lines} lines)", g.1);
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
