//! Line formats of time clocks: turning one line of clock output into a [`Punch`].
//!
//! Shared by every line-oriented source (TCP now, serial ports and files later), so a format behaves the
//! same whichever way its lines arrive. Guarantees:
//!
//! - [`parse_line`] never panics, whatever the bytes; a line it cannot read gives a [`ParseError`] whose
//!   message says what was wrong with which field (lowercase, starting with its subject), e.g.
//!   `time "2026-13-02 08:00:00" is not YYYY-MM-DD HH:MM:SS: month 13 does not exist`.
//! - A line is accepted only when its date and time exist on the calendar; codes it does not know (a state
//!   of 255...) are kept as they are, never dropped or rewritten.
//! - Parsing allocates only the [`Punch`] itself (and the error message for a bad line), so it keeps up
//!   with millions of lines per second.
//! - [`sample`] renders any line as a short, printable, escaped string that is safe to put in a log.
//!
//! # `zk-attlog`
//!
//! ZKTeco ATTLOG lines (ADMS push protocol, USB exports):
//! `PIN<TAB>YYYY-MM-DD HH:MM:SS<TAB>state<TAB>verify<TAB>workcode<TAB>reserved...`
//!
//! - The PIN may be padded with spaces (clocks right-align it); it must be non-empty and hold no control
//!   character or inner whitespace.
//! - Only the PIN and the time are required; state and verify are integers when present (an empty field
//!   counts as absent), the work code is kept when present and not `0`; further fields are ignored.
//! - Trailing spaces, tabs and CR are ignored; the line must be valid UTF-8.

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use crate::config::LineFormat;
use crate::punch::Punch;

/// Longest part of a bad field quoted in a [`ParseError`] message, in characters.
const QUOTE_MAX: usize = 40;

/// Why a line is not a punch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not UTF-8 text.
    #[error("line is not valid UTF-8 text (bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    /// The line has no tab-separated time field.
    #[error(
        "line has only one field: expected PIN<TAB>YYYY-MM-DD HH:MM:SS[<TAB>state<TAB>verify...]"
    )]
    OneField,
    /// The PIN field is empty (or spaces only).
    #[error("user PIN is empty")]
    EmptyPin,
    /// The PIN holds whitespace or control characters.
    #[error("user PIN {pin} contains whitespace or control characters")]
    BadPin { pin: String },
    /// The time field is empty.
    #[error("time is missing")]
    MissingTime,
    /// The time field is not a valid `YYYY-MM-DD HH:MM:SS`.
    #[error("time {value} is not YYYY-MM-DD HH:MM:SS: {why}")]
    BadTime { value: String, why: String },
    /// A numeric field (state, verify) is not an integer.
    #[error("{field} {value} is not an integer")]
    NotInteger { field: &'static str, value: String },
}

/// Parses one line (without its terminator) of `format` from device `device_id`.
pub fn parse_line(format: LineFormat, device_id: &str, line: &[u8]) -> Result<Punch, ParseError> {
    match format {
        LineFormat::ZkAttlog => parse_zk_attlog(device_id, line),
    }
}

fn parse_zk_attlog(device_id: &str, line: &[u8]) -> Result<Punch, ParseError> {
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
    })
}

/// An optional integer column: absent or empty is `None`.
fn int_field(name: &'static str, field: Option<&str>) -> Result<Option<i64>, ParseError> {
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

/// Parses exactly `YYYY-MM-DD HH:MM:SS`, checking that the date and time exist.
/// The error is the reason, for [`ParseError::BadTime`].
fn parse_datetime(s: &str) -> Result<NaiveDateTime, String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return Err("wrong shape".into());
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} does not exist"));
    }
    // year < 10000, so the cast cannot wrap
    let Some(date) = NaiveDate::from_ymd_opt(year as i32, month, day) else {
        return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
    };
    if hour > 23 {
        return Err(format!("hour {hour} is out of range"));
    }
    if minute > 59 {
        return Err(format!("minute {minute} is out of range"));
    }
    let Some(time) = NaiveTime::from_hms_opt(hour, minute, second) else {
        return Err(format!("second {second} is out of range"));
    };
    Ok(NaiveDateTime::new(date, time))
}

/// A field value for an error message: escaped, quoted, at most [`QUOTE_MAX`] characters of it.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(QUOTE_MAX) + 2);
    out.push('"');
    for (n, c) in s.chars().enumerate() {
        if n == QUOTE_MAX {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out.push('"');
    out
}

/// Longest [`sample`], in characters.
pub const SAMPLE_MAX: usize = 80;

/// A short (at most [`SAMPLE_MAX`] characters), printable, escaped rendering of a line for logs.
///
/// Printable text is kept as it is (`"` and `\` escaped); tabs, CR and LF become `\t`, `\r`, `\n`,
/// other control and invisible formatting characters `\u{..}`, bytes that are not UTF-8 `\xNN`. A longer
/// line is cut and ends with `…`. The result contains no quote to close, so it can be logged as `"{s}"`.
pub fn sample(line: &[u8]) -> String {
    // fast path: short lines of plain ASCII are kept as they are
    if line.len() <= SAMPLE_MAX
        && line
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return line.iter().map(|&b| b as char).collect();
    }
    let mut s = Sampler {
        out: String::with_capacity(SAMPLE_MAX + 8),
        chars: 0,
        cut: 0,
    };
    let mut piece = String::with_capacity(16);
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            piece.clear();
            push_escaped(&mut piece, c);
            if !s.add(&piece) {
                return s.out;
            }
        }
        for &b in chunk.invalid() {
            piece.clear();
            let _ = write!(piece, "\\x{b:02x}");
            if !s.add(&piece) {
                return s.out;
            }
        }
    }
    s.out
}

/// Builds a [`sample`] piece by piece (an escape is never cut in half).
struct Sampler {
    out: String,
    /// Characters in `out`.
    chars: usize,
    /// Length of `out` at the last piece boundary that leaves room for the ellipsis.
    cut: usize,
}

impl Sampler {
    /// Adds `piece`, or ends the sample with `…` when it does not fit; false when full.
    fn add(&mut self, piece: &str) -> bool {
        let n = piece.chars().count();
        if self.chars + n > SAMPLE_MAX {
            self.out.truncate(self.cut);
            self.out.push('…');
            return false;
        }
        self.out.push_str(piece);
        self.chars += n;
        if self.chars < SAMPLE_MAX {
            self.cut = self.out.len();
        }
        true
    }
}

/// Appends `c`, escaped when it is not plainly printable.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        c if c.is_control() || is_invisible(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Invisible formatting characters that could hide or reorder text in a log line.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content of shared/samples/zk-attlog.txt.
    const ZK_ATTLOG_SAMPLE: &str = "        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0
       23\t2026-03-02 09:01:12\t0\t15\t0\t0\t0
        1\t2026-03-02 18:02:40\t1\t1\t0\t0\t0
     1005\t2026-03-02 12:00:03\t2\t4\t0\t0\t0
     1005\t2026-03-02 12:58:41\t3\t4\t0\t0\t0
       23\t2026-03-02 18:30:00\t255\t15\t0\t0\t0
";

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn zk(line: &str) -> Result<Punch, ParseError> {
        parse_line(LineFormat::ZkAttlog, "door-1", line.as_bytes())
    }

    fn err(line: &[u8]) -> String {
        parse_line(LineFormat::ZkAttlog, "door-1", line)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn zk_attlog_sample_file_parses() {
        let punches: Vec<Punch> = ZK_ATTLOG_SAMPLE
            .lines()
            .map(|l| zk(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        let got: Vec<(&str, NaiveDateTime, Option<i64>, Option<i64>)> = punches
            .iter()
            .map(|p| (p.device_user_id.as_str(), p.local_time, p.state, p.verify))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1", dt("2026-03-02 08:59:59"), Some(0), Some(1)),
                ("23", dt("2026-03-02 09:01:12"), Some(0), Some(15)),
                ("1", dt("2026-03-02 18:02:40"), Some(1), Some(1)),
                ("1005", dt("2026-03-02 12:00:03"), Some(2), Some(4)),
                ("1005", dt("2026-03-02 12:58:41"), Some(3), Some(4)),
                ("23", dt("2026-03-02 18:30:00"), Some(255), Some(15)),
            ]
        );
        for p in &punches {
            assert_eq!(p.device_id, "door-1");
            assert_eq!(p.workcode, None, "work code 0 is no work code");
        }
    }

    #[test]
    fn zk_attlog_minimal_and_optional_fields() {
        let p = zk("42\t2026-03-02 08:00:00").unwrap();
        assert_eq!(p.device_user_id, "42");
        assert_eq!((p.state, p.verify, p.workcode), (None, None, None));

        let p = zk("42\t2026-03-02 08:00:00\t\t\t").unwrap();
        assert_eq!((p.state, p.verify, p.workcode), (None, None, None));

        let p = zk("42\t2026-03-02 08:00:00\t1").unwrap();
        assert_eq!((p.state, p.verify), (Some(1), None));

        let p = zk("42\t2026-03-02 08:00:00\t\t15\tW7\t0\t0\t9\t9").unwrap();
        assert_eq!(p.state, None);
        assert_eq!(p.verify, Some(15));
        assert_eq!(p.workcode.as_deref(), Some("W7"));
    }

    #[test]
    fn zk_attlog_trailing_spaces_and_cr_are_ignored() {
        let p = zk("   7\t2026-03-02 08:00:00\t0\t1\t0\t0\t0  \r").unwrap();
        assert_eq!(p.device_user_id, "7");
        assert_eq!(p.verify, Some(1));
        let p = zk("7   \t2026-03-02 08:00:00 \r\n").unwrap();
        assert_eq!(p.device_user_id, "7");
    }

    #[test]
    fn zk_attlog_calendar_edges() {
        assert_eq!(
            zk("1\t2024-02-29 23:59:59").unwrap().local_time,
            dt("2024-02-29 23:59:59")
        );
        assert_eq!(
            zk("1\t2026-01-01 00:00:00").unwrap().local_time,
            dt("2026-01-01 00:00:00")
        );
    }

    #[test]
    fn zk_attlog_missing_time() {
        assert_eq!(zk("1\t\t0\t1"), Err(ParseError::MissingTime));
        assert_eq!(err(b"1\t  \t0\t1"), "time is missing");
    }

    #[test]
    fn zk_attlog_bad_dates_and_times() {
        assert_eq!(
            err(b"1\t2026-13-02 08:00:00\t0"),
            r#"time "2026-13-02 08:00:00" is not YYYY-MM-DD HH:MM:SS: month 13 does not exist"#
        );
        let cases = [
            ("2026-02-30 08:00:00", "day 30 does not exist in 2026-02"),
            ("2025-02-29 08:00:00", "day 29 does not exist"),
            ("2026-00-10 08:00:00", "month 0 does not exist"),
            ("2026-03-00 08:00:00", "day 0 does not exist"),
            ("2026-03-02 24:00:00", "hour 24 is out of range"),
            ("2026-03-02 08:60:00", "minute 60 is out of range"),
            ("2026-03-02 08:00:60", "second 60 is out of range"),
            ("2026/03/02 08:00:00", "wrong shape"),
            ("2026-03-02T08:00:00", "wrong shape"),
            ("2026-03-02 8:00:00", "wrong shape"),
            ("2026-03-02 08:00:00.5", "wrong shape"),
            ("02-03-2026 08:00:00", "wrong shape"),
            ("+026-03-02 08:00:00", "wrong shape"),
            ("２026-03-02 08:00:00", "wrong shape"),
        ];
        for (time, why) in cases {
            let e = err(format!("1\t{time}\t0").as_bytes());
            assert!(e.starts_with("time \""), "{e}");
            assert!(e.contains("is not YYYY-MM-DD HH:MM:SS"), "{e}");
            assert!(e.contains(why), "{time}: {e}");
        }
    }

    #[test]
    fn zk_attlog_non_numeric_state_and_verify() {
        assert_eq!(
            err(b"1\t2026-03-02 08:00:00\tin\t1"),
            r#"state "in" is not an integer"#
        );
        assert_eq!(
            err(b"1\t2026-03-02 08:00:00\t0\tface"),
            r#"verify "face" is not an integer"#
        );
        assert_eq!(
            err(b"1\t2026-03-02 08:00:00\t99999999999999999999"),
            r#"state "99999999999999999999" is not an integer"#
        );
    }

    #[test]
    fn zk_attlog_one_field_only() {
        assert_eq!(zk("12345"), Err(ParseError::OneField));
        assert!(err(b"  12345  ").starts_with("line has only one field"));
        // a space instead of the tab
        assert_eq!(zk("1 2026-03-02 08:00:00"), Err(ParseError::OneField));
    }

    #[test]
    fn zk_attlog_empty_or_bad_pin() {
        assert_eq!(zk("\t2026-03-02 08:00:00\t0"), Err(ParseError::EmptyPin));
        assert_eq!(zk("    \t2026-03-02 08:00:00"), Err(ParseError::EmptyPin));
        assert_eq!(zk("   "), Err(ParseError::EmptyPin));
        assert_eq!(err(b"\t2026-03-02 08:00:00"), "user PIN is empty");
        assert_eq!(
            err(b"12 34\t2026-03-02 08:00:00"),
            r#"user PIN "12 34" contains whitespace or control characters"#
        );
        assert_eq!(
            err(b"12\x0034\t2026-03-02 08:00:00"),
            r#"user PIN "12\u{0}34" contains whitespace or control characters"#
        );
    }

    #[test]
    fn zk_attlog_invalid_utf8() {
        assert_eq!(
            zk_bytes(b"1\xff\t2026-03-02 08:00:00"),
            Err(ParseError::NotUtf8 { offset: 1 })
        );
        assert!(err(b"\xc3\x28").starts_with("line is not valid UTF-8"));
    }

    fn zk_bytes(b: &[u8]) -> Result<Punch, ParseError> {
        parse_line(LineFormat::ZkAttlog, "door-1", b)
    }

    #[test]
    fn error_messages_quote_at_most_a_short_part() {
        let long = "x".repeat(10_000);
        let e = err(format!("1\t2026-03-02 08:00:00\t{long}").as_bytes());
        assert!(e.len() < 100, "{e}");
        assert!(e.starts_with("state \"xxx"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed: u32 = 7;
        for len in 0..2000 {
            let mut line = Vec::with_capacity(len % 64);
            for _ in 0..len % 64 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // bias towards the interesting bytes
                let b = match (seed >> 29) & 7 {
                    0 => b'\t',
                    1 => b'-',
                    2 => b'0' + ((seed >> 8) % 10) as u8,
                    3 => b' ',
                    _ => (seed >> 16) as u8,
                };
                line.push(b);
            }
            let _ = zk_bytes(&line);
            let s = sample(&line);
            assert!(s.chars().count() <= SAMPLE_MAX);
        }
    }

    #[test]
    fn sample_is_short_printable_and_escaped() {
        assert_eq!(sample(b"1\t2026"), "1\\t2026");
        assert_eq!(sample(b"plain text"), "plain text");
        assert_eq!(sample(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(sample(b"\xff\x00ok\r"), "\\xff\\u{0}ok\\r");
        assert_eq!(sample("上班\u{202e}".as_bytes()), "上班\\u{202e}");
        let long = sample(&[b'x'; 500]);
        assert_eq!(long.chars().count(), SAMPLE_MAX);
        assert!(long.ends_with('…'));
        let long = sample(&[0xffu8; 500]);
        assert!(long.chars().count() <= SAMPLE_MAX, "{long}");
        assert!(long.ends_with('…'));
        assert!(long.chars().all(|c| !c.is_control()));
        // exactly SAMPLE_MAX printable ASCII chars are kept whole
        assert_eq!(sample(&[b'y'; SAMPLE_MAX]), "y".repeat(SAMPLE_MAX));
    }
}
