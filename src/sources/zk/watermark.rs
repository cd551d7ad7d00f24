//! The watermark of a ZKTeco terminal's attendance log: how much of the log is committed to the
//! queue, and the proof that the log is still the same log. Kept through the queue's per-device state
//! store ([`DeviceStore`]) under the name [`NAME`].

use serde::{Deserialize, Serialize};

use crate::queue::store::{DeviceStore, StoreError};

/// The name of the watermark in the device's state store.
pub const NAME: &str = "zk_watermark";

/// The watermark of one device's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The address the log was read from.
    pub address: String,
    /// The serial number last seen at `address`.
    pub serial: Option<String>,
    /// Records of the log committed to the queue.
    pub records: u64,
    pub record_size: usize,
    /// Raw bytes of record `records - 1` (stored as lowercase hex).
    #[serde(with = "hex_bytes")]
    pub last_record: Option<Vec<u8>>,
    /// Set while clockbridge clears the log (a shrink then is expected).
    pub clearing: bool,
}

/// Reads a device's watermark.
pub async fn load(store: &DeviceStore) -> Result<Option<Watermark>, StoreError> {
    store.load(NAME).await
}

/// Stores a device's watermark (committed with `synchronous=FULL` before it returns).
pub async fn save(store: &DeviceStore, w: &Watermark) -> Result<(), StoreError> {
    store.save(NAME, w).await
}

/// `Option<Vec<u8>>` as a hex string (or null).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => {
                let text: String = b.iter().map(|x| format!("{x:02x}")).collect();
                s.serialize_str(&text)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bad = || serde::de::Error::custom(format!("{text:?} is not hex"));
        if text.len() % 2 != 0 {
            return Err(bad());
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watermark_reads_back_as_written_and_reads_what_the_migration_wrote() {
        let store = DeviceStore::in_memory("door-9");
        let w = Watermark {
            address: "10.0.0.5:4370".into(),
            serial: Some("SN1".into()),
            records: 120,
            record_size: 40,
            last_record: Some(vec![0, 0xff, 0x10]),
            clearing: false,
        };
        save(&store, &w).await.unwrap();
        assert_eq!(load(&store).await.unwrap(), Some(w.clone()));
        // the shape the schema-4 migration writes from a zk_watermarks row (upper or lower hex)
        store
            .save(
                NAME,
                &serde_json::json!({"address": "10.0.0.5:4370", "serial": "SN1", "records": 120,
                    "record_size": 40, "last_record": "00FF10", "clearing": false}),
            )
            .await
            .unwrap();
        assert_eq!(load(&store).await.unwrap(), Some(w));
    }
}
