//! The figures a fleet of gateways is watched by (`contrib/prometheus/clockbridge.rules.yml`,
//! `contrib/grafana/clockbridge.json`) that the rest of `/metrics` does not carry: every sender
//! lane's pacing (labelled `lane`, the lane's queue kind: `user_flow`, `user_approval`,
//! `archive_report`, `leave_accrual`), the free space of the queue's disk, and when each device
//! last queued a punch.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `clockbridge_lane_requests_total` | counter | `lane` | write requests of the lane |
//! | `clockbridge_lane_rate_limited_total` | counter | `lane` | rate-limit replies (HTTP 429 / 99991400) to the lane |
//! | `clockbridge_lane_paused_seconds_total` | counter | `lane` | time the lane was paused (rate-limit resets, blocked app) |
//! | `clockbridge_lane_pacing_rate` | gauge | `lane` | requests/s the pacing allows now |
//! | `clockbridge_lane_pacing_ceiling` | gauge | `lane` | `sender.max_requests_per_second` |
//! | `clockbridge_lane_adaptive` | gauge | `lane` | 1 with `sender.pacing = "adaptive"`, 0 with `"fixed"` |
//! | `clockbridge_queue_disk_free_bytes` | gauge | | space left for the queue (statvfs of its directory, as an unprivileged user sees it) |
//! | `clockbridge_queue_disk_size_bytes` | gauge | | size of that file system |
//! | `clockbridge_device_last_punch_timestamp_seconds` | gauge | `device` | when the device last queued a new punch (absent before the first since start) |
//!
//! The labels are stable and few: one series per lane (four) or per configured device.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::Scrape;
use crate::sender::SenderSnapshot;

/// The queue's file system, as statvfs reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskFigures {
    /// Bytes available to an unprivileged process (`f_bavail`).
    pub free_bytes: u64,
    pub size_bytes: u64,
}

/// The file system holding the queue file at `queue` (its directory); `None` when it cannot be
/// read.
pub fn disk_of(queue: &Path) -> Option<DiskFigures> {
    let dir = match queue.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size() as u64;
    Some(DiskFigures {
        free_bytes: (st.blocks_available() as u64).saturating_mul(frag),
        size_bytes: (st.blocks() as u64).saturating_mul(frag),
    })
}

fn lane_counter(
    enc: &mut DescriptorEncoder,
    lanes: &BTreeMap<&str, &SenderSnapshot>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Fn(&SenderSnapshot) -> u64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (lane, s) in lanes {
        m.encode_family(&[("lane", *lane)])?
            .encode_counter::<NoLabelSet, u64, u64>(&value(s), None)?;
    }
    Ok(())
}

fn lane_gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    lanes: &BTreeMap<&str, &SenderSnapshot>,
    name: &str,
    help: &str,
    value: impl Fn(&SenderSnapshot) -> V,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (lane, s) in lanes {
        m.encode_family(&[("lane", *lane)])?
            .encode_gauge(&value(s))?;
    }
    Ok(())
}

impl Scrape {
    pub(super) fn encode_fleet(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut lanes: BTreeMap<&str, &SenderSnapshot> =
            self.lanes.iter().map(|(k, s)| (k.as_str(), s)).collect();
        lanes.insert(crate::feishu::lanes::PUNCHES.kind(), &self.sender.snapshot);
        lane_counter(
            enc,
            &lanes,
            "clockbridge_lane_requests",
            "Write requests of each sender lane (one per platform endpoint)",
            None,
            |s| s.requests,
        )?;
        lane_counter(
            enc,
            &lanes,
            "clockbridge_lane_rate_limited",
            "Rate-limit replies (HTTP 429, code 99991400) to each lane",
            None,
            |s| s.rate_limited,
        )?;
        // whole milliseconds, as seconds
        let mut m = enc.encode_descriptor(
            "clockbridge_lane_paused",
            "Time each lane spent paused (rate-limit resets, a blocked app)",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (lane, s) in &lanes {
            m.encode_family(&[("lane", *lane)])?
                .encode_counter::<NoLabelSet, f64, u64>(&s.paused_secs, None)?;
        }
        lane_gauge(
            enc,
            &lanes,
            "clockbridge_lane_pacing_rate",
            "Requests per second the lane's pacing allows now (adaptive: below the ceiling)",
            |s| s.pacing_rate_per_sec,
        )?;
        lane_gauge(
            enc,
            &lanes,
            "clockbridge_lane_pacing_ceiling",
            "The lane's ceiling, sender.max_requests_per_second",
            |s| s.pacing_ceiling_per_sec,
        )?;
        lane_gauge(
            enc,
            &lanes,
            "clockbridge_lane_adaptive",
            "1 when the lane's pacing adapts (sender.pacing = adaptive), 0 when fixed",
            |s| i64::from(s.pacing == "adaptive"),
        )?;
        if let Some(d) = self.disk {
            let mut m = enc.encode_descriptor(
                "clockbridge_queue_disk_free",
                "Space left on the queue's file system for clockbridge (statvfs f_bavail)",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(d.free_bytes as f64))?;
            let mut m = enc.encode_descriptor(
                "clockbridge_queue_disk_size",
                "Size of the queue's file system",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(d.size_bytes as f64))?;
        }
        let mut m = enc.encode_descriptor(
            "clockbridge_device_last_punch_timestamp",
            "When the device last queued a new punch (Unix time; absent before the first since start)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (id, d) in &self.devices {
            if let Some(t) = d.last_punch_at {
                m.encode_family(&[("device", id.as_str())])?
                    .encode_gauge(&t)?;
            }
        }
        Ok(())
    }
}
