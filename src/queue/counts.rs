//! The read model: rows per kind, device and state from the trigger-maintained `counts` table
//! (O(devices), not O(rows)), the age of the oldest outstanding row, and how far behind a kind's
//! backlog is (its oldest outstanding event, its live rows waiting). Read by `status` (its own
//! read-only connection), `/metrics`, the systemd watchdog and the tests. Every read is a lookup in
//! an index, never a scan of the table; the backlog's oldest event scans the index of pending rows
//! (see [`read_backlog`]).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Queue, Result, Status};

/// Counts of rows per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub unmapped: u64,
}

impl StateCounts {
    fn add(&mut self, status: Status, n: u64) {
        match status {
            Status::Pending => self.pending += n,
            Status::InFlight => self.in_flight += n,
            Status::Delivered => self.delivered += n,
            Status::Dead => self.dead += n,
            Status::Unmapped => self.unmapped += n,
        }
    }
    /// Rows not yet settled (pending or in flight).
    pub fn outstanding(&self) -> u64 {
        self.pending + self.in_flight
    }
}

/// Counts overall, per kind and per device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: StateCounts,
    pub by_kind: HashMap<String, StateCounts>,
    pub by_device: HashMap<String, StateCounts>,
    /// Delivered rows already pruned (so delivered + pruned = all ever delivered).
    pub pruned_delivered: u64,
}

/// The counts and the oldest outstanding row, read in one question to the database thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueReading {
    pub counts: Counts,
    /// When the oldest row not yet settled (pending or in flight) was queued, Unix ms.
    pub oldest_outstanding_at: Option<i64>,
}

impl Queue {
    /// Counts per state, kind and device (O(devices), from the trigger-maintained table).
    pub async fn counts(&self) -> Result<Counts> {
        self.call(|conn| read_counts(conn)).await
    }

    /// The counts and the oldest outstanding row's creation time, in one call (for `/metrics`).
    pub async fn reading(&self) -> Result<QueueReading> {
        self.call(|conn| {
            Ok(QueueReading {
                counts: read_counts(conn)?,
                oldest_outstanding_at: read_oldest_outstanding(conn)?,
            })
        })
        .await
    }
}

/// Counts from an open connection (also used by the read-only `status` path).
pub fn read_counts(conn: &Connection) -> Result<Counts> {
    let mut c = Counts::default();
    let mut st =
        conn.prepare_cached("SELECT kind, device_id, status, n FROM counts WHERE n <> 0")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (kind, dev, status, n) = row?;
        let Some(status) = Status::from_i64(status) else {
            continue;
        };
        let n = n.max(0) as u64;
        c.total.add(status, n);
        c.by_kind.entry(kind).or_default().add(status, n);
        c.by_device.entry(dev).or_default().add(status, n);
    }
    c.pruned_delivered = conn
        .query_row(
            "SELECT value FROM totals WHERE name = 'pruned_delivered'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0)
        .max(0) as u64;
    Ok(c)
}

/// How far behind one kind's outstanding rows are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BacklogReading {
    /// The outstanding (pending or in-flight) row with the oldest event time: (event time, Unix
    /// seconds; its device id).
    pub oldest: Option<(i64, String)>,
    /// Live rows pending: claimed before the backlog.
    pub live_pending: u64,
}

/// The oldest event time of the pending rows of a kind (`?1`): a scan of the partial index of pending
/// rows alone, which holds the kind and the event time (no row is read): O(pending rows), about a
/// tenth of a second per million, and no index of its own to keep up at every insert.
pub(super) const OLDEST_PENDING: &str =
    "SELECT min(event_time) FROM outbox INDEXED BY outbox_pending WHERE status = 0 AND kind = ?1";

/// The device of a pending row of kind `?1` with event time `?2`.
pub(super) const OLDEST_PENDING_DEVICE: &str =
    "SELECT device_id FROM outbox INDEXED BY outbox_pending
    WHERE status = 0 AND kind = ?1 AND event_time = ?2 LIMIT 1";

/// How far behind the outstanding rows of `kind` are (see [`BacklogReading`]).
pub fn read_backlog(conn: &Connection, kind: &str) -> Result<BacklogReading> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // a queue still of an older schema (its daemon not restarted since an upgrade): no live rows,
    // and no event time in the index of pending rows (a slower scan, until the daemon migrates it)
    let old = version < super::migrations::LIVE_SINCE;
    let (min_sql, device_sql) = match old {
        false => (OLDEST_PENDING, OLDEST_PENDING_DEVICE),
        true => (
            "SELECT min(event_time) FROM outbox WHERE kind = ?1 AND status = 0",
            "SELECT device_id FROM outbox WHERE kind = ?1 AND status = 0 AND event_time = ?2 LIMIT 1",
        ),
    };
    let pending = match conn
        .prepare_cached(min_sql)?
        .query_row([kind], |r| r.get::<_, Option<i64>>(0))?
    {
        None => None,
        Some(t) => conn
            .prepare_cached(device_sql)?
            .query_row(params![kind, t], |r| r.get::<_, String>(0))
            .optional()?
            .map(|dev| (t, dev)),
    };
    // the rows in flight are at most a few hundred: their own partial index
    let in_flight = conn
        .prepare_cached(
            "SELECT event_time, device_id FROM outbox INDEXED BY outbox_in_flight
             WHERE status = 1 AND kind = ?1 ORDER BY event_time LIMIT 1",
        )?
        .query_row([kind], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let oldest = match (pending, in_flight) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    let live_pending = match old {
        true => 0,
        false => conn
            .prepare_cached(
                "SELECT count(*) FROM outbox INDEXED BY outbox_live
                 WHERE kind = ?1 AND status = 0 AND live = 1",
            )?
            .query_row([kind], |r| r.get::<_, i64>(0))?
            .max(0) as u64,
    };
    Ok(BacklogReading {
        oldest,
        live_pending,
    })
}

/// The oldest outstanding (pending or in-flight) row's creation time, Unix ms.
pub fn read_oldest_outstanding(conn: &Connection) -> Result<Option<i64>> {
    // two lookups, each on its own small partial index
    let pending: Option<i64> = conn.query_row(
        "SELECT min(created_at) FROM outbox WHERE status = 0",
        [],
        |r| r.get(0),
    )?;
    let in_flight: Option<i64> = conn.query_row(
        "SELECT min(created_at) FROM outbox WHERE status = 1",
        [],
        |r| r.get(0),
    )?;
    Ok(match (pending, in_flight) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
