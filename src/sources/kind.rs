//! What a kind of clock is to the rest of clockbridge: the [`Kind`] registered in [`super::KINDS`]
//! (its name, its `[[devices]]` keys, how it reads and checks them, how its figures are shown) and the
//! [`DeviceSpec`] it reads from one device's keys (what `check-config` shows, where the device is,
//! and how its source task starts from a [`SourceContext`]).
//!
//! Guarantees:
//! - A kind sees only its own keys: the configuration hands [`Kind::parse`] the keys the kind names
//!   in [`Kind::keys`], and refuses any other key of the device table itself (a misspelt key, a key of
//!   another kind), so a kind's spec never needs `deny_unknown_fields`.
//! - A [`SpecError`] names the key at fault (and its value where that helps); the configuration adds
//!   the device's index and id. Secrets (a comm key) are never put in one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::line_spec::LineSpec;
use crate::device_stats::DeviceStats;
use crate::ingest::PunchSink;
use crate::queue::store::DeviceStore;

/// A kind's keys as written in one `[[devices]]` table (only the keys the kind named), as the
/// configuration loader read them (so a kind's keys convert like every other key: `"9600"` reads as a
/// number where a number is expected).
pub type Keys = config::Map<String, config::Value>;

/// Members of a JSON object: a device's figures, a spec as `check-config` shows it.
pub type Members = serde_json::Map<String, serde_json::Value>;

/// The future of a device's source task.
pub type SourceTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A kind of clock: one folder under `src/sources/` and one line in [`super::KINDS`].
pub trait Kind: Sync {
    /// The value of `kind = "..."`.
    fn name(&self) -> &'static str;
    /// The `[[devices]]` keys of this kind, besides the keys every device has (`id`, `kind`,
    /// `timezone`, `location_name`, `poll_interval`, `reconnect_max_secs`, `enabled`).
    fn keys(&self) -> &'static [&'static str];
    /// Reads and checks the kind's keys of one device.
    fn parse(&self, device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError>;
    /// The lines `status` shows for a device's figures (see [`crate::device_stats::Figures`]), each
    /// ending in a newline and indented by four spaces; nothing for kinds without figures.
    fn render_figures(&self, _figures: &Members, _out: &mut String) {}
    /// The kind's gauges in `/metrics` (each read from a device's figures).
    fn gauges(&self) -> &'static [Gauge] {
        &[]
    }
}

/// A gauge of `/metrics` read from a device's figures (absent where `read` gives `None`).
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// In seconds (the `_seconds` suffix and unit).
    pub seconds: bool,
    pub read: fn(&Members) -> Option<i64>,
}

/// What every device has, as a kind needs it to read its own keys.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub tz: chrono_tz::Tz,
}

/// A spec as [`std::any::Any`], so the code that knows its type can look at it
/// ([`crate::config::DeviceConfig::spec_as`]).
pub trait AsAny {
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One device's spec: its kind's keys, read and checked.
pub trait DeviceSpec: AsAny + Send + Sync + std::fmt::Debug {
    /// The kind's name (`kind = "..."`).
    fn kind(&self) -> &'static str;
    /// The keys as `check-config` shows them, defaults included, secrets masked (`"***"`).
    fn shown(&self) -> Members;
    /// How often the device is polled when `poll_interval` is absent.
    fn default_poll_interval(&self) -> Duration;
    /// Where the device is, for `status` (an address, a port path).
    fn address(&self) -> Option<String> {
        None
    }
    /// What no two devices may share (a listening address, a terminal's address).
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    /// What `check-config` should warn about without refusing the configuration.
    fn warnings(&self) -> Vec<SpecError> {
        Vec::new()
    }
    /// The files the device's credentials are read from, by key (`password_file`): `check-config`
    /// and `run` warn when others can read or change one, as for `feishu.app_secret_file`.
    fn secret_files(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        Vec::new()
    }
    /// The line format keys, for kinds that read lines (and for `import`).
    fn lines(&self) -> Option<&LineSpec> {
        None
    }
    /// The device's source task: runs until `ctx.shutdown` is cancelled, whatever fails.
    fn start(&self, ctx: SourceContext) -> SourceTask;
    /// How `clockbridge reconcile` can ask the clock itself what it holds; `None` (the default):
    /// it cannot be asked (a line clock sends what it sends), and reconcile says so.
    fn clock_count(&self) -> Option<&dyn ClockCount> {
        None
    }
}

/// What a clock can say about its own log, for `clockbridge reconcile`'s clock side: a small
/// capability a kind offers through [`DeviceSpec::clock_count`] (ZKTeco terminals: their record
/// count and the watermark; a kind that can count a time range fills
/// [`ClockCounted::range_records`]).
pub trait ClockCount: Send + Sync {
    /// Asks the clock. `range` is the Unix-second bounds of the reconcile on the device's wall
    /// clock (half open), `days` the same range as the first and last calendar day on that clock
    /// (both included); `store` is the device's state (where a watermark is kept).
    fn count<'a>(
        &'a self,
        device: &'a str,
        range: (i64, i64),
        days: (chrono::NaiveDate, chrono::NaiveDate),
        store: &'a DeviceStore,
    ) -> Pin<Box<dyn Future<Output = Result<ClockCounted, String>> + Send + 'a>>;
}

/// What a clock said.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClockCounted {
    /// Records in the clock's whole log.
    pub device_records: Option<u64>,
    /// Records of the log the source counts as committed to the queue (its watermark).
    pub watermark: Option<u64>,
    /// Records the clock holds in the reconcile's range, for clocks that can count a range.
    pub range_records: Option<u64>,
}

/// Something a device uses that no other device may use too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The key that holds it.
    pub key: &'static str,
    /// What it is, for the message (`listen address`, `ZKTeco address`).
    pub what: &'static str,
    /// The value, normalised so that two spellings of one address compare equal.
    pub value: String,
}

/// A kind's key that is not acceptable (or, from [`DeviceSpec::warnings`], worth a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The key (or a path below it: `state_map.上班`).
    pub key: String,
    /// The value as written, when showing it helps (never a secret).
    pub value: Option<String>,
    /// What is wrong and what to do, lowercase.
    pub reason: String,
}

impl SpecError {
    /// An error about a key, without its value.
    pub fn key(key: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError {
            key: key.into(),
            value: None,
            reason: reason.into(),
        }
    }

    /// An error about a key's value (shown with `{:?}`).
    pub fn value(
        key: impl Into<String>,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> SpecError {
        SpecError {
            key: key.into(),
            value: Some(format!("{value:?}")),
            reason: reason.into(),
        }
    }
}

/// Everything a source task starts from.
pub struct SourceContext {
    /// The device id (`user_flow.device_id`).
    pub id: String,
    /// The device's time zone.
    pub tz: chrono_tz::Tz,
    /// `poll_interval`, or the kind's default.
    pub poll_interval: Duration,
    /// The longest reconnect back-off, in seconds.
    pub reconnect_max_secs: u64,
    /// Where punches go.
    pub sink: PunchSink,
    /// The device's live figures.
    pub stats: Arc<DeviceStats>,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Where the source keeps its state across restarts (watermarks, cursors).
    pub store: DeviceStore,
}

/// Reads a kind's keys into its typed spec; the error names the key (`baud_rate`, `columns[1]`).
pub fn from_keys<T: DeserializeOwned>(keys: Keys) -> Result<T, SpecError> {
    let table = config::Value::new(None, config::ValueKind::Table(keys));
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        SpecError::key(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

/// Splits `keys` into those named in `names` and the rest, both in the order of the file.
pub fn take_keys(keys: &mut Keys, names: &[&str]) -> Keys {
    let taken: Vec<String> = keys
        .keys()
        .filter(|k| names.contains(&k.as_str()))
        .cloned()
        .collect();
    taken
        .into_iter()
        .filter_map(|k| keys.shift_remove(&k).map(|v| (k, v)))
        .collect()
}

/// A spec as the keys `check-config` shows (through serde; secrets serialise masked).
pub fn shown<T: serde::Serialize>(spec: &T) -> Members {
    match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Members::new(),
    }
}

/// Reads a number of seconds, written either as an integer (`30`) or as a duration string with a unit
/// (`"30s"`, `"5m"`, `"1h 30m"`); a plain string of digits counts as seconds.
pub fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
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
pub fn de_seconds_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_seconds(d).map(Some)
}

/// `"user_id" is not one of "employee_id", "employee_no"`: the error of a key that takes one of a few
/// words.
pub fn not_one_of(value: &str, choices: &[&str]) -> String {
    let listed: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    format!("{value:?} is not one of {}", listed.join(", "))
}

/// Declares the enum of a key that takes one of a few words, with the (de)serialisation of those words
/// and an error that lists them ([`not_one_of`]) instead of serde's `unknown variant` text.
#[macro_export]
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The words this key takes.
            pub const CHOICES: &'static [&'static str] = &[$($text),+];

            /// The word of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = <String as serde::Deserialize>::deserialize(d)?;
                match word.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(serde::de::Error::custom(
                        $crate::sources::kind::not_one_of(&word, Self::CHOICES),
                    )),
                }
            }
        }
    };
}
