//! The daemon's scheduled reconcile (`[reconcile] schedule = "daily 02:30"`, off by default): at
//! that time of the gateway's day, "yesterday" of each device in the device's own zone, with the
//! daemon's own client and queue, in its turn at the query budget (a CLI reconcile at the same
//! time waits for it, or it for the CLI's). Its result goes to the journal (one INFO line when
//! everything matched, one WARN line per device otherwise) and to [`LastCheck`], which `status`
//! and `/metrics` show (matched, not visible, missing from the queue).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Local, NaiveTime};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Options, Reconciliation};
use crate::config::Config;
use crate::feishu::FeishuClient;
use crate::queue::Queue;

/// The last scheduled check's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    /// Unix seconds when it finished.
    pub at: i64,
    /// The day checked (`YYYY-MM-DD`, each device's zone).
    pub day: String,
    pub matched: u64,
    pub not_visible: u64,
    /// Not delivered yet (pending, dead, unmapped).
    pub not_delivered: u64,
    /// Records the clocks hold that the queue does not.
    pub missing_from_queue: u64,
    /// Flows from other sources (informational).
    pub other_sources: u64,
    pub exit_code: u8,
    /// Why the check could not be made.
    pub error: Option<String>,
}

/// Where the daemon keeps the last check for `status` and `/metrics`.
pub type Shared = Arc<Mutex<Option<LastCheck>>>;

impl LastCheck {
    fn of(rec: &Reconciliation, at: i64) -> LastCheck {
        let t = &rec.matched.total;
        LastCheck {
            at,
            day: rec.from.to_string(),
            matched: t.confirmed,
            not_visible: t.not_visible,
            not_delivered: t.undelivered(),
            missing_from_queue: rec.missing_from_queue(),
            other_sources: rec.matched.other_sources.len() as u64,
            exit_code: rec.exit_code(),
            error: None,
        }
    }
}

/// How long until the next `at` of the gateway's day.
fn until_next(at: NaiveTime) -> Duration {
    let now = Local::now();
    let today = now.date_naive().and_time(at);
    let next = if today > now.naive_local() {
        today
    } else {
        today + chrono::Duration::days(1)
    };
    (next - now.naive_local())
        .to_std()
        .unwrap_or(Duration::from_secs(60))
}

/// Runs the scheduled check at `at` every day until `shutdown`.
pub async fn run(
    cfg: Arc<Config>,
    queue: Queue,
    client: Arc<FeishuClient>,
    at: NaiveTime,
    last: Shared,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(until_next(at)) => {}
            _ = shutdown.cancelled() => return,
        }
        let day = Local::now().date_naive().pred_opt().unwrap_or_default();
        check_and_keep(&cfg, &queue, client.clone(), day, &last).await;
    }
}

/// One check of `day` (each device's day in its own zone), logged and kept in `last` for `status`
/// and `/metrics`.
pub async fn check_and_keep(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    day: chrono::NaiveDate,
    last: &Shared,
) -> LastCheck {
    let check = check_day(cfg, queue, client, day).await;
    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(check.clone());
    check
}

/// One check of `day`, logged: one INFO line when everything matched, one WARN line per device
/// otherwise.
pub async fn check_day(
    cfg: &Config,
    queue: &Queue,
    client: Arc<FeishuClient>,
    day: chrono::NaiveDate,
) -> LastCheck {
    let opts = Options {
        from: day,
        to: day,
        devices: Vec::new(),
        users: Vec::new(),
        requeue: false,
        wait: Duration::ZERO,
        clocks: true,
    };
    let now = chrono::Utc::now().timestamp();
    match super::run(cfg, queue, client, &opts).await {
        Err(e) => {
            tracing::warn!(day = %day, "reconcile: the scheduled check could not be made: {e}");
            LastCheck {
                at: now,
                day: day.to_string(),
                exit_code: super::EXIT_FAILED,
                error: Some(e.to_string()),
                ..LastCheck::default()
            }
        }
        Ok(rec) => {
            let last = LastCheck::of(&rec, now);
            if rec.all_matched() {
                tracing::info!(
                    day = %day, matched = last.matched, requests = rec.cost.requests,
                    "reconcile: every punch of {day} is in Feishu ({} punches, {} device{})",
                    last.matched, rec.matched.devices.len(),
                    if rec.matched.devices.len() == 1 { "" } else { "s" }
                );
            } else {
                log_devices(&rec);
            }
            last
        }
    }
}

fn log_devices(rec: &Reconciliation) {
    let day = rec.from;
    for d in &rec.matched.devices {
        let t = &d.total;
        let clock = rec.clocks.iter().find(|c| c.device == d.device);
        let missing = clock.map_or(0, |c| c.missing_from_queue + c.not_read_yet);
        if t.not_visible == 0 && t.undelivered() == 0 && missing == 0 {
            continue;
        }
        tracing::warn!(
            device = %d.device, day = %day, matched = t.confirmed, not_visible = t.not_visible,
            not_delivered = t.undelivered(), missing_from_queue = missing,
            "reconcile: device {} on {day}: {} confirmed, {} delivered but not visible in Feishu, {} not delivered yet, {} records on the clock missing from the queue: run clockbridge reconcile --from {day} --to {day} --device {} for the details",
            d.device, t.confirmed, t.not_visible, t.undelivered(), missing, d.device
        );
    }
    for c in &rec.clocks {
        let listed = rec.matched.devices.iter().any(|d| d.device == c.device);
        if !listed && !c.agrees() {
            tracing::warn!(
                device = %c.device, day = %day, missing_from_queue = c.missing_from_queue + c.not_read_yet,
                "reconcile: device {} on {day}: {} records on the clock missing from the queue",
                c.device, c.missing_from_queue + c.not_read_yet
            );
        }
    }
}

/// The `status` line of the last scheduled check.
pub fn status_line(r: &LastCheck) -> String {
    match &r.error {
        Some(e) => format!("reconcile: {}: could not be made: {e}\n", r.day),
        None if r.exit_code == super::EXIT_MATCHED => format!(
            "reconcile: {}: every punch in Feishu ({} matched)\n",
            r.day, r.matched
        ),
        None => format!(
            "reconcile: {}: {} matched, {} NOT VISIBLE in Feishu, {} not delivered yet, {} missing from the queue: run clockbridge reconcile --from {} --to {}\n",
            r.day, r.matched, r.not_visible, r.not_delivered, r.missing_from_queue, r.day, r.day
        ),
    }
}
