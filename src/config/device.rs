//! `[[devices]]`: the keys every device has (`id`, `kind`, `timezone`, `location_name`,
//! `poll_interval`, `reconnect_max_secs`, `enabled`), and the dispatch of the other keys to the spec of
//! the device's kind ([`crate::sources::Kind`]).
//!
//! Guarantees:
//! - The file format is the flat table it always was; each key is read by the part that knows it.
//! - A key that is neither common nor of the device's kind is an error naming it: a key of another
//!   kind says which kind it is for, a misspelt key suggests the nearest one.
//! - Every error names the device by index and id (`devices[3] (id "door-2").timezone: ...`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use super::errors::{device_key, from_serde, unknown_key, ConfigError};
use crate::device_stats::DeviceStats;
use crate::ingest::PunchSink;
use crate::queue::store::DeviceStore;
use crate::sources::kind::{de_seconds_opt, not_one_of, take_keys, Device, Keys, Members};
use crate::sources::kind::{SourceTask, SpecError};
use crate::sources::{self, DeviceSpec, SourceContext};

/// The keys every device has, whatever its kind.
pub const COMMON_KEYS: &[&str] = &[
    "id",
    "kind",
    "timezone",
    "location_name",
    "poll_interval",
    "poll_interval_secs",
    "reconnect_max_secs",
    "enabled",
];

/// One clock (or one listening port several clocks dial).
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Sent as `user_flow.device_id`; part of every idempotent key, so never rename a device that has
    /// sent punches.
    pub id: String,
    /// IANA time zone of the clock's local time.
    pub timezone: String,
    /// `user_flow.location_name` (defaults to the device id).
    pub location_name: Option<String>,
    /// How often a device is polled: the key is `poll_interval` (seconds or a duration);
    /// `poll_interval_secs` is accepted as an older spelling. Absent: the kind's default.
    pub poll_interval_secs: Option<u64>,
    /// Longest reconnect back-off, in seconds.
    pub reconnect_max_secs: u64,
    /// A device can be kept in the file but switched off.
    pub enabled: bool,
    /// The keys of the device's kind, read and checked by the kind.
    pub spec: Arc<dyn DeviceSpec>,
}

/// The common keys as written.
#[derive(Deserialize)]
struct Common {
    timezone: String,
    #[serde(default)]
    location_name: Option<String>,
    #[serde(
        default,
        rename = "poll_interval",
        alias = "poll_interval_secs",
        deserialize_with = "de_seconds_opt"
    )]
    poll_interval_secs: Option<u64>,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_secs: u64,
    #[serde(default = "default_true")]
    enabled: bool,
}

fn default_reconnect_max() -> u64 {
    60
}
fn default_true() -> bool {
    true
}

impl DeviceConfig {
    /// A device `id` of `spec`'s kind in `timezone`, with every common key at its default.
    pub fn new(id: &str, timezone: &str, spec: impl DeviceSpec + 'static) -> DeviceConfig {
        DeviceConfig {
            id: id.to_string(),
            timezone: timezone.to_string(),
            location_name: None,
            poll_interval_secs: None,
            reconnect_max_secs: default_reconnect_max(),
            enabled: true,
            spec: Arc::new(spec),
        }
    }

    /// Reads device `index` from its table: the common keys here, the others by its kind.
    pub(super) fn parse(index: usize, mut table: Keys) -> Result<DeviceConfig, ConfigError> {
        let id = match table.get("id").map(|v| v.clone().into_string()) {
            Some(Ok(id)) => id,
            Some(Err(_)) => {
                return Err(ConfigError::Key {
                    key: device_key(index, None, "id"),
                    reason: "is not a text: write id = \"door-1\"".into(),
                })
            }
            None => {
                return Err(ConfigError::Key {
                    key: device_key(index, None, "id"),
                    reason: "missing: every device needs an id (sent as device_id, part of every punch's key)".into(),
                })
            }
        };
        let key = |k: &str| device_key(index, Some(&id), k);
        if id.trim().is_empty() || id.chars().any(|c| c.is_control()) {
            return Err(ConfigError::invalid(
                key("id"),
                &id,
                "must be a non-empty name without control characters",
            ));
        }
        let names: Vec<&str> = sources::KINDS.iter().map(|k| k.name()).collect();
        let kind_name = match table.get("kind").map(|v| v.clone().into_string()) {
            Some(Ok(k)) => k,
            Some(Err(_)) | None => {
                return Err(ConfigError::Key {
                    key: key("kind"),
                    reason: format!(
                        "missing: set kind = one of {}",
                        names
                            .iter()
                            .map(|n| format!("{n:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            }
        };
        let Some(kind) = sources::kind(&kind_name) else {
            return Err(ConfigError::Key {
                key: key("kind"),
                reason: not_one_of(&kind_name, &names),
            });
        };
        let common = take_keys(&mut table, COMMON_KEYS);
        let own = take_keys(&mut table, kind.keys());
        let mut strangers: Vec<&String> = table.keys().collect();
        strangers.sort();
        if let Some(stranger) = strangers.first() {
            let owners: Vec<String> = sources::KINDS
                .iter()
                .filter(|k| k.keys().contains(&stranger.as_str()))
                .map(|k| format!("{:?}", k.name()))
                .collect();
            let reason = if owners.is_empty() {
                let known: Vec<&str> = COMMON_KEYS.iter().chain(kind.keys()).copied().collect();
                unknown_key(stranger, &known)
            } else {
                format!(
                    "is only for kind = {} (this device is kind = {kind_name:?}): remove it",
                    owners.join(" or ")
                )
            };
            return Err(ConfigError::Key {
                key: key(stranger),
                reason,
            });
        }
        let common: Common = serde_path_to_error::deserialize(config::Value::new(
            None,
            config::ValueKind::Table(common),
        ))
        .map_err(|e| {
            let (k, reason) = from_serde(&e.path().to_string(), &e.inner().to_string());
            ConfigError::Key {
                key: key(&k),
                reason,
            }
        })?;
        let tz: Tz = common.timezone.parse().map_err(|e| {
            ConfigError::invalid(
                key("timezone"),
                &common.timezone,
                format!("is not an IANA time zone ({e}): use e.g. \"Asia/Shanghai\""),
            )
        })?;
        if common.reconnect_max_secs == 0 {
            return Err(ConfigError::invalid(
                key("reconnect_max_secs"),
                0,
                "must be at least 1",
            ));
        }
        if common.poll_interval_secs == Some(0) {
            return Err(ConfigError::invalid(
                key("poll_interval"),
                0,
                "must be at least 1",
            ));
        }
        let device = Device { id: id.clone(), tz };
        let spec = kind
            .parse(&device, own)
            .map_err(|e| spec_error(index, &id, e))?;
        Ok(DeviceConfig {
            id,
            timezone: common.timezone,
            location_name: common.location_name,
            poll_interval_secs: common.poll_interval_secs,
            reconnect_max_secs: common.reconnect_max_secs,
            enabled: common.enabled,
            spec,
        })
    }

    /// The spec as its type, when it is of that type (`cfg.spec_as::<ZkSpec>()`).
    pub fn spec_as<T: DeviceSpec + 'static>(&self) -> Option<&T> {
        let spec: &dyn DeviceSpec = &*self.spec;
        crate::sources::kind::AsAny::as_any(spec).downcast_ref::<T>()
    }

    /// How reconcile can ask the clock what it holds ([`DeviceSpec::clock_count`]).
    pub fn clock_count(&self) -> Option<&dyn crate::sources::ClockCount> {
        self.spec.clock_count()
    }

    /// The kind's name (`kind = "..."`).
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    /// The parsed time zone (valid once loaded).
    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// How often the device is polled: `poll_interval`, or the default of its kind.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval_secs
            .map(Duration::from_secs)
            .unwrap_or_else(|| self.spec.default_poll_interval())
    }

    /// `location_name`, or the device id.
    pub fn location(&self) -> &str {
        self.location_name.as_deref().unwrap_or(&self.id)
    }

    /// Where the device is, for `status`.
    pub fn address(&self) -> Option<String> {
        self.spec.address()
    }

    /// What the device's source starts from.
    pub fn context(
        &self,
        sink: PunchSink,
        stats: Arc<DeviceStats>,
        shutdown: tokio_util::sync::CancellationToken,
        store: DeviceStore,
    ) -> SourceContext {
        SourceContext {
            id: self.id.clone(),
            tz: self.tz(),
            poll_interval: self.poll_interval(),
            reconnect_max_secs: self.reconnect_max_secs,
            sink,
            stats,
            shutdown,
            store,
        }
    }

    /// The device's source task (runs until `ctx.shutdown` is cancelled).
    pub fn start(&self, ctx: SourceContext) -> SourceTask {
        self.spec.start(ctx)
    }

    /// The keys as `check-config` shows them: the common ones, the kind's (secrets masked) and the
    /// poll interval in effect.
    pub fn shown(&self) -> Members {
        let mut m = Members::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("kind".into(), self.kind().into());
        m.insert("timezone".into(), self.timezone.clone().into());
        if let Some(l) = &self.location_name {
            m.insert("location_name".into(), l.clone().into());
        }
        m.insert("reconnect_max_secs".into(), self.reconnect_max_secs.into());
        m.insert("enabled".into(), self.enabled.into());
        m.extend(self.spec.shown());
        m.insert(
            "poll_interval".into(),
            self.poll_interval().as_secs().into(),
        );
        m
    }
}

/// A kind's error about device `index`, with the device's key path.
fn spec_error(index: usize, id: &str, e: SpecError) -> ConfigError {
    let (key, reason) = if e.key.is_empty() {
        (String::new(), e.reason)
    } else {
        from_serde(&e.key, &e.reason)
    };
    let key = device_key(index, Some(id), &key);
    match e.value {
        Some(value) => ConfigError::Invalid { key, value, reason },
        None => ConfigError::Key { key, reason },
    }
}

/// Checks what no two devices may share: their id, and what their kinds claim (a listening address,
/// a ZKTeco terminal's address).
pub(super) fn check_unique(devices: &[DeviceConfig]) -> Result<(), ConfigError> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut claims: HashMap<(&'static str, String), (usize, &str)> = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if let Some(first) = ids.insert(&d.id, i) {
            return Err(ConfigError::invalid(
                device_key(i, Some(&d.id), "id"),
                &d.id,
                format!("is used by devices[{first}] too: device ids must be unique"),
            ));
        }
        for c in d.spec.claims() {
            if let Some((first, other)) = claims.insert((c.what, c.value.clone()), (i, &d.id)) {
                return Err(ConfigError::invalid(
                    device_key(i, Some(&d.id), c.key),
                    &c.value,
                    format!(
                        "is the {} of devices[{first}] (id {other:?}) too: two devices cannot share it; remove one, or give each its own",
                        c.what
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What `check-config` warns about without refusing the configuration (a serial port that is not
/// there yet, a password file others can read...), each naming the device's key.
pub(super) fn warnings(devices: &[DeviceConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        for w in d.spec.warnings() {
            let key = device_key(i, Some(&d.id), &w.key);
            out.push(match w.value {
                Some(v) => format!("config key {key}: {v} {}", w.reason),
                None => format!("config key {key}: {}", w.reason),
            });
        }
        for (name, file) in d.spec.secret_files() {
            let key = device_key(i, Some(&d.id), name);
            out.extend(super::access::secret_file(&key, &file));
        }
    }
    out
}
