//! The ZKTeco terminal's side of `clockbridge reconcile` ([`ClockCount`]): how many records its log
//! holds (GET_FREE_SIZES, the same count a poll reads) and the watermark kept in the queue (how many
//! of them the source counts as committed). The terminal is only asked, never disabled or changed:
//! one short session beside the daemon's own (a terminal takes several).

use std::future::Future;
use std::pin::Pin;

use super::{watermark, Timeouts, ZkClient, ZkSpec};
use crate::queue::store::DeviceStore;
use crate::sources::kind::{ClockCount, ClockCounted};

impl ClockCount for ZkSpec {
    fn count<'a>(
        &'a self,
        device: &'a str,
        _range: (i64, i64),
        _days: (chrono::NaiveDate, chrono::NaiveDate),
        store: &'a DeviceStore,
    ) -> Pin<Box<dyn Future<Output = Result<ClockCounted, String>> + Send + 'a>> {
        Box::pin(async move {
            let wm = watermark::load(store)
                .await
                .map_err(|e| format!("the watermark cannot be read: {e}"))?;
            let address = self
                .zk_address()
                .ok_or_else(|| "the device has no address".to_string())?;
            let timeouts = Timeouts {
                packet: self.io_timeout(),
                chunk: self.io_timeout() * 3,
                ..Timeouts::default()
            };
            let label = format!("device {device} ({address})");
            let mut client = ZkClient::connect(&label, &address, self.comm_key.expose(), timeouts)
                .await
                .map_err(|e| e.to_string())?;
            let sizes = client.free_sizes().await.map_err(|e| e.to_string());
            client.exit().await;
            Ok(ClockCounted {
                device_records: Some(u64::from(sizes?.records)),
                watermark: Some(wm.map_or(0, |w| w.records)),
                range_records: None,
            })
        })
    }
}
