//! The sender: moves due records from the queue to the platform in batches, as fast as the platform
//! allows and no faster, and records every outcome back in the queue.
//!
//! How it works:
//! - **Batching**: up to `sender.batch_size` (≤ 50) records per request. When fewer are due, it waits up
//!   to `sender.linger_ms` for more (woken by each ingest commit) before sending a partial batch. With a
//!   backlog it claims full batches straight away.
//! - **Pacing**: one rate limiter (GCRA, no burst) per endpoint spaces requests at
//!   `sender.max_requests_per_second` (≤ 50); every request, including the halves of a split batch,
//!   waits for it. Up to `sender.max_in_flight` requests run at once, so the rate is reached even when
//!   each takes hundreds of milliseconds.
//! - **Outcomes** ([`crate::feishu::classify`]): delivered rows are acknowledged; the rows a reply lists
//!   as failed become dead, the rest delivered; an invalid batch is split in halves until the bad records
//!   are alone (and dead) and the others delivered; an idempotency conflict on a single record means it is
//!   already there (delivered); transient failures return the rows to pending with exponential back-off
//!   and jitter, forever; a rate-limit reply pauses every request until `x-ogw-ratelimit-reset`; an
//!   application-level failure (credentials, scope, permission) pauses the sender for
//!   `sender.app_error_pause_secs`, keeps every row queued and logs one ERROR with the fix.
//! - **Lanes**: one sender per endpoint ([`Lane`]): punches (`user_flows/batch_create`), approval
//!   items (`user_approvals`, one item per call), archived report rows (`upload_report`, up to 50 rows
//!   of one rule, month and operator per call) and leave accrual updates (one PATCH per update). Each
//!   has its own rate limiter (the platform's 50 requests/s is per API), its own pauses, counters and
//!   back-off; report and accrual values of one target go out one at a time, oldest first
//!   ([`Queue::claim_latest`]).
//! - **Shutdown**: stops claiming, lets requests in flight finish within a grace period, and returns the
//!   rows of any request it had to abandon to pending. A crash instead leaves them in flight, and the
//!   queue re-sends them on the next start; the idempotent id makes that harmless.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SenderConfig;
use crate::feishu::lanes::{accruals, approvals, reports, user_flows};
use crate::feishu::{classify, AppProblem, FeishuClient, Reply, Verdict};
use crate::hr::accruals::QueuedAccrual;
use crate::hr::reports::QueuedRow;
use crate::queue::{
    now_ms, Claimed, ErrorInfo, Queue, QueueError, KIND_ARCHIVE_REPORT, KIND_LEAVE_ACCRUAL,
    KIND_USER_APPROVAL, KIND_USER_FLOW,
};

/// One endpoint and the queue kind it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Punches: `user_flows/batch_create`, up to `sender.batch_size` per call.
    UserFlow,
    /// Approval items: `user_approvals`, one item per call.
    UserApproval,
    /// Archived report rows: `archive_rule/upload_report`, up to 50 rows of one group per call.
    ArchiveReport,
    /// Leave accrual updates: `leave_accrual_record/:leave_id` PATCH, one per call.
    LeaveAccrual,
}

impl Lane {
    /// The HR lanes (the punch lane is started on its own).
    pub const HR: [Lane; 3] = [Lane::UserApproval, Lane::ArchiveReport, Lane::LeaveAccrual];

    pub fn kind(self) -> &'static str {
        match self {
            Lane::UserFlow => KIND_USER_FLOW,
            Lane::UserApproval => KIND_USER_APPROVAL,
            Lane::ArchiveReport => KIND_ARCHIVE_REPORT,
            Lane::LeaveAccrual => KIND_LEAVE_ACCRUAL,
        }
    }

    fn batch_limit(self, cfg: &SenderConfig) -> usize {
        match self {
            Lane::UserFlow => cfg.batch_size,
            Lane::ArchiveReport => crate::hr::reports::MAX_ROWS_PER_CALL,
            Lane::UserApproval | Lane::LeaveAccrual => 1,
        }
    }

    fn classify(self, reply: &Reply) -> Verdict {
        match self {
            Lane::UserFlow => classify(reply),
            Lane::UserApproval => approvals::classify_reply(reply),
            Lane::ArchiveReport => reports::classify_reply(reply),
            Lane::LeaveAccrual => accruals::classify_reply(reply),
        }
    }
}

/// Longest wait of an idle sender before it looks at the queue again (so its heartbeat is at most
/// this old while it runs, busy or idle).
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// Why records were put back for a retry (labels of the retry counters).
pub const RETRY_REASONS: [&str; 5] = [
    "no_row_affected",
    "server_error",
    "network",
    "token",
    "other",
];

/// The retry reason of a reply classified as [`Verdict::Retry`] (an index into [`RETRY_REASONS`]).
fn retry_reason(reply: &Reply) -> usize {
    let msg = reply.msg.to_ascii_lowercase();
    match reply.code {
        None => 2,
        Some(99991661 | 99991663 | 99991664 | 99991671) => 3,
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

/// Counters and state of the sender, for `status`.
#[derive(Debug)]
pub struct SenderStats {
    pub requests: AtomicU64,
    pub delivered: AtomicU64,
    pub dead: AtomicU64,
    pub retries: AtomicU64,
    pub splits: AtomicU64,
    pub rate_limited: AtomicU64,
    pub app_blocked: AtomicU64,
    /// Records put back for a retry, per [`RETRY_REASONS`] entry.
    pub retries_by_reason: [AtomicU64; 5],
    /// Unix ms of the claim loop's last turn. It turns at least every [`IDLE_RECHECK`] while idle; it
    /// waits longer while uploads are paused (rate limit, blocked app) or every request slot is busy
    /// (`crate::service` allows for that).
    pub heartbeat: std::sync::atomic::AtomicI64,
    /// Upstream latency of write requests.
    pub latency: LatencyHistogram,
    state: Mutex<SenderState>,
    /// Bumped after every outcome recorded in the queue (and by ingest commits): lets tests and the
    /// demo await progress instead of sleeping.
    progress: tokio::sync::watch::Sender<u64>,
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
            state: Mutex::new(SenderState::default()),
            progress: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SenderState {
    blocked: Option<String>,
    last_error: Option<LastError>,
    last_success_at: Option<i64>,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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
}

impl SenderStats {
    /// Signals that the queue changed.
    pub fn bump(&self) {
        self.progress.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees every [`SenderStats::bump`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut SenderState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record_error(&self, reply: &Reply) {
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
        }
    }
}

/// A pause shared by every request of one endpoint (rate limit, blocked app).
#[derive(Default)]
struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    fn extend(&self, until: Instant) {
        let mut g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if g.map(|u| u < until).unwrap_or(true) {
            *g = Some(until);
        }
    }
    fn current(&self) -> Option<Instant> {
        let g = self.until.lock().unwrap_or_else(|p| p.into_inner());
        g.filter(|u| *u > Instant::now())
    }
    async fn wait(&self, shutdown: &CancellationToken) {
        while let Some(until) = self.current() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Everything a batch task needs.
struct Shared {
    lane: Lane,
    /// Also bumped after every outcome (the daemon's main progress signal), for HR lanes.
    progress: Option<Arc<SenderStats>>,
    queue: Queue,
    client: Arc<FeishuClient>,
    cfg: SenderConfig,
    limiter: DefaultDirectRateLimiter,
    pause: Pause,
    stats: Arc<SenderStats>,
    shutdown: CancellationToken,
    blocked_logged: Mutex<Option<AppProblem>>,
    /// Wakes the claim loop (new records, or a retry scheduled by a batch task).
    wake: Arc<Notify>,
}

/// The sender of one lane (`user_flow` records with [`Sender::new`]).
pub struct Sender {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

impl Sender {
    pub fn new(
        queue: Queue,
        client: Arc<FeishuClient>,
        cfg: SenderConfig,
        wake: Arc<Notify>,
        stats: Arc<SenderStats>,
        shutdown: CancellationToken,
    ) -> Sender {
        Self::for_lane(
            Lane::UserFlow,
            queue,
            client,
            cfg,
            wake,
            stats,
            None,
            shutdown,
        )
    }

    /// A sender for `lane`, with its own rate limiter; `progress` is bumped after each outcome too.
    #[allow(clippy::too_many_arguments)]
    pub fn for_lane(
        lane: Lane,
        queue: Queue,
        client: Arc<FeishuClient>,
        cfg: SenderConfig,
        wake: Arc<Notify>,
        stats: Arc<SenderStats>,
        progress: Option<Arc<SenderStats>>,
        shutdown: CancellationToken,
    ) -> Sender {
        let rps = NonZeroU32::new(cfg.max_requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rps).allow_burst(NonZeroU32::MIN));
        Sender {
            shared: Arc::new(Shared {
                lane,
                progress,
                queue,
                client,
                cfg,
                limiter,
                pause: Pause::default(),
                stats,
                shutdown,
                blocked_logged: Mutex::new(None),
                wake: wake.clone(),
            }),
            wake,
        }
    }

    /// Runs until shutdown; then drains or returns in-flight work, within `grace`.
    pub async fn run(self, grace: Duration) {
        let sh = self.shared.clone();
        let permits = Arc::new(Semaphore::new(sh.cfg.max_in_flight));
        let mut tasks = JoinSet::new();
        let batch = sh.lane.batch_limit(&sh.cfg);
        let kind = sh.lane.kind();
        let linger = Duration::from_millis(sh.cfg.linger_ms);
        let mut linger_since: Option<Instant> = None;
        let mut backlog = true;
        let mut db_failures = 0u32;
        loop {
            sh.stats.heartbeat.store(now_ms(), Ordering::Relaxed);
            while let Some(res) = tasks.try_join_next() {
                if let Err(e) = res {
                    tracing::error!(error = %e, "sender: a batch task failed; its rows are re-sent after a restart");
                }
            }
            if sh.shutdown.is_cancelled() {
                break;
            }
            sh.pause.wait(&sh.shutdown).await;
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = sh.shutdown.cancelled() => break,
            };
            // Without a backlog, look before claiming: fill the batch for up to `linger`.
            if !backlog {
                let ready = match sh.queue.ready_count(kind, batch).await {
                    Ok(n) => n,
                    Err(e) => {
                        db_failure(&sh, &e, &mut db_failures).await;
                        continue;
                    }
                };
                if ready == 0 {
                    linger_since = None;
                    let wait = match sh.queue.next_due(kind).await {
                        Ok(Some(due)) => Duration::from_millis(
                            (due - now_ms()).clamp(1, IDLE_RECHECK.as_millis() as i64) as u64,
                        ),
                        // nothing pending: re-check now and then, for rows another process (e.g.
                        // `dlq retry`) made pending
                        Ok(None) => IDLE_RECHECK,
                        Err(e) => {
                            db_failure(&sh, &e, &mut db_failures).await;
                            continue;
                        }
                    };
                    drop(permit);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = sh.shutdown.cancelled() => break,
                    }
                    continue;
                }
                if ready < batch {
                    let since = *linger_since.get_or_insert_with(Instant::now);
                    let deadline = since + linger;
                    if Instant::now() < deadline {
                        drop(permit);
                        tokio::select! {
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep_until(deadline.into()) => {}
                            _ = sh.shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            let claimed = if crate::queue::is_ordered_kind(kind) {
                sh.queue.claim_latest(kind, batch).await
            } else {
                sh.queue.claim(kind, batch).await
            };
            let rows = match claimed {
                Ok(r) => r,
                Err(e) => {
                    db_failure(&sh, &e, &mut db_failures).await;
                    continue;
                }
            };
            db_failures = 0;
            linger_since = None;
            backlog = rows.len() == batch;
            if rows.is_empty() {
                // due rows that cannot go yet (an older value of the same target is in flight), or
                // a race: wait for an outcome or a little while instead of spinning
                drop(permit);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(linger.max(Duration::from_millis(20))) => {}
                    _ = sh.shutdown.cancelled() => break,
                }
                continue;
            }
            let sh2 = sh.clone();
            tasks.spawn(async move {
                deliver(&sh2, rows).await;
                drop(permit);
            });
        }
        // shutdown: let requests in flight finish, within the grace period
        let drained = tokio::time::timeout(grace, async {
            while let Some(res) = tasks.join_next().await {
                if let Err(e) = res {
                    tracing::error!(error = %e, "sender: a batch task failed during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        match sh.queue.requeue_in_flight_of(kind).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                "sender: returned unfinished rows to the queue; they are sent on the next start"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "sender: could not return in-flight rows to pending; the next start does it")
            }
        }
    }
}

async fn db_failure(sh: &Shared, e: &QueueError, failures: &mut u32) {
    *failures += 1;
    if *failures == 1 || failures.is_power_of_two() {
        tracing::error!(error = %e, "sender: cannot read the queue; retrying");
    }
    let wait = Duration::from_millis(200u64 << (*failures).min(7));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = sh.shutdown.cancelled() => {}
    }
}

/// The retry delay after `attempts` attempts: exponential from `retry_initial_secs`, capped at
/// `retry_max_secs`, with jitter.
fn backoff(cfg: &SenderConfig, attempts: i64) -> Duration {
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

fn error_info(reply: &Reply) -> ErrorInfo {
    ErrorInfo {
        code: reply.code,
        message: if reply.msg.is_empty() {
            format!("HTTP {}", reply.http_status)
        } else {
            reply.msg.clone()
        },
        log_id: reply.log_id.clone(),
    }
}

/// The reply with `msg` extended: the error records of a 1225001, or the rows a report reply listed.
fn with_detail(reply: &Reply, detail: &str) -> Reply {
    let mut r = reply.clone();
    let detail: String = detail.chars().take(2000).collect();
    r.msg = if r.msg.is_empty() {
        detail
    } else {
        format!("{}: {detail}", r.msg)
    };
    r
}

/// Sends one batch of the lane's kind (payloads were checked by [`decodable`]).
async fn send(sh: &Shared, batch: &[Claimed]) -> Reply {
    match sh.lane {
        Lane::UserFlow => {
            let payloads: Vec<&str> = batch.iter().map(|r| r.payload.as_str()).collect();
            user_flows::batch_create(&sh.client, &payloads).await
        }
        Lane::UserApproval => approvals::create(&sh.client, batch[0].payload.clone()).await,
        Lane::ArchiveReport => {
            let rows: Vec<QueuedRow> = batch
                .iter()
                .filter_map(|r| serde_json::from_str(&r.payload).ok())
                .collect();
            let body = serde_json::to_string(&reports::body(&rows)).unwrap_or_default();
            reports::upload(&sh.client, body).await
        }
        Lane::LeaveAccrual => {
            let q: QueuedAccrual =
                serde_json::from_str(&batch[0].payload).unwrap_or(QueuedAccrual {
                    leave_id: String::new(),
                    user_id_type: String::new(),
                    body: Default::default(),
                });
            let body = serde_json::to_string(&q.body).unwrap_or_default();
            accruals::patch(&sh.client, &q.leave_id, &q.user_id_type, body).await
        }
    }
}

/// Whether a stored payload can be sent by its lane (always, unless the file was edited by hand).
fn decodable(lane: Lane, payload: &str) -> bool {
    match lane {
        Lane::UserFlow | Lane::UserApproval => true,
        Lane::ArchiveReport => serde_json::from_str::<QueuedRow>(payload).is_ok(),
        Lane::LeaveAccrual => serde_json::from_str::<QueuedAccrual>(payload).is_ok(),
    }
}

/// The claimed rows as first requests: report rows split by rule, month and operator; rows whose
/// payload cannot be sent made dead.
async fn first_batches(sh: &Shared, rows: Vec<Claimed>) -> VecDeque<Vec<Claimed>> {
    if sh.lane == Lane::UserFlow {
        return VecDeque::from([rows]);
    }
    let (ok, bad): (Vec<Claimed>, Vec<Claimed>) = rows
        .into_iter()
        .partition(|r| decodable(sh.lane, &r.payload));
    if !bad.is_empty() {
        let reply = Reply {
            msg: "the stored payload cannot be read: it was changed outside clockbridge".into(),
            ..Reply::default()
        };
        dead(sh, &bad, "bad_payload", &reply).await;
    }
    if sh.lane != Lane::ArchiveReport {
        return VecDeque::from([ok]);
    }
    let mut groups: Vec<((String, String, String), Vec<Claimed>)> = Vec::new();
    for r in ok {
        let key = serde_json::from_str::<QueuedRow>(&r.payload)
            .map(|q| {
                let (a, b, c) = reports::group(&q);
                (a.to_string(), b.to_string(), c.to_string())
            })
            .unwrap_or_default();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups.into_iter().map(|(_, v)| v).collect()
}

/// Settles a report batch the platform applied except for the members and codes it listed.
async fn report_invalid(
    sh: &Shared,
    batch: Vec<Claimed>,
    members: &[String],
    codes: &[String],
    reply: &Reply,
) {
    let (mut bad_member, mut bad_code, mut good) = (Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        let q: Option<QueuedRow> = serde_json::from_str(&r.payload).ok();
        let member = q.as_ref().and_then(|q| q.row.member_id.clone());
        let row_codes: Vec<String> = q
            .iter()
            .flat_map(|q| q.row.field_datas.iter().flatten())
            .filter_map(|f| f.code.clone())
            .collect();
        if member.is_some_and(|m| members.contains(&m)) {
            bad_member.push(r);
        } else if row_codes.iter().any(|c| codes.contains(c)) {
            bad_code.push(r);
        } else {
            good.push(r);
        }
    }
    let m = with_detail(
        reply,
        &format!("invalid_member_id {members:?}: the platform does not know this member"),
    );
    dead(sh, &bad_member, "invalid_member_id", &m).await;
    let c = with_detail(
        reply,
        &format!("invalid_code {codes:?}: not a field of this archive rule; the row's other fields were sent"),
    );
    dead(sh, &bad_code, "invalid_code", &c).await;
    delivered(sh, &good).await;
}

/// Sends one claimed batch (splitting it when needed) and settles every row.
async fn deliver(sh: &Shared, rows: Vec<Claimed>) {
    let mut work: VecDeque<Vec<Claimed>> = first_batches(sh, rows).await;
    while let Some(batch) = work.pop_front() {
        if batch.is_empty() {
            continue;
        }
        sh.pause.wait(&sh.shutdown).await;
        if sh.shutdown.is_cancelled() {
            // not sent: back to pending now rather than at the next start
            let mut ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
            ids.extend(work.iter().flatten().map(|r| r.id));
            settle(sh, "requeue", || {
                sh.queue.mark_retry(ids.clone(), 0, None, true)
            })
            .await;
            return;
        }
        sh.limiter.until_ready().await;
        sh.stats.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let mut reply = send(sh, &batch).await;
        sh.stats.latency.observe(sent.elapsed());
        let verdict = sh.lane.classify(&reply);
        let has_data = reply
            .data
            .as_object()
            .map(|o| !o.is_empty())
            .unwrap_or(false)
            || reply.data.is_array();
        if sh.lane != Lane::UserFlow && reply.code != Some(0) && has_data {
            // e.g. 1225001's error records: kept with the dead letter
            reply = with_detail(&reply, &reply.data.to_string());
        }
        if !matches!(verdict, Verdict::AppBlocked(_)) {
            unblock(sh);
        }
        match verdict {
            Verdict::Delivered => delivered(sh, &batch).await,
            Verdict::PartialFailure { failed } => {
                let failed: HashSet<&str> = failed.iter().map(String::as_str).collect();
                let (bad, good): (Vec<_>, Vec<_>) = batch.iter().partition(|r| {
                    let uid = r.user_id.as_deref().unwrap_or("");
                    failed.contains(format!("{uid}-{uid}").as_str())
                });
                if bad.is_empty() && batch.len() > 1 {
                    // the list names no record of ours: narrow it down
                    tracing::warn!(msg = %reply.msg, log_id = %reply.log_id_text(), "feishu: per-record failure list matches no record of the batch; splitting it");
                    split(sh, batch, &mut work);
                    continue;
                }
                let bad: Vec<Claimed> = if bad.is_empty() {
                    batch.clone()
                } else {
                    bad.into_iter().cloned().collect()
                };
                let good: Vec<Claimed> = good.into_iter().cloned().collect();
                dead(sh, &bad, "rejected_record", &reply).await;
                delivered(sh, &good).await;
            }
            Verdict::ReportInvalid { members, codes } => {
                tracing::warn!(?members, ?codes, log_id = %reply.log_id_text(), "feishu: report upload applied except for the listed members and field codes");
                report_invalid(sh, batch, &members, &codes, &reply).await;
            }
            Verdict::AlreadyExists => {
                if batch.len() == 1 {
                    tracing::debug!(idem = %batch[0].idem, "feishu: record already there; counted as delivered");
                    delivered(sh, &batch).await;
                } else {
                    split(sh, batch, &mut work);
                }
            }
            Verdict::Invalid => {
                if batch.len() == 1 {
                    dead(sh, &batch, "rejected", &reply).await;
                } else {
                    tracing::info!(code = reply.code, msg = %reply.msg, log_id = %reply.log_id_text(), records = batch.len(), "feishu: batch refused as invalid; splitting it to find the bad records");
                    split(sh, batch, &mut work);
                }
            }
            Verdict::Retry => {
                sh.stats.record_error(&reply);
                sh.stats
                    .retries
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                sh.stats.retries_by_reason[retry_reason(&reply)]
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let attempts = batch.iter().map(|r| r.attempts).max().unwrap_or(1);
                let delay = backoff(&sh.cfg, attempts);
                tracing::warn!(code = reply.code, http = reply.http_status, msg = %reply.msg, log_id = %reply.log_id_text(), records = batch.len(), attempts, retry_in_ms = delay.as_millis() as u64, "feishu: upload failed; will retry");
                let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                let next = now_ms() + delay.as_millis() as i64;
                let info = error_info(&reply);
                settle(sh, "retry", || {
                    sh.queue
                        .mark_retry(ids.clone(), next, Some(info.clone()), false)
                })
                .await;
            }
            Verdict::RateLimited { wait } => {
                sh.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                sh.stats.record_error(&reply);
                tracing::warn!(wait_secs = wait.as_secs(), log_id = %reply.log_id_text(), "feishu: rate limited; pausing uploads until the window resets");
                sh.pause.extend(Instant::now() + wait);
                work.push_front(batch);
            }
            Verdict::AppBlocked(problem) => {
                sh.stats.app_blocked.fetch_add(1, Ordering::Relaxed);
                sh.stats.record_error(&reply);
                let pause = Duration::from_secs(sh.cfg.app_error_pause_secs);
                block(sh, problem, &reply);
                sh.pause.extend(Instant::now() + pause);
                let mut ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                ids.extend(work.drain(..).flatten().map(|r| r.id));
                let next = now_ms() + pause.as_millis() as i64;
                let info = error_info(&reply);
                settle(sh, "retry", || {
                    sh.queue
                        .mark_retry(ids.clone(), next, Some(info.clone()), true)
                })
                .await;
                return;
            }
        }
    }
}

fn split(sh: &Shared, mut batch: Vec<Claimed>, work: &mut VecDeque<Vec<Claimed>>) {
    sh.stats.splits.fetch_add(1, Ordering::Relaxed);
    let second = batch.split_off(batch.len() / 2);
    work.push_front(second);
    work.push_front(batch);
}

async fn delivered(sh: &Shared, rows: &[Claimed]) {
    if rows.is_empty() {
        return;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // the platform has accepted them: counted before the queue records it, so that whoever is woken
    // by the queue change sees the figures agree
    sh.stats
        .delivered
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    sh.stats
        .with_state(|s| s.last_success_at = Some(chrono::Utc::now().timestamp()));
    settle(sh, "delivered", || sh.queue.mark_delivered(ids.clone())).await;
    if sh.lane != Lane::UserFlow {
        tracing::debug!(
            kind = sh.lane.kind(),
            rows = rows.len(),
            "feishu: delivered"
        );
    }
}

async fn dead(sh: &Shared, rows: &[Claimed], reason: &str, reply: &Reply) {
    if rows.is_empty() {
        return;
    }
    sh.stats.record_error(reply);
    for r in rows {
        tracing::error!(
            kind = sh.lane.kind(), device = %r.device_id, user = r.user_id.as_deref().unwrap_or(""), idem = %r.idem,
            code = reply.code, msg = %reply.msg, log_id = %reply.log_id_text(),
            "feishu: record rejected for good; kept as a dead letter (see `clockbridge status`)"
        );
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let info = error_info(reply);
    let reason = reason.to_string();
    sh.stats
        .dead
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    settle(sh, "dead", || {
        sh.queue
            .mark_dead(ids.clone(), reason.clone(), info.clone())
    })
    .await;
}

/// Applies an outcome to the queue, retrying while the database refuses (e.g. disk full): rows must
/// never stay in flight because a write failed once. A row that was not in flight is logged and left.
async fn settle<F, Fut>(sh: &Shared, what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(()) => {
                sh.stats.bump();
                if let Some(p) = &sh.progress {
                    p.bump();
                }
                // a retry may now be the earliest due row: let the claim loop re-plan its wait
                sh.wake.notify_one();
                return;
            }
            Err(e @ QueueError::NotClaimed { .. }) => {
                tracing::error!(error = %e, outcome = what, "sender: outcome not recorded for rows that were no longer in flight");
                return;
            }
            Err(QueueError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, outcome = what, "sender: cannot record an outcome in the queue; retrying (the rows stay in flight and are re-sent after a restart if this never succeeds)");
                if sh.shutdown.is_cancelled() {
                    // stopping: the rows stay in flight and the next start re-sends them
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn block(sh: &Shared, problem: AppProblem, reply: &Reply) {
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

fn unblock(sh: &Shared) {
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
