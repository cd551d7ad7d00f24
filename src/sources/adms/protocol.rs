//! The wire format of ZKTeco's "Attendance PUSH" protocol (ADMS, iclock), as pure functions: the
//! query string of a request, where it goes, the handshake's options, ATTLOG and OPERLOG bodies,
//! command lines and their results, and the terminal's `INFO`. Nothing here does I/O, so every
//! function can be fed arbitrary bytes (the `adms_request` fuzz target does).
//!
//! The facts (layouts, replies, what each request means) are written down with their public sources
//! in `docs/adms-protocol.md`.
//!
//! Guarantees:
//! - Never panics, whatever the input; text that is not UTF-8 is decoded (GB18030 for user names,
//!   replacement characters elsewhere) or refused line by line, never as a whole body.
//! - A body is split into lines at LF, a CR before it removed (CRLF bodies), empty lines skipped;
//!   every other line is either a record or a [`ParseError`] counted by the caller.

use std::borrow::Cow;

use chrono::NaiveDateTime;

use crate::punch::Punch;
use crate::sources::formats::{self, LineFormat, ParseError};

/// The query parameters a terminal sends (`SN`, `table`, `Stamp`, `options`, `pushver`, `INFO`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub sn: Option<String>,
    pub table: Option<String>,
    pub stamp: Option<String>,
    pub options: Option<String>,
    pub pushver: Option<String>,
    pub language: Option<String>,
    pub info: Option<String>,
}

/// Reads a request's query string (percent-decoded; the first of a repeated key counts).
pub fn parse_query(q: &str) -> Query {
    let mut out = Query::default();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let slot = match k.as_ref() {
            "SN" | "sn" => &mut out.sn,
            "table" | "tablename" => &mut out.table,
            "Stamp" | "stamp" | "OpStamp" => &mut out.stamp,
            "options" => &mut out.options,
            "pushver" => &mut out.pushver,
            "language" => &mut out.language,
            "INFO" => &mut out.info,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    out
}

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /iclock/cdata?SN=..&options=all`: the handshake.
    Handshake,
    /// `POST /iclock/cdata?SN=..&table=ATTLOG` (or `/iclock/querydata` with that table): punches.
    AttLog,
    /// `POST /iclock/cdata?SN=..&table=OPERLOG`: users and the operation log.
    OperLog,
    /// `POST /iclock/cdata` with `table=options` or `table=INFO`, or without a table: the terminal's
    /// options (`INFO`'s answer).
    Options,
    /// `POST /iclock/cdata` with another table (photos, templates): taken and answered `OK`.
    OtherTable(String),
    /// `GET /iclock/getrequest`: heartbeat and "any command for me?".
    GetRequest,
    /// `POST /iclock/devicecmd`: results of commands.
    DeviceCmd,
    /// `GET /iclock/ping`: keep-alive during long uploads.
    Ping,
    /// Anything else (404).
    NotFound,
}

/// Where a request goes, from its method, path and query.
pub fn route(method: &str, path: &str, q: &Query) -> Route {
    let path = path.trim_end_matches('/');
    let Some(end) = path
        .strip_prefix("/iclock/")
        .map(|e| e.trim_end_matches(".aspx"))
    else {
        return Route::NotFound;
    };
    let table = q.table.as_deref().map(str::to_ascii_uppercase);
    match (method, end) {
        ("GET", "cdata") => Route::Handshake,
        ("POST", "cdata") | ("POST", "querydata") => match table.as_deref() {
            Some("ATTLOG") => Route::AttLog,
            Some("OPERLOG") | Some("USER") | Some("USERINFO") => Route::OperLog,
            None | Some("OPTIONS") | Some("INFO") => Route::Options,
            Some(other) => Route::OtherTable(other.to_string()),
        },
        ("GET", "getrequest") | ("POST", "getrequest") => Route::GetRequest,
        ("POST", "devicecmd") => Route::DeviceCmd,
        ("GET", "ping") => Route::Ping,
        _ => Route::NotFound,
    }
}

/// The handshake's options for one terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub sn: &'a str,
    /// The last ATTLOG stamp committed, if any (`None` otherwise).
    pub att_stamp: Option<&'a str>,
    pub op_stamp: Option<&'a str>,
    pub error_delay_secs: u64,
    pub delay_secs: u64,
    /// The device's zone's offset from UTC now, in seconds.
    pub utc_offset_secs: i32,
    pub realtime: bool,
}

/// `TransFlag`: what the terminal should upload (punches, operation log, users).
pub const TRANS_FLAG: &str = "TransData AttLog\tOpLog\tEnrollUser\tChgUser";

/// The server version the handshake announces.
pub const SERVER_VER: &str = concat!("clockbridge/", env!("CARGO_PKG_VERSION"));

/// The push protocol version the handshake announces (the one whose commands this server sends).
pub const PUSH_PROT_VER: &str = "2.4.1";

/// The handshake reply (`text/plain`, one option per line, LF).
pub fn handshake_reply(h: &Handshake) -> String {
    format!(
        "GET OPTION FROM: {sn}\nATTLOGStamp={att}\nOPERLOGStamp={op}\nATTPHOTOStamp=None\n\
         ErrorDelay={ed}\nDelay={d}\nTransTimes=00:00;14:05\nTransInterval=1\nTransFlag={flag}\n\
         TimeZone={tz}\nRealtime={rt}\nEncrypt=None\nServerVer={ver}\nPushProtVer={ppv}\n",
        sn = h.sn,
        att = h.att_stamp.unwrap_or("None"),
        op = h.op_stamp.unwrap_or("None"),
        ed = h.error_delay_secs,
        d = h.delay_secs,
        flag = TRANS_FLAG,
        tz = timezone_value(h.utc_offset_secs),
        rt = u8::from(h.realtime),
        ver = SERVER_VER,
        ppv = PUSH_PROT_VER,
    )
}

/// `TimeZone=`: whole hours for zones on the hour (`8`, `-5`), minutes otherwise (`330` for +05:30,
/// `345` for +05:45, `-210` for -03:30): a terminal given hours for a half-hour zone moves its own
/// clock.
pub fn timezone_value(utc_offset_secs: i32) -> String {
    let minutes = utc_offset_secs / 60;
    if minutes % 60 == 0 {
        (minutes / 60).to_string()
    } else {
        minutes.to_string()
    }
}

/// The lines of a body: split at LF, a CR before it removed, empty (or blank) lines skipped; each
/// with its 1-based line number.
pub fn lines(body: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
}

/// One ATTLOG line: `PIN \t YYYY-MM-DD HH:MM:SS \t status \t verify \t workcode \t reserved...`
/// (newer firmware adds mask, temperature and more columns, which are ignored).
pub fn parse_attlog_line(device_id: &str, line: &[u8]) -> Result<Punch, ParseError> {
    formats::parse_line(LineFormat::ZkAttlog, device_id, line)
}

/// What an OPERLOG body holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperLog {
    /// `USER PIN=..\tName=..` lines: the PIN and the name (decoded: UTF-8, else GB18030).
    pub users: Vec<(String, String)>,
    /// `OPLOG ...` lines (operations on the terminal: enrolment, menu, alarms).
    pub oplogs: u64,
    /// `FP ...`, `FACE ...`, `BIOPHOTO ...` and other template lines.
    pub templates: u64,
    /// Lines of none of these forms (or a `USER` line without a PIN).
    pub unknown: u64,
}

/// Reads an OPERLOG body.
pub fn parse_operlog(body: &[u8]) -> OperLog {
    let mut out = OperLog::default();
    for (_, line) in lines(body) {
        let text = decode_text(line);
        let t = text.trim_start();
        if let Some(rest) = t.strip_prefix("USER ") {
            let fields = tab_fields(rest);
            let pin = field(&fields, "PIN").map(str::trim).unwrap_or("");
            if pin.is_empty() || pin.chars().any(char::is_control) {
                out.unknown += 1;
                continue;
            }
            let name = field(&fields, "Name").unwrap_or("").trim();
            out.users.push((pin.to_string(), name.to_string()));
        } else if t.starts_with("OPLOG") {
            out.oplogs += 1;
        } else if ["FP ", "FACE ", "BIOPHOTO ", "BIODATA ", "USERPIC "]
            .iter()
            .any(|p| t.starts_with(p))
        {
            out.templates += 1;
        } else {
            out.unknown += 1;
        }
    }
    out
}

/// Text from a terminal: UTF-8 when it is, else GB18030 (Chinese firmware writes names in
/// GB2312/GBK, which GB18030 contains).
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => encoding_rs::GB18030.decode_without_bom_handling(bytes).0,
    }
}

/// `K=V` fields separated by tabs.
fn tab_fields(s: &str) -> Vec<(&str, &str)> {
    s.split('\t')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim(), v))
        .collect()
}

fn field<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| *v)
}

/// One command for a terminal: `C:<id>:<command>`.
pub fn command_line(id: &str, command: &str) -> String {
    format!("C:{id}:{command}\n")
}

/// `DATA QUERY ATTLOG StartTime=..\tEndTime=..`: the terminal sends its records of that range
/// again (through `cdata?table=ATTLOG`).
pub fn data_query_attlog(from: NaiveDateTime, to: NaiveDateTime) -> String {
    format!(
        "DATA QUERY ATTLOG StartTime={}\tEndTime={}",
        from.format("%Y-%m-%d %H:%M:%S"),
        to.format("%Y-%m-%d %H:%M:%S")
    )
}

/// `VERIFY SUM ATTLOG StartTime=..\tEndTime=..`: the terminal answers its count of records in that
/// range (`AttlogSum=` in the command's result).
pub fn verify_sum_attlog(from: NaiveDateTime, to: NaiveDateTime) -> String {
    format!(
        "VERIFY SUM ATTLOG StartTime={}\tEndTime={}",
        from.format("%Y-%m-%d %H:%M:%S"),
        to.format("%Y-%m-%d %H:%M:%S")
    )
}

/// A command's result, as the terminal posts it to `devicecmd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdResult {
    pub id: String,
    /// `Return=`: 0 success, negative an error (-1 not supported or no data, -1002 bad syntax...).
    pub ret: Option<i64>,
    /// `CMD=`: the command's word as echoed (`DATA`, `VERIFY`, `INFO`...).
    pub cmd: String,
    /// Every other `K=V` of the result (`AttlogSum`, `Content`...).
    pub fields: Vec<(String, String)>,
}

impl CmdResult {
    /// The value of another field (`AttlogSum`), by name, case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a `devicecmd` body: results one per line (`ID=1&Return=0&CMD=INFO`), or one field per line
/// (`ID=32\nReturn=0\nCMD=Shell\nContent=...`); a new `ID=` starts a new result. Results without
/// an id are dropped (nothing could be matched to them).
pub fn parse_cmd_results(body: &[u8]) -> Vec<CmdResult> {
    let mut out: Vec<CmdResult> = Vec::new();
    for (_, line) in lines(body) {
        let text = decode_text(line);
        for pair in text.split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("ID") {
                out.push(CmdResult {
                    id: v.to_string(),
                    ..CmdResult::default()
                });
                continue;
            }
            let Some(cur) = out.last_mut() else {
                continue;
            };
            if k.eq_ignore_ascii_case("Return") {
                cur.ret = v.parse().ok();
            } else if k.eq_ignore_ascii_case("CMD") {
                cur.cmd = v.to_string();
            } else {
                cur.fields.push((k.to_string(), v.to_string()));
            }
        }
    }
    out.retain(|r| !r.id.is_empty());
    out
}

/// What a terminal says of itself: `INFO=` of `getrequest` (`fw,users,fingerprints,records,ip,...`)
/// or the `K=V` lines of an options body (`FWVersion=`, `UserCount=`...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub firmware: Option<String>,
    pub users: Option<u64>,
    pub fingerprints: Option<u64>,
    pub records: Option<u64>,
    pub ip: Option<String>,
    pub device_name: Option<String>,
}

impl Info {
    /// Values of `other` where it has them.
    pub fn merge(&mut self, other: Info) {
        macro_rules! take {
            ($($f:ident),*) => { $(if other.$f.is_some() { self.$f = other.$f; })* };
        }
        take!(firmware, users, fingerprints, records, ip, device_name);
    }
}

/// `INFO=Ver 8.0.4.7-20200203,2,0,8,192.168.1.201,10,7,12,2,111`.
pub fn parse_info_param(s: &str) -> Info {
    let mut parts = s.split(',').map(str::trim);
    let text = |p: Option<&str>| p.filter(|v| !v.is_empty()).map(visible_short);
    let num = |p: Option<&str>| p.and_then(|v| v.parse::<u64>().ok());
    Info {
        firmware: text(parts.next()),
        users: num(parts.next()),
        fingerprints: num(parts.next()),
        records: num(parts.next()),
        ip: text(parts.next()),
        device_name: None,
    }
}

/// An options body: `K=V` lines (or `K=V` pairs separated by commas), keys with or without `~`.
pub fn parse_options(body: &[u8]) -> Info {
    let mut info = Info::default();
    for (_, line) in lines(body) {
        let text = decode_text(line);
        for pair in text.split([',', '\t']) {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let k = k.trim().trim_start_matches('~');
            let v = v.trim();
            let num = v.parse::<u64>().ok();
            match k {
                "FWVersion" | "FirmVer" => info.firmware = Some(visible_short(v)),
                "UserCount" => info.users = num.or(info.users),
                "FPCount" | "FingerCount" => info.fingerprints = num.or(info.fingerprints),
                "TransactionCount" | "AttLogCount" => info.records = num.or(info.records),
                "IPAddress" => info.ip = Some(visible_short(v)),
                "DeviceName" => info.device_name = Some(visible_short(v)),
                _ => {}
            }
        }
    }
    info
}

/// A value from a terminal, for `status`: control characters escaped, at most 64 characters.
fn visible_short(s: &str) -> String {
    let v: String = s.chars().take(64).collect();
    crate::logging::visible(&v)
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
