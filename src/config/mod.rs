//! Typed configuration: a TOML file, then `CLOCKBRIDGE__SECTION__KEY` environment overrides.
//!
//! - [`sections`]: `[feishu]`, `[queue]`, `[mapping]`, `[sender]`, `[log]`, `[http]`, `[inbox]`;
//!   [`reconcile`]: `[reconcile]` (`[adms]`, the listener of pushing terminals, is read by
//!   [`crate::sources::adms`]);
//! - [`device`]: `[[devices]]`, whose keys beyond the common ones belong to the device's kind
//!   ([`crate::sources::KINDS`]);
//! - [`secret`]: the app secret, where it comes from and how its file is read;
//! - [`access`]: who else can read the secret or change the configuration (warnings);
//! - [`errors`]: how an error names its key.
//!
//! Guarantees:
//! - Unknown keys are errors (every section denies unknown fields, and a device's keys are each read
//!   by the part that knows them), so a typo never silently falls back to a default; a misspelt key
//!   suggests the nearest one.
//! - The same file gives the same error at every run: keys are read in the order of the file, so of
//!   two bad keys the first is named.
//! - Every error is one visible line and names the key path and, where there is one, the bad value
//!   (`devices[0] (id "door-1").timezone: "Asia/Shang" is not an IANA time zone: ...`); a value set by
//!   an environment variable names the variable.
//! - The app secret is held in a [`Secret`] and a ZKTeco comm key in a
//!   [`CommKey`](crate::sources::zk::CommKey), whose `Debug`, `Display` and `Serialize` print `***`, so
//!   no secret can reach a log, an error message or `check-config` output by accident; a TOML syntax
//!   error names the line and column but never quotes the line (it may hold the secret).
//! - [`Config::warnings`] says what is accepted but unsafe or not there yet: a secret others can read,
//!   a configuration others can change, an inline secret, a serial port that does not exist yet.

pub mod access;
pub mod device;
pub mod errors;
pub mod reconcile;
pub mod secret;
pub mod sections;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::mapping::{MappingConfig, MappingMode};
pub use device::DeviceConfig;
pub use errors::ConfigError;
pub use reconcile::ReconcileConfig;
pub use secret::{Secret, SecretSource};
pub use sections::{
    EmployeeType, FeishuConfig, HttpConfig, InboxConfig, LimitsConfig, LogConfig, Pacing,
    QueueConfig, SenderConfig,
};

/// Where `run`, `status` and `check-config` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clockbridge/clockbridge.toml";

/// The whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub feishu: FeishuConfig,
    pub queue: QueueConfig,
    pub mapping: MappingConfig,
    pub sender: SenderConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub inbox: InboxConfig,
    pub limits: LimitsConfig,
    pub reconcile: ReconcileConfig,
    /// `[adms]`: the listener terminals of `kind = "adms"` push to.
    pub adms: crate::sources::adms::AdmsConfig,
    pub devices: Vec<DeviceConfig>,
    /// Where the configuration and its secret came from (for [`Config::warnings`]).
    origin: Origin,
}

/// Where a configuration came from.
#[derive(Debug, Clone, Default)]
struct Origin {
    /// The name used in messages: the file's path, or what the caller named the text.
    name: String,
    /// The file it was read from, if it was.
    file: Option<PathBuf>,
    /// Where the app secret came from; `None` when it was not read.
    secret: Option<SecretSource>,
}

/// The file as written: sections typed, devices as their tables (read by [`DeviceConfig::parse`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    feishu: FeishuConfig,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    mapping: MappingConfig,
    #[serde(default)]
    sender: SenderConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    inbox: InboxConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    reconcile: ReconcileConfig,
    #[serde(default)]
    adms: crate::sources::adms::AdmsConfig,
    #[serde(default)]
    devices: Vec<config::Map<String, config::Value>>,
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
        let text = read(path)?;
        let (mut cfg, _) = Self::parse(&text, &path.display().to_string(), std::env::vars())?;
        cfg.origin.file = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = read(path)?;
        let mut cfg = Self::from_toml_with_env(&text, &path.display().to_string(), env)?;
        cfg.origin.file = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses TOML text (named `origin` in errors) with environment overrides.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut cfg, env) = Self::parse(text, origin, env)?;
        let file = cfg.feishu.app_secret_file.clone();
        let source = secret::resolve_secret(
            &mut cfg.feishu.app_secret,
            file.as_deref(),
            env.credentials_dir.as_deref(),
            env.sets_secret,
        )
        .map_err(ConfigError::visible)?;
        cfg.origin.secret = Some(source);
        Ok(cfg)
    }

    /// Parses and validates, without resolving the secret; also returns what the environment says
    /// of the secret.
    fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, SecretEnv), ConfigError> {
        let mut secret_env = SecretEnv::default();
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, v)| {
                if k == "CREDENTIALS_DIRECTORY" {
                    secret_env.credentials_dir = Some(PathBuf::from(v));
                }
                k.starts_with("CLOCKBRIDGE__")
            })
            .collect();
        secret_env.sets_secret = env
            .keys()
            .any(|k| k.eq_ignore_ascii_case("CLOCKBRIDGE__FEISHU__APP_SECRET"));
        let vars: Vec<String> = env.keys().cloned().collect();
        Self::parse_with(text, origin, env)
            .map(|c| (c, secret_env))
            .map_err(|e| e.naming_env(&vars).visible())
    }

    fn parse_with(
        text: &str,
        origin: &str,
        env: config::Map<String, String>,
    ) -> Result<Config, ConfigError> {
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
                reason: errors::without_source_lines(&e.to_string()),
            })?;
        let raw: Raw = serde_path_to_error::deserialize(built).map_err(|e| {
            let (key, reason) = errors::from_serde(&e.path().to_string(), &e.inner().to_string());
            ConfigError::Key { key, reason }
        })?;
        let devices = raw
            .devices
            .into_iter()
            .enumerate()
            .map(|(i, table)| DeviceConfig::parse(i, table))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = Config {
            feishu: raw.feishu,
            queue: raw.queue,
            mapping: raw.mapping,
            sender: raw.sender,
            log: raw.log,
            http: raw.http,
            inbox: raw.inbox,
            limits: raw.limits,
            reconcile: raw.reconcile,
            adms: raw.adms,
            devices,
            origin: Origin {
                name: origin.to_string(),
                ..Origin::default()
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that have the right type but are not acceptable, and what no two devices may
    /// share (an id, a listening address, a ZKTeco terminal).
    pub fn validate(&self) -> Result<(), ConfigError> {
        sections::validate(self)?;
        self.reconcile.check()?;
        if let Err((key, value, reason)) = self.adms.check() {
            return Err(ConfigError::invalid(format!("adms.{key}"), value, reason));
        }
        device::check_unique(&self.devices)
    }

    /// What `check-config` prints and `run` logs as warnings without refusing the configuration: a
    /// secret file others can read, a configuration file others can change, an inline secret
    /// ([`access`]), a serial port that does not exist yet. Looked at when called (modes and owners
    /// of the files now). No secret is part of one.
    pub fn warnings(&self) -> Vec<String> {
        let o = &self.origin;
        let mut out = access::warnings(&o.name, o.file.as_deref(), o.secret.as_ref());
        out.extend(device::warnings(&self.devices));
        out
    }

    /// The configuration as TOML with secrets masked, for `check-config`: each device with the keys
    /// of its kind and the poll interval in effect.
    pub fn to_masked_toml(&self) -> String {
        let mut top = serde_json::Map::new();
        let sections = [
            ("feishu", serde_json::to_value(&self.feishu)),
            ("queue", serde_json::to_value(&self.queue)),
            ("mapping", serde_json::to_value(&self.mapping)),
            ("sender", serde_json::to_value(&self.sender)),
            ("log", serde_json::to_value(&self.log)),
            ("http", serde_json::to_value(&self.http)),
            ("inbox", serde_json::to_value(&self.inbox)),
            ("limits", serde_json::to_value(&self.limits)),
            ("reconcile", serde_json::to_value(&self.reconcile)),
        ];
        let mut sections = Vec::from(sections);
        if self.devices.iter().any(|d| d.kind() == "adms") {
            sections.push(("adms", serde_json::to_value(&self.adms)));
        }
        for (name, value) in sections {
            top.insert(name.into(), value.unwrap_or_default());
        }
        // one secret, shown once: `app_secret = "***"` only when the file holds it; otherwise a
        // comment says where it was read (never its value), not a second app_secret beside
        // app_secret_file
        let from = match &self.origin.secret {
            Some(secret::SecretSource::Inline) | None => None,
            Some(source) => Some(source.describe()),
        };
        if from.is_some() {
            if let Some(f) = top.get_mut("feishu").and_then(|f| f.as_object_mut()) {
                f.remove("app_secret");
            }
        }
        let note = from
            .map(|f| format!("# feishu.app_secret: read from {f} (not shown)\n"))
            .unwrap_or_default();
        top.insert(
            "devices".into(),
            self.devices
                .iter()
                .map(|d| serde_json::Value::Object(d.shown()))
                .collect(),
        );
        let table = toml::Value::try_from(strip_nulls(serde_json::Value::Object(top)));
        match table.map(|t| toml::to_string(&t)) {
            Ok(Ok(text)) => note + &text,
            Ok(Err(e)) | Err(e) => format!("# cannot show the configuration as TOML: {e}\n"),
        }
    }

    /// Where the app secret was read (`None` when it was not: [`Config::load_without_secret`]).
    pub fn secret_source(&self) -> Option<&SecretSource> {
        self.origin.secret.as_ref()
    }

    /// The config for a device id.
    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// What the environment says of the secret.
#[derive(Default)]
struct SecretEnv {
    /// `$CREDENTIALS_DIRECTORY`.
    credentials_dir: Option<PathBuf>,
    /// `CLOCKBRIDGE__FEISHU__APP_SECRET` is set.
    sets_secret: bool,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: format!("cannot read: {e}: create it from config/clockbridge.toml"),
    })
}

/// TOML has no null: absent values are left out.
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

#[cfg(test)]
mod tests;
