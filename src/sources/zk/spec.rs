//! The `[[devices]]` keys of a ZKTeco terminal (`kind = "zk"`), their defaults and their checks.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::sources::kind::{de_seconds, Claim, SpecError};

/// The default port of ZKTeco terminals.
pub const ZK_DEFAULT_PORT: u16 = 4370;
/// How often a `zk` device's log is read when `poll_interval` is absent: realtime events bring punches
/// within a second, so the poll only reconciles, and each poll disables the device for a moment.
pub const DEFAULT_ZK_POLL_INTERVAL_SECS: u64 = 60;

/// The keys of [`ZkSpec`].
pub const ZK_KEYS: &[&str] = &[
    "address",
    "comm_key",
    "sync_clock",
    "max_clock_skew",
    "clear_device_log",
    "realtime",
    "user_names",
    "user_id_source",
    "io_timeout",
];

/// A ZKTeco terminal's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ZkSpec {
    /// `host` or `host:port` (port 4370 when omitted).
    #[serde(default)]
    pub address: Option<String>,
    /// The device's communication key (Comm. Key in its menu), 0 for none. A secret: shown as `***`.
    #[serde(default)]
    pub comm_key: CommKey,
    /// Set the device's clock from the gateway's (in the device's `timezone`) when it is off by
    /// `max_clock_skew` or more. Off by default.
    #[serde(default)]
    pub sync_clock: bool,
    /// How far the device's clock may be from the gateway's before it is logged as a WARN (and
    /// corrected, with `sync_clock`): seconds or a duration. Default 60 s.
    #[serde(
        default = "default_max_clock_skew",
        rename = "max_clock_skew",
        deserialize_with = "de_seconds"
    )]
    pub max_clock_skew_secs: u64,
    /// Delete the attendance log on the device once every record on it is committed to the queue
    /// (checked by count and watermark, with the device disabled). Off by default.
    #[serde(default)]
    pub clear_device_log: bool,
    /// Subscribe to realtime punches (delivered within a second) between polls.
    #[serde(default = "default_true")]
    pub realtime: bool,
    /// Read the device's user table, to show the names of users who have no mapping.
    #[serde(default = "default_true")]
    pub user_names: bool,
    /// Which id of the device's user becomes the punch's device user id: `record` (what the record
    /// carries: the user id of 16- and 40-byte records, the internal number of 8-byte ones) or
    /// `user_table` (the user id, PIN, from the device's user table, looked up by internal number).
    #[serde(default)]
    pub user_id_source: UserIdSource,
    /// How long one request may wait for its reply (seconds or a duration); a 64 KiB chunk of a log
    /// read may take three times as long. Default 10 s.
    #[serde(
        default = "default_io_timeout",
        rename = "io_timeout",
        deserialize_with = "de_seconds"
    )]
    pub io_timeout_secs: u64,
}

fn default_max_clock_skew() -> u64 {
    60
}
fn default_io_timeout() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

impl ZkSpec {
    /// A terminal at `address` with every other key at its default.
    pub fn new(address: &str) -> ZkSpec {
        ZkSpec {
            address: Some(address.to_string()),
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

    /// Checks values that have the right type but are not acceptable.
    pub fn check(&self) -> Result<(), SpecError> {
        let Some(addr) = &self.address else {
            return Err(SpecError::key(
                "address",
                "missing: kind = \"zk\" needs address = \"host\" or \"host:port\" (port 4370 when omitted)",
            ));
        };
        if zk_address(addr).is_none() {
            return Err(SpecError::value(
                "address",
                addr,
                "is not host or host:port (e.g. \"10.0.0.5\" or \"10.0.0.5:4370\")",
            ));
        }
        if self.comm_key.expose() > 999_999 {
            return Err(SpecError::key(
                "comm_key",
                "is out of range: ZKTeco comm keys are 0 to 999999",
            ));
        }
        if !(1..=300).contains(&self.io_timeout_secs) {
            return Err(SpecError::value(
                "io_timeout",
                self.io_timeout_secs,
                "must be between 1 and 300 seconds",
            ));
        }
        Ok(())
    }

    /// `address` as `host:port`, with port 4370 when it has none.
    pub fn zk_address(&self) -> Option<String> {
        self.address.as_deref().and_then(zk_address)
    }

    /// How long one request may wait for its reply.
    pub fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout_secs)
    }

    /// What no other device may use.
    pub fn claims(&self) -> Vec<Claim> {
        self.zk_address()
            .map(|value| Claim {
                key: "address",
                what: "ZKTeco address",
                value,
            })
            .into_iter()
            .collect()
    }
}

crate::choice_enum! {
    /// Where a punch's device user id comes from.
    #[derive(Default)]
    pub enum UserIdSource {
        /// The id the attendance record carries.
        #[default]
        Record = "record",
        /// The user id (PIN) from the device's user table.
        UserTable = "user_table",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
