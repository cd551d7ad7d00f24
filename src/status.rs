//! `clockbridge status`: what the queue holds and what the daemon is doing, read from the queue file
//! (read-only, safe while the daemon runs).
//!
//! `--json` prints one object. Its members are a contract for operators' scripts: `queue` has the integer
//! counts `pending`, `in_flight`, `delivered`, `dead`, `unmapped`; `devices` lists each configured device
//! with its source figures and its own queue counts; `sender`, `daemon` and `dead_letters` follow.
//! `kinds` has the same five counts for every record kind (one per lane in
//! [`crate::feishu::lanes::ALL`]: `user_flow`, `user_approval`, `archive_report`, `leave_accrual`,
//! always present); `senders` the other lanes' senders' figures by kind (the HR senders) and
//! `inbox` the `[inbox]` directories' figures (both empty when the daemon never ran); `conditions`
//! what the daemon's health model found wrong at its last snapshot ([`crate::health`]: each with
//! `kind`, `message`, `since`, `restart`; empty when it is healthy or not running).
//! Members may be added, never renamed. Every time in it is Unix seconds.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::health::Condition;
use crate::queue::{
    open_read_only, read_counts, read_dead_letters, read_oldest_outstanding, read_runtime,
    DeadLetter, QueueError, StateCounts,
};
use crate::sender::SenderSnapshot;
use crate::snapshot::{RuntimeSnapshot, RUNTIME_KEY};
use crate::sources::DeviceSnapshot;

/// A snapshot older than this means the daemon is not running.
pub const STALE_AFTER_MS: i64 = 15_000;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub daemon: DaemonStatus,
    pub queue: QueueStatus,
    pub kinds: std::collections::BTreeMap<String, StateCounts>,
    pub devices: Vec<DeviceStatus>,
    pub sender: Option<SenderSnapshot>,
    /// The senders of the lanes other than punches (one per endpoint), by queue kind, from the
    /// daemon's last snapshot.
    pub senders: std::collections::BTreeMap<String, SenderSnapshot>,
    /// The inbox directories, by `[inbox]` key, from the daemon's last snapshot.
    pub inbox: std::collections::BTreeMap<String, crate::inbox::InboxSnapshot>,
    /// What the running daemon's health model found wrong at its last snapshot (empty: healthy, or
    /// not running).
    pub conditions: Vec<Condition>,
    /// The newest dead letters (at most 20).
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    pub running: bool,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub started_at: Option<i64>,
    /// When the daemon last wrote its snapshot (Unix seconds).
    pub snapshot_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub path: String,
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
    pub unmapped: u64,
    /// Delivered rows already pruned after the retention period.
    pub delivered_pruned: u64,
    /// Age in seconds of the oldest record not yet delivered (pending or in flight).
    pub oldest_outstanding_age_secs: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub id: String,
    pub kind: String,
    pub address: Option<String>,
    pub location_name: String,
    pub timezone: String,
    /// Source figures from the running daemon (absent when it is not running).
    #[serde(flatten)]
    pub source: Option<DeviceSnapshot>,
    pub queue: StateCounts,
}

/// Reads the status of the queue at `cfg.queue.path`.
pub fn read(cfg: &Config) -> Result<Status, QueueError> {
    read_at(cfg, &cfg.queue.path)
}

fn read_at(cfg: &Config, path: &Path) -> Result<Status, QueueError> {
    let conn = open_read_only(path)?;
    let counts = read_counts(&conn)?;
    let oldest = read_oldest_outstanding(&conn)?;
    let dead_letters = read_dead_letters(&conn, 20)?;
    let runtime = read_runtime(&conn, RUNTIME_KEY)?;
    let now = crate::queue::now_ms();
    let (snap, snap_at) = match runtime {
        Some((json, at)) => (
            serde_json::from_str::<RuntimeSnapshot>(&json).ok(),
            Some(at),
        ),
        None => (None, None),
    };
    let running =
        matches!((&snap, snap_at), (Some(s), Some(at)) if s.pid != 0 && now - at < STALE_AFTER_MS);
    let devices = cfg
        .devices
        .iter()
        .map(|d| DeviceStatus {
            id: d.id.clone(),
            kind: d.kind().to_string(),
            // where the device is, as its kind tells (a zk device's address with its port)
            address: d.address(),
            location_name: d.location().to_string(),
            timezone: d.timezone.clone(),
            source: if running {
                snap.as_ref().and_then(|s| s.devices.get(&d.id).cloned())
            } else {
                None
            },
            queue: counts.by_device.get(&d.id).copied().unwrap_or_default(),
        })
        .collect();
    Ok(Status {
        daemon: DaemonStatus {
            running,
            pid: snap.as_ref().filter(|_| running).map(|s| s.pid),
            version: snap.as_ref().map(|s| s.version.clone()),
            started_at: snap.as_ref().filter(|_| running).map(|s| s.started_at),
            snapshot_at: snap_at.map(|t| t / 1000),
        },
        queue: QueueStatus {
            path: path.display().to_string(),
            pending: counts.total.pending,
            in_flight: counts.total.in_flight,
            delivered: counts.total.delivered,
            dead: counts.total.dead,
            unmapped: counts.total.unmapped,
            delivered_pruned: counts.pruned_delivered,
            oldest_outstanding_age_secs: oldest.map(|t| ((now - t) / 1000).max(0)),
        },
        kinds: {
            let mut k: std::collections::BTreeMap<String, StateCounts> =
                counts.by_kind.into_iter().collect();
            for lane in crate::feishu::lanes::ALL {
                k.entry(lane.kind().to_string()).or_default();
            }
            k
        },
        devices,
        senders: snap.as_ref().map(|s| s.senders.clone()).unwrap_or_default(),
        inbox: snap.as_ref().map(|s| s.inbox.clone()).unwrap_or_default(),
        conditions: snap
            .as_ref()
            .filter(|_| running)
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        sender: snap.map(|s| s.sender),
        dead_letters,
    })
}

/// Human-readable rendering.
pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
    o.push_str(&match (s.daemon.running, s.daemon.pid) {
        (true, Some(pid)) => format!("daemon:    running (pid {pid})\n"),
        _ => "daemon:    not running\n".to_string(),
    });
    if s.daemon.running {
        if s.conditions.is_empty() {
            o.push_str("health:    ok\n");
        } else {
            o.push_str(&format!(
                "health:    {} problem{}\n",
                s.conditions.len(),
                if s.conditions.len() == 1 { "" } else { "s" }
            ));
            for c in &s.conditions {
                o.push_str(&format!("  - {}: {}\n", c.kind.name(), c.message));
            }
        }
    }
    let q = &s.queue;
    o.push_str(&format!("queue:     {}\n", q.path));
    o.push_str(&format!(
        "  pending {}  in flight {}  delivered {} (+{} pruned)  dead {}  unmapped {}\n",
        q.pending, q.in_flight, q.delivered, q.delivered_pruned, q.dead, q.unmapped
    ));
    if let Some(age) = q.oldest_outstanding_age_secs {
        o.push_str(&format!("  oldest undelivered record: {age} s old\n"));
    }
    if let Some(sender) = &s.sender {
        match &sender.blocked_reason {
            Some(r) => o.push_str(&format!("sender:    BLOCKED: {r}\n")),
            None => o.push_str(&format!(
                "sender:    {}  ({} requests, {} delivered, {} retried, {} rate-limited)\n",
                sender.state,
                sender.requests,
                sender.delivered,
                sender.retries,
                sender.rate_limited
            )),
        }
        if sender.timeouts_in_a_row > 0 {
            o.push_str(&format!(
                "  the last {} requests timed out (no answer within feishu.request_timeout_secs)\n",
                sender.timeouts_in_a_row
            ));
        }
        if let Some(e) = &sender.last_error {
            o.push_str(&format!(
                "  last error: code {} {:?} (log id {})\n",
                e.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                e.message,
                e.log_id.as_deref().unwrap_or("-")
            ));
        }
    }
    let hr: Vec<(&String, &StateCounts)> = s
        .kinds
        .iter()
        .filter(|(k, c)| {
            k.as_str() != crate::feishu::lanes::PUNCHES.kind() && **c != StateCounts::default()
        })
        .collect();
    if !hr.is_empty() {
        o.push_str("hr records:\n");
        for (k, c) in hr {
            o.push_str(&format!(
                "  {:<15} pending {}  in flight {}  delivered {}  dead {}\n",
                k, c.pending, c.in_flight, c.delivered, c.dead
            ));
            if let Some(sn) = s.senders.get(k) {
                match &sn.blocked_reason {
                    Some(r) => o.push_str(&format!("    sender BLOCKED: {r}\n")),
                    None => o.push_str(&format!(
                        "    sender {}  ({} requests, {} delivered, {} dead, {} retried)\n",
                        sn.state, sn.requests, sn.delivered, sn.dead, sn.retries
                    )),
                }
            }
        }
    }
    for (k, i) in &s.inbox {
        o.push_str(&format!(
            "inbox {k}: {}  (files: {} done, {} rejected; {} records queued)\n",
            i.path, i.files_done, i.files_rejected, i.records_queued
        ));
        if let Some(c) = &i.condition {
            o.push_str(&format!("  STOPPED: {c}\n"));
        }
        if let Some(e) = &i.last_error {
            o.push_str(&format!("  last error: {e}\n"));
        }
    }
    o.push_str("devices:\n");
    for d in &s.devices {
        let online = match &d.source {
            Some(src) if src.online => "online",
            Some(_) => "offline",
            None => "-",
        };
        o.push_str(&format!(
            "  {:<12} {:<4} {:<22} {:<7}",
            d.id,
            d.kind,
            d.address.as_deref().unwrap_or(""),
            online
        ));
        if let Some(src) = &d.source {
            o.push_str(&format!(
                " read {} queued {} dup {} malformed {}",
                src.punches_read, src.queued, src.duplicates, src.malformed
            ));
        }
        o.push_str(&format!(
            " | pending {} dead {} unmapped {}\n",
            d.queue.pending + d.queue.in_flight,
            d.queue.dead,
            d.queue.unmapped
        ));
        if let Some(err) = d.source.as_ref().and_then(|s| s.last_error.as_ref()) {
            o.push_str(&format!("    last error: {err}\n"));
        }
        if let (Some(src), Some(kind)) = (&d.source, crate::sources::kind(&d.kind)) {
            kind.render_figures(&src.figures, &mut o);
        }
    }
    if !s.dead_letters.is_empty() {
        o.push_str("dead letters (newest first):\n");
        for d in &s.dead_letters {
            o.push_str(&format!(
                "  #{} {} user {} at {}: {} code {} {:?} (log id {})\n",
                d.id,
                d.device_id,
                d.device_user_id,
                chrono::DateTime::from_timestamp(d.event_time, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                d.reason.as_deref().unwrap_or("-"),
                d.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                d.message.as_deref().unwrap_or(""),
                d.log_id.as_deref().unwrap_or("-"),
            ));
        }
    }
    o
}
