//! The ISAPI documents a Hikvision terminal sends, read into plain values: the event log's pages
//! (`AcsEvent`, JSON), the alert stream's event documents (`EventNotificationAlert`, JSON or XML),
//! the user list's pages (`UserInfoSearch`, JSON), the device's time and identity (`Time`,
//! `DeviceInfo`, XML), and the request bodies clockbridge sends. The facts, with their public
//! sources, are in `docs/hikvision-protocol.md`.
//!
//! Guarantees: bad input (a document that is not JSON or XML, a member of the wrong type, a time that
//! does not exist) is an [`IsapiError`] or an event without that value, never a panic; one unreadable
//! event of a page does not make the page unreadable (it is kept, as [`AcsEvent::time`] `None`, for
//! the caller to count).

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::{json, Value};

/// A document that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsapiError {
    #[error("the terminal's reply is not JSON ({0})")]
    Json(String),
    #[error("the terminal's reply is not XML ({0})")]
    Xml(String),
    #[error("the terminal's reply has no {0} (not the document asked for)")]
    Missing(&'static str),
}

/// A time as a terminal writes it: with its offset (`2026-12-01T08:59:01+08:00`), or without one on
/// firmware that omits it (read in the device's configured `timezone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTime {
    Offset(DateTime<FixedOffset>),
    Local(NaiveDateTime),
}

impl EventTime {
    /// Reads `2026-12-01T08:59:01+08:00`, `...Z`, `2026-12-01T08:59:01` or `2026-12-01 08:59:01`
    /// (fractions of a second dropped).
    pub fn parse(s: &str) -> Option<EventTime> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(EventTime::Offset(t.with_nanosecond_zero()));
        }
        for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                return Some(EventTime::Local(t.with_nanosecond_zero()));
            }
        }
        None
    }

    /// The wall-clock time in `tz`: an offset time converted to the zone (the same instant), a time
    /// without offset taken as it is.
    pub fn local_in(&self, tz: chrono_tz::Tz) -> NaiveDateTime {
        match self {
            EventTime::Offset(t) => t.with_timezone(&tz).naive_local(),
            EventTime::Local(t) => *t,
        }
    }
}

trait NoNanos {
    fn with_nanosecond_zero(self) -> Self;
}
impl<T: chrono::Timelike> NoNanos for T {
    fn with_nanosecond_zero(self) -> Self {
        self.with_nanosecond(0).unwrap_or(self)
    }
}

/// One event of the log or of the alert stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcsEvent {
    pub major: u32,
    pub minor: u32,
    /// `None` when absent or unreadable.
    pub time: Option<EventTime>,
    /// The time as written (for messages about an unreadable one).
    pub time_text: Option<String>,
    /// `employeeNoString` (or `employeeNo`), trimmed; `None` for a stranger.
    pub employee: Option<String>,
    pub name: Option<String>,
    pub serial: Option<u64>,
    /// `attendanceStatus` (`checkIn`, `checkOut`, `breakOut`, `breakIn`, `overtimeIn`, `overtimeOut`,
    /// `undefined`).
    pub attendance_status: Option<String>,
}

/// Where a search stands after a page (`responseStatusStrg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchStatus {
    More,
    Ok,
    NoMatch,
    Other(String),
}

impl SearchStatus {
    fn read(s: &str) -> SearchStatus {
        match s.trim().to_ascii_uppercase().as_str() {
            "MORE" => SearchStatus::More,
            "OK" => SearchStatus::Ok,
            "NO MATCH" | "NOMATCH" | "NO_MATCH" => SearchStatus::NoMatch,
            _ => SearchStatus::Other(s.to_string()),
        }
    }
}

/// One page of `AcsEvent` search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcsEventPage {
    pub status: SearchStatus,
    /// Events in this page as the terminal counts them (`numOfMatches`).
    pub num_of_matches: u64,
    pub total_matches: Option<u64>,
    pub events: Vec<AcsEvent>,
}

/// A number written as a number or as a string of digits.
fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_json(body: &[u8]) -> Result<Value, IsapiError> {
    serde_json::from_slice(body)
        .map_err(|e| IsapiError::Json(crate::logging::visible(&e.to_string())))
}

/// An XML error: its text may quote the input, so control characters are shown escaped (a message
/// stays one log line).
fn xml_err(s: impl std::fmt::Display) -> IsapiError {
    IsapiError::Xml(crate::logging::visible(&s.to_string()))
}

/// Reads one event object of a page (`InfoList[i]`) or of an alert (`AccessControllerEvent`,
/// whose `majorEventType` / `subEventType` name major and minor).
fn event_of(o: &Value, fallback_time: Option<&Value>) -> AcsEvent {
    let time_v = o.get("time").or(o.get("dateTime")).or(fallback_time);
    let time_text = text(time_v);
    AcsEvent {
        major: num(o.get("major").or(o.get("majorEventType"))).unwrap_or(0) as u32,
        minor: num(o.get("minor").or(o.get("subEventType"))).unwrap_or(0) as u32,
        time: time_text.as_deref().and_then(EventTime::parse),
        time_text,
        employee: text(o.get("employeeNoString")).or_else(|| text(o.get("employeeNo"))),
        name: text(o.get("name")),
        serial: num(o.get("serialNo")),
        attendance_status: text(o.get("attendanceStatus")),
    }
}

/// Reads a reply of `POST /ISAPI/AccessControl/AcsEvent?format=json`.
pub fn parse_acs_event_page(body: &[u8]) -> Result<AcsEventPage, IsapiError> {
    let v = parse_json(body)?;
    let a = v.get("AcsEvent").ok_or(IsapiError::Missing("AcsEvent"))?;
    let status = a
        .get("responseStatusStrg")
        .and_then(Value::as_str)
        .map(SearchStatus::read)
        .ok_or(IsapiError::Missing("AcsEvent.responseStatusStrg"))?;
    let events: Vec<AcsEvent> = match a.get("InfoList") {
        Some(Value::Array(list)) => list.iter().map(|o| event_of(o, None)).collect(),
        _ => Vec::new(),
    };
    Ok(AcsEventPage {
        status,
        num_of_matches: num(a.get("numOfMatches")).unwrap_or(events.len() as u64),
        total_matches: num(a.get("totalMatches")),
        events,
    })
}

/// The body of one `AcsEvent` search page: every major-5 event from `start` on.
pub fn acs_event_request(search_id: &str, position: u64, max_results: u32, start: &str) -> Vec<u8> {
    acs_event_range_request(
        search_id,
        position,
        max_results,
        start,
        "2037-12-31T23:59:59+08:00",
    )
}

/// The body of one `AcsEvent` search page: every major-5 event from `start` to `end` (both
/// included).
pub fn acs_event_range_request(
    search_id: &str,
    position: u64,
    max_results: u32,
    start: &str,
    end: &str,
) -> Vec<u8> {
    let body = json!({"AcsEventCond": {
        "searchID": search_id,
        "searchResultPosition": position,
        "maxResults": max_results,
        "major": 5,
        "minor": 0,
        "startTime": start,
        "endTime": end,
    }});
    body.to_string().into_bytes()
}

/// One page of `UserInfo/Search`: `(employeeNo, name)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    pub status: SearchStatus,
    pub num_of_matches: u64,
    pub users: Vec<(String, String)>,
}

/// The body of one `UserInfo/Search` page.
pub fn user_search_request(search_id: &str, position: u64, max_results: u32) -> Vec<u8> {
    json!({"UserInfoSearchCond": {
        "searchID": search_id,
        "searchResultPosition": position,
        "maxResults": max_results,
    }})
    .to_string()
    .into_bytes()
}

/// Reads a reply of `POST /ISAPI/AccessControl/UserInfo/Search?format=json`.
pub fn parse_user_page(body: &[u8]) -> Result<UserPage, IsapiError> {
    let v = parse_json(body)?;
    let u = v
        .get("UserInfoSearch")
        .ok_or(IsapiError::Missing("UserInfoSearch"))?;
    let status = u
        .get("responseStatusStrg")
        .and_then(Value::as_str)
        .map(SearchStatus::read)
        .ok_or(IsapiError::Missing("UserInfoSearch.responseStatusStrg"))?;
    let users: Vec<(String, String)> = match u.get("UserInfo") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|o| Some((text(o.get("employeeNo"))?, text(o.get("name"))?)))
            .collect(),
        _ => Vec::new(),
    };
    Ok(UserPage {
        status,
        num_of_matches: num(u.get("numOfMatches")).unwrap_or(users.len() as u64),
        users,
    })
}

/// What one part of the alert stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// An access-control event.
    Event(AcsEvent),
    /// A heartbeat (`heartBeat`, or `videoloss` with `eventState` inactive on older firmware).
    Heartbeat,
    /// Another kind of alert, by its `eventType`.
    Other(String),
}

/// Reads one `EventNotificationAlert` of the alert stream, JSON or XML (by its first byte).
pub fn parse_alert(body: &[u8]) -> Result<Alert, IsapiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'<') {
        return parse_alert_xml(body);
    }
    let v = parse_json(body)?;
    let kind = text(v.get("eventType")).ok_or(IsapiError::Missing("eventType"))?;
    alert_of(&kind, text(v.get("eventState")).as_deref(), || {
        let o = v.get("AccessControllerEvent")?;
        Some(event_of(o, v.get("dateTime")))
    })
}

fn alert_of(
    kind: &str,
    state: Option<&str>,
    event: impl FnOnce() -> Option<AcsEvent>,
) -> Result<Alert, IsapiError> {
    if kind.eq_ignore_ascii_case("heartBeat")
        || (kind.eq_ignore_ascii_case("videoloss") && state == Some("inactive"))
    {
        return Ok(Alert::Heartbeat);
    }
    if kind.eq_ignore_ascii_case("AccessControllerEvent") {
        return event()
            .map(Alert::Event)
            .ok_or(IsapiError::Missing("AccessControllerEvent"));
    }
    Ok(Alert::Other(kind.to_string()))
}

fn parse_alert_xml(body: &[u8]) -> Result<Alert, IsapiError> {
    let leaves = xml_leaves(body)?;
    let get = |name: &str| {
        leaves
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| Value::String(v.clone()))
    };
    let kind = text(get("eventType").as_ref()).ok_or(IsapiError::Missing("eventType"))?;
    let state = text(get("eventState").as_ref());
    alert_of(&kind, state.as_deref(), || {
        // the leaves of the AccessControllerEvent element, and the alert's dateTime
        let mut o = serde_json::Map::new();
        for name in [
            "majorEventType",
            "subEventType",
            "employeeNoString",
            "employeeNo",
            "name",
            "serialNo",
            "attendanceStatus",
            "time",
        ] {
            if let Some(v) = get(name) {
                o.insert(name.to_string(), v);
            }
        }
        let o = Value::Object(o);
        Some(event_of(&o, get("dateTime").as_ref()))
    })
}

/// The leaves of an XML document in document order: `(local name, text)` of each element that holds
/// text (entities resolved).
pub fn xml_leaves(body: &[u8]) -> Result<Vec<(String, String)>, IsapiError> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(body).map_err(xml_err)?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut stack: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut out = Vec::new();
    let mut roots = 0;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(e.local_name().as_ref().to_string());
                current.clear();
                if stack.len() > 64 {
                    return Err(IsapiError::Xml("nested too deep".into()));
                }
            }
            Ok(Event::End(_)) => {
                if let Some(name) = stack.pop() {
                    let t = current.trim();
                    if !t.is_empty() {
                        out.push((name, t.to_string()));
                    }
                }
                current.clear();
            }
            Ok(Event::Text(t)) => current.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => current.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(g)) => {
                if let Ok(Some(c)) = g.resolve_char_ref() {
                    current.push(c);
                } else {
                    let name = g.to_string();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => current.push_str(s),
                        None => return Err(xml_err(format!("unknown entity &{name};"))),
                    }
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(xml_err(e)),
        }
    }
    if roots == 0 || !stack.is_empty() {
        return Err(IsapiError::Xml("not a whole document".into()));
    }
    Ok(out)
}

fn xml_leaf(leaves: &[(String, String)], name: &str) -> Option<String> {
    leaves
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// `GET /ISAPI/System/time`: the device's local time (with its offset, when written) and zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTime {
    pub local_time: EventTime,
    /// `timeZone` as written (POSIX form, `CST-8:00:00`).
    pub time_zone: Option<String>,
    pub time_mode: Option<String>,
}

/// Reads a `Time` document.
pub fn parse_time(body: &[u8]) -> Result<DeviceTime, IsapiError> {
    let leaves = xml_leaves(body)?;
    let local = xml_leaf(&leaves, "localTime").ok_or(IsapiError::Missing("Time.localTime"))?;
    Ok(DeviceTime {
        local_time: EventTime::parse(&local).ok_or(IsapiError::Missing("Time.localTime"))?,
        time_zone: xml_leaf(&leaves, "timeZone"),
        time_mode: xml_leaf(&leaves, "timeMode"),
    })
}

/// The `Time` document that sets the device's clock to `local` (its wall-clock time, with the offset
/// of the configured zone), keeping its zone.
pub fn time_request(local: &DateTime<FixedOffset>, time_zone: Option<&str>) -> Vec<u8> {
    let tz = time_zone
        .map(|z| format!("<timeZone>{}</timeZone>", quick_xml::escape::escape(z)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Time version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><timeMode>manual</timeMode><localTime>{}</localTime>{tz}</Time>",
        local.format("%Y-%m-%dT%H:%M:%S%:z")
    )
    .into_bytes()
}

/// `GET /ISAPI/System/deviceInfo`: what identifies the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub device_name: Option<String>,
}

/// Reads a `DeviceInfo` document.
pub fn parse_device_info(body: &[u8]) -> Result<DeviceInfo, IsapiError> {
    let leaves = xml_leaves(body)?;
    if leaves.is_empty() {
        return Err(IsapiError::Missing("DeviceInfo"));
    }
    Ok(DeviceInfo {
        serial_number: xml_leaf(&leaves, "serialNumber"),
        model: xml_leaf(&leaves, "model"),
        firmware_version: xml_leaf(&leaves, "firmwareVersion"),
        device_name: xml_leaf(&leaves, "deviceName"),
    })
}

/// A `ResponseStatus` error document's `subStatusCode` or `statusString` (JSON or XML), for messages.
pub fn response_status(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return text(v.get("subStatusCode")).or_else(|| text(v.get("statusString")));
    }
    let leaves = xml_leaves(body).ok()?;
    xml_leaf(&leaves, "subStatusCode").or_else(|| xml_leaf(&leaves, "statusString"))
}

#[cfg(test)]
#[path = "isapi_tests.rs"]
mod tests;
