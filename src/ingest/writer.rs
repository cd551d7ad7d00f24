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

/// Least time between two log lines about punches of one device kept as dead letters on arrival.
pub const DEAD_LOG_EVERY: Duration = Duration::from_secs(600);

/// Logs punches that are kept as dead letters on arrival (a time the platform cannot import: the
/// device's clock or zone is wrong), at most one line per device per [`DEAD_LOG_EVERY`], the line
/// saying how many more came since the last one. Without it a clock set to the wrong zone fills the
/// dead letters with nothing in the journal.
#[derive(Default)]
struct DeadLog {
    /// Per device: when it was last logged, and how many came since without a line.
    devices: HashMap<String, (Instant, u64)>,
}

impl DeadLog {
    /// Notes one such punch; logs it unless its device had a line less than [`DEAD_LOG_EVERY`] ago.
    /// Returns, when it logged, how many of the device's punches came since its last line.
    fn note(&mut self, device: &str, reason: &str, message: &str, now: Instant) -> Option<u64> {
        let more = match self.devices.get_mut(device) {
            Some((last, more)) if now.duration_since(*last) < DEAD_LOG_EVERY => {
                *more += 1;
                return None;
            }
            Some((last, more)) => {
                *last = now;
                std::mem::take(more)
            }
            None => {
                self.devices.insert(device.to_string(), (now, 0));
                0
            }
        };
        tracing::warn!(
            device = %device,
            reason = %reason,
            more_since_last_line = more,
            "device {device}: {message}; kept as a dead letter with the time it was read with (clockbridge dlq list --reason {reason}); the device's next punches are right once its clock is; more such punches of this device are logged at most every {} min",
            DEAD_LOG_EVERY.as_secs() / 60
        );
        Some(more)
    }
}

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
    let mut dead_log = DeadLog::default();
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
        let logged_at = Instant::now();
        for ((item, st), rec) in group.drain(..).zip(statuses).zip(records.iter()) {
            let outcome = match st {
                InsertStatus::Pending => {
                    sendable = true;
                    IngestOutcome::Queued
                }
                InsertStatus::Unmapped => IngestOutcome::Unmapped,
                InsertStatus::Dead(reason) => {
                    if let Some((_, message)) = &rec.dead {
                        let _ = dead_log.note(&rec.device_id, &reason, message, logged_at);
                    }
                    IngestOutcome::Dead(reason)
                }
                InsertStatus::Duplicate => IngestOutcome::Duplicate,
            };
            if let Some(d) = w.devices.get(&item.punch.device_id) {
                if outcome == IngestOutcome::Duplicate {
                    d.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    d.stats.queued.fetch_add(1, Ordering::Relaxed);
                    d.stats
                        .last_punch_at
                        .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_punches_are_logged_once_per_device_per_interval_with_a_count_of_the_rest() {
        let mut log = DeadLog::default();
        let t0 = Instant::now();
        let m = "punch at ... is 8 h ahead";
        assert_eq!(log.note("door-1", "far_future", m, t0), Some(0));
        // the same device within the interval: counted, not logged; another device: logged
        for i in 1..=41 {
            assert_eq!(
                log.note("door-1", "far_future", m, t0 + Duration::from_secs(i)),
                None
            );
        }
        assert_eq!(
            log.note("door-2", "before_2022", m, t0 + Duration::from_secs(5)),
            Some(0)
        );
        // after the interval: logged, with the 41 that were not
        assert_eq!(
            log.note("door-1", "far_future", m, t0 + DEAD_LOG_EVERY),
            Some(41)
        );
        assert_eq!(
            log.note(
                "door-1",
                "far_future",
                m,
                t0 + DEAD_LOG_EVERY + Duration::from_secs(1)
            ),
            None
        );
    }
}
