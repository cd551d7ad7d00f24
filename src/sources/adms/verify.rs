//! The comparison behind `clockbridge adms verify`: a terminal's own count of its records in a range
//! of its local time (`VERIFY SUM ATTLOG`'s `AttlogSum`) against the queue's count of that device's
//! punches in the same range. A library function, so that other checks (a reconciliation of every
//! device) can call it with a count they got elsewhere.
//!
//! What the queue counts: every punch row of the device whose device-local time is in the range,
//! whatever its state (pending, sent, delivered, dead, unmapped, dropped). The range is read on the
//! queue's unique key, which starts with the device-local time, so the count costs an index range
//! scan. Not counted: delivered rows pruned after `retention_days`, and records the terminal holds
//! but has not pushed yet; two records of one user in one second are one punch here.

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::queue::{Queue, QueueError};

/// The queue kind of punches.
const PUNCH_KIND: &str = "user_flow";

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub device: String,
    /// The range in the device's local time, both ends included.
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    /// The device's own count.
    pub device_count: u64,
    /// The queue's count.
    pub queue_count: u64,
    /// `match`, `queue_missing` (the device has more: run a backfill of the range) or `queue_more`
    /// (the queue has more: the device's log was cleared, or rows came from an import).
    pub verdict: &'static str,
}

impl VerifyReport {
    /// One line for people.
    pub fn render(&self) -> String {
        let range = format!(
            "{} .. {}",
            self.from.format("%Y-%m-%d %H:%M:%S"),
            self.to.format("%Y-%m-%d %H:%M:%S")
        );
        let what = match self.verdict {
            "match" => "they match".to_string(),
            "queue_missing" => format!(
                "the queue lacks {} punches: run `clockbridge adms backfill --device {} --from ... --to ...` for the range",
                self.device_count - self.queue_count,
                self.device
            ),
            _ => format!(
                "the queue has {} more (records cleared from the terminal, imported from files, or two records of one user in one second)",
                self.queue_count - self.device_count
            ),
        };
        format!(
            "device {} {range}: terminal {} records, queue {} punches: {what}",
            self.device, self.device_count, self.queue_count
        )
    }
}

/// The queue's punches of `device` whose device-local time is in `from..=to`.
pub async fn queue_count(
    queue: &Queue,
    device: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<u64, QueueError> {
    let lo = from.format("%Y%m%d%H%M%S").to_string();
    // the key is the local time then 32 hex digits: every key of the last second sorts below "g"
    let hi = format!("{}g", to.format("%Y%m%d%H%M%S"));
    let device = device.to_string();
    queue
        .call(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM outbox
                     WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3 AND device_id = ?4",
                )?
                .query_row(rusqlite::params![PUNCH_KIND, lo, hi, device], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
}

/// Compares `device_count` (what the terminal says) with the queue's count for the same range.
pub async fn compare(
    queue: &Queue,
    device: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
    device_count: u64,
) -> Result<VerifyReport, QueueError> {
    let queue_count = queue_count(queue, device, from, to).await?;
    Ok(VerifyReport {
        device: device.to_string(),
        from,
        to,
        device_count,
        queue_count,
        verdict: verdict(device_count, queue_count),
    })
}

/// `match`, `queue_missing` or `queue_more`.
pub fn verdict(device_count: u64, queue_count: u64) -> &'static str {
    match device_count.cmp(&queue_count) {
        std::cmp::Ordering::Equal => "match",
        std::cmp::Ordering::Greater => "queue_missing",
        std::cmp::Ordering::Less => "queue_more",
    }
}
