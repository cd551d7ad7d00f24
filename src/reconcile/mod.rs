//! `clockbridge reconcile`: the proof HR asks for at month end, "is every punch from the clocks in
//! Feishu?", per device and per day, and the repair of what is missing.
//!
//! One run ([`run`]):
//! 1. reads the queue's punches of the range, every state ([`crate::queue::Queue::rows_in_range`]),
//!    the range being calendar days on each device's own wall clock ([`range`]);
//! 2. asks the platform for the valid flows of those users over the range (`user_flows/query`,
//!    [`fetch`]: 50 users a call, the least number of calls, paced within the query's own budget,
//!    one reconcile at a time per queue); the rows come from the queue's thread in batches and each
//!    call goes out as soon as 50 new users are known ([`fetch::UserChunks`]), so the queries run
//!    while the rest of the range is read;
//! 3. matches them by `idempotent_id`, then `external_id` (read from the payloads of the rows no
//!    idempotent key confirms, [`report::rows_needing_external_id`]) ([`report`]): delivered and confirmed,
//!    delivered but not visible, not yet delivered (pending, dead, unmapped), and flows the
//!    platform shows that clockbridge did not send, kept apart and never re-sent;
//! 4. asks the clocks that can be asked what they hold ([`clocks`]);
//! 5. with `--requeue`, puts "delivered but not visible" punches back to pending (safe: the same
//!    record with the same `idempotent_id`, which the platform deduplicates), waits while a running
//!    daemon re-sends them, and asks the platform again to count what the re-send changed.
//!
//! [`render`] writes the text, the JSON and the CSV for HR; [`schedule`] is the daemon's daily check.
//! Exit codes ([`Reconciliation::exit_code`]): 0 every punch confirmed and the clocks agree, 2 a
//! delivered punch is not visible or a clock holds records the queue lacks, 3 nothing is wrong but
//! some punches are not delivered yet, 1 the reconcile could not be made.

pub mod clocks;
pub mod fetch;
pub mod range;
pub mod render;
pub mod report;
pub mod schedule;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;

use crate::config::Config;
use crate::feishu::lanes::user_flows::KIND;
use crate::feishu::FeishuClient;
use crate::queue::{Queue, Status};
pub use clocks::ClockCheck;
pub use fetch::Cost;
pub use range::Range;
pub use report::{Day, Matched, Outcome};

/// Exit code: every punch confirmed, the clocks agree.
pub const EXIT_MATCHED: u8 = 0;
/// Exit code: the reconcile could not be made (configuration, queue, platform).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: delivered punches the platform does not show, or a clock holds records the queue
/// lacks.
pub const EXIT_MISMATCH: u8 = 2;
/// Exit code: nothing proven missing, but some punches are not delivered yet.
pub const EXIT_UNDELIVERED: u8 = 3;

/// Why a reconcile could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reconcile: {0}")]
    Platform(String),
    #[error("reconcile: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("reconcile: cannot take the query turn {path}: {reason}")]
    Turn { path: String, reason: String },
    #[error("reconcile: {0}")]
    Usage(String),
}

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct Options {
    pub from: NaiveDate,
    /// Included.
    pub to: NaiveDate,
    /// Only these devices (all when empty).
    pub devices: Vec<String>,
    /// Only these users: platform user ids or device user ids (all when empty).
    pub users: Vec<String>,
    /// Put "delivered but not visible" punches back to pending.
    pub requeue: bool,
    /// How long to wait for a running daemon to re-send them before asking again.
    pub wait: Duration,
    /// Ask the clocks.
    pub clocks: bool,
}

/// What `--requeue` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requeue {
    /// Punches put back to pending.
    pub requeued: u64,
    /// Of those, delivered again within the wait.
    pub delivered_again: u64,
    /// Of those, visible on the platform after the re-send.
    pub now_visible: u64,
    /// Still not visible after the re-send (or not re-sent yet).
    pub still_not_visible: u64,
    /// Whether a daemon was running to re-send them.
    pub daemon_running: bool,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The zones the days are counted in, per device.
    pub zones: Vec<(String, String)>,
    pub users_asked: u64,
    #[serde(flatten)]
    pub matched: Matched,
    pub clocks: Vec<ClockCheck>,
    pub cost: Cost,
    pub requeue: Option<Requeue>,
    /// The end of this run's turn at the query budget.
    #[serde(skip)]
    pub turn_end: TurnEnd,
    /// Seconds reading the range from the queue.
    pub read_secs: f64,
    /// Seconds matching.
    pub match_secs: f64,
    pub elapsed_secs: f64,
}

/// The end of a run's turn at the query budget, about a second after its last reply (when the
/// platform's one-second window holds none of its requests: see [`fetch`]). The turn passes on by
/// itself, so a run returns at once and the daemon goes on; a process about to exit waits for it
/// ([`TurnEnd::wait`]), since its exit would pass the turn on early.
#[derive(Debug, Clone, Default)]
pub struct TurnEnd(Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>);

impl TurnEnd {
    fn of(release: Option<tokio::task::JoinHandle<()>>) -> TurnEnd {
        TurnEnd(Arc::new(tokio::sync::Mutex::new(release)))
    }

    /// Waits until the turn has passed on.
    pub async fn wait(&self) {
        let release = self.0.lock().await.take();
        if let Some(release) = release {
            let _ = release.await;
        }
    }
}

impl Reconciliation {
    /// Whether every punch of the range is confirmed and the clocks agree.
    pub fn all_matched(&self) -> bool {
        self.exit_code() == EXIT_MATCHED
    }

    /// What the exit code says (see the module doc).
    pub fn exit_code(&self) -> u8 {
        let t = &self.matched.total;
        let clocks_missing = self.clocks.iter().any(|c| c.missing_from_queue > 0);
        if t.not_visible > 0 || clocks_missing {
            EXIT_MISMATCH
        } else if t.undelivered() > 0 || self.clocks.iter().any(|c| c.not_read_yet > 0) {
            EXIT_UNDELIVERED
        } else {
            EXIT_MATCHED
        }
    }

    /// Records the clocks hold that the queue does not (missing, or not read yet).
    pub fn missing_from_queue(&self) -> u64 {
        self.clocks
            .iter()
            .map(|c| c.missing_from_queue + c.not_read_yet)
            .sum()
    }
}

/// The zone of every configured device.
pub fn zones(cfg: &Config) -> HashMap<String, chrono_tz::Tz> {
    cfg.devices.iter().map(|d| (d.id.clone(), d.tz())).collect()
}

/// One reconcile, with `client` and `queue` (the daemon's own, or a CLI's opened beside it).
pub async fn run(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    opts: &Options,
) -> Result<Reconciliation, ReconcileError> {
    if opts.to < opts.from {
        return Err(ReconcileError::Usage(format!(
            "--to {} is before --from {}",
            opts.to, opts.from
        )));
    }
    let started = Instant::now();
    let range = Range::new(opts.from, opts.to, zones(cfg));
    let union = range.union();
    let selected = |device: &str, user: Option<&str>, subject: &str| {
        (opts.devices.is_empty() || opts.devices.iter().any(|d| d == device))
            && (opts.users.is_empty()
                || opts
                    .users
                    .iter()
                    .any(|u| Some(u.as_str()) == user || u == subject))
    };
    // the queue's rows are read on its thread, in batches, while the users they name are asked
    // about as soon as 50 are known: the queries overlap the read
    let read = Instant::now();
    let (row_tx, mut row_rx) =
        tokio::sync::mpsc::unbounded_channel::<Vec<crate::queue::RangeRow>>();
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::unbounded_channel();
    let asking = tokio::spawn(ask_streamed(
        cfg.queue.path.clone(),
        cfg.reconcile.max_requests_per_second,
        client.clone(),
        chunk_rx,
        union.from,
        union.to - 1,
    ));
    let mut chunks = fetch::UserChunks::default();
    // a user named on the command line is asked even without a punch in the queue
    for u in &opts.users {
        if let Some(c) = chunks.add(u) {
            let _ = chunk_tx.send(c);
        }
    }
    let mut rows = Vec::new();
    let consume = async {
        while let Some(batch) = row_rx.recv().await {
            for r in batch {
                if !selected(&r.device_id, r.user_id.as_deref(), &r.subject) {
                    continue;
                }
                if let Some(c) = r.user_id.as_deref().and_then(|u| chunks.add(u)) {
                    // a closed channel: the asking failed, its error comes below
                    let _ = chunk_tx.send(c);
                }
                rows.push(r);
            }
        }
    };
    let (read_result, ()) = tokio::join!(
        queue.rows_in_range_batched(KIND, union.from, union.to, READ_BATCH, row_tx),
        consume
    );
    if let Err(e) = read_result {
        asking.abort();
        return Err(e.into());
    }
    let (last, users_asked) = chunks.finish();
    if let Some(c) = last {
        let _ = chunk_tx.send(c);
    }
    drop(chunk_tx);
    let read_secs = read.elapsed().as_secs_f64();
    let (flows, cost, release) = asking
        .await
        .map_err(|e| ReconcileError::Platform(format!("the queries failed: {e}")))??;
    // the payloads' external ids, for the fallback match of the rows no idempotent key confirms
    let read_more = Instant::now();
    let wanted = report::rows_needing_external_id(&rows, &flows);
    if !wanted.is_empty() {
        let ext: HashMap<i64, String> = queue.external_ids(wanted).await?.into_iter().collect();
        for r in rows.iter_mut() {
            if let Some(e) = ext.get(&r.id) {
                r.external_id = Some(e.clone());
            }
        }
    }
    let read_secs = read_secs + read_more.elapsed().as_secs_f64();
    let matching = Instant::now();
    let matched = report::matching(&range, &rows, &flows);
    let match_secs = matching.elapsed().as_secs_f64();
    let clocks = if opts.clocks {
        clocks::check(cfg, queue, &range, &opts.devices, &rows).await
    } else {
        Vec::new()
    };
    let mut zones: Vec<(String, String)> = matched
        .devices
        .iter()
        .map(|d| (d.device.clone(), d.timezone.clone()))
        .collect();
    zones.sort();
    let mut rec = Reconciliation {
        from: opts.from,
        to: opts.to,
        zones,
        users_asked,
        matched,
        clocks,
        cost,
        requeue: None,
        turn_end: TurnEnd::of(release),
        read_secs,
        match_secs,
        elapsed_secs: 0.0,
    };
    if opts.requeue {
        requeue(cfg, queue, client, &range, opts, &mut rec).await?;
    }
    rec.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(rec)
}

/// Rows handed over by the queue's thread at a time while the range is read.
const READ_BATCH: usize = 4096;

/// [`ask`] for users that come in calls while the queue is read ([`fetch::flows_of`]): the turn is
/// taken when the first call comes (a range with no users takes none).
async fn ask_streamed(
    path: std::path::PathBuf,
    rps: u32,
    client: Arc<FeishuClient>,
    mut chunks: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    from: i64,
    to: i64,
) -> Result<
    (
        Vec<crate::feishu::query::SeenFlow>,
        Cost,
        Option<TurnRelease>,
    ),
    ReconcileError,
> {
    let mut cost = Cost::default();
    let Some(first) = chunks.recv().await else {
        return Ok((Vec::new(), cost, None));
    };
    let waited = Instant::now();
    let turn = tokio::task::spawn_blocking(move || fetch::Turn::take(&path))
        .await
        .map_err(|e| ReconcileError::Platform(format!("the query turn: {e}")))??;
    cost.waited_for_turn_secs += waited.elapsed().as_secs_f64();
    let budget = fetch::Budget::new(rps);
    let flows = fetch::flows_of(client, Some(first), chunks, from, to, &budget, &mut cost).await;
    let release = tokio::spawn(async move {
        budget.drained().await;
        drop(turn);
    });
    Ok((flows?, cost, Some(release)))
}

/// The task that ends a turn at the query budget ([`ask`]).
type TurnRelease = tokio::task::JoinHandle<()>;

/// Asks the platform in this queue's turn; the turn is held until the returned release ends.
async fn ask(
    cfg: &Config,
    client: Arc<FeishuClient>,
    users: Vec<String>,
    from: i64,
    to: i64,
    cost: &mut Cost,
) -> Result<(Vec<crate::feishu::query::SeenFlow>, Option<TurnRelease>), ReconcileError> {
    if users.is_empty() {
        return Ok((Vec::new(), None));
    }
    let path = cfg.queue.path.clone();
    let waited = Instant::now();
    let turn = tokio::task::spawn_blocking(move || fetch::Turn::take(&path))
        .await
        .map_err(|e| ReconcileError::Platform(format!("the query turn: {e}")))??;
    cost.waited_for_turn_secs += waited.elapsed().as_secs_f64();
    let budget = fetch::Budget::new(cfg.reconcile.max_requests_per_second);
    let flows = fetch::flows(client, users, from, to, &budget, cost).await;
    // the turn passes on once the window holds none of this turn's requests (about a second
    // after the last reply), meanwhile the caller matches
    let release = tokio::spawn(async move {
        budget.drained().await;
        drop(turn);
    });
    Ok((flows?, Some(release)))
}

/// `--requeue`: the not-visible punches back to pending, then (with a daemon running) the wait for
/// their re-send and a second look at the platform.
async fn requeue(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    range: &Range,
    opts: &Options,
    rec: &mut Reconciliation,
) -> Result<(), ReconcileError> {
    let targets: Vec<_> = rec
        .matched
        .unconfirmed
        .iter()
        .filter(|u| u.outcome == Outcome::NotVisible)
        .cloned()
        .collect();
    let ids: Vec<i64> = targets.iter().map(|u| u.row_id).collect();
    let mut r = Requeue {
        requeued: queue.requeue_delivered(ids.clone()).await? as u64,
        daemon_running: crate::queue::lock::holder(&cfg.queue.path).is_some(),
        ..Requeue::default()
    };
    if r.requeued > 0 && r.daemon_running && !opts.wait.is_zero() {
        let deadline = Instant::now() + opts.wait;
        loop {
            let states = queue.states_of(ids.clone()).await?;
            let delivered = states
                .iter()
                .filter(|(_, s)| *s == Status::Delivered)
                .count() as u64;
            r.delivered_again = delivered;
            let settled = states
                .iter()
                .all(|(_, s)| !matches!(s, Status::Pending | Status::InFlight));
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // the second look: only the users of the re-sent punches
        let users: BTreeSet<String> = targets.iter().filter_map(|u| u.user_id.clone()).collect();
        let union = range.union();
        rec.turn_end.wait().await;
        let (flows, release) = ask(
            cfg,
            client,
            users.into_iter().collect(),
            union.from,
            union.to - 1,
            &mut rec.cost,
        )
        .await?;
        rec.turn_end = TurnEnd::of(release);
        let seen: std::collections::HashSet<&str> =
            flows.iter().map(|f| f.idempotent_id.as_str()).collect();
        let visible: std::collections::HashSet<i64> = targets
            .iter()
            .filter(|u| seen.contains(u.idempotent_id.as_str()))
            .map(|u| u.row_id)
            .collect();
        r.now_visible = visible.len() as u64;
        // the report after the repair: what became visible is confirmed now
        rec.matched.confirm(range, &visible);
    }
    r.still_not_visible = r.requeued - r.now_visible;
    rec.requeue = Some(r);
    Ok(())
}

/// `clockbridge reconcile`: opens the queue beside a running daemon (never creating one), makes the
/// client, runs, prints the text (or `json`), writes the CSV for HR (`csv`), and returns the exit
/// code.
pub async fn command(
    cfg: &Config,
    opts: &Options,
    json: bool,
    csv: Option<&std::path::Path>,
) -> Result<u8, ReconcileError> {
    let path = cfg.queue.path.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open_existing_beside_daemon(&path))
        .await
        .map_err(|e| ReconcileError::Usage(format!("the queue could not be opened: {e}")))??;
    let client = FeishuClient::new(&cfg.feishu, fetch::IN_FLIGHT)
        .map_err(|e| ReconcileError::Platform(e.to_string()))?;
    let rec = run(cfg, &queue, Arc::new(client), opts).await?;
    let times = crate::device_time::DeviceTimes::of(cfg);
    if json {
        let text = serde_json::to_string_pretty(&rec)
            .map_err(|e| ReconcileError::Usage(format!("the report cannot be written: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render::text(&rec, &times));
    }
    if let Some(file) = csv {
        render::csv(&rec, &times, file).map_err(|e| {
            ReconcileError::Usage(format!("--csv {}: cannot write: {e}", file.display()))
        })?;
        if !json {
            println!(
                "wrote {} rows (one per punch not confirmed) to {}",
                rec.matched.unconfirmed.len(),
                file.display()
            );
        }
    }
    // the turn passes on before the process ends
    rec.turn_end.wait().await;
    Ok(rec.exit_code())
}
