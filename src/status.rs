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
//! `kind`, `message`, `since`, `restart`; empty when it is healthy or not running);
//! `unmapped_users` how many device users have punches waiting for a mapping (`users`) and the
//! [`UNMAPPED_LISTED`] with the most (`top`, as `clockbridge unmapped` lists them: [`crate::unmapped`]);
//! `backlog` how far behind the punches are (what is left to send, its oldest punch, the time to
//! drain it at the running daemon's current delivery rate).
//! Members may be added, never renamed. Every time in it is Unix seconds; the text shows a punch's
//! time in its device's zone with the offset ([`crate::device_time`]).
//!
//! The daemon's figures and conditions come from its newer snapshot: the queue's `runtime` row or
//! the status file beside the queue, which it still writes while the queue's disk is full
//! ([`crate::snapshot`]). The `backlog` member and line are in `status/backlog.rs`.

mod backlog;

use std::path::Path;

use serde::Serialize;

use backlog::render_backlog;
pub use backlog::BacklogStatus;

use crate::config::Config;
use crate::device_time::DeviceTimes;
use crate::health::Condition;
use crate::logging::visible;
use crate::queue::{
    open_read_only, read_backlog, read_counts, read_dead_letters, read_oldest_outstanding,
    read_runtime, read_waiting_users, DeadLetter, QueueError, StateCounts, WaitingUser,
};
use crate::sender::SenderSnapshot;
use crate::snapshot::{RuntimeSnapshot, RUNTIME_KEY};
use crate::sources::DeviceSnapshot;

/// A snapshot older than this means the daemon is not running.
pub const STALE_AFTER_MS: i64 = 15_000;

/// The device users with the most punches waiting for a mapping that `status` lists.
pub const UNMAPPED_LISTED: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub daemon: DaemonStatus,
    pub queue: QueueStatus,
    /// How far behind the punches are.
    pub backlog: BacklogStatus,
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
    /// The daemon's last scheduled reconcile (`[reconcile] schedule`), from its snapshot.
    pub reconcile: Option<crate::reconcile::schedule::LastCheck>,
    /// The newest dead letters (at most 20).
    pub dead_letters: Vec<DeadLetter>,
    /// The device users whose punches wait for a mapping: how many, and those with the most.
    pub unmapped_users: UnmappedUsers,
}

/// `status`'s summary of the device users whose punches wait for a mapping.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnmappedUsers {
    /// How many device users have punches waiting.
    pub users: u64,
    /// The [`UNMAPPED_LISTED`] with the most punches waiting, most first.
    pub top: Vec<WaitingUser>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    /// A daemon holds the queue's lock (or, where the lock cannot be looked at, its snapshot is
    /// fresh).
    pub running: bool,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub started_at: Option<i64>,
    /// When the daemon last wrote its snapshot (Unix seconds).
    pub snapshot_at: Option<i64>,
    /// The pid written in the queue's lock file by the daemon that holds it (`None`: no daemon holds
    /// it, or the lock file cannot be read).
    pub lock_pid: Option<u32>,
    /// A daemon holds the lock but has not written its snapshot for [`STALE_AFTER_MS`] or more: it
    /// is alive but cannot write its queue (disk full, I/O error), or it is stuck.
    pub snapshot_stale: bool,
    /// Seconds since the running daemon last wrote its snapshot (since it took the lock, if it has
    /// written none yet).
    pub snapshot_age_secs: Option<i64>,
}

/// Whether a daemon runs on the queue at `path`, from its lock ([`crate::queue::lock`]) and its
/// last snapshot (`snap`, written at `snap_at` Unix ms); `now` in Unix ms.
///
/// The lock decides: a daemon that holds it is running, whatever its snapshot says (one that cannot
/// write its queue cannot write its snapshot either); with the lock free nothing runs. Only when
/// the lock file cannot be looked at (another user's 0600 file) does a fresh snapshot say it.
fn daemon_state(
    path: &Path,
    snap: Option<&RuntimeSnapshot>,
    snap_at: Option<i64>,
    now: i64,
) -> DaemonStatus {
    use crate::queue::lock::{probe, Probe};
    let fresh_of = |pid: Option<u32>| match (snap, snap_at) {
        (Some(s), Some(at)) if s.pid != 0 && pid.is_none_or(|p| p == s.pid) => {
            Some(now - at < STALE_AFTER_MS)
        }
        _ => None,
    };
    let (running, pid, lock_pid, own_snapshot, silent_ms) = match probe(path) {
        Probe::Held { pid, since } => {
            let since_ms = since
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            let own = fresh_of(pid).is_some();
            // silent since its last snapshot, or since it took the lock when it wrote none yet
            let last = if own { snap_at } else { since_ms };
            (true, pid, pid, own, last.map(|t| (now - t).max(0)))
        }
        Probe::Free => (false, None, None, false, None),
        Probe::Unknown(_) => {
            let fresh = fresh_of(None) == Some(true);
            let pid = snap.filter(|_| fresh).map(|s| s.pid);
            (fresh, pid, None, fresh, snap_at.map(|t| (now - t).max(0)))
        }
    };
    let own = snap.filter(|_| own_snapshot);
    DaemonStatus {
        running,
        pid,
        version: snap.map(|s| s.version.clone()),
        started_at: own.map(|s| s.started_at),
        snapshot_at: snap_at.map(|t| t / 1000),
        lock_pid,
        snapshot_stale: running && silent_ms.is_some_and(|ms| ms >= STALE_AFTER_MS),
        snapshot_age_secs: silent_ms.filter(|_| running).map(|ms| ms / 1000),
    }
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
    let punches = crate::feishu::lanes::PUNCHES.kind();
    let backlog = read_backlog(&conn, punches)?;
    let dead_letters = read_dead_letters(&conn, 20)?;
    let waiting = read_waiting_users(&conn, UNMAPPED_LISTED)?;
    let runtime = read_runtime(&conn, RUNTIME_KEY)?;
    let now = crate::queue::now_ms();
    let (snap, snap_at) = newer(
        runtime.map(|(json, at)| (serde_json::from_str::<RuntimeSnapshot>(&json).ok(), at)),
        crate::snapshot::read_file(path),
    );
    let daemon = daemon_state(path, snap.as_ref(), snap_at, now);
    // the devices' live figures only from the running daemon's own, fresh snapshot
    let running = daemon.running && !daemon.snapshot_stale && daemon.started_at.is_some();
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
    let rate = snap
        .as_ref()
        .filter(|_| running)
        .and_then(|s| s.sender.delivery_rate_per_sec);
    let backlog = BacklogStatus::new(
        cfg,
        backlog,
        counts.by_kind.get(punches).copied().unwrap_or_default(),
        rate,
        now,
    );
    Ok(Status {
        daemon,
        backlog,
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
        reconcile: snap.as_ref().and_then(|s| s.reconcile.clone()),
        sender: snap.map(|s| s.sender),
        dead_letters,
        unmapped_users: UnmappedUsers {
            users: waiting.total_users,
            top: waiting.users,
        },
    })
}

/// The daemon's newer snapshot: the queue's copy (which a full disk stops) or the status file's
/// ([`crate::snapshot`]), with when it was taken (Unix ms).
fn newer(
    table: Option<(Option<RuntimeSnapshot>, i64)>,
    file: Option<(RuntimeSnapshot, i64)>,
) -> (Option<RuntimeSnapshot>, Option<i64>) {
    match (table, file) {
        (Some((Some(snap), at)), Some((_, file_at))) if at >= file_at => (Some(snap), Some(at)),
        (_, Some((snap, at))) => (Some(snap), Some(at)),
        (Some((snap, at)), None) => (snap, Some(at)),
        (None, None) => (None, None),
    }
}

/// The `daemon:` line (and, for a daemon that stopped writing its status, what that likely means).
fn render_daemon(d: &DaemonStatus) -> String {
    let pid = d
        .pid
        .map(|p| format!("pid {p}"))
        .unwrap_or_else(|| "pid unknown".into());
    if !d.running {
        return "daemon:    not running\n".to_string();
    }
    if !d.snapshot_stale {
        return format!("daemon:    running ({pid})\n");
    }
    let silent = d
        .snapshot_age_secs
        .map(|s| format!("for {s} s"))
        .unwrap_or_else(|| "for a while".into());
    format!(
        "daemon:    running ({pid}), but it has not written its status {silent}: it likely cannot write its queue (disk full or I/O error: see its log, e.g. journalctl -u clockbridge); the figures below may be old\n"
    )
}

/// The `unmapped users:` block: how many, and the ones with the most punches waiting (device, user,
/// punches, the name the device knows), in aligned columns.
fn render_unmapped(u: &UnmappedUsers, o: &mut String) {
    if u.users == 0 {
        return;
    }
    let shown = if u.users as usize > u.top.len() {
        format!(", the {} with the most listed", u.top.len())
    } else {
        String::new()
    };
    o.push_str(&format!(
        "unmapped users: {}{shown} (their punches wait for a mapping: `clockbridge unmapped` lists them all and says what to do)\n",
        u.users
    ));
    let cells: Vec<[String; 3]> = u
        .top
        .iter()
        .map(|w| {
            [
                visible(&w.device_id),
                visible(&w.device_user_id),
                w.count.to_string(),
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (dw, uw, cw) = (width(0), width(1), width(2));
    for (c, w) in cells.iter().zip(&u.top) {
        o.push_str(&format!(
            "  {:<dw$} {:<uw$} {:>cw$} {:<7}  {}\n",
            c[0],
            c[1],
            c[2],
            if w.count == 1 { "punch" } else { "punches" },
            w.name.as_deref().map_or_else(|| "-".into(), visible)
        ));
    }
}

/// Human-readable rendering.
pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
    o.push_str(&render_daemon(&s.daemon));
    // the health model's judgement, only from a running daemon's own fresh snapshot (a stale one
    // may be old news, and render_daemon already says why; a daemon that has not written its first
    // snapshot yet has no judgement to show: say so rather than "ok")
    if s.daemon.running && !s.daemon.snapshot_stale && s.daemon.started_at.is_none() {
        o.push_str(
            "health:    not known yet (the daemon has not written its status since it started)\n",
        );
    } else if s.daemon.running && !s.daemon.snapshot_stale {
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
    if let Some(r) = &s.reconcile {
        o.push_str(&crate::reconcile::schedule::status_line(r));
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
    let running = s.daemon.running && !s.daemon.snapshot_stale;
    o.push_str(&render_backlog(&s.backlog, running));
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
        if !sender.pacing.is_empty() {
            o.push_str(&format!("  {}\n", crate::sender::pacing_text(sender)));
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
    // columns as wide as their longest cell (ids, kinds and addresses vary: "serial", a port path)
    let width = |f: &dyn Fn(&DeviceStatus) -> usize, min: usize| {
        s.devices.iter().map(f).max().unwrap_or(0).max(min)
    };
    let id_w = width(&|d| d.id.chars().count(), 12);
    let kind_w = width(&|d| d.kind.chars().count(), 4);
    let addr_w = width(
        &|d| d.address.as_deref().map_or(1, |a| a.chars().count()),
        22,
    );
    for d in &s.devices {
        let online = match &d.source {
            Some(src) if src.online => "online",
            Some(_) => "offline",
            None => "-",
        };
        o.push_str(&format!(
            "  {:<id_w$} {:<kind_w$} {:<addr_w$} {:<7}",
            d.id,
            d.kind,
            d.address.as_deref().unwrap_or("-"),
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
    // punch times as the admin reads them: in their device's zone, with the offset
    let times = DeviceTimes::from_zones(
        s.devices
            .iter()
            .map(|d| (d.id.clone(), d.timezone.parse().unwrap_or(chrono_tz::UTC))),
    );
    render_unmapped(&s.unmapped_users, &mut o);
    if !s.dead_letters.is_empty() {
        o.push_str("dead letters (newest first):\n");
        for d in &s.dead_letters {
            o.push_str(&format!(
                "  #{} {} user {} at {}: {} code {} {:?} (log id {})\n",
                d.id,
                d.device_id,
                d.device_user_id,
                times.show(&d.device_id, d.event_time),
                d.reason.as_deref().unwrap_or("-"),
                d.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                d.message.as_deref().unwrap_or(""),
                d.log_id.as_deref().unwrap_or("-"),
            ));
        }
        if let Some(note) = times.note(s.dead_letters.iter().map(|d| d.device_id.as_str())) {
            o.push_str(&format!("  ({note})\n"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::lock::{lock_path, DaemonLock};

    fn snap(pid: u32) -> RuntimeSnapshot {
        RuntimeSnapshot {
            reconcile: None,
            pid,
            version: "0.1.0".into(),
            started_at: 1_700_000_000,
            ..RuntimeSnapshot::default()
        }
    }

    fn now() -> i64 {
        crate::queue::now_ms()
    }

    #[test]
    fn the_newer_of_the_queues_snapshot_and_the_status_files_is_believed() {
        let (old, new) = (snap(1), snap(2));
        let pid = |r: (Option<RuntimeSnapshot>, Option<i64>)| (r.0.map(|s| s.pid), r.1);
        // the disk is full: the queue's row is old, the file's is new
        assert_eq!(
            pid(newer(
                Some((Some(old.clone()), 10)),
                Some((new.clone(), 20))
            )),
            (Some(2), Some(20))
        );
        assert_eq!(
            pid(newer(
                Some((Some(new.clone()), 30)),
                Some((old.clone(), 20))
            )),
            (Some(2), Some(30))
        );
        // an unreadable row, a missing file, neither
        assert_eq!(
            pid(newer(Some((None, 30)), Some((old.clone(), 20)))),
            (Some(1), Some(20))
        );
        assert_eq!(pid(newer(Some((Some(old), 10)), None)), (Some(1), Some(10)));
        assert_eq!(pid(newer(Some((None, 10)), None)), (None, Some(10)));
        assert_eq!(pid(newer(None, Some((new, 5)))), (Some(2), Some(5)));
        assert_eq!(pid(newer(None, None)), (None, None));
    }

    #[test]
    fn a_fresh_snapshot_without_the_lock_is_a_daemon_that_died() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        // killed a moment ago: its snapshot is fresh, its lock went with it
        drop(DaemonLock::acquire(&q).unwrap());
        let d = daemon_state(&q, Some(&snap(4321)), Some(now() - 1_000), now());
        assert!(!d.running);
        assert_eq!((d.pid, d.lock_pid, d.started_at), (None, None, None));
        assert!(!d.snapshot_stale);
        assert_eq!(render_daemon(&d), "daemon:    not running\n");
    }

    #[test]
    fn a_daemon_holding_the_lock_runs_whatever_its_snapshot_says() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        let _lock = DaemonLock::acquire(&q).unwrap();
        let me = std::process::id();

        // its own fresh snapshot
        let d = daemon_state(&q, Some(&snap(me)), Some(now() - 1_000), now());
        assert!(d.running && !d.snapshot_stale);
        assert_eq!((d.pid, d.lock_pid), (Some(me), Some(me)));
        assert_eq!(d.started_at, Some(1_700_000_000));
        assert_eq!(
            render_daemon(&d),
            format!("daemon:    running (pid {me})\n")
        );

        // just started: the snapshot is the previous daemon's (or there is none)
        for old in [Some(snap(7)), Some(snap(0)), None] {
            let d = daemon_state(
                &q,
                old.as_ref(),
                old.as_ref().map(|_| now() - 600_000),
                now(),
            );
            assert!(d.running && !d.snapshot_stale, "{d:?}");
            assert_eq!(d.pid, Some(me));
            assert_eq!(d.started_at, None);
        }

        // alive but silent for a minute: it cannot write its queue
        let d = daemon_state(&q, Some(&snap(me)), Some(now() - 60_000), now());
        assert!(d.running && d.snapshot_stale);
        assert_eq!(d.snapshot_age_secs, Some(60));
        let text = render_daemon(&d);
        assert!(
            text.starts_with(&format!(
                "daemon:    running (pid {me}), but it has not written its status for 60 s: it likely cannot write its queue (disk full or I/O error: see its log"
            )),
            "{text}"
        );
    }

    /// A status with nothing in the queue, no device and `d` as its daemon.
    fn quiet_status(d: DaemonStatus, q: &Path) -> Status {
        Status {
            daemon: d,
            queue: QueueStatus {
                path: q.display().to_string(),
                pending: 0,
                in_flight: 0,
                delivered: 0,
                dead: 0,
                unmapped: 0,
                delivered_pruned: 0,
                oldest_outstanding_age_secs: None,
            },
            backlog: BacklogStatus::default(),
            kinds: Default::default(),
            devices: Vec::new(),
            sender: None,
            senders: Default::default(),
            inbox: Default::default(),
            conditions: Vec::new(),
            reconcile: None,
            dead_letters: Vec::new(),
            unmapped_users: UnmappedUsers::default(),
        }
    }

    fn device(id: &str, timezone: &str) -> DeviceStatus {
        DeviceStatus {
            id: id.into(),
            kind: "zk".into(),
            address: Some("10.0.0.31:4370".into()),
            location_name: id.into(),
            timezone: timezone.into(),
            source: None,
            queue: StateCounts::default(),
        }
    }

    #[test]
    fn unmapped_users_and_dead_letters_read_in_their_devices_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        let mut s = quiet_status(daemon_state(&q, None, None, now()), &q);
        s.devices = vec![device("lobby-zk", "Asia/Shanghai"), device("door-1", "UTC")];
        let waiting = |dev: &str, user: &str, name: Option<&str>, count| WaitingUser {
            device_id: dev.into(),
            device_user_id: user.into(),
            name: name.map(Into::into),
            count,
            first_event_time: 0,
            last_event_time: 0,
        };
        s.unmapped_users = UnmappedUsers {
            users: 7,
            top: vec![
                waiting("lobby-zk", "1019", Some("Zhang\u{7}Wei"), 120),
                waiting("door-1", "77", None, 3),
                waiting("lobby-zk", "5", Some("王伟"), 1),
            ],
        };
        let dead = |id, dev: &str| DeadLetter {
            id,
            kind: "user_flow".into(),
            device_id: dev.into(),
            device_user_id: "9".into(),
            // 2026-12-01 00:44:56 UTC
            event_time: 1_796_085_896,
            reason: Some("before_2022".into()),
            code: None,
            message: Some("m".into()),
            log_id: None,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            created_at: 0,
        };
        s.dead_letters = vec![dead(2, "lobby-zk"), dead(1, "gone")];
        let text = render_text(&s);
        assert!(
            text.contains(
                "unmapped users: 7, the 3 with the most listed (their punches wait for a mapping: `clockbridge unmapped` lists them all and says what to do)\n\
                 \x20 lobby-zk 1019 120 punches  Zhang\\u{7}Wei\n\
                 \x20 door-1   77     3 punches  -\n\
                 \x20 lobby-zk 5      1 punch    王伟\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "dead letters (newest first):\n\
                 \x20 #2 lobby-zk user 9 at 2026-12-01 08:44:56 +08:00: before_2022 code - \"m\" (log id -)\n\
                 \x20 #1 gone user 9 at 2026-12-01 00:44:56 +00:00: before_2022 code - \"m\" (log id -)\n\
                 \x20 (gone is not a device in the configuration: its times are shown in UTC (+00:00))\n"
            ),
            "{text}"
        );
        // no unmapped user: no block
        s.unmapped_users = UnmappedUsers::default();
        assert!(!render_text(&s).contains("unmapped users"));
    }

    #[test]
    fn the_health_line_says_ok_only_from_the_running_daemons_own_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        let _lock = DaemonLock::acquire(&q).unwrap();
        let me = std::process::id();
        let status = |d: DaemonStatus| quiet_status(d, &q);
        let own = daemon_state(&q, Some(&snap(me)), Some(now() - 1_000), now());
        assert!(render_text(&status(own)).contains("\nhealth:    ok\n"));
        // just started: the snapshot is the previous daemon's, whose verdict is not this one's
        let previous = daemon_state(&q, Some(&snap(7)), Some(now() - 600_000), now());
        let text = render_text(&status(previous));
        assert!(!text.contains("health:    ok"), "{text}");
        assert!(text.contains("health:    not known yet"), "{text}");
    }

    #[test]
    fn a_daemon_that_never_wrote_a_snapshot_is_stale_from_when_it_took_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("queue.db");
        let _lock = DaemonLock::acquire(&q).unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(lock_path(&q))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let d = daemon_state(&q, Some(&snap(7)), Some(now() - 600_000), now());
        assert!(d.running && d.snapshot_stale, "{d:?}");
        assert_eq!(d.snapshot_age_secs, Some(120));
    }
}
