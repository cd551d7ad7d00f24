//! The sender: moves due records from the queue to the platform in batches, as fast as the platform
//! allows and no faster, and records every outcome back in the queue. One [`Sender`] runs per lane
//! ([`crate::feishu::lanes::ALL`]); it is generic over [`Lane`] and names no endpoint.
//!
//! How it works:
//! - **Batching** (`claim`): up to the lane's limit of records per request ([`Lane::batch_limit`]:
//!   `sender.batch_size` (≤ 50) punches, 50 report rows, one approval item or accrual update). When
//!   fewer are due, it waits up to `sender.linger_ms` for more (woken by each commit of its kind)
//!   before sending a partial batch. With a backlog it claims full batches straight away. The lane
//!   groups the claimed rows into requests ([`Lane::plan`]: report rows by rule, month and operator).
//! - **Pacing** (`pacer`, `pacing`): one pacer per lane spaces requests (no burst) at most at
//!   `sender.max_requests_per_second` (≤ 50; the platform's limit is per API and app); with
//!   `sender.pacing = "adaptive"` (the default) below it, AIMD: it starts low, grows while requests
//!   are accepted and shrinks on a rate-limit reply, so gateways sharing one app share its limit
//!   (see [`pacer`]); `"fixed"` keeps the ceiling. Every request, including the halves of a split
//!   batch, waits for its slot, in the order it came (first come, first served). Up to
//!   `sender.max_in_flight` requests run at once, so the rate is reached even when each takes
//!   hundreds of milliseconds.
//! - **Live punches first**: each claim takes the live punches before the backlog, keeping at
//!   least half the batch for the backlog while it has due rows ([`crate::queue::live_cap`]); a
//!   live punch waits at most about `max_in_flight / max_requests_per_second` behind the batches
//!   already claimed (`claim`).
//! - **Outcomes** (`deliver`, classified by [`Lane::classify`]): delivered rows are acknowledged; the
//!   rows a reply lists as failed become dead, the rest delivered; an invalid batch is split in halves
//!   until the bad records are alone (and dead) and the others delivered; an idempotency conflict on a
//!   single record means it is already there (delivered); transient failures return the rows to
//!   pending with exponential back-off and jitter, forever; a rate-limit reply pauses every request of
//!   the lane until `x-ogw-ratelimit-reset`; an application-level failure (credentials, scope,
//!   permission) pauses the lane for `sender.app_error_pause_secs`, keeps every row queued and logs
//!   one ERROR with the fix.
//! - **Order**: a lane whose values overwrite each other ([`crate::queue::KindRules::ordered`]:
//!   report rows, accrual updates) claims with [`Queue::claim_latest`], so the values of one target
//!   go out one at a time, oldest first.
//! - **Shutdown**: stops claiming, lets requests in flight finish within a grace period, and returns the
//!   rows of any request it had to abandon to pending. A crash instead leaves them in flight, and the
//!   queue re-sends them on the next start; the idempotent id makes that harmless.
//! - **Figures** (`stats`): counters, retries by reason, latency, last error, blocked state.
//! - **Progress** (`progress`): while a backlog drains, an INFO line every 30 s (delivered, rate,
//!   what is left and about how long, the pacing's rate, the share of rate-limit replies and the
//!   time paused), and one when it is gone.

mod claim;
mod deliver;
pub mod pacer;
mod pacing;
mod progress;
mod stats;

pub use claim::IDLE_RECHECK;
pub use progress::{pacing_text, PROGRESS_EVERY};
pub use stats::{
    LastError, LatencyHistogram, SenderSnapshot, SenderStats, LATENCY_BUCKETS_MS, RETRY_REASONS,
};

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::SenderConfig;
use crate::feishu::lanes::Lane;
use crate::feishu::{AppProblem, FeishuClient};
use crate::queue::Queue;

/// What the senders of every lane share.
#[derive(Clone)]
pub struct SenderContext {
    pub queue: Queue,
    pub client: Arc<FeishuClient>,
    pub cfg: SenderConfig,
    /// Cancelled to stop every sender.
    pub shutdown: CancellationToken,
}

/// Everything a batch task needs.
struct Shared {
    lane: &'static dyn Lane,
    /// Also bumped after every outcome (the daemon's main progress signal), for the other lanes.
    progress: Option<Arc<SenderStats>>,
    queue: Queue,
    client: Arc<FeishuClient>,
    cfg: SenderConfig,
    pacer: pacer::Pacer,
    /// Requests take the pacer's slots in the order they queue for them (a fair lock around
    /// the pacer): batches leave in claim order, which bounds a live punch's wait (see `claim`).
    turn: tokio::sync::Mutex<()>,
    pause: pacing::Pause,
    stats: Arc<SenderStats>,
    shutdown: CancellationToken,
    blocked_logged: Mutex<Option<AppProblem>>,
    /// Wakes the claim loop (new records, or a retry scheduled by a batch task).
    wake: Arc<Notify>,
}

/// The sender of one lane.
pub struct Sender {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

impl Sender {
    /// The sender of `lane`, with its own rate limiter and pause. `wake` wakes its claim loop (after
    /// records of its kind were queued); `stats` are its figures; `progress`, when given, is bumped
    /// after each outcome too.
    pub fn new(
        lane: &'static dyn Lane,
        ctx: SenderContext,
        wake: Arc<Notify>,
        stats: Arc<SenderStats>,
        progress: Option<Arc<SenderStats>>,
    ) -> Sender {
        let cfg = ctx.cfg;
        let pacer = pacer::Pacer::new(&cfg, Instant::now());
        stats.set_pacing(&pacer);
        Sender {
            shared: Arc::new(Shared {
                lane,
                progress,
                queue: ctx.queue,
                client: ctx.client,
                cfg,
                pacer,
                turn: tokio::sync::Mutex::new(()),
                pause: pacing::Pause::default(),
                stats,
                shutdown: ctx.shutdown,
                blocked_logged: Mutex::new(None),
                wake: wake.clone(),
            }),
            wake,
        }
    }
}
