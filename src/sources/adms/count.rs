//! The pushing terminal's side of `clockbridge reconcile` ([`ClockCount`]): its own count of the
//! records of the reconcile's days (`VERIFY SUM ATTLOG`, the same command as `clockbridge adms
//! verify`), for the reconcile to hold against the queue's punches of that device in the range.
//!
//! The server cannot dial a terminal: the command is saved in the device's state store and goes out
//! at the terminal's next poll, which the running daemon answers. So the count comes only while the
//! daemon runs and the terminal is online; the reconcile waits three polls (at least 30 s) and
//! otherwise says the terminal did not answer (the command stays queued and is answered later, as
//! `clockbridge adms commands` shows). Nothing on the terminal is changed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};

use super::cli;
use super::commands::CommandKind;
use super::AdmsSpec;
use crate::queue::store::DeviceStore;
use crate::sources::kind::{ClockCount, ClockCounted};

impl AdmsSpec {
    /// How long a reconcile waits for the terminal's count: three polls, at least 30 s.
    fn count_wait(&self) -> Duration {
        Duration::from_secs((self.delay_secs * 3).max(30))
    }
}

impl ClockCount for AdmsSpec {
    fn count<'a>(
        &'a self,
        device: &'a str,
        _range: (i64, i64),
        days: (NaiveDate, NaiveDate),
        store: &'a DeviceStore,
    ) -> Pin<Box<dyn Future<Output = Result<ClockCounted, String>> + Send + 'a>> {
        Box::pin(async move {
            let from = days.0.and_time(NaiveTime::MIN);
            // the last second of the last day (every day has one)
            let to = days.1.and_time(NaiveTime::MIN) + chrono::Duration::seconds(86_399);
            let queue = store
                .queue()
                .ok_or_else(|| "the device's state is not kept in a queue".to_string())?;
            let cmd = cli::queue_command(queue, device, CommandKind::Verify, from, to)
                .await
                .map_err(|e| e.to_string())?;
            let wait = self.count_wait();
            let answer = cli::wait_answer(queue, device, &cmd.id, wait)
                .await
                .map_err(|e| e.to_string())?;
            match answer {
                None => Err(format!(
                    "the terminal did not answer VERIFY SUM ATTLOG within {} s (it answers at its next poll, only while the daemon runs and the terminal is online); command {} stays queued: `clockbridge adms commands --device {device}`",
                    wait.as_secs(),
                    cmd.id
                )),
                Some(c) => match c.device_sum {
                    Some(n) => Ok(ClockCounted {
                        range_records: Some(n),
                        ..ClockCounted::default()
                    }),
                    None => Err(format!(
                        "the terminal answered VERIFY SUM ATTLOG with Return={} and no count: its firmware may not support the command",
                        c.ret.map_or_else(|| "?".to_string(), |r| r.to_string())
                    )),
                },
            }
        })
    }
}
