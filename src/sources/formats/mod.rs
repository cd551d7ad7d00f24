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
//!
//! [`parse_line`] reads this default form only. A device's configured format (the `format`, `encoding`,
//! `delimiter`, `columns`, `header`, `pattern`, `time_format` and `state_map` keys of `[[devices]]`) is
//! read by a [`LineParser`], built once from the device's config (which validates it: a
//! [`FormatError`] names the key at fault), and a [`LineSession`] per connection or file:
//!
//! - **zk-attlog**: as above; `columns` reorders the tab-separated columns (e.g.
//!   `["user", "time", "verify", "state"]` for firmware that swaps state and verify). The state stays
//!   numeric (or a `state_map` word): a word there means the columns are wrong. With every default the
//!   parser is the same fast code as [`parse_line`].
//! - **csv**: fields separated by `delimiter` (one character, `\t` also meaning a tab; default `,`),
//!   optionally in double quotes (`""` for a quote inside; one line is one record). Each field is trimmed
//!   of spaces and loses one leading apostrophe (a spreadsheet's text marker). The roles of the columns
//!   come from `columns`, or with `header = true` from the first line of each session (see below).
//! - **pattern**: a regular expression with named groups `user` and `time` (and optionally `date`,
//!   `state`, `verify`, `workcode`); a line that does not match is an error. Groups are trimmed of spaces.
//!
//! For every configured format:
//!
//! - `encoding`: UTF-8 by default, or any WHATWG label (`gb18030`, `gbk`, `big5`, `shift_jis`...).
//!   Malformed input is an error, never silently replaced ([`LineParser::decode`] replaces it, for
//!   logs). A byte-order mark at the start of a line and a trailing CR are ignored.
//! - `time_format` applies to the time, or to `date + " " + time` when there is a date column or group:
//!   a chrono format, checked at start-up by writing a date and time and reading it back, or `unix` for
//!   Unix seconds, converted to the device's local time in its `timezone`. The default
//!   `%Y-%m-%d %H:%M:%S` uses the strict hand-rolled reader of zk-attlog.
//! - state: an integer is the state code; a word is looked up in `state_map` (as written, then trimmed);
//!   an unknown word is kept in [`Punch::state_text`] (csv and pattern). `state_map` keys must be words.
//!   verify must be an integer; the work code is kept unless empty or `0`.
//! - Keys of another format (`pattern` with `format = "csv"`, `delimiter` or `header` without csv,
//!   `columns` with pattern) are configuration errors, so a missing `format` line cannot go unnoticed.
//!
//! # Header rows (`header = true`)
//!
//! The first line of each session names the columns. Cells are compared case-insensitively with spaces,
//! `_`, `-`, `.` and `/` removed, against the role names and these aliases (other columns are ignored;
//! when two cells name the same role the first wins):
//!
//! | role | header cells |
//! |---|---|
//! | user | user, pin, userid, uid, id, acno (`AC-No.`), badge, badgenumber, badgeno, employee, employeeid, employeeno, empno, staffid, personid, enrollnumber, enrollno, 工号, 用户, 用户id, 用户号, 人员编号, 员工编号, 考勤号, 考勤号码, 编号 |
//! | time | time, datetime (`Date/Time`), checktime, punchtime, clocktime, logtime, timestamp, attendancetime, 时间, 打卡时间, 考勤时间, 日期时间, 签到时间, 刷卡时间 |
//! | date | date, day, 日期, 打卡日期, 考勤日期 |
//! | state | state, status, checktype, punchstate, attstate, inout, direction, event, 状态, 考勤状态, 打卡状态, 打卡类型, 方向, 进出 |
//! | verify | verify, verifycode, verifymode, verifytype, verification, 验证方式, 验证类型, 比对方式 |
//! | workcode | workcode, 工作代码, 工作号 |
//!
//! A header naming no user or no time column is an error on that line, and the session keeps waiting
//! for a header: the following lines fail with the same clear message instead of being misread. Card
//! numbers and `No.` are deliberately not user aliases (often not the user id, or a row number): for
//! such files set `columns` as well; `header = true` then only skips the first line, unless that line
//! reads as a punch (a file without its header row), which is kept.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDateTime;

mod columns;
mod csv;
mod encoding;
mod sample;
mod time;
mod zk_attlog;

use columns::*;
use csv::*;
use encoding::*;
use sample::*;
pub use sample::{sample, SAMPLE_MAX};
use time::*;
use zk_attlog::*;

pub use super::line_spec::LineFormat;
use super::line_spec::LineSpec;
use crate::punch::Punch;

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
    /// The line is not text in the device's encoding.
    #[error("line is not valid {encoding} text (bad bytes at offset {offset})")]
    NotEncoded {
        encoding: &'static str,
        offset: usize,
    },
    /// The line holds only spaces.
    #[error("line is blank")]
    Blank,
    /// The line ends before a required column (csv, reordered zk-attlog).
    #[error(
        "line has only {found} field{}: {role} is expected in column {column}",
        plural(found)
    )]
    TooFewFields {
        found: usize,
        role: &'static str,
        column: usize,
    },
    /// The date column or group is empty.
    #[error("date is missing")]
    MissingDate,
    /// The time (or `date time`) does not match the configured `time_format`.
    #[error("time {value} does not match time_format {format}: {why}")]
    TimeFormat {
        value: String,
        format: String,
        why: String,
    },
    /// `time_format = "unix"` and the time is not a usable number of seconds.
    #[error("time {value} is not unix seconds: {why}")]
    NotUnixTime { value: String, why: String },
    /// The line does not match the device's `pattern`.
    #[error("line does not match the pattern")]
    NoMatch,
    /// A csv field opens a double quote that the line never closes.
    #[error("line has an unterminated quoted field (column {column})")]
    UnterminatedQuote { column: usize },
    /// `header = true` and no header row has been read in this session: this line is not one.
    #[error("expected a header row naming the user and time columns (header = true); this line names no {missing} column")]
    NoHeader { missing: &'static str },
    /// [`parse_line`] was given a format that needs the device's settings.
    #[error("format {format} needs the device's settings (columns, pattern...): parse it with a LineParser")]
    NeedsConfig { format: &'static str },
}

fn plural(n: &usize) -> &'static str {
    if *n == 1 {
        ""
    } else {
        "s"
    }
}

/// Parses one line (without its terminator) of `format` from device `device_id`.
pub fn parse_line(format: LineFormat, device_id: &str, line: &[u8]) -> Result<Punch, ParseError> {
    match format {
        LineFormat::ZkAttlog => parse_zk_attlog(device_id, line),
        LineFormat::Csv => Err(ParseError::NeedsConfig { format: "csv" }),
        LineFormat::Pattern => Err(ParseError::NeedsConfig { format: "pattern" }),
    }
}

/// A format configuration that cannot work: names the key (e.g. `pattern`, `columns`, `encoding`).
///
/// `reason` reads after the key's value (`"(?P<usr>\d+)" has no group named user`), or after the key
/// alone when the key is missing (`missing: format = "csv" needs ...`); [`FormatError::config_value`]
/// tells which.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct FormatError {
    pub key: &'static str,
    pub reason: String,
}

impl FormatError {
    fn new(key: &'static str, reason: impl Into<String>) -> FormatError {
        FormatError {
            key,
            reason: reason.into(),
        }
    }

    /// The configured value of the key at fault, as text for an error message (`"(?P<usr>\d+)"`,
    /// `["user", "tme"]`), or `None` when the key is missing or the reason already names the culprit
    /// (`state_map`).
    pub fn config_value(&self, cfg: &LineSpec) -> Option<String> {
        match self.key {
            "encoding" => cfg.encoding.as_deref().map(show),
            "delimiter" => cfg.delimiter.as_deref().map(show),
            "pattern" => cfg.pattern.as_deref().map(show),
            "time_format" => cfg.time_format.as_deref().map(show),
            "columns" => cfg.columns.as_ref().map(|c| {
                let cells: Vec<String> = c.iter().map(|s| show(s)).collect();
                format!("[{}]", cells.join(", "))
            }),
            "header" => Some(cfg.header.to_string()),
            _ => None,
        }
    }
}

/// A config value in double quotes, for error messages: control characters escaped, backslashes kept
/// as written (so a regex reads as in the file).
fn show(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push('\\'),
            c => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// How a line is cut into fields.
#[derive(Debug)]
enum Layout {
    /// zk-attlog with every default: [`parse_zk_attlog`] on the bytes.
    ZkFast,
    /// zk-attlog, tab-separated, with the configured column order, encoding, time format or state map.
    Zk(Columns),
    Csv {
        delimiter: char,
        /// From `columns`; with `header`, the session reads them from the first line instead.
        columns: Option<Columns>,
        header: bool,
    },
    Pattern {
        re: regex::Regex,
        /// Each role's capture group index.
        groups: [Option<usize>; ROLES],
    },
}

/// How fields are cleaned and what a state word means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Spaces trimmed; the state must be an integer or a `state_map` word.
    Zk,
    /// Spaces trimmed, one leading apostrophe removed; unknown state words kept.
    Csv,
    /// Spaces trimmed; unknown state words kept.
    Pattern,
}

#[derive(Debug)]
struct Inner {
    device_id: String,
    /// `None` for UTF-8.
    encoding: Option<&'static encoding_rs::Encoding>,
    layout: Layout,
    time: TimeSpec,
    tz: chrono_tz::Tz,
    /// `state_map` as written.
    states: HashMap<String, i64>,
    /// `state_map` with its keys trimmed of spaces.
    states_trimmed: HashMap<String, i64>,
}

/// A device's line format, built once from its config (validated).
///
/// Cheap to clone (shared), and `Send + Sync`: parse lines through a [`LineSession`].
#[derive(Clone, Debug)]
pub struct LineParser {
    inner: Arc<Inner>,
}

impl LineParser {
    /// Checks the format keys of `cfg` (`format`, `encoding`, `delimiter`, `columns`, `header`,
    /// `pattern`, `time_format`, `state_map`) and prepares the parser for device `device_id`, whose
    /// clock is in `tz`. The error names the key at fault. Keys that belong to another format
    /// (`pattern` with `format = "csv"`...) are errors, so a forgotten `format` line cannot silently
    /// parse lines the wrong way.
    pub fn new(
        device_id: &str,
        tz: chrono_tz::Tz,
        cfg: &LineSpec,
    ) -> Result<LineParser, FormatError> {
        let encoding = parse_encoding(cfg.encoding.as_deref())?;
        let time = TimeSpec::new(cfg.time_format.as_deref())?;
        let (states, states_trimmed) = state_maps(&cfg.state_map)?;
        let format_name = match cfg.format {
            LineFormat::ZkAttlog => "zk-attlog",
            LineFormat::Csv => "csv",
            LineFormat::Pattern => "pattern",
        };
        let only_for = |key: &'static str, format: &str| {
            FormatError::new(
                key,
                format!("is only used with format = \"{format}\" (this device's format is \"{format_name}\")"),
            )
        };
        if cfg.format != LineFormat::Csv {
            if cfg.delimiter.is_some() {
                return Err(only_for("delimiter", "csv"));
            }
            if cfg.header {
                return Err(only_for("header", "csv"));
            }
        }
        if cfg.format != LineFormat::Pattern && cfg.pattern.is_some() {
            return Err(only_for("pattern", "pattern"));
        }
        let layout = match cfg.format {
            LineFormat::ZkAttlog => match &cfg.columns {
                Some(names) => Layout::Zk(Columns::from_config(names)?),
                None if encoding.is_none()
                    && matches!(time, TimeSpec::Standard)
                    && states.is_empty() =>
                {
                    Layout::ZkFast
                }
                None => Layout::Zk(Columns::zk_default()),
            },
            LineFormat::Csv => {
                let delimiter = parse_delimiter(cfg.delimiter.as_deref())?;
                let columns = cfg
                    .columns
                    .as_deref()
                    .map(Columns::from_config)
                    .transpose()?;
                if columns.is_none() && !cfg.header {
                    return Err(FormatError::new(
                        "columns",
                        "missing: format = \"csv\" needs columns = [\"user\", \"time\", ...] naming \
                         each column in order, or header = true when the first line names them",
                    ));
                }
                Layout::Csv {
                    delimiter,
                    columns,
                    header: cfg.header,
                }
            }
            LineFormat::Pattern => {
                if cfg.columns.is_some() {
                    return Err(FormatError::new(
                        "columns",
                        "is not used with format = \"pattern\": name the groups of the pattern \
                         instead (?P<user>...), (?P<time>...)",
                    ));
                }
                let Some(pattern) = cfg.pattern.as_deref() else {
                    return Err(FormatError::new(
                        "pattern",
                        "missing: format = \"pattern\" needs a regular expression with named groups \
                         user and time, e.g. \"^(?P<user>\\d+),(?P<time>[^,]+)\"",
                    ));
                };
                let re = regex::Regex::new(pattern).map_err(|e| {
                    FormatError::new(
                        "pattern",
                        format!("is not a valid regular expression: {}", regex_reason(&e)),
                    )
                })?;
                let mut groups = [None; ROLES];
                for (i, name) in re.capture_names().enumerate() {
                    if let Some(role) =
                        name.and_then(|n| Role::ALL.into_iter().find(|r| r.name() == n))
                    {
                        groups[role as usize] = Some(i);
                    }
                }
                for role in [Role::User, Role::Time] {
                    if groups[role as usize].is_none() {
                        return Err(FormatError::new(
                            "pattern",
                            format!("has no group named {}", role.name()),
                        ));
                    }
                }
                Layout::Pattern { re, groups }
            }
        };
        let has_date = match &layout {
            Layout::Zk(c)
            | Layout::Csv {
                columns: Some(c), ..
            } => c.at[Role::Date as usize].is_some(),
            Layout::Pattern { groups, .. } => groups[Role::Date as usize].is_some(),
            _ => false,
        };
        if has_date && matches!(time, TimeSpec::Unix) {
            return Err(FormatError::new(
                "time_format",
                "is Unix seconds, a whole date and time: it cannot be combined with a date column or group",
            ));
        }
        Ok(LineParser {
            inner: Arc::new(Inner {
                device_id: device_id.to_string(),
                encoding,
                layout,
                time,
                tz,
                states,
                states_trimmed,
            }),
        })
    }

    /// A per-connection (or per-file) parsing session: holds header state for `header = true`.
    pub fn session(&self) -> LineSession {
        let locs = match &self.inner.layout {
            Layout::Pattern { re, .. } => Some(re.capture_locations()),
            _ => None,
        };
        LineSession {
            inner: Arc::clone(&self.inner),
            header_columns: None,
            header_done: false,
            scratch: String::new(),
            locs,
            csv: None,
        }
    }

    /// The line as text in the device's encoding (lossless for valid input; invalid bytes replaced).
    pub fn decode<'a>(&self, line: &'a [u8]) -> Cow<'a, str> {
        match self.inner.encoding {
            None => String::from_utf8_lossy(line),
            Some(enc) => enc.decode_without_bom_handling(line).0,
        }
    }
}

type StateMaps = (HashMap<String, i64>, HashMap<String, i64>);

/// `state_map`: words only (integers are state codes already), distinct after trimming spaces.
fn state_maps(map: &BTreeMap<String, i64>) -> Result<StateMaps, FormatError> {
    let mut exact = HashMap::with_capacity(map.len());
    let mut trimmed: HashMap<String, i64> = HashMap::with_capacity(map.len());
    let mut trimmed_from: HashMap<&str, &str> = HashMap::with_capacity(map.len());
    for (word, &code) in map {
        let t = word.trim_matches(is_space);
        if t.is_empty() {
            return Err(FormatError::new(
                "state_map",
                format!(
                    "key {} is empty: map the words a clock writes, e.g. 上班 = 0",
                    show(word)
                ),
            ));
        }
        if t.parse::<i64>().is_ok() {
            return Err(FormatError::new(
                "state_map",
                format!(
                    "key {} is a number: numeric states are used as state codes as they are; map only words",
                    show(word)
                ),
            ));
        }
        if let Some(other) = trimmed_from.insert(t, word) {
            if trimmed.get(t) != Some(&code) {
                return Err(FormatError::new(
                    "state_map",
                    format!(
                        "keys {} and {} are the same word with different codes",
                        show(other),
                        show(word)
                    ),
                ));
            }
        }
        exact.insert(word.clone(), code);
        trimmed.insert(t.to_string(), code);
    }
    Ok((exact, trimmed))
}

/// The `error: ...` line of a regex syntax error (the rest points at the pattern with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A per-connection (or per-file) parsing session of a [`LineParser`].
#[derive(Debug)]
pub struct LineSession {
    inner: Arc<Inner>,
    /// Columns read from this session's header row (`header = true`).
    header_columns: Option<Columns>,
    /// The header row has been seen (or, with `columns` as well, the first line has been).
    header_done: bool,
    /// Room for `date + " " + time`.
    scratch: String,
    /// Capture positions, for `pattern`.
    locs: Option<regex::CaptureLocations>,
    /// The fields of a csv line.
    csv: Option<CsvSplit>,
}

/// The role fields of one line, as written (untrimmed).
type Fields<'a> = [Option<Cow<'a, str>>; ROLES];

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

impl LineSession {
    /// Ok(Some(punch)); Ok(None) when the line was consumed as the header row; Err on a bad line.
    ///
    /// A byte-order mark at the start of the line and trailing CR / LF are ignored.
    pub fn parse(&mut self, line: &[u8]) -> Result<Option<Punch>, ParseError> {
        let inner: &Inner = &self.inner;
        if let Layout::ZkFast = inner.layout {
            let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
            return parse_zk_attlog(&inner.device_id, line).map(Some);
        }
        let decoded = inner.decode_strict(line)?;
        let text = decoded.strip_prefix('\u{feff}').unwrap_or(&decoded);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.trim_matches(is_space).is_empty() {
            return Err(ParseError::Blank);
        }
        let mut f: Fields<'_> = Default::default();
        match &inner.layout {
            Layout::ZkFast => Err(ParseError::OneField), // handled above
            Layout::Zk(cols) => {
                let text = text.trim_end_matches([' ', '\t']);
                let mut found = 0;
                for (i, field) in text.split('\t').enumerate() {
                    found = i + 1;
                    if i > cols.last() {
                        break;
                    }
                    if let Some(r) = cols.roles.get(i).copied().flatten() {
                        f[r as usize] = Some(Cow::Borrowed(field));
                    }
                }
                cols.check_found(found)?;
                let has_date = cols.at[Role::Date as usize].is_some();
                inner
                    .build(&mut self.scratch, &f, Flavor::Zk, has_date)
                    .map(Some)
            }
            Layout::Csv {
                delimiter,
                columns,
                header,
            } => {
                let delimiter = *delimiter;
                let csv = self.csv.get_or_insert_with(|| CsvSplit::new(delimiter));
                if *header && !self.header_done {
                    if columns.is_none() {
                        csv.split(text, usize::MAX)?;
                        let unix = matches!(inner.time, TimeSpec::Unix);
                        let cols = Columns::from_header(csv.fields(), unix)?;
                        self.header_columns = Some(cols);
                        self.header_done = true;
                        return Ok(None);
                    }
                    // `columns` names the roles: the first line is the header row, unless it reads
                    // as a punch (a file without one): a punch is never dropped
                    self.header_done = true;
                    return Ok(self.parse(line).ok().flatten());
                }
                let Some(cols) = self.header_columns.as_ref().or(columns.as_ref()) else {
                    return Err(ParseError::NoHeader {
                        missing: "user or time",
                    });
                };
                let found = csv.split(text, cols.last())?;
                for (i, role) in cols.roles.iter().enumerate().take(found) {
                    if let Some(r) = role {
                        f[*r as usize] = Some(Cow::Borrowed(csv.field(i)));
                    }
                }
                cols.check_found(found)?;
                let has_date = cols.at[Role::Date as usize].is_some();
                inner
                    .build(&mut self.scratch, &f, Flavor::Csv, has_date)
                    .map(Some)
            }
            Layout::Pattern { re, groups } => {
                let locs = self.locs.get_or_insert_with(|| re.capture_locations());
                if re.captures_read(locs, text).is_none() {
                    return Err(ParseError::NoMatch);
                }
                for r in Role::ALL {
                    if let Some(g) = groups[r as usize] {
                        f[r as usize] = locs.get(g).map(|(s, e)| Cow::Borrowed(&text[s..e]));
                    }
                }
                let has_date = groups[Role::Date as usize].is_some();
                inner
                    .build(&mut self.scratch, &f, Flavor::Pattern, has_date)
                    .map(Some)
            }
        }
    }
}

impl Inner {
    /// The line as text: UTF-8 checked, or decoded from the device's encoding; malformed input is an
    /// error, never replaced.
    fn decode_strict<'a>(&self, line: &'a [u8]) -> Result<Cow<'a, str>, ParseError> {
        match self.encoding {
            None => std::str::from_utf8(line)
                .map(Cow::Borrowed)
                .map_err(|e| ParseError::NotUtf8 {
                    offset: e.valid_up_to(),
                }),
            Some(enc) => enc
                .decode_without_bom_handling_and_without_replacement(line)
                .ok_or_else(|| ParseError::NotEncoded {
                    encoding: enc.name(),
                    offset: malformed_offset(enc, line),
                }),
        }
    }

    /// The punch of a line's role fields.
    fn build(
        &self,
        scratch: &mut String,
        f: &Fields<'_>,
        flavor: Flavor,
        has_date: bool,
    ) -> Result<Punch, ParseError> {
        let clean = |r: Role| -> &str {
            let v = f[r as usize].as_deref().unwrap_or("");
            match flavor {
                Flavor::Csv => clean_csv(v),
                Flavor::Zk | Flavor::Pattern => v.trim_matches(is_space),
            }
        };
        let user = clean(Role::User);
        if user.is_empty() {
            return Err(ParseError::EmptyPin);
        }
        if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::BadPin { pin: quote(user) });
        }
        let time = clean(Role::Time);
        if time.is_empty() {
            return Err(ParseError::MissingTime);
        }
        let local_time = if has_date {
            let date = clean(Role::Date);
            if date.is_empty() {
                return Err(ParseError::MissingDate);
            }
            scratch.clear();
            scratch.push_str(date);
            scratch.push(' ');
            scratch.push_str(time);
            self.parse_time(scratch)?
        } else {
            self.parse_time(time)?
        };

        let (mut state, mut state_text) = (None, None);
        if let Some(raw) = f[Role::State as usize].as_deref() {
            let word = clean(Role::State);
            if !word.is_empty() {
                if let Ok(n) = word.parse::<i64>() {
                    state = Some(n);
                } else if let Some(&n) = self
                    .states
                    .get(raw)
                    .or_else(|| self.states_trimmed.get(word))
                {
                    state = Some(n);
                } else if flavor == Flavor::Zk {
                    return Err(ParseError::NotInteger {
                        field: "state",
                        value: quote(word),
                    });
                } else {
                    state_text = Some(word.to_string());
                }
            }
        }
        let verify = int_field(
            "verify",
            f[Role::Verify as usize]
                .is_some()
                .then(|| clean(Role::Verify)),
        )?;
        let workcode = match clean(Role::Workcode) {
            "" | "0" => None,
            w => Some(w.to_string()),
        };
        Ok(Punch {
            device_id: self.device_id.clone(),
            device_user_id: user.to_string(),
            local_time,
            state,
            verify,
            workcode,
            state_text,
        })
    }

    /// Reads the (cleaned) time, or `date time`.
    fn parse_time(&self, s: &str) -> Result<NaiveDateTime, ParseError> {
        match &self.time {
            TimeSpec::Standard => parse_datetime(s).map_err(|why| ParseError::BadTime {
                value: quote(s),
                why,
            }),
            spec @ TimeSpec::Custom { format, .. } => {
                spec.parse_custom(s).map_err(|e| ParseError::TimeFormat {
                    value: quote(s),
                    format: quote(format),
                    why: e.to_string(),
                })
            }
            TimeSpec::Unix => {
                let bad = |why: &str| ParseError::NotUnixTime {
                    value: quote(s),
                    why: why.to_string(),
                };
                let secs: i64 = s.parse().map_err(|_| bad("not an integer"))?;
                if !(0..=UNIX_MAX).contains(&secs) {
                    return Err(bad("out of range (milliseconds?)"));
                }
                let utc =
                    chrono::DateTime::from_timestamp(secs, 0).ok_or_else(|| bad("out of range"))?;
                Ok(utc.with_timezone(&self.tz).naive_local())
            }
        }
    }
}

#[cfg(test)]
mod tests;
