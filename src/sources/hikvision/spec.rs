//! The `[[devices]]` keys of a Hikvision access-control or face terminal (`kind = "hikvision"`),
//! their defaults and their checks. The password is a secret: held in a [`Password`], whose `Debug`,
//! `Display` and `Serialize` print `***`, read from `password` or from the file `password_file` (the
//! same rules as the app secret's file: a byte-order mark and the line ending dropped, anything else
//! that cannot be a password refused, with the reason and never with the content).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::{read_secret_text, Secret, Unreadable};
use crate::sources::kind::{de_seconds, Claim, SpecError};

/// How often a terminal's event log is read when `poll_interval` is absent: the alert stream brings
/// punches within a second, so the pull only closes gaps.
pub const DEFAULT_HIK_POLL_INTERVAL_SECS: u64 = 60;

/// The successful-verification minors of major 5 ("event") that are punches by default (HCNetSDK's
/// `MINOR_*_PASS` codes; see `docs/hikvision-protocol.md`): valid card (1), card + password (2),
/// fingerprint (38), card + fingerprint (40), card + fingerprint + password (43), fingerprint +
/// password (46), face + fingerprint (54), employee no. + fingerprint (69), employee no. +
/// fingerprint + password (72), face (75), employee no. + face (77), employee no. + password (101),
/// password (181).
pub const DEFAULT_EVENT_MINORS: &[u32] = &[1, 2, 38, 40, 43, 46, 54, 69, 72, 75, 77, 101, 181];

/// The most bytes a password file may hold.
const MAX_PASSWORD_FILE: u64 = 1024;

/// The keys of [`HikSpec`].
pub const HIK_KEYS: &[&str] = &[
    "address",
    "username",
    "password",
    "password_file",
    "realtime",
    "event_minors",
    "sync_clock",
    "max_clock_skew",
    "io_timeout",
    "stream_timeout",
    "user_names",
    "accept_invalid_certs",
];

/// A Hikvision terminal's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HikSpec {
    /// `http://host[:port]` or `https://host[:port]` (a bare host means `http://host`).
    #[serde(default)]
    pub address: Option<String>,
    /// The terminal's user (a dedicated ISAPI user, see the README).
    #[serde(default)]
    pub username: Option<String>,
    /// The user's password, written in the configuration (prefer `password_file`).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file holding the password alone on one line.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Read the alert stream between pulls (punches within a second).
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// The minors of major 5 that are punches.
    #[serde(default = "default_minors")]
    pub event_minors: Vec<u32>,
    /// Set the terminal's clock from the gateway's when it is off by `max_clock_skew` or more.
    #[serde(default)]
    pub sync_clock: bool,
    #[serde(
        default = "default_max_clock_skew",
        rename = "max_clock_skew",
        deserialize_with = "de_seconds"
    )]
    pub max_clock_skew_secs: u64,
    /// How long one request may take (seconds or a duration). Default 10 s.
    #[serde(
        default = "default_io_timeout",
        rename = "io_timeout",
        deserialize_with = "de_seconds"
    )]
    pub io_timeout_secs: u64,
    /// How long the alert stream may stay silent (no event, no heartbeat) before it is taken for
    /// dropped, closed and opened again (with a pull to close the gap). Default 60 s.
    #[serde(
        default = "default_stream_timeout",
        rename = "stream_timeout",
        deserialize_with = "de_seconds"
    )]
    pub stream_timeout_secs: u64,
    /// Read the terminal's user list, to show the names of users who have no mapping.
    #[serde(default = "default_true")]
    pub user_names: bool,
    /// Accept a certificate that does not verify (the terminal's self-signed one) on `https://`.
    #[serde(default)]
    pub accept_invalid_certs: bool,
}

fn default_true() -> bool {
    true
}
fn default_minors() -> Vec<u32> {
    DEFAULT_EVENT_MINORS.to_vec()
}
fn default_max_clock_skew() -> u64 {
    60
}
fn default_io_timeout() -> u64 {
    10
}
fn default_stream_timeout() -> u64 {
    60
}

impl HikSpec {
    /// A terminal at `address` for `username` / `password`, every other key at its default.
    pub fn new(address: &str, username: &str, password: &str) -> HikSpec {
        HikSpec {
            address: Some(address.to_string()),
            username: Some(username.to_string()),
            password: Some(Password::new(password)),
            password_file: None,
            realtime: true,
            event_minors: default_minors(),
            sync_clock: false,
            max_clock_skew_secs: default_max_clock_skew(),
            io_timeout_secs: default_io_timeout(),
            stream_timeout_secs: default_stream_timeout(),
            user_names: true,
            accept_invalid_certs: false,
        }
    }

    /// Checks the keys, and reads `password_file` into `password` (the file stays named, for
    /// `check-config`).
    pub fn resolve(&mut self) -> Result<(), SpecError> {
        let Some(addr) = &self.address else {
            return Err(SpecError::key(
                "address",
                "missing: kind = \"hikvision\" needs address = \"http://HOST\" or \"https://HOST[:PORT]\"",
            ));
        };
        if base_url(addr).is_none() {
            return Err(SpecError::value(
                "address",
                addr,
                "is not http://HOST[:PORT] or https://HOST[:PORT] (e.g. \"http://10.0.3.20\")",
            ));
        }
        match self.username.as_deref().map(str::trim) {
            None => {
                return Err(SpecError::key(
                    "username",
                    "missing: the terminal's ISAPI user (see the README: a dedicated user)",
                ))
            }
            Some("") => return Err(SpecError::key("username", "is empty")),
            Some(_) => {}
        }
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(SpecError::key(
                    "password",
                    "given twice (password and password_file): keep only one",
                ))
            }
            (None, None) => {
                return Err(SpecError::key(
                    "password",
                    "missing: set password_file (a file with the password alone) or password",
                ))
            }
            (Some(p), None) if p.expose().is_empty() => {
                return Err(SpecError::key("password", "is empty"))
            }
            (None, Some(f)) => self.password = Some(read_password_file(f)?),
            (Some(_), None) => {}
        }
        if self.event_minors.is_empty() {
            return Err(SpecError::key(
                "event_minors",
                "is empty: no event would be a punch; remove the key for the defaults",
            ));
        }
        if let Some(m) = self.event_minors.iter().find(|m| **m == 0 || **m > 0xffff) {
            return Err(SpecError::value(
                "event_minors",
                m,
                "is not a minor event code (1 to 65535)",
            ));
        }
        for (key, v, max) in [
            ("io_timeout", self.io_timeout_secs, 300),
            ("stream_timeout", self.stream_timeout_secs, 3600),
        ] {
            if !(1..=max).contains(&v) {
                return Err(SpecError::value(
                    key,
                    v,
                    format!("must be between 1 and {max} seconds"),
                ));
            }
        }
        Ok(())
    }

    /// `scheme://host:port` without a trailing slash.
    pub fn base_url(&self) -> Option<String> {
        self.address.as_deref().and_then(base_url)
    }

    /// The password (resolved by [`HikSpec::resolve`]).
    pub fn password(&self) -> &str {
        self.password.as_ref().map_or("", Password::expose)
    }

    /// What no other device may use.
    pub fn claims(&self) -> Vec<Claim> {
        self.base_url()
            .map(|value| Claim {
                key: "address",
                what: "Hikvision address",
                value,
            })
            .into_iter()
            .collect()
    }

    /// What `check-config` warns about.
    pub fn warnings(&self) -> Vec<SpecError> {
        let mut w = Vec::new();
        if self.password_file.is_none() && self.password.is_some() {
            w.push(SpecError::key(
                "password",
                "is written in the configuration file: prefer password_file (a file only clockbridge can read)",
            ));
        }
        if self.accept_invalid_certs {
            w.push(SpecError::key(
                "accept_invalid_certs",
                "is true: the terminal's certificate is not verified (anyone on the path could read the password's digest and the punches)",
            ));
        }
        if self.base_url().is_some_and(|u| u.starts_with("http://")) {
            w.push(SpecError::key(
                "address",
                "is plain http: punches and user names cross the network unencrypted (digest authentication keeps the password itself off the wire); use https:// where the terminal offers it",
            ));
        }
        w
    }
}

/// `http://h`, `https://h:8443`, `h` (read as `http://h`), `[v6]`: as `scheme://host:port`, with the
/// scheme's port when none is written; `None` when it is not such an address.
pub fn base_url(a: &str) -> Option<String> {
    let a = a.trim().trim_end_matches('/');
    let (scheme, rest) = match a.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), a),
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
        || rest.chars().any(char::is_whitespace)
    {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse::<u16>().ok()?,
        };
        (format!("[{h}]"), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return None;
    }
    Some(format!("{scheme}://{host}:{port}"))
}

/// The terminal user's password: a [`Secret`], never printed.
pub type Password = Secret;

/// Reads a password file as an editor may have saved it, or refuses it saying why (never with its
/// content): a UTF-8 byte-order mark and spaces or line endings around the password are dropped; a
/// file over 1 KiB, UTF-16, not UTF-8, empty, or of more than one line is refused. Spaces inside
/// are kept: a terminal's password may hold them.
pub fn read_password_file(file: &std::path::Path) -> Result<Password, SpecError> {
    read_secret_text(file, MAX_PASSWORD_FILE).map_err(|why| {
        let reason = match why {
            Unreadable::Io(e) => format!("cannot be read: {e}"),
            Unreadable::TooLarge(max) => {
                format!("is larger than {max} bytes: it is not a password file; check the path")
            }
            Unreadable::Utf16 => "is UTF-16 text: save it as UTF-8".into(),
            Unreadable::NotUtf8(_) => "is not UTF-8 text: write the password as plain text".into(),
            Unreadable::Empty => "is empty".into(),
            Unreadable::Lines => {
                "holds more than one line: write the password alone on one line".into()
            }
        };
        SpecError::value("password_file", file.display(), reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_a_scheme_a_port_and_ipv6() {
        assert_eq!(
            base_url("10.0.3.20").as_deref(),
            Some("http://10.0.3.20:80")
        );
        assert_eq!(
            base_url("https://door.example:8443/").as_deref(),
            Some("https://door.example:8443")
        );
        assert_eq!(
            base_url("HTTPS://[fe80::1]").as_deref(),
            Some("https://[fe80::1]:443")
        );
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http://a:0",
            "http://a/b",
            "http://u@a",
            "a b",
        ] {
            assert_eq!(base_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_password_is_masked_and_read_from_its_file() {
        let mut s = HikSpec::new("http://10.0.3.20", "clockbridge", "s3cret!");
        s.resolve().unwrap();
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!format!("{s:?}").contains("s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "\u{feff}pa ss\r\n").unwrap();
        s.password = None;
        s.password_file = Some(f.clone());
        s.resolve().unwrap();
        assert_eq!(s.password(), "pa ss");
        std::fs::write(&f, "a\nb\n").unwrap();
        s.password = None;
        let e = s.resolve().unwrap_err();
        assert_eq!(e.key, "password_file");
        assert!(!e.reason.contains('a') || !e.reason.contains("a\nb"));
        // both at once: refused, naming the key
        s.password = Some(Password::new("x"));
        assert_eq!(s.resolve().unwrap_err().key, "password");
    }

    #[test]
    fn event_minors_must_be_codes() {
        let mut s = HikSpec::new("http://h", "u", "p");
        s.event_minors = vec![];
        assert_eq!(s.resolve().unwrap_err().key, "event_minors");
        s.event_minors = vec![75, 0];
        assert_eq!(s.resolve().unwrap_err().key, "event_minors");
    }
}
