//! `format = "zk-attlog"` with every default: the fast reader of ZKTeco ATTLOG lines.

use super::*;

pub(super) fn parse_zk_attlog(device_id: &str, line: &[u8]) -> Result<Punch, ParseError> {
    let text = std::str::from_utf8(line).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches([' ', '\t', '\r', '\n']);
    let mut fields = text.split('\t');

    let pin = fields.next().unwrap_or("").trim_matches(' ');
    let Some(time) = fields.next() else {
        return Err(if pin.is_empty() {
            ParseError::EmptyPin
        } else {
            ParseError::OneField
        });
    };
    if pin.is_empty() {
        return Err(ParseError::EmptyPin);
    }
    if pin.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ParseError::BadPin { pin: quote(pin) });
    }

    let time = time.trim_matches(' ');
    if time.is_empty() {
        return Err(ParseError::MissingTime);
    }
    let local_time = parse_datetime(time).map_err(|why| ParseError::BadTime {
        value: quote(time),
        why,
    })?;

    let state = int_field("state", fields.next())?;
    let verify = int_field("verify", fields.next())?;
    let workcode = match fields.next().map(|w| w.trim_matches(' ')) {
        None | Some("") | Some("0") => None,
        Some(w) => Some(w.to_string()),
    };

    Ok(Punch {
        device_id: device_id.to_string(),
        device_user_id: pin.to_string(),
        local_time,
        state,
        verify,
        workcode,
        state_text: None,
    })
}

/// An optional integer column: absent or empty is `None`.
pub(super) fn int_field(
    name: &'static str,
    field: Option<&str>,
) -> Result<Option<i64>, ParseError> {
    let Some(f) = field.map(|f| f.trim_matches(' ')) else {
        return Ok(None);
    };
    if f.is_empty() {
        return Ok(None);
    }
    f.parse::<i64>()
        .map(Some)
        .map_err(|_| ParseError::NotInteger {
            field: name,
            value: quote(f),
        })
}
