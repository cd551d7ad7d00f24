//! The clocks' side of a reconcile: for each device whose kind can be asked ([`ClockCount`]), what
//! the clock holds against what the queue holds for it; for the others, that they cannot be asked.
//!
//! A ZKTeco terminal says how many records its log holds (`device_records`); its watermark says how
//! many of them the source committed to the queue; the queue holds `queue_rows` rows of the device
//! (every state but dead letters an operator dropped). So:
//! - `device_records > watermark`: records on the clock not read yet (the next poll reads them);
//! - `watermark > queue_rows`: the watermark counts records that are not in the queue (moved past
//!   them by hand, or a queue restored from an older copy): they are missing, and will not be read
//!   again unless the watermark is put back;
//! - a clock that counts a range (a ZKTeco push terminal: `VERIFY SUM ATTLOG`, answered at its next
//!   poll, so only while the daemon runs): its count against the queue's rows of that device in the
//!   range.
//!
//! Limits: rows pruned after `queue.retention_days` and records read twice on the clock (the same
//! punch stored twice, one queue row) make `queue_rows` smaller than the log without anything
//! missing; the report gives the figures and the queue's pruned total so the reader can tell.

use std::collections::HashMap;

use serde::Serialize;

use super::range::Range;
use crate::config::Config;
use crate::queue::store::DeviceStore;
use crate::queue::{Queue, RangeRow};
use crate::sources::ClockCounted;

/// What the clock side found for one device.
#[derive(Debug, Clone, Serialize)]
pub struct ClockCheck {
    pub device: String,
    pub kind: String,
    /// The clock's answer (absent when it cannot be asked or did not answer).
    #[serde(flatten)]
    pub counted: ClockCounted,
    /// Rows the queue holds for the device (all time, every state).
    pub queue_rows: u64,
    /// Rows the queue holds for the device in the range.
    pub queue_rows_in_range: u64,
    /// Records on the clock the source has not read yet.
    pub not_read_yet: u64,
    /// Records the watermark (or the clock's range count) says exist that the queue lacks.
    pub missing_from_queue: u64,
    /// Why the clock was not asked, or why asking failed.
    pub note: Option<String>,
}

impl ClockCheck {
    /// Whether the clock agrees with the queue (or could not be asked: nothing proven wrong).
    pub fn agrees(&self) -> bool {
        self.missing_from_queue == 0 && self.not_read_yet == 0
    }
}

/// Asks every selected device's clock.
pub async fn check(
    cfg: &Config,
    queue: &Queue,
    range: &Range,
    devices: &[String],
    rows: &[RangeRow],
) -> Vec<ClockCheck> {
    let counts = queue.counts().await.ok();
    let mut in_range: HashMap<&str, u64> = HashMap::new();
    for r in rows {
        let w = range.window(&r.device_id);
        if r.event_time >= w.from && r.event_time < w.to {
            *in_range.entry(r.device_id.as_str()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for d in cfg.devices.iter() {
        if !devices.is_empty() && !devices.contains(&d.id) {
            continue;
        }
        let queue_rows = counts
            .as_ref()
            .and_then(|c| c.by_device.get(&d.id))
            .map_or(0, |s| {
                s.pending + s.in_flight + s.delivered + s.dead + s.unmapped
            });
        let mut c = ClockCheck {
            device: d.id.clone(),
            kind: d.kind().to_string(),
            counted: ClockCounted::default(),
            queue_rows,
            queue_rows_in_range: in_range.get(d.id.as_str()).copied().unwrap_or(0),
            not_read_yet: 0,
            missing_from_queue: 0,
            note: None,
        };
        match d.clock_count() {
            None => {
                c.note = Some(format!(
                    "a {} clock cannot be asked what it holds: only the queue's side is known",
                    c.kind
                ))
            }
            Some(counter) => {
                let w = range.window(&d.id);
                let store = DeviceStore::new(queue.clone(), &d.id);
                match counter
                    .count(&d.id, (w.from, w.to), (range.from, range.to), &store)
                    .await
                {
                    Err(e) => c.note = Some(format!("the clock did not answer: {e}")),
                    Ok(counted) => {
                        if let (Some(n), Some(wm)) = (counted.device_records, counted.watermark) {
                            c.not_read_yet = n.saturating_sub(wm);
                            c.missing_from_queue = wm.min(n).saturating_sub(queue_rows);
                        }
                        if let Some(r) = counted.range_records {
                            c.missing_from_queue = c
                                .missing_from_queue
                                .max(r.saturating_sub(c.queue_rows_in_range));
                        }
                        c.counted = counted;
                    }
                }
            }
        }
        out.push(c);
    }
    out
}
