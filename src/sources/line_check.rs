//! Reading and checking the line keys of a device ([`LineSpec`]), for every kind that reads lines.
//!
//! Guarantees: [`parse`] accepts only what the line session can use: the format is built once
//! ([`LineParser::new`]), the poll command and the acknowledgement template are checked for their
//! escapes and placeholders, so a bad value stops the configuration with an error naming the key,
//! never a surprise on the wire.
//!
//! Kept apart from `line_spec.rs` (the keys as data) so that the format, the session and the kind
//! framework can read the keys without the keys' check importing them back.

use super::formats::LineParser;
use super::kind::{from_keys, Device, Keys, SpecError};
use super::line_spec::LineSpec;
use super::session::{unescape, AckTemplate};

/// Reads the line keys of `keys` (only [`LINE_KEYS`]) and checks them.
pub fn parse(device: &Device, keys: Keys) -> Result<LineSpec, SpecError> {
    let spec: LineSpec = from_keys(keys)?;
    check(&spec, device)?;
    Ok(spec)
}

/// Checks values that have the right type but are not acceptable.
pub fn check(spec: &LineSpec, device: &Device) -> Result<(), SpecError> {
    if spec.max_line_length < 16 || spec.max_line_length > 1 << 20 {
        return Err(SpecError::value(
            "max_line_length",
            spec.max_line_length,
            "must be between 16 and 1048576",
        ));
    }
    if let Err(e) = LineParser::new(&device.id, device.tz, spec) {
        return Err(SpecError {
            value: e.config_value(spec),
            key: e.key.to_string(),
            reason: e.reason,
        });
    }
    if let Some(cmd) = &spec.poll_command {
        match unescape(cmd) {
            Ok(bytes) if bytes.is_empty() => {
                return Err(SpecError::value(
                    "poll_command",
                    cmd,
                    "is empty: remove the key, or give the command the clock expects",
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(SpecError::value("poll_command", cmd, e)),
        }
    }
    if let Some(t) = &spec.ack_template {
        if let Err(e) = AckTemplate::parse(t) {
            return Err(SpecError::value("ack_template", t, e));
        }
    }
    Ok(())
}
