//! The report, and the matching that builds it: every queued punch of the range against the flows
//! the platform returned, per device and per day.
//!
//! A queued punch is *confirmed* when a returned flow carries its `idempotent_id`, or, failing
//! that, its `external_id` (a flow that kept one but not the other). Each flow confirms at most
//! one punch. A returned flow that confirms nothing is not ours: it came from another source
//! (the mobile app, another gateway), unless its `external_id` names one of our devices
//! (`device/user/time`): then clockbridge sent it, and its row has been pruned from the queue since
//! (`queue.retention_days`). Both are listed apart and never re-sent.

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;

// the keys hashed are the queue's and the platform's idempotent and external ids (hundreds of
// thousands a month): FxHash, several times cheaper than SipHash for them
use rustc_hash::{FxHashMap, FxHashSet};

use chrono::NaiveDate;
use serde::Serialize;

use super::range::Range;
use crate::feishu::query::SeenFlow;
use crate::queue::{RangeRow, Status};

/// What became of one punch of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered, and the platform shows it.
    Confirmed,
    /// Delivered, but the platform does not show it (judged invalid, or lost).
    NotVisible,
    /// Still to send (pending or in flight).
    Pending,
    /// Refused for good, or unsendable: a dead letter.
    Dead,
    /// Waiting for a user mapping.
    Unmapped,
}

/// One device's day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    pub confirmed: u64,
    pub not_visible: u64,
    pub pending: u64,
    pub dead: u64,
    pub unmapped: u64,
}

impl Day {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Confirmed => self.confirmed += 1,
            Outcome::NotVisible => self.not_visible += 1,
            Outcome::Pending => self.pending += 1,
            Outcome::Dead => self.dead += 1,
            Outcome::Unmapped => self.unmapped += 1,
        }
    }
    fn merge(&mut self, o: &Day) {
        self.confirmed += o.confirmed;
        self.not_visible += o.not_visible;
        self.pending += o.pending;
        self.dead += o.dead;
        self.unmapped += o.unmapped;
    }
    /// Punches not yet delivered.
    pub fn undelivered(&self) -> u64 {
        self.pending + self.dead + self.unmapped
    }
    /// Every punch counted.
    pub fn total(&self) -> u64 {
        self.confirmed + self.not_visible + self.undelivered()
    }
}

/// One device's days.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub device: String,
    /// The zone its days are counted in (`UTC` for a device not in the configuration).
    pub timezone: String,
    pub configured: bool,
    pub days: BTreeMap<NaiveDate, Day>,
    pub total: Day,
}

/// A punch that is not confirmed (one CSV row for HR).
#[derive(Debug, Clone, Serialize)]
pub struct Unconfirmed {
    pub row_id: i64,
    pub device: String,
    pub device_user: String,
    pub user_id: Option<String>,
    /// Unix seconds.
    pub event_time: i64,
    pub outcome: Outcome,
    pub idempotent_id: String,
    /// The dead letter's reason, or the platform's last message.
    pub detail: Option<String>,
}

/// A flow the platform shows that clockbridge did not send (or no longer has in its queue).
#[derive(Debug, Clone, Serialize)]
pub struct ForeignFlow {
    pub user_id: String,
    /// Unix seconds.
    pub check_time: i64,
    pub record_id: String,
    pub external_id: String,
    pub flow_type: i64,
    pub comment: String,
}

/// The matching's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Matched {
    pub devices: Vec<DeviceReport>,
    pub total: Day,
    /// Every punch not confirmed, in event order.
    pub unconfirmed: Vec<Unconfirmed>,
    /// Flows from other sources (never re-sent).
    pub other_sources: Vec<ForeignFlow>,
    /// Flows clockbridge sent whose rows were pruned from the queue since (`retention_days`).
    pub pruned_from_queue: Vec<ForeignFlow>,
    /// How many confirmations came by `external_id` alone.
    pub matched_by_external_id: u64,
}

impl Matched {
    /// Moves the not-visible punches `ids` to confirmed (after a re-send made them visible).
    pub fn confirm(&mut self, range: &Range, ids: &std::collections::HashSet<i64>) {
        let mut moved = Vec::new();
        self.unconfirmed.retain(|u| {
            let hit = u.outcome == Outcome::NotVisible && ids.contains(&u.row_id);
            if hit {
                moved.push((u.device.clone(), range.date_of(&u.device, u.event_time)));
            }
            !hit
        });
        for (device, date) in moved {
            let fix = |d: &mut Day| {
                d.not_visible = d.not_visible.saturating_sub(1);
                d.confirmed += 1;
            };
            fix(&mut self.total);
            if let Some(dev) = self.devices.iter_mut().find(|d| d.device == device) {
                fix(&mut dev.total);
                if let Some(day) = dev.days.get_mut(&date) {
                    fix(day);
                }
            }
        }
    }
}

fn outcome_of(row: &RangeRow, seen: bool) -> Outcome {
    match row.status {
        Status::Delivered if seen => Outcome::Confirmed,
        Status::Delivered => Outcome::NotVisible,
        Status::Pending | Status::InFlight => Outcome::Pending,
        Status::Dead => Outcome::Dead,
        Status::Unmapped => Outcome::Unmapped,
    }
}

/// The rows whose `external_id` [`matching`] may need: those no flow confirms by idempotent key
/// (no flow has it, or another row has the same key). Only their payloads are read for it.
pub fn rows_needing_external_id(rows: &[RangeRow], flows: &[SeenFlow]) -> Vec<i64> {
    let seen: FxHashSet<&str> = flows.iter().map(|f| f.idempotent_id.as_str()).collect();
    let mut keys: FxHashMap<&str, u32> =
        FxHashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for r in rows {
        *keys.entry(r.idem.as_str()).or_insert(0) += 1;
    }
    rows.iter()
        .filter(|r| !seen.contains(r.idem.as_str()) || keys[r.idem.as_str()] > 1)
        .map(|r| r.id)
        .collect()
}

/// Matches `rows` (the queue's, for the range's union) against `flows` (the platform's, for the
/// same bounds), keeping each row only within its own device's days.
pub fn matching(range: &Range, rows: &[RangeRow], flows: &[SeenFlow]) -> Matched {
    let mut by_idem: FxHashMap<&str, usize> =
        FxHashMap::with_capacity_and_hasher(flows.len(), Default::default());
    for (i, f) in flows.iter().enumerate() {
        if !f.idempotent_id.is_empty() {
            by_idem.entry(f.idempotent_id.as_str()).or_insert(i);
        }
    }
    // the flows by external id, made only when a row has one to look up (only the rows no
    // idempotent key confirms do: [`rows_needing_external_id`]); the first flow of each id
    let mut by_ext: Option<FxHashMap<&str, usize>> = None;
    let mut flow_of_ext = |e: &str| -> Option<usize> {
        by_ext
            .get_or_insert_with(|| {
                let mut m = FxHashMap::default();
                for (i, f) in flows.iter().enumerate() {
                    if !f.external_id.is_empty() {
                        m.entry(f.external_id.as_str()).or_insert(i);
                    }
                }
                m
            })
            .get(e)
            .copied()
    };
    let mut used = vec![false; flows.len()];
    let mut m = Matched::default();
    let mut devices: BTreeMap<&str, BTreeMap<NaiveDate, Day>> = BTreeMap::new();
    // every row is matched (a flow of ours just outside its device's days must not look foreign);
    // only rows within their device's days are counted
    for row in rows {
        let mut seen = false;
        if let Some(&i) = by_idem.get(row.idem.as_str()) {
            if !used[i] {
                used[i] = true;
                seen = true;
            }
        }
        if !seen {
            if let Some(i) = row.external_id.as_deref().and_then(&mut flow_of_ext) {
                if !used[i] {
                    used[i] = true;
                    seen = true;
                    if row.status == Status::Delivered {
                        m.matched_by_external_id += 1;
                    }
                }
            }
        }
        let w = range.window(&row.device_id);
        if row.event_time < w.from || row.event_time >= w.to {
            continue;
        }
        let outcome = outcome_of(row, seen);
        let date = range.date_of(&row.device_id, row.event_time);
        devices
            .entry(row.device_id.as_str())
            .or_default()
            .entry(date)
            .or_default()
            .add(outcome);
        if outcome != Outcome::Confirmed {
            m.unconfirmed.push(Unconfirmed {
                row_id: row.id,
                device: row.device_id.clone(),
                device_user: row.subject.clone(),
                user_id: row.user_id.clone(),
                event_time: row.event_time,
                outcome,
                idempotent_id: row.idem.clone(),
                detail: row.dead_reason.clone().or_else(|| row.err_msg.clone()),
            });
        }
    }
    for (device, days) in devices {
        let mut total = Day::default();
        days.values().for_each(|d| total.merge(d));
        m.total.merge(&total);
        m.devices.push(DeviceReport {
            device: device.to_string(),
            timezone: range.zone(device).name().to_string(),
            configured: range.knows(device),
            days,
            total,
        });
    }
    for (i, f) in flows.iter().enumerate() {
        if used[i] {
            continue;
        }
        let flow = ForeignFlow {
            user_id: f.user_id.clone(),
            check_time: f.check_time,
            record_id: f.record_id.clone(),
            external_id: f.external_id.clone(),
            flow_type: f.flow_type,
            comment: f.comment.clone(),
        };
        let ours = f
            .external_id
            .split_once('/')
            .is_some_and(|(device, _)| range.knows(device));
        if ours {
            m.pruned_from_queue.push(flow);
        } else {
            m.other_sources.push(flow);
        }
    }
    m.other_sources
        .sort_by_key(|f| (f.check_time, f.user_id.clone()));
    m.pruned_from_queue.sort_by_key(|f| f.check_time);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, t: i64, status: Status, idem: &str, ext: &str) -> RangeRow {
        RangeRow {
            id,
            idem: idem.into(),
            device_id: "door-1".into(),
            subject: "7".into(),
            user_id: Some("u7".into()),
            event_time: t,
            status,
            external_id: Some(ext.into()),
            dead_reason: None,
            err_msg: None,
            attempts: 1,
        }
    }

    fn flow(idem: &str, ext: &str, t: i64) -> SeenFlow {
        SeenFlow {
            user_id: "u7".into(),
            check_time: t,
            idempotent_id: idem.into(),
            external_id: ext.into(),
            ..SeenFlow::default()
        }
    }

    #[test]
    fn punches_match_by_idempotent_id_then_external_id_and_the_rest_is_kept_apart() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let zones = HashMap::from([("door-1".to_string(), chrono_tz::Asia::Shanghai)]);
        let r = Range::new(d("2026-03-01"), d("2026-03-01"), zones);
        let t = r.window("door-1").from + 3600;
        let rows = vec![
            row(1, t, Status::Delivered, "k1", "door-1/7/a"),
            row(2, t + 1, Status::Delivered, "k2", "door-1/7/b"),
            row(3, t + 2, Status::Delivered, "k3", "door-1/7/c"),
            row(4, t + 3, Status::Pending, "k4", "door-1/7/d"),
            row(5, t + 4, Status::Dead, "k5", "door-1/7/e"),
            // the day before in Shanghai: matched, not counted
            row(6, t - 7200, Status::Delivered, "k6", "door-1/7/f"),
        ];
        let flows = vec![
            flow("k1", "door-1/7/a", t),
            flow("", "door-1/7/b", t + 1),
            flow("k6", "door-1/7/f", t - 7200),
            flow("", "", t + 50),
            flow("old", "door-1/7/z", t + 60),
        ];
        // the payloads are read only for the rows no idempotent key confirms
        assert_eq!(rows_needing_external_id(&rows, &flows), [2, 3, 4, 5]);
        let mut twice = rows.clone();
        twice[2].idem = "k1".into();
        assert_eq!(rows_needing_external_id(&twice, &flows), [1, 2, 3, 4, 5]);
        let m = matching(&r, &rows, &flows);
        assert_eq!(
            m.total,
            Day {
                confirmed: 2,
                not_visible: 1,
                pending: 1,
                dead: 1,
                unmapped: 0
            }
        );
        assert_eq!(m.matched_by_external_id, 1);
        assert_eq!(m.unconfirmed.len(), 3);
        assert_eq!(m.unconfirmed[0].outcome, Outcome::NotVisible);
        assert_eq!(m.other_sources.len(), 1);
        assert_eq!(m.pruned_from_queue.len(), 1);
        assert_eq!(m.devices[0].days.len(), 1);
        assert_eq!(m.devices[0].timezone, "Asia/Shanghai");
    }
}
