//! The writer task: drains the channel in groups, normalises and maps each punch, commits each group
//! in one transaction, and answers every submitted punch with its outcome. See the module
//! documentation of [`super`] for its guarantees.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DeviceInfo, IngestItem, IngestOutcome, Storage};
use crate::mapping::MappingHandle;
use crate::punch::{normalise, Normalised};
use crate::queue::{InsertStatus, NewRecord, Queue};

/// Most punches committed in one transaction.
pub const GROUP_MAX: usize = 4096;
/// First pause after a failed commit.
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest pause between two commit attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Once the writer is told to stop, how long it keeps trying to commit a group the queue refuses
/// before it gives up on the punches still waiting (and counts them: [`Storage::report`]). With the
/// sources' [`crate::sources::session::SHUTDOWN_GRACE`] (2 s) and the senders' grace
/// (`feishu.request_timeout_secs` + 1 s: 16 s by default), a stop stays within the shipped unit's
/// `TimeoutStopSec=30`.
pub const STOP_COMMIT_BUDGET: Duration = Duration::from_secs(5);
/// Pause between two commit attempts while stopping.
const STOP_RETRY: Duration = Duration::from_millis(500);

/// What the writer works with.
pub struct Writer {
    pub queue: Queue,
    pub devices: Arc<HashMap<String, DeviceInfo>>,
    pub mapping: MappingHandle,
    /// `queue.max_future_secs`.
    pub max_future_secs: i64,
    /// How a normalised punch becomes its queue record: the punch lane's
    /// (`feishu::lanes::user_flows::record`), handed in by the daemon.
    pub record: fn(&Normalised) -> NewRecord,
    /// The storage gate and tally, shared with the sink ([`super::PunchSink::storage`]).
    pub storage: Arc<Storage>,
}

/// The writer task: drains `rx`, committing groups to the queue, until every sink is dropped or `stop`
/// is cancelled. On `stop` it closes the channel (further submits fail with [`super::SinkClosed`])
/// and still commits everything already in it; if the queue refuses, it gives up after
/// [`STOP_COMMIT_BUDGET`] and counts what is left. `on_commit` is called after each commit (it wakes
/// the sender).
pub async fn run_writer(
    mut rx: mpsc::Receiver<IngestItem>,
    w: Writer,
    stop: CancellationToken,
    on_commit: impl Fn() + Send + 'static,
) {
    let mut group: Vec<IngestItem> = Vec::with_capacity(GROUP_MAX);
    let mut closed = false;
    loop {
        group.clear();
        let n = if closed {
            rx.recv_many(&mut group, GROUP_MAX).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut group, GROUP_MAX) => n,
                _ = stop.cancelled() => {
                    rx.close();
                    closed = true;
                    continue;
                }
            }
        };
        if n == 0 {
            return;
        }
        let now = chrono::Utc::now();
        let map = w.mapping.current();
        let mut records = Vec::with_capacity(group.len());
        for item in &group {
            let p = &item.punch;
            let (tz, location) = match w.devices.get(&p.device_id) {
                Some(d) => (d.tz, d.location.clone()),
                None => (chrono_tz::UTC, p.device_id.clone()),
            };
            let user = map.lookup(&p.device_id, &p.device_user_id);
            let n = normalise(
                p.clone(),
                tz,
                &location,
                user.as_deref(),
                now,
                w.max_future_secs,
            );
            records.push((w.record)(&n));
        }
        let records = Arc::new(records);
        let Some(statuses) = commit(&w, &records, &rx, &stop).await else {
            // stopping, and the queue still refuses: these and the rest of the channel stay
            // uncommitted; count them, answer their sources, and end
            rx.close();
            give_up(&w.storage, group.drain(..));
            let mut rest = Vec::new();
            while rx.recv_many(&mut rest, GROUP_MAX).await > 0 {
                give_up(&w.storage, rest.drain(..));
            }
            return;
        };
        let mut sendable = false;
        for (item, st) in group.drain(..).zip(statuses) {
            let outcome = match st {
                InsertStatus::Pending => {
                    sendable = true;
                    IngestOutcome::Queued
                }
                InsertStatus::Unmapped => IngestOutcome::Unmapped,
                InsertStatus::Dead(reason) => IngestOutcome::Dead(reason),
                InsertStatus::Duplicate => IngestOutcome::Duplicate,
            };
            if let Some(d) = w.devices.get(&item.punch.device_id) {
                if outcome == IngestOutcome::Duplicate {
                    d.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    d.stats.queued.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(ack) = item.ack {
                let _ = ack.send(outcome);
            }
        }
        if sendable {
            on_commit();
        }
    }
}

/// Counts punches that will not be committed and tells their sources.
fn give_up(storage: &Storage, items: impl Iterator<Item = IngestItem>) {
    for item in items {
        let clock_keeps = item.ack.is_some();
        storage.not_kept(&item.punch.device_id, clock_keeps, 1);
        if let Some(ack) = item.ack {
            let _ = ack.send(IngestOutcome::Failed(
                "not committed: the daemon stopped while the queue refused writes".into(),
            ));
        }
    }
}

/// Commits a group, retrying with back-off while the queue refuses it (disk full, I/O error); the
/// first failure closes the storage gate (the sources stop reading), the next success opens it.
///
/// The back-off doubles from [`RETRY_FIRST`] up to [`RETRY_MAX`] (`backon`'s delays, without a limit
/// on the number of tries: a punch handed over is never given up while the daemon runs). Once `stop`
/// is cancelled, attempts follow every [`STOP_RETRY`] for [`STOP_COMMIT_BUDGET`]; `None` when that
/// ends without a commit. An attempt under way is never abandoned (it might still commit).
async fn commit(
    w: &Writer,
    records: &Arc<Vec<NewRecord>>,
    rx: &mpsc::Receiver<IngestItem>,
    stop: &CancellationToken,
) -> Option<Vec<InsertStatus>> {
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(RETRY_FIRST)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build();
    let mut failed = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let e = match w.queue.insert(records.clone()).await {
            Ok(statuses) => {
                if failed {
                    tracing::info!(
                        "ingest: the queue accepts punches again; reading from the clocks resumes"
                    );
                    for d in w.devices.values() {
                        d.stats.clear_error();
                    }
                }
                w.storage.reopen();
                return Some(statuses);
            }
            Err(e) => e,
        };
        if !failed {
            failed = true;
            tracing::error!(
                error = %e,
                punches = records.len() + rx.len(),
                "ingest: cannot commit punches to the queue; reading from the clocks is paused until it works again: check disk space and the queue file"
            );
            for d in w.devices.values() {
                d.stats.set_error(format!("queue refuses punches: {e}"));
            }
        }
        w.storage.close(e.to_string(), records.len() + rx.len());
        if stop.is_cancelled() {
            deadline.get_or_insert_with(|| Instant::now() + STOP_COMMIT_BUDGET);
        }
        match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                tokio::time::sleep(STOP_RETRY.min(d - now)).await;
            }
            None => {
                let delay = delays.next().unwrap_or(RETRY_MAX);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // stopping: try again now, then within the stop budget
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}
