//! `clockbridge adms backfill | verify | commands`: the operator's side of the command queue
//! ([`super::commands`]), run as its own process beside the daemon.
//!
//! `backfill` and `verify` save a command for the terminal's next poll and return (`verify` first
//! waits, `--wait` seconds, for the terminal's answer and prints the comparison,
//! [`super::verify::compare`]); `commands` lists what each command became.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use super::commands::{self, Command, CommandKind};
use crate::queue::store::DeviceStore;
use crate::queue::Queue;

/// Why a command could not be queued or read.
#[derive(Debug, thiserror::Error)]
pub enum AdmsCliError {
    #[error("adms: --device {0:?} is not a configured device of kind = \"adms\": check the id in the configuration")]
    NotAdms(String),
    #[error("adms: --{which} {value:?}: {reason}")]
    BadTime {
        which: &'static str,
        value: String,
        reason: String,
    },
    #[error("adms: --from is after --to: give the range oldest first")]
    Backwards,
    #[error(transparent)]
    Store(#[from] crate::queue::store::StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// Reads `--from` / `--to`: `YYYY-MM-DD` (the day's start, or its last second for `--to`) or
/// `YYYY-MM-DD HH:MM:SS`, in the terminal's local time.
pub fn parse_bound(which: &'static str, s: &str) -> Result<NaiveDateTime, AdmsCliError> {
    let t = s.trim();
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        return Ok(dt);
    }
    match NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        Ok(d) if which == "to" => {
            Ok(d.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default()))
        }
        Ok(d) => Ok(d.and_time(NaiveTime::MIN)),
        Err(_) => Err(AdmsCliError::BadTime {
            which,
            value: s.to_string(),
            reason: "is not a date (2026-11-01) or a local time (\"2026-11-01 08:00:00\")".into(),
        }),
    }
}

/// Saves a command for device `id`'s terminal (committed before this returns); the caller has
/// checked that `id` is a configured `adms` device ([`AdmsCliError::NotAdms`] otherwise).
pub async fn queue_command(
    queue: &Queue,
    id: &str,
    kind: CommandKind,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Command, AdmsCliError> {
    if from > to {
        return Err(AdmsCliError::Backwards);
    }
    let store = DeviceStore::new(queue.clone(), id);
    let mut cmd = Command::new(kind, from, to);
    // two commands queued in the same millisecond get different ids
    while commands::find(&store, &cmd.id).await?.is_some() {
        cmd.id.push('x');
        cmd.id = cmd
            .id
            .chars()
            .rev()
            .take(16)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
    }
    commands::save(&store, &cmd).await?;
    Ok(cmd)
}

/// Waits up to `wait` for command `cmd_id` of device `id` to be answered (read every 500 ms).
pub async fn wait_answer(
    queue: &Queue,
    id: &str,
    cmd_id: &str,
    wait: Duration,
) -> Result<Option<Command>, AdmsCliError> {
    let store = DeviceStore::new(queue.clone(), id);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(c) = commands::find(&store, cmd_id).await? {
            if c.answered_at.is_some() {
                return Ok(Some(c));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every command of device `id`, oldest first.
pub async fn list(queue: &Queue, id: &str) -> Result<Vec<Command>, AdmsCliError> {
    Ok(commands::list(&DeviceStore::new(queue.clone(), id)).await?)
}

/// What `queue_command` prints: the command and when it goes out (the terminal polls every
/// `delay` seconds).
pub fn queued_text(id: &str, delay: u64, cmd: &Command) -> String {
    format!(
        "adms: command {} queued for device {id}: {} ({} .. {}); the terminal gets it at its next poll (within {delay} s while it is online); `clockbridge adms commands --device {id}` shows what became of it\n",
        cmd.id,
        cmd.kind.as_str(),
        cmd.from.format("%Y-%m-%d %H:%M:%S"),
        cmd.to.format("%Y-%m-%d %H:%M:%S"),
    )
}
