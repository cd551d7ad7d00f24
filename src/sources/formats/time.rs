//! How the time of a punch is read: the strict `YYYY-MM-DD HH:MM:SS` reader, a chrono `time_format`,
//! or Unix seconds.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::fmt::Write as _;

use super::*;

/// How the time field is written.
#[derive(Clone, Debug)]
pub(super) enum TimeSpec {
    /// `YYYY-MM-DD HH:MM:SS`, read by the hand-rolled [`parse_datetime`].
    Standard,
    /// A chrono format, parsed once.
    Custom {
        format: String,
        items: Vec<chrono::format::Item<'static>>,
    },
    /// Unix seconds.
    Unix,
}

pub(super) const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl TimeSpec {
    pub(super) fn new(format: Option<&str>) -> Result<TimeSpec, FormatError> {
        let Some(format) = format else {
            return Ok(TimeSpec::Standard);
        };
        if format == DEFAULT_TIME_FORMAT {
            return Ok(TimeSpec::Standard);
        }
        if format.trim().eq_ignore_ascii_case("unix") {
            return Ok(TimeSpec::Unix);
        }
        let bad = |reason: String| FormatError::new("time_format", reason);
        if format.trim().is_empty() {
            return Err(bad(
                "is empty: use a chrono format such as \"%d-%m-%Y %H:%M:%S\", or \"unix\"".into(),
            ));
        }
        let items = chrono::format::StrftimeItems::new(format)
            .parse_to_owned()
            .map_err(|e| {
                bad(format!(
                    "is not a valid chrono format ({e}): use specifiers such as %Y, %m, %d, %H, %M, %S"
                ))
            })?;
        // it must write a date and time and read the same one back (to the minute when it has no
        // seconds): a date alone, a 12-hour clock without %p... cannot tell punches apart
        let sample = NaiveDate::from_ymd_opt(2026, 11, 28)
            .and_then(|d| d.and_hms_opt(13, 4, 5))
            .unwrap_or_default();
        let mut written = String::new();
        if write!(written, "{}", sample.format_with_items(items.iter())).is_err() {
            return Err(bad("cannot write a date and time".into()));
        }
        let spec = TimeSpec::Custom {
            format: format.to_string(),
            items,
        };
        match spec.parse_custom(&written) {
            Ok(back) if back == sample || back == sample.with_second(0).unwrap_or(sample) => {
                Ok(spec)
            }
            Ok(back) => Err(bad(format!(
                "does not keep a date and time: {sample} is written {written:?} and read back as {back}"
            ))),
            Err(e) => Err(bad(format!(
                "cannot read back the date and time it writes ({written:?}: {e}): it needs the year, \
                 month, day, hour and minute"
            ))),
        }
    }

    pub(super) fn parse_custom(&self, s: &str) -> chrono::ParseResult<NaiveDateTime> {
        let TimeSpec::Custom { items, .. } = self else {
            return NaiveDateTime::parse_from_str(s, DEFAULT_TIME_FORMAT);
        };
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, s, items.iter())?;
        parsed.to_naive_datetime_with_offset(0)
    }
}

/// Largest Unix time accepted: 9999-12-31 23:59:59 UTC (a larger number is milliseconds or garbage).
pub(super) const UNIX_MAX: i64 = 253_402_300_799;

/// Parses exactly `YYYY-MM-DD HH:MM:SS`, checking that the date and time exist.
/// The error is the reason, for [`ParseError::BadTime`].
pub(super) fn parse_datetime(s: &str) -> Result<NaiveDateTime, String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return Err("wrong shape".into());
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} does not exist"));
    }
    // year < 10000, so the cast cannot wrap
    let Some(date) = NaiveDate::from_ymd_opt(year as i32, month, day) else {
        return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
    };
    if hour > 23 {
        return Err(format!("hour {hour} is out of range"));
    }
    if minute > 59 {
        return Err(format!("minute {minute} is out of range"));
    }
    let Some(time) = NaiveTime::from_hms_opt(hour, minute, second) else {
        return Err(format!("second {second} is out of range"));
    };
    Ok(NaiveDateTime::new(date, time))
}
