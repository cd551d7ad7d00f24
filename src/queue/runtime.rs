//! The `runtime` table: small JSON snapshots a running daemon writes (its figures, every few
//! seconds) for `clockbridge status`, which runs in another process.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, Queue, Result};

impl Queue {
    /// Stores a runtime snapshot (JSON) under `key`, for `status` in another process.
    /// Not recorded in [`super::Faults`]: see [`Queue::call_unrecorded`].
    pub async fn put_runtime(&self, key: &'static str, value: String) -> Result<()> {
        self.call_unrecorded(move |conn| {
            conn.prepare_cached(
                "INSERT INTO runtime(key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![key, value, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// Reads a runtime snapshot and when it was written (Unix ms).
    pub async fn get_runtime(&self, key: &'static str) -> Result<Option<(String, i64)>> {
        self.call(move |conn| read_runtime(conn, key)).await
    }
}

/// A runtime snapshot from an open connection.
pub fn read_runtime(conn: &Connection, key: &str) -> Result<Option<(String, i64)>> {
    Ok(conn
        .query_row(
            "SELECT value, updated_at FROM runtime WHERE key = ?1",
            params![key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}
