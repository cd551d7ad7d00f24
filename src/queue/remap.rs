//! Rows waiting for a user: a punch whose device user the mapping does not know is stored
//! `unmapped`, and released to `pending` with its user id once the mapping knows it.

use std::sync::Arc;

use rusqlite::params;

use super::{Queue, Result};
use crate::mapping::Mapping;

impl Queue {
    /// Gives unmapped rows whose user the mapping now knows their Feishu user id and makes them
    /// pending. Returns how many were released.
    pub async fn release_unmapped(&self, mapping: Arc<Mapping>) -> Result<usize> {
        self.call(move |conn| {
            let pairs: Vec<(String, String)> = conn
                .prepare_cached("SELECT DISTINCT device_id, subject FROM outbox WHERE status = 4")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let tx = conn.transaction()?;
            let mut released = 0;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE outbox SET status = 0, user_id = ?3, next_attempt_at = 0,
                        payload = json_set(payload, '$.user_id', ?3, '$.creator_id', ?3)
                     WHERE status = 4 AND device_id = ?1 AND subject = ?2",
                )?;
                for (dev, sub) in pairs {
                    if let Some(uid) = mapping.lookup(&dev, &sub) {
                        released += st.execute(params![dev, sub, uid])?;
                    }
                }
            }
            tx.commit()?;
            Ok(released)
        })
        .await
    }
}
