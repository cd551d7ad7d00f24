//! The ingest stage: the single path from every source into the durable queue.
//!
//! Sources hand punches to a [`PunchSink`] (a bounded channel, so a slow disk pushes back on the
//! clocks instead of growing memory). One writer task drains the channel in groups and commits each group
//! in one SQLite transaction (group commit: one fsync for thousands of punches), after normalising each
//! punch ([`crate::punch::normalise`]) and mapping its user ([`crate::mapping`]).
//!
//! Guarantees:
//! - A punch is acknowledged to its source ([`PunchSink::submit_committed`]) only after the transaction
//!   holding it has committed with `synchronous=FULL`.
//! - The same physical punch submitted twice is stored once (UNIQUE idempotent key; the second is
//!   counted as a duplicate).
//! - A punch whose user has no mapping is stored as `unmapped`; one the platform cannot import is stored
//!   as `dead` with the reason. Nothing is dropped.
//! - If a commit fails (disk full, I/O error), the writer logs one ERROR and retries the same group with
//!   back-off until it commits; meanwhile the bounded channel holds the sources back, so no punch that a
//!   source handed over is dropped while the process lives.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{mpsc, oneshot};

use crate::device_stats::DeviceStats;
use crate::feishu::lanes::user_flows;
use crate::mapping::MappingHandle;
use crate::punch::{normalise, Punch};
use crate::queue::{InsertStatus, NewRecord, Queue, QueueError};

/// What became of a submitted punch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Newly committed, waiting to be sent.
    Queued,
    /// Already in the queue (same idempotent key).
    Duplicate,
    /// Committed, waiting for a user mapping.
    Unmapped,
    /// Committed as a dead letter with this reason (e.g. before 2022).
    Dead(String),
    /// Not committed: the error. The source should keep the punch (or not acknowledge it).
    Failed(String),
}

impl IngestOutcome {
    /// True when the punch is safely in the queue (in any state).
    pub fn is_committed(&self) -> bool {
        !matches!(self, IngestOutcome::Failed(_))
    }
}

/// One punch on its way to the writer, with an optional acknowledgement channel.
pub struct IngestItem {
    pub punch: Punch,
    pub ack: Option<oneshot::Sender<IngestOutcome>>,
}

/// The ingest stage has stopped (the daemon is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("ingest: the queue writer has stopped")]
pub struct SinkClosed;

/// The sources' handle on the ingest stage.
#[derive(Clone)]
pub struct PunchSink {
    tx: mpsc::Sender<IngestItem>,
}

impl PunchSink {
    /// A sink and the receiving end of its channel.
    pub fn channel(capacity: usize) -> (PunchSink, mpsc::Receiver<IngestItem>) {
        let (tx, rx) = mpsc::channel(capacity);
        (PunchSink { tx }, rx)
    }

    /// Hands a punch to the writer; returns once it is in the bounded channel (back-pressure).
    pub async fn submit(&self, punch: Punch) -> Result<(), SinkClosed> {
        self.tx
            .send(IngestItem { punch, ack: None })
            .await
            .map_err(|_| SinkClosed)
    }

    /// Hands punches to the writer and waits until every one is committed (or failed); the outcomes
    /// are in the order of `punches`. The punches are handed over one after the other (back-pressure
    /// applies) and share the writer's group commits, so a large batch costs a few transactions, not
    /// one per punch.
    pub async fn submit_all_committed(
        &self,
        punches: Vec<Punch>,
    ) -> Result<Vec<IngestOutcome>, SinkClosed> {
        let mut pending = Vec::with_capacity(punches.len());
        for punch in punches {
            pending.push(self.send_with_ack(punch).await?);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.map_err(|_| SinkClosed)?);
        }
        Ok(out)
    }

    /// Hands a punch to the writer and waits until it is committed (or failed).
    pub async fn submit_committed(&self, punch: Punch) -> Result<IngestOutcome, SinkClosed> {
        self.send_with_ack(punch)
            .await?
            .await
            .map_err(|_| SinkClosed)
    }

    /// Hands a punch to the writer; the receiver gets its outcome once it is committed (or failed).
    async fn send_with_ack(
        &self,
        punch: Punch,
    ) -> Result<oneshot::Receiver<IngestOutcome>, SinkClosed> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(IngestItem {
                punch,
                ack: Some(ack),
            })
            .await
            .map_err(|_| SinkClosed)?;
        Ok(rx)
    }
}

/// Most punches committed in one transaction.
pub const GROUP_MAX: usize = 4096;
/// First pause after a failed commit.
pub const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest pause between two commit attempts.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything the writer needs to normalise a device's punches, and the device's live figures.
#[derive(Clone)]
pub struct DeviceInfo {
    /// The time zone of the device's clock.
    pub tz: chrono_tz::Tz,
    /// `location_name`, or the device id.
    pub location: String,
    pub stats: Arc<DeviceStats>,
}

/// The writer task: drains `rx`, committing groups to `queue`, until every sink is dropped or `stop`
/// is cancelled. On `stop` it closes the channel (further submits fail with [`SinkClosed`]) and still
/// commits everything already in it. `on_commit` is called after each commit (it wakes the sender).
pub async fn run_writer(
    mut rx: mpsc::Receiver<IngestItem>,
    queue: Queue,
    devices: Arc<HashMap<String, DeviceInfo>>,
    mapping: MappingHandle,
    max_future_secs: i64,
    stop: tokio_util::sync::CancellationToken,
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
        let map = mapping.current();
        let mut records = Vec::with_capacity(group.len());
        for item in &group {
            let p = &item.punch;
            let (tz, location) = match devices.get(&p.device_id) {
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
                max_future_secs,
            );
            records.push(user_flows::record(&n));
        }
        let records = Arc::new(records);
        let statuses = insert_until_committed(&queue, &records, &devices).await;
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
            if let Some(d) = devices.get(&item.punch.device_id) {
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

/// Commits a group, retrying with back-off while the queue refuses it (disk full, I/O error). The
/// channel behind the writer is bounded, so while this waits the sources stop reading: clocks keep
/// their punches (or TCP pushes back) instead of the daemon dropping them.
///
/// The back-off doubles from [`RETRY_FIRST`] up to [`RETRY_MAX`] (`backon`, without a limit on the
/// number of tries: a punch that was handed over is never given up while the process lives).
async fn insert_until_committed(
    queue: &Queue,
    records: &Arc<Vec<NewRecord>>,
    devices: &HashMap<String, DeviceInfo>,
) -> Vec<InsertStatus> {
    let failing = std::sync::atomic::AtomicBool::new(false);
    let backoff = ExponentialBuilder::new()
        .with_min_delay(RETRY_FIRST)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .without_max_times();
    let insert = || queue.insert(records.clone());
    let statuses = insert
        .retry(backoff)
        .notify(|e: &QueueError, _| {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    error = %e,
                    punches = records.len(),
                    "ingest: cannot commit punches to the queue; sources are held back until it works again: check disk space and the queue file"
                );
            }
            for d in devices.values() {
                d.stats.set_error(format!("queue refuses punches: {e}"));
            }
        })
        .await;
    if failing.load(Ordering::Relaxed) {
        tracing::info!("ingest: the queue accepts punches again");
        for d in devices.values() {
            d.stats.clear_error();
        }
    }
    // without a limit on the tries, the retry ends only with a commit
    statuses.unwrap_or_else(|_| unreachable!("retried without a limit"))
}
