//! The read model of the rows waiting for a mapping: one entry per device user whose punches are
//! `unmapped`, with how many, the first and last event time, and the name the device knows for that
//! user (from `device_users`, kept by [`super::store::DeviceStore::save_user_names`]). Read by
//! `clockbridge unmapped` and `status` (their own read-only connection) so that an admin can fill
//! the mapping table without SQL.
//!
//! It reads the partial index `outbox_unmapped (device_id, subject, event_time) WHERE status = 4`
//! alone (schema 5): the cost grows with the unmapped rows, not with the queue (`cargo bench --bench
//! queue` prints it). A queue of schema 4 (written by a daemon that
//! has not been restarted since an upgrade, read here beside it) has no `device_users` yet: its
//! users are listed without names.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::{Result, Status};

/// A device user whose punches wait for a mapping. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingUser {
    pub device_id: String,
    /// The user id the device sends (the mapping table's `device_user_id`).
    pub device_user_id: String,
    /// The name the device knows for the user, as the device has it (`None`: the device told none,
    /// e.g. a line clock).
    pub name: Option<String>,
    /// Punches waiting.
    pub count: u64,
    /// The earliest and the latest of their event times.
    pub first_event_time: i64,
    pub last_event_time: i64,
}

/// Every device user with unmapped rows, most rows first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// How many device users wait (all of them, also those beyond `users`'s limit).
    pub total_users: u64,
    /// How many rows wait, all users together.
    pub total_rows: u64,
    /// The users, most rows first (then by device and user id), at most the limit asked for.
    pub users: Vec<WaitingUser>,
}

/// The device users with unmapped rows from an open connection (the read-only one of `status` and
/// `clockbridge unmapped`), at most `limit` of them listed, most rows first.
pub fn read_waiting_users(conn: &Connection, limit: usize) -> Result<Waiting> {
    let names: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'device_users'",
        [],
        |r| r.get(0),
    )?;
    let name = if names {
        "(SELECT name FROM device_users d WHERE d.device_id = o.device_id AND d.device_user_id = o.subject)"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT o.device_id, o.subject, count(*), min(o.event_time), max(o.event_time), {name}
         FROM outbox o WHERE o.status = {unmapped}
         GROUP BY o.device_id, o.subject
         ORDER BY count(*) DESC, o.device_id, o.subject",
        unmapped = Status::Unmapped as i64,
    );
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map([], |r| {
        Ok(WaitingUser {
            device_id: r.get(0)?,
            device_user_id: r.get(1)?,
            count: r.get::<_, i64>(2)?.max(0) as u64,
            first_event_time: r.get(3)?,
            last_event_time: r.get(4)?,
            name: r.get::<_, Option<String>>(5)?.filter(|n| !n.is_empty()),
        })
    })?;
    let mut w = Waiting::default();
    for row in rows {
        let u = row?;
        w.total_users += 1;
        w.total_rows += u.count;
        if w.users.len() < limit {
            w.users.push(u);
        }
    }
    Ok(w)
}
