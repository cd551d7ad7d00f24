//! The running daemon: wires sources → ingest → queue → sender, and the housekeeping around them
//! (mapping reloads, pruning, status snapshots), and stops them in the order that loses nothing.
//!
//! Start order: take the queue's lock (one daemon per queue: [`crate::queue::lock`]), open the queue
//! (re-queueing rows that were in flight at a crash), load the mapping and
//! release unmapped punches it now covers, start the ingest writer, the sender, then the sources.
//! Every lane ([`crate::feishu::lanes::ALL`]: one per platform endpoint) gets its own sender; the
//! punch lane's is fed by the ingest writer, the others by `submit` and, when `[inbox]` names
//! directories, the inbox watcher ([`crate::inbox`]). The health model ([`crate::health::Monitor`])
//! watches them all; `/healthz`, the systemd supervisor ([`crate::service`]) and the status snapshot
//! ([`crate::snapshot`]) read its verdict.
//! Stop order: sources first (no new punches), then the ingest writer drains and commits what the sources
//! handed over (giving up after [`crate::ingest::STOP_COMMIT_BUDGET`] if the queue refuses, and saying
//! per device what it could not keep), then the sender finishes or returns its in-flight requests within
//! the grace period.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::feishu::lanes::{self, PUNCHES};
use crate::feishu::FeishuClient;
use crate::health::{Limits, Monitor, Parts, Verdict};
use crate::inbox::InboxStats;
use crate::ingest::{run_writer, DeviceInfo, PunchSink, Writer};
use crate::mapping::{Mapping, MappingError, MappingHandle};
use crate::queue::store::DeviceStore;
use crate::queue::{Queue, QueueError};
use crate::sender::{Sender, SenderContext, SenderStats};
use crate::sources::DeviceStats;

use crate::snapshot::SnapshotWriter;
pub use crate::snapshot::{RuntimeSnapshot, RUNTIME_KEY};

/// How long the status snapshot's look at the health waits for the queue's database thread.
const SNAPSHOT_PROBE_WAIT: Duration = Duration::from_secs(2);

/// Capacity of the channel between the sources and the ingest writer.
pub const INGEST_CHANNEL: usize = 16_384;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Another daemon runs on the queue (or its lock file cannot be used).
    #[error(transparent)]
    Lock(#[from] crate::queue::lock::LockError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("feishu: {0}")]
    Feishu(#[from] crate::feishu::FeishuError),
    /// The `[http]` endpoint could not listen.
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
    /// The `[adms]` listener could not listen.
    #[error(transparent)]
    Adms(#[from] crate::sources::adms::listener::BindError),
}

/// Tunables that are not configuration (tests shorten them).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often the status snapshot is written.
    pub snapshot_interval: Duration,
    /// How long in-flight requests may take to finish on stop.
    pub grace: Duration,
    /// How often delivered rows are pruned.
    pub prune_interval: Duration,
}

impl RunOptions {
    pub fn for_config(cfg: &Config) -> RunOptions {
        RunOptions {
            snapshot_interval: Duration::from_secs(2),
            grace: cfg.feishu.request_timeout() + Duration::from_secs(1),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// A running daemon.
pub struct Running {
    pub queue: Queue,
    pub devices: Arc<HashMap<String, DeviceInfo>>,
    pub sender_stats: Arc<SenderStats>,
    pub client: Arc<FeishuClient>,
    pub mapping: MappingHandle,
    /// Counters of every lane's sender but the punch lane's ([`Running::sender_stats`]), by queue
    /// kind.
    pub lane_stats: BTreeMap<&'static str, Arc<SenderStats>>,
    /// Wakes each lane's sender (after records of its kind were queued), by queue kind.
    pub lane_wakes: HashMap<&'static str, Arc<Notify>>,
    pub inbox_stats: InboxStats,
    /// The health model: `/healthz`, the watchdog, `STATUS=` and the snapshot read its verdict.
    pub health: Arc<Monitor>,
    /// The last scheduled reconcile (`[reconcile] schedule`): in `status` and `/metrics`.
    pub reconcile: crate::reconcile::schedule::Shared,
    reload: Arc<Notify>,
    sources_stop: CancellationToken,
    writer_stop: CancellationToken,
    sender_stop: CancellationToken,
    housekeeping_stop: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    senders: Vec<JoinHandle<()>>,
    housekeeping: Vec<JoinHandle<()>>,
    started_at: i64,
    sink: Option<PunchSink>,
    http: Option<crate::http::HttpServer>,
    /// The `[adms]` listener, when an enabled device is of kind `adms`.
    adms: Option<crate::sources::adms::AdmsServer>,
    /// Where the status snapshots go (the queue's table and the status file).
    snapshots: SnapshotWriter,
    /// One daemon per queue: released when the daemon is dropped, after its last snapshot.
    _lock: crate::queue::lock::DaemonLock,
}

impl Running {
    /// Asks for a mapping reload (what SIGHUP does).
    pub fn reload_mapping(&self) {
        self.reload.notify_one();
    }

    /// The address the `[http]` endpoint is bound to (`None` when `http.listen` is not set).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr())
    }

    /// The address the `[adms]` listener is bound to (`None` without an enabled `adms` device).
    pub fn adms_addr(&self) -> Option<std::net::SocketAddr> {
        self.adms.as_ref().map(|a| a.local_addr())
    }

    /// A sink into the ingest stage (for built-in simulated clocks and tests).
    pub fn sink(&self) -> Option<PunchSink> {
        self.sink.clone()
    }

    /// The health model (for the systemd supervisor).
    pub fn health(&self) -> Arc<Monitor> {
        self.health.clone()
    }

    /// The status snapshot now, with the health model's latest verdict.
    pub fn snapshot(&self) -> RuntimeSnapshot {
        snapshot(
            &self.devices,
            &self.sender_stats,
            self.started_at,
            &self.mapping,
            &self.lane_stats,
            &self.inbox_stats,
            self.health.last(),
        )
        .with_reconcile(&self.reconcile)
    }

    /// Wakes the sender of queue kind `kind` (after records were queued by this process).
    pub fn wake_kind(&self, kind: &str) {
        if let Some(w) = self.lane_wakes.get(kind) {
            w.notify_one();
        }
    }

    /// Waits until the queue counts satisfy `pred`, re-checking after every commit and outcome.
    /// Fails after `timeout` with the last counts.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&crate::queue::Counts) -> bool,
    ) -> Result<crate::queue::Counts, String> {
        let mut rx = self.sender_stats.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let counts = self.queue.counts().await.map_err(|e| e.to_string())?;
            if pred(&counts) {
                return Ok(counts);
            }
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err("sender stopped".into()); } }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("condition not met within {timeout:?}: {counts:?}"));
                }
            }
        }
    }

    /// Stops everything in the order that loses nothing (or, when the queue refuses writes, says
    /// exactly what it could not keep), and writes a last snapshot.
    pub async fn stop(mut self) {
        // `/healthz` answers 503 "stopping" while the rest shuts down
        self.health.set_stopping();
        self.sources_stop.cancel();
        // pushes in progress get their answer (503 from now on for new ones) before the writer stops
        if let Some(adms) = self.adms.take() {
            adms.stop().await;
        }
        for s in self.sources.drain(..) {
            let _ = s.await;
        }
        let storage = self.sink.take().map(|s| s.storage().clone());
        // the writer commits every punch already handed over (or gives up on them after
        // STOP_COMMIT_BUDGET if the queue refuses), then ends
        self.writer_stop.cancel();
        let _ = (&mut self.writer).await;
        let (lost, held_by_clocks) = storage.map(|s| s.report(&self.devices)).unwrap_or_default();
        self.sender_stop.cancel();
        for s in self.senders.drain(..) {
            let _ = s.await;
        }
        self.housekeeping_stop.cancel();
        for h in self.housekeeping.drain(..) {
            let _ = h.await;
        }
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        let snap = self.snapshot();
        self.snapshots
            .write(&RuntimeSnapshot { pid: 0, ..snap })
            .await;
        if lost + held_by_clocks == 0 {
            tracing::info!("clockbridge stopped");
        } else {
            tracing::error!(
                lost,
                held_by_clocks,
                "clockbridge stopped with {} punches not committed: {lost} lost, {held_by_clocks} still held by their clocks (see the lines above for each device)",
                lost + held_by_clocks
            );
        }
    }
}

fn snapshot(
    devices: &HashMap<String, DeviceInfo>,
    sender: &SenderStats,
    started_at: i64,
    mapping: &MappingHandle,
    lanes: &BTreeMap<&'static str, Arc<SenderStats>>,
    inbox: &InboxStats,
    verdict: Verdict,
) -> RuntimeSnapshot {
    RuntimeSnapshot {
        // filled in by the caller (`RuntimeSnapshot::with_reconcile`)
        reconcile: None,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        devices: devices
            .iter()
            .map(|(id, d)| (id.clone(), d.stats.snapshot()))
            .collect(),
        sender: sender.snapshot(),
        mapping_rows: match &*mapping.current() {
            Mapping::Passthrough => None,
            Mapping::Table(t) => Some(t.len()),
        },
        senders: lanes
            .iter()
            .map(|(k, s)| (k.to_string(), s.snapshot()))
            .collect(),
        inbox: inbox.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        conditions: verdict.conditions,
    }
}

/// Starts the daemon for `cfg`.
pub async fn start(cfg: Config, opts: RunOptions) -> Result<Running, DaemonError> {
    // before anything else: a second daemon on this queue stops here, having touched nothing
    let lock = crate::queue::lock::DaemonLock::acquire(&cfg.queue.path)?;
    // first, so a taken port stops the start before anything runs
    let http_listener = match cfg.http.listen {
        Some(address) => Some(crate::http::bind(address).await?),
        None => None,
    };
    let adms_listener = if cfg.devices.iter().any(|d| d.enabled && d.kind() == "adms") {
        Some(crate::sources::adms::listener::bind(cfg.adms.listen).await?)
    } else {
        None
    };
    let path = cfg.queue.path.clone();
    let (queue, report) = tokio::task::spawn_blocking(move || Queue::open(&path))
        .await
        .map_err(|e| QueueError::Open {
            path: cfg.queue.path.display().to_string(),
            reason: e.to_string(),
        })??;
    // the status file beside the queue, once the queue is known to be one
    let snapshots = SnapshotWriter::new(queue.clone());
    if report.requeued_in_flight > 0 {
        tracing::info!(
            rows = report.requeued_in_flight,
            "queue: rows in flight when the previous run stopped are pending again and will be re-sent"
        );
    }
    let mapping = MappingHandle::new(Mapping::load(&cfg.mapping)?, cfg.mapping.clone());
    let released = release_unmapped(&queue, &mapping).await?;
    if released > 0 {
        tracing::info!(
            punches = released,
            "mapping: unmapped punches now mapped and queued for sending"
        );
    }
    let client = Arc::new(FeishuClient::new(&cfg.feishu, cfg.sender.max_in_flight)?);
    let devices: Arc<HashMap<String, DeviceInfo>> = Arc::new(
        cfg.devices
            .iter()
            .filter(|d| d.enabled)
            .map(|d| {
                (
                    d.id.clone(),
                    DeviceInfo {
                        kind: d.kind().to_string(),
                        tz: d.tz(),
                        location: d.location().to_string(),
                        stats: DeviceStats::new(),
                    },
                )
            })
            .collect(),
    );
    let wake = Arc::new(Notify::new());
    let sender_stats = Arc::new(SenderStats::default());
    let (sink, rx) = PunchSink::channel(INGEST_CHANNEL);
    let writer_stop = CancellationToken::new();
    let writer = {
        let (wake, stats) = (wake.clone(), sender_stats.clone());
        let w = Writer {
            queue: queue.clone(),
            devices: devices.clone(),
            mapping: mapping.clone(),
            max_future_secs: cfg.queue.max_future_secs,
            record: lanes::user_flows::record,
            storage: sink.storage().clone(),
        };
        tokio::spawn(run_writer(rx, w, writer_stop.clone(), move || {
            wake.notify_one();
            stats.bump();
        }))
    };
    let sender_stop = CancellationToken::new();
    let ctx = SenderContext {
        queue: queue.clone(),
        client: client.clone(),
        cfg: cfg.sender.clone(),
        shutdown: sender_stop.clone(),
    };
    let mut lane_stats = BTreeMap::new();
    let mut lane_wakes = HashMap::new();
    let mut senders = Vec::new();
    let mut all_senders = Vec::new();
    for &lane in lanes::ALL {
        // the punch lane shares the daemon's main figures and wake-up with the ingest writer; every
        // other lane has its own and bumps the main progress signal too
        let (stats, wake, progress) = if lane.kind() == PUNCHES.kind() {
            (sender_stats.clone(), wake.clone(), None)
        } else {
            let stats = Arc::new(SenderStats::default());
            lane_stats.insert(lane.kind(), stats.clone());
            (stats, Arc::new(Notify::new()), Some(sender_stats.clone()))
        };
        lane_wakes.insert(lane.kind(), wake.clone());
        all_senders.push((lane.kind(), stats.clone()));
        senders.push(tokio::spawn(
            Sender::new(lane, ctx.clone(), wake, stats, progress).run(opts.grace),
        ));
    }
    let sources_stop = CancellationToken::new();
    let adms_hub = adms_listener.as_ref().map(|_| {
        let sns = cfg
            .devices
            .iter()
            .filter(|d| d.enabled)
            .filter_map(|d| d.spec_as::<crate::sources::adms::AdmsSpec>())
            .map(|s| s.sn().to_string());
        crate::sources::adms::Hub::new(cfg.adms.clone(), sns)
    });
    let mut sources = Vec::new();
    for (d, info) in cfg
        .devices
        .iter()
        .filter_map(|d| devices.get(&d.id).map(|info| (d, info)))
    {
        let store = DeviceStore::new(queue.clone(), &d.id);
        let ctx = d.context(
            sink.clone(),
            info.stats.clone(),
            sources_stop.clone(),
            store,
        );
        let task = match (&adms_hub, d.spec_as::<crate::sources::adms::AdmsSpec>()) {
            (Some(hub), Some(spec)) => {
                // registered before the listener accepts (below): a pushing terminal's first
                // request after a restart is answered, never told "starting"
                let term = hub.register(spec.clone(), &ctx).await;
                tokio::spawn(hub.clone().serve(term, ctx))
            }
            _ => tokio::spawn(d.start(ctx)),
        };
        sources.push(task);
    }
    let adms = adms_listener
        .zip(adms_hub)
        .map(|(l, hub)| crate::sources::adms::AdmsServer::start(l, hub));

    let housekeeping_stop = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    let started_at = chrono::Utc::now().timestamp();
    let mut housekeeping = Vec::new();
    let inbox_stats = InboxStats::default();
    // the punch lane's sender first
    all_senders.sort_by_key(|(kind, _)| *kind != PUNCHES.kind());
    let reconcile = crate::reconcile::schedule::Shared::default();
    if let Some(at) = cfg.reconcile.daily_at() {
        housekeeping.push(tokio::spawn(crate::reconcile::schedule::run(
            Arc::new(cfg.clone()),
            queue.clone(),
            client.clone(),
            at,
            reconcile.clone(),
            housekeeping_stop.clone(),
        )));
    }
    let health = Monitor::new(Parts {
        queue: queue.clone(),
        devices: devices.clone(),
        sender: sender_stats.clone(),
        senders: all_senders,
        storage: sink.storage().clone(),
        inbox: inbox_stats.clone(),
        limits: Limits::for_config(&cfg),
        request_timeout_secs: cfg.feishu.request_timeout_secs,
        reconcile: reconcile.clone(),
    });
    if !cfg.inbox.dirs().is_empty() {
        crate::inbox::prepare(&cfg.inbox, &inbox_stats);
        housekeeping.push(tokio::spawn(crate::inbox::run(
            cfg.inbox.clone(),
            queue.clone(),
            lane_wakes.clone(),
            inbox_stats.clone(),
            sender_stats.clone(),
            housekeeping_stop.clone(),
        )));
    }
    housekeeping.push(tokio::spawn(reload_loop(
        queue.clone(),
        mapping.clone(),
        reload.clone(),
        wake.clone(),
        sender_stats.clone(),
        Duration::from_secs(cfg.mapping.reload_interval_secs),
        housekeeping_stop.clone(),
    )));
    if cfg.queue.retention_days > 0 {
        housekeeping.push(tokio::spawn(prune_loop(
            queue.clone(),
            cfg.queue.retention_days,
            opts.prune_interval,
            housekeeping_stop.clone(),
        )));
    }
    {
        let (snapshots, devices, stats, mapping, stop) = (
            snapshots.clone(),
            devices.clone(),
            sender_stats.clone(),
            mapping.clone(),
            housekeeping_stop.clone(),
        );
        let (lanes, inbox, health) = (lane_stats.clone(), inbox_stats.clone(), health.clone());
        let last = reconcile.clone();
        let every = opts.snapshot_interval;
        housekeeping.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let verdict = health.assess(SNAPSHOT_PROBE_WAIT).await;
                let snap = snapshot(
                    &devices, &stats, started_at, &mapping, &lanes, &inbox, verdict,
                )
                .with_reconcile(&last);
                snapshots.write(&snap).await;
            }
        }));
    }
    let http = http_listener.map(|listener| {
        let state = crate::http::State::new(Arc::new(cfg.clone()), health.clone(), started_at);
        crate::http::HttpServer::start(listener, state)
    });
    // started means the punch sender runs: its claim loop has turned once (a spawned task may not
    // have been polled yet; the health model would call the daemon "starting")
    if tokio::time::timeout(Duration::from_secs(5), sender_stats.started.notified())
        .await
        .is_err()
    {
        tracing::warn!("sender: its loop has not started within 5 s (a loaded host?); going on");
    }
    tracing::info!(
        devices = devices.len(),
        queue = %cfg.queue.path.display(),
        platform = %cfg.feishu.base_url,
        "clockbridge started"
    );
    Ok(Running {
        queue,
        devices,
        sender_stats,
        client,
        mapping,
        lane_stats,
        lane_wakes,
        inbox_stats,
        health,
        reload,
        sources_stop,
        writer_stop,
        sender_stop,
        housekeeping_stop,
        sources,
        writer,
        senders,
        housekeeping,
        started_at,
        sink: Some(sink),
        reconcile,
        http,
        adms,
        snapshots,
        _lock: lock,
    })
}

async fn reload_loop(
    queue: Queue,
    mapping: MappingHandle,
    trigger: Arc<Notify>,
    wake: Arc<Notify>,
    progress: Arc<SenderStats>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            _ = trigger.notified() => true,
            _ = stop.cancelled() => return,
        };
        if mapping.file().is_none() {
            if asked {
                tracing::info!("mapping: passthrough mode, nothing to reload");
            }
            continue;
        }
        match mapping.reload() {
            Ok(changed) => {
                if changed {
                    tracing::info!("mapping: table reloaded");
                }
                if changed || asked {
                    match release_unmapped(&queue, &mapping).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(
                                punches = n,
                                "mapping: unmapped punches now mapped and queued for sending"
                            );
                            wake.notify_one();
                            progress.bump();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "mapping: cannot release unmapped punches")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "mapping: reload failed; keeping the previous table")
            }
        }
    }
}

/// Releases the unmapped rows the current mapping covers, for every lane that re-maps.
async fn release_unmapped(queue: &Queue, mapping: &MappingHandle) -> Result<usize, QueueError> {
    let mut released = 0;
    for &lane in lanes::ALL {
        released += queue.release_unmapped(lane, mapping.current()).await?;
    }
    Ok(released)
}

async fn prune_loop(queue: Queue, retention_days: u64, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let before = crate::queue::now_ms() - (retention_days as i64) * 86_400_000;
        match queue.prune_delivered(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, retention_days, "queue: pruned delivered rows"),
            Err(e) => tracing::warn!(error = %e, "queue: pruning failed; will try again"),
        }
    }
}
