//! Outcomes: after the platform answered, claimed rows become `delivered`, `dead` or `pending` again,
//! in one transaction per outcome that commits only if every row named was in flight. And the end
//! of a delivered row: pruning after `queue.retention_days`.

use rusqlite::{params, Connection};

use super::{now_ms, ErrorInfo, Queue, QueueError, Result};

impl Queue {
    /// Marks claimed rows delivered.
    pub async fn mark_delivered(&self, ids: Vec<i64>) -> Result<()> {
        self.call(move |conn| {
            let now = now_ms();
            update_claimed(
                conn,
                "UPDATE outbox SET status = 2, delivered_at = ?2, err_code = NULL, err_msg = NULL, err_log_id = NULL
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| st.execute(params![id, now]),
            )
        })
        .await
    }

    /// Returns claimed rows to pending, due at `next_attempt_at` (Unix ms), recording the error.
    /// With `refund_attempt` the attempt is not counted (the request was never processed, e.g. 429).
    pub async fn mark_retry(
        &self,
        ids: Vec<i64>,
        next_attempt_at: i64,
        error: Option<ErrorInfo>,
        refund_attempt: bool,
    ) -> Result<()> {
        self.call(move |conn| {
            let e = error.as_ref();
            update_claimed(
                conn,
                "UPDATE outbox SET status = 0, next_attempt_at = ?2, attempts = attempts - ?3,
                        err_code = coalesce(?4, err_code), err_msg = coalesce(?5, err_msg),
                        err_log_id = coalesce(?6, err_log_id)
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| {
                    st.execute(params![
                        id,
                        next_attempt_at,
                        refund_attempt as i64,
                        e.and_then(|e| e.code),
                        e.map(|e| e.message.as_str()),
                        e.and_then(|e| e.log_id.as_deref()),
                    ])
                },
            )
        })
        .await
    }

    /// Marks claimed rows dead (rejected for good), with the platform's answer.
    pub async fn mark_dead(&self, ids: Vec<i64>, reason: String, error: ErrorInfo) -> Result<()> {
        self.call(move |conn| {
            update_claimed(
                conn,
                "UPDATE outbox SET status = 3, dead_reason = ?2, err_code = ?3, err_msg = ?4, err_log_id = ?5
                 WHERE id = ?1 AND status = 1",
                &ids,
                |st, id| st.execute(params![id, reason, error.code, error.message, error.log_id]),
            )
        })
        .await
    }

    /// Deletes delivered rows delivered before `before_ms`, in chunks. Returns how many.
    pub async fn prune_delivered(&self, before_ms: i64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = self
                .call(move |conn| {
                    let tx = conn.transaction()?;
                    let n = tx.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 2 AND delivered_at < ?1 LIMIT 5000)",
                        params![before_ms],
                    )?;
                    tx.execute(
                        "UPDATE totals SET value = value + ?1 WHERE name = 'pruned_delivered'",
                        params![n as i64],
                    )?;
                    tx.commit()?;
                    Ok(n as u64)
                })
                .await?;
            total += n;
            if n < 5000 {
                return Ok(total);
            }
        }
    }
}

/// Applies `sql` (guarded by `status = 1`) to each claimed row in one transaction, and commits only if
/// every row was in flight: an outcome is never recorded for a row that was not claimed.
fn update_claimed(
    conn: &mut Connection,
    sql: &str,
    ids: &[i64],
    mut exec: impl FnMut(&mut rusqlite::CachedStatement<'_>, i64) -> rusqlite::Result<usize>,
) -> Result<()> {
    let tx = conn.transaction()?;
    let mut changed = 0;
    {
        let mut st = tx.prepare_cached(sql)?;
        for id in ids {
            changed += exec(&mut st, *id)?;
        }
    }
    if changed != ids.len() {
        return Err(QueueError::NotClaimed {
            expected: ids.len(),
            changed,
        });
    }
    tx.commit()?;
    Ok(())
}
