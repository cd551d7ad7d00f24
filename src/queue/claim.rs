//! Claiming: due `pending` rows of one kind become `in_flight` in one transaction. Kinds whose
//! values overwrite each other are claimed one value per target at a time ([`Queue::claim_latest`]);
//! the sender's claim loop also asks how many rows are due and when the next one will be, and gives
//! back what it could not finish on shutdown.
//!
//! # Claim order: live rows first, the backlog never starved
//! A row is live when it was a punch read as it happened ([`crate::punch::LIVE_WINDOW_SECS`]; the
//! `live` column, set at insert). A claim of `limit` rows takes, among the due rows
//! (`next_attempt_at <= now`, so a row backing off after a failure keeps its delay whatever it is):
//! 1. the live ones, oldest due first (`next_attempt_at`, then `id`), but at most `live_cap` of them
//!    while backlog rows are due too ([`live_cap`]: half the batch, rounded up);
//! 2. backlog rows, oldest due first, up to the limit;
//! 3. more live rows into any room the backlog left.
//!
//! So a batch is as full as the due rows allow (the drain rate does not drop), a live punch waits
//! for no backlog row, and while backlog rows are due they get at least half of every batch (of
//! every other claim when batches hold one row): a flood of live rows slows the backlog to half the
//! rate at worst, and never stops it. Live rows beyond the cap wait in their own order, still ahead
//! of every backlog row that is not in the reserved half.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{now_ms, Claimed, Queue, Result};

/// Due live rows, oldest due first (`?1` kind, `?2` now, `?3` limit): the small partial index of
/// pending live rows, named so that the planner never walks the backlog for them.
pub(super) const DUE_LIVE: &str = "SELECT id FROM outbox INDEXED BY outbox_live
    WHERE kind = ?1 AND status = 0 AND live = 1 AND next_attempt_at <= ?2
    ORDER BY next_attempt_at, id LIMIT ?3";

/// Due backlog rows, oldest due first (`?1` kind, `?2` now, `?3` limit).
pub(super) const DUE_BACKLOG: &str = "SELECT id FROM outbox INDEXED BY outbox_ready
    WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?2 AND live = 0
    ORDER BY next_attempt_at, id LIMIT ?3";

/// How many of a claim's `limit` rows live rows may take while backlog rows are due too: half,
/// rounded up. With one row per claim, every other claim (`turn`, the claim's sequence number)
/// reserves its row for the backlog. The room live rows do not use goes to the backlog, and the
/// reverse, so the cap never makes a batch smaller.
pub fn live_cap(limit: usize, turn: u64) -> usize {
    match limit {
        0 => 0,
        1 => turn.is_multiple_of(2) as usize,
        _ => limit - limit / 2,
    }
}

impl Queue {
    /// Claims up to `limit` due pending rows of `kind`, live rows first (at most [`live_cap`] of them
    /// while backlog rows are due), marking them in flight. Returns them in id order.
    pub async fn claim(&self, kind: &'static str, limit: usize) -> Result<Vec<Claimed>> {
        self.claim_capped(kind, limit, live_cap(limit, 0)).await
    }

    /// [`Queue::claim`] with at most `live_cap` live rows while backlog rows are due (the sender's
    /// claim loop passes [`live_cap`] of its claim's turn).
    pub async fn claim_capped(
        &self,
        kind: &'static str,
        limit: usize,
        live_cap: usize,
    ) -> Result<Vec<Claimed>> {
        self.call(move |conn| claim(conn, kind, limit, live_cap, now_ms()))
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

/// The claim order of the module doc, in one transaction (taken for writing at its start, so that
/// another process's write between the reads and the updates waits rather than fails).
fn claim(
    conn: &mut Connection,
    kind: &str,
    limit: usize,
    live_cap: usize,
    now: i64,
) -> Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due = |sql: &str, n: usize| -> Result<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut st = tx.prepare_cached(sql)?;
        let ids = st
            .query_map(params![kind, now, n as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    };
    let live = due(DUE_LIVE, limit)?;
    let backlog = due(DUE_BACKLOG, limit - live.len().min(live_cap))?;
    let take_live = live.len().min(limit - backlog.len());
    let mut rows = Vec::with_capacity(take_live + backlog.len());
    {
        let mut take = tx.prepare_cached(
            "UPDATE outbox SET status = 1, attempts = attempts + 1, last_attempt_at = ?2,
                    first_attempt_at = coalesce(first_attempt_at, ?2)
             WHERE id = ?1 AND status = 0
             RETURNING id, idem, device_id, user_id, payload, attempts",
        )?;
        for id in live[..take_live].iter().chain(&backlog) {
            if let Some(c) = take.query_row(params![id, now], claimed).optional()? {
                rows.push(c);
            }
        }
    }
    tx.commit()?;
    rows.sort_by_key(|c| c.id);
    Ok(rows)
}

/// A claimed row from `RETURNING id, idem, device_id, user_id, payload, attempts`.
fn claimed(r: &rusqlite::Row<'_>) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: r.get(0)?,
        idem: r.get(1)?,
        device_id: r.get(2)?,
        user_id: r.get(3)?,
        payload: r.get(4)?,
        attempts: r.get(5)?,
    })
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
        .query_map(params![kind, limit as i64, now], claimed)?
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|c| c.id);
    Ok(rows)
}
