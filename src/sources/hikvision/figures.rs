//! What a Hikvision terminal reports beside the common counters (`online`, last punch, errors): shown
//! by `status` (text and JSON, as members of the device), `/status`, and as gauges in `/metrics`.

use serde::{Deserialize, Serialize};

use crate::sources::kind::{Gauge, Members};

/// The figures of a `hikvision` device (every member absent until known).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HikFigures {
    /// The terminal's model and serial number (`/ISAPI/System/deviceInfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// The `serialNo` of the newest event committed to the queue (the watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_watermark: Option<u64>,
    /// The time of the newest event read (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<i64>,
    /// Device clock minus gateway clock, in seconds (positive: the device is ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_measured_at: Option<i64>,
    /// When clockbridge last set the terminal's clock (`sync_clock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_set_at: Option<i64>,
    /// Logins the terminal refused (wrong user or password) since the daemon started.
    #[serde(default)]
    pub auth_failures: u64,
    /// Digest challenges answered again because a nonce expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rechallenges: Option<u64>,
    /// When clockbridge next tries to log in after refused logins (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_retry_at: Option<i64>,
    /// Pulls of the event log completed, and when the last one ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pull_at: Option<i64>,
    /// Events read that are not punches (failed verifications, door, alarm...), never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_skipped: Option<u64>,
    /// Whether the alert stream is open, punches it brought, and how often it dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_drops: Option<u64>,
    /// Times the terminal's serial numbers started over (factory reset, another terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_resets: Option<u64>,
    /// The last anomaly (serial reset, clock skew, unreadable event), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning_at: Option<i64>,
}

impl HikFigures {
    /// The figures among a snapshot's members.
    pub fn from_members(m: &Members) -> HikFigures {
        serde_json::from_value(serde_json::Value::Object(m.clone())).unwrap_or_default()
    }
}

fn utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The lines `status` shows for a `hikvision` device.
pub fn render(m: &Members, o: &mut String) {
    let h = HikFigures::from_members(m);
    let mut parts = Vec::new();
    match (&h.model, &h.serial_number) {
        (Some(m), Some(s)) => parts.push(format!("{} serial {}", v(m), v(s))),
        (None, Some(s)) => parts.push(format!("serial {}", v(s))),
        (Some(m), None) => parts.push(v(m)),
        (None, None) => {}
    }
    if let Some(w) = h.serial_watermark {
        parts.push(format!("serial watermark {w}"));
    }
    if let Some(t) = h.last_event_at {
        parts.push(format!("last event {}", utc(t)));
    }
    if let Some(skew) = h.clock_skew_secs {
        parts.push(format!("clock skew {skew:+} s"));
    }
    if let Some(rt) = h.realtime {
        parts.push(format!(
            "realtime {} ({} events, {} drops)",
            if rt { "on" } else { "off" },
            h.realtime_events.unwrap_or(0),
            h.stream_drops.unwrap_or(0)
        ));
    }
    if let Some(n) = h.events_skipped {
        parts.push(format!("{n} non-punch events skipped"));
    }
    if !parts.is_empty() {
        o.push_str(&format!("    hikvision: {}\n", parts.join(", ")));
    }
    if h.auth_failures > 0 {
        let retry = h
            .auth_retry_at
            .map(|t| format!(", next login {}", utc(t)))
            .unwrap_or_default();
        o.push_str(&format!(
            "    auth failures: {} (check the device user and password){retry}\n",
            h.auth_failures
        ));
    }
    if let Some(w) = &h.last_warning {
        o.push_str(&format!("    warning: {w}\n"));
    }
}

fn v(s: &str) -> String {
    crate::logging::visible(s)
}

fn int(m: &Members, key: &str) -> Option<i64> {
    m.get(key).and_then(serde_json::Value::as_i64)
}

/// The gauges of `hikvision` devices in `/metrics`.
pub const GAUGES: &[Gauge] = &[
    Gauge {
        name: "clockbridge_hikvision_clock_skew",
        help: "Hikvision terminals: device clock minus gateway clock at the last pull (positive: ahead)",
        seconds: true,
        read: |m| int(m, "clock_skew_secs"),
    },
    Gauge {
        name: "clockbridge_hikvision_serial_watermark",
        help: "Hikvision terminals: serialNo of the newest event committed to the queue",
        seconds: false,
        read: |m| int(m, "serial_watermark"),
    },
    Gauge {
        name: "clockbridge_hikvision_auth_failures",
        help: "Hikvision terminals: logins refused (wrong user or password) since the daemon started",
        seconds: false,
        read: |m| int(m, "auth_failures"),
    },
    Gauge {
        name: "clockbridge_hikvision_last_event_timestamp",
        help: "Hikvision terminals: Unix time of the newest event read",
        seconds: true,
        read: |m| int(m, "last_event_at"),
    },
    Gauge {
        name: "clockbridge_hikvision_stream_drops",
        help: "Hikvision terminals: alert streams found dropped or silent since the daemon started",
        seconds: false,
        read: |m| int(m, "stream_drops"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_show_watermark_skew_and_auth_failures() {
        let h = HikFigures {
            model: Some("DS-K1T341AMF".into()),
            serial_number: Some("SN1".into()),
            serial_watermark: Some(4711),
            clock_skew_secs: Some(-3),
            auth_failures: 2,
            realtime: Some(true),
            realtime_events: Some(5),
            stream_drops: Some(1),
            ..Default::default()
        };
        let m = match serde_json::to_value(&h).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut o = String::new();
        render(&m, &mut o);
        assert_eq!(
            o,
            "    hikvision: DS-K1T341AMF serial SN1, serial watermark 4711, clock skew -3 s, realtime on (5 events, 1 drops)\n    auth failures: 2 (check the device user and password)\n"
        );
        assert_eq!((GAUGES[1].read)(&m), Some(4711));
        assert_eq!((GAUGES[2].read)(&m), Some(2));
        assert_eq!((GAUGES[4].read)(&m), Some(1));
    }
}
