//! What a listening TCP device reports beside the common counters: the connections it refused at a
//! limit and those it closed for silence. Shown by `status` (text and JSON, as members of the
//! device), `/status`, and as gauges in `/metrics`.

use serde::{Deserialize, Serialize};

use crate::sources::kind::{Gauge, Members};

/// The figures of a listening `tcp` device (absent for `connect` mode).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TcpFigures {
    /// The device's `max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Connections accepted and closed at once since the daemon started, because the device had
    /// `max_connections` open or all listening devices together had `[limits]
    /// max_clock_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_refused: Option<u64>,
    /// When the last one was refused (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused_at: Option<i64>,
    /// Connections closed since the daemon started because nothing came for `idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_closed_idle: Option<u64>,
}

impl TcpFigures {
    /// The figures among a snapshot's members.
    pub fn from_members(m: &Members) -> TcpFigures {
        serde_json::from_value(serde_json::Value::Object(m.clone())).unwrap_or_default()
    }
}

/// The line `status` shows for a listening `tcp` device that refused or closed connections.
pub fn render(m: &Members, o: &mut String) {
    let f = TcpFigures::from_members(m);
    let refused = f.connections_refused.unwrap_or(0);
    let idle = f.connections_closed_idle.unwrap_or(0);
    if refused == 0 && idle == 0 {
        return;
    }
    let mut parts = Vec::new();
    if refused > 0 {
        let at = f
            .last_refused_at
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| format!(", the last at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        parts.push(format!(
            "{refused} connections refused at a limit (max_connections {}{at})",
            f.max_connections
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    if idle > 0 {
        parts.push(format!("{idle} closed after idle_timeout"));
    }
    o.push_str(&format!("    tcp: {}\n", parts.join(", ")));
}

fn int(m: &Members, key: &str) -> Option<i64> {
    m.get(key).and_then(serde_json::Value::as_i64)
}

/// The gauges of listening `tcp` devices in `/metrics`.
pub const GAUGES: &[Gauge] = &[
    Gauge {
        name: "clockbridge_device_connections_refused",
        help: "Listening tcp devices: connections accepted and closed at once since the daemon started, because the device's max_connections or [limits] max_clock_connections was reached",
        seconds: false,
        read: |m| int(m, "connections_refused"),
    },
    Gauge {
        name: "clockbridge_device_connections_closed_idle",
        help: "Listening tcp devices: connections closed since the daemon started because nothing came for idle_timeout",
        seconds: false,
        read: |m| int(m, "connections_closed_idle"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_idle_closes_are_shown_only_when_they_happened() {
        let mut quiet = Members::new();
        quiet.insert("max_connections".into(), 256.into());
        quiet.insert("connections_refused".into(), 0.into());
        quiet.insert("connections_closed_idle".into(), 0.into());
        let mut o = String::new();
        render(&quiet, &mut o);
        assert_eq!(o, "");
        assert_eq!((GAUGES[0].read)(&quiet), Some(0));
        assert_eq!((GAUGES[1].read)(&Members::new()), None);

        let mut busy = quiet.clone();
        busy.insert("connections_refused".into(), 12.into());
        busy.insert("last_refused_at".into(), 1_772_409_600.into());
        busy.insert("connections_closed_idle".into(), 3.into());
        render(&busy, &mut o);
        assert_eq!(
            o,
            "    tcp: 12 connections refused at a limit (max_connections 256, the last at 2026-03-02 00:00:00 UTC), 3 closed after idle_timeout\n"
        );
        assert_eq!((GAUGES[0].read)(&busy), Some(12));
    }
}
