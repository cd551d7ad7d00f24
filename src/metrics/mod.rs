//! `/metrics`: the daemon's figures in the OpenMetrics text format, read at scrape time.
//!
//! Nothing is counted twice: every value comes from the live counters the daemon already keeps
//! ([`SenderStats`], [`DeviceStats`](crate::sources::DeviceStats)) and from one [`Queue`] call for the
//! queue figures, which runs on the queue's own database thread like every other queue access (the
//! async runtime never blocks on SQLite). [`gather`] takes those readings into a [`Scrape`]; [`render`]
//! writes it with `prometheus-client`'s text encoder (a [`Collector`] over the readings of this scrape).
//!
//! Metrics (counters carry the `_total` suffix in the exposition):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `clockbridge_build_info` | info | `version` | the running version |
//! | `clockbridge_start_time_seconds` | gauge | | when the daemon started (Unix seconds) |
//! | `clockbridge_health_conditions` | gauge | `kind` | conditions of each kind holding now (see [`crate::health`]: `storage_failing`, `queue_damaged`, `upstream_timeouts`, ...); all 0 when healthy |
//! | `clockbridge_queue_up` | gauge | | 1 if the queue answered this scrape; 0: the queue figures are absent |
//! | `clockbridge_queue_records` | gauge | `kind`, `state` | rows per kind and state (`pending`, `in_flight`, `delivered`, `dead`, `unmapped`) |
//! | `clockbridge_queue_oldest_outstanding_age_seconds` | gauge | | age of the oldest row not yet delivered (pending or in flight); 0 when none |
//! | `clockbridge_queue_pruned_records_total` | counter | | delivered rows pruned after `queue.retention_days` |
//! | `clockbridge_device_queue_records` | gauge | `device`, `state` | rows per device and state |
//! | `clockbridge_sender_requests_total` | counter | | write requests sent to the platform |
//! | `clockbridge_sender_delivered_records_total` | counter | | records the platform accepted |
//! | `clockbridge_sender_dead_records_total` | counter | | records the platform rejected for good (dead letters) |
//! | `clockbridge_sender_retried_records_total` | counter | `reason` | records put back for a retry after a transient failure: `no_row_affected`, `server_error`, `network`, `token`, `other` |
//! | `clockbridge_sender_splits_total` | counter | | batches split to isolate rejected records |
//! | `clockbridge_sender_rate_limited_total` | counter | | rate-limit replies |
//! | `clockbridge_sender_app_blocked_total` | counter | | application-level failures (credentials, scope, permission) that paused uploads |
//! | `clockbridge_sender_blocked` | gauge | | 1 while such a failure stops every upload |
//! | `clockbridge_sender_heartbeat_age_seconds` | gauge | | time since the sender's claim loop last turned (absent before its first turn) |
//! | `clockbridge_sender_last_success_timestamp_seconds` | gauge | | last accepted upload (absent before the first) |
//! | `clockbridge_upstream_latency_seconds` | histogram | | how long the platform took to answer write requests |
//! | `clockbridge_hr_requests_total` | counter | `kind` | requests of each HR sender (`user_approval`, `archive_report`, `leave_accrual`) |
//! | `clockbridge_hr_delivered_records_total` | counter | `kind` | HR records the platform accepted |
//! | `clockbridge_hr_dead_records_total` | counter | `kind` | HR records rejected for good (dead letters) |
//! | `clockbridge_hr_retried_records_total` | counter | `kind` | HR records put back for a retry |
//! | `clockbridge_hr_rate_limited_total` | counter | `kind` | rate-limit replies to each HR endpoint |
//! | `clockbridge_hr_sender_blocked` | gauge | `kind` | 1 while an application-level failure stops that endpoint |
//! | `clockbridge_device_online` | gauge | `device` | 1 while the device has a connection open |
//! | `clockbridge_device_connections` | gauge | `device` | connections open now |
//! | `clockbridge_device_connects_total` | counter | `device` | connections made since start |
//! | `clockbridge_device_lines_read_total` | counter | `device` | lines received, good or bad |
//! | `clockbridge_device_punches_read_total` | counter | `device` | punches parsed |
//! | `clockbridge_device_malformed_lines_total` | counter | `device` | lines that did not parse |
//! | `clockbridge_device_queued_punches_total` | counter | `device` | punches newly committed to the queue |
//! | `clockbridge_device_duplicate_punches_total` | counter | `device` | punches already in the queue |
//! | `clockbridge_device_acks_written_total` | counter | `device` | acknowledgements written back to the clock |
//! | `clockbridge_device_last_line_timestamp_seconds` | gauge | `device` | last line received (absent before the first) |
//! | `clockbridge_device_clock_skew_seconds` | gauge | `device` | `zk` devices: device clock minus gateway clock (the gauges of a kind of clock come from its folder: [`crate::sources::Kind::gauges`]) |
//! | `clockbridge_device_log_records` | gauge | `device` | `zk` devices: records on the device |
//! | `clockbridge_device_watermark_records` | gauge | `device` | `zk` devices: records committed to the queue |
//!
//! The fleet's figures (every lane's pacing, the queue's disk, each device's last punch) are in
//! [`fleet`].
//!
//! Not exported: the clocks' skew (a line clock reports the punch's time, never its own clock, so
//! there is nothing to compare). Device counters restart from 0 with the daemon, as Prometheus
//! counters may.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::health::{Condition, ConditionKind};
use crate::ingest::DeviceInfo;
use crate::queue::{now_ms, Counts, Queue, QueueReading, StateCounts};
use crate::sender::{SenderSnapshot, SenderStats, LATENCY_BUCKETS_MS};
use crate::sources::DeviceSnapshot;

pub mod fleet;
pub use fleet::DiskFigures;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the queue reported for one scrape.
#[derive(Debug, Clone, Default)]
pub struct QueueFigures {
    pub counts: Counts,
    /// Seconds since the oldest row not yet delivered was queued (`None`: there is none).
    pub oldest_outstanding_age_secs: Option<f64>,
}

/// What the sender reported for one scrape.
#[derive(Debug, Clone, Default)]
pub struct SenderFigures {
    pub snapshot: SenderSnapshot,
    pub app_blocked: u64,
    /// `None` before the claim loop's first turn.
    pub heartbeat_age_secs: Option<f64>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`], then `+Inf`.
    pub latency_cumulative: Vec<u64>,
    pub latency_sum_ms: u64,
}

/// Every reading of one scrape, taken by [`gather`] (or built by hand in tests).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub version: String,
    pub started_at: i64,
    /// `None` when the queue did not answer in time.
    pub queue: Option<QueueFigures>,
    pub sender: SenderFigures,
    pub devices: BTreeMap<String, DeviceSnapshot>,
    /// The senders of the lanes other than punches (the HR senders), by queue kind (filled in by the
    /// caller; empty in [`gather`]).
    pub lanes: BTreeMap<String, SenderSnapshot>,
    /// The health model's conditions (filled in by the caller; empty in [`gather`]).
    pub conditions: Vec<Condition>,
    /// The last scheduled reconcile (filled in by the caller; `None` in [`gather`] and before the
    /// first check).
    pub reconcile: Option<crate::reconcile::schedule::LastCheck>,
    /// The queue's file system (`None` when statvfs failed).
    pub disk: Option<DiskFigures>,
}

/// Reads the live figures now. The queue is asked once (counts and the oldest outstanding row), on
/// its database thread, for at most `queue_timeout`; if it does not answer, the scrape says so
/// (`clockbridge_queue_up 0`) and carries the other figures.
pub async fn gather(
    queue: &Queue,
    devices: &HashMap<String, DeviceInfo>,
    sender: &SenderStats,
    started_at: i64,
    queue_timeout: Duration,
) -> Scrape {
    let queue_path = queue.path().to_path_buf();
    let queue_path = queue_path.as_path();
    let queue = match tokio::time::timeout(queue_timeout, queue.reading()).await {
        Ok(Ok(QueueReading {
            counts,
            oldest_outstanding_at,
        })) => Some(QueueFigures {
            counts,
            oldest_outstanding_age_secs: oldest_outstanding_at
                .map(|t| (now_ms() - t).max(0) as f64 / 1000.0),
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the queue figures could not be read");
            None
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = queue_timeout.as_millis() as u64,
                "metrics: the queue did not answer in time; scrape without its figures"
            );
            None
        }
    };
    let (latency_cumulative, latency_sum_ms) = sender.latency.cumulative();
    Scrape {
        reconcile: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        queue,
        sender: SenderFigures {
            snapshot: sender.snapshot(),
            app_blocked: sender.app_blocked.load(Ordering::Relaxed),
            heartbeat_age_secs: heartbeat_age(sender.heartbeat.load(Ordering::Relaxed)),
            latency_cumulative,
            latency_sum_ms,
        },
        devices: devices
            .iter()
            .map(|(id, d)| (id.clone(), d.stats.snapshot()))
            .collect(),
        lanes: BTreeMap::new(),
        conditions: Vec::new(),
        disk: fleet::disk_of(queue_path),
    }
}

/// Seconds since `heartbeat_ms` (Unix ms; 0: never).
pub fn heartbeat_age(heartbeat_ms: i64) -> Option<f64> {
    (heartbeat_ms > 0).then(|| (now_ms() - heartbeat_ms).max(0) as f64 / 1000.0)
}

/// The scrape in the OpenMetrics text format (ends with `# EOF`).
pub fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

const STATES: [&str; 5] = ["pending", "in_flight", "delivered", "dead", "unmapped"];

fn by_state(c: &StateCounts) -> [u64; 5] {
    [c.pending, c.in_flight, c.delivered, c.dead, c.unmapped]
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

/// One counter per device.
fn device_counter(
    enc: &mut DescriptorEncoder,
    devices: &BTreeMap<String, DeviceSnapshot>,
    name: &str,
    help: &str,
    value: impl Fn(&DeviceSnapshot) -> u64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (id, d) in devices {
        let labels = [("device", id.as_str())];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value(d), None)?;
    }
    Ok(())
}

/// One gauge per device (devices for which `value` is `None` are left out).
fn device_gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    devices: &BTreeMap<String, DeviceSnapshot>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Fn(&DeviceSnapshot) -> Option<V>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (id, d) in devices {
        if let Some(v) = value(d) {
            let labels = [("device", id.as_str())];
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// One metric per HR sender, labelled by kind.
fn lane_metric(
    enc: &mut DescriptorEncoder,
    lanes: &BTreeMap<String, SenderSnapshot>,
    name: &str,
    help: &str,
    value: impl Fn(&SenderSnapshot) -> u64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (kind, s) in lanes {
        m.encode_family(&[("kind", kind.as_str())])?
            .encode_counter::<NoLabelSet, u64, u64>(&value(s), None)?;
    }
    Ok(())
}

impl Scrape {
    fn encode_lanes(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let l = &self.lanes;
        lane_metric(
            enc,
            l,
            "clockbridge_hr_requests",
            "Requests of each HR sender (one per endpoint), by record kind",
            |s| s.requests,
        )?;
        lane_metric(
            enc,
            l,
            "clockbridge_hr_delivered_records",
            "HR records the platform accepted, by kind",
            |s| s.delivered,
        )?;
        lane_metric(
            enc,
            l,
            "clockbridge_hr_dead_records",
            "HR records the platform rejected for good (dead letters), by kind",
            |s| s.dead,
        )?;
        lane_metric(
            enc,
            l,
            "clockbridge_hr_retried_records",
            "HR records put back for a retry after a transient failure, by kind",
            |s| s.retries,
        )?;
        lane_metric(
            enc,
            l,
            "clockbridge_hr_rate_limited",
            "Rate-limit replies to each HR endpoint, by kind",
            |s| s.rate_limited,
        )?;
        let mut m = enc.encode_descriptor(
            "clockbridge_hr_sender_blocked",
            "1 while an application-level failure (e.g. the scope attendance:rule missing) stops that HR endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (kind, s) in l {
            m.encode_family(&[("kind", kind.as_str())])?
                .encode_gauge(&i64::from(s.blocked_reason.is_some()))?;
        }
        Ok(())
    }

    fn encode_queue(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        gauge(
            enc,
            "clockbridge_queue_up",
            "1 if the queue answered this scrape; 0 if it failed or timed out (the queue figures are then absent)",
            None,
            i64::from(self.queue.is_some()),
        )?;
        let Some(q) = &self.queue else {
            return Ok(());
        };
        {
            let mut m = enc.encode_descriptor(
                "clockbridge_queue_records",
                "Rows in the queue by record kind and delivery state",
                None,
                MetricType::Gauge,
            )?;
            let mut kinds: BTreeMap<&str, StateCounts> = q
                .counts
                .by_kind
                .iter()
                .map(|(k, c)| (k.as_str(), *c))
                .collect();
            for lane in crate::feishu::lanes::ALL {
                kinds.entry(lane.kind()).or_default();
            }
            for (kind, c) in &kinds {
                for (state, n) in STATES.iter().zip(by_state(c)) {
                    let labels = [("kind", *kind), ("state", *state)];
                    m.encode_family(&labels)?.encode_gauge(&n)?;
                }
            }
        }
        gauge(
            enc,
            "clockbridge_queue_oldest_outstanding_age",
            "Age of the oldest row not yet delivered (pending or in flight); 0 when there is none",
            Some(&Unit::Seconds),
            q.oldest_outstanding_age_secs.unwrap_or(0.0),
        )?;
        counter(
            enc,
            "clockbridge_queue_pruned_records",
            "Delivered rows pruned after queue.retention_days",
            q.counts.pruned_delivered,
        )?;
        let mut m = enc.encode_descriptor(
            "clockbridge_device_queue_records",
            "Rows in the queue by device and delivery state",
            None,
            MetricType::Gauge,
        )?;
        let ids: BTreeSet<&str> = self
            .devices
            .keys()
            .map(String::as_str)
            .chain(q.counts.by_device.keys().map(String::as_str))
            .collect();
        for id in ids {
            let c = q.counts.by_device.get(id).copied().unwrap_or_default();
            for (state, n) in STATES.iter().zip(by_state(&c)) {
                let labels = [("device", id), ("state", *state)];
                m.encode_family(&labels)?.encode_gauge(&n)?;
            }
        }
        Ok(())
    }

    fn encode_sender(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.sender;
        let snap = &s.snapshot;
        counter(
            enc,
            "clockbridge_sender_requests",
            "Write requests sent to the platform (including the halves of split batches)",
            snap.requests,
        )?;
        counter(
            enc,
            "clockbridge_sender_delivered_records",
            "Records the platform accepted",
            snap.delivered,
        )?;
        counter(
            enc,
            "clockbridge_sender_dead_records",
            "Records the platform rejected for good (kept as dead letters)",
            snap.dead,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "clockbridge_sender_retried_records",
                "Records put back for a retry after a transient failure, by reason (no_row_affected, server_error, network, token, other)",
                None,
                MetricType::Counter,
            )?;
            for reason in crate::sender::RETRY_REASONS {
                let n = snap.retries_by_reason.get(reason).copied().unwrap_or(0);
                m.encode_family(&[("reason", reason)])?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
        counter(
            enc,
            "clockbridge_sender_splits",
            "Batches split in halves to isolate records the platform refused",
            snap.splits,
        )?;
        counter(
            enc,
            "clockbridge_sender_rate_limited",
            "Rate-limit replies from the platform (uploads paused until the window resets)",
            snap.rate_limited,
        )?;
        counter(
            enc,
            "clockbridge_sender_app_blocked",
            "Application-level failures (credentials, scope, permission) that paused every upload",
            s.app_blocked,
        )?;
        gauge(
            enc,
            "clockbridge_sender_blocked",
            "1 while an application-level failure stops every upload (see /healthz or status for the fix)",
            None,
            i64::from(snap.blocked_reason.is_some()),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "clockbridge_sender_heartbeat_age",
                "Time since the sender's claim loop last turned (it turns at least every 5 s while it runs and is not paused)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            if let Some(age) = s.heartbeat_age_secs {
                m.encode_gauge(&age)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "clockbridge_sender_last_success_timestamp",
                "When the platform last accepted an upload (Unix time)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            if let Some(t) = snap.last_success_at {
                m.encode_gauge(&t)?;
            }
        }
        // the encoder takes per-bucket counts and accumulates them itself
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_MS.len() + 1);
        let mut previous = 0u64;
        for (i, cumulative) in s.latency_cumulative.iter().enumerate() {
            let bound = LATENCY_BUCKETS_MS
                .get(i)
                .map(|ms| *ms as f64 / 1000.0)
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative.saturating_sub(previous)));
            previous = previous.max(*cumulative);
        }
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            buckets.push((f64::INFINITY, 0));
        }
        enc.encode_descriptor(
            "clockbridge_upstream_latency",
            "How long the platform took to answer write requests",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            s.latency_sum_ms as f64 / 1000.0,
            previous,
            &buckets,
            None,
        )
    }

    fn encode_devices(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let d = &self.devices;
        device_gauge(
            enc,
            d,
            "clockbridge_device_online",
            "1 while the device has a connection open (or its serial port is open)",
            None,
            |s| Some(i64::from(s.online)),
        )?;
        device_gauge(
            enc,
            d,
            "clockbridge_device_connections",
            "Connections open now",
            None,
            |s| Some(s.connections),
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_connects",
            "Connections made since start",
            |s| s.connects,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_lines_read",
            "Lines (or records) received, good or bad",
            |s| s.lines_read,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_punches_read",
            "Punches parsed and handed to the queue",
            |s| s.punches_read,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_malformed_lines",
            "Lines that did not parse (or were too long, or not text)",
            |s| s.malformed,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_queued_punches",
            "Punches newly committed to the queue",
            |s| s.queued,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_duplicate_punches",
            "Punches that were already in the queue (re-sent or re-read by the clock)",
            |s| s.duplicates,
        )?;
        device_counter(
            enc,
            d,
            "clockbridge_device_acks_written",
            "Acknowledgements written back to the clock, each after its punch was committed",
            |s| s.acks_written,
        )?;
        device_gauge(
            enc,
            d,
            "clockbridge_device_last_line_timestamp",
            "When the device last sent a line (Unix time; absent before the first)",
            Some(&Unit::Seconds),
            |s| s.last_line_at,
        )?;
        // the gauges of each kind of clock, read from its devices' figures
        for kind in crate::sources::KINDS {
            for g in kind.gauges() {
                device_gauge(
                    enc,
                    d,
                    g.name,
                    g.help,
                    g.seconds.then_some(&Unit::Seconds),
                    |s| (g.read)(&s.figures),
                )?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        {
            let version = [("version", self.version.as_str())];
            enc.encode_descriptor(
                "clockbridge_build",
                "The running clockbridge",
                None,
                MetricType::Info,
            )?
            .encode_info(&version)?;
        }
        gauge(
            &mut enc,
            "clockbridge_start_time",
            "When the daemon started (Unix time)",
            Some(&Unit::Seconds),
            self.started_at,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "clockbridge_health_conditions",
                "Health conditions of each kind holding now (see /healthz for their messages); all 0 when healthy",
                None,
                MetricType::Gauge,
            )?;
            for kind in ConditionKind::ALL {
                let n = self.conditions.iter().filter(|c| c.kind == kind).count() as i64;
                m.encode_family(&[("kind", kind.name())])?
                    .encode_gauge(&n)?;
            }
        }
        self.encode_queue(&mut enc)?;
        self.encode_sender(&mut enc)?;
        self.encode_lanes(&mut enc)?;
        if let Some(r) = &self.reconcile {
            // the last scheduled reconcile ([reconcile] schedule): absent until it has run
            for (name, help, v) in [
                ("clockbridge_reconcile_matched", "Punches of the last scheduled reconcile's day delivered and confirmed in Feishu", r.matched),
                ("clockbridge_reconcile_not_visible", "Punches of the last scheduled reconcile's day delivered but not visible in Feishu", r.not_visible),
                ("clockbridge_reconcile_not_delivered", "Punches of the last scheduled reconcile's day not delivered yet (pending, dead, unmapped)", r.not_delivered),
                ("clockbridge_reconcile_missing_from_queue", "Records the clocks hold that the queue does not, at the last scheduled reconcile", r.missing_from_queue),
            ] {
                gauge(&mut enc, name, help, None, v as i64)?;
            }
            gauge(
                &mut enc,
                "clockbridge_reconcile_last_run",
                "When the last scheduled reconcile finished (Unix time)",
                Some(&Unit::Seconds),
                r.at,
            )?;
        }
        self.encode_devices(&mut enc)?;
        self.encode_fleet(&mut enc)
    }
}

#[cfg(test)]
mod tests;
