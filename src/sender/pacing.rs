//! Pacing: one pacer per lane spaces requests ([`super::pacer`], built in [`super::Sender::new`]);
//! a pause shared by every request of the lane holds them while the platform rate-limits or refuses
//! the app; and the retry delay of transient failures (exponential, capped, with jitter).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::SenderConfig;
use crate::feishu::{AppProblem, Reply};

/// A pause shared by every request of one endpoint (rate limit, blocked app).
#[derive(Default)]
pub(super) struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    /// Pauses until `until` (unless already paused longer); returns how much longer the pause now
    /// lasts (counted as time paused).
    pub(super) fn extend(&self, until: Instant) -> Duration {
        let mut g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let from = g.map_or(now, |u| u.max(now));
        if until > from {
            *g = Some(until);
            until - from
        } else {
            Duration::ZERO
        }
    }
    /// Whether the lane is paused now.
    pub(super) fn active(&self) -> bool {
        self.current().is_some()
    }
    fn current(&self) -> Option<Instant> {
        let g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        g.filter(|u| *u > Instant::now())
    }
    pub(super) async fn wait(&self, shutdown: &CancellationToken) {
        while let Some(until) = self.current() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The retry delay after `attempts` attempts: exponential from `retry_initial_secs`, capped at
/// `retry_max_secs`, with jitter.
pub(super) fn backoff(cfg: &SenderConfig, attempts: i64) -> Duration {
    let mut b = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(cfg.retry_initial_secs))
        .with_max_delay(Duration::from_secs(cfg.retry_max_secs))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    let n = attempts.clamp(1, 64) as usize;
    b.nth(n - 1)
        .unwrap_or(Duration::from_secs(cfg.retry_max_secs))
        .min(Duration::from_secs(cfg.retry_max_secs))
}

/// Marks the lane blocked by an application-level failure: one ERROR with the fix per distinct
/// problem, and the fix shown by `status` until the next reply that is not such a failure.
pub(super) fn block(sh: &Shared, problem: AppProblem, reply: &Reply) {
    let mut logged = sh.blocked_logged.lock().unwrap_or_else(|p| p.into_inner());
    if *logged != Some(problem) {
        tracing::error!(
            code = reply.code, msg = %reply.msg, log_id = %reply.log_id_text(),
            retry_in_secs = sh.cfg.app_error_pause_secs,
            "feishu: uploads stopped: {}; every record stays queued", problem.fix()
        );
        *logged = Some(problem);
    }
    sh.stats.with_state(|s| {
        s.blocked = Some(format!(
            "{} (code {}, log id {})",
            problem.fix(),
            reply.code.map(|c| c.to_string()).unwrap_or_default(),
            reply.log_id_text()
        ))
    });
}

/// Clears the blocked state after a reply that is not an application-level failure.
pub(super) fn unblock(sh: &Shared) {
    let mut logged = sh.blocked_logged.lock().unwrap_or_else(|p| p.into_inner());
    if logged.take().is_some() {
        tracing::info!("feishu: uploads work again");
        sh.stats.with_state(|s| s.blocked = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = SenderConfig {
            retry_initial_secs: 1,
            retry_max_secs: 300,
            ..SenderConfig::default()
        };
        for attempts in 1..40 {
            let d = backoff(&cfg, attempts);
            assert!(d <= Duration::from_secs(300), "attempt {attempts}: {d:?}");
            assert!(d >= Duration::from_secs(1), "attempt {attempts}: {d:?}");
        }
        assert!(backoff(&cfg, 30) >= Duration::from_secs(300));
    }
}
