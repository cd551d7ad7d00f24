//! The one insert path. Records are inserted in one transaction; the per-(kind, device, state) counts
//! are bumped once per group in the same transaction. Two ways of keying share it:
//!
//! - **Unique records** ([`Queue::insert`]): `ukey` is unique per kind; a record already present is a
//!   duplicate and changes nothing.
//! - **Values that overwrite each other** ([`Queue::insert_latest`]): `ukey` is an ordering key (the
//!   target: a report row, a granting record) and `idem` the hash of the value. A value equal to the
//!   newest queued value of its key is a duplicate; any other is stored behind the others of its key as
//!   `KEY#HASH#GENERATION`, and [`Queue::claim_latest`] never sends it before them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, InsertStatus, NewRecord, Queue, Result, Status};

/// Length of the suffix [`Queue::insert_latest`] puts behind an ordering key in `ukey`:
/// `#` + 32 hex digits of the value's hash + `#` + an 8-digit generation.
pub const LATEST_SUFFIX_LEN: usize = 42;

/// The ordering key of an ordered row's `ukey` (without the hash and generation).
pub(super) fn ordering_key(ukey: &str) -> &str {
    ukey.get(..ukey.len().saturating_sub(LATEST_SUFFIX_LEN))
        .unwrap_or("")
}

impl Queue {
    /// Inserts records in one transaction. Records whose `(kind, ukey)` is already present are left
    /// untouched and reported as [`InsertStatus::Duplicate`].
    pub async fn insert(&self, records: Arc<Vec<NewRecord>>) -> Result<Vec<InsertStatus>> {
        self.call(move |conn| insert_rows(conn, &records, false, now_ms()))
            .await
    }

    /// Inserts records whose `ukey` is an ordering key (the target a value overwrites: a report row,
    /// a granting record) and whose `idem` is the 32-hex hash of the value, in one transaction. A
    /// record whose value equals the latest queued value of its key is a duplicate (nothing changes);
    /// otherwise it is stored behind the others of its key, with `ukey` =
    /// `KEY#HASH#GENERATION`, and [`Queue::claim_latest`] never sends it before them.
    pub async fn insert_latest(&self, records: Arc<Vec<NewRecord>>) -> Result<Vec<InsertStatus>> {
        self.call(move |conn| insert_rows(conn, &records, true, now_ms()))
            .await
    }
}

/// Inserts `records` in one transaction; with `ordered`, each `ukey` is an ordering key (see the
/// module doc).
fn insert_rows(
    conn: &mut Connection,
    records: &[NewRecord],
    ordered: bool,
    now: i64,
) -> Result<Vec<InsertStatus>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(records.len());
    // rows inserted per (kind, device, status): added to `counts` once, in the same transaction
    let mut added: HashMap<(&str, &str, i64), i64> = HashMap::new();
    {
        let mut latest = match ordered {
            true => Some(tx.prepare_cached(
                "SELECT ukey, (SELECT count(*) FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3)
                 FROM outbox WHERE kind = ?1 AND ukey >= ?2 AND ukey < ?3 ORDER BY id DESC LIMIT 1",
            )?),
            false => None,
        };
        let mut st = tx.prepare_cached(
            "INSERT INTO outbox (kind, idem, ukey, device_id, subject, user_id, event_time, payload, status, next_attempt_at, created_at, dead_reason, err_msg, live)
             VALUES (?1, ?2, ?12, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11, ?13)
             ON CONFLICT(kind, ukey) DO NOTHING",
        )?;
        for r in records {
            let ukey: Cow<str> = match latest.as_mut() {
                None => Cow::Borrowed(&r.ukey),
                Some(latest) => match next_generation(latest, r)? {
                    Some(generation) => {
                        Cow::Owned(format!("{}#{}#{generation:08}", r.ukey, r.idem))
                    }
                    None => {
                        out.push(InsertStatus::Duplicate);
                        continue;
                    }
                },
            };
            let (reason, msg) = match &r.dead {
                Some((a, b)) => (Some(a.as_str()), Some(b.as_str())),
                None => (None, None),
            };
            let n = st.execute(params![
                r.kind,
                r.idem,
                r.device_id,
                r.subject,
                r.user_id,
                r.event_time,
                r.payload,
                r.status as i64,
                now,
                reason,
                msg,
                ukey,
                r.live as i64
            ])?;
            out.push(if n == 0 {
                InsertStatus::Duplicate
            } else {
                *added
                    .entry((r.kind, r.device_id.as_str(), r.status as i64))
                    .or_default() += 1;
                match r.status {
                    Status::Unmapped => InsertStatus::Unmapped,
                    Status::Dead => InsertStatus::Dead(reason.unwrap_or("dead").to_string()),
                    _ => InsertStatus::Pending,
                }
            });
        }
        let mut count = tx.prepare_cached(
            "INSERT INTO counts (kind, device_id, status, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, device_id, status) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((kind, dev, status), n) in added {
            count.execute(params![kind, dev, status, n])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The generation a new value of `r`'s ordering key gets, or `None` when the value equals the newest
/// queued one (`latest`: the statement that finds it and counts the key's rows).
fn next_generation(
    latest: &mut rusqlite::CachedStatement<'_>,
    r: &NewRecord,
) -> Result<Option<i64>> {
    let (lo, hi) = (format!("{}#", r.ukey), format!("{}$", r.ukey));
    let last: Option<(String, i64)> = latest
        .query_row(params![r.kind, lo, hi], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let same = last.as_ref().is_some_and(|(u, _)| {
        u.len() == r.ukey.len() + LATEST_SUFFIX_LEN
            && u.get(r.ukey.len() + 1..r.ukey.len() + 33) == Some(r.idem.as_str())
    });
    Ok((!same).then(|| last.map(|(_, n)| n).unwrap_or(0)))
}
