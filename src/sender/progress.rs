//! Upload progress in the journal: while a lane's backlog drains, one INFO line every
//! [`PROGRESS_EVERY`] with what was delivered, the rate, what is pending and about how long it will
//! take; one more line when the backlog is gone. Nothing while the lane is idle, and never one line
//! per record: an admin reading `journalctl -u clockbridge` sees a backfill's story without
//! `clockbridge status`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;

/// How often a draining lane says how far it got.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// What the last progress line saw.
#[derive(Debug, Default)]
pub(super) struct Progress {
    delivered: u64,
    /// The last line said records were pending (a drain is under way).
    draining: bool,
}

impl Progress {
    /// The line for a window of `secs` seconds in which the lane's delivered counter went to
    /// `delivered`, with `outstanding` records not yet delivered (pending or in flight). `None`
    /// when there is nothing to say (idle, or no change).
    pub(super) fn line(
        &mut self,
        kind: &str,
        delivered: u64,
        outstanding: u64,
        secs: f64,
    ) -> Option<String> {
        let sent = delivered.saturating_sub(self.delivered);
        self.delivered = delivered;
        let was_draining = self.draining;
        self.draining = outstanding > 0 && sent > 0;
        if self.draining {
            let rate = sent as f64 / secs.max(1.0);
            let eta = Duration::from_secs_f64(outstanding as f64 / rate.max(f64::MIN_POSITIVE));
            Some(format!(
                "sender {kind}: {sent} delivered in the last {secs:.0} s ({rate:.0}/s), {outstanding} to go: about {} at this rate",
                eta_text(eta)
            ))
        } else if was_draining && outstanding == 0 {
            Some(format!(
                "sender {kind}: backlog delivered ({sent} in the last {secs:.0} s); nothing pending"
            ))
        } else {
            None
        }
    }
}

/// The pacing part of a progress line (and of `status`'s sender line): the rate allowed, the share of rate-limit replies and the
/// time paused since the start.
pub fn pacing_text(s: &super::SenderSnapshot) -> String {
    format!(
        "pacing {}: {:.1} requests/s allowed (ceiling {:.0}), rate-limited {:.1}% of requests, paused {:.0} s in all",
        s.pacing,
        s.pacing_rate_per_sec,
        s.pacing_ceiling_per_sec,
        s.rate_limited_share * 100.0,
        s.paused_secs
    )
}

/// `d` as "45 s", "12 min", "3 h 20 min".
fn eta_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Logs the lane's progress every [`PROGRESS_EVERY`] until shutdown.
pub(super) async fn report(sh: &Shared) {
    let kind = sh.lane.kind();
    let mut p = Progress {
        delivered: sh.stats.delivered.load(Ordering::Relaxed),
        draining: false,
    };
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
            _ = sh.shutdown.cancelled() => return,
        }
        // the queue's counts are kept by triggers: reading them costs a few rows
        let Ok(counts) = sh.queue.counts().await else {
            continue; // the sender reports queue failures itself
        };
        let c = counts.by_kind.get(kind).copied().unwrap_or_default();
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let delivered = sh.stats.delivered.load(Ordering::Relaxed);
        if let Some(line) = p.line(kind, delivered, c.pending + c.in_flight, secs) {
            tracing::info!("{line}; {}", pacing_text(&sh.stats.snapshot()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_lane_says_its_rate_and_time_to_go_then_once_that_it_is_done() {
        let mut p = Progress::default();
        // idle: nothing
        assert_eq!(p.line("user_flow", 0, 0, 30.0), None);
        // a backfill drains: 75 000 in 30 s, 150 000 to go
        assert_eq!(
            p.line("user_flow", 75_000, 150_000, 30.0).as_deref(),
            Some("sender user_flow: 75000 delivered in the last 30 s (2500/s), 150000 to go: about 1 min at this rate")
        );
        let l = p.line("user_flow", 75_000 + 600, 10_000_000, 30.0).unwrap();
        assert!(l.ends_with("about 138 h 53 min at this rate"), "{l}");
        // the last records go: one line, then silence
        assert_eq!(
            p.line("user_flow", 75_700, 0, 30.0).as_deref(),
            Some("sender user_flow: backlog delivered (100 in the last 30 s); nothing pending")
        );
        assert_eq!(p.line("user_flow", 75_700, 0, 30.0), None);
        // records pending but none delivered (uploads blocked, the network down): no progress
        // line, the sender's own WARN/ERROR lines say why
        assert_eq!(p.line("user_flow", 75_700, 500, 30.0), None);
    }

    #[test]
    fn a_progress_line_says_the_pacing() {
        let s = crate::sender::SenderSnapshot {
            pacing: "adaptive".into(),
            pacing_rate_per_sec: 23.456,
            pacing_ceiling_per_sec: 49.0,
            rate_limited_share: 0.0123,
            paused_secs: 3.2,
            ..Default::default()
        };
        assert_eq!(
            pacing_text(&s),
            "pacing adaptive: 23.5 requests/s allowed (ceiling 49), rate-limited 1.2% of requests, paused 3 s in all"
        );
    }

    #[test]
    fn times_to_go_read_as_an_admin_reads_them() {
        assert_eq!(eta_text(Duration::from_secs(45)), "45 s");
        assert_eq!(eta_text(Duration::from_secs(61)), "2 min");
        assert_eq!(
            eta_text(Duration::from_secs(3 * 3600 + 20 * 60)),
            "3 h 20 min"
        );
    }
}
