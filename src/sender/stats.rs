//! The sender's figures: counters per outcome, retries per reason, the latency of the platform's
//! answers, the current delivery rate, the pacing (the rate allowed, the time paused), the last
//! error and the blocked state, and a progress signal others can await. Read by `status`, `/status`, `/metrics` and the systemd watchdog.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::feishu::token::is_token_error;
use crate::feishu::Reply;

/// Why records were put back for a retry (labels of the retry counters).
pub const RETRY_REASONS: [&str; 5] = [
    "no_row_affected",
    "server_error",
    "network",
    "token",
    "other",
];

/// The retry reason of a reply classified as [`crate::feishu::Verdict::Retry`] (an index into
/// [`RETRY_REASONS`]).
pub(super) fn retry_reason(reply: &Reply) -> usize {
    let msg = reply.msg.to_ascii_lowercase();
    match reply.code {
        None => 2,
        c if is_token_error(c) => 3,
        Some(_) if msg.contains("no row affected") => 0,
        Some(1225000 | 1226500) => 1,
        Some(_) if reply.http_status >= 500 => 1,
        Some(_) => 4,
    }
}

/// Upper bounds (ms) of the upstream latency histogram's buckets; a last bucket holds the rest.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

/// How long the platform took to answer write requests: a fixed-bucket histogram of atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// `counts[i]`: answers that took at most `LATENCY_BUCKETS_MS[i]` (not cumulative); the last
    /// entry counts the slower ones.
    counts: [AtomicU64; 11],
    sum_ms: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (Prometheus `le` semantics, the last is `+Inf`), and the sum in ms.
    pub fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut acc = 0;
        let v = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (v, self.sum_ms.load(Ordering::Relaxed))
    }
}

/// How long the current delivery rate is measured over (seconds): short, so that the time to drain
/// a backlog that just arrived is right within seconds, and long enough for a steady figure (about
/// 500 requests at full rate).
pub const RATE_WINDOW_SECS: i64 = 10;

/// Records delivered per second over the last [`RATE_WINDOW_SECS`] (or since the sender started,
/// when that is shorter): one bucket per second in which something was delivered.
#[derive(Debug)]
pub struct DeliveryRate {
    /// When measuring began (Unix ms): the sender's start.
    since_ms: i64,
    /// (Unix second, records delivered in it), oldest first.
    buckets: VecDeque<(i64, u64)>,
}

impl DeliveryRate {
    pub fn new(now_ms: i64) -> DeliveryRate {
        DeliveryRate {
            since_ms: now_ms,
            buckets: VecDeque::new(),
        }
    }

    /// Counts `n` records delivered at `now_ms`.
    pub fn record(&mut self, now_ms: i64, n: u64) {
        let sec = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((s, count)) if *s == sec => *count += n,
            _ => self.buckets.push_back((sec, n)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s < sec - RATE_WINDOW_SECS)
        {
            self.buckets.pop_front();
        }
    }

    /// Records per second at `now_ms` over the window; `None` when nothing was delivered in it.
    pub fn per_sec(&self, now_ms: i64) -> Option<f64> {
        let start = (now_ms - RATE_WINDOW_SECS * 1000).max(self.since_ms);
        let first_sec = start.div_euclid(1000);
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s >= first_sec)
            .map(|(_, n)| n)
            .sum();
        if n == 0 {
            return None;
        }
        // from the start of the first bucket counted (or of the sender, if later): a bucket counts
        // whole, so the span must cover all of it
        let from = (first_sec * 1000).max(self.since_ms);
        let span = ((now_ms - from) as f64 / 1000.0).max(1.0);
        Some(n as f64 / span)
    }
}

/// Counters and state of the sender, for `status`.
#[derive(Debug)]
pub struct SenderStats {
    pub requests: AtomicU64,
    /// Records delivered (count them with [`SenderStats::count_delivered`], which also feeds the
    /// delivery rate).
    pub delivered: AtomicU64,
    pub dead: AtomicU64,
    pub retries: AtomicU64,
    pub splits: AtomicU64,
    pub rate_limited: AtomicU64,
    pub app_blocked: AtomicU64,
    /// Records put back for a retry, per [`RETRY_REASONS`] entry.
    pub retries_by_reason: [AtomicU64; 5],
    /// Unix ms of the claim loop's last turn. It turns at least every [`super::IDLE_RECHECK`] while idle; it
    /// waits longer while uploads are paused (rate limit, blocked app) or every request slot is busy
    /// (`crate::service` allows for that).
    pub heartbeat: std::sync::atomic::AtomicI64,
    /// Upstream latency of write requests.
    pub latency: LatencyHistogram,
    /// The pacing's rate allowed now and its ceiling (requests/s, `f64` bits), whether it adapts.
    pacing_rate: AtomicU64,
    pacing_ceiling: AtomicU64,
    pacing_adaptive: AtomicBool,
    /// Time the lane spent paused (rate-limit replies, blocked app), in ms.
    paused_ms: AtomicU64,
    state: Mutex<SenderState>,
    rate: Mutex<DeliveryRate>,
    /// Bumped after every outcome recorded in the queue (and by ingest commits): lets tests and the
    /// demo await progress instead of sleeping.
    progress: tokio::sync::watch::Sender<u64>,
    /// Signalled when the claim loop first turns (a permit is kept until someone awaits it):
    /// `daemon::start` returns, and READY=1 is sent, only once the punch sender runs.
    pub started: tokio::sync::Notify,
}

impl Default for SenderStats {
    fn default() -> Self {
        SenderStats {
            requests: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            splits: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            app_blocked: AtomicU64::new(0),
            retries_by_reason: Default::default(),
            heartbeat: std::sync::atomic::AtomicI64::new(0),
            latency: LatencyHistogram::default(),
            pacing_rate: AtomicU64::new(0),
            pacing_ceiling: AtomicU64::new(0),
            pacing_adaptive: AtomicBool::new(false),
            paused_ms: AtomicU64::new(0),
            state: Mutex::new(SenderState::default()),
            rate: Mutex::new(DeliveryRate::new(crate::queue::now_ms())),
            progress: tokio::sync::watch::channel(0).0,
            started: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct SenderState {
    pub(super) blocked: Option<String>,
    pub(super) last_error: Option<LastError>,
    pub(super) last_success_at: Option<i64>,
    /// Requests in a row that got no answer within `feishu.request_timeout_secs`.
    pub(super) timeouts_in_a_row: u64,
    /// Unix seconds of the first of them.
    pub(super) timing_out_since: Option<i64>,
}

/// The last failure the platform (or the network) reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastError {
    pub at: i64,
    pub code: Option<i64>,
    pub message: String,
    pub log_id: Option<String>,
}

/// What `status` shows of the sender.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SenderSnapshot {
    /// `ok`, or `blocked` while an application-level failure stops every upload.
    pub state: String,
    /// The fix, while blocked.
    pub blocked_reason: Option<String>,
    pub requests: u64,
    pub delivered: u64,
    pub dead: u64,
    pub retries: u64,
    /// Retried records per reason (`no_row_affected`, `server_error`, `network`, `token`, `other`).
    #[serde(default)]
    pub retries_by_reason: std::collections::BTreeMap<String, u64>,
    pub splits: u64,
    pub rate_limited: u64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<LastError>,
    /// Requests in a row that got no answer within `feishu.request_timeout_secs` (0 once one is
    /// answered); [`crate::health::UPSTREAM_TIMEOUT_STREAK`] of them make a health condition.
    #[serde(default)]
    pub timeouts_in_a_row: u64,
    /// Unix seconds of the first request of that streak.
    #[serde(default)]
    pub timing_out_since: Option<i64>,
    /// Records delivered per second over the last [`RATE_WINDOW_SECS`] (since the start, if
    /// shorter), to one decimal; `None` when nothing was delivered in that time.
    #[serde(default)]
    pub delivery_rate_per_sec: Option<f64>,
    /// `adaptive` or `fixed` (`sender.pacing`); empty before the sender started.
    #[serde(default)]
    pub pacing: String,
    /// Requests per second the pacing allows now (to two decimals).
    #[serde(default)]
    pub pacing_rate_per_sec: f64,
    /// The ceiling, `sender.max_requests_per_second`.
    #[serde(default)]
    pub pacing_ceiling_per_sec: f64,
    /// Rate-limit replies as a share of requests since the start (0 to 1, four decimals).
    #[serde(default)]
    pub rate_limited_share: f64,
    /// Seconds the lane spent paused since the start (rate-limit replies, blocked app).
    #[serde(default)]
    pub paused_secs: f64,
}

impl SenderStats {
    /// Counts `n` records delivered (the counter and the delivery rate).
    pub fn count_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(crate::queue::now_ms(), n);
    }

    /// Records delivered per second over the last [`RATE_WINDOW_SECS`]; `None` when none was.
    pub fn delivery_rate(&self) -> Option<f64> {
        self.rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .per_sec(crate::queue::now_ms())
    }

    /// Publishes the pacer's rate (after every change).
    pub(super) fn set_pacing(&self, pacer: &super::pacer::Pacer) {
        self.pacing_rate
            .store(pacer.rate().to_bits(), Ordering::Relaxed);
        self.pacing_ceiling
            .store(pacer.ceiling().to_bits(), Ordering::Relaxed);
        self.pacing_adaptive
            .store(pacer.adaptive(), Ordering::Relaxed);
    }

    /// Counts time the lane was paused.
    pub(super) fn add_paused(&self, d: Duration) {
        self.paused_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Signals that the queue changed.
    pub fn bump(&self) {
        self.progress.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees every [`SenderStats::bump`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    pub(super) fn with_state<R>(&self, f: impl FnOnce(&mut SenderState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records whether a request got an answer in time (`timed_out`: none within
    /// `feishu.request_timeout_secs`).
    pub fn record_timing(&self, timed_out: bool) {
        self.with_state(|s| {
            if timed_out {
                s.timeouts_in_a_row += 1;
                s.timing_out_since
                    .get_or_insert_with(|| chrono::Utc::now().timestamp());
            } else {
                s.timeouts_in_a_row = 0;
                s.timing_out_since = None;
            }
        });
    }

    pub(super) fn record_error(&self, reply: &Reply) {
        self.with_state(|s| {
            s.last_error = Some(LastError {
                at: chrono::Utc::now().timestamp(),
                code: reply.code,
                message: reply.msg.clone(),
                log_id: reply.log_id.clone(),
            })
        });
    }

    pub fn snapshot(&self) -> SenderSnapshot {
        let st = self.with_state(|s| s.clone());
        SenderSnapshot {
            state: if st.blocked.is_some() {
                "blocked".into()
            } else {
                "ok".into()
            },
            blocked_reason: st.blocked,
            requests: self.requests.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            retries_by_reason: RETRY_REASONS
                .iter()
                .zip(&self.retries_by_reason)
                .map(|(r, n)| (r.to_string(), n.load(Ordering::Relaxed)))
                .collect(),
            splits: self.splits.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            last_success_at: st.last_success_at,
            last_error: st.last_error,
            timeouts_in_a_row: st.timeouts_in_a_row,
            timing_out_since: st.timing_out_since,
            delivery_rate_per_sec: self.delivery_rate().map(|r| (r * 10.0).round() / 10.0),
            pacing: match f64::from_bits(self.pacing_ceiling.load(Ordering::Relaxed)) {
                c if c <= 0.0 => String::new(),
                _ if self.pacing_adaptive.load(Ordering::Relaxed) => "adaptive".into(),
                _ => "fixed".into(),
            },
            pacing_rate_per_sec: round(
                f64::from_bits(self.pacing_rate.load(Ordering::Relaxed)),
                100.0,
            ),
            pacing_ceiling_per_sec: f64::from_bits(self.pacing_ceiling.load(Ordering::Relaxed)),
            rate_limited_share: {
                let requests = self.requests.load(Ordering::Relaxed);
                let limited = self.rate_limited.load(Ordering::Relaxed);
                round(limited as f64 / requests.max(1) as f64, 10_000.0)
            },
            paused_secs: self.paused_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_counted_by_reason() {
        let r = |status, code: Option<i64>, msg: &str| Reply {
            http_status: status,
            code,
            msg: msg.into(),
            ..Reply::default()
        };
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(400, Some(1220600), "no row affected"))],
            "no_row_affected"
        );
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(500, Some(1225000), "x"))],
            "server_error"
        );
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(502, Some(7), "x"))],
            "server_error"
        );
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(0, None, "timed out"))],
            "network"
        );
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(400, Some(99991663), "x"))],
            "token"
        );
        assert_eq!(
            RETRY_REASONS[retry_reason(&r(200, Some(12345), "x"))],
            "other"
        );
    }

    #[test]
    fn the_delivery_rate_is_measured_over_the_last_ten_seconds() {
        let t0 = 1_800_000_000_000;
        let mut r = DeliveryRate::new(t0);
        assert_eq!(r.per_sec(t0 + 5_000), None, "nothing delivered yet");
        // 2 s after the start: measured since the start, not over a window mostly empty
        r.record(t0 + 500, 2_500);
        r.record(t0 + 1_500, 2_500);
        assert_eq!(r.per_sec(t0 + 2_000), Some(2_500.0));
        // a minute of 2,500/s, then the window holds only its last 10 s
        for s in 2..60 {
            r.record(t0 + s * 1_000 + 500, 2_500);
        }
        let rate = r.per_sec(t0 + 60_000).unwrap();
        assert!((rate - 2_500.0).abs() < 100.0, "{rate}");
        // mid-second: the first bucket counted is whole, and so is the time it covers
        r.record(t0 + 60_500, 2_500);
        let rate = r.per_sec(t0 + 60_700).unwrap();
        assert!((rate - 2_500.0).abs() < 150.0, "{rate}");
        assert!(r.buckets.len() <= RATE_WINDOW_SECS as usize + 1);
        // delivery stops: the rate falls, then is unknown once the window is empty
        let rate = r.per_sec(t0 + 65_000).unwrap();
        assert!((rate - 1_500.0).abs() < 100.0, "{rate}");
        assert_eq!(r.per_sec(t0 + 75_000), None);
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_secs(60));
        let (c, sum) = h.cumulative();
        assert_eq!(c.len(), 11);
        assert_eq!(c[0], 1); // <= 25 ms
        assert_eq!(c[2], 2); // <= 100 ms
        assert_eq!(c[9], 2); // <= 30 s
        assert_eq!(c[10], 3); // +Inf
        assert_eq!(sum, 60_110);
    }
}
