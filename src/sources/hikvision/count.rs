//! The Hikvision terminal's side of `clockbridge reconcile` ([`ClockCount`]): its own punches of the
//! reconcile's days, read from its event log, for the reconcile to hold against the queue's punches
//! of that device in the range.
//!
//! The terminal's `totalMatches` is not the answer: it counts every event of the search, and a
//! search names one minor at a time, so strangers' and failed verifications would be counted or
//! missed. Instead the range is read page by page (major 5, `startTime` and `endTime` on the
//! terminal's wall clock) and counted as the source reads it: the configured `event_minors`, an
//! employee number, a readable time, and one count per user and second (a punch stored twice on
//! the terminal is one queue row). The gateway asks the terminal directly (digest, the device's
//! `username` and password), so this works whether or not the daemon runs; it costs one page per 30
//! events (a month of a busy door, 60,000 events, is about 2,000 pages: tens of seconds). Nothing on
//! the terminal is changed. A refused login counts as one failed login on the terminal, as a pull's.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use super::client::HikClient;
use super::isapi::{self, EventTime, SearchStatus};
use super::{pull, HikSpec};
use crate::queue::store::DeviceStore;
use crate::sources::kind::{ClockCount, ClockCounted};

/// The most pages one count reads (3,000,000 events at the usual 30 a page): a terminal that keeps
/// answering `MORE` past that is not trusted to ever stop.
const MAX_PAGES: u64 = 100_000;

/// The wall-clock bounds of `days` (the first second of the first day, the last of the last).
fn bounds(days: (NaiveDate, NaiveDate)) -> (NaiveDateTime, NaiveDateTime) {
    let from = days.0.and_time(NaiveTime::MIN);
    let to = days.1.and_time(NaiveTime::MIN) + chrono::Duration::seconds(86_399);
    (from, to)
}

/// A time as the terminal's search takes it: with the terminal's own offset when its clock gives
/// one (as its events carry), or as a bare wall-clock time.
fn search_time(t: NaiveDateTime, offset: Option<chrono::FixedOffset>) -> String {
    match offset {
        Some(o) => format!("{}{}", t.format("%Y-%m-%dT%H:%M:%S"), o),
        None => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
    }
}

/// The wall-clock time of an event on the terminal.
fn wall(t: &EventTime) -> NaiveDateTime {
    match t {
        EventTime::Offset(t) => t.naive_local(),
        EventTime::Local(t) => *t,
    }
}

/// The punches among `events` ([`pull::punch_user`], with a readable time) within `[from, to]` on
/// the terminal's clock, as `(user, second)`.
pub fn punches_in(
    events: &[isapi::AcsEvent],
    minors: &[u32],
    (from, to): (NaiveDateTime, NaiveDateTime),
    out: &mut HashSet<(String, NaiveDateTime)>,
) {
    for e in events {
        let (Some(user), Some(t)) = (pull::punch_user(e, minors), &e.time) else {
            continue;
        };
        let t = wall(t);
        if t >= from && t <= to {
            out.insert((user.to_string(), t));
        }
    }
}

impl ClockCount for HikSpec {
    fn count<'a>(
        &'a self,
        device: &'a str,
        _range: (i64, i64),
        days: (NaiveDate, NaiveDate),
        _store: &'a DeviceStore,
    ) -> Pin<Box<dyn Future<Output = Result<ClockCounted, String>> + Send + 'a>> {
        Box::pin(async move {
            let label = format!("device {device} ({})", self.base_url().unwrap_or_default());
            let mut client = HikClient::new(self, &label).map_err(|e| e.to_string())?;
            let offset = match client.time().await.map_err(|e| e.to_string())?.local_time {
                EventTime::Offset(t) => Some(*t.offset()),
                EventTime::Local(_) => None,
            };
            let (from, to) = bounds(days);
            let search_id = pull::search_id(device);
            let (start, end) = (search_time(from, offset), search_time(to, offset));
            let mut seen = HashSet::new();
            let mut position = 0u64;
            for _ in 0..MAX_PAGES {
                let body = isapi::acs_event_range_request(
                    &search_id,
                    position,
                    pull::MAX_RESULTS,
                    &start,
                    &end,
                );
                let page = client.acs_events(body).await.map_err(|e| e.to_string())?;
                punches_in(&page.events, &self.event_minors, (from, to), &mut seen);
                position += page.num_of_matches;
                if page.status != SearchStatus::More {
                    return Ok(ClockCounted {
                        range_records: Some(seen.len() as u64),
                        ..ClockCounted::default()
                    });
                }
                if page.num_of_matches == 0 {
                    return Err(format!(
                        "{label}: the terminal's event search answered MORE with an empty page at position {position}: it cannot be counted"
                    ));
                }
            }
            Err(format!(
                "{label}: the terminal's event search did not end within {MAX_PAGES} pages"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(major: u32, minor: u32, user: Option<&str>, t: &str) -> isapi::AcsEvent {
        isapi::AcsEvent {
            major,
            minor,
            time: EventTime::parse(t),
            time_text: Some(t.into()),
            employee: user.map(str::to_string),
            name: None,
            serial: Some(1),
            attendance_status: None,
        }
    }

    #[test]
    fn the_count_is_of_punches_of_the_days_one_per_user_and_second() {
        let days = (
            NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(),
        );
        let minors = [75, 38];
        let events = [
            event(5, 75, Some("1001"), "2026-11-02T00:00:00+08:00"),
            // the same punch stored twice on the terminal: one queue row
            event(5, 75, Some("1001"), "2026-11-02T00:00:00+08:00"),
            event(5, 38, Some("1002"), "2026-11-03T23:59:59"),
            // a stranger, a failed face, another major, a minor not configured
            event(5, 75, None, "2026-11-02T09:00:00+08:00"),
            event(5, 76, Some("1001"), "2026-11-02T09:00:00+08:00"),
            event(3, 75, Some("1001"), "2026-11-02T09:00:00+08:00"),
            event(5, 1, Some("1001"), "2026-11-02T09:00:00+08:00"),
            // outside the days on the terminal's own clock
            event(5, 75, Some("1001"), "2026-11-01T23:59:59+08:00"),
            event(5, 75, Some("1001"), "2026-11-04T00:00:00+08:00"),
        ];
        let mut seen = HashSet::new();
        punches_in(&events, &minors, bounds(days), &mut seen);
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn the_search_times_carry_the_terminals_offset_when_its_clock_gives_one() {
        let (from, to) = bounds((
            NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        ));
        let o = chrono::FixedOffset::east_opt(8 * 3600);
        assert_eq!(search_time(from, o), "2026-11-02T00:00:00+08:00");
        assert_eq!(search_time(to, None), "2026-11-02T23:59:59");
    }
}
