//! Per-device source state: what a source must remember across restarts (a ZKTeco terminal's
//! watermark, later a push clock's stamp or a cursor), kept in the queue database beside the punches
//! it describes, as a value under `(device id, name)`.
//!
//! Sources use this API, never SQL: a kind of clock names its state and hands over a serialisable
//! value; the queue stores it as JSON in `source_state`.
//!
//! It also keeps the names a device knows for its users ([`DeviceStore::save_user_names`], table
//! `device_users`), which `clockbridge unmapped` and `status` show beside a user whose punches wait
//! for a mapping ([`super::unmapped`]).
//!
//! Guarantees:
//! - [`DeviceStore::save`] returns only once the value is committed (`synchronous=FULL`, like every
//!   queue write), so a source that saves its watermark after its punches' commit never moves it past a
//!   punch that is not in the queue.
//! - A value that no longer reads as its type is an error naming the device and the name, never a
//!   silent default.
//! - [`DeviceStore::in_memory`] keeps the same contract for the life of the process (tests, tools that
//!   run a source without a queue).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::OptionalExtension;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{now_ms, Queue, QueueError};

/// Why a state value could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The stored value is not what the source expects (or cannot be written as JSON).
    #[error("device {device}: stored state {name:?} is not readable: {reason}: report this (the source starts over from nothing if the row is deleted)")]
    Value {
        device: String,
        name: String,
        reason: String,
    },
}

/// One device's state store.
#[derive(Clone)]
pub struct DeviceStore {
    device: String,
    at: Backend,
}

#[derive(Clone)]
enum Backend {
    Queue(Queue),
    Memory(Arc<Mutex<Memory>>),
}

/// The in-memory store: state values by name, and the user names.
#[derive(Default)]
struct Memory {
    values: HashMap<String, String>,
    names: Vec<(String, String)>,
}

impl DeviceStore {
    /// The state of `device` in the queue database.
    pub fn new(queue: Queue, device: &str) -> DeviceStore {
        DeviceStore {
            device: device.to_string(),
            at: Backend::Queue(queue),
        }
    }

    /// A store that lives as long as the process: each start begins from nothing.
    pub fn in_memory(device: &str) -> DeviceStore {
        DeviceStore {
            device: device.to_string(),
            at: Backend::Memory(Arc::default()),
        }
    }

    /// The value saved under `name`, if any.
    pub async fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let text = match &self.at {
            Backend::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values
                .get(name)
                .cloned(),
            Backend::Queue(q) => {
                let (device, name) = (self.device.clone(), name.to_string());
                q.call(move |conn| {
                    Ok(conn
                        .prepare_cached(
                            "SELECT value FROM source_state WHERE device_id = ?1 AND name = ?2",
                        )?
                        .query_row([&device, &name], |r| r.get::<_, String>(0))
                        .optional()?)
                })
                .await?
            }
        };
        text.map(|t| serde_json::from_str(&t).map_err(|e| self.bad(name, e)))
            .transpose()
    }

    /// Saves `value` under `name` (committed before this returns).
    pub async fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(|e| self.bad(name, e))?;
        match &self.at {
            Backend::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values
                    .insert(name.to_string(), text);
            }
            Backend::Queue(q) => {
                let (device, name) = (self.device.clone(), name.to_string());
                q.call(move |conn| {
                    conn.prepare_cached(
                        "INSERT INTO source_state (device_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (device_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )?
                    .execute(rusqlite::params![device, name, text, now_ms()])?;
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Every value whose name starts with `prefix` (a source's list of items, one name each: so
    /// that two processes adding and updating different items never overwrite each other), in
    /// the order of their names.
    pub async fn load_prefixed<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut rows: Vec<(String, String)> = match &self.at {
            Backend::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Backend::Queue(q) => {
                let (device, prefix) = (self.device.clone(), prefix.to_string());
                q.call(move |conn| {
                    let rows = conn
                        .prepare_cached(
                            "SELECT name, value FROM source_state
                             WHERE device_id = ?1 AND substr(name, 1, length(?2)) = ?2",
                        )?
                        .query_map([&device, &prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(String, String)>, _>>()?;
                    Ok(rows)
                })
                .await?
            }
        };
        rows.sort();
        rows.into_iter()
            .map(|(k, v)| {
                serde_json::from_str(&v)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| self.bad(&k, e))
            })
            .collect()
    }

    /// The queue this store keeps its values in (`None` for [`DeviceStore::in_memory`]): for a
    /// source that compares what its clock says with what the queue holds.
    pub fn queue(&self) -> Option<&Queue> {
        match &self.at {
            Backend::Queue(q) => Some(q),
            Backend::Memory(_) => None,
        }
    }

    /// Replaces the names the device knows for its users with `names`, pairs of the device user id
    /// its punches carry and the name (empty names are not kept), in one transaction (committed
    /// before this returns). A user no longer in `names` loses its name.
    pub async fn save_user_names(&self, names: Vec<(String, String)>) -> Result<(), StoreError> {
        let names: Vec<(String, String)> =
            names.into_iter().filter(|(_, n)| !n.is_empty()).collect();
        match &self.at {
            Backend::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).names = names,
            Backend::Queue(q) => {
                let device = self.device.clone();
                q.call(move |conn| {
                    let tx = conn.transaction()?;
                    tx.prepare_cached("DELETE FROM device_users WHERE device_id = ?1")?
                        .execute([&device])?;
                    {
                        let mut ins = tx.prepare_cached(
                            "INSERT INTO device_users (device_id, device_user_id, name, updated_at)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (device_id, device_user_id) DO UPDATE SET name = excluded.name",
                        )?;
                        let now = now_ms();
                        for (user, name) in &names {
                            ins.execute(rusqlite::params![device, user, name, now])?;
                        }
                    }
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The names saved by [`DeviceStore::save_user_names`], sorted by device user id.
    pub async fn user_names(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut names = match &self.at {
            Backend::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).names.clone(),
            Backend::Queue(q) => {
                let device = self.device.clone();
                q.call(move |conn| {
                    let names = conn
                        .prepare_cached(
                            "SELECT device_user_id, name FROM device_users WHERE device_id = ?1",
                        )?
                        .query_map([&device], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(String, String)>, _>>()?;
                    Ok(names)
                })
                .await?
            }
        };
        names.sort();
        Ok(names)
    }

    fn bad(&self, name: &str, e: serde_json::Error) -> StoreError {
        StoreError::Value {
            device: self.device.clone(),
            name: name.to_string(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Mark {
        records: u64,
        serial: Option<String>,
    }

    #[tokio::test]
    async fn state_is_kept_per_device_and_name_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let (q, _) = Queue::open(&path).unwrap();
        let a = DeviceStore::new(q.clone(), "door-1");
        let b = DeviceStore::new(q.clone(), "door-2");
        assert_eq!(a.load::<Mark>("mark").await.unwrap(), None);
        let m = Mark {
            records: 7,
            serial: Some("X".into()),
        };
        a.save("mark", &m).await.unwrap();
        a.save("other", &1u32).await.unwrap();
        assert_eq!(b.load::<Mark>("mark").await.unwrap(), None);
        drop((a, b, q));
        let (q, _) = Queue::open(&path).unwrap();
        let a = DeviceStore::new(q, "door-1");
        assert_eq!(a.load::<Mark>("mark").await.unwrap(), Some(m));
        assert_eq!(a.load::<u32>("other").await.unwrap(), Some(1));
        // a value of another shape is an error naming the device and the name
        let e = a.load::<Mark>("other").await.unwrap_err().to_string();
        assert!(e.contains("door-1") && e.contains("\"other\""), "{e}");
    }

    #[tokio::test]
    async fn in_memory_keeps_the_same_contract() {
        let s = DeviceStore::in_memory("door-1");
        assert_eq!(s.load::<u64>("n").await.unwrap(), None);
        s.save("n", &5u64).await.unwrap();
        assert_eq!(s.load::<u64>("n").await.unwrap(), Some(5));
        assert_eq!(s.clone().load::<u64>("n").await.unwrap(), Some(5));
        s.save_user_names(vec![("2".into(), "B".into()), ("1".into(), "".into())])
            .await
            .unwrap();
        assert_eq!(
            s.user_names().await.unwrap(),
            vec![("2".to_string(), "B".to_string())]
        );
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn user_names_are_replaced_whole_per_device_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let (q, _) = Queue::open(&path).unwrap();
        let a = DeviceStore::new(q.clone(), "lobby");
        let b = DeviceStore::new(q.clone(), "gate");
        a.save_user_names(pairs(&[
            ("1001", "Li Lei"),
            ("1002", "Han\u{1b}Mei"),
            ("1003", ""),
        ]))
        .await
        .unwrap();
        b.save_user_names(pairs(&[("1001", "Someone else")]))
            .await
            .unwrap();
        // the device's table changed: 1002 left, 1004 came, 1001 was renamed
        a.save_user_names(pairs(&[("1001", "Li Lei (HR)"), ("1004", "王伟")]))
            .await
            .unwrap();
        drop((a, b, q));
        let (q, _) = Queue::open(&path).unwrap();
        assert_eq!(
            DeviceStore::new(q.clone(), "lobby")
                .user_names()
                .await
                .unwrap(),
            pairs(&[("1001", "Li Lei (HR)"), ("1004", "王伟")])
        );
        assert_eq!(
            DeviceStore::new(q, "gate").user_names().await.unwrap(),
            pairs(&[("1001", "Someone else")])
        );
    }
}
