//! What a ZKTeco terminal reports beside the common counters: shown by `status` (text and JSON, as
//! members of the device), `/status`, and as gauges in `/metrics`.

use serde::{Deserialize, Serialize};

use crate::sources::kind::{Gauge, Members};

/// The figures of a `zk` device (every member absent until known).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZkFigures {
    /// The device's serial number (`~SerialNumber`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Device clock minus gateway clock, in seconds (positive: the device is ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// When the skew was measured (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_measured_at: Option<i64>,
    /// When clockbridge last set the device's clock (`sync_clock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_set_at: Option<i64>,
    /// Attendance records on the device at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_records: Option<u64>,
    /// Users on the device at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_users: Option<u64>,
    /// Records of the device's log committed to the queue (the watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<u64>,
    /// When the last poll completed (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<i64>,
    /// Polls completed since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polls: Option<u64>,
    /// Whether realtime events are subscribed on the current connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<bool>,
    /// Realtime punches received since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_events: Option<u64>,
    /// When clockbridge last cleared the device's log (`clear_device_log`), and how many records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cleared_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_cleared: Option<u64>,
    /// The last anomaly (log shrank, serial number changed, clock skew), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning_at: Option<i64>,
    /// Device users whose punches wait for a mapping, with their names from the device (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped_users: Vec<UnmappedUser>,
}

/// A device user without a mapping, and the name the device knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnmappedUser {
    pub device_user_id: String,
    pub name: Option<String>,
}

impl ZkFigures {
    /// The figures among a snapshot's members.
    pub fn from_members(m: &Members) -> ZkFigures {
        serde_json::from_value(serde_json::Value::Object(m.clone())).unwrap_or_default()
    }
}

/// The lines `status` shows for a `zk` device.
pub fn render(m: &Members, o: &mut String) {
    let z = ZkFigures::from_members(m);
    let mut parts = Vec::new();
    if let Some(sn) = &z.serial_number {
        parts.push(format!("serial {sn}"));
    }
    if let Some(n) = z.device_records {
        parts.push(format!("{n} records on the device"));
    }
    if let Some(w) = z.watermark {
        parts.push(format!("watermark {w}"));
    }
    if let Some(skew) = z.clock_skew_secs {
        let at = z
            .clock_skew_measured_at
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| format!(" (measured {})", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        parts.push(format!("clock skew {skew:+} s{at}"));
    }
    if let Some(rt) = z.realtime {
        parts.push(format!(
            "realtime {} ({} events)",
            if rt { "on" } else { "off" },
            z.realtime_events.unwrap_or(0)
        ));
    }
    if let Some(t) = z
        .log_cleared_at
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
    {
        parts.push(format!(
            "log cleared {} ({} records in all)",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            z.records_cleared.unwrap_or(0)
        ));
    }
    if !parts.is_empty() {
        o.push_str(&format!("    zk: {}\n", parts.join(", ")));
    }
    if let Some(w) = &z.last_warning {
        o.push_str(&format!("    warning: {w}\n"));
    }
    if !z.unmapped_users.is_empty() {
        let users: Vec<String> = z
            .unmapped_users
            .iter()
            .map(|u| {
                let id = crate::logging::visible(&u.device_user_id);
                match &u.name {
                    Some(n) => format!("{id} ({})", crate::logging::visible(n)),
                    None => id,
                }
            })
            .collect();
        o.push_str(&format!("    unmapped users: {}\n", users.join(", ")));
    }
}

fn int(m: &Members, key: &str) -> Option<i64> {
    m.get(key).and_then(serde_json::Value::as_i64)
}

/// The gauges of `zk` devices in `/metrics`.
pub const GAUGES: &[Gauge] = &[
    Gauge {
        name: "clockbridge_device_clock_skew",
        help: "ZKTeco devices: device clock minus gateway clock at the last poll (positive: ahead)",
        seconds: true,
        read: |m| int(m, "clock_skew_secs"),
    },
    Gauge {
        name: "clockbridge_device_log_records",
        help: "ZKTeco devices: attendance records on the device at the last poll",
        seconds: false,
        read: |m| int(m, "device_records"),
    },
    Gauge {
        name: "clockbridge_device_watermark_records",
        help: "ZKTeco devices: records of the device's log committed to the queue",
        seconds: false,
        read: |m| int(m, "watermark"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_show_the_figures_that_are_known() {
        let z = ZkFigures {
            serial_number: Some("SN1".into()),
            device_records: Some(120),
            watermark: Some(118),
            clock_skew_secs: Some(-3),
            realtime: Some(true),
            realtime_events: Some(2),
            last_warning: Some("log shrank".into()),
            unmapped_users: vec![UnmappedUser {
                device_user_id: "7".into(),
                // a name from the device may hold control characters: shown escaped
                name: Some("Li\u{1b}[2J".into()),
            }],
            ..Default::default()
        };
        let m = match serde_json::to_value(&z).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut o = String::new();
        render(&m, &mut o);
        assert_eq!(
            o,
            "    zk: serial SN1, 120 records on the device, watermark 118, clock skew -3 s, realtime on (2 events)\n    warning: log shrank\n    unmapped users: 7 (Li\\u{1b}[2J)\n"
        );
        assert_eq!((GAUGES[0].read)(&m), Some(-3));
        assert_eq!((GAUGES[2].read)(&m), Some(118));
        let mut none = String::new();
        render(&Members::new(), &mut none);
        assert_eq!(none, "");
        assert_eq!((GAUGES[1].read)(&Members::new()), None);
    }
}
