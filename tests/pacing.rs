//! Adaptive pacing (`sender.pacing = "adaptive"`, `clockbridge::sender::pacer`) against the
//! stand-in: a restarted daemon starts low and ramps up instead of bursting.
//!
//! The assertions are on the rate the daemon allowed itself, read at the stand-in (the arrival
//! time of each request, [`Standin::rate_log`]) and compared with the pacer's own law, never on
//! how fast this machine is: a slow machine only sends later, never sooner.

use std::time::{Duration, Instant};

use clockbridge::sender::pacer::{start_rate, SLOW_START_GAIN};
use clockbridge_testkit::standin::{Api, StandinConfig};

use crate::util::*;

const CEILING: f64 = 49.0;

/// The most requests an adaptive lane can send within `window` of its first request after a
/// start: slot k leaves at least `sum over i < k of 1 / (start + i * SLOW_START_GAIN)` after
/// slot 0 (the rate grows by at most SLOW_START_GAIN per accepted request, and at most i were
/// accepted before slot i).
fn most_requests_within(window: Duration) -> usize {
    let start = start_rate(CEILING);
    let (mut t, mut k) = (0.0, 1);
    loop {
        t += 1.0 / (start + (k - 1) as f64 * SLOW_START_GAIN).min(CEILING);
        if t > window.as_secs_f64() {
            return k;
        }
        k += 1;
    }
}

/// The requests that reached the stand-in's rate limit from `from` on, within `window` of the
/// first of them.
fn requests_in_first(log: &[(Instant, bool)], from: usize, window: Duration) -> usize {
    let Some((first, _)) = log.get(from) else {
        return 0;
    };
    log[from..]
        .iter()
        .take_while(|(t, _)| t.duration_since(*first) <= window)
        .count()
}

/// Waits until the punch lane allows itself the ceiling.
async fn wait_for_the_ceiling(running: &clockbridge::daemon::Running) {
    let mut progress = running.sender_stats.subscribe();
    tokio::time::timeout(PATIENCE, async {
        while running.sender_stats.snapshot().pacing_rate_per_sec < CEILING {
            let _ = progress.changed().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the lane never reached its ceiling: {:?}",
            running.sender_stats.snapshot()
        )
    });
}

#[tokio::test]
async fn a_restarted_daemon_ramps_up_from_a_tenth_of_the_ceiling_instead_of_bursting() {
    let env = Env::new(StandinConfig::default()).await;
    // the product's defaults: adaptive pacing, a ceiling of 49 requests/s
    let running = env.start("").await;
    let n = 15_000;
    // handed over at once (group commits): a backlog, not a trickle the lane keeps up with
    let sink = running.sink().unwrap();
    for p in punches("door-1", n) {
        sink.submit(p).await.unwrap();
    }
    drop(sink);
    wait_for_the_ceiling(&running).await;
    let snap = running.sender_stats.snapshot();
    assert_eq!(snap.pacing, "adaptive");
    assert_eq!(snap.pacing_ceiling_per_sec, CEILING);
    // stopped mid-drain at full rate, and started again at once, with the backlog still there
    running.stop().await;
    let before = env.standin.rate_log(Api::UserFlows).len();
    let delivered_before = env.standin.stored_len();
    assert!(
        delivered_before < n,
        "the backlog was gone before the restart"
    );
    let running = env.start("").await;
    assert_eq!(
        running.sender_stats.snapshot().pacing_rate_per_sec,
        (start_rate(CEILING) * 100.0).round() / 100.0,
        "a restarted lane starts at a tenth of its ceiling"
    );
    wait_for_the_ceiling(&running).await;
    let log = env.standin.rate_log(Api::UserFlows);
    // 2 of transport jitter (a request delayed on its way, the next one on time)
    for window in [Duration::from_millis(500), Duration::from_secs(1)] {
        let bound = most_requests_within(window) + 2;
        let sent = requests_in_first(&log, before, window);
        assert!(
            sent <= bound,
            "{sent} requests within {window:?} of the restart (the pacing allows {bound}; fixed pacing would send {})",
            (CEILING * window.as_secs_f64()) as usize
        );
    }
    // and it did ramp up: it allowed itself the ceiling again, with no 429 on the way
    assert_eq!(env.standin.stats().rate_limited, 0);
    assert!(log[before..].len() > most_requests_within(Duration::from_secs(1)));
    running.stop().await;
}

#[tokio::test]
async fn fixed_pacing_keeps_the_ceiling_from_the_first_request() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("pacing = \"fixed\"").await;
    let snap = running.sender_stats.snapshot();
    assert_eq!(snap.pacing, "fixed");
    assert_eq!(snap.pacing_rate_per_sec, CEILING);
    submit_all(&running, punches("door-1", 500)).await;
    env.standin.wait_stored(500).await;
    assert_eq!(running.sender_stats.snapshot().pacing_rate_per_sec, CEILING);
    running.stop().await;
}

#[test]
fn the_bound_follows_the_slow_start() {
    // 4.9/s, then 6.9/s, 8.9/s...: 13 requests fit in the first second (49 with fixed pacing)
    assert_eq!(most_requests_within(Duration::from_secs(1)), 13);
    assert_eq!(most_requests_within(Duration::from_millis(500)), 4);
}
