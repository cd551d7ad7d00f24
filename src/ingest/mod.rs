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
//! - If a commit fails (disk full, I/O error), the writer logs one ERROR, closes the storage gate
//!   ([`Storage`]) so that the sources read nothing more from their clocks, and retries the same group
//!   with back-off; the first commit that succeeds opens the gate again. No punch a source handed over
//!   is dropped while the daemon runs.
//! - A stop while commits fail ends within [`STOP_COMMIT_BUDGET`] of the writer's stop: what could not
//!   be committed by then is counted per device, with whether the clock still holds it
//!   ([`Storage::report`]), never waited for forever.
//!
//! Files: `writer` (the writer task and its commits), `storage` (the gate and the tally of what a
//! stop could not keep).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

mod storage;
mod writer;

pub use storage::{Held, NotKept, Storage};
pub use writer::{run_writer, Writer, GROUP_MAX, RETRY_FIRST, RETRY_MAX, STOP_COMMIT_BUDGET};

use crate::device_stats::DeviceStats;
use crate::punch::Punch;

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
    storage: Arc<Storage>,
}

impl PunchSink {
    /// A sink and the receiving end of its channel.
    pub fn channel(capacity: usize) -> (PunchSink, mpsc::Receiver<IngestItem>) {
        let (tx, rx) = mpsc::channel(capacity);
        let storage = Arc::new(Storage::default());
        (PunchSink { tx, storage }, rx)
    }

    /// The storage gate and the tally of punches not kept, shared with the writer.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Returns once the queue commits again (at once while it does): a source awaits this before it
    /// reads more from its clock, so that nothing more is read while nothing can be committed.
    /// Cancel-safe.
    pub async fn ready(&self) {
        self.storage.ready().await
    }

    /// Counts `n` punches of `device` that were read but not handed over at a stop (see
    /// [`Storage::not_kept`]).
    pub fn not_kept(&self, device: &str, clock_keeps: bool, n: u64) {
        self.storage.not_kept(device, clock_keeps, n)
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
    /// Cancel-safe: dropped before it returns, the punch was not handed over.
    pub async fn send_with_ack(
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

/// Everything the writer needs to normalise a device's punches, and the device's live figures.
#[derive(Clone)]
pub struct DeviceInfo {
    /// The kind of clock (`tcp`, `serial`, `zk`), for messages.
    pub kind: String,
    /// The time zone of the device's clock.
    pub tz: chrono_tz::Tz,
    /// `location_name`, or the device id.
    pub location: String,
    pub stats: Arc<DeviceStats>,
}
