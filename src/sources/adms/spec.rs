//! The keys of a terminal that pushes (`kind = "adms"`: its `[[devices]]` keys) and of the one
//! listener all such terminals push to (the top-level `[adms]` section), their defaults and checks.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::sources::kind::{de_seconds, Claim, SpecError};

/// The keys of [`AdmsSpec`].
pub const ADMS_KEYS: &[&str] = &["serial_number", "delay", "error_delay", "realtime"];

/// A terminal's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AdmsSpec {
    /// The serial number the terminal sends (`SN=`): the allow-list is the list of these.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// `Delay=` of the handshake: seconds between the terminal's `getrequest` polls (also how soon a
    /// queued command reaches it). The terminal counts as online while its last request is less
    /// than three of these old. Default 10 s.
    #[serde(
        default = "default_delay",
        rename = "delay",
        deserialize_with = "de_seconds"
    )]
    pub delay_secs: u64,
    /// `ErrorDelay=`: seconds the terminal waits after a failed request before it sends again.
    /// Default 30 s.
    #[serde(
        default = "default_error_delay",
        rename = "error_delay",
        deserialize_with = "de_seconds"
    )]
    pub error_delay_secs: u64,
    /// `Realtime=1`: push each punch as it happens (otherwise every `TransInterval` minute).
    #[serde(default = "default_true")]
    pub realtime: bool,
}

fn default_delay() -> u64 {
    10
}
fn default_error_delay() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

impl AdmsSpec {
    /// A terminal with serial number `sn` and every other key at its default.
    pub fn new(sn: &str) -> AdmsSpec {
        AdmsSpec {
            serial_number: Some(sn.to_string()),
            delay_secs: default_delay(),
            error_delay_secs: default_error_delay(),
            realtime: true,
        }
    }

    /// The serial number (checked present by [`AdmsSpec::check`]).
    pub fn sn(&self) -> &str {
        self.serial_number.as_deref().unwrap_or("")
    }

    /// Checks values that have the right type but are not acceptable.
    pub fn check(&self) -> Result<(), SpecError> {
        let Some(sn) = &self.serial_number else {
            return Err(SpecError::key(
                "serial_number",
                "missing: kind = \"adms\" needs serial_number = \"...\", the SN the terminal sends (its menu: System Info -> Device Info -> Serial Number)",
            ));
        };
        if sn.is_empty()
            || sn.len() > 64
            || !sn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SpecError::value(
                "serial_number",
                sn,
                "is not a terminal serial number: 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if !(1..=3600).contains(&self.delay_secs) {
            return Err(SpecError::value(
                "delay",
                self.delay_secs,
                "must be 1 to 3600 seconds",
            ));
        }
        if !(1..=3600).contains(&self.error_delay_secs) {
            return Err(SpecError::value(
                "error_delay",
                self.error_delay_secs,
                "must be 1 to 3600 seconds",
            ));
        }
        Ok(())
    }

    /// No two terminals may have one serial number.
    pub fn claims(&self) -> Vec<Claim> {
        vec![Claim {
            key: "serial_number",
            what: "ADMS serial number",
            value: self.sn().to_string(),
        }]
    }
}

/// The `[adms]` section: the one HTTP listener every `kind = "adms"` terminal pushes to. It runs
/// only when at least one such device is configured and enabled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdmsConfig {
    /// Where terminals push to (`"0.0.0.0:8081"`): the address and port set on the terminal.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The largest request body taken (bytes, or "16MiB"); a larger one is refused with 413 and a
    /// WARN, and the terminal keeps its records. Default 16 MiB.
    #[serde(
        default = "default_max_body",
        deserialize_with = "crate::hr::size::de_size"
    )]
    pub max_body_size: u64,
    /// A request's head (request line and headers) must arrive within this (seconds or a
    /// duration). Default 10 s.
    #[serde(
        default = "default_header_timeout",
        rename = "header_timeout",
        deserialize_with = "de_seconds"
    )]
    pub header_timeout_secs: u64,
    /// A connection with no request, or a body that stops arriving, for this long is closed.
    /// Default 60 s.
    #[serde(
        default = "default_idle_timeout",
        rename = "idle_timeout",
        deserialize_with = "de_seconds"
    )]
    pub idle_timeout_secs: u64,
    /// Connections served at once from one IP address (more are closed at once). Default 8.
    #[serde(default = "default_per_address")]
    pub max_connections_per_address: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
}
fn default_max_body() -> u64 {
    16 * 1024 * 1024
}
fn default_header_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_per_address() -> usize {
    8
}

impl Default for AdmsConfig {
    fn default() -> Self {
        AdmsConfig {
            listen: default_listen(),
            max_body_size: default_max_body(),
            header_timeout_secs: default_header_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            max_connections_per_address: default_per_address(),
        }
    }
}

impl AdmsConfig {
    /// Checks values that have the right type but are not acceptable: `(key, value, reason)`.
    pub fn check(&self) -> Result<(), (&'static str, String, &'static str)> {
        if self.max_body_size < 1024 {
            return Err((
                "max_body_size",
                self.max_body_size.to_string(),
                "must be at least 1024 bytes (a catch-up push of a few thousand punches is about 100 KiB)",
            ));
        }
        if !(1..=3600).contains(&self.header_timeout_secs) {
            return Err((
                "header_timeout",
                self.header_timeout_secs.to_string(),
                "must be 1 to 3600 seconds",
            ));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err((
                "idle_timeout",
                self.idle_timeout_secs.to_string(),
                "must be 1 to 86400 seconds",
            ));
        }
        if self.max_connections_per_address == 0 {
            return Err((
                "max_connections_per_address",
                "0".into(),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_number_is_required_and_checked() {
        let mut s = AdmsSpec::new("CQUJ230160089");
        assert!(s.check().is_ok());
        s.serial_number = None;
        assert!(s.check().unwrap_err().reason.contains("missing"));
        s.serial_number = Some("A B".into());
        assert_eq!(s.check().unwrap_err().key, "serial_number");
        s.serial_number = Some("SN1".into());
        s.delay_secs = 0;
        assert_eq!(s.check().unwrap_err().key, "delay");
    }

    #[test]
    fn the_section_has_safe_defaults() {
        let c = AdmsConfig::default();
        assert_eq!(c.max_body_size, 16 * 1024 * 1024);
        assert_eq!(c.listen.port(), 8081);
        assert!(c.check().is_ok());
        let bad = AdmsConfig {
            max_connections_per_address: 0,
            ..c
        };
        assert_eq!(bad.check().unwrap_err().0, "max_connections_per_address");
    }
}
