//! The `/healthz` body: the health model's verdict ([`crate::health::Verdict`]) with the live figures
//! an operator looks at next (devices, the senders).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;

use crate::health::{Condition, Parts, Verdict};
use crate::sender::SenderSnapshot;

/// The `/healthz` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// Started, not stopping, and the queue's database thread answers.
    pub ready: bool,
    /// What the HTTP status says: no condition holds.
    pub healthy: bool,
    /// Why it is not healthy, one sentence per condition (empty when it is).
    pub problems: Vec<String>,
    /// The conditions themselves (`kind`, `subject`, `since`, `message`, `restart`).
    pub conditions: Vec<Condition>,
    pub devices: BTreeMap<String, DeviceHealth>,
    pub sender: SenderHealth,
    /// The HR senders (one per endpoint: `user_approval`, `archive_report`, `leave_accrual`).
    pub hr_senders: BTreeMap<String, HrSenderHealth>,
}

/// An HR sender in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HrSenderHealth {
    /// `ok`, or `blocked` while an application-level failure stops this endpoint's uploads.
    pub state: String,
    /// The fix, while blocked.
    pub blocked_reason: Option<String>,
    /// Unix seconds of the last accepted upload.
    pub last_success_at: Option<i64>,
    /// Requests in a row that got no answer within `feishu.request_timeout_secs`.
    pub timeouts_in_a_row: u64,
}

/// A device in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceHealth {
    pub online: bool,
    pub connections: u64,
    /// Unix seconds of the last line received.
    pub last_line_at: Option<i64>,
    pub last_error: Option<String>,
}

/// The punch sender in `/healthz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SenderHealth {
    /// `ok`, or `blocked` while an application-level failure stops every upload.
    pub state: String,
    /// The fix, while blocked.
    pub blocked_reason: Option<String>,
    /// Seconds since the claim loop last turned (`null` before its first turn).
    pub heartbeat_age_secs: Option<f64>,
    /// How long the sender may show no activity before it counts as stuck (the watchdog's limit).
    pub heartbeat_max_age_secs: f64,
    /// Unix seconds of the last accepted upload.
    pub last_success_at: Option<i64>,
    /// Requests in a row that got no answer within `feishu.request_timeout_secs`.
    pub timeouts_in_a_row: u64,
}

fn state_word(s: &SenderSnapshot) -> String {
    if s.blocked_reason.is_some() {
        "blocked".into()
    } else {
        "ok".into()
    }
}

/// The HTTP status and body for `verdict`, with the live figures of `parts`.
pub fn body(verdict: &Verdict, parts: &Parts) -> (StatusCode, Health) {
    let sender = parts.sender.snapshot();
    let health = Health {
        ready: verdict.ready(),
        healthy: verdict.healthy(),
        problems: verdict.problems(),
        conditions: verdict.conditions.clone(),
        devices: parts
            .devices
            .iter()
            .map(|(id, d)| {
                let s = d.stats.snapshot();
                (
                    id.clone(),
                    DeviceHealth {
                        online: s.online,
                        connections: s.connections,
                        last_line_at: s.last_line_at,
                        last_error: s.last_error,
                    },
                )
            })
            .collect(),
        sender: SenderHealth {
            state: state_word(&sender),
            heartbeat_age_secs: crate::metrics::heartbeat_age(
                parts.sender.heartbeat.load(Ordering::Relaxed),
            ),
            heartbeat_max_age_secs: parts.limits.sender_idle.as_secs_f64(),
            last_success_at: sender.last_success_at,
            timeouts_in_a_row: sender.timeouts_in_a_row,
            blocked_reason: sender.blocked_reason,
        },
        hr_senders: parts
            .senders
            .iter()
            .filter(|(_, s)| !Arc::ptr_eq(s, &parts.sender))
            .map(|(kind, s)| {
                let s = s.snapshot();
                (
                    kind.to_string(),
                    HrSenderHealth {
                        state: state_word(&s),
                        last_success_at: s.last_success_at,
                        timeouts_in_a_row: s.timeouts_in_a_row,
                        blocked_reason: s.blocked_reason,
                    },
                )
            })
            .collect(),
    };
    let code = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, health)
}
