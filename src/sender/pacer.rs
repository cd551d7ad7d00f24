//! The request rate of one lane: when the next request may leave.
//!
//! `sender.max_requests_per_second` is the ceiling. With `sender.pacing = "fixed"` requests are
//! spaced at exactly that rate (a GCRA with no burst: one request every `1 / ceiling` s; a
//! rate-limit reply only pauses the lane until its reset). With `"adaptive"` (the default) the lane
//! finds its share of a limit it may share with other gateways of the same app (the platform counts
//! 50 requests/s per API, per app and tenant: `docs/rate-limits.md`), AIMD as in TCP:
//!
//! - **Start low** at [`START_FRACTION`] of the ceiling (at least [`MIN_RATE`]): a restarted
//!   daemon never bursts (a killed gateway's last second still counts at the platform).
//! - **Slow start**: until the first rate-limit reply or the ceiling, each accepted request adds
//!   [`SLOW_START_GAIN`] requests/s (the rate grows about 4.5-fold per second at full use: from
//!   4.9 to 49 in about 1.5 s).
//! - **Additive increase**: after the first rate-limit reply, each accepted request adds
//!   `INCREASE / rate` (so [`INCREASE`] requests/s per second at full use), times
//!   `1 + (t / PROBE_SECS)²` where `t` is the time since the last decrease: slow near the rate
//!   the platform last refused, faster the longer it has not refused (a gateway left alone gets
//!   its rate back within about a minute and a half); each step with ±[`INCREASE_JITTER`] jitter.
//! - **A lane alone near its ceiling**: a rate-limit reply to a lane that ran at
//!   [`ALONE_FRACTION`] of its ceiling or more is most likely one second bunched by the network
//!   or a busy machine, not a neighbour (a fair share of a limit shared by two is half of it): after
//!   the decrease it grows back fast ([`RECOVERY_GAIN`] of that rate per second at full use) to
//!   [`RECOVERY_FRACTION`] of it, then probes as above.
//! - **Multiplicative decrease**: a rate-limit reply multiplies the rate by [`DECREASE`]
//!   ([`SLOW_START_DECREASE`] for the one that ends slow start, which overshot), at most once per
//!   request sent after the previous decrease (the replies of requests already on their way at the
//!   old rate count once). The lane also pauses until
//!   `x-ogw-ratelimit-reset` ([`super::pacing::Pause`]), stretched by up to [`PAUSE_JITTER`] so that
//!   gateways refused in the same second do not all come back in the same instant.
//! - **Idle**: a lane that sent nothing for [`IDLE_RESTART`] starts low again (with slow start):
//!   what it learnt is stale, and after an outage every gateway comes back at once.
//!
//! Requests are only ever spaced, never bunched: the rate allowed is an upper bound on what leaves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Pacing, SenderConfig};

/// Where an adaptive lane starts, as a fraction of the ceiling.
pub const START_FRACTION: f64 = 0.1;
/// The lowest rate an adaptive lane goes down to (requests/s).
pub const MIN_RATE: f64 = 0.5;
/// Slow start: requests/s added per accepted request.
pub const SLOW_START_GAIN: f64 = 1.5;
/// Additive increase: requests/s added per second at full use (per accepted request:
/// `INCREASE / rate`), just after a decrease.
pub const INCREASE: f64 = 0.05;
/// How the additive increase grows while no rate-limit reply comes: `INCREASE` × (1 + (seconds
/// since the last decrease / `PROBE_SECS`)²): twice as fast after 20 s, ten times after 60 s.
pub const PROBE_SECS: f64 = 20.0;
/// Jitter of each increase step (± this fraction).
pub const INCREASE_JITTER: f64 = 0.2;
/// Multiplicative decrease on a rate-limit reply.
pub const DECREASE: f64 = 0.7;
/// Multiplicative decrease on the rate-limit reply that ends slow start.
pub const SLOW_START_DECREASE: f64 = 0.5;
/// The pause after a rate-limit reply is `x-ogw-ratelimit-reset` × (1 + up to this fraction).
pub const PAUSE_JITTER: f64 = 0.1;
/// A lane refused at this fraction of its ceiling or more recovers fast (it is most likely alone).
pub const ALONE_FRACTION: f64 = 0.9;
/// How fast it recovers: this fraction of the rate it was refused at, per second at full use.
pub const RECOVERY_GAIN: f64 = 0.5;
/// Up to which fraction of the rate it was refused at it recovers fast.
pub const RECOVERY_FRACTION: f64 = 1.0;
/// A lane idle this long starts low again.
pub const IDLE_RESTART: Duration = Duration::from_secs(30);

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
    /// The rate of the last decrease, when it was near the ceiling (fast recovery up to
    /// `RECOVERY_FRACTION` of it).
    recover_to: Option<f64>,
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

    /// A request sent at `sent` was answered without a rate-limit refusal.
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

    /// A request sent at `sent` was refused by the rate limit at `now`: the new rate, if it was
    /// lowered (once per request sent after the previous decrease).
    pub fn on_rate_limited(&self, sent: Instant, now: Instant) -> Option<f64> {
        if !self.adaptive {
            return None;
        }
        let mut s = self.state();
        if s.last_decrease.is_some_and(|d| sent <= d) {
            return None;
        }
        let factor = if s.slow_start {
            SLOW_START_DECREASE
        } else {
            DECREASE
        };
        s.recover_to = (s.rate >= ALONE_FRACTION * self.ceiling).then_some(s.rate);
        s.rate = (s.rate * factor).max(MIN_RATE.min(self.ceiling));
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

    fn cfg(pacing: Pacing) -> SenderConfig {
        SenderConfig {
            max_requests_per_second: 40,
            pacing,
            ..SenderConfig::default()
        }
    }

    /// Slots taken back to back from `t0`, `n` of them.
    fn slots(p: &Pacer, t0: Instant, n: usize) -> Vec<Instant> {
        (0..n).map(|_| p.reserve(t0)).collect()
    }

    #[test]
    fn fixed_pacing_spaces_requests_at_the_ceiling_and_never_adapts() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Fixed), t0);
        assert_eq!(p.rate(), 40.0);
        let s = slots(&p, t0, 41);
        assert_eq!(s[0], t0, "an idle lane sends at once");
        let span = s[40].duration_since(s[0]).as_secs_f64();
        assert!((span - 1.0).abs() < 1e-6, "{span}");
        assert_eq!(p.on_rate_limited(t0, t0), None);
        p.on_success(t0);
        assert_eq!(p.rate(), 40.0);
        assert_eq!(p.pause_for(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn an_adaptive_lane_starts_low_and_ramps_up_in_slow_start() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
        assert_eq!(p.rate(), 4.0, "a tenth of the ceiling");
        // the first requests go at the start rate: 1/4 s apart
        let s = slots(&p, t0, 2);
        assert_eq!(s[1].duration_since(s[0]), Duration::from_millis(250));
        for _ in 0..6 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 13.0, "SLOW_START_GAIN more per accepted request");
        for _ in 0..100 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 40.0, "never above the ceiling");
    }

    #[test]
    fn the_reply_that_ends_slow_start_halves_the_rate_then_it_grows_additively() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
        for _ in 0..8 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 16.0);
        assert_eq!(p.on_rate_limited(t0, t0), Some(8.0));
        // replies to requests sent before that decrease count once
        assert_eq!(p.on_rate_limited(t0, t0 + Duration::from_millis(10)), None);
        assert_eq!(p.rate(), 8.0);
        // the next slot is spaced at the new rate from the decrease
        assert!(p.reserve(t0) >= t0 + Duration::from_millis(125));
        // congestion avoidance: one second of accepted requests at 8/s adds about INCREASE
        for _ in 0..8 {
            p.on_success(t0);
        }
        let grown = p.rate() - 8.0;
        assert!(
            grown > INCREASE * 0.79 && grown < INCREASE * 1.21,
            "{grown}"
        );
        // a request sent after the decrease, refused: DECREASE this time
        let t1 = t0 + Duration::from_secs(2);
        let r = p.on_rate_limited(t1, t1).unwrap();
        assert!((r - (8.0 + grown) * DECREASE).abs() < 1e-9, "{r}");
        // never below the floor
        for i in 0..100 {
            let t = t1 + Duration::from_millis(10 * (i + 1));
            p.on_rate_limited(t, t);
        }
        assert_eq!(p.rate(), MIN_RATE);
        // the pause is the reset, stretched by at most PAUSE_JITTER
        let d = p.pause_for(Duration::from_secs(2));
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_secs_f64(2.0 * (1.0 + PAUSE_JITTER))
        );
    }

    #[test]
    fn a_lane_refused_near_its_ceiling_is_cut_once_and_recovers_fast() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
        for _ in 0..100 {
            p.on_success(t0);
        }
        assert_eq!(p.rate(), 40.0, "slow start ends at the ceiling");
        // one refusal at the ceiling (a bunched second): DECREASE, not SLOW_START_DECREASE
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(p.on_rate_limited(t1, t1), Some(28.0));
        // back to RECOVERY_FRACTION of 40 within about a second at full use (RECOVERY_GAIN x 40 =
        // 20 requests/s per second), then slowly
        for _ in 0..30 {
            p.on_success(t1);
        }
        let r = p.rate();
        assert!(
            (40.0 * RECOVERY_FRACTION..40.0 * RECOVERY_FRACTION + 1.0).contains(&r),
            "{r}"
        );
        for _ in 0..40 {
            p.on_success(t1);
        }
        assert!(p.rate() - r < 0.2, "{} after {r}", p.rate());
        // a lane refused at a share well below its ceiling does not recover fast
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
        for _ in 0..8 {
            p.on_success(t0);
        }
        p.on_rate_limited(t0, t0);
        for _ in 0..8 {
            p.on_success(t0);
        }
        assert!(p.rate() < 8.0 + INCREASE * 1.21, "{}", p.rate());
    }

    #[test]
    fn the_increase_grows_while_no_rate_limit_reply_comes() {
        let t0 = Instant::now();
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
        assert_eq!(p.on_rate_limited(t0, t0), Some(2.0));
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
        let p = Pacer::new(&cfg(Pacing::Adaptive), t0);
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
