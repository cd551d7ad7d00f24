//! The `[[devices]]` keys of a TCP line clock (`kind = "tcp"`): `mode`, `address`, and the shared line
//! keys ([`LineSpec`]).

use serde::{Deserialize, Serialize};

use crate::sources::kind::{from_keys, take_keys, Claim, Device, Keys, Members, SpecError};
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
pub const TCP_KEYS: &[&str] = &["mode", "address"];

/// A TCP line clock's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// `listen` (the clock dials us) or `connect` (we dial the clock).
    pub mode: TcpMode,
    /// `host:port` to listen on or to dial.
    pub address: String,
    /// How lines are read and answered.
    pub lines: LineSpec,
}

#[derive(Deserialize, Serialize)]
struct Own {
    #[serde(default)]
    mode: Option<TcpMode>,
    #[serde(default)]
    address: Option<String>,
}

impl TcpSpec {
    /// A device with the default line keys.
    pub fn new(mode: TcpMode, address: &str) -> TcpSpec {
        TcpSpec {
            mode,
            address: address.to_string(),
            lines: LineSpec::default(),
        }
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
        Ok(TcpSpec {
            mode,
            address,
            lines: LineSpec::parse(device, lines)?,
        })
    }

    /// The keys as `check-config` shows them.
    pub fn shown(&self) -> Members {
        let mut m = crate::sources::kind::shown(&Own {
            mode: Some(self.mode),
            address: Some(self.address.clone()),
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
