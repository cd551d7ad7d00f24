//! What `clockbridge reconcile` asks of the queue: the rows of one kind whose event falls in a
//! time range, whatever their state (with what the platform last said of them), and putting rows
//! the platform does not show back to `pending`.
//!
//! Guarantees:
//! - [`Queue::rows_in_range`] reads in one statement (one consistent snapshot), without the
//!   payload: 240 000 rows cost a few tens of megabytes, not the payloads' hundreds. The range is
//!   read from the index `outbox_event_time` (kind, event time; schema 7), already in event order:
//!   a day's check of a queue keeping months of delivered rows reads that day's rows, not the whole
//!   outbox.
//! - [`Queue::external_ids`] takes the payload's `external_id` out (SQLite's `json_extract`) for the
//!   few rows the platform did not confirm by their idempotent key: reading it for every row was
//!   a third of the range read.
//! - [`Queue::requeue_delivered`] moves only rows still `delivered` (guarded by the state, in one
//!   transaction), so a row pruned or changed in between is left alone and the count returned is
//!   what changed. The rows keep their payload and idempotent key: the re-send is the same record,
//!   which the platform deduplicates.

use rusqlite::params;
use serde::Serialize;

use super::{now_ms, Queue, Result, Status};

/// One row of a kind in a time range.
#[derive(Debug, Clone, Serialize)]
pub struct RangeRow {
    pub id: i64,
    /// The idempotent key sent as `idempotent_id`.
    pub idem: String,
    pub device_id: String,
    /// The device user id.
    pub subject: String,
    /// The platform user id (None while unmapped).
    pub user_id: Option<String>,
    /// Unix seconds.
    pub event_time: i64,
    pub status: Status,
    /// The payload's `external_id`, when it has one and was read ([`Queue::external_ids`]).
    pub external_id: Option<String>,
    /// Why a dead row is dead.
    pub dead_reason: Option<String>,
    /// The platform's last message about the row.
    pub err_msg: Option<String>,
    pub attempts: i64,
}

/// The rows of kind `?1` with `?2 <= event_time < ?3`: a range of the index `outbox_event_time`
/// (schema 7), in its order.
pub(crate) const RANGE_SQL: &str =
    "SELECT id, idem, device_id, subject, user_id, event_time, status, dead_reason, err_msg, attempts
     FROM outbox WHERE kind = ?1 AND event_time >= ?2 AND event_time < ?3 AND status <= 4
     ORDER BY event_time, id";

/// One row of [`RANGE_SQL`].
fn range_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RangeRow> {
    Ok(RangeRow {
        id: r.get(0)?,
        idem: r.get(1)?,
        device_id: r.get(2)?,
        subject: r.get(3)?,
        user_id: r.get(4)?,
        event_time: r.get(5)?,
        status: Status::from_i64(r.get(6)?).unwrap_or(Status::Pending),
        external_id: None,
        dead_reason: r.get(7)?,
        err_msg: r.get(8)?,
        attempts: r.get(9)?,
    })
}

impl Queue {
    /// The rows of `kind` with `from <= event_time < to` (Unix seconds), every state but dropped
    /// tombstones, in event order.
    pub async fn rows_in_range(
        &self,
        kind: &'static str,
        from: i64,
        to: i64,
    ) -> Result<Vec<RangeRow>> {
        self.call(move |conn| {
            let mut st = conn.prepare(RANGE_SQL)?;
            let rows = st.query_map(params![kind, from, to], range_row)?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// [`Queue::rows_in_range`] handed over in batches of `batch` rows as they are read (one
    /// statement, one snapshot), so the caller works on the first rows while the rest are read.
    /// Returns how many rows were read; stops early (without error) when `out` is closed.
    pub async fn rows_in_range_batched(
        &self,
        kind: &'static str,
        from: i64,
        to: i64,
        batch: usize,
        out: tokio::sync::mpsc::UnboundedSender<Vec<RangeRow>>,
    ) -> Result<u64> {
        let batch = batch.max(1);
        self.call(move |conn| {
            let mut st = conn.prepare(RANGE_SQL)?;
            let mut rows = st.query_map(params![kind, from, to], range_row)?;
            let mut n = 0;
            loop {
                let part = rows
                    .by_ref()
                    .take(batch)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                if part.is_empty() {
                    break;
                }
                n += part.len() as u64;
                let last = part.len() < batch;
                if out.send(part).is_err() || last {
                    break;
                }
            }
            Ok(n)
        })
        .await
    }

    /// The payloads' `external_id` of the rows `ids` that have one (rows gone are absent).
    pub async fn external_ids(&self, ids: Vec<i64>) -> Result<Vec<(i64, String)>> {
        self.call(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT json_extract(payload, '$.external_id') FROM outbox WHERE id = ?1",
            )?;
            let mut out = Vec::new();
            for id in ids {
                let ext: Option<Option<String>> = st
                    .query_row([id], |r| Ok(r.get::<_, Option<String>>(0).unwrap_or(None)))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                if let Some(Some(ext)) = ext {
                    out.push((id, ext));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Puts the `delivered` rows among `ids` back to `pending`, due now (their attempts and live
    /// flag kept). Returns how many moved.
    pub async fn requeue_delivered(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, next_attempt_at = ?2, delivered_at = NULL
                     WHERE id = ?1 AND status = 2",
                )?;
                let now = now_ms();
                for id in ids {
                    n += st.execute(params![id, now])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// The states of the rows `ids` (rows gone are absent): to follow a re-send.
    pub async fn states_of(&self, ids: Vec<i64>) -> Result<Vec<(i64, Status)>> {
        self.call(move |conn| {
            let mut st = conn.prepare_cached("SELECT status FROM outbox WHERE id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let s: Option<i64> =
                    st.query_row([id], |r| r.get(0))
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                if let Some(s) = s.and_then(Status::from_i64) {
                    out.push((id, s));
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::NewRecord;

    fn record(i: i64, t: i64) -> NewRecord {
        NewRecord {
            kind: "user_flow",
            idem: format!("k{i}"),
            ukey: format!("{t:012}k{i}"),
            device_id: "door-1".into(),
            subject: format!("{i}"),
            user_id: Some(format!("u{i}")),
            event_time: t,
            payload: format!(r#"{{"external_id":"door-1/{i}","idempotent_id":"k{i}"}}"#),
            status: Status::Pending,
            dead: None,
            live: false,
        }
    }

    #[tokio::test]
    async fn rows_in_a_range_and_a_requeue_that_moves_only_delivered_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::open(&dir.path().join("q.db")).unwrap();
        let base = 1_780_000_000;
        let recs: Vec<NewRecord> = (0..4).map(|i| record(i, base + i * 100)).collect();
        q.insert(Arc::new(recs)).await.unwrap();
        let claimed = q.claim("user_flow", 2).await.unwrap();
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        q.mark_delivered(ids.clone()).await.unwrap();

        let rows = q
            .rows_in_range("user_flow", base + 50, base + 400)
            .await
            .unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].idem, "k1");
        let ext = q.external_ids(vec![rows[0].id, 999]).await.unwrap();
        assert_eq!(ext, [(rows[0].id, "door-1/1".to_string())]);

        // the same rows in batches, in the same order
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let n = q
            .rows_in_range_batched("user_flow", base + 50, base + 400, 2, tx)
            .await
            .unwrap();
        assert_eq!(n, 3);
        let mut batches = Vec::new();
        while let Some(b) = rx.recv().await {
            batches.push(b.iter().map(|r| r.id).collect::<Vec<_>>());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(batches, [ids[..2].to_vec(), ids[2..].to_vec()]);

        let all = q
            .rows_in_range("user_flow", base, base + 400)
            .await
            .unwrap();
        let every: Vec<i64> = all.iter().map(|r| r.id).collect();
        // two delivered rows move; the pending ones are not touched
        assert_eq!(q.requeue_delivered(every.clone()).await.unwrap(), 2);
        assert_eq!(q.requeue_delivered(every.clone()).await.unwrap(), 0);
        let states = q.states_of(every).await.unwrap();
        assert!(
            states.iter().all(|(_, s)| *s == Status::Pending),
            "{states:?}"
        );
        assert_eq!(q.counts().await.unwrap().total.pending, 4);
    }
}
