//! The range of a reconcile in each device's own zone: `--from` and `--to` are calendar dates
//! (both included) on the device's wall clock, so "1 to 31 March" means the same days the clock
//! showed. A device that is not in the configuration has no zone: its days are UTC days, and the
//! report says so.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;

/// Half-open Unix-second bounds of one device's days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

/// The dates and each device's zone.
#[derive(Debug, Clone)]
pub struct Range {
    pub from: NaiveDate,
    /// Included.
    pub to: NaiveDate,
    zones: HashMap<String, Tz>,
}

/// The Unix second at which `date` begins in `tz` (the earliest, if the day begins in a gap).
pub fn day_start(tz: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) => t.timestamp(),
        chrono::LocalResult::Ambiguous(a, _) => a.timestamp(),
        // a day that begins in a gap (a DST jump at midnight): the first instant after it
        chrono::LocalResult::None => (1..=180)
            .find_map(|m| {
                tz.from_local_datetime(&(midnight + chrono::Duration::minutes(m)))
                    .earliest()
            })
            .map(|t| t.timestamp())
            .unwrap_or_else(|| midnight.and_utc().timestamp()),
    }
}

impl Range {
    pub fn new(from: NaiveDate, to: NaiveDate, zones: HashMap<String, Tz>) -> Range {
        Range { from, to, zones }
    }

    /// The zone of `device` (UTC when it is not configured).
    pub fn zone(&self, device: &str) -> Tz {
        self.zones.get(device).copied().unwrap_or(Tz::UTC)
    }

    /// Whether `device` is configured (has a zone of its own).
    pub fn knows(&self, device: &str) -> bool {
        self.zones.contains_key(device)
    }

    /// The days of `device`, as Unix-second bounds.
    pub fn window(&self, device: &str) -> Window {
        let tz = self.zone(device);
        Window {
            from: day_start(tz, self.from),
            to: day_start(tz, self.to.succ_opt().unwrap_or(self.to)),
        }
    }

    /// Bounds that hold every zone's days (the configured zones and UTC): what to read from the
    /// queue and ask the platform for.
    pub fn union(&self) -> Window {
        let mut w = self.window("");
        for d in self.zones.keys() {
            let x = self.window(d);
            w.from = w.from.min(x.from);
            w.to = w.to.max(x.to);
        }
        w
    }

    /// The date of `unix_secs` on `device`'s wall clock.
    pub fn date_of(&self, device: &str, unix_secs: i64) -> NaiveDate {
        date_in(self.zone(device), unix_secs)
    }

    /// Number of days in the range.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }
}

/// The date of `unix_secs` in `tz`.
pub fn date_in(tz: Tz, unix_secs: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map(|t| t.with_timezone(&tz).date_naive())
        .unwrap_or_default()
}

/// `YYYY-MM-DD`, or an error that says what to write.
pub fn parse_date(flag: &str, text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| {
        format!("reconcile: {flag} {text:?} is not a date: write it as YYYY-MM-DD (2026-03-01)")
    })?;
    if d.year() < 2022 {
        return Err(format!(
            "reconcile: {flag} {t}: the platform holds no imported punch before 2022"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_s_days_are_its_own_wall_clock_days() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let zones = HashMap::from([("sh".to_string(), chrono_tz::Asia::Shanghai)]);
        let r = Range::new(d("2026-03-01"), d("2026-03-31"), zones);
        let w = r.window("sh");
        assert_eq!(w.from, 1_772_294_400); // 2026-03-01 00:00 +08:00
        assert_eq!(w.to - w.from, 31 * 86_400);
        let utc = r.window("unknown");
        assert_eq!(utc.from - w.from, 8 * 3600);
        assert_eq!(
            r.union(),
            Window {
                from: w.from,
                to: utc.to
            }
        );
        assert_eq!(r.date_of("sh", w.from), d("2026-03-01"));
        assert_eq!(r.date_of("sh", w.from - 1), d("2026-02-28"));
        assert_eq!(r.days(), 31);
        assert!(parse_date("--from", "2026-13-01").is_err());
        assert!(parse_date("--from", "2021-01-01").is_err());
    }
}
