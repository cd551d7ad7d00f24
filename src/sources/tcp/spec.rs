//! The `[[devices]]` keys of a TCP line clock (`kind = "tcp"`): `mode`, `address`, for `listen` the
//! connection limits `max_connections` and `idle_timeout`, and the shared line keys ([`LineSpec`]).

use serde::{Deserialize, Serialize};

use crate::sources::kind::{from_keys, take_keys, Claim, Device, Keys, Members, SpecError};
use crate::sources::line_check;
use crate::sources::line_spec::{LineSpec, LINE_KEYS};

crate::choice_enum! {
    /// Who dials whom.
    pub enum TcpMode {
        /// The clock (or a serial-to-Ethernet converter) dials us.
        Listen = "listen",
        /// We dial the clock.
        Connect = "connect",
    }
}

/// The keys of the `tcp` kind besides the line keys.
pub const TCP_KEYS: &[&str] = &["mode", "address", "max_connections", "idle_timeout"];

/// `max_connections` of a listening device when not set: a listening port is usually dialed by one
/// clock or a few serial-to-Ethernet converters; 256 leaves room for a large site on one port while
/// one host gone wrong cannot take every connection of the process (`[limits]
/// max_clock_connections`, 1,024 by default).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// `idle_timeout` of a listening device when not set: 3 days. A vanished clock is noticed by TCP
/// keep-alive within minutes (`source::KEEPALIVE`), so this only closes connections whose peer is
/// alive but sends nothing. A clock may be silent all night and all weekend (Friday evening to Monday
/// morning is about 62 h), and a clock that does not notice the close may lose the first punch it
/// writes into it: so the default outlasts a weekend, and the caps, not this, stop a flood.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 3 * 86_400;

/// A TCP line clock's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// `listen` (the clock dials us) or `connect` (we dial the clock).
    pub mode: TcpMode,
    /// `host:port` to listen on or to dial.
    pub address: String,
    /// `listen`: connections this device may have open at once; more are accepted and closed at
    /// once (counted and logged).
    pub max_connections: usize,
    /// `listen`: a connection that sends nothing for this many seconds is closed; 0: never.
    pub idle_timeout_secs: u64,
    /// How lines are read and answered.
    pub lines: LineSpec,
}

#[derive(Deserialize, Serialize)]
struct Own {
    #[serde(default)]
    mode: Option<TcpMode>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[serde(
        default,
        deserialize_with = "crate::sources::kind::de_seconds_opt",
        skip_serializing_if = "Option::is_none"
    )]
    idle_timeout: Option<u64>,
}

impl TcpSpec {
    /// A device with the default line keys and limits.
    pub fn new(mode: TcpMode, address: &str) -> TcpSpec {
        TcpSpec {
            mode,
            address: address.to_string(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            lines: LineSpec::default(),
        }
    }

    /// `idle_timeout`, `None` when connections are never closed for silence.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs))
    }

    /// Reads and checks the keys of one `tcp` device.
    pub fn parse(device: &Device, mut keys: Keys) -> Result<TcpSpec, SpecError> {
        let lines = take_keys(&mut keys, LINE_KEYS);
        let own: Own = from_keys(keys)?;
        let Some(mode) = own.mode else {
            return Err(SpecError::key(
                "mode",
                "missing: kind = \"tcp\" needs mode = \"listen\" or \"connect\"",
            ));
        };
        let Some(address) = own.address else {
            return Err(SpecError::key(
                "address",
                "missing: kind = \"tcp\" needs address = \"host:port\"",
            ));
        };
        let port_ok = address
            .rsplit_once(':')
            .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .unwrap_or(false);
        if !port_ok {
            return Err(SpecError::value(
                "address",
                &address,
                "is not host:port (e.g. \"0.0.0.0:5005\" or \"10.0.0.5:5005\")",
            ));
        }
        if mode == TcpMode::Connect {
            for (key, set) in [
                ("max_connections", own.max_connections.is_some()),
                ("idle_timeout", own.idle_timeout.is_some()),
            ] {
                if set {
                    return Err(SpecError::key(
                        key,
                        "applies to mode = \"listen\" only (a connect-mode device has one connection): remove it",
                    ));
                }
            }
        }
        let max_connections = own.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(SpecError::value(
                "max_connections",
                0,
                "must be at least 1: the connections this listening device may have open at once",
            ));
        }
        Ok(TcpSpec {
            mode,
            address,
            max_connections,
            idle_timeout_secs: own.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
            lines: line_check::parse(device, lines)?,
        })
    }

    /// The keys as `check-config` shows them (the limits of a listening device with their defaults).
    pub fn shown(&self) -> Members {
        let listen = self.mode == TcpMode::Listen;
        let mut m = crate::sources::kind::shown(&Own {
            mode: Some(self.mode),
            address: Some(self.address.clone()),
            max_connections: listen.then_some(self.max_connections),
            idle_timeout: listen.then_some(self.idle_timeout_secs),
        });
        m.extend(crate::sources::kind::shown(&self.lines));
        m
    }

    /// A listening address no other device may listen on (port 0 picks a free port: never shared).
    pub fn claims(&self) -> Vec<Claim> {
        if self.mode != TcpMode::Listen {
            return Vec::new();
        }
        let value = match self.address.trim().parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() == 0 => return Vec::new(),
            Ok(a) => a.to_string(),
            Err(_) if self.address.trim().ends_with(":0") => return Vec::new(),
            Err(_) => self.address.trim().to_ascii_lowercase(),
        };
        vec![Claim {
            key: "address",
            what: "listen address",
            value,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(device_keys: &str) -> Result<Config, String> {
        let text = format!(
            "[feishu]\napp_id = \"cli_x\"\napp_secret = \"s\"\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\ntimezone = \"Asia/Shanghai\"\n{device_keys}\n"
        );
        Config::from_toml_with_env(&text, "test", std::iter::empty()).map_err(|e| e.to_string())
    }

    fn spec(cfg: &Config) -> TcpSpec {
        cfg.devices[0].spec_as::<TcpSpec>().unwrap().clone()
    }

    #[test]
    fn a_listening_device_has_connection_limits_with_defaults() {
        let cfg = load("mode = \"listen\"\naddress = \"0.0.0.0:5005\"").unwrap();
        let s = spec(&cfg);
        assert_eq!((s.max_connections, s.idle_timeout_secs), (256, 3 * 86_400));
        assert_eq!(
            s.idle_timeout(),
            Some(std::time::Duration::from_secs(259_200))
        );
        let shown = s.shown();
        assert_eq!(shown["max_connections"], 256);
        assert_eq!(shown["idle_timeout"], 259_200);

        let cfg = load(
            "mode = \"listen\"\naddress = \"0.0.0.0:5005\"\nmax_connections = 8\nidle_timeout = \"2h\"",
        )
        .unwrap();
        assert_eq!(
            (spec(&cfg).max_connections, spec(&cfg).idle_timeout_secs),
            (8, 7200)
        );
        let cfg = load("mode = \"listen\"\naddress = \"0.0.0.0:5005\"\nidle_timeout = 0").unwrap();
        assert_eq!(spec(&cfg).idle_timeout(), None);
    }

    #[test]
    fn connection_limits_are_refused_where_they_mean_nothing() {
        let e =
            load("mode = \"listen\"\naddress = \"0.0.0.0:5005\"\nmax_connections = 0").unwrap_err();
        assert!(
            e.starts_with(
                "config key devices[0] (id \"door-1\").max_connections: 0 must be at least 1"
            ),
            "{e}"
        );
        for key in ["max_connections = 4", "idle_timeout = \"1h\""] {
            let e = load(&format!(
                "mode = \"connect\"\naddress = \"10.0.0.5:4001\"\n{key}"
            ))
            .unwrap_err();
            assert!(e.contains("applies to mode = \"listen\" only"), "{e}");
        }
        // a connect-mode device shows neither
        let cfg = load("mode = \"connect\"\naddress = \"10.0.0.5:4001\"").unwrap();
        assert!(!spec(&cfg).shown().contains_key("max_connections"));
    }
}
