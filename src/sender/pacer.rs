//! The request rate of one lane: when the next request may leave.
//!
//! `sender.max_requests_per_second` is the ceiling. With `sender.pacing = "fixed"` requests are
//! spaced at exactly that rate (a GCRA with no burst: one request every `1 / ceiling` s; a
//! rate-limit reply only pauses the lane until its reset). With `"adaptive"` (the default) the lane
//! finds its share of a limit it may share with other gateways of the same app (the platform counts
//! 50 requests/s per API, per app and tenant, in a window of about a second whose size it sends in
//! `x-ogw-ratelimit-limit` with each refusal: `docs/rate-limits.md`), AIMD as in TCP, with the
//! window's count where the platform gives it:
//!
//! - **Start low** at [`START_FRACTION`] of the ceiling (at least [`MIN_RATE`]): a restarted
//!   daemon never bursts (a killed gateway's last second still counts at the platform).
//! - **Slow start**: until the first rate-limit reply or the ceiling, each accepted request adds
//!   [`SLOW_START_GAIN`] requests/s (the rate grows about 7-fold per second at full use: from
//!   4.9 to 49 in about 1.2 s).
//! - **The reply that ends slow start** says the platform's window is full, and the lane knows its
//!   own part of it: the requests it sent in the second before the refused one (what the
//!   platform counted of it; the rate itself has run ahead of that during the second, by about
//!   twice). The rate becomes [`SLOW_START_DECREASE`] of that count (of the rate if lower; at
//!   least the start rate, for a lane refused before it sent much: that window was someone
//!   else's). Gateways started together are refused in the same second, each knowing its own
//!   part of the same full window, so together they settle just below the limit, each at about
//!   its share, instead of halving from an overshoot.
//! - **Additive increase**: afterwards, each accepted request adds `INCREASE / rate` (so
//!   [`INCREASE`] requests/s per second at full use), times `1 + (t / PROBE_SECS)²` where `t` is
//!   the time since the last decrease: slow near the rate the platform last refused (with ten
//!   gateways the fleet's sum grows ten times as fast as one lane's), faster the longer it has
//!   not refused (a share left by a gateway that stopped is taken up within about two minutes);
//!   each step with ±[`INCREASE_JITTER`] jitter.
//! - **Multiplicative decrease**: any later rate-limit reply multiplies the rate by [`DECREASE`],
//!   at most once per request sent after the previous decrease (the replies of requests already
//!   on their way at the old rate count once). The lane also pauses until
//!   `x-ogw-ratelimit-reset` ([`super::pacing::Pause`]), stretched by up to [`PAUSE_JITTER`] so that
//!   gateways refused in the same second do not all come back in the same instant.
//! - **A lane alone**: a lane whose own requests of the second before the refused one fill the
//!   window (`x-ogw-ratelimit-limit`, [`PLATFORM_LIMIT`] without it) to within [`ALONE_SLACK`]
//!   is alone on the app, refused for a second the network or a busy machine bunched, not for a
//!   neighbour: after the decrease it grows back fast ([`RECOVERY_GAIN`] of that rate per second
//!   at full use) to [`RECOVERY_FRACTION`] of it, then probes as above. A lane refused while a
//!   neighbour's requests took more of the window than that is not alone, and gives way (at the
//!   default ceiling of 49, one or two of a neighbour's cannot be told from a bunched second).
//! - **Idle**: a lane that sent nothing for [`IDLE_RESTART`] starts low again (with slow start):
//!   what it learnt is stale, and after an outage every gateway comes back at once.
//!
//! The constants were chosen with `scripts/fleet-model.py` (a model of the fleet benchmark) and
//! checked with `cargo bench --bench fleet` (1, 3 and 10 gateways against the stand-in; figures in
//! the README): the decrease and the increase trade the pause each refusal costs (its lane's
//! share for about a second) against the room left unused below the limit.
//! Requests are only ever spaced, never bunched: the rate allowed is an upper bound on what leaves.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Pacing, SenderConfig};

/// Where an adaptive lane starts, as a fraction of the ceiling.
pub const START_FRACTION: f64 = 0.1;
/// The lowest rate an adaptive lane goes down to (requests/s).
pub const MIN_RATE: f64 = 0.5;
/// Slow start: requests/s added per accepted request (e² ≈ 7-fold per second at full use: fast
/// enough that a gateway alone loses about a second of the ceiling at its start, slow enough that
/// a restarted one sends 13 requests in its first second, not 49).
pub const SLOW_START_GAIN: f64 = 2.0;
/// Additive increase: requests/s added per second at full use (per accepted request:
/// `INCREASE / rate`), just after a decrease. Small: every gateway of the app adds it, and the
/// fleet's sum must creep towards the limit, not jump over it (each refusal costs its lane about
/// a second).
pub const INCREASE: f64 = 0.01;
/// How the additive increase grows while no rate-limit reply comes: `INCREASE` × (1 + (seconds
/// since the last decrease / `PROBE_SECS`)²): twice as fast after 20 s, ten times after 60 s.
pub const PROBE_SECS: f64 = 20.0;
/// Jitter of each increase step (± this fraction).
pub const INCREASE_JITTER: f64 = 0.2;
/// Multiplicative decrease on a rate-limit reply after slow start. One lane of a fleet is refused
/// at a time: a deep cut leaves a share unused for long, a shallow one brings the next refusal
/// sooner.
pub const DECREASE: f64 = 0.75;
/// The rate after the reply that ends slow start, as a fraction of the requests the lane sent in
/// the second before the refused one (its part of the platform's full window).
pub const SLOW_START_DECREASE: f64 = 0.95;
/// The pause after a rate-limit reply is `x-ogw-ratelimit-reset` × (1 + up to this fraction).
pub const PAUSE_JITTER: f64 = 0.1;
/// The platform's window limit (requests per second per API, app and tenant: docs/rate-limits.md),
/// used when a refusal carries no `x-ogw-ratelimit-limit`.
pub const PLATFORM_LIMIT: u64 = 50;
/// A lane whose requests of the second before a refusal number at least the window's limit less
/// this is alone on the app (the window was all its own).
pub const ALONE_SLACK: u64 = 2;
/// How fast a lane alone recovers: this fraction of the rate it was refused at, per second at
/// full use.
pub const RECOVERY_GAIN: f64 = 0.5;
/// Up to which fraction of the rate it was refused at a lane alone recovers fast.
pub const RECOVERY_FRACTION: f64 = 1.0;
/// A lane idle this long starts low again.
pub const IDLE_RESTART: Duration = Duration::from_secs(30);
/// The platform's window (about a second: docs/rate-limits.md): a refusal is judged by the
/// lane's requests within this before the refused one.
const WINDOW: Duration = Duration::from_secs(1);

/// The pacing of one lane (see the module's doc).
#[derive(Debug)]
pub struct Pacer {
    adaptive: bool,
    ceiling: f64,
    st: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: f64,
    slow_start: bool,
    /// The earliest moment the next request may leave.
    next: Option<Instant>,
    last_request: Option<Instant>,
    /// The last multiplicative decrease (or the start, or the last idle restart).
    since: Instant,
    last_decrease: Option<Instant>,
    /// The rate of the last decrease, when the lane was alone (fast recovery up to
    /// `RECOVERY_FRACTION` of it).
    recover_to: Option<f64>,
    /// When the lane's recent requests left (the last two windows' worth, adaptive only).
    sent: VecDeque<Instant>,
}

impl Pacer {
    pub fn new(cfg: &SenderConfig, now: Instant) -> Pacer {
        let ceiling = f64::from(cfg.max_requests_per_second.max(1));
        let adaptive = cfg.pacing == Pacing::Adaptive;
        Pacer {
            adaptive,
            ceiling,
            st: Mutex::new(State {
                rate: if adaptive {
                    start_rate(ceiling)
                } else {
                    ceiling
                },
                slow_start: adaptive,
                next: None,
                last_request: None,
                since: now,
                last_decrease: None,
                recover_to: None,
                sent: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate allowed now (requests/s).
    pub fn rate(&self) -> f64 {
        self.state().rate
    }

    /// The ceiling (`sender.max_requests_per_second`).
    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }

    pub fn adaptive(&self) -> bool {
        self.adaptive
    }

    /// Takes the next slot: the moment the caller's request may leave (`now` or later). Callers take
    /// slots one at a time, in order (`Shared::turn`).
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut s = self.state();
        if self.adaptive
            && s.last_request
                .is_some_and(|t| now.saturating_duration_since(t) >= IDLE_RESTART)
        {
            s.rate = s.rate.min(start_rate(self.ceiling));
            s.slow_start = true;
            s.since = now;
            s.recover_to = None;
        }
        let slot = s.next.map_or(now, |n| n.max(now));
        s.next = Some(slot + Duration::from_secs_f64(1.0 / s.rate));
        s.last_request = Some(slot);
        slot
    }

    /// A request left at `at` (its slot came and the lane was not paused): counted for the
    /// judgement of a later refusal.
    pub fn on_sent(&self, at: Instant) {
        if !self.adaptive {
            return;
        }
        let mut s = self.state();
        while s
            .sent
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) > 2 * WINDOW)
        {
            s.sent.pop_front();
        }
        s.sent.push_back(at);
    }

    /// A request was answered without a rate-limit refusal at `now`.
    pub fn on_success(&self, now: Instant) {
        if !self.adaptive {
            return;
        }
        let mut s = self.state();
        let recovering = s.recover_to.filter(|r| s.rate < r * RECOVERY_FRACTION);
        let step = if s.slow_start {
            SLOW_START_GAIN
        } else if let Some(r) = recovering {
            RECOVERY_GAIN * r / s.rate
        } else {
            let probing = now.saturating_duration_since(s.since).as_secs_f64() / PROBE_SECS;
            let jitter = 1.0 + INCREASE_JITTER * (2.0 * fastrand::f64() - 1.0);
            INCREASE * (1.0 + probing * probing) * jitter / s.rate
        };
        s.rate = (s.rate + step).min(self.ceiling);
        if s.slow_start && s.rate >= self.ceiling {
            // at the ceiling: a refusal from now on is not the overshoot of a slow start
            s.slow_start = false;
            s.since = now;
        }
    }

    /// A request sent at `sent` was refused by the rate limit at `now`, the refusal giving the
    /// window's limit `limit` (`x-ogw-ratelimit-limit`): the new rate, if it was lowered (once per
    /// request sent after the previous decrease).
    pub fn on_rate_limited(&self, sent: Instant, now: Instant, limit: Option<u64>) -> Option<f64> {
        if !self.adaptive {
            return None;
        }
        let mut s = self.state();
        if s.last_decrease.is_some_and(|d| sent <= d) {
            return None;
        }
        // the lane's part of the window the platform found full
        let mine = s
            .sent
            .iter()
            .filter(|t| **t < sent && sent.saturating_duration_since(**t) <= WINDOW)
            .count() as u64;
        let limit = limit.filter(|l| *l > 0).unwrap_or(PLATFORM_LIMIT);
        let alone = mine + ALONE_SLACK >= limit;
        s.recover_to = alone.then_some(s.rate);
        let lowered = if s.slow_start {
            let counted = (mine as f64).max(start_rate(self.ceiling));
            s.rate.min(counted) * SLOW_START_DECREASE
        } else {
            s.rate * DECREASE
        };
        s.rate = lowered.max(MIN_RATE.min(self.ceiling));
        s.slow_start = false;
        s.last_decrease = Some(now);
        s.since = now;
        // the slots already handed out stay; the next one is spaced at the new rate
        let spaced = now + Duration::from_secs_f64(1.0 / s.rate);
        s.next = Some(s.next.map_or(spaced, |n| n.max(spaced)));
        Some(s.rate)
    }

    /// How long to pause after a rate-limit reply asking for `reset`: `reset`, stretched by up to
    /// [`PAUSE_JITTER`] when adaptive.
    pub fn pause_for(&self, reset: Duration) -> Duration {
        if self.adaptive {
            reset.mul_f64(1.0 + PAUSE_JITTER * fastrand::f64())
        } else {
            reset
        }
    }
}

/// The rate an adaptive lane starts at.
pub fn start_rate(ceiling: f64) -> f64 {
    (ceiling * START_FRACTION).max(MIN_RATE).min(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pacing: Pacing, ceiling: u32) -> SenderConfig {
        SenderConfig {
            max_requests_per_second: ceiling,
            pacing,
            ..SenderConfig::default()
        }
    }

    /// Slots taken back to back from `t0`, `n` of them.
    fn slots(p: &Pacer, t0: Instant, n: usize) -> Vec<Instant> {
        (0..n).map(|_| p.reserve(t0)).collect()
    }

    /// `n` requests sent evenly over the second before `until` (the last one just before it).
    fn sent_in_the_second_before(p: &Pacer, until: Instant, n: u32) {
        for i in (1..=n).rev() {
            p.on_sent(until - WINDOW.mul_f64(f64::from(i) / f64::from(n + 1)));
        }
    }

    #[test]
    fn fixed_pacing_spaces_requests_at_the_ceiling_and_never_adapts() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Fixed, 40), t0);
        assert_eq!(p.rate(), 40.0);
        let s = slots(&p, t0, 41);
        assert_eq!(s[0], t0, "an idle lane sends at once");
        let span = s[40].duration_since(s[0]).as_secs_f64();
        assert!((span - 1.0).abs() < 1e-6, "{span}");
        p.on_sent(t0);
        assert_eq!(p.on_rate_limited(t0, t0, Some(50)), None);
        p.on_success(t0);
        assert_eq!(p.rate(), 40.0);
        assert_eq!(p.pause_for(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn an_adaptive_lane_starts_low_and_ramps_up_in_slow_start() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        assert_eq!(p.rate(), 4.0, "a tenth of the ceiling");
        // the first requests go at the start rate: 1/4 s apart
        let s = slots(&p, t0, 2);
        assert_eq!(s[1].duration_since(s[0]), Duration::from_millis(250));
        for _ in 0..6 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 16.0, "SLOW_START_GAIN more per accepted request");
        for _ in 0..100 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 40.0, "never above the ceiling");
    }

    #[test]
    fn the_reply_that_ends_slow_start_sets_the_rate_to_the_lanes_part_of_the_window() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        for _ in 0..8 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 20.0);
        // the rate ran ahead of what the lane sent during the second: 10 requests were counted
        let t1 = t0 + Duration::from_secs(2);
        p.on_sent(t1 - Duration::from_millis(1500)); // not in the window
        sent_in_the_second_before(&p, t1, 10);
        let r = p.on_rate_limited(t1, t1, Some(50)).unwrap();
        assert!((r - 10.0 * SLOW_START_DECREASE).abs() < 1e-9, "{r}");
        // replies to requests sent before that decrease count once
        assert_eq!(
            p.on_rate_limited(t1, t1 + Duration::from_millis(10), None),
            None
        );
        assert_eq!(p.rate(), r);
        // the next slot is spaced at the new rate from the decrease
        assert!(p.reserve(t1) >= t1 + Duration::from_secs_f64(1.0 / r));
        // congestion avoidance: one second of accepted requests at about 9.5/s adds about INCREASE
        for _ in 0..10 {
            p.on_success(t1);
        }
        let grown = p.rate() - r;
        assert!(grown > INCREASE * 0.79 && grown < INCREASE * 1.3, "{grown}");
        // a request sent after the decrease, refused: DECREASE of the rate this time
        let t2 = t1 + Duration::from_secs(2);
        sent_in_the_second_before(&p, t2, 3);
        let r2 = p.on_rate_limited(t2, t2, Some(50)).unwrap();
        assert!((r2 - (r + grown) * DECREASE).abs() < 1e-9, "{r2}");
        // never below the floor
        for i in 0..100 {
            let t = t2 + Duration::from_millis(10 * (i + 1));
            p.on_rate_limited(t, t, Some(50));
        }
        assert_eq!(p.rate(), MIN_RATE);
        // the pause is the reset, stretched by at most PAUSE_JITTER
        let d = p.pause_for(Duration::from_secs(2));
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_secs_f64(2.0 * (1.0 + PAUSE_JITTER))
        );
    }

    #[test]
    fn a_lane_refused_before_it_sent_much_keeps_at_least_its_start_rate() {
        // the window was full of someone else's requests (a neighbour's, or those of the
        // daemon killed just before this one started)
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        for _ in 0..6 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 16.0);
        p.on_sent(t0);
        let r = p.on_rate_limited(t0 + Duration::from_millis(5), t0, None);
        assert_eq!(r, Some(4.0 * SLOW_START_DECREASE));
        // and a lane below its part of the window keeps its own rate
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        let t1 = t0 + Duration::from_secs(1);
        sent_in_the_second_before(&p, t1, 20);
        assert_eq!(
            p.on_rate_limited(t1, t1, None),
            Some(4.0 * SLOW_START_DECREASE)
        );
    }

    /// A lane at the default ceiling (49), refused at `t1` after sending `mine` requests in the
    /// second before: its rate right after the decrease and 60 accepted requests later.
    fn rates_after_a_refusal_at_the_ceiling(mine: u32) -> (f64, f64) {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 49), t0);
        for _ in 0..100 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 49.0, "slow start ends at the ceiling");
        let t1 = t0 + Duration::from_secs(10);
        sent_in_the_second_before(&p, t1, mine);
        let cut = p.on_rate_limited(t1, t1, Some(50)).unwrap();
        for _ in 0..60 {
            p.on_success(t1);
        }
        (cut, p.rate())
    }

    #[test]
    fn a_lane_whose_requests_filled_the_window_is_alone_and_recovers_fast() {
        // 48 of the window's 50 were its own: a second the network bunched; DECREASE, not
        // SLOW_START_DECREASE (slow start ended at the ceiling), then back to RECOVERY_FRACTION
        // of 49 within about a second at full use (RECOVERY_GAIN x 49 requests/s per second)
        let (cut, after) = rates_after_a_refusal_at_the_ceiling(48);
        assert!((cut - 49.0 * DECREASE).abs() < 1e-9, "{cut}");
        assert!(
            (49.0 * RECOVERY_FRACTION - 1e-9..=49.0).contains(&after),
            "{after}"
        );
    }

    #[test]
    fn a_lane_near_its_ceiling_refused_because_of_a_neighbour_gives_way() {
        // 45 of the window's 50 were its own: another gateway of the app sends too
        let (cut, after) = rates_after_a_refusal_at_the_ceiling(45);
        assert!((cut - 49.0 * DECREASE).abs() < 1e-9, "{cut}");
        assert!(after - cut < 0.1, "{cut} -> {after}: grew back fast");
    }

    #[test]
    fn the_increase_grows_while_no_rate_limit_reply_comes() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        assert!(p.on_rate_limited(t0, t0, None).is_some());
        let before = p.rate();
        // 60 s later, one accepted request adds (1 + 3²) times what it adds just after the decrease
        p.on_success(t0 + Duration::from_secs(60));
        let step = (p.rate() - before) * before;
        assert!(
            step > INCREASE * 10.0 * 0.79 && step < INCREASE * 10.0 * 1.21,
            "{step}"
        );
    }

    #[test]
    fn an_idle_lane_starts_low_again() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive, 40), t0);
        for _ in 0..100 {
            p.on_success(t0);
        }
        p.reserve(t0);
        assert_eq!(p.rate(), 40.0);
        // busy: the rate stays
        p.reserve(t0 + Duration::from_secs(29));
        assert_eq!(p.rate(), 40.0);
        // idle for IDLE_RESTART: back to the start, in slow start
        p.reserve(t0 + Duration::from_secs(29) + IDLE_RESTART);
        assert_eq!(p.rate(), 4.0);
        p.on_success(t0 + Duration::from_secs(60));
        assert_eq!(p.rate(), 4.0 + SLOW_START_GAIN);
    }
}
