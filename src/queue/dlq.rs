//! Dead letters: records the platform refused for good (or that could never be sent), kept with
//! the platform's code, message and log id. An operator lists them, retries them (`pending` again,
//! or `unmapped` when their user left the mapping) or drops them (a copy kept in `dropped`, the row
//! left as a tombstone so that the same record read again stays out).

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::insert::ordering_key;
use super::remap::KindsOf;
use super::{now_ms, Queue, Result};
use crate::mapping::Mapping;

/// A dead letter, as listed by `status`. Every time is Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub kind: String,
    pub device_id: String,
    pub device_user_id: String,
    pub event_time: i64,
    pub reason: Option<String>,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub log_id: Option<String>,
    pub attempts: i64,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub created_at: i64,
}

/// Which dead letters a `dlq` command acts on: all that match every given filter.
#[derive(Debug, Clone, Default)]
pub struct DeadSelection {
    /// These rows only (`None`: every dead letter).
    pub ids: Option<Vec<i64>>,
    /// Records of this kind (`user_flow`...).
    pub kind: Option<String>,
    /// A platform code (`1220001`) or a reason (`before_2022`, `rejected`, `rejected_record`...).
    pub reason: Option<String>,
}

impl DeadSelection {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.ids
            .as_ref()
            .map(|ids| ids.contains(&d.id))
            .unwrap_or(true)
            && self.kind.as_ref().map(|k| *k == d.kind).unwrap_or(true)
            && self
                .reason
                .as_ref()
                .map(|r| {
                    d.reason.as_deref() == Some(r.as_str())
                        || d.code.map(|c| c.to_string()) == Some(r.clone())
                })
                .unwrap_or(true)
    }
}

/// What a retry of dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Pending again: sent within seconds.
    pub pending: usize,
    /// Their user is no longer in the mapping: waiting as unmapped.
    pub unmapped: usize,
    /// Still not importable (before 2022 or far in the future): left dead.
    pub kept: usize,
}

impl Queue {
    /// The most recent dead letters (newest first), at most `limit`.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| read_dead_letters(conn, limit)).await
    }

    /// Makes dead rows pending again (all of them with `None`), under the rules `kinds` gives
    /// (see [`Queue::retry_dead_selected`]). Returns how many.
    pub async fn retry_dead(&self, kinds: KindsOf, ids: Option<Vec<i64>>) -> Result<usize> {
        let sel = DeadSelection {
            ids,
            ..DeadSelection::default()
        };
        Ok(self
            .retry_dead_selected(kinds, sel, None, i64::MAX)
            .await?
            .pending)
    }

    /// The dead letters `sel` names, oldest first.
    pub async fn list_dead(&self, sel: DeadSelection) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| select_dead(conn, &sel)).await
    }

    /// Retries the dead letters `sel` names, each under the rules of its kind (`kinds`, given by the
    /// lanes): a value that has a newer one of the same target ([`super::KindRules::ordered`]) and a
    /// record whose time the platform still cannot take ([`super::KindRules::sendable`], with
    /// `latest_event_time`) stay dead and are counted as `kept`. With a `mapping`, rows of a kind that
    /// re-maps ([`super::KindRules::remap`]) get their user id from it again (so a corrected mapping
    /// row fixes them; a user no longer mapped makes the row `unmapped`).
    pub async fn retry_dead_selected(
        &self,
        kinds: KindsOf,
        sel: DeadSelection,
        mapping: Option<Arc<Mapping>>,
        latest_event_time: i64,
    ) -> Result<RetryReport> {
        self.call(move |conn| {
            let rows = select_dead(conn, &sel)?;
            let tx = conn.transaction()?;
            let mut report = RetryReport::default();
            {
                let mut plain = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, next_attempt_at = 0, dead_reason = NULL WHERE id = ?1 AND status = 3",
                )?;
                let mut payload_of =
                    tx.prepare_cached("SELECT payload FROM outbox WHERE id = ?1 AND status = 3")?;
                let mut remapped = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, next_attempt_at = 0, dead_reason = NULL, user_id = ?2,
                        payload = ?3
                     WHERE id = ?1 AND status = 3",
                )?;
                let mut unmapped = tx.prepare_cached(
                    "UPDATE outbox SET status = 4, next_attempt_at = 0, dead_reason = NULL, user_id = NULL,
                        payload = ?2
                     WHERE id = ?1 AND status = 3",
                )?;
                for d in rows {
                    let rules = kinds(&d.kind);
                    if rules.is_some_and(|r| r.ordered()) && superseded(&tx, d.id)? {
                        // a newer value of the same target is queued or delivered: re-sending this
                        // older one would overwrite it
                        report.kept += 1;
                        continue;
                    }
                    if rules.is_some_and(|r| !r.sendable(d.event_time, latest_event_time)) {
                        report.kept += 1;
                        continue;
                    }
                    let (Some(m), Some(remap)) = (&mapping, rules.and_then(|r| r.remap())) else {
                        report.pending += plain.execute(params![d.id])?;
                        continue;
                    };
                    let payload: String = payload_of.query_row(params![d.id], |r| r.get(0))?;
                    let uid = m.lookup(&d.device_id, &d.device_user_id);
                    match (remap(&payload, uid.as_deref()), uid) {
                        (Some(p), Some(uid)) => {
                            report.pending += remapped.execute(params![d.id, uid, p])?
                        }
                        (Some(p), None) => report.unmapped += unmapped.execute(params![d.id, p])?,
                        // its payload cannot be read (changed outside clockbridge): left dead
                        (None, _) => report.kept += 1,
                    }
                }
            }
            tx.commit()?;
            Ok(report)
        })
        .await
    }

    /// Removes the dead letters `sel` names from the queue, keeping a copy of each in `dropped`
    /// (never sent). Returns what was dropped.
    pub async fn drop_dead(&self, sel: DeadSelection) -> Result<Vec<DeadLetter>> {
        self.call(move |conn| {
            let rows = select_dead(conn, &sel)?;
            let tx = conn.transaction()?;
            let mut dropped = Vec::with_capacity(rows.len());
            {
                let mut keep = tx.prepare_cached(
                    "INSERT INTO dropped (kind, idem, device_id, subject, event_time, payload, dead_reason,
                        err_code, err_msg, err_log_id, attempts, created_at, dropped_at)
                     SELECT kind, idem, device_id, subject, event_time, payload, dead_reason,
                        err_code, err_msg, err_log_id, attempts, created_at, ?2
                     FROM outbox WHERE id = ?1 AND status = 3",
                )?;
                // the row stays as a tombstone (status 5, payload cleared) so that its unique key stays
                // taken: the same punch read again (a clock's full re-read) does not come back
                let mut del = tx.prepare_cached(
                    "UPDATE outbox SET status = 5, payload = '' WHERE id = ?1 AND status = 3",
                )?;
                let now = now_ms();
                for d in rows {
                    if keep.execute(params![d.id, now])? == 1 && del.execute(params![d.id])? == 1 {
                        dropped.push(d);
                    }
                }
            }
            tx.commit()?;
            Ok(dropped)
        })
        .await
    }
}

/// Whether an ordered row has a newer row of the same ordering key.
fn superseded(conn: &Connection, id: i64) -> Result<bool> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT kind, ukey FROM outbox WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((kind, ukey)) = row else {
        return Ok(false);
    };
    let key = ordering_key(&ukey);
    let newer: i64 = conn.query_row(
        "SELECT count(*) FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3 AND id > ?4",
        params![kind, format!("{key}#"), format!("{key}$"), id],
        |r| r.get(0),
    )?;
    Ok(newer > 0)
}

/// Every dead letter `sel` names, oldest first.
fn select_dead(conn: &Connection, sel: &DeadSelection) -> Result<Vec<DeadLetter>> {
    let mut all = read_dead_letters(conn, usize::MAX >> 1)?;
    all.retain(|d| sel.matches(d));
    all.reverse();
    Ok(all)
}

/// The newest dead letters from an open connection.
pub fn read_dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut st = conn.prepare_cached(
        "SELECT id, kind, device_id, subject, event_time, dead_reason, err_code, err_msg, err_log_id,
                attempts, first_attempt_at, last_attempt_at, created_at
         FROM outbox WHERE status = 3 ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st
        .query_map(params![limit as i64], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                kind: r.get(1)?,
                device_id: r.get(2)?,
                device_user_id: r.get(3)?,
                event_time: r.get(4)?,
                reason: r.get(5)?,
                code: r.get(6)?,
                message: r.get(7)?,
                log_id: r.get(8)?,
                attempts: r.get(9)?,
                first_attempt_at: r.get::<_, Option<i64>>(10)?.map(|t| t / 1000),
                last_attempt_at: r.get::<_, Option<i64>>(11)?.map(|t| t / 1000),
                created_at: r.get::<_, i64>(12)? / 1000,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
