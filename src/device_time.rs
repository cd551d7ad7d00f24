//! Times as the admin reads them: a punch's time (Unix seconds in the queue) shown in the time zone
//! of the device it came from, with the offset, `2026-12-01 08:44:56 +08:00`, so that it reads as
//! the clock on the wall showed it and cannot be mistaken for another zone's. Used by the text of
//! `dlq list`, `status` (dead letters) and `unmapped`; their `--json` keeps Unix seconds.
//!
//! A device id that is not in the configuration (a device removed since, or an HR record's
//! `hr-approvals`) has no zone: its times are shown in UTC (`+00:00`), and [`DeviceTimes::note`]
//! says so in one line.

use std::collections::{BTreeSet, HashMap};

use chrono_tz::Tz;

use crate::config::Config;

/// The time zone of every configured device.
#[derive(Debug, Clone, Default)]
pub struct DeviceTimes {
    zones: HashMap<String, Tz>,
}

impl DeviceTimes {
    /// The zones of the devices of `cfg` (disabled ones too: their punches stay in the queue).
    pub fn of(cfg: &Config) -> DeviceTimes {
        DeviceTimes {
            zones: cfg.devices.iter().map(|d| (d.id.clone(), d.tz())).collect(),
        }
    }

    /// From `(device id, zone)` pairs.
    pub fn from_zones(zones: impl IntoIterator<Item = (String, Tz)>) -> DeviceTimes {
        DeviceTimes {
            zones: zones.into_iter().collect(),
        }
    }

    /// Whether `device_id` is a configured device (its times are shown in its zone).
    pub fn knows(&self, device_id: &str) -> bool {
        self.zones.contains_key(device_id)
    }

    /// `unix_secs` in the zone of `device_id` (UTC when it is not configured), as
    /// `YYYY-MM-DD HH:MM:SS +HH:MM`.
    pub fn show(&self, device_id: &str, unix_secs: i64) -> String {
        show_in(
            self.zones.get(device_id).copied().unwrap_or(Tz::UTC),
            unix_secs,
        )
    }

    /// [`DeviceTimes::show`] of an optional time (`-` for none).
    pub fn show_opt(&self, device_id: &str, unix_secs: Option<i64>) -> String {
        unix_secs.map_or_else(|| "-".into(), |t| self.show(device_id, t))
    }

    /// The line that says which of `device_ids` had their times shown in UTC because they are not
    /// configured devices (`None`: every one is configured).
    pub fn note<'a>(&self, device_ids: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let unknown: BTreeSet<&str> = device_ids.into_iter().filter(|d| !self.knows(d)).collect();
        let list: Vec<String> = unknown.iter().map(|d| crate::logging::visible(d)).collect();
        match list.len() {
            0 => None,
            1 => Some(format!(
                "{} is not a device in the configuration: its times are shown in UTC (+00:00)",
                list[0]
            )),
            _ => Some(format!(
                "{} are not devices in the configuration: their times are shown in UTC (+00:00)",
                list.join(", ")
            )),
        }
    }
}

/// `unix_secs` in `tz`, as `YYYY-MM-DD HH:MM:SS +HH:MM` (`@SECS` for a time chrono cannot hold).
pub fn show_in(tz: Tz, unix_secs: i64) -> String {
    match chrono::DateTime::from_timestamp(unix_secs, 0) {
        Some(t) => t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => format!("@{unix_secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times() -> DeviceTimes {
        DeviceTimes::from_zones([
            ("lobby".to_string(), chrono_tz::Asia::Shanghai),
            ("nyc".to_string(), chrono_tz::America::New_York),
            ("kolkata".to_string(), chrono_tz::Asia::Kolkata),
        ])
    }

    #[test]
    fn a_time_is_shown_in_its_devices_zone_with_the_offset() {
        // 2026-12-01 00:44:56 UTC
        let t = 1_796_085_896;
        let z = times();
        assert_eq!(z.show("lobby", t), "2026-12-01 08:44:56 +08:00");
        assert_eq!(z.show("nyc", t), "2026-11-30 19:44:56 -05:00");
        assert_eq!(z.show("kolkata", t), "2026-12-01 06:14:56 +05:30");
        // summer time in New York: the offset of that instant
        assert_eq!(z.show("nyc", 1_784_000_000), "2026-07-13 23:33:20 -04:00");
        assert_eq!(z.show_opt("lobby", None), "-");
    }

    #[test]
    fn a_device_not_in_the_configuration_is_shown_in_utc_and_said_so() {
        let z = times();
        let t = 1_796_085_896;
        assert_eq!(z.show("gone", t), "2026-12-01 00:44:56 +00:00");
        assert_eq!(z.note(["lobby", "nyc"]), None);
        assert_eq!(
            z.note(["lobby", "gone", "gone"]).unwrap(),
            "gone is not a device in the configuration: its times are shown in UTC (+00:00)"
        );
        assert_eq!(
            z.note(["hr-approvals", "lobby", "gone\n"]).unwrap(),
            "gone\\n, hr-approvals are not devices in the configuration: their times are shown in UTC (+00:00)"
        );
        assert_eq!(show_in(Tz::UTC, i64::MAX), format!("@{}", i64::MAX));
    }
}
