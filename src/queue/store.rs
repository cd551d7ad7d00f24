//! Per-device source state: what a source must remember across restarts (a ZKTeco terminal's
//! watermark, later a push clock's stamp or a cursor), kept in the queue database beside the punches
//! it describes, as a value under `(device id, name)`.
//!
//! Sources use this API, never SQL: a kind of clock names its state and hands over a serialisable
//! value; the queue stores it as JSON in `source_state`.
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
    Memory(Arc<Mutex<HashMap<String, String>>>),
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
    }
}
