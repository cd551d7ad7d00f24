//! What a pushing terminal reports beside the common counters (records read, malformed, duplicates):
//! shown by `status` (text and JSON, as members of the device), `/status`, and as gauges in
//! `/metrics`.

use serde::{Deserialize, Serialize};

use crate::sources::kind::{Gauge, Members};

/// The figures of an `adms` device (every member absent until known).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdmsFigures {
    /// The serial number the terminal sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// The address its last request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When its last request came (Unix seconds); online while within 3 × `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_at: Option<i64>,
    /// When its last ATTLOG push was answered `OK` (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_at: Option<i64>,
    /// ATTLOG pushes answered `OK`, and the records they held, since the daemon started.
    #[serde(default)]
    pub pushes: u64,
    #[serde(default)]
    pub records_pushed: u64,
    /// Pushes answered with an error so that the terminal keeps them (the queue could not take
    /// them, the daemon was stopping, the body was over `adms.max_body_size`).
    #[serde(default)]
    pub pushes_refused: u64,
    /// Bodies refused for their size (`adms.max_body_size`).
    #[serde(default)]
    pub bodies_too_large: u64,
    /// The `Stamp=` of its last committed ATTLOG push (a resume marker only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stamp: Option<String>,
    /// From its `INFO`: firmware, users, fingerprints, records on the terminal, its own IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fingerprints: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ip: Option<String>,
    /// Terminal clock minus gateway clock, estimated from a realtime push (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// User names taken from its OPERLOG (`USER` lines), since the daemon started.
    #[serde(default)]
    pub user_names_seen: u64,
    /// Operator commands waiting for the terminal's next poll or its answer.
    #[serde(default)]
    pub commands_waiting: u64,
    /// The last command's outcome, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<String>,
    /// Terminals not configured that tried to push to the listener (shown with every `adms`
    /// device: the admin adds the one that should be there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_terminals: Vec<UnknownTerminal>,
}

/// A terminal whose SN is not configured, refused with 403.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnknownTerminal {
    pub serial_number: String,
    pub address: String,
    /// First and last refusal (Unix seconds), and how many requests were refused.
    pub first_at: i64,
    pub last_at: i64,
    pub requests: u64,
}

impl AdmsFigures {
    /// The figures among a snapshot's members.
    pub fn from_members(m: &Members) -> AdmsFigures {
        serde_json::from_value(serde_json::Value::Object(m.clone())).unwrap_or_default()
    }
}

fn at(t: Option<i64>) -> Option<String> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The lines `status` shows for an `adms` device.
pub fn render(m: &Members, o: &mut String) {
    let a = AdmsFigures::from_members(m);
    let mut parts = Vec::new();
    if let Some(sn) = &a.serial_number {
        parts.push(format!("SN {}", crate::logging::visible(sn)));
    }
    if let Some(addr) = &a.address {
        parts.push(format!("from {addr}"));
    }
    if let Some(t) = at(a.last_request_at) {
        parts.push(format!("last request {t}"));
    }
    match at(a.last_push_at) {
        Some(t) => parts.push(format!(
            "{} records in {} pushes, last push {t}",
            a.records_pushed, a.pushes
        )),
        None => parts.push("no push yet".into()),
    }
    if let Some(s) = &a.last_stamp {
        parts.push(format!("stamp {}", crate::logging::visible(s)));
    }
    o.push_str(&format!("    adms: {}\n", parts.join(", ")));
    let mut dev = Vec::new();
    if let Some(fw) = &a.firmware {
        dev.push(format!("firmware {fw}"));
    }
    if let Some(n) = a.device_users {
        dev.push(format!("{n} users"));
    }
    if let Some(n) = a.device_fingerprints {
        dev.push(format!("{n} fingerprints"));
    }
    if let Some(n) = a.device_records {
        dev.push(format!("{n} records on the terminal"));
    }
    if let Some(ip) = &a.device_ip {
        dev.push(format!("IP {ip}"));
    }
    if let Some(s) = a.clock_skew_secs {
        dev.push(format!("clock skew {s:+} s (from a realtime push)"));
    }
    if !dev.is_empty() {
        o.push_str(&format!("    terminal: {}\n", dev.join(", ")));
    }
    if a.pushes_refused > 0 {
        o.push_str(&format!(
            "    refused pushes: {} (the terminal keeps them and sends them again; {} over adms.max_body_size)\n",
            a.pushes_refused, a.bodies_too_large
        ));
    }
    if a.commands_waiting > 0 || a.last_command.is_some() {
        o.push_str(&format!(
            "    commands: {} waiting{}\n",
            a.commands_waiting,
            a.last_command
                .as_ref()
                .map(|c| format!("; last: {}", crate::logging::visible(c)))
                .unwrap_or_default()
        ));
    }
    for u in &a.unknown_terminals {
        o.push_str(&format!(
            "    an unknown terminal SN={} from {} tried to push ({} requests refused, last {}): add it as a kind = \"adms\" device with serial_number = \"{}\" if it is yours\n",
            crate::logging::visible(&u.serial_number),
            crate::logging::visible(&u.address),
            u.requests,
            at(Some(u.last_at)).unwrap_or_default(),
            crate::logging::visible(&u.serial_number),
        ));
    }
}

fn int(m: &Members, key: &str) -> Option<i64> {
    m.get(key).and_then(serde_json::Value::as_i64)
}

/// The gauges of `adms` devices in `/metrics`.
pub const GAUGES: &[Gauge] = &[
    Gauge {
        name: "clockbridge_adms_records_pushed",
        help: "ADMS terminals: ATTLOG records pushed and answered OK since the daemon started",
        seconds: false,
        read: |m| int(m, "records_pushed"),
    },
    Gauge {
        name: "clockbridge_adms_pushes_refused",
        help:
            "ADMS terminals: pushes answered with an error (the terminal keeps and re-sends them)",
        seconds: false,
        read: |m| int(m, "pushes_refused"),
    },
    Gauge {
        name: "clockbridge_adms_last_push_timestamp",
        help: "ADMS terminals: when the last push was answered OK (Unix time)",
        seconds: true,
        read: |m| int(m, "last_push_at"),
    },
    Gauge {
        name: "clockbridge_adms_device_users",
        help: "ADMS terminals: users on the terminal (from its INFO)",
        seconds: false,
        read: |m| int(m, "device_users"),
    },
    Gauge {
        name: "clockbridge_adms_device_records",
        help: "ADMS terminals: attendance records on the terminal (from its INFO)",
        seconds: false,
        read: |m| int(m, "device_records"),
    },
    Gauge {
        name: "clockbridge_adms_clock_skew",
        help: "ADMS terminals: terminal clock minus gateway clock, from a realtime push",
        seconds: true,
        read: |m| int(m, "clock_skew_secs"),
    },
    Gauge {
        name: "clockbridge_adms_unknown_terminals",
        help:
            "ADMS listener: terminals with an unknown SN that tried to push (within the last day)",
        seconds: false,
        read: |m| {
            m.get("unknown_terminals")
                .and_then(serde_json::Value::as_array)
                .map(|a| a.len() as i64)
                .or(Some(0))
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_show_pushes_the_terminal_and_unknown_terminals() {
        let a = AdmsFigures {
            serial_number: Some("CQUJ230160089".into()),
            address: Some("10.0.3.7".into()),
            last_push_at: Some(1_764_590_400),
            pushes: 3,
            records_pushed: 12,
            firmware: Some("Ver 8.0.4.7".into()),
            device_users: Some(25),
            unknown_terminals: vec![UnknownTerminal {
                serial_number: "XYZ9".into(),
                address: "10.0.3.9".into(),
                first_at: 1_764_590_000,
                last_at: 1_764_590_400,
                requests: 2,
            }],
            ..Default::default()
        };
        let m = match serde_json::to_value(&a).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut o = String::new();
        render(&m, &mut o);
        assert!(o.contains("    adms: SN CQUJ230160089, from 10.0.3.7, 12 records in 3 pushes, last push 2025-12-01 12:00:00 UTC"), "{o}");
        assert!(
            o.contains("    terminal: firmware Ver 8.0.4.7, 25 users"),
            "{o}"
        );
        assert!(
            o.contains("an unknown terminal SN=XYZ9 from 10.0.3.9 tried to push"),
            "{o}"
        );
        assert_eq!((GAUGES[0].read)(&m), Some(12));
        assert_eq!((GAUGES[6].read)(&m), Some(1));
    }
}
