//! Claiming: due `pending` rows of one kind become `in_flight` in one statement, oldest due first.
//! Kinds whose values overwrite each other are claimed one value per target at a time
//! ([`Queue::claim_latest`]); the sender's claim loop also asks how many rows are due and when the
//! next one will be, and gives back what it could not finish on shutdown.

use rusqlite::{params, Connection};

use super::{now_ms, Claimed, Queue, Result};

impl Queue {
    /// Claims up to `limit` due pending rows of `kind` (oldest due first), marking them in flight.
    pub async fn claim(&self, kind: &'static str, limit: usize) -> Result<Vec<Claimed>> {
        self.call(move |conn| claim(conn, kind, limit, now_ms()))
            .await
    }

    /// Claims up to `limit` due pending rows of an ordered kind that share the `device_id` (the
    /// request group) of the oldest due one, skipping rows that have an older pending or in-flight row
    /// of the same ordering key (so values of one key go out one at a time, oldest first).
    pub async fn claim_latest(&self, kind: &'static str, limit: usize) -> Result<Vec<Claimed>> {
        self.call(move |conn| claim_latest(conn, kind, limit, now_ms()))
            .await
    }

    /// How many rows of `kind` are due now, counting at most `limit`.
    pub async fn ready_count(&self, kind: &'static str, limit: usize) -> Result<usize> {
        self.call(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?2 LIMIT ?3)",
                )?
                .query_row(params![kind, now_ms(), limit as i64], |r| r.get(0))?;
            Ok(n as usize)
        })
        .await
    }

    /// When the earliest pending row of `kind` becomes due (Unix ms), if any.
    pub async fn next_due(&self, kind: &'static str) -> Result<Option<i64>> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_at) FROM outbox WHERE kind = ?1 AND status = 0",
                )?
                .query_row(params![kind], |r| r.get::<_, Option<i64>>(0))?)
        })
        .await
    }

    /// Puts every in-flight row of `kind` back to pending. Returns how many.
    pub async fn requeue_in_flight_of(&self, kind: &'static str) -> Result<usize> {
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE outbox SET status = 0 WHERE status = 1 AND kind = ?1",
                params![kind],
            )?)
        })
        .await
    }

    /// Puts every in-flight row back to pending (used on a clean shutdown for requests that were
    /// abandoned). Returns how many.
    pub async fn requeue_in_flight(&self) -> Result<usize> {
        self.call(|conn| Ok(conn.execute("UPDATE outbox SET status = 0 WHERE status = 1", [])?))
            .await
    }
}

fn claim(conn: &mut Connection, kind: &str, limit: usize, now: i64) -> Result<Vec<Claimed>> {
    let mut st = conn.prepare_cached(
        "UPDATE outbox SET status = 1, attempts = attempts + 1, last_attempt_at = ?3,
                first_attempt_at = coalesce(first_attempt_at, ?3)
         WHERE id IN (SELECT id FROM outbox WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?3
                      ORDER BY next_attempt_at, id LIMIT ?2)
         RETURNING id, idem, device_id, user_id, payload, attempts",
    )?;
    claimed_rows(&mut st, kind, limit, now)
}

/// No older pending or in-flight row of the same ordering key (`{t}` is the outer row's alias; 42 is
/// [`super::LATEST_SUFFIX_LEN`]).
const NO_OLDER_OPEN: &str = "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.kind = {t}.kind
    AND p.ukey >= substr({t}.ukey, 1, length({t}.ukey) - 42) || '#'
    AND p.ukey < substr({t}.ukey, 1, length({t}.ukey) - 42) || '$'
    AND p.id < {t}.id AND p.status IN (0, 1))";

fn claim_latest(conn: &mut Connection, kind: &str, limit: usize, now: i64) -> Result<Vec<Claimed>> {
    let sql = format!(
        "UPDATE outbox SET status = 1, attempts = attempts + 1, last_attempt_at = ?3,
                first_attempt_at = coalesce(first_attempt_at, ?3)
         WHERE id IN (SELECT o.id FROM outbox o
                      WHERE o.kind = ?1 AND o.status = 0 AND o.next_attempt_at <= ?3 AND {o_ok}
                        AND o.device_id = (SELECT f.device_id FROM outbox f
                            WHERE f.kind = ?1 AND f.status = 0 AND f.next_attempt_at <= ?3 AND {f_ok}
                            ORDER BY f.next_attempt_at, f.id LIMIT 1)
                      ORDER BY o.next_attempt_at, o.id LIMIT ?2)
         RETURNING id, idem, device_id, user_id, payload, attempts",
        o_ok = NO_OLDER_OPEN.replace("{t}", "o"),
        f_ok = NO_OLDER_OPEN.replace("{t}", "f"),
    );
    let mut st = conn.prepare_cached(&sql)?;
    claimed_rows(&mut st, kind, limit, now)
}

/// Runs a claim statement (`?1` kind, `?2` limit, `?3` now; `RETURNING id, idem, device_id, user_id,
/// payload, attempts`) and returns the rows in id order.
fn claimed_rows(
    st: &mut rusqlite::CachedStatement<'_>,
    kind: &str,
    limit: usize,
    now: i64,
) -> Result<Vec<Claimed>> {
    let mut rows: Vec<Claimed> = st
        .query_map(params![kind, limit as i64, now], |r| {
            Ok(Claimed {
                id: r.get(0)?,
                idem: r.get(1)?,
                device_id: r.get(2)?,
                user_id: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|c| c.id);
    Ok(rows)
}
