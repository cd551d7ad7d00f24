//! `clockbridge unmapped`: the device users whose punches wait for a mapping, so that an admin can
//! fill the mapping table without `sqlite3`. One line per device user, most punches first: the
//! device, the user id the device sends, how many punches wait, the first and the last of them (in
//! the device's time zone with the offset, [`crate::device_time`]) and the name the device knows
//! (a ZKTeco terminal's user table; `-` for a line clock, which knows none). It ends with what to do.
//!
//! Like `status`, it reads the queue file read-only ([`crate::queue::open_read_only`]): safe beside
//! a running daemon, no secret needed, and a path where no queue is is refused, never created.
//!
//! `--json` prints one object ([`Unmapped`]); its members are a contract for scripts (added, never
//! renamed): `path`, `mapping` (`mode`, `file`, `reload_interval_secs`), `users`, `punches` and
//! `unmapped_users` (each with `device_id`, `device_user_id`, `name`, `count`, `first_event_time`,
//! `last_event_time`; times in Unix seconds). A name is as the device has it (JSON escapes control
//! characters); the text shows control and invisible characters escaped ([`crate::logging::visible`]).

use serde::Serialize;

use crate::config::Config;
use crate::device_time::DeviceTimes;
use crate::logging::visible;
use crate::mapping::MappingMode;
use crate::queue::{open_read_only, read_waiting_users, QueueError, WaitingUser};

/// What `clockbridge unmapped --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Unmapped {
    /// The queue file read.
    pub path: String,
    /// Where the mapping comes from.
    pub mapping: MappingShown,
    /// Device users with punches waiting.
    pub users: u64,
    /// Punches waiting, all users together.
    pub punches: u64,
    /// Every such user, most punches first (then by device and user id).
    pub unmapped_users: Vec<WaitingUser>,
}

/// The mapping settings an admin needs to fix what waits.
#[derive(Debug, Clone, Serialize)]
pub struct MappingShown {
    /// `table` or `passthrough`.
    pub mode: &'static str,
    /// The table's path (`mapping.file`), when set.
    pub file: Option<String>,
    pub reload_interval_secs: u64,
}

/// Reads the waiting users of the queue at `cfg.queue.path` (read-only).
pub fn read(cfg: &Config) -> Result<Unmapped, QueueError> {
    let conn = open_read_only(&cfg.queue.path)?;
    let w = read_waiting_users(&conn, usize::MAX)?;
    Ok(Unmapped {
        path: cfg.queue.path.display().to_string(),
        mapping: MappingShown {
            mode: cfg.mapping.mode.as_str(),
            file: cfg.mapping.file.as_ref().map(|f| f.display().to_string()),
            reload_interval_secs: cfg.mapping.reload_interval_secs,
        },
        users: w.total_users,
        punches: w.total_rows,
        unmapped_users: w.users,
    })
}

/// Human-readable rendering, with the times in each device's zone (`times`) and what to do;
/// `employee_type` names the kind of Feishu id the table's `user_id` is.
pub fn render_text(u: &Unmapped, times: &DeviceTimes, employee_type: &str) -> String {
    if u.unmapped_users.is_empty() {
        return format!(
            "no punches wait for a mapping (queue {})\n",
            visible(&u.path)
        );
    }
    let mut o = format!(
        "{} device user{} {} {} punch{} waiting for a mapping (queue {}), most punches first:\n",
        u.users,
        plural(u.users),
        if u.users == 1 { "has" } else { "have" },
        u.punches,
        if u.punches == 1 { "" } else { "es" },
        visible(&u.path)
    );
    let header = [
        "device",
        "user",
        "punches",
        "first punch",
        "last punch",
        "name on the device",
    ];
    let rows: Vec<[String; 6]> = u
        .unmapped_users
        .iter()
        .map(|w| {
            [
                visible(&w.device_id),
                visible(&w.device_user_id),
                w.count.to_string(),
                times.show(&w.device_id, w.first_event_time),
                times.show(&w.device_id, w.last_event_time),
                w.name.as_deref().map_or_else(|| "-".into(), visible),
            ]
        })
        .collect();
    o.push_str(&table(&header, &rows));
    if let Some(note) = times.note(u.unmapped_users.iter().map(|w| w.device_id.as_str())) {
        o.push_str(&format!("  ({note})\n"));
    }
    o.push('\n');
    o.push_str(&what_to_do(u, employee_type));
    o
}

/// Columns as wide as their longest cell (the name, last, is not padded: names may be wide
/// characters); the count right-aligned.
fn table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let w = width[i];
            match i {
                2 => l.push_str(&format!(" {c:>w$}")),
                5 => l.push_str(&format!(" {c}")),
                _ => l.push_str(&format!(" {c:<w$}")),
            }
        }
        l.push('\n');
        l
    };
    let mut o = line(*header);
    for r in rows {
        o.push_str(&line(
            [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(|s| s.as_str()),
        ));
    }
    o
}

/// The closing paragraph: where the mapping goes and when the daemon sends what waits.
fn what_to_do(u: &Unmapped, employee_type: &str) -> String {
    let first = &u.unmapped_users[0];
    let example = format!(
        "{},<{employee_type}>,{}",
        visible(&first.device_user_id),
        visible(&first.device_id)
    );
    match (u.mapping.mode, &u.mapping.file) {
        (mode, Some(file)) if mode == MappingMode::Table.as_str() => format!(
            "To send them, add one row per user to the mapping table {file}, as device_user_id,user_id[,device_id]\n\
             (user_id: the user's Feishu {employee_type}; with a device_id the row applies to that device only), e.g.:\n\
             \x20 {example}\n\
             The daemon re-reads the table every {secs} s (mapping.reload_interval_secs) and at once on SIGHUP\n\
             (systemctl reload clockbridge), then maps and sends the punches kept for these users.\n",
            file = visible(file),
            secs = u.mapping.reload_interval_secs,
        ),
        _ => "mapping.mode is \"passthrough\": every device user id is sent as the Feishu id, and these punches\n\
              were kept while a mapping table was in use. The daemon sends them at its next start (systemctl\n\
              restart clockbridge); to map them instead, set mapping.mode = \"table\" and mapping.file (see the\n\
              README, \"The mapping table\").\n"
            .to_string(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(device: &str, user: &str, name: Option<&str>, count: u64) -> WaitingUser {
        WaitingUser {
            device_id: device.into(),
            device_user_id: user.into(),
            name: name.map(Into::into),
            count,
            // 2026-12-01 00:44:56 UTC, and a day later
            first_event_time: 1_796_085_896,
            last_event_time: 1_796_085_896 + 86_400,
        }
    }

    fn unmapped(users: Vec<WaitingUser>, mode: MappingMode) -> Unmapped {
        Unmapped {
            path: "/var/lib/clockbridge/queue.db".into(),
            mapping: MappingShown {
                mode: mode.as_str(),
                file: (mode == MappingMode::Table).then(|| "/etc/clockbridge/users.csv".into()),
                reload_interval_secs: 60,
            },
            users: users.len() as u64,
            punches: users.iter().map(|u| u.count).sum(),
            unmapped_users: users,
        }
    }

    #[test]
    fn each_user_is_one_aligned_line_in_its_devices_zone_then_what_to_do() {
        let times = DeviceTimes::from_zones([
            ("lobby-zk".to_string(), chrono_tz::Asia::Shanghai),
            ("door-1".to_string(), chrono_tz::Europe::London),
        ]);
        let u = unmapped(
            vec![
                waiting("lobby-zk", "1019", Some("Zhang\u{1b}[2J Wei\u{202e}"), 120),
                waiting("door-1", "77", None, 3),
                waiting("old-door", "5", Some("王伟"), 1),
            ],
            MappingMode::Table,
        );
        let text = render_text(&u, &times, "employee_id");
        assert_eq!(
            text,
            "3 device users have 124 punches waiting for a mapping (queue /var/lib/clockbridge/queue.db), most punches first:\n\
             \x20 device   user punches first punch                last punch                 name on the device\n\
             \x20 lobby-zk 1019     120 2026-12-01 08:44:56 +08:00 2026-12-02 08:44:56 +08:00 Zhang\\u{1b}[2J Wei\\u{202e}\n\
             \x20 door-1   77         3 2026-12-01 00:44:56 +00:00 2026-12-02 00:44:56 +00:00 -\n\
             \x20 old-door 5          1 2026-12-01 00:44:56 +00:00 2026-12-02 00:44:56 +00:00 王伟\n\
             \x20 (old-door is not a device in the configuration: its times are shown in UTC (+00:00))\n\
             \n\
             To send them, add one row per user to the mapping table /etc/clockbridge/users.csv, as device_user_id,user_id[,device_id]\n\
             (user_id: the user's Feishu employee_id; with a device_id the row applies to that device only), e.g.:\n\
             \x20 1019,<employee_id>,lobby-zk\n\
             The daemon re-reads the table every 60 s (mapping.reload_interval_secs) and at once on SIGHUP\n\
             (systemctl reload clockbridge), then maps and sends the punches kept for these users.\n"
        );
    }

    #[test]
    fn nothing_waiting_says_so_and_passthrough_says_when_they_go() {
        let times = DeviceTimes::default();
        let none = unmapped(Vec::new(), MappingMode::Table);
        assert_eq!(
            render_text(&none, &times, "employee_id"),
            "no punches wait for a mapping (queue /var/lib/clockbridge/queue.db)\n"
        );
        let one = unmapped(
            vec![waiting("door-1", "77", None, 1)],
            MappingMode::Passthrough,
        );
        let text = render_text(&one, &times, "employee_no");
        assert!(
            text.starts_with("1 device user has 1 punch waiting for a mapping"),
            "{text}"
        );
        assert!(
            text.contains("mapping.mode is \"passthrough\"") && text.contains("next start"),
            "{text}"
        );
    }
}
