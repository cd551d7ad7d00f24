//! The `[[devices]]` keys of a serial line clock (`kind = "serial"`): the port and its settings, and
//! the shared line keys ([`LineSpec`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sources::kind::{from_keys, take_keys, Claim, Device, Keys, Members, SpecError};
use crate::sources::line_check;
use crate::sources::line_spec::{LineSpec, LINE_KEYS};

crate::choice_enum! {
    /// Parity of a serial line.
    #[derive(Default)]
    pub enum Parity {
        #[default]
        None = "none",
        Odd = "odd",
        Even = "even",
    }
}

crate::choice_enum! {
    /// Flow control of a serial line.
    #[derive(Default)]
    pub enum FlowControl {
        #[default]
        None = "none",
        Software = "software",
        Hardware = "hardware",
    }
}

/// The keys of the `serial` kind besides the line keys.
pub const SERIAL_KEYS: &[&str] = &[
    "path",
    "baud_rate",
    "data_bits",
    "parity",
    "stop_bits",
    "flow_control",
];

/// A serial port's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortSpec {
    /// The port, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Bits per second.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// 5, 6, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none`, `odd` or `even`.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// `none`, `software` (XON/XOFF) or `hardware` (RTS/CTS).
    #[serde(default)]
    pub flow_control: FlowControl,
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

/// A serial line clock's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSpec {
    pub port: PortSpec,
    /// How lines are read and answered.
    pub lines: LineSpec,
}

impl SerialSpec {
    /// A clock on `path` with every other key at its default.
    pub fn new(path: impl Into<PathBuf>) -> SerialSpec {
        SerialSpec {
            port: PortSpec {
                path: Some(path.into()),
                baud_rate: default_baud_rate(),
                data_bits: default_data_bits(),
                parity: Parity::None,
                stop_bits: default_stop_bits(),
                flow_control: FlowControl::None,
            },
            lines: LineSpec::default(),
        }
    }

    /// Reads and checks the keys of one `serial` device.
    pub fn parse(device: &Device, mut keys: Keys) -> Result<SerialSpec, SpecError> {
        let lines = take_keys(&mut keys, LINE_KEYS);
        let port: PortSpec = from_keys(keys)?;
        if port.path.is_none() {
            return Err(SpecError::key(
                "path",
                "missing: kind = \"serial\" needs path = \"/dev/ttyUSB0\" (or a /dev/serial/by-id/ path)",
            ));
        }
        if !(50..=4_000_000).contains(&port.baud_rate) {
            return Err(SpecError::value(
                "baud_rate",
                port.baud_rate,
                "is not a serial speed (e.g. 9600, 19200, 115200)",
            ));
        }
        if !(5..=8).contains(&port.data_bits) {
            return Err(SpecError::value(
                "data_bits",
                port.data_bits,
                "must be 5, 6, 7 or 8",
            ));
        }
        if !(1..=2).contains(&port.stop_bits) {
            return Err(SpecError::value(
                "stop_bits",
                port.stop_bits,
                "must be 1 or 2",
            ));
        }
        Ok(SerialSpec {
            port,
            lines: line_check::parse(device, lines)?,
        })
    }

    /// The keys as `check-config` shows them.
    pub fn shown(&self) -> Members {
        let mut m = crate::sources::kind::shown(&self.port);
        m.extend(crate::sources::kind::shown(&self.lines));
        m
    }

    /// The port: two devices cannot read one port (each would get half of its lines). A path that
    /// exists is compared by what it leads to, so `/dev/serial/by-id/...` and the `/dev/ttyUSB0` it
    /// links to are the same port.
    pub fn claims(&self) -> Vec<Claim> {
        self.port
            .path
            .as_ref()
            .map(|p| Claim {
                key: "path",
                what: "serial port",
                value: std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string(),
            })
            .into_iter()
            .collect()
    }

    /// A port that does not exist now: worth a warning, not an error (an adapter may be plugged in
    /// later, and the source opens the port as soon as it appears).
    pub fn warnings(&self) -> Vec<SpecError> {
        match &self.port.path {
            Some(p) if !p.exists() => vec![SpecError::value(
                "path",
                p.display().to_string(),
                "does not exist (yet): the device stays offline until it appears; plug the adapter in, or check the path (ls /dev/serial/by-id/)",
            )],
            _ => Vec::new(),
        }
    }
}
