//! Reading a terminal's event log (`AcsEvent` search, page by page) from the watermark on, and what
//! becomes a punch.
//!
//! The watermark ([`HikWatermark`], kept through the queue's per-device state store under [`NAME`])
//! is the `serialNo` of the newest event whose punch (if it was one) is committed, with that event's
//! time and the terminal's serial number. A pull asks for every major-5 event from a little before
//! the watermark's time ([`LOOKBACK_SECS`], more when the terminal's clock was set back since the
//! last pull), skips the events at or below the watermark's `serialNo`, and hands the punches of each
//! page to the ingest stage as the page arrives, without waiting: the next page is asked for while the
//! writer commits. The watermark advances (one store commit every [`SAVE_EVERY`] events and at the
//! end) only to an event all of whose predecessors in the pull are committed.
//!
//! A serial reset (a factory reset, a replaced terminal: an event at or below the watermark's
//! `serialNo` that is newer than the watermark's time) is reported (WARN, `serial_resets` and
//! `last_warning` in `status`); from there on every punch of the pull is handed over whatever its
//! serial number, and the watermark restarts at the new numbers. Nothing is lost (the window starts
//! before the watermark's time) and nothing is doubled: a punch's idempotent key is its device, user
//! and time, never its `serialNo`, so a punch read again is recognised as a duplicate by the queue.

use std::collections::VecDeque;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::isapi::{AcsEvent, EventTime};
use crate::ingest::{IngestOutcome, PunchSink};
use crate::punch::{resolve_local, Punch};

/// The name of the watermark in the device's state store.
pub const NAME: &str = "hik_watermark";
/// How far before the watermark's time a pull starts (events written in the same minutes, a clock
/// a little off).
pub const LOOKBACK_SECS: i64 = 600;
/// How far back the first pull after a start looks before the watermark's time (the clock may have
/// been set back while clockbridge was stopped).
pub const RESTART_LOOKBACK_SECS: i64 = 86_400;
/// Where the first read of a terminal starts: the platform imports nothing older.
pub const FIRST_READ_FROM: &str = "2022-01-01T00:00:00";
/// Events per watermark store commit during a long pull.
pub const SAVE_EVERY: u64 = 5_000;
/// What a pull asks for per page (the terminal caps it, often at 30).
pub const MAX_RESULTS: u32 = 100;

/// The watermark of one terminal's event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HikWatermark {
    /// The address it was read from.
    pub address: String,
    /// The terminal's serial number (`deviceInfo`), when known.
    pub device_serial: Option<String>,
    /// `serialNo` of the newest committed event (0: none yet).
    pub serial: u64,
    /// Its time (Unix seconds).
    pub last_at: Option<i64>,
}

/// The instant of an event's time (an offset time as written; a time without one in `tz`).
pub fn instant(t: &EventTime, tz: chrono_tz::Tz) -> DateTime<Utc> {
    match t {
        EventTime::Offset(t) => t.with_timezone(&Utc),
        EventTime::Local(t) => resolve_local(tz, *t),
    }
}

/// What an event is to clockbridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A punch.
    Punch(Punch),
    /// Not a punch (another major or minor, a stranger): counted, never sent.
    Skip,
    /// A punch-like event that cannot be read (its time): counted as malformed and logged.
    Unreadable(String),
}

/// ZKTeco-style verification code of a Hikvision minor, for the record's comment (1 fingerprint,
/// 2 card, 0 password, 15 face).
fn verify_of(minor: u32) -> Option<i64> {
    Some(match minor {
        1 | 2 => 2,
        38 | 40 | 43 | 46 | 54 | 69 | 72 => 1,
        75 | 77 => 15,
        101 | 181 => 0,
        _ => return None,
    })
}

/// The ZKTeco-style state of an `attendanceStatus` word (`None` and the word kept when unknown).
fn state_of(s: Option<&str>) -> (Option<i64>, Option<String>) {
    match s {
        Some("checkIn") => (Some(0), None),
        Some("checkOut") => (Some(1), None),
        Some("breakOut") => (Some(2), None),
        Some("breakIn") => (Some(3), None),
        Some("overtimeIn") => (Some(4), None),
        Some("overtimeOut") => (Some(5), None),
        None | Some("undefined") | Some("") => (None, None),
        Some(w) => (None, Some(w.to_string())),
    }
}

/// The user of `e` when it is a verification that makes a punch (major 5, a minor of `minors`, an
/// employee number), whatever its time; `None` for any other event. The one rule of the source
/// ([`verdict`]) and of reconcile's count (`super::count`).
pub fn punch_user<'a>(e: &'a AcsEvent, minors: &[u32]) -> Option<&'a str> {
    if e.major != 5 || !minors.contains(&e.minor) {
        return None;
    }
    e.employee.as_deref().filter(|u| !u.is_empty())
}

/// Decides what `e` is: a punch only when [`punch_user`] names its user and its time is readable.
pub fn verdict(e: &AcsEvent, minors: &[u32], device: &str, tz: chrono_tz::Tz) -> Verdict {
    let Some(user) = punch_user(e, minors) else {
        return Verdict::Skip;
    };
    let Some(t) = e.time else {
        return Verdict::Unreadable(format!(
            "event serialNo {} of user {}: time {:?} cannot be read",
            e.serial.map_or("?".to_string(), |s| s.to_string()),
            crate::logging::visible(user),
            e.time_text.as_deref().unwrap_or("(none)")
        ));
    };
    let (state, state_text) = state_of(e.attendance_status.as_deref());
    Verdict::Punch(Punch {
        device_id: device.to_string(),
        device_user_id: user.to_string(),
        local_time: t.local_in(tz),
        state,
        verify: verify_of(e.minor),
        workcode: None,
        state_text,
    })
}

/// The `startTime` of a pull: `lookback` seconds before `last_at`, or [`FIRST_READ_FROM`], in `tz`
/// with its offset.
pub fn start_time(last_at: Option<i64>, lookback: i64, tz: chrono_tz::Tz) -> String {
    let first = chrono::NaiveDateTime::parse_from_str(FIRST_READ_FROM, "%Y-%m-%dT%H:%M:%S")
        .map(|t| resolve_local(tz, t))
        .unwrap_or_default();
    let at = last_at
        .and_then(|t| DateTime::from_timestamp(t.saturating_sub(lookback), 0))
        .map_or(first, |t| t.max(first));
    tz.from_utc_datetime(&at.naive_utc())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Outcomes awaited, with the user of each punch.
pub type Acks = Vec<(String, oneshot::Receiver<IngestOutcome>)>;

/// A pull's progress through the events of its pages.
#[derive(Debug)]
pub struct Progress {
    pub wm: HikWatermark,
    /// A serial reset was seen in this pull: every punch is handed over from there on.
    pub reset: bool,
    /// Handed over, awaiting their commit: the watermark each group allows, and its receivers.
    waiting: VecDeque<(u64, Option<i64>, Acks)>,
    /// Where the watermark may go once `waiting` is committed.
    pub target: (u64, Option<i64>),
    pub new_punches: u64,
    pub skipped: u64,
    pub unreadable: Vec<String>,
    pub newest_at: Option<i64>,
    /// Users whose punches were unmapped (for the log), failures to commit.
    pub unmapped: Vec<String>,
    pub failed: Option<String>,
    /// Events since the watermark was last stored.
    pub since_save: u64,
}

impl Progress {
    pub fn new(wm: HikWatermark) -> Progress {
        let target = (wm.serial, wm.last_at);
        Progress {
            wm,
            reset: false,
            waiting: VecDeque::new(),
            target,
            new_punches: 0,
            skipped: 0,
            unreadable: Vec::new(),
            newest_at: None,
            unmapped: Vec::new(),
            failed: None,
            since_save: 0,
        }
    }

    /// Whether event `e` is new to the watermark, noting a serial reset (returned as `true` in the
    /// second member the first time it is seen).
    pub fn is_new(&mut self, e: &AcsEvent, tz: chrono_tz::Tz) -> (bool, bool) {
        let Some(s) = e.serial else {
            // firmware without serial numbers: every event is offered, the queue drops duplicates
            return (true, false);
        };
        if self.reset || s > self.target.0 {
            return (true, false);
        }
        let newer = match (e.time, self.wm.last_at) {
            (Some(t), Some(last)) => instant(&t, tz).timestamp() > last,
            _ => false,
        };
        if newer && self.wm.serial > 0 {
            self.reset = true;
            return (true, true);
        }
        (false, false)
    }

    /// Notes the events of one page, after its punches were handed over (`acks`).
    pub fn page(&mut self, last: Option<(u64, Option<i64>)>, acks: Acks) {
        if let Some((serial, at)) = last {
            self.target = if self.reset {
                (serial, at.or(self.target.1))
            } else {
                (serial.max(self.target.0), at.or(self.target.1))
            };
        }
        self.waiting.push_back((self.target.0, self.target.1, acks));
    }

    /// Collects the outcomes of the groups already committed (all of them with `wait`), and returns
    /// the watermark they allow.
    pub async fn settle(&mut self, wait: bool) -> Option<(u64, Option<i64>)> {
        let mut allowed = None;
        while let Some((serial, at, acks)) = self.waiting.front_mut() {
            let (serial, at) = (*serial, *at);
            while let Some((user, rx)) = acks.last_mut() {
                let outcome = if wait {
                    match rx.await {
                        Ok(o) => o,
                        Err(_) => IngestOutcome::Failed("the ingest stage stopped".into()),
                    }
                } else {
                    match rx.try_recv() {
                        Ok(o) => o,
                        Err(oneshot::error::TryRecvError::Empty) => return allowed,
                        Err(oneshot::error::TryRecvError::Closed) => {
                            IngestOutcome::Failed("the ingest stage stopped".into())
                        }
                    }
                };
                match outcome {
                    IngestOutcome::Failed(e) => self.failed = Some(e),
                    IngestOutcome::Unmapped => self.unmapped.push(std::mem::take(user)),
                    _ => {}
                }
                acks.pop();
            }
            self.waiting.pop_front();
            if self.failed.is_some() {
                // nothing after a failed commit moves the watermark
                self.waiting.clear();
                return allowed;
            }
            allowed = Some((serial, at));
        }
        allowed
    }
}

/// Hands `punches` to the writer without waiting for their commit.
pub async fn hand_over(sink: &PunchSink, punches: Vec<Punch>) -> Option<Acks> {
    let mut acks = Vec::with_capacity(punches.len());
    for p in punches {
        let user = p.device_user_id.clone();
        acks.push((user, sink.send_with_ack(p).await.ok()?));
    }
    Some(acks)
}

/// A search id for one search (kept across its pages): unique per device and moment.
pub fn search_id(device: &str) -> String {
    use sha2::{Digest, Sha256};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let h = Sha256::digest(format!("{device}\0{now}\0{n}"));
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::hikvision::spec::DEFAULT_EVENT_MINORS;

    fn ev(major: u32, minor: u32, serial: u64, time: &str, user: Option<&str>) -> AcsEvent {
        AcsEvent {
            major,
            minor,
            time: EventTime::parse(time),
            time_text: Some(time.into()),
            employee: user.map(str::to_string),
            serial: Some(serial),
            ..Default::default()
        }
    }

    #[test]
    fn only_successful_verifications_of_known_users_are_punches() {
        let tz = chrono_tz::Asia::Shanghai;
        let m = DEFAULT_EVENT_MINORS;
        let t = "2026-12-01T08:59:01+08:00";
        let Verdict::Punch(p) = verdict(&ev(5, 75, 1, t, Some("1001")), m, "d", tz) else {
            panic!()
        };
        assert_eq!(p.local_time.to_string(), "2026-12-01 08:59:01");
        assert_eq!(p.verify, Some(15));
        for (major, minor, user) in [(5, 76, Some("1")), (5, 39, Some("1")), (5, 22, Some("1"))]
            .into_iter()
            .chain([(1, 75, Some("1")), (3, 1, Some("1")), (5, 75, None)])
        {
            assert_eq!(
                verdict(&ev(major, minor, 1, t, user), m, "d", tz),
                Verdict::Skip
            );
        }
        // an offset other than the zone's: the same instant, as the zone's wall clock
        let Verdict::Punch(p) =
            verdict(&ev(5, 1, 1, "2026-12-01T01:59:01Z", Some("7")), m, "d", tz)
        else {
            panic!()
        };
        assert_eq!(p.local_time.to_string(), "2026-12-01 09:59:01");
        assert!(matches!(
            verdict(&ev(5, 1, 1, "yesterday", Some("7")), m, "d", tz),
            Verdict::Unreadable(_)
        ));
    }

    #[test]
    fn a_serial_going_back_with_a_newer_time_is_a_reset() {
        let tz = chrono_tz::Asia::Shanghai;
        let last = instant(&EventTime::parse("2026-12-01T09:00:00+08:00").unwrap(), tz);
        let mut p = Progress::new(HikWatermark {
            serial: 500,
            last_at: Some(last.timestamp()),
            ..Default::default()
        });
        // older and at or below the watermark: already committed
        assert_eq!(
            p.is_new(&ev(5, 1, 499, "2026-12-01T08:59:00+08:00", None), tz),
            (false, false)
        );
        assert_eq!(
            p.is_new(&ev(5, 1, 501, "2026-12-01T09:01:00+08:00", None), tz),
            (true, false)
        );
        assert_eq!(
            p.is_new(&ev(5, 1, 3, "2026-12-01T09:02:00+08:00", None), tz),
            (true, true)
        );
        assert!(p.reset);
        assert_eq!(
            p.is_new(&ev(5, 1, 1, "2026-12-01T08:00:00+08:00", None), tz),
            (true, false)
        );
        assert_eq!(
            start_time(Some(last.timestamp()), 600, tz),
            "2026-12-01T08:50:00+08:00"
        );
        assert_eq!(start_time(None, 600, tz), "2022-01-01T00:00:00+08:00");
    }
}
