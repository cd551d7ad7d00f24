//! Typed configuration: a TOML file, then `CLOCKBRIDGE__SECTION__KEY` environment overrides.
//!
//! Guarantees:
//! - Unknown keys are errors (every struct denies unknown fields), so a typo never silently falls back
//!   to a default.
//! - Every error names the key path and, where there is one, the bad value
//!   (`devices[0].timezone: "Asia/Shang" is not an IANA time zone: ...`).
//! - The app secret is held in a [`Secret`], whose `Debug`, `Display` and `Serialize` print `***`, so the
//!   secret cannot reach a log, an error message or `check-config` output by accident.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize, Serializer};

/// Where `run`, `status` and `check-config` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clockbridge/clockbridge.toml";

/// A configuration error: always names the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML.
    #[error("config {path}: {reason}")]
    File { path: String, reason: String },
    /// A key has the wrong type, is unknown, or is missing.
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
    /// A key has a value of the right type that is not acceptable.
    #[error("config key {key}: {value} {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, value: impl fmt::Debug, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }
}

/// A secret string. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: only for the token request body.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub feishu: FeishuConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
    #[serde(default)]
    pub sender: SenderConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub inbox: InboxConfig,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `[inbox]`: directories the daemon watches for HR files (approvals, archived reports, leave
/// accruals). A file is taken once it is complete (written elsewhere, then renamed in); it is
/// validated whole, queued in one transaction, and moved to `done/` or `rejected/` with a report.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {
    /// Approval results (`clockbridge submit approvals` files).
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// Archived report results (the file must name archive_rule_id, month and operator_id).
    #[serde(default)]
    pub archive_reports: Option<PathBuf>,
    /// Leave accrual updates.
    #[serde(default)]
    pub leave_accruals: Option<PathBuf>,
    /// How often the directories are looked at: seconds or a duration (`"5s"`).
    #[serde(default = "default_inbox_poll", deserialize_with = "de_seconds")]
    pub poll_interval: u64,
    /// Text encoding of the files: `utf-8` (default), `gb18030` (also GBK / GB2312), or any WHATWG
    /// label.
    #[serde(default)]
    pub encoding: Option<String>,
}

fn default_inbox_poll() -> u64 {
    5
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            approvals: None,
            archive_reports: None,
            leave_accruals: None,
            poll_interval: default_inbox_poll(),
            encoding: None,
        }
    }
}

impl InboxConfig {
    /// The files' text encoding (`None` for an unknown label, which validation refuses).
    pub fn text_encoding(&self) -> Option<&'static encoding_rs::Encoding> {
        match &self.encoding {
            None => Some(encoding_rs::UTF_8),
            Some(label) => encoding_rs::Encoding::for_label(label.trim().as_bytes()),
        }
    }

    /// The configured directories with their kind and key name.
    pub fn dirs(&self) -> Vec<(crate::hr::HrKind, &'static str, PathBuf)> {
        use crate::hr::HrKind;
        [
            (HrKind::Approvals, "approvals", &self.approvals),
            (
                HrKind::ArchiveReport,
                "archive_reports",
                &self.archive_reports,
            ),
            (
                HrKind::LeaveAccruals,
                "leave_accruals",
                &self.leave_accruals,
            ),
        ]
        .into_iter()
        .filter_map(|(k, n, p)| p.clone().map(|p| (k, n, p)))
        .collect()
    }
}

/// `[feishu]`: the platform and the app's credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeishuConfig {
    /// `https://open.feishu.cn`, `https://open.larksuite.com`, or a local stand-in.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The self-built app's App ID (`cli_...`).
    pub app_id: String,
    /// The App Secret. Prefer `app_secret_file` or systemd credentials.
    #[serde(default)]
    pub app_secret: Secret,
    /// A file holding the App Secret (trailing newline ignored).
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    /// `employee_id` or `employee_no`: the kind of id in `user_id` / `creator_id`.
    #[serde(default = "default_employee_type")]
    pub employee_type: EmployeeType,
    /// Timeout for every HTTP request, in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmployeeType {
    EmployeeId,
    EmployeeNo,
}

impl EmployeeType {
    pub fn as_str(self) -> &'static str {
        match self {
            EmployeeType::EmployeeId => "employee_id",
            EmployeeType::EmployeeNo => "employee_no",
        }
    }
}

/// `[queue]`: the durable SQLite queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The SQLite database file (created with its directory if missing).
    #[serde(default = "default_queue_path")]
    pub path: PathBuf,
    /// Delivered rows older than this many days are pruned (0 keeps them forever).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// A punch more than this many seconds ahead of the gateway's clock is kept as a dead letter.
    #[serde(default = "default_max_future")]
    pub max_future_secs: i64,
}

/// `[mapping]`: device user id to Feishu user id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// `passthrough`: the device user id is the Feishu id; `table`: a CSV file.
    #[serde(default = "default_mapping_mode")]
    pub mode: MappingMode,
    /// For `table`: CSV with `device_user_id,user_id[,device_id]`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the table is re-read (it is also re-read on SIGHUP), in seconds.
    #[serde(default = "default_mapping_reload")]
    pub reload_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingMode {
    Passthrough,
    Table,
}

/// `[sender]`: batching, pacing and retries of uploads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// Records per request (the platform allows at most 50).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a partial batch may wait for more records, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Requests per second to each endpoint. The platform allows 50; the default keeps a little headroom
    /// so network jitter never bunches requests over the limit.
    #[serde(default = "default_rps")]
    pub max_requests_per_second: u32,
    /// Requests in flight at once (enough to reach the rate when each takes hundreds of ms).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// First retry delay after a transient failure, in seconds (doubles, with jitter).
    #[serde(default = "default_retry_initial")]
    pub retry_initial_secs: u64,
    /// Longest retry delay, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Pause after an application-level failure (bad secret, missing scope), in seconds.
    #[serde(default = "default_app_error_pause")]
    pub app_error_pause_secs: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `clockbridge=debug`...). `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

/// `[http]`: the optional HTTP endpoint (`/healthz`, `/metrics`, `/status`); off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ip:port` to serve on, e.g. `127.0.0.1:9477` (an IP address, not a host name). Absent: no
    /// HTTP endpoint. A non-loopback address also needs `allow_remote = true`.
    #[serde(default, deserialize_with = "de_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// Allows a `listen` address other hosts can reach. The endpoint has no authentication, and
    /// `/metrics` and `/status` show device names, user ids and the platform's error messages: put
    /// it behind a firewall or an authenticating reverse proxy.
    #[serde(default)]
    pub allow_remote: bool,
}

/// `ip:port`, with an error that shows the value.
fn de_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port: use e.g. \"127.0.0.1:9477\" (host names are not accepted)"
        ))
    })
}

/// `[[devices]]`: one clock (or one listening port several clocks dial).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Sent as `user_flow.device_id`; part of every idempotent key, so never rename a device that has
    /// sent punches.
    pub id: String,
    /// `tcp` (a line clock over TCP) or `serial` (RS-232/RS-485, often through a USB adapter).
    pub kind: DeviceKind,
    /// For `tcp`: `listen` (the clock dials us) or `connect` (we dial the clock).
    #[serde(default)]
    pub mode: Option<TcpMode>,
    /// For `tcp`: `host:port` to listen on or to dial.
    #[serde(default)]
    pub address: Option<String>,
    /// For `serial`: the port, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For `serial`: bits per second.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// For `serial`: 5, 6, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// For `serial`: `none`, `odd` or `even`.
    #[serde(default)]
    pub parity: Parity,
    /// For `serial`: 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// For `serial`: `none`, `software` (XON/XOFF) or `hardware` (RTS/CTS).
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Line format: `zk-attlog`, `csv` or `pattern`.
    #[serde(default = "default_format")]
    pub format: LineFormat,
    /// Text encoding of the clock's lines: `utf-8` (default), `gb18030`, `gbk`, or any WHATWG label.
    #[serde(default)]
    pub encoding: Option<String>,
    /// For `csv`: the field separator (one character; `"\t"` for tabs). Default `,`.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// For `csv` (and to reorder `zk-attlog`): the meaning of each column, in order: `user`, `time`,
    /// `date`, `state`, `verify`, `workcode`, or `""` / `skip` for a column to ignore.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// For `csv`: the first line (of each connection or file) names the columns.
    #[serde(default)]
    pub header: bool,
    /// For `pattern`: a regular expression with named groups `user` and `time` (and optionally `date`,
    /// `state`, `verify`, `workcode`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// How `time` (or `date` + ` ` + `time`) is written: a chrono format such as `%d-%m-%Y %H:%M:%S`,
    /// or `unix` for Unix seconds. Default `%Y-%m-%d %H:%M:%S`.
    #[serde(default)]
    pub time_format: Option<String>,
    /// Words a clock uses for the punch state, mapped to state codes (e.g. `上班 = 0`, `下班 = 1`).
    #[serde(default)]
    pub state_map: std::collections::BTreeMap<String, i64>,
    /// For polled clocks: a command written on connect and every `poll_interval` (escapes `\r`,
    /// `\n`, `\t`, `\\`, `\xNN`).
    #[serde(default)]
    pub poll_command: Option<String>,
    /// How often a device is polled: seconds (`30`) or a duration (`"30s"`, `"5m"`, `"1h"`). The key is
    /// `poll_interval`; `poll_interval_secs` is accepted as an older spelling.
    /// Absent: 5 s for `poll_command`, 60 s for `zk` devices (see [`DeviceConfig::poll_interval`]).
    #[serde(
        default,
        rename = "poll_interval",
        alias = "poll_interval_secs",
        deserialize_with = "de_seconds_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_interval_secs: Option<u64>,
    /// For clocks that expect an acknowledgement: written back for each record, only after it is
    /// committed to the queue. Placeholders `{user}`, `{time}` (device-local, `%Y-%m-%d %H:%M:%S`),
    /// `{state}`, `{line}` (the line as received); escapes as in `poll_command` (a literal `{` is
    /// `\\x7b`).
    #[serde(default)]
    pub ack_template: Option<String>,
    /// IANA time zone of the clock's local time.
    pub timezone: String,
    /// `user_flow.location_name` (defaults to the device id).
    #[serde(default)]
    pub location_name: Option<String>,
    /// Longest accepted line in bytes; longer lines are counted as malformed and skipped.
    #[serde(default = "default_max_line")]
    pub max_line_length: usize,
    /// Longest reconnect back-off, in seconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    /// A device can be kept in the file but switched off.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// For `zk`: the device's communication key (Comm. Key in its menu), 0 for none. A secret: shown
    /// as `***`.
    #[serde(default)]
    pub comm_key: CommKey,
    /// For `zk`: set the device's clock from the gateway's (in the device's `timezone`) when it is off
    /// by `max_clock_skew` or more. Off by default.
    #[serde(default)]
    pub sync_clock: bool,
    /// For `zk`: how far the device's clock may be from the gateway's before it is logged as a
    /// WARN (and corrected, with `sync_clock`): seconds or a duration. Default 60 s.
    #[serde(
        default = "default_max_clock_skew",
        rename = "max_clock_skew",
        deserialize_with = "de_seconds"
    )]
    pub max_clock_skew_secs: u64,
    /// For `zk`: delete the attendance log on the device once every record on it is committed to the
    /// queue (checked by count and watermark, with the device disabled). Off by default.
    #[serde(default)]
    pub clear_device_log: bool,
    /// For `zk`: subscribe to realtime punches (delivered within a second) between polls.
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// For `zk`: read the device's user table, to show the names of users who have no mapping.
    #[serde(default = "default_true")]
    pub user_names: bool,
    /// For `zk`: how long one request may wait for its reply (seconds or a duration); a 64 KiB chunk
    /// of a log read may take three times as long. Default 10 s.
    #[serde(
        default = "default_io_timeout",
        rename = "io_timeout",
        deserialize_with = "de_seconds"
    )]
    pub io_timeout_secs: u64,
    /// For `zk`: which id of the device's user becomes the punch's device user id: `record` (what the
    /// record carries: the user id of 16- and 40-byte records, the internal number of 8-byte ones) or
    /// `user_table` (the user id, PIN, from the device's user table, looked up by internal number).
    #[serde(default)]
    pub user_id_source: UserIdSource,
}

/// For `zk` devices: where a punch's device user id comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserIdSource {
    /// The id the attendance record carries.
    #[default]
    Record,
    /// The user id (PIN) from the device's user table.
    UserTable,
}

/// A ZKTeco communication key: a number, never printed (`Debug`, `Display` and `Serialize` show `***`
/// when it is set).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CommKey(u32);

impl CommKey {
    pub fn new(k: u32) -> Self {
        CommKey(k)
    }
    /// The key itself: only to compute the AUTH bytes.
    pub fn expose(&self) -> u32 {
        self.0
    }
    pub fn is_set(&self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for CommKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 == 0 { "0" } else { "***" })
    }
}
impl fmt::Display for CommKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl Serialize for CommKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            s.serialize_u32(0)
        } else {
            s.serialize_str("***")
        }
    }
}
impl<'de> Deserialize<'de> for CommKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum K {
            N(i64),
            S(String),
        }
        // the value is a secret: errors never repeat it
        let bad = || {
            serde::de::Error::custom(
                "is not a comm key: use the number set on the device (0 to 999999), without quotes",
            )
        };
        let n = match K::deserialize(d).map_err(|_: D::Error| bad())? {
            K::N(n) => n,
            K::S(s) => s.trim().parse::<i64>().map_err(|_| bad())?,
        };
        u32::try_from(n).map(CommKey).map_err(|_| bad())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Tcp,
    Serial,
    /// A ZKTeco terminal polled over its binary protocol (TCP 4370).
    Zk,
}

impl DeviceKind {
    /// Whether the device key `key` means something for this kind (what `check-config` shows).
    fn applies(self, key: &str) -> bool {
        const SERIAL: &[&str] = &[
            "path",
            "baud_rate",
            "data_bits",
            "parity",
            "stop_bits",
            "flow_control",
        ];
        const LINES: &[&str] = &[
            "format",
            "encoding",
            "delimiter",
            "columns",
            "header",
            "pattern",
            "time_format",
            "state_map",
            "poll_command",
            "ack_template",
            "max_line_length",
        ];
        const ZK: &[&str] = &[
            "comm_key",
            "sync_clock",
            "max_clock_skew",
            "clear_device_log",
            "realtime",
            "user_names",
            "user_id_source",
            "io_timeout",
        ];
        match self {
            DeviceKind::Tcp => !SERIAL.contains(&key) && !ZK.contains(&key),
            DeviceKind::Serial => key != "mode" && key != "address" && !ZK.contains(&key),
            DeviceKind::Zk => key != "mode" && !SERIAL.contains(&key) && !LINES.contains(&key),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Tcp => "tcp",
            DeviceKind::Serial => "serial",
            DeviceKind::Zk => "zk",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    None,
    Software,
    Hardware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpMode {
    Listen,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum LineFormat {
    #[serde(rename = "zk-attlog")]
    ZkAttlog,
    #[serde(rename = "csv")]
    Csv,
    #[serde(rename = "pattern")]
    Pattern,
}

fn default_base_url() -> String {
    "https://open.feishu.cn".into()
}
fn default_employee_type() -> EmployeeType {
    EmployeeType::EmployeeId
}
fn default_request_timeout() -> u64 {
    15
}
fn default_queue_path() -> PathBuf {
    PathBuf::from("/var/lib/clockbridge/queue.db")
}
fn default_retention_days() -> u64 {
    30
}
fn default_max_future() -> i64 {
    3600
}
fn default_mapping_mode() -> MappingMode {
    MappingMode::Passthrough
}
fn default_mapping_reload() -> u64 {
    60
}
fn default_batch_size() -> usize {
    50
}
fn default_linger_ms() -> u64 {
    200
}
fn default_rps() -> u32 {
    49
}
fn default_in_flight() -> usize {
    16
}
fn default_retry_initial() -> u64 {
    1
}
fn default_retry_max() -> u64 {
    300
}
fn default_app_error_pause() -> u64 {
    60
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_format() -> LineFormat {
    LineFormat::ZkAttlog
}
fn default_baud_rate() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
/// Reads a number of seconds, written either as an integer (`30`) or as a duration string with a unit
/// (`"30s"`, `"5m"`, `"1h 30m"`); a plain string of digits counts as seconds.
fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Secs {
        N(u64),
        S(String),
    }
    match Secs::deserialize(d)? {
        Secs::N(n) => Ok(n),
        Secs::S(s) => {
            let t = s.trim();
            if let Ok(n) = t.parse::<u64>() {
                return Ok(n);
            }
            match humantime::parse_duration(t) {
                Ok(dur) if dur.subsec_nanos() == 0 => Ok(dur.as_secs()),
                Ok(_) => Err(serde::de::Error::custom(format!(
                    "{s:?} is not a whole number of seconds"
                ))),
                Err(e) => Err(serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}): write seconds (30) or a duration (\"30s\", \"5m\")"
                ))),
            }
        }
    }
}

/// [`de_seconds`] for an optional key.
fn de_seconds_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_seconds(d).map(Some)
}

/// How often `poll_command` is written when `poll_interval` is absent.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 5;
/// How often a `zk` device's log is read when `poll_interval` is absent: realtime events bring punches
/// within a second, so the poll only reconciles, and each poll disables the device for a moment.
pub const DEFAULT_ZK_POLL_INTERVAL_SECS: u64 = 60;
/// The default port of ZKTeco terminals.
pub const ZK_DEFAULT_PORT: u16 = 4370;

fn default_io_timeout() -> u64 {
    10
}
fn default_max_clock_skew() -> u64 {
    60
}
fn default_max_line() -> usize {
    1024
}
fn default_reconnect_max() -> u64 {
    60
}
fn default_true() -> bool {
    true
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            path: default_queue_path(),
            retention_days: default_retention_days(),
            max_future_secs: default_max_future(),
        }
    }
}
impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            mode: default_mapping_mode(),
            file: None,
            reload_interval_secs: default_mapping_reload(),
        }
    }
}
impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            batch_size: default_batch_size(),
            linger_ms: default_linger_ms(),
            max_requests_per_second: default_rps(),
            max_in_flight: default_in_flight(),
            retry_initial_secs: default_retry_initial(),
            retry_max_secs: default_retry_max(),
            app_error_pause_secs: default_app_error_pause(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

impl DeviceConfig {
    /// A device with every optional key at its default (for tests, tools and the demo).
    pub fn new(id: &str, kind: DeviceKind, timezone: &str) -> DeviceConfig {
        DeviceConfig {
            id: id.to_string(),
            kind,
            mode: None,
            address: None,
            path: None,
            baud_rate: default_baud_rate(),
            data_bits: default_data_bits(),
            parity: Parity::None,
            stop_bits: default_stop_bits(),
            flow_control: FlowControl::None,
            format: default_format(),
            encoding: None,
            delimiter: None,
            columns: None,
            header: false,
            pattern: None,
            time_format: None,
            state_map: Default::default(),
            poll_command: None,
            poll_interval_secs: None,
            ack_template: None,
            timezone: timezone.to_string(),
            location_name: None,
            max_line_length: default_max_line(),
            reconnect_max_secs: default_reconnect_max(),
            enabled: true,
            comm_key: CommKey::default(),
            sync_clock: false,
            max_clock_skew_secs: default_max_clock_skew(),
            clear_device_log: false,
            realtime: true,
            user_names: true,
            user_id_source: UserIdSource::Record,
            io_timeout_secs: default_io_timeout(),
        }
    }
}

impl FeishuConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

impl DeviceConfig {
    /// The parsed time zone (valid after [`Config::validate`]).
    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }
    /// How often the device is polled: `poll_interval`, or the default of its kind.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs.unwrap_or(match self.kind {
            DeviceKind::Zk => DEFAULT_ZK_POLL_INTERVAL_SECS,
            _ => DEFAULT_POLL_INTERVAL_SECS,
        }))
    }

    /// For `zk`: `address` as `host:port`, with port 4370 when it has none.
    pub fn zk_address(&self) -> Option<String> {
        self.address.as_deref().and_then(zk_address)
    }

    /// `location_name`, or the device id.
    pub fn location(&self) -> &str {
        self.location_name.as_deref().unwrap_or(&self.id)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, as `host:port` (port 4370 when
/// absent); `None` when it is not an address.
pub fn zk_address(a: &str) -> Option<String> {
    let a = a.trim();
    if a.is_empty() || a.chars().any(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if host.is_empty() {
            return None;
        }
        return match after {
            "" => Some(format!("[{host}]:{ZK_DEFAULT_PORT}")),
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .map(|p| format!("[{host}]:{p}")),
        };
    }
    match a.matches(':').count() {
        0 => Some(format!("{a}:{ZK_DEFAULT_PORT}")),
        1 => {
            let (h, p) = a.split_once(':')?;
            let p = p.parse::<u16>().ok().filter(|p| *p != 0)?;
            (!h.is_empty()).then(|| format!("{h}:{p}"))
        }
        // a bare IPv6 address
        _ => a
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| format!("[{ip}]:{ZK_DEFAULT_PORT}")),
    }
}

impl Config {
    /// Reads `path`, applies `CLOCKBRIDGE__SECTION__KEY` overrides from the environment, resolves
    /// `app_secret_file` (or `$CREDENTIALS_DIRECTORY/app_secret`) and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads and validates the configuration for commands that never talk to the platform (`status`):
    /// the app secret is not needed and not read.
    pub fn load_without_secret(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: format!("cannot read: {e}: create it from config/clockbridge.toml"),
        })?;
        Self::parse(&text, &path.display().to_string(), std::env::vars()).map(|(c, _)| c)
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: format!("cannot read: {e}: create it from config/clockbridge.toml"),
        })?;
        Self::from_toml_with_env(&text, &path.display().to_string(), env)
    }

    /// Parses TOML text (named `origin` in errors) with environment overrides.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut cfg, credentials_dir) = Self::parse(text, origin, env)?;
        cfg.resolve_secret(credentials_dir.as_deref())?;
        Ok(cfg)
    }

    /// Parses and validates, without resolving the secret; also returns `$CREDENTIALS_DIRECTORY`.
    fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let mut credentials_dir = None;
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, v)| {
                if k == "CREDENTIALS_DIRECTORY" {
                    credentials_dir = Some(PathBuf::from(v));
                }
                k.starts_with("CLOCKBRIDGE__")
            })
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CLOCKBRIDGE")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::File {
                path: origin.to_string(),
                reason: e.to_string(),
            })?;
        let cfg: Config = serde_path_to_error::deserialize(built).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Key {
                key: if path == "." || path.is_empty() {
                    "(top level)".into()
                } else {
                    path
                },
                reason: e.into_inner().to_string(),
            }
        })?;
        cfg.validate()?;
        Ok((cfg, credentials_dir))
    }

    /// Where the secret comes from: exactly one of `feishu.app_secret`, `feishu.app_secret_file` and
    /// the systemd credential `app_secret` (`$CREDENTIALS_DIRECTORY/app_secret`). Two at once is an
    /// error, so a forgotten inline placeholder can never shadow the real secret.
    fn resolve_secret(&mut self, credentials_dir: Option<&Path>) -> Result<(), ConfigError> {
        let credential = credentials_dir
            .map(|d| d.join("app_secret"))
            .filter(|p| p.exists());
        let inline = !self.feishu.app_secret.is_empty();
        let sources = [
            inline.then_some("feishu.app_secret"),
            self.feishu
                .app_secret_file
                .as_ref()
                .map(|_| "feishu.app_secret_file"),
            credential
                .as_ref()
                .map(|_| "the systemd credential app_secret"),
        ];
        let given: Vec<&str> = sources.into_iter().flatten().collect();
        if given.len() > 1 {
            return Err(ConfigError::Key {
                key: "feishu.app_secret".into(),
                reason: format!(
                    "given more than once ({}): keep only one source of the secret",
                    given.join(" and ")
                ),
            });
        }
        if inline {
            return Ok(());
        }
        let file = match (&self.feishu.app_secret_file, credential) {
            (Some(f), _) => f.clone(),
            (None, Some(c)) => c,
            (None, None) => {
                return Err(ConfigError::Key {
                    key: "feishu.app_secret".into(),
                    reason: "missing: set feishu.app_secret, feishu.app_secret_file, or a systemd credential named app_secret".into(),
                })
            }
        };
        let s = std::fs::read_to_string(&file).map_err(|e| {
            ConfigError::invalid(
                "feishu.app_secret_file",
                file.display().to_string(),
                format!("cannot be read: {e}"),
            )
        })?;
        let s = s.trim();
        if s.is_empty() {
            return Err(ConfigError::invalid(
                "feishu.app_secret_file",
                file.display().to_string(),
                "is empty",
            ));
        }
        self.feishu.app_secret = Secret::new(s);
        Ok(())
    }

    /// Checks values that have the right type but are not acceptable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.feishu;
        if !(f.base_url.starts_with("https://") || f.base_url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "feishu.base_url",
                &f.base_url,
                "is not an http(s) URL: use https://open.feishu.cn or https://open.larksuite.com",
            ));
        }
        if f.app_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "feishu.app_id",
                &f.app_id,
                "is empty: copy the App ID from the developer console",
            ));
        }
        if f.request_timeout_secs == 0 || f.request_timeout_secs > 300 {
            return Err(ConfigError::invalid(
                "feishu.request_timeout_secs",
                f.request_timeout_secs,
                "must be between 1 and 300",
            ));
        }
        if self.queue.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("queue.path", "", "is empty"));
        }
        if self.queue.max_future_secs < 0 {
            return Err(ConfigError::invalid(
                "queue.max_future_secs",
                self.queue.max_future_secs,
                "must not be negative",
            ));
        }
        if self.mapping.mode == MappingMode::Table && self.mapping.file.is_none() {
            return Err(ConfigError::Key {
                key: "mapping.file".into(),
                reason: "missing: mapping.mode = \"table\" needs a CSV file".into(),
            });
        }
        if self.mapping.reload_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "mapping.reload_interval_secs",
                0,
                "must be at least 1",
            ));
        }
        let s = &self.sender;
        if s.batch_size == 0 || s.batch_size > 50 {
            return Err(ConfigError::invalid(
                "sender.batch_size",
                s.batch_size,
                "must be between 1 and 50 (the platform's limit)",
            ));
        }
        if s.max_requests_per_second == 0 || s.max_requests_per_second > 50 {
            return Err(ConfigError::invalid(
                "sender.max_requests_per_second",
                s.max_requests_per_second,
                "must be between 1 and 50 (the platform's limit)",
            ));
        }
        if s.max_in_flight == 0 || s.max_in_flight > 256 {
            return Err(ConfigError::invalid(
                "sender.max_in_flight",
                s.max_in_flight,
                "must be between 1 and 256",
            ));
        }
        if s.retry_initial_secs == 0 || s.retry_max_secs < s.retry_initial_secs {
            return Err(ConfigError::invalid(
                "sender.retry_max_secs",
                s.retry_max_secs,
                "must be at least sender.retry_initial_secs, which must be at least 1",
            ));
        }
        if s.app_error_pause_secs == 0 {
            return Err(ConfigError::invalid(
                "sender.app_error_pause_secs",
                0,
                "must be at least 1",
            ));
        }
        let level = self.log.level.trim();
        let plain = !level.contains(['=', ',']);
        let known = matches!(
            level.to_ascii_lowercase().as_str(),
            "error" | "warn" | "info" | "debug" | "trace" | "off"
        );
        if (plain && !known) || tracing_subscriber::EnvFilter::try_new(level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                &self.log.level,
                "is not a log level: use error, warn, info, debug or trace (or a filter like \"info,clockbridge=debug\")",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid(
                "log.format",
                &self.log.format,
                "must be \"text\" or \"json\"",
            ));
        }
        if let Some(addr) = self.http.listen {
            if !addr.ip().to_canonical().is_loopback() && !self.http.allow_remote {
                return Err(ConfigError::invalid(
                    "http.listen",
                    addr.to_string(),
                    "is not a loopback address: /metrics and /status show device names and user ids to anyone who can connect, without authentication; listen on 127.0.0.1 (or [::1]), or set http.allow_remote = true to serve other hosts",
                ));
            }
        }
        if self.inbox.poll_interval == 0 {
            return Err(ConfigError::invalid(
                "inbox.poll_interval",
                0,
                "must be at least 1",
            ));
        }
        if let Some(label) = &self.inbox.encoding {
            if self.inbox.text_encoding().is_none() {
                return Err(ConfigError::invalid(
                    "inbox.encoding",
                    label,
                    "is not a known encoding: use \"utf-8\", \"gb18030\", \"big5\" or another WHATWG label",
                ));
            }
        }
        let mut dirs = HashSet::new();
        for (_, name, dir) in self.inbox.dirs() {
            if dir.as_os_str().is_empty() || !dir.is_absolute() {
                return Err(ConfigError::invalid(
                    format!("inbox.{name}"),
                    dir.display().to_string(),
                    "must be an absolute directory path",
                ));
            }
            if !dirs.insert(dir.clone()) {
                return Err(ConfigError::invalid(
                    format!("inbox.{name}"),
                    dir.display().to_string(),
                    "is used for another kind too: give each kind its own directory",
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = |k: &str| format!("devices[{i}].{k}");
            if d.id.trim().is_empty() || d.id.chars().any(|c| c.is_control()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    &d.id,
                    "must be a non-empty name without control characters",
                ));
            }
            if !ids.insert(d.id.as_str()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    &d.id,
                    "is used by another device: device ids must be unique",
                ));
            }
            if let Err(e) = d.timezone.parse::<Tz>() {
                return Err(ConfigError::invalid(
                    key("timezone"),
                    &d.timezone,
                    format!("is not an IANA time zone ({e}): use e.g. \"Asia/Shanghai\""),
                ));
            }
            if d.max_line_length < 16 || d.max_line_length > 1 << 20 {
                return Err(ConfigError::invalid(
                    key("max_line_length"),
                    d.max_line_length,
                    "must be between 16 and 1048576",
                ));
            }
            if d.reconnect_max_secs == 0 {
                return Err(ConfigError::invalid(
                    key("reconnect_max_secs"),
                    0,
                    "must be at least 1",
                ));
            }
            if d.poll_interval_secs == Some(0) {
                return Err(ConfigError::invalid(
                    key("poll_interval"),
                    0,
                    "must be at least 1",
                ));
            }
            if d.kind != DeviceKind::Zk {
                let zk_only = [
                    ("comm_key", d.comm_key.is_set()),
                    ("sync_clock", d.sync_clock),
                    ("clear_device_log", d.clear_device_log),
                    ("user_id_source", d.user_id_source != UserIdSource::Record),
                ];
                if let Some((k, _)) = zk_only.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Key {
                        key: key(k),
                        reason: format!(
                            "is only for kind = \"zk\" (this device is kind = \"{}\"): remove it",
                            d.kind.as_str()
                        ),
                    });
                }
            }
            match d.kind {
                DeviceKind::Serial => {
                    if d.path.is_none() {
                        return Err(ConfigError::Key {
                            key: key("path"),
                            reason: "missing: kind = \"serial\" needs path = \"/dev/ttyUSB0\" (or a /dev/serial/by-id/ path)".into(),
                        });
                    }
                    if !(50..=4_000_000).contains(&d.baud_rate) {
                        return Err(ConfigError::invalid(
                            key("baud_rate"),
                            d.baud_rate,
                            "is not a serial speed (e.g. 9600, 19200, 115200)",
                        ));
                    }
                    if !(5..=8).contains(&d.data_bits) {
                        return Err(ConfigError::invalid(
                            key("data_bits"),
                            d.data_bits,
                            "must be 5, 6, 7 or 8",
                        ));
                    }
                    if !(1..=2).contains(&d.stop_bits) {
                        return Err(ConfigError::invalid(
                            key("stop_bits"),
                            d.stop_bits,
                            "must be 1 or 2",
                        ));
                    }
                }
                DeviceKind::Zk => {
                    let Some(addr) = &d.address else {
                        return Err(ConfigError::Key {
                            key: key("address"),
                            reason: "missing: kind = \"zk\" needs address = \"host\" or \"host:port\" (port 4370 when omitted)".into(),
                        });
                    };
                    if zk_address(addr).is_none() {
                        return Err(ConfigError::invalid(
                            key("address"),
                            addr,
                            "is not host or host:port (e.g. \"10.0.0.5\" or \"10.0.0.5:4370\")",
                        ));
                    }
                    if d.comm_key.expose() > 999_999 {
                        return Err(ConfigError::Key {
                            key: key("comm_key"),
                            reason: "is out of range: ZKTeco comm keys are 0 to 999999".into(),
                        });
                    }
                    if !(1..=300).contains(&d.io_timeout_secs) {
                        return Err(ConfigError::invalid(
                            key("io_timeout"),
                            d.io_timeout_secs,
                            "must be between 1 and 300 seconds",
                        ));
                    }
                    if d.mode.is_some() {
                        return Err(ConfigError::Key {
                            key: key("mode"),
                            reason: "is only for kind = \"tcp\": remove it (clockbridge always dials a zk device)".into(),
                        });
                    }
                    if d.poll_command.is_some() || d.ack_template.is_some() {
                        return Err(ConfigError::Key {
                            key: key(if d.poll_command.is_some() { "poll_command" } else { "ack_template" }),
                            reason: "is only for line clocks (tcp, serial): a zk device is read over its binary protocol".into(),
                        });
                    }
                }
                DeviceKind::Tcp => {
                    if d.mode.is_none() {
                        return Err(ConfigError::Key {
                            key: key("mode"),
                            reason:
                                "missing: kind = \"tcp\" needs mode = \"listen\" or \"connect\""
                                    .into(),
                        });
                    }
                    let Some(addr) = &d.address else {
                        return Err(ConfigError::Key {
                            key: key("address"),
                            reason: "missing: kind = \"tcp\" needs address = \"host:port\"".into(),
                        });
                    };
                    let port_ok = addr
                        .rsplit_once(':')
                        .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                        .unwrap_or(false);
                    if !port_ok {
                        return Err(ConfigError::invalid(
                            key("address"),
                            addr,
                            "is not host:port (e.g. \"0.0.0.0:5005\" or \"10.0.0.5:5005\")",
                        ));
                    }
                }
            }
            if let Err(e) = crate::sources::formats::LineParser::new(d) {
                return Err(match e.config_value(d) {
                    Some(value) => ConfigError::Invalid {
                        key: key(e.key),
                        value,
                        reason: e.reason,
                    },
                    None => ConfigError::Key {
                        key: key(e.key),
                        reason: e.reason,
                    },
                });
            }
            if let Some(cmd) = &d.poll_command {
                match crate::sources::session::unescape(cmd) {
                    Ok(bytes) if bytes.is_empty() => {
                        return Err(ConfigError::invalid(
                            key("poll_command"),
                            cmd,
                            "is empty: remove the key, or give the command the clock expects",
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(ConfigError::invalid(key("poll_command"), cmd, e)),
                }
            }
            if let Some(t) = &d.ack_template {
                if let Err(e) = crate::sources::session::AckTemplate::parse(t) {
                    return Err(ConfigError::invalid(key("ack_template"), t, e));
                }
            }
        }
        Ok(())
    }

    /// The configuration as TOML with secrets masked, for `check-config`.
    pub fn to_masked_toml(&self) -> String {
        // Secret serialises as "***"; build through serde_json to drop None values cleanly.
        let mut v = serde_json::to_value(self).unwrap_or_default();
        // each device shows the keys of its kind, with the poll interval in effect
        if let Some(devices) = v.get_mut("devices").and_then(|d| d.as_array_mut()) {
            for (json, dev) in devices.iter_mut().zip(&self.devices) {
                if let Some(m) = json.as_object_mut() {
                    m.retain(|k, _| dev.kind.applies(k));
                    m.insert("poll_interval".into(), dev.poll_interval().as_secs().into());
                }
            }
        }
        let v = strip_nulls(v);
        toml_like(&v)
    }

    /// The config for a device id.
    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

/// Renders a JSON object of sections (tables and arrays of tables) as TOML.
fn toml_like(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(top) = v.as_object() else {
        return out;
    };
    for (section, body) in top {
        match body {
            serde_json::Value::Object(m) => {
                out.push_str(&format!("[{section}]\n"));
                for (k, v) in m {
                    out.push_str(&format!("{k} = {v}\n"));
                }
                out.push('\n');
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    out.push_str(&format!("[[{section}]]\n"));
                    if let Some(m) = item.as_object() {
                        for (k, v) in m {
                            out.push_str(&format!("{k} = {v}\n"));
                        }
                    }
                    out.push('\n');
                }
            }
            other => out.push_str(&format!("{section} = {other}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[feishu]
base_url = "http://127.0.0.1:9"
app_id = "cli_test"
app_secret = "s3cr3t-value"
employee_type = "employee_id"

[queue]
path = "/tmp/q.db"

[mapping]
mode = "passthrough"

[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "0.0.0.0:5005"
format = "zk-attlog"
timezone = "Asia/Shanghai"
location_name = "HQ 1F door"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn contract_shape_parses() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.feishu.app_id, "cli_test");
        assert_eq!(c.feishu.app_secret.expose(), "s3cr3t-value");
        assert_eq!(c.devices[0].mode, Some(TcpMode::Listen));
        assert_eq!(c.devices[0].tz(), chrono_tz::Asia::Shanghai);
        assert_eq!(c.sender.batch_size, 50);
    }

    #[test]
    fn environment_overrides_any_key() {
        let c = parse(
            GOOD,
            &[
                ("CLOCKBRIDGE__FEISHU__APP_ID", "cli_env"),
                ("CLOCKBRIDGE__QUEUE__PATH", "/tmp/other.db"),
                ("CLOCKBRIDGE__SENDER__LINGER_MS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.feishu.app_id, "cli_env");
        assert_eq!(c.queue.path, PathBuf::from("/tmp/other.db"));
        assert_eq!(c.sender.linger_ms, 5);
    }

    #[test]
    fn unknown_key_is_an_error_naming_its_section() {
        let bad = GOOD.replace("employee_type", "employe_type");
        let e = parse(&bad, &[]).unwrap_err().to_string();
        assert!(e.contains("feishu"), "{e}");
        assert!(e.contains("employe_type"), "{e}");
    }

    #[test]
    fn poll_interval_takes_seconds_or_a_duration_and_the_older_spelling() {
        for (line, secs) in [
            ("poll_interval = 30", 30),
            ("poll_interval = \"45\"", 45),
            ("poll_interval = \"2m\"", 120),
            ("poll_interval = \"1h 30m\"", 5400),
            ("poll_interval_secs = 7", 7),
        ] {
            let c =
                parse(&format!("{GOOD}{line}\n"), &[]).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(c.devices[0].poll_interval_secs, Some(secs), "{line}");
        }
        let err = parse(&format!("{GOOD}poll_interval = \"soon\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("devices[0].poll_interval"), "{err}");
        assert!(err.contains("soon"), "{err}");
        let err = parse(&format!("{GOOD}poll_interval = 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("devices[0].poll_interval"), "{err}");
    }

    #[test]
    fn bad_timezone_names_key_and_value() {
        let bad = GOOD.replace("Asia/Shanghai", "Asia/Shangai");
        let e = parse(&bad, &[]).unwrap_err().to_string();
        assert!(e.contains("devices[0].timezone"), "{e}");
        assert!(e.contains("Asia/Shangai"), "{e}");
    }

    #[test]
    fn bad_enum_value_names_key() {
        let bad = GOOD.replace("\"employee_id\"", "\"open_id\"");
        let e = parse(&bad, &[]).unwrap_err().to_string();
        assert!(e.contains("feishu.employee_type"), "{e}");
    }

    #[test]
    fn secret_is_masked_everywhere() {
        let c = parse(GOOD, &[]).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let t = c.to_masked_toml();
        assert!(!t.contains("s3cr3t"), "{t}");
        assert!(t.contains("app_secret = \"***\""), "{t}");
        assert!(t.contains("[[devices]]"), "{t}");
    }

    #[test]
    fn table_mapping_needs_a_file() {
        let bad = GOOD.replace("mode = \"passthrough\"", "mode = \"table\"");
        let e = parse(&bad, &[]).unwrap_err().to_string();
        assert!(e.contains("mapping.file"), "{e}");
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = GOOD.replace(
            "app_secret = \"s3cr3t-value\"",
            &format!("app_secret_file = {:?}", f.display().to_string()),
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.feishu.app_secret.expose(), "from-file");
    }

    #[test]
    fn two_sources_of_the_secret_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = GOOD.replace(
            "app_secret = \"s3cr3t-value\"",
            &format!(
                "app_secret = \"s3cr3t-value\"\napp_secret_file = {:?}",
                f.display().to_string()
            ),
        );
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("given more than once"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn secret_from_a_systemd_credential() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app_secret"), "cred-secret\n").unwrap();
        let text = GOOD.replace("app_secret = \"s3cr3t-value\"\n", "");
        let dirs = dir.path().display().to_string();
        let c = parse(&text, &[("CREDENTIALS_DIRECTORY", dirs.as_str())]).unwrap();
        assert_eq!(c.feishu.app_secret.expose(), "cred-secret");
        // and with an inline secret as well: refused
        let e = parse(GOOD, &[("CREDENTIALS_DIRECTORY", dirs.as_str())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd credential"), "{e}");
        // no secret anywhere
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("feishu.app_secret: missing"), "{e}");
    }

    #[test]
    fn a_bad_log_level_names_the_key() {
        let text = format!("{GOOD}\n[log]\nlevel = \"inof\"\n");
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn bad_poll_command_and_ack_template_name_their_key() {
        let serial = |extra: &str| {
            format!(
                "{GOOD}\n[[devices]]\nid = \"clock-3\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\ntimezone = \"UTC\"\n{extra}\n"
            )
        };
        let e = parse(&serial("poll_command = 'GET\\q'"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices[1].poll_command"), "{e}");
        let e = parse(&serial("ack_template = 'ACK {usr}'"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices[1].ack_template"), "{e}");
        let ok = parse(
            &serial("poll_command = 'GET\\r\\n'\nack_template = 'ACK {user} {time}\\r\\n'"),
            &[],
        )
        .unwrap();
        assert_eq!(ok.devices[1].kind, DeviceKind::Serial);
        let e = parse(&serial("").replace("path = \"/dev/ttyUSB0\"\n", ""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices[1].path"), "{e}");
    }

    #[test]
    fn http_is_off_by_default_and_loopback_only_unless_allowed() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.http.listen, None);
        assert!(!c.http.allow_remote);
        assert!(!c.to_masked_toml().contains("listen = \"127"));

        let with = |http: &str| format!("{GOOD}\n[http]\n{http}\n");
        let c = parse(&with("listen = \"127.0.0.1:9477\""), &[]).unwrap();
        assert_eq!(c.http.listen, Some("127.0.0.1:9477".parse().unwrap()));
        assert!(c.to_masked_toml().contains("listen = \"127.0.0.1:9477\""));
        let c = parse(&with("listen = \"[::1]:9477\""), &[]).unwrap();
        assert!(c.http.listen.unwrap().ip().is_loopback());

        for remote in [
            "0.0.0.0:9477",
            "10.0.0.5:9477",
            "[::]:9477",
            "[::ffff:10.0.0.5]:9477",
        ] {
            let e = parse(&with(&format!("listen = \"{remote}\"")), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.listen"), "{e}");
            assert!(e.contains(remote), "{e}");
            assert!(e.contains("allow_remote"), "{e}");
            let ok = parse(
                &with(&format!("listen = \"{remote}\"\nallow_remote = true")),
                &[],
            )
            .unwrap();
            assert_eq!(ok.http.listen, Some(remote.parse().unwrap()));
        }
        // the IPv4-mapped form of 127.0.0.1 is loopback too
        parse(&with("listen = \"[::ffff:127.0.0.1]:9477\""), &[]).unwrap();

        // from the environment, like any key
        let c = parse(GOOD, &[("CLOCKBRIDGE__HTTP__LISTEN", "127.0.0.1:9478")]).unwrap();
        assert_eq!(c.http.listen, Some("127.0.0.1:9478".parse().unwrap()));

        let e = parse(&with("listen = \"localhost:9477\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");
        assert!(e.contains("localhost:9477"), "{e}");
        let e = parse(&with("listn = \"127.0.0.1:9477\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
    }

    const ZK: &str =
        "\n[[devices]]\nid = \"door-9\"\nkind = \"zk\"\ntimezone = \"Asia/Shanghai\"\n";

    #[test]
    fn zk_device_defaults_port_4370_a_minute_poll_and_safe_options() {
        let c = parse(&format!("{GOOD}{ZK}address = \"10.0.0.5\"\n"), &[]).unwrap();
        let d = &c.devices[1];
        assert_eq!(d.kind, DeviceKind::Zk);
        assert_eq!(d.zk_address().as_deref(), Some("10.0.0.5:4370"));
        assert_eq!(d.poll_interval(), Duration::from_secs(60));
        assert_eq!(c.devices[0].poll_interval(), Duration::from_secs(5));
        assert_eq!(d.comm_key.expose(), 0);
        assert!(!d.sync_clock && !d.clear_device_log);
        assert!(d.realtime && d.user_names);
        assert_eq!(d.max_clock_skew_secs, 60);
        assert_eq!(d.user_id_source, UserIdSource::Record);

        let c = parse(
            &format!(
                "{GOOD}{ZK}address = \"clock-2.lan:4371\"\ncomm_key = 123456\npoll_interval = \"30s\"\nsync_clock = true\nclear_device_log = true\nrealtime = false\nmax_clock_skew = \"2m\"\nuser_id_source = \"user_table\"\n"
            ),
            &[],
        )
        .unwrap();
        let d = &c.devices[1];
        assert_eq!(d.zk_address().as_deref(), Some("clock-2.lan:4371"));
        assert_eq!(d.comm_key.expose(), 123456);
        assert_eq!(d.poll_interval(), Duration::from_secs(30));
        assert_eq!(d.max_clock_skew_secs, 120);
        assert!(d.sync_clock && d.clear_device_log && !d.realtime);
        assert_eq!(d.user_id_source, UserIdSource::UserTable);
        // the comm key is a secret
        assert!(!format!("{c:?}").contains("123456"));
        let t = c.to_masked_toml();
        assert!(!t.contains("123456"), "{t}");
        assert!(t.contains("comm_key = \"***\""), "{t}");
    }

    #[test]
    fn zk_addresses_take_ipv6_and_refuse_bad_ports() {
        assert_eq!(zk_address("[fe80::1]").as_deref(), Some("[fe80::1]:4370"));
        assert_eq!(
            zk_address("[fe80::1]:5000").as_deref(),
            Some("[fe80::1]:5000")
        );
        assert_eq!(zk_address("fe80::1").as_deref(), Some("[fe80::1]:4370"));
        for bad in [
            "",
            "10.0.0.5:",
            "10.0.0.5:70000",
            ":4370",
            "10.0.0.5:0",
            "a b",
            "[]:1",
        ] {
            assert_eq!(zk_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn zk_configuration_errors_name_the_key_and_keep_the_comm_key_secret() {
        let e = parse(&format!("{GOOD}{ZK}"), &[]).unwrap_err().to_string();
        assert!(e.contains("devices[1].address"), "{e}");
        let e = parse(&format!("{GOOD}{ZK}address = \"10.0.0.5:99999\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("devices[1].address") && e.contains("99999"),
            "{e}"
        );
        let e = parse(
            &format!("{GOOD}{ZK}address = \"10.0.0.5\"\ncomm_key = \"s3cret77\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("devices[1].comm_key"), "{e}");
        assert!(!e.contains("s3cret77"), "{e}");
        let e = parse(
            &format!("{GOOD}{ZK}address = \"10.0.0.5\"\ncomm_key = 4294967\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("devices[1].comm_key"), "{e}");
        assert!(!e.contains("4294967"), "{e}");
        let e = parse(
            &format!("{GOOD}{ZK}address = \"10.0.0.5\"\nmode = \"connect\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("devices[1].mode"), "{e}");
        let e = parse(&format!("{GOOD}clear_device_log = true\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices[0].clear_device_log"), "{e}");
        let e = parse(
            &format!("{GOOD}{ZK}address = \"10.0.0.5\"\nclear_log = true\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clear_log"), "{e}");
    }

    #[test]
    fn duplicate_device_ids_are_refused() {
        let dup = format!(
            "{GOOD}\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"connect\"\naddress = \"127.0.0.1:1\"\ntimezone = \"UTC\"\n"
        );
        let e = parse(&dup, &[]).unwrap_err().to_string();
        assert!(e.contains("devices[1].id"), "{e}");
    }

    #[test]
    fn inbox_directories_are_absolute_distinct_and_overridable() {
        let ok = parse(
            &format!("{GOOD}\n[inbox]\napprovals = \"/srv/in/a\"\nleave_accruals = \"/srv/in/l\"\npoll_interval = \"2s\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(ok.inbox.poll_interval, 2);
        assert_eq!(ok.inbox.dirs().len(), 2);
        let e = parse(&format!("{GOOD}\n[inbox]\napprovals = \"in/a\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inbox.approvals") && e.contains("absolute"),
            "{e}"
        );
        let e = parse(
            &format!("{GOOD}\n[inbox]\napprovals = \"/srv/in\"\narchive_reports = \"/srv/in\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("inbox.archive_reports") && e.contains("another kind"),
            "{e}"
        );
        let e = parse(&format!("{GOOD}\n[inbox]\napproval = \"/srv/in\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("approval"), "{e}");
        let env = parse(GOOD, &[("CLOCKBRIDGE__INBOX__APPROVALS", "/srv/env")]).unwrap();
        assert_eq!(env.inbox.approvals, Some(PathBuf::from("/srv/env")));
    }

    #[test]
    fn check_config_shows_each_device_the_keys_of_its_kind_with_its_poll_interval() {
        let c = parse(
            &format!("{GOOD}\n[[devices]]\nid = \"gate\"\nkind = \"zk\"\naddress = \"10.0.0.31\"\ncomm_key = 123456\ntimezone = \"Asia/Shanghai\"\n"),
            &[],
        )
        .unwrap();
        let out = c.to_masked_toml();
        let blocks: Vec<&str> = out.split("[[devices]]").collect();
        // each block up to the next table
        let (tcp, zk) = (blocks[1], blocks[2].split("\n[").next().unwrap());
        assert!(
            tcp.contains("format = \"zk-attlog\"") && tcp.contains("poll_interval = 5"),
            "{tcp}"
        );
        assert!(
            !tcp.contains("comm_key") && !tcp.contains("baud_rate"),
            "{tcp}"
        );
        assert!(
            zk.contains("comm_key = \"***\"") && zk.contains("poll_interval = 60"),
            "{zk}"
        );
        assert!(!zk.contains("123456"), "{zk}");
        for other in ["baud_rate", "format", "max_line_length", "mode"] {
            assert!(!zk.contains(other), "{other} in {zk}");
        }
    }

    #[test]
    fn inbox_encoding_is_utf8_by_default_and_a_known_label_otherwise() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.inbox.text_encoding(), Some(encoding_rs::UTF_8));
        let c = parse(&format!("{GOOD}\n[inbox]\nencoding = \"GBK\"\n"), &[]).unwrap();
        assert_eq!(c.inbox.text_encoding(), Some(encoding_rs::GBK));
        let e = parse(&format!("{GOOD}\n[inbox]\nencoding = \"klingon\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inbox.encoding") && e.contains("klingon"), "{e}");
    }
}
