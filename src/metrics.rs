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

use crate::ingest::DeviceInfo;
use crate::queue::{now_ms, Counts, Queue, QueueReading, StateCounts};
use crate::sender::{SenderSnapshot, SenderStats, LATENCY_BUCKETS_MS};
use crate::sources::DeviceSnapshot;

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
        self.encode_queue(&mut enc)?;
        self.encode_sender(&mut enc)?;
        self.encode_lanes(&mut enc)?;
        self.encode_devices(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::lanes::user_flows::KIND as KIND_USER_FLOW;

    fn sample() -> Scrape {
        let mut counts = Counts::default();
        let c = StateCounts {
            pending: 2,
            in_flight: 1,
            delivered: 40,
            dead: 3,
            unmapped: 4,
        };
        counts.total = c;
        counts.by_kind.insert(KIND_USER_FLOW.into(), c);
        counts.by_device.insert("door-1".into(), c);
        counts.pruned_delivered = 7;
        let mut devices = BTreeMap::new();
        devices.insert(
            "door-1".to_string(),
            DeviceSnapshot {
                online: true,
                connections: 1,
                connects: 2,
                lines_read: 51,
                punches_read: 50,
                malformed: 1,
                queued: 49,
                duplicates: 1,
                acks_written: 0,
                last_line_at: Some(1_772_413_199),
                last_error: None,
                figures: serde_json::json!({"clock_skew_secs": -3, "device_records": 120, "watermark": 118})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
        );
        // a label value that needs escaping
        devices.insert("lobby \"b\"".to_string(), DeviceSnapshot::default());
        Scrape {
            version: "9.9.9".into(),
            started_at: 1_772_400_000,
            queue: Some(QueueFigures {
                counts,
                oldest_outstanding_age_secs: Some(12.5),
            }),
            sender: SenderFigures {
                snapshot: SenderSnapshot {
                    state: "ok".into(),
                    requests: 5,
                    delivered: 40,
                    dead: 3,
                    retries: 6,
                    retries_by_reason: [("network".to_string(), 6)].into_iter().collect(),
                    splits: 1,
                    rate_limited: 2,
                    ..SenderSnapshot::default()
                },
                app_blocked: 0,
                heartbeat_age_secs: Some(0.25),
                // 1 answer <= 25 ms, 3 <= 100 ms, 1 slower than 30 s
                latency_cumulative: vec![1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 5],
                latency_sum_ms: 31_200,
            },
            devices,
            lanes: [
                (
                    "archive_report".to_string(),
                    SenderSnapshot {
                        requests: 3,
                        dead: 2,
                        blocked_reason: Some("x".into()),
                        ..SenderSnapshot::default()
                    },
                ),
                ("user_approval".to_string(), SenderSnapshot::default()),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn hr_senders_are_labelled_by_kind() {
        let text = render(sample()).unwrap();
        let l = lines(&text);
        for expected in [
            "clockbridge_hr_requests_total{kind=\"archive_report\"} 3",
            "clockbridge_hr_dead_records_total{kind=\"archive_report\"} 2",
            "clockbridge_hr_dead_records_total{kind=\"user_approval\"} 0",
            "clockbridge_hr_sender_blocked{kind=\"archive_report\"} 1",
            "clockbridge_hr_sender_blocked{kind=\"user_approval\"} 0",
        ] {
            assert!(l.contains(&expected), "missing {expected}:\n{text}");
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    /// A sample line (not a comment) of the metric `name`, without labels.
    fn has_sample(text: &str, name: &str) -> bool {
        text.lines().any(|l| l.starts_with(&format!("{name} ")))
    }

    #[test]
    fn renders_every_family_with_the_right_values() {
        let text = render(sample()).unwrap();
        let l = lines(&text);
        for expected in [
            "clockbridge_build_info{version=\"9.9.9\"} 1",
            "clockbridge_start_time_seconds 1772400000",
            "clockbridge_queue_up 1",
            "clockbridge_queue_records{kind=\"user_flow\",state=\"pending\"} 2",
            "clockbridge_queue_records{kind=\"user_flow\",state=\"in_flight\"} 1",
            "clockbridge_queue_records{kind=\"user_flow\",state=\"delivered\"} 40",
            "clockbridge_queue_records{kind=\"user_flow\",state=\"dead\"} 3",
            "clockbridge_queue_records{kind=\"user_flow\",state=\"unmapped\"} 4",
            "clockbridge_queue_oldest_outstanding_age_seconds 12.5",
            "clockbridge_queue_pruned_records_total 7",
            "clockbridge_device_queue_records{device=\"door-1\",state=\"dead\"} 3",
            "clockbridge_device_queue_records{device=\"lobby \\\"b\\\"\",state=\"pending\"} 0",
            "clockbridge_sender_requests_total 5",
            "clockbridge_sender_delivered_records_total 40",
            "clockbridge_sender_dead_records_total 3",
            "clockbridge_sender_retried_records_total{reason=\"network\"} 6",
            "clockbridge_sender_splits_total 1",
            "clockbridge_sender_rate_limited_total 2",
            "clockbridge_sender_app_blocked_total 0",
            "clockbridge_sender_blocked 0",
            "clockbridge_sender_heartbeat_age_seconds 0.25",
            "clockbridge_upstream_latency_seconds_sum 31.2",
            "clockbridge_upstream_latency_seconds_count 5",
            "clockbridge_upstream_latency_seconds_bucket{le=\"0.025\"} 1",
            "clockbridge_upstream_latency_seconds_bucket{le=\"0.1\"} 4",
            "clockbridge_upstream_latency_seconds_bucket{le=\"30.0\"} 4",
            "clockbridge_upstream_latency_seconds_bucket{le=\"+Inf\"} 5",
            "clockbridge_device_online{device=\"door-1\"} 1",
            "clockbridge_device_online{device=\"lobby \\\"b\\\"\"} 0",
            "clockbridge_device_connections{device=\"door-1\"} 1",
            "clockbridge_device_connects_total{device=\"door-1\"} 2",
            "clockbridge_device_lines_read_total{device=\"door-1\"} 51",
            "clockbridge_device_punches_read_total{device=\"door-1\"} 50",
            "clockbridge_device_malformed_lines_total{device=\"door-1\"} 1",
            "clockbridge_device_queued_punches_total{device=\"door-1\"} 49",
            "clockbridge_device_duplicate_punches_total{device=\"door-1\"} 1",
            "clockbridge_device_acks_written_total{device=\"door-1\"} 0",
            "clockbridge_device_last_line_timestamp_seconds{device=\"door-1\"} 1772413199",
            "clockbridge_device_clock_skew_seconds{device=\"door-1\"} -3",
            "clockbridge_device_log_records{device=\"door-1\"} 120",
            "clockbridge_device_watermark_records{device=\"door-1\"} 118",
            "# TYPE clockbridge_upstream_latency_seconds histogram",
            "# UNIT clockbridge_upstream_latency_seconds seconds",
            "# TYPE clockbridge_sender_requests counter",
        ] {
            assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(l.last(), Some(&"# EOF"));
        // a device that never sent a line has no last-line sample; no success yet: no sample either
        assert!(!text.contains("clockbridge_device_last_line_timestamp_seconds{device=\"lobby"));
        // zk figures only for zk devices
        assert!(!text.contains("clockbridge_device_clock_skew_seconds{device=\"lobby"));
        assert!(!has_sample(
            &text,
            "clockbridge_sender_last_success_timestamp_seconds"
        ));
        // every family is described once
        let mut types: Vec<&str> = l
            .iter()
            .filter(|x| x.starts_with("# TYPE "))
            .copied()
            .collect();
        let n = types.len();
        types.dedup();
        assert_eq!(types.len(), n);
    }

    #[test]
    fn a_queue_that_did_not_answer_leaves_its_figures_out() {
        let text = render(Scrape {
            queue: None,
            ..sample()
        })
        .unwrap();
        assert!(lines(&text).contains(&"clockbridge_queue_up 0"), "{text}");
        assert!(!text.contains("clockbridge_queue_records{"), "{text}");
        assert!(
            !text.contains("clockbridge_device_queue_records{"),
            "{text}"
        );
        // the rest is still there
        assert!(
            text.contains("clockbridge_sender_requests_total 5"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_queue_still_reports_the_punch_kind_and_a_zero_age() {
        let mut s = sample();
        s.queue = Some(QueueFigures::default());
        s.sender.latency_cumulative = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        s.sender.latency_sum_ms = 0;
        s.sender.heartbeat_age_secs = None;
        let text = render(s).unwrap();
        let l = lines(&text);
        assert!(l.contains(&"clockbridge_queue_records{kind=\"user_flow\",state=\"delivered\"} 0"));
        assert!(l.contains(&"clockbridge_queue_oldest_outstanding_age_seconds 0.0"));
        assert!(l.contains(&"clockbridge_upstream_latency_seconds_count 0"));
        assert!(l.contains(&"clockbridge_upstream_latency_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(!has_sample(
            &text,
            "clockbridge_sender_heartbeat_age_seconds"
        ));
    }

    #[test]
    fn heartbeat_age_is_none_before_the_first_turn() {
        assert_eq!(heartbeat_age(0), None);
        let age = heartbeat_age(now_ms() - 2_000).unwrap();
        assert!((2.0..10.0).contains(&age), "{age}");
        // a clock step backwards never gives a negative age
        assert_eq!(heartbeat_age(now_ms() + 60_000), Some(0.0));
    }
}
