//! The daemon's scheduled reconcile (`[reconcile] schedule = "daily 02:30"`, off by default): at
//! that time of the gateway's day, "yesterday" of each device in the device's own zone, with the
//! daemon's own client and queue, in its turn at the query budget (a CLI reconcile at the same
//! time waits for it, or it for the CLI's). Its result goes to the journal (one INFO line when
//! everything matched, one WARN line per device otherwise) and to [`LastCheck`], which `status`
//! and `/metrics` show (matched, not visible, missing from the queue).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Options, Reconciliation};
use crate::config::Config;
use crate::feishu::FeishuClient;
use crate::queue::Queue;

/// The last scheduled check's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    /// Unix seconds when it finished.
    pub at: i64,
    /// The day checked (`YYYY-MM-DD`, each device's zone).
    pub day: String,
    pub matched: u64,
    pub not_visible: u64,
    /// Not delivered yet (pending, dead, unmapped).
    pub not_delivered: u64,
    /// Records the clocks hold that the queue does not.
    pub missing_from_queue: u64,
    /// Flows from other sources (informational).
    pub other_sources: u64,
    pub exit_code: u8,
    /// Why the check could not be made.
    pub error: Option<String>,
}

/// Where the daemon keeps the last check for `status` and `/metrics`.
pub type Shared = Arc<Mutex<Option<LastCheck>>>;

impl LastCheck {
    fn of(rec: &Reconciliation, at: i64) -> LastCheck {
        let t = &rec.matched.total;
        LastCheck {
            at,
            day: rec.from.to_string(),
            matched: t.confirmed,
            not_visible: t.not_visible,
            not_delivered: t.undelivered(),
            missing_from_queue: rec.missing_from_queue(),
            other_sources: rec.matched.other_sources.len() as u64,
            exit_code: rec.exit_code(),
            error: None,
        }
    }
}

/// The first instant strictly after `now` when the wall clock of `zone` shows `at`:
/// - on a day when `at` does not exist (the clocks jump over it, as 02:30 on a spring-forward
///   night in Europe), the instant of the jump, when the clock passes `at`;
/// - on a day when `at` happens twice (a fall-back night), the first of the two only, so the check
///   runs once a day.
pub fn next_run<Z: TimeZone>(now: DateTime<Utc>, at: NaiveTime, zone: &Z) -> DateTime<Utc> {
    let today = now.with_timezone(zone).date_naive();
    // yesterday's too: a zone west of UTC may still be on the day before
    for date in [
        today.pred_opt(),
        Some(today),
        today.succ_opt(),
        today.succ_opt().and_then(|d| d.succ_opt()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(t) = instant_of(date, at, zone) {
            if t > now {
                return t;
            }
        }
    }
    // unreachable for real zones (a day always has its `at` within two days), but never stall
    now + chrono::Duration::days(1)
}

/// When the wall clock of `zone` shows `at` on `date` (see [`next_run`]).
fn instant_of<Z: TimeZone>(date: NaiveDate, at: NaiveTime, zone: &Z) -> Option<DateTime<Utc>> {
    let local = date.and_time(at);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        // in a gap: the first minute after it is the instant of the jump
        LocalResult::None => (1..=24 * 60).find_map(|m| {
            zone.from_local_datetime(&(local + chrono::Duration::minutes(m)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        }),
    }
}

/// The longest single sleep of the schedule: the wall clock is looked at again at least this
/// often, so a clock set forward or back (NTP, a suspended machine) moves the check with it.
const LONGEST_SLEEP: Duration = Duration::from_secs(600);

/// Runs the scheduled check at `at` every day until `shutdown`.
pub async fn run(
    cfg: Arc<Config>,
    queue: Queue,
    client: Arc<FeishuClient>,
    at: NaiveTime,
    last: Shared,
    shutdown: CancellationToken,
) {
    every_day(Utc::now, &Local, at, shutdown, |day| {
        let (cfg, queue, client, last) = (cfg.clone(), queue.clone(), client.clone(), last.clone());
        async move {
            check_and_keep(&cfg, &queue, client, day, &last).await;
        }
    })
    .await
}

/// The schedule's loop: at `at` on the wall clock of `zone` (`now` telling the time), `check` of
/// the day before, every day until `shutdown`. It sleeps on tokio's timer (at most
/// [`LONGEST_SLEEP`] at a time, then looks at the clock again), so a test drives it with paused
/// time and a clock that follows it.
pub async fn every_day<Z, N, C, F>(
    now: N,
    zone: &Z,
    at: NaiveTime,
    shutdown: CancellationToken,
    mut check: C,
) where
    Z: TimeZone,
    N: Fn() -> DateTime<Utc>,
    C: FnMut(NaiveDate) -> F,
    F: std::future::Future<Output = ()>,
{
    loop {
        let due = next_run(now(), at, zone);
        loop {
            let left = (due - now()).to_std().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(left.min(LONGEST_SLEEP)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        // the day before the one the check was due on (a late wake still checks that day)
        let day = due.with_timezone(zone).date_naive();
        check(day.pred_opt().unwrap_or(day)).await;
    }
}

/// One check of `day` (each device's day in its own zone), logged and kept in `last` for `status`
/// and `/metrics`.
pub async fn check_and_keep(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    day: chrono::NaiveDate,
    last: &Shared,
) -> LastCheck {
    let check = check_day(cfg, queue, client, day).await;
    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(check.clone());
    check
}

/// One check of `day`, logged: one INFO line when everything matched, one WARN line per device
/// otherwise.
pub async fn check_day(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    day: chrono::NaiveDate,
) -> LastCheck {
    let opts = Options {
        from: day,
        to: day,
        devices: Vec::new(),
        users: Vec::new(),
        requeue: false,
        wait: Duration::ZERO,
        clocks: true,
    };
    let now = chrono::Utc::now().timestamp();
    match super::run(cfg, queue, client, &opts).await {
        Err(e) => {
            tracing::warn!(day = %day, "reconcile: the scheduled check could not be made: {e}");
            LastCheck {
                at: now,
                day: day.to_string(),
                exit_code: super::EXIT_FAILED,
                error: Some(e.to_string()),
                ..LastCheck::default()
            }
        }
        Ok(rec) => {
            let last = LastCheck::of(&rec, now);
            if rec.all_matched() {
                tracing::info!(
                    day = %day, matched = last.matched, requests = rec.cost.requests,
                    "reconcile: every punch of {day} is in Feishu ({} punches, {} device{})",
                    last.matched, rec.matched.devices.len(),
                    if rec.matched.devices.len() == 1 { "" } else { "s" }
                );
            } else {
                log_devices(&rec);
            }
            last
        }
    }
}

fn log_devices(rec: &Reconciliation) {
    let day = rec.from;
    for d in &rec.matched.devices {
        let t = &d.total;
        let clock = rec.clocks.iter().find(|c| c.device == d.device);
        let missing = clock.map_or(0, |c| c.missing_from_queue + c.not_read_yet);
        if t.not_visible == 0 && t.undelivered() == 0 && missing == 0 {
            continue;
        }
        tracing::warn!(
            device = %d.device, day = %day, matched = t.confirmed, not_visible = t.not_visible,
            not_delivered = t.undelivered(), missing_from_queue = missing,
            "reconcile: device {} on {day}: {} confirmed, {} delivered but not visible in Feishu, {} not delivered yet, {} records on the clock missing from the queue: run clockbridge reconcile --from {day} --to {day} --device {} for the details",
            d.device, t.confirmed, t.not_visible, t.undelivered(), missing, d.device
        );
    }
    for c in &rec.clocks {
        let listed = rec.matched.devices.iter().any(|d| d.device == c.device);
        if !listed && !c.agrees() {
            tracing::warn!(
                device = %c.device, day = %day, missing_from_queue = c.missing_from_queue + c.not_read_yet,
                "reconcile: device {} on {day}: {} records on the clock missing from the queue",
                c.device, c.missing_from_queue + c.not_read_yet
            );
        }
    }
}

/// The `status` line of the last scheduled check.
pub fn status_line(r: &LastCheck) -> String {
    match &r.error {
        Some(e) => format!("reconcile: {}: could not be made: {e}\n", r.day),
        None if r.exit_code == super::EXIT_MATCHED => format!(
            "reconcile: {}: every punch in Feishu ({} matched)\n",
            r.day, r.matched
        ),
        None => format!(
            "reconcile: {}: {} matched, {} NOT VISIBLE in Feishu, {} not delivered yet, {} missing from the queue: run clockbridge reconcile --from {} --to {}\n",
            r.day, r.matched, r.not_visible, r.not_delivered, r.missing_from_queue, r.day, r.day
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Asia::Shanghai, Europe::Berlin};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn at(s: &str) -> NaiveTime {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_run_is_the_next_time_the_zones_wall_clock_shows_it() {
        // Shanghai (UTC+8, no DST): 02:30 local is 18:30 UTC the day before
        let cases = [
            // just before: today's
            ("2026-03-09T18:29:59Z", "2026-03-09T18:30:00Z"),
            // exactly at it, and just after: tomorrow's
            ("2026-03-09T18:30:00Z", "2026-03-10T18:30:00Z"),
            ("2026-03-09T18:30:01Z", "2026-03-10T18:30:00Z"),
            // the UTC date is a day behind the local one
            ("2026-03-10T17:00:00Z", "2026-03-10T18:30:00Z"),
        ];
        for (now, want) in cases {
            assert_eq!(
                next_run(utc(now), at("02:30"), &Shanghai),
                utc(want),
                "{now}"
            );
        }
        // a zone west of UTC: New York 23:50 local (UTC-5) is the next UTC day
        assert_eq!(
            next_run(utc("2026-01-15T04:00:00Z"), at("23:50"), &New_York),
            utc("2026-01-15T04:50:00Z")
        );
        assert_eq!(
            next_run(utc("2026-01-15T04:50:00Z"), at("23:50"), &New_York),
            utc("2026-01-16T04:50:00Z")
        );
        // midnight
        assert_eq!(
            next_run(utc("2026-01-15T12:00:00Z"), at("00:00"), &Berlin),
            utc("2026-01-15T23:00:00Z")
        );
    }

    #[test]
    fn a_time_the_clocks_jump_over_runs_at_the_jump_and_a_doubled_time_runs_once() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist
        let spring = next_run(utc("2026-03-28T02:00:00Z"), at("02:30"), &Berlin);
        assert_eq!(spring, utc("2026-03-29T01:00:00Z"));
        // and the day after is 02:30 CEST again
        assert_eq!(
            next_run(spring, at("02:30"), &Berlin),
            utc("2026-03-30T00:30:00Z")
        );
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC
        let fall = next_run(utc("2026-10-24T12:00:00Z"), at("02:30"), &Berlin);
        assert_eq!(fall, utc("2026-10-25T00:30:00Z"));
        // after the first, the next is the next day's, not the second 02:30 of the same night
        assert_eq!(
            next_run(fall, at("02:30"), &Berlin),
            utc("2026-10-26T01:30:00Z")
        );
        assert_eq!(
            next_run(utc("2026-10-25T01:00:00Z"), at("02:30"), &Berlin),
            utc("2026-10-26T01:30:00Z")
        );
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC)
        assert_eq!(
            next_run(utc("2026-03-08T05:00:00Z"), at("02:30"), &New_York),
            utc("2026-03-08T07:00:00Z")
        );
    }

    /// The loop, on paused time and a clock that follows it: the check of yesterday runs when the
    /// wall clock shows the time, once a day, and no earlier; nothing sleeps in real time.
    #[tokio::test(start_paused = true)]
    async fn the_loop_runs_the_check_of_yesterday_when_its_time_comes() {
        let start = utc("2026-03-28T20:00:00Z"); // 21:00 in Berlin
        let origin = tokio::time::Instant::now();
        let now = move || start + chrono::Duration::from_std(origin.elapsed()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let lp = tokio::spawn(async move {
            every_day(now, &Berlin, at("02:30"), stop, |day| {
                let tx = tx.clone();
                async move {
                    tx.send((day, now())).unwrap();
                }
            })
            .await
        });
        // the first night is the spring-forward one: 02:30 does not exist, the check runs at the
        // jump (03:00 CEST)
        let (day, ran) = rx.recv().await.unwrap();
        assert_eq!(day, "2026-03-28".parse::<NaiveDate>().unwrap());
        assert_eq!(ran, utc("2026-03-29T01:00:00Z"));
        let (day, ran) = rx.recv().await.unwrap();
        assert_eq!(day, "2026-03-29".parse::<NaiveDate>().unwrap());
        assert_eq!(ran, utc("2026-03-30T00:30:00Z"));
        // nothing more before the next day's time
        tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
        assert!(rx.try_recv().is_err());
        let (day, ran) = rx.recv().await.unwrap();
        assert_eq!(day, "2026-03-30".parse::<NaiveDate>().unwrap());
        assert_eq!(ran, utc("2026-03-31T00:30:00Z"));
        shutdown.cancel();
        lp.await.unwrap();
    }
}
