//! The bytes a line session writes to a clock: the escapes of `poll_command` and `ack_template`
//! ([`unescape`]) and the acknowledgement template with its placeholders ([`AckTemplate`]).

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::punch::Punch;
use crate::sources::formats;

/// Turns the escapes of `poll_command` and `ack_template` into bytes: `\r`, `\n`, `\t`, `\\` and
/// `\xNN` (exactly two hex digits, any byte). Other text is kept as UTF-8.
///
/// Any other backslash sequence (`\q`, `\x4`, a lone `\` at the end) is an error that names it and its
/// position (in characters, from 0), e.g.
/// `escape "\q" at character 3 is not one of \r, \n, \t, \\, \xNN (write \\ for a backslash)`.
/// Configuration validation should call this for `poll_command` and `ack_template`.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    unescape_in(s, encoding_rs::UTF_8, 0)
}

/// [`unescape`], with the plain text encoded in `enc`; `first_char` is the position of `s` in a longer
/// text, for error messages.
pub(super) fn unescape_in(
    s: &str,
    enc: &'static Encoding,
    first_char: usize,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut text = String::new();
    let mut chars = s.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        let at = first_char + i;
        let byte = match chars.next().map(|(_, c)| c) {
            Some('r') => b'\r',
            Some('n') => b'\n',
            Some('t') => b'\t',
            Some('\\') => b'\\',
            Some('x') => {
                let hi = chars.next().map(|(_, c)| c);
                let lo = chars.next().map(|(_, c)| c);
                match (hi.and_then(|c| c.to_digit(16)), lo.and_then(|c| c.to_digit(16))) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => {
                        let seen: String = [hi, lo].into_iter().flatten().collect();
                        return Err(format!(
                            "escape \"\\x{seen}\" at character {at} is not \\x and two hex digits (e.g. \\x0d)"
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "escape \"\\{other}\" at character {at} is not one of \\r, \\n, \\t, \\\\, \\xNN (write \\\\ for a backslash)"
                ))
            }
            None => {
                return Err(format!(
                    "backslash at character {at} ends the text: write \\\\ for a backslash"
                ))
            }
        };
        encode_into(&mut out, &text, enc)?;
        text.clear();
        out.push(byte);
    }
    encode_into(&mut out, &text, enc)?;
    Ok(out)
}

fn encode_into(out: &mut Vec<u8>, text: &str, enc: &'static Encoding) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let (bytes, _, unmappable) = enc.encode(text);
    if unmappable {
        return Err(format!(
            "text \"{}\" cannot be written in the clock's encoding {}: use \\xNN escapes",
            formats::sample(text.as_bytes()),
            enc.name()
        ));
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

/// One piece of an acknowledgement template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    User,
    Time,
    State,
    Line,
}

/// A parsed `ack_template`: literal bytes (escapes resolved) and the placeholders `{user}` (the device
/// user id), `{time}` (the punch's local time as `%Y-%m-%d %H:%M:%S`), `{state}` (the state code, or
/// the state word when the clock sent one the `state_map` does not know; empty when absent) and
/// `{line}` (the line as decoded). Values are written in the clock's encoding.
#[derive(Debug, Clone)]
pub struct AckTemplate {
    pieces: Vec<Piece>,
    encoding: &'static Encoding,
    uses_line: bool,
}

impl AckTemplate {
    /// Parses a template for a UTF-8 clock. Configuration validation should call this for
    /// `ack_template`. A `{` must open one of the four placeholders (`\x7b` writes a literal `{`).
    pub fn parse(template: &str) -> Result<AckTemplate, String> {
        Self::parse_in(template, encoding_rs::UTF_8)
    }

    /// Parses a template for a clock whose text is in `encoding`.
    pub fn parse_in(template: &str, encoding: &'static Encoding) -> Result<AckTemplate, String> {
        let mut pieces = Vec::new();
        let mut literal_start = 0; // byte offset
        let mut chars_before = 0; // characters before `literal_start`
        let mut rest = template;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            let at = offset + open;
            let after = &template[at + 1..];
            let name_end = after.find('}');
            let piece = name_end.and_then(|e| match &after[..e] {
                "user" => Some(Piece::User),
                "time" => Some(Piece::Time),
                "state" => Some(Piece::State),
                "line" => Some(Piece::Line),
                _ => None,
            });
            let Some(piece) = piece else {
                let at_char = template[..at].chars().count();
                if name_end.is_none() {
                    return Err(format!(
                        "\"{{\" at character {at_char} opens no placeholder (no closing \"}}\"): use {{user}}, {{time}}, {{state}} or {{line}}, or \\x7b for a literal \"{{\""
                    ));
                }
                let shown: String = after.chars().take_while(|&c| c != '}').take(20).collect();
                return Err(format!(
                    "placeholder \"{{{shown}}}\" at character {at_char} is not one of {{user}}, {{time}}, {{state}}, {{line}} (write \\x7b for a literal \"{{\")"
                ));
            };
            let literal = &template[literal_start..at];
            if !literal.is_empty() {
                pieces.push(Piece::Bytes(unescape_in(literal, encoding, chars_before)?));
            }
            pieces.push(piece);
            let end = at + 1 + name_end.unwrap_or(0) + 1;
            chars_before += template[literal_start..end].chars().count();
            literal_start = end;
            offset = end;
            rest = &template[end..];
        }
        let literal = &template[literal_start..];
        if !literal.is_empty() {
            pieces.push(Piece::Bytes(unescape_in(literal, encoding, chars_before)?));
        }
        let uses_line = pieces.contains(&Piece::Line);
        Ok(AckTemplate {
            pieces,
            encoding,
            uses_line,
        })
    }

    /// The acknowledgement of `punch`, read from the line `line` (called only when the template uses
    /// `{line}`).
    pub fn render<'a>(&self, punch: &Punch, line: impl FnOnce() -> Cow<'a, str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut line = Some(line);
        let mut line_text: Option<Cow<'a, str>> = None;
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::User => self.put(&mut out, &punch.device_user_id),
                Piece::Time => {
                    let t = punch.local_time.format("%Y-%m-%d %H:%M:%S").to_string();
                    self.put(&mut out, &t)
                }
                Piece::State => match (punch.state, &punch.state_text) {
                    (Some(code), _) => self.put(&mut out, &code.to_string()),
                    (None, Some(text)) => self.put(&mut out, text),
                    (None, None) => {}
                },
                Piece::Line => {
                    if let Some(f) = line.take() {
                        line_text = Some(f());
                    }
                    self.put(&mut out, line_text.as_deref().unwrap_or(""));
                }
            }
        }
        out
    }

    /// True when the template uses `{line}`.
    pub fn uses_line(&self) -> bool {
        self.uses_line
    }

    fn put(&self, out: &mut Vec<u8>, text: &str) {
        // a value the encoding cannot hold is written as an HTML numeric reference: never refused
        let (bytes, _, _) = self.encoding.encode(text);
        out.extend_from_slice(&bytes);
    }
}
