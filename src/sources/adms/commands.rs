//! The operator's commands for a pushing terminal (`clockbridge adms backfill` / `verify`), kept in
//! the queue database until the terminal has answered them.
//!
//! The server cannot dial a terminal: a command waits until the terminal's next `getrequest` poll
//! (every `delay` seconds), goes out as `C:<id>:<command>`, and its result comes back on
//! `devicecmd`. Each command is one value of the device's state store (`adms.cmd.<id>`, generic
//! `source_state` table, no migration), so the command-line tool adding one and the daemon updating
//! another never overwrite each other, and a restart of either loses none.
//!
//! Guarantees:
//! - A command is saved (committed) before the tool says it is queued, and its `sent`/`answered`
//!   marks are saved before the daemon answers the terminal.
//! - A command sent but not answered within [`RESEND_AFTER_SECS`] (the terminal rebooted, the reply
//!   was lost) is sent again; a backfill sent twice only re-sends records that are then duplicates.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::queue::store::{DeviceStore, StoreError};

/// The prefix of the commands' names in the device's state store.
pub const PREFIX: &str = "adms.cmd.";

/// A command sent and not answered for this long is sent again.
pub const RESEND_AFTER_SECS: i64 = 300;

/// Commands handed to a terminal in one poll reply.
pub const PER_POLL: usize = 8;

crate::choice_enum! {
    /// What a command asks.
    pub enum CommandKind {
        /// `DATA QUERY ATTLOG`: the terminal pushes its records of the range again.
        Backfill = "backfill",
        /// `VERIFY SUM ATTLOG`: the terminal counts its records of the range.
        Verify = "verify",
    }
}

/// One operator command and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `C:<id>:`: letters and digits, at most 16.
    pub id: String,
    pub kind: CommandKind,
    /// The range, in the terminal's local time, both ends included.
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub sent_at: Option<i64>,
    #[serde(default)]
    pub sends: u32,
    #[serde(default)]
    pub answered_at: Option<i64>,
    /// The terminal's `Return=` (0 done; -1 not supported or no records in the range).
    #[serde(default)]
    pub ret: Option<i64>,
    /// `verify`: the terminal's count (`AttlogSum=`) and the queue's when the answer came.
    #[serde(default)]
    pub device_sum: Option<u64>,
    #[serde(default)]
    pub queue_count: Option<u64>,
}

impl Command {
    /// A new command (not yet saved): its id from the clock.
    pub fn new(kind: CommandKind, from: NaiveDateTime, to: NaiveDateTime) -> Command {
        let now = chrono::Utc::now();
        let n = now.timestamp_millis() as u64 * 1000 + u64::from(std::process::id() % 1000);
        Command {
            id: format!("CB{}", base36(n)),
            kind,
            from,
            to,
            created_at: now.timestamp(),
            sent_at: None,
            sends: 0,
            answered_at: None,
            ret: None,
            device_sum: None,
            queue_count: None,
        }
    }

    /// The command as the terminal reads it.
    pub fn text(&self) -> String {
        match self.kind {
            CommandKind::Backfill => super::protocol::data_query_attlog(self.from, self.to),
            CommandKind::Verify => super::protocol::verify_sum_attlog(self.from, self.to),
        }
    }

    /// Waiting to be sent, now: never sent, or sent long ago and not answered.
    pub fn due(&self, now: i64) -> bool {
        self.answered_at.is_none()
            && self
                .sent_at
                .is_none_or(|t| now.saturating_sub(t) >= RESEND_AFTER_SECS)
    }

    /// `waiting`, `sent`, `done` or `failed`.
    pub fn state(&self) -> &'static str {
        match (self.answered_at, self.ret, self.sent_at) {
            (Some(_), Some(0), _) => "done",
            (Some(_), _, _) => "failed",
            (None, _, Some(_)) => "sent",
            (None, _, None) => "waiting",
        }
    }

    /// One line for people: what it asked, and the answer.
    pub fn describe(&self) -> String {
        let range = format!(
            "{} .. {}",
            self.from.format("%Y-%m-%d %H:%M:%S"),
            self.to.format("%Y-%m-%d %H:%M:%S")
        );
        let answer =
            match (self.kind, self.state()) {
                (CommandKind::Verify, "done") => match (self.device_sum, self.queue_count) {
                    (Some(d), Some(q)) => format!(
                        "terminal {d}, queue {q}{}",
                        if d == q { " (match)" } else { " (differ)" }
                    ),
                    (Some(d), None) => format!("terminal {d}"),
                    _ => "answered without AttlogSum".into(),
                },
                (_, "failed") => format!(
                "the terminal answered Return={} (-1: not supported, or no records in the range)",
                self.ret.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
            ),
                (_, state) => state.to_string(),
            };
        format!("{} {} {range}: {answer}", self.id, self.kind.as_str())
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Saves `cmd` (committed before this returns).
pub async fn save(store: &DeviceStore, cmd: &Command) -> Result<(), StoreError> {
    store.save(&format!("{PREFIX}{}", cmd.id), cmd).await
}

/// Every command of the device, oldest first.
pub async fn list(store: &DeviceStore) -> Result<Vec<Command>, StoreError> {
    let mut all: Vec<Command> = store
        .load_prefixed::<Command>(PREFIX)
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(all)
}

/// The command `id`, if the device has it.
pub async fn find(store: &DeviceStore, id: &str) -> Result<Option<Command>, StoreError> {
    if id.is_empty() || id.len() > 16 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    store.load(&format!("{PREFIX}{id}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[tokio::test]
    async fn commands_are_kept_one_per_name_and_listed_oldest_first() {
        let store = DeviceStore::in_memory("lobby");
        let a = Command::new(
            CommandKind::Backfill,
            t("2026-11-01 00:00:00"),
            t("2026-11-30 23:59:59"),
        );
        assert!(a.id.len() <= 16 && a.id.chars().all(|c| c.is_ascii_alphanumeric()));
        save(&store, &a).await.unwrap();
        let mut b = Command::new(
            CommandKind::Verify,
            t("2026-11-01 00:00:00"),
            t("2026-11-01 23:59:59"),
        );
        b.id = format!("{}x", a.id);
        b.created_at = a.created_at + 1;
        save(&store, &b).await.unwrap();
        let all = list(&store).await.unwrap();
        assert_eq!(all, vec![a.clone(), b.clone()]);
        assert_eq!(
            a.text(),
            "DATA QUERY ATTLOG StartTime=2026-11-01 00:00:00\tEndTime=2026-11-30 23:59:59"
        );
        assert!(b
            .text()
            .starts_with("VERIFY SUM ATTLOG StartTime=2026-11-01 00:00:00\t"));
        assert!(a.due(0) && a.state() == "waiting");
        let mut sent = a.clone();
        sent.sent_at = Some(1000);
        assert!(!sent.due(1000 + RESEND_AFTER_SECS - 1));
        assert!(sent.due(1000 + RESEND_AFTER_SECS));
        assert_eq!(find(&store, &b.id).await.unwrap(), Some(b));
        assert_eq!(find(&store, "../x").await.unwrap(), None);
    }
}
