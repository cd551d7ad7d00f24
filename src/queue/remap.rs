//! What the outbox must know of a kind of record it stores but never reads ([`KindRules`], given by
//! the lane that sends the kind), and the rows waiting for a user: a record whose device user the
//! mapping does not know is stored `unmapped`, and released to `pending` once the mapping knows it,
//! its stored payload rewritten by its kind's [`Remap`] row by row on the database thread.

use std::sync::Arc;

use rusqlite::params;

use super::{Queue, Result};
use crate::mapping::Mapping;

/// Rewrites a stored payload for a new user id (`None`: no user); `None` when the stored text cannot
/// be read (the row is then left as it is).
pub type Remap = fn(&str, Option<&str>) -> Option<String>;

/// The rules of the kind of a row (`None`: a kind no lane sends; its rows get no special rule).
pub type KindsOf = fn(&str) -> Option<&'static dyn KindRules>;

/// What the outbox must know of a kind of record (the payload it stores is opaque to it). Each lane
/// (`crate::feishu::lanes`) implements it for the kind it sends.
pub trait KindRules: Send + Sync {
    /// The `kind` column of its rows.
    fn kind(&self) -> &'static str;

    /// Whether its records are values that overwrite each other (report rows, accrual updates):
    /// queued with [`Queue::insert_latest`], claimed with [`Queue::claim_latest`], and a dead value
    /// that has a newer one queued or delivered is never retried. Default: no.
    fn ordered(&self) -> bool {
        false
    }

    /// Whether a record of this event time (Unix seconds) may be sent, `latest` being the latest
    /// time accepted now; a dead letter outside stays dead when retried. Default: always.
    fn sendable(&self, event_time: i64, latest: i64) -> bool {
        let _ = (event_time, latest);
        true
    }

    /// How its stored payload gets a new user id; `None` (the default): its rows carry no mapped
    /// user and are never re-mapped.
    fn remap(&self) -> Option<Remap> {
        None
    }
}

impl Queue {
    /// Gives the unmapped rows of `kind` whose user the mapping now knows their Feishu user id (in
    /// the `user_id` column and, through the kind's [`Remap`], in the payload) and makes them pending.
    /// Returns how many were released.
    pub async fn release_unmapped(
        &self,
        kind: &'static dyn KindRules,
        mapping: Arc<Mapping>,
    ) -> Result<usize> {
        let Some(remap) = kind.remap() else {
            return Ok(0);
        };
        let k = kind.kind();
        let (released, unreadable) = self
            .call(move |conn| {
                let pairs: Vec<(String, String)> = conn
                    .prepare_cached(
                        "SELECT DISTINCT device_id, subject FROM outbox WHERE status = 4 AND kind = ?1",
                    )?
                    .query_map(params![k], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let tx = conn.transaction()?;
                let (mut released, mut unreadable) = (0, 0);
                {
                    let mut rows = tx.prepare_cached(
                        "SELECT id, payload FROM outbox
                         WHERE status = 4 AND kind = ?1 AND device_id = ?2 AND subject = ?3",
                    )?;
                    let mut st = tx.prepare_cached(
                        "UPDATE outbox SET status = 0, user_id = ?2, next_attempt_at = 0, payload = ?3
                         WHERE id = ?1 AND status = 4",
                    )?;
                    for (dev, sub) in pairs {
                        let Some(uid) = mapping.lookup(&dev, &sub) else {
                            continue;
                        };
                        let found: Vec<(i64, String)> = rows
                            .query_map(params![k, dev, sub], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<Result<_, _>>()?;
                        for (id, payload) in found {
                            match remap(&payload, Some(&uid)) {
                                Some(p) => released += st.execute(params![id, uid, p])?,
                                None => unreadable += 1,
                            }
                        }
                    }
                }
                tx.commit()?;
                Ok((released, unreadable))
            })
            .await?;
        if unreadable > 0 {
            tracing::warn!(
                kind = k,
                rows = unreadable,
                "queue: unmapped rows whose stored payload cannot be read (changed outside clockbridge) stay unmapped"
            );
        }
        Ok(released)
    }
}
