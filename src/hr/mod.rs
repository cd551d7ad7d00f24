//! HR data from on-prem systems: approval results (`user_approvals`), archived report results
//! (`archive_rule/upload_report`) and leave accrual updates (`leave_accrual_record` PATCH), carried
//! through the same durable queue and sender as punches.
//!
//! Guarantees:
//! - **Validated before queued.** Each file is read whole ([`input`], as a stream), every record is
//!   checked field by field against its platform page ([`approvals`], [`reports`], [`accruals`]), and
//!   only a file without a single problem is queued; otherwise nothing is, and every problem (up to
//!   [`take::ISSUES_KEPT`]) is reported with its line and the rule it breaks.
//! - **Linear, bounded, off the runtime.** [`take`] reads a file twice (check, then queue), in time
//!   linear in its size and memory that does not grow with it, on a blocking thread, and queues it in
//!   chunks of [`take::INSERT_CHUNK`] records, one transaction each, so the queue's single thread is
//!   never held long by one file. A crash between chunks is safe: taking the file again queues only
//!   what is missing (see [`take`]).
//! - **Idempotent.** user_approvals only ever inserts: every leave, outing, overtime and trip item
//!   carries an `idempotent_id` (the source system's id, or one derived from the item), so a re-send
//!   after a lost reply creates nothing twice, and the queue's unique key makes re-submitting a file a
//!   no-op. Report rows and accrual updates set absolute values: their queue key is the target (report
//!   row, granting record) plus a hash of the value, a newer value for the same target is queued behind
//!   the older one and never sent before it, and re-submitting the latest value is a no-op.
//! - [`crate::inbox`] watches a directory per kind in the running daemon.

pub mod accruals;
pub mod approvals;
pub mod input;
pub mod names;
pub mod reports;
pub mod size;
pub mod take;

pub use take::SubmitOptions;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::queue::{InsertStatus, NewRecord, Queue, QueueError};

/// The three kinds of HR data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HrKind {
    Approvals,
    ArchiveReport,
    LeaveAccruals,
}

impl HrKind {
    pub const ALL: [HrKind; 3] = [
        HrKind::Approvals,
        HrKind::ArchiveReport,
        HrKind::LeaveAccruals,
    ];

    /// The queue kind of its records.
    pub fn queue_kind(self) -> &'static str {
        match self {
            HrKind::Approvals => approvals::KIND,
            HrKind::ArchiveReport => reports::KIND,
            HrKind::LeaveAccruals => accruals::KIND,
        }
    }

    /// The `submit` sub-command's name.
    pub fn command(self) -> &'static str {
        match self {
            HrKind::Approvals => "approvals",
            HrKind::ArchiveReport => "archive-report",
            HrKind::LeaveAccruals => "leave-accruals",
        }
    }
}

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub line: u64,
    pub message: String,
}

impl Issue {
    /// A problem at `line`. The message is made one visible line ([`crate::logging::visible`]): it
    /// may quote a column name or a value of the file, and it reaches logs, the terminal and reports.
    pub fn new(line: u64, message: impl Into<String>) -> Issue {
        Issue {
            line,
            message: crate::logging::visible(&message.into()),
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Problems listed in an error message (all are in the report).
const ISSUES_LISTED: usize = 50;

/// A submission that could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("submit {path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file breaks at least one rule: nothing was queued.
    #[error("submit {kind} {path}: refused, nothing queued ({n} problem{s}{more}); fix the file and submit it again:\n{list}",
        kind = kind.command(), n = issues.len(), s = if issues.len() == 1 { "" } else { "s" },
        more = if *complete { "" } else { " or more: the check stopped there" }, list = render_issues(issues))]
    Invalid {
        kind: HrKind,
        path: String,
        issues: Vec<Issue>,
        /// Every problem is listed (false: the check stopped after [`take::ISSUES_KEPT`]).
        complete: bool,
    },
    /// The file is larger than the configured limit: refused unread.
    #[error("submit {path}: the file is {size} bytes, more than the limit of {max} bytes ([inbox] max_file_size, submit --max-file-size): split it into smaller files, or raise the limit")]
    TooLarge { path: String, size: u64, max: u64 },
    /// The file changed between its check and its queuing (written in place while being taken).
    #[error("submit {path}: the file changed while it was being queued ({queued} records queued before that, each once): it is taken again whole; write files under a temporary name and rename them when complete")]
    Changed { path: String, queued: usize },
    /// The daemon is stopping: the file was left as it is.
    #[error("submit {path}: stopped before the file was queued completely ({queued} records queued): taking it again queues only the rest")]
    Stopped { path: String, queued: usize },
    /// The work on the file ended abnormally (a bug): nothing more was queued.
    #[error("submit {path}: the work on the file failed: {reason}: report this with the file")]
    Failed { path: String, reason: String },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

fn render_issues(issues: &[Issue]) -> String {
    let mut o: Vec<String> = issues
        .iter()
        .take(ISSUES_LISTED)
        .map(|i| format!("  {i}"))
        .collect();
    if issues.len() > ISSUES_LISTED {
        o.push(format!("  ... and {} more", issues.len() - ISSUES_LISTED));
    }
    o.join("\n")
}

/// Values given on the command line for `submit archive-report` (a file may carry them instead).
#[derive(Debug, Clone, Default)]
pub struct ReportArgs {
    pub archive_rule_id: Option<String>,
    pub month: Option<String>,
    pub operator_id: Option<String>,
}

/// What a submission queued.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub file: String,
    pub kind: HrKind,
    /// Records in the file (approval items, report rows, accrual updates).
    pub records: usize,
    /// Newly queued.
    pub queued: usize,
    /// Already in the queue (the same item, or the same value): nothing changed.
    pub duplicates: usize,
    /// `kind user item-key`, one per record, in file order (the first [`take::ITEMS_LISTED`]).
    pub items: Vec<String>,
    /// Records not listed in `items`.
    pub items_omitted: usize,
}

impl SubmitReport {
    pub fn render(&self) -> String {
        format!(
            "submit {} {}: {} records: {} queued, {} already queued (no change)\n",
            self.kind.command(),
            self.file,
            self.records,
            self.queued,
            self.duplicates
        )
    }
}

/// Validates a whole file's content and turns it into queue records: all of them, or the problems.
pub fn prepare(
    kind: HrKind,
    bytes: &[u8],
    name: &str,
    args: &ReportArgs,
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let units = input::read_units(bytes, name, encoding)?;
    match kind {
        HrKind::Approvals => approvals::records(&units),
        HrKind::ArchiveReport => reports::records(&units, args),
        HrKind::LeaveAccruals => accruals::records(&units),
    }
}

/// Inserts prepared records in one transaction.
pub async fn queue_records(
    queue: &Queue,
    kind: HrKind,
    records: Vec<NewRecord>,
) -> Result<Vec<InsertStatus>, QueueError> {
    let records = Arc::new(records);
    match kind {
        HrKind::Approvals => queue.insert(records).await,
        HrKind::ArchiveReport | HrKind::LeaveAccruals => queue.insert_latest(records).await,
    }
}

/// Reads, validates and queues one file (`clockbridge submit ...`), its text in `encoding` (UTF-8
/// unless the operator says otherwise), with no size limit: [`submit_file_with`].
pub async fn submit_file(
    queue: &Queue,
    kind: HrKind,
    path: &Path,
    args: &ReportArgs,
    encoding: &'static encoding_rs::Encoding,
) -> Result<SubmitReport, SubmitError> {
    let opts = SubmitOptions {
        args: args.clone(),
        encoding,
        ..SubmitOptions::default()
    };
    submit_file_with(queue, kind, path, &opts).await
}

/// Reads, validates and queues one file (`clockbridge submit ...` and the inbox) as [`take`] does, on
/// a blocking thread.
pub async fn submit_file_with(
    queue: &Queue,
    kind: HrKind,
    path: &Path,
    opts: &SubmitOptions,
) -> Result<SubmitReport, SubmitError> {
    let (queue, path_buf, opts) = (queue.clone(), path.to_path_buf(), opts.clone());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || take::take(&queue, &rt, kind, &path_buf, &opts))
        .await
        .unwrap_or_else(|e| {
            Err(SubmitError::Failed {
                path: names::escape_path(path),
                reason: e.to_string(),
            })
        })
}

/// The first 16 bytes of SHA-256 over the parts (each followed by a NUL), as 32 lowercase hex digits.
pub fn derive_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Collects the problems of one record (its line, and the list they go to).
pub struct Check<'a> {
    pub line: u64,
    pub issues: &'a mut Vec<Issue>,
}

impl Check<'_> {
    pub fn fail(&mut self, path: &str, rule: impl std::fmt::Display) {
        self.issues
            .push(Issue::new(self.line, format!("{path}: {rule}")));
    }

    /// A required, non-blank string.
    pub fn required<'s>(&mut self, path: &str, v: &'s Option<String>) -> Option<&'s str> {
        match v.as_deref() {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.fail(path, "is required and must not be blank");
                None
            }
            None => {
                self.fail(path, "is required");
                None
            }
        }
    }

    /// `yyyyMMdd`, a real date.
    pub fn ymd(&mut self, path: &str, v: &str) -> Option<chrono::NaiveDate> {
        let d = (v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| chrono::NaiveDate::parse_from_str(v, "%Y%m%d").ok())
            .flatten();
        if d.is_none() {
            self.fail(
                path,
                format!("{v:?} is not a date in the format yyyyMMdd (e.g. \"20210104\")"),
            );
        }
        d
    }

    /// `yyyy-MM-dd HH:mm:ss`, a real time.
    pub fn datetime(&mut self, path: &str, v: &str) -> Option<chrono::NaiveDateTime> {
        let d = (v.len() == 19)
            .then(|| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S").ok())
            .flatten();
        if d.is_none() {
            self.fail(
                path,
                format!(
                    "{v:?} is not a time in the format yyyy-MM-dd HH:mm:ss (e.g. \"2021-01-04 09:00:00\")"
                ),
            );
        }
        d
    }

    /// `yyyyMM`.
    pub fn month(&mut self, path: &str, v: &str) -> bool {
        let ok = v.len() == 6
            && v.bytes().all(|b| b.is_ascii_digit())
            && chrono::NaiveDate::parse_from_str(&format!("{v}01"), "%Y%m%d").is_ok();
        if !ok {
            self.fail(
                path,
                format!("{v:?} is not a month in the format yyyyMM (e.g. \"202409\")"),
            );
        }
        ok
    }

    /// `YYYY-MM-DD`, a real date.
    pub fn iso_date(&mut self, path: &str, v: &str) -> bool {
        let ok = v.len() == 10 && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
        if !ok {
            self.fail(
                path,
                format!("{v:?} is not a date in the format YYYY-MM-DD (e.g. \"2020-01-01\")"),
            );
        }
        ok
    }

    /// An integer among `allowed`, each with its meaning for the message.
    pub fn one_of(&mut self, path: &str, v: Option<i64>, allowed: &[(i64, &str)]) -> Option<i64> {
        let list = || {
            allowed
                .iter()
                .map(|(n, m)| format!("{n} ({m})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match v {
            None => {
                self.fail(path, format!("is required: one of {}", list()));
                None
            }
            Some(n) if allowed.iter().any(|(a, _)| *a == n) => Some(n),
            Some(n) => {
                self.fail(path, format!("{n} is not one of {}", list()));
                None
            }
        }
    }
}

/// Deserializes a JSON value into `T`, naming the path of the first problem (unknown field, wrong
/// type) on failure.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    prefix: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = match (prefix.is_empty(), path.as_str()) {
            (true, ".") => "record".to_string(),
            (true, p) => p.to_string(),
            (false, ".") => prefix.to_string(),
            (false, p) => format!("{prefix}.{p}"),
        };
        format!("{at}: {}", e.into_inner())
    })
}

/// A pending HR queue row; `who` is the user, member or employment id.
pub(crate) fn hr_record(
    kind: &'static str,
    idem: String,
    ukey: String,
    device_id: String,
    who: &str,
    event_time: i64,
    payload: String,
) -> NewRecord {
    NewRecord {
        kind,
        idem,
        ukey,
        device_id,
        subject: who.to_string(),
        user_id: Some(who.to_string()),
        event_time,
        payload,
        status: crate::queue::Status::Pending,
        dead: None,
        live: false,
    }
}

/// Every record, or every problem.
pub(crate) fn all_or_issues<T>(out: Vec<T>, issues: Vec<Issue>) -> Result<Vec<T>, Vec<Issue>> {
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// A cell that must be a whole number.
pub(crate) fn cell_int(check: &mut Check<'_>, column: &str, v: &str) -> Option<serde_json::Value> {
    match v.parse::<i64>() {
        Ok(n) => Some(n.into()),
        Err(_) => {
            check.fail(
                &format!("column {column}"),
                format!("{v:?} is not a whole number"),
            );
            None
        }
    }
}
