//! The sections of the configuration besides `[[devices]]`: `[feishu]`, `[queue]`, `[mapping]`,
//! `[sender]`, `[log]`, `[http]`, `[inbox]` and `[limits]`, with their defaults and their checks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::errors::ConfigError;
use super::secret::Secret;
use crate::mapping::MappingMode;
use crate::sources::kind::de_seconds;

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
    /// Larger files are refused unread (moved to `rejected/` with a report): bytes or `"256MiB"`.
    #[serde(
        default = "default_max_file_size",
        deserialize_with = "crate::hr::size::de_size"
    )]
    pub max_file_size: u64,
}

fn default_max_file_size() -> u64 {
    crate::hr::size::DEFAULT_MAX_FILE_SIZE
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
            max_file_size: default_max_file_size(),
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

crate::choice_enum! {
    /// The kind of id in `user_id` / `creator_id`.
    pub enum EmployeeType {
        EmployeeId = "employee_id",
        EmployeeNo = "employee_no",
    }
}

crate::choice_enum! {
    /// How the sender paces requests below `sender.max_requests_per_second`.
    pub enum Pacing {
        /// Additive increase while requests succeed, multiplicative decrease on a rate-limit reply
        /// (`crate::sender::pacing`): gateways sharing one app share its limit.
        Adaptive = "adaptive",
        /// Always `max_requests_per_second` (a rate-limit reply only pauses until its reset).
        Fixed = "fixed",
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
    /// `adaptive` (AIMD below `max_requests_per_second`, see [`crate::sender`]) or `fixed` (always
    /// `max_requests_per_second`).
    #[serde(default = "default_pacing")]
    pub pacing: Pacing,
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

/// `[limits]`: how much of the process's resources clock connections may take (see
/// [`crate::limits`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections all listening devices together may have open; never more than the soft limit of
    /// open files less a reserve for uploads, the queue and `/healthz`.
    #[serde(default = "default_max_clock_connections")]
    pub max_clock_connections: usize,
}

fn default_max_clock_connections() -> usize {
    crate::limits::DEFAULT_MAX_CLOCK_CONNECTIONS
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clock_connections: default_max_clock_connections(),
        }
    }
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
fn default_pacing() -> Pacing {
    Pacing::Adaptive
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

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            path: default_queue_path(),
            retention_days: default_retention_days(),
            max_future_secs: default_max_future(),
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
            pacing: default_pacing(),
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

impl FeishuConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// Checks the sections' values that have the right type but are not acceptable.
pub(super) fn validate(c: &super::Config) -> Result<(), ConfigError> {
    let (f, queue, mapping, s, log, http, inbox) = (
        &c.feishu, &c.queue, &c.mapping, &c.sender, &c.log, &c.http, &c.inbox,
    );

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
    if queue.path.as_os_str().is_empty() {
        return Err(ConfigError::invalid("queue.path", "", "is empty"));
    }
    if queue.max_future_secs < 0 {
        return Err(ConfigError::invalid(
            "queue.max_future_secs",
            queue.max_future_secs,
            "must not be negative",
        ));
    }
    if mapping.mode == MappingMode::Table && mapping.file.is_none() {
        return Err(ConfigError::Key {
            key: "mapping.file".into(),
            reason: "missing: mapping.mode = \"table\" needs a CSV file".into(),
        });
    }
    if mapping.reload_interval_secs == 0 {
        return Err(ConfigError::invalid(
            "mapping.reload_interval_secs",
            0,
            "must be at least 1",
        ));
    }
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
    let level = log.level.trim();
    let plain = !level.contains(['=', ',']);
    let known = matches!(
        level.to_ascii_lowercase().as_str(),
        "error" | "warn" | "info" | "debug" | "trace" | "off"
    );
    if (plain && !known) || tracing_subscriber::EnvFilter::try_new(level).is_err() {
        return Err(ConfigError::invalid(
            "log.level",
            &log.level,
            "is not a log level: use error, warn, info, debug or trace (or a filter like \"info,clockbridge=debug\")",
        ));
    }
    if !matches!(log.format.as_str(), "text" | "json") {
        return Err(ConfigError::invalid(
            "log.format",
            &log.format,
            "must be \"text\" or \"json\"",
        ));
    }
    if let Some(addr) = http.listen {
        if !addr.ip().to_canonical().is_loopback() && !http.allow_remote {
            return Err(ConfigError::invalid(
                "http.listen",
                addr.to_string(),
                "is not a loopback address: /metrics and /status show device names and user ids to anyone who can connect, without authentication; listen on 127.0.0.1 (or [::1]), or set http.allow_remote = true to serve other hosts",
            ));
        }
    }
    if inbox.poll_interval == 0 {
        return Err(ConfigError::invalid(
            "inbox.poll_interval",
            0,
            "must be at least 1",
        ));
    }
    if let Some(label) = &inbox.encoding {
        if inbox.text_encoding().is_none() {
            return Err(ConfigError::invalid(
                "inbox.encoding",
                label,
                "is not a known encoding: use \"utf-8\", \"gb18030\", \"big5\" or another WHATWG label",
            ));
        }
    }
    if c.limits.max_clock_connections == 0 {
        return Err(ConfigError::invalid(
            "limits.max_clock_connections",
            0,
            "must be at least 1",
        ));
    }
    let mut dirs = HashSet::new();
    for (_, name, dir) in inbox.dirs() {
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
    Ok(())
}
