//! The one reconnect loop of every source: a source hands [`Reconnect::run`] its [`Attempts`] (each
//! attempt dials and serves a connection, opens and reads a port, binds and accepts, or runs a
//! polling session), and the loop retries them, with exponential back-off with jitter (from [`MIN_BACKOFF`] up to
//! `reconnect_max_secs`, built on `backon`), until the source stops.
//!
//! Guarantees:
//! - A failure is recorded as the device's `last_error` and logged without flooding: the first one,
//!   then at most once a minute while they go on ([`Quiet`]), and once at INFO when the link is up
//!   again ([`Link::up`], which also clears the error).
//! - An attempt that delivered data ([`Link::progressed`]) starts the back-off again from its shortest
//!   delay, so a clock that drops its connection after each batch is not held back.
//! - The back-off never exceeds its cap (jitter included), and a stop (shutdown, or the ingest stage
//!   gone) ends the wait at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::device_stats::DeviceStats;

/// First reconnect / re-open delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Shortest interval between two repeated log lines of the same kind.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What a source tries again and again.
pub trait Attempts {
    /// One attempt: runs until the link ends, and says whether to try again.
    fn attempt(&mut self, link: &mut Link) -> impl std::future::Future<Output = Attempt> + Send;
}

/// What one attempt came to.
pub enum Attempt {
    /// The source stopped (shutdown, or the ingest stage is gone): no retry.
    Stop,
    /// The attempt ended: it is retried after the back-off.
    Retry(Failure),
}

/// Why an attempt ended: recorded as the device's last error and logged.
pub struct Failure {
    error: String,
    context: Context,
    serious: bool,
}

/// What the log line adds to the error.
enum Context {
    /// The number of the failed attempt.
    Attempt,
    /// The lines the link read before it ended.
    Lines(u64),
    /// Nothing: the error says it all.
    None,
}

impl Failure {
    /// An attempt that got no link (no connection, no port).
    pub fn new(error: impl ToString) -> Failure {
        Failure {
            error: error.to_string(),
            context: Context::Attempt,
            serious: false,
        }
    }

    /// A link that ended after reading `lines` lines.
    pub fn after_lines(error: impl ToString, lines: u64) -> Failure {
        Failure {
            context: Context::Lines(lines),
            ..Failure::new(error)
        }
    }

    /// A link that ended, with an error that says how far it got.
    pub fn ended(error: impl ToString) -> Failure {
        Failure {
            context: Context::None,
            ..Failure::new(error)
        }
    }

    /// Logged at ERROR rather than WARN (a setting to fix, such as an address that cannot be bound).
    pub fn serious(self) -> Failure {
        Failure {
            serious: true,
            ..self
        }
    }
}

/// What an attempt reports to the loop.
pub struct Link {
    label: String,
    stats: Arc<DeviceStats>,
    failures: Quiet,
    ever_up: bool,
    progressed: bool,
}

impl Link {
    /// The link is up (connected, port open, bound, polled): clears the device's error, and logs it
    /// at INFO the first time and after failures, at DEBUG otherwise.
    pub fn up(&mut self, what: &str) {
        match self.failures.recovered() {
            Some(n) => tracing::info!("{}: {what} again after {n} failures", self.label),
            None if !self.ever_up => tracing::info!("{}: {what}", self.label),
            None => tracing::debug!("{}: {what}", self.label),
        }
        self.ever_up = true;
        self.stats.clear_error();
    }

    /// The attempt delivered data: the next back-off starts from the shortest delay.
    pub fn progressed(&mut self) {
        self.progressed = true;
    }
}

/// A device's reconnect loop; see the module documentation.
pub struct Reconnect {
    link: Link,
    stop: CancellationToken,
    backoff: Backoff,
}

impl Reconnect {
    /// The loop of the device whose messages start with `label` (`device door-1 (10.0.0.5:5005)`),
    /// stopped by `stop`, backing off up to `reconnect_max_secs`.
    pub fn new(
        label: impl Into<String>,
        stats: Arc<DeviceStats>,
        stop: CancellationToken,
        reconnect_max_secs: u64,
    ) -> Reconnect {
        Reconnect {
            link: Link {
                label: label.into(),
                stats,
                failures: Quiet::default(),
                ever_up: false,
                progressed: false,
            },
            stop,
            backoff: Backoff::new(reconnect_max_secs),
        }
    }

    /// Runs `attempts` until one says [`Attempt::Stop`] or `stop` is cancelled, retrying with
    /// back-off.
    pub async fn run(mut self, attempts: &mut impl Attempts) {
        while !self.stop.is_cancelled() {
            self.link.progressed = false;
            let failure = match attempts.attempt(&mut self.link).await {
                Attempt::Stop => return,
                Attempt::Retry(f) => f,
            };
            if self.link.progressed {
                self.backoff.reset();
            }
            let link = &mut self.link;
            if link.failures.failed() {
                let context = match failure.context {
                    Context::Lines(n) => format!("after {n} lines; "),
                    Context::Attempt => format!("failed attempt {}; ", link.failures.failures()),
                    Context::None => String::new(),
                };
                let max = self.backoff.max().as_secs();
                let e = &failure.error;
                if failure.serious {
                    tracing::error!("{e} ({context}retrying with back-off up to {max} s; repeats are logged at most once a minute)");
                } else {
                    tracing::warn!("{e} ({context}retrying with back-off up to {max} s; repeats are logged at most once a minute)");
                }
            }
            link.stats.set_error(failure.error);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.backoff.next_delay()) => {}
            }
        }
    }
}

/// Rate limit for a repeating failure: log the first, then at most once a minute; say when it is over.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Failures since the last success.
    failures: u64,
    /// A failure of this run of failures was logged.
    logged: bool,
    last_logged: Option<Instant>,
}

impl Quiet {
    /// Counts a failure; true when it should be logged.
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            self.last_logged = Some(now);
            self.logged = true;
            true
        } else {
            false
        }
    }

    /// A success: the number of failures before it, when they were logged (so the recovery should be).
    pub fn recovered(&mut self) -> Option<u64> {
        let n = self.failures;
        let logged = self.logged;
        self.failures = 0;
        self.logged = false;
        logged.then_some(n)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Reconnect delays: exponential from [`MIN_BACKOFF`] with jitter, never above the cap.
pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Delays capped at `reconnect_max_secs` (at least 1 s).
    pub fn new(reconnect_max_secs: u64) -> Backoff {
        let max = Duration::from_secs(reconnect_max_secs.max(1)).max(MIN_BACKOFF);
        let builder = ExponentialBuilder::new()
            .with_min_delay(MIN_BACKOFF)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            current: builder.build(),
            builder,
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        // jitter may add up to 100%: the cap is a promise to the operator
        self.current.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts again from the shortest delay (after a connection that delivered data).
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_bounds() {
        let mut b = Backoff::new(2);
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= MIN_BACKOFF * 2);
        assert_eq!(b.max(), Duration::from_secs(2));
    }

    /// Fails twice, delivers and fails, then stops.
    struct Script {
        tries: u32,
    }

    impl Attempts for Script {
        async fn attempt(&mut self, link: &mut Link) -> Attempt {
            self.tries += 1;
            match self.tries {
                1 | 2 => Attempt::Retry(Failure::new(format!(
                    "device t (x): failure {}",
                    self.tries
                ))),
                3 => {
                    link.up("connected");
                    link.progressed();
                    Attempt::Retry(Failure::after_lines("device t (x): closed", 5))
                }
                _ => Attempt::Stop,
            }
        }
    }

    #[tokio::test]
    async fn attempts_are_retried_until_one_stops_and_the_last_error_is_kept() {
        let stats = DeviceStats::new();
        let stop = CancellationToken::new();
        let mut script = Script { tries: 0 };
        Reconnect::new("device t (x)", stats.clone(), stop.clone(), 1)
            .run(&mut script)
            .await;
        assert_eq!(script.tries, 4);
        assert_eq!(stats.last_error().as_deref(), Some("device t (x): closed"));

        // stopped: no attempt at all
        stop.cancel();
        let mut script = Script { tries: 0 };
        Reconnect::new("device t (x)", stats, stop, 60)
            .run(&mut script)
            .await;
        assert_eq!(script.tries, 0);
    }
}
