//! [`SimHandle`]: what tests drive a running simulated device by (records, users, clock, options,
//! faults, counters).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta, Utc};

use super::config::{ChunkDrop, SimCounters};
use super::model::{Layout, LayoutError, SimRecord, SimUser};
use super::server::{Control, Shared};

/// Handle to a running simulated device. Cheap to clone; the device stops on
/// [`SimHandle::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct SimHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) ctl: Arc<Control>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.ctl.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The address the device listens on.
    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// Stops accepting, closes every connection and waits (briefly) for their tasks to end.
    pub async fn shutdown(self) {
        self.ctl.stop.cancel();
        let task = self
            .ctl
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Appends records to the log: the next read returns them, and every session registered for
    /// EF_ATTLOG receives one realtime event per record, in order. Nothing is added if any record
    /// does not fit the layout.
    pub fn add_records(
        &self,
        records: impl IntoIterator<Item = SimRecord>,
    ) -> Result<(), LayoutError> {
        let records: Vec<SimRecord> = records.into_iter().collect();
        let events = {
            let mut st = self.shared.lock();
            let layout = st.layout();
            layout.validate(&records)?;
            let events = records
                .iter()
                .map(|r| layout.encode_event(r))
                .collect::<Result<Vec<_>, _>>()?;
            st.records.extend(records);
            events
        };
        for e in events {
            // no receiver (no connection): nothing to deliver
            let _ = self.shared.events.send(Arc::new(e));
        }
        Ok(())
    }

    /// The attendance log as stored now.
    pub fn records(&self) -> Vec<SimRecord> {
        self.shared.lock().records.clone()
    }

    /// Number of records in the log.
    pub fn record_count(&self) -> usize {
        self.shared.lock().records.len()
    }

    /// Empties the attendance log (as if cleared on the device's keypad); counted in `clears`.
    pub fn clear_records(&self) {
        self.shared.lock().records.clear();
        self.shared.count(|c| c.clears += 1);
    }

    /// Replaces the user table. Refused (nothing changed) if a user, or a stored record, no longer
    /// fits the layout (8-byte records resolve their uid through the table).
    pub fn set_users(&self, users: Vec<SimUser>) -> Result<(), LayoutError> {
        let mut st = self.shared.lock();
        let layout = Layout {
            table: &users,
            ..st.layout()
        };
        layout.validate(&st.records)?;
        st.users = users;
        Ok(())
    }

    /// The user table.
    pub fn users(&self) -> Vec<SimUser> {
        self.shared.lock().users.clone()
    }

    /// Sets the device clock to `UTC now + offset` (see [`SimConfig::clock_offset`]).
    pub fn set_clock_offset(&self, offset: TimeDelta) {
        self.shared.lock().clock_offset = offset;
    }

    /// Sets the device clock so that it shows `t` now (and runs on from there).
    pub fn set_device_time(&self, t: NaiveDateTime) {
        self.shared.lock().clock_offset = t - Utc::now().naive_utc();
    }

    /// The time the device's clock shows now.
    pub fn device_time(&self) -> NaiveDateTime {
        Utc::now().naive_utc() + self.shared.lock().clock_offset
    }

    /// Changes `~SerialNumber` (as if another device took this address).
    pub fn set_serial_number(&self, serial: &str) {
        self.set_option("~SerialNumber", serial);
    }

    /// Sets an option returned by CMD_OPTIONS_RRQ (`key` as the client sends it, e.g. `~Platform`).
    pub fn set_option(&self, key: &str, value: &str) {
        self.shared
            .lock()
            .options
            .insert(key.to_owned(), value.to_owned());
    }

    /// An option's value.
    pub fn option(&self, key: &str) -> Option<String> {
        self.shared.lock().options.get(key).cloned()
    }

    /// Changes the comm key for sessions opened from now on (0 = none).
    pub fn set_comm_key(&self, key: u32) {
        self.shared.lock().comm_key = key;
    }

    /// Drops the connection in the middle of the `chunk`-th data chunk of attendance log reads:
    /// of the next one only, or of every one while `sticky`. Replaces any previous fault.
    pub fn drop_mid_chunk(&self, chunk: u32, sticky: bool) {
        self.shared.lock().fault = Some(ChunkDrop {
            chunk,
            sticky,
            stall: false,
        });
    }

    /// Like [`SimHandle::drop_mid_chunk`], but the connection stays open and silent after half a
    /// packet (to exercise a client's per-chunk timeout). Counted in `injected_drops` too.
    pub fn stall_mid_chunk(&self, chunk: u32, sticky: bool) {
        self.shared.lock().fault = Some(ChunkDrop {
            chunk,
            sticky,
            stall: true,
        });
    }

    /// Removes the chunk fault (drop or stall).
    pub fn clear_faults(&self) {
        self.shared.lock().fault = None;
    }

    /// Delays every reply to a request by `delay` (0 = none); events are not delayed.
    pub fn set_reply_delay(&self, delay: Duration) {
        self.shared.lock().reply_delay = delay;
    }

    /// Sets the most bytes served per chunk request (see [`SimConfig::max_chunk`]).
    pub fn set_max_chunk(&self, bytes: usize) {
        self.shared.lock().max_chunk = bytes.max(1);
    }

    /// Whether the device is enabled (not locked by CMD_DISABLEDEVICE).
    pub fn is_enabled(&self) -> bool {
        self.shared.lock().enabled
    }

    /// The counters now.
    pub fn counters(&self) -> SimCounters {
        self.shared.counters.borrow().clone()
    }

    /// Waits until `pred` holds for the counters; `Ok` with them, or `Err` with the last ones seen
    /// after `timeout`.
    pub async fn wait_counters(
        &self,
        timeout: Duration,
        pred: impl FnMut(&SimCounters) -> bool,
    ) -> Result<SimCounters, SimCounters> {
        let mut rx = self.shared.counters.subscribe();
        let seen = match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
            Ok(Ok(c)) => Some(c.clone()),
            _ => None,
        };
        seen.ok_or_else(|| self.counters())
    }
}
