//! The terminal's data: its event log (serial numbers, majors and minors, times in the device's
//! zone), its users, and how a log of any size is generated with a realistic mix of events.

use chrono::{FixedOffset, NaiveDateTime, TimeDelta, TimeZone};
use serde_json::{json, Value};

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HikEvent {
    pub serial: u64,
    pub major: u32,
    pub minor: u32,
    /// Wall-clock time on the device (in its offset).
    pub time: NaiveDateTime,
    /// `None` for a stranger, a door or an alarm event.
    pub employee: Option<String>,
    pub name: Option<String>,
    pub attendance_status: Option<&'static str>,
}

/// One user of the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HikUser {
    pub employee_no: String,
    pub name: String,
}

/// The minors of major 5 that are successful verifications, in the order generation uses them.
pub const PASS_MINORS: &[u32] = &[75, 38, 1, 77, 40, 181, 2, 43, 46, 69, 72, 101, 54];

/// `n` users: employee numbers 1001.., names `员工1001`...
pub fn generate_users(n: usize) -> Vec<HikUser> {
    (0..n)
        .map(|i| HikUser {
            employee_no: (1001 + i).to_string(),
            name: format!("员工{}", 1001 + i),
        })
        .collect()
}

/// `n` events from serial 1 on, 7 s apart from `start`, cycling through `users`: of every 20,
/// 14 successful verifications (minors of [`PASS_MINORS`]), a failed face (76), a failed
/// fingerprint (39), a door opened (minor 22, no user), an alarm (major 1), an operation (major 3)
/// and a stranger's face (75 without a user).
pub fn generate_events(n: usize, users: &[HikUser], start: NaiveDateTime) -> Vec<HikEvent> {
    (0..n)
        .map(|i| {
            let user = &users[i % users.len().max(1)];
            let (major, minor, who) = match i % 20 {
                k @ 0..=13 => (5, PASS_MINORS[k % PASS_MINORS.len()], true),
                14 => (5, 76, true),
                15 => (5, 39, true),
                16 => (5, 22, false),
                17 => (1, 1031, false),
                18 => (3, 80, false),
                _ => (5, 75, false),
            };
            HikEvent {
                serial: i as u64 + 1,
                major,
                minor,
                time: start + TimeDelta::seconds(7 * i as i64),
                employee: who.then(|| user.employee_no.clone()),
                name: who.then(|| user.name.clone()),
                attendance_status: Some(if i % 2 == 0 { "checkIn" } else { "checkOut" }),
            }
        })
        .collect()
}

/// Whether `e` is a punch to a reader using `minors` (major 5, one of `minors`, a known user).
pub fn is_punch(e: &HikEvent, minors: &[u32]) -> bool {
    e.major == 5 && minors.contains(&e.minor) && e.employee.is_some()
}

/// The time as the terminal writes it: with its offset, or without (older firmware).
pub fn time_text(t: NaiveDateTime, offset: FixedOffset, with_offset: bool) -> String {
    if with_offset {
        match offset.from_local_datetime(&t).single() {
            Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            None => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

impl HikEvent {
    /// The event as an `InfoList` entry of an `AcsEvent` reply.
    pub fn info(&self, offset: FixedOffset, with_offset: bool) -> Value {
        let mut o = json!({
            "major": self.major,
            "minor": self.minor,
            "time": time_text(self.time, offset, with_offset),
            "cardReaderNo": 1,
            "doorNo": 1,
            "serialNo": self.serial,
            "currentVerifyMode": "cardOrFaceOrFp",
            "mask": "no",
        });
        if let Some(e) = &self.employee {
            o["employeeNoString"] = json!(e);
            o["name"] = json!(self.name.clone().unwrap_or_default());
            o["attendanceStatus"] = json!(self.attendance_status.unwrap_or("undefined"));
        }
        o
    }

    /// The event as an alert stream document (`EventNotificationAlert`), JSON.
    pub fn alert_json(&self, offset: FixedOffset, with_offset: bool) -> String {
        let mut ace = json!({
            "deviceName": "Access Controller",
            "majorEventType": self.major,
            "subEventType": self.minor,
            "cardReaderNo": 1,
            "serialNo": self.serial,
            "frontSerialNo": self.serial.saturating_sub(1),
            "currentVerifyMode": "cardOrFaceOrFp",
            "mask": "no",
        });
        if let Some(e) = &self.employee {
            ace["employeeNoString"] = json!(e);
            ace["name"] = json!(self.name.clone().unwrap_or_default());
            ace["userType"] = json!("normal");
            ace["attendanceStatus"] = json!(self.attendance_status.unwrap_or("undefined"));
        }
        json!({
            "ipAddress": "127.0.0.1",
            "portNo": 80,
            "protocol": "HTTP",
            "channelID": 1,
            "dateTime": time_text(self.time, offset, with_offset),
            "activePostCount": 1,
            "eventType": "AccessControllerEvent",
            "eventState": "active",
            "eventDescription": "Access Controller Event",
            "AccessControllerEvent": ace,
        })
        .to_string()
    }

    /// The event as an alert stream document, XML (older firmware).
    pub fn alert_xml(&self, offset: FixedOffset, with_offset: bool) -> String {
        let who = match &self.employee {
            Some(e) => format!(
                "<employeeNoString>{}</employeeNoString><name>{}</name><attendanceStatus>{}</attendanceStatus>",
                xml_escape(e),
                xml_escape(self.name.as_deref().unwrap_or("")),
                self.attendance_status.unwrap_or("undefined")
            ),
            None => String::new(),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<ipAddress>127.0.0.1</ipAddress>\n<portNo>80</portNo>\n<protocol>HTTP</protocol>\n<channelID>1</channelID>\n<dateTime>{}</dateTime>\n<activePostCount>1</activePostCount>\n<eventType>AccessControllerEvent</eventType>\n<eventState>active</eventState>\n<eventDescription>Access Controller Event</eventDescription>\n<AccessControllerEvent>\n<deviceName>Access Controller</deviceName>\n<majorEventType>{}</majorEventType>\n<subEventType>{}</subEventType>\n<cardReaderNo>1</cardReaderNo>\n{who}\n<serialNo>{}</serialNo>\n<currentVerifyMode>cardOrFaceOrFp</currentVerifyMode>\n</AccessControllerEvent>\n</EventNotificationAlert>\n",
            time_text(self.time, offset, with_offset),
            self.major,
            self.minor,
            self.serial
        )
    }
}

/// The heartbeat document of the alert stream (JSON or XML).
pub fn heartbeat(xml: bool, now: &str) -> String {
    if xml {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<ipAddress>127.0.0.1</ipAddress>\n<dateTime>{now}</dateTime>\n<activePostCount>0</activePostCount>\n<eventType>videoloss</eventType>\n<eventState>inactive</eventState>\n<eventDescription>videoloss alarm</eventDescription>\n</EventNotificationAlert>\n")
    } else {
        json!({"ipAddress": "127.0.0.1", "dateTime": now, "activePostCount": 0,
               "eventType": "heartBeat", "eventState": "active", "eventDescription": "heartBeat"})
        .to_string()
    }
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
