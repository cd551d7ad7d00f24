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
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::line_spec::LineSpec;
use crate::punch::Punch;

crate::choice_enum! {
    /// The line formats (`format = "..."`).
    pub enum LineFormat {
        ZkAttlog = "zk-attlog",
        Csv = "csv",
        Pattern = "pattern",
    }
}

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

/// The meaning of a column (csv, reordered zk-attlog) or of a named group (pattern).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User = 0,
    Time = 1,
    Date = 2,
    State = 3,
    Verify = 4,
    Workcode = 5,
}

/// Number of [`Role`]s.
const ROLES: usize = 6;

impl Role {
    const ALL: [Role; ROLES] = [
        Role::User,
        Role::Time,
        Role::Date,
        Role::State,
        Role::Verify,
        Role::Workcode,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Time => "time",
            Role::Date => "date",
            Role::State => "state",
            Role::Verify => "verify",
            Role::Workcode => "workcode",
        }
    }

    /// A name in `columns` (case-insensitive); anything else (`""`, `skip`, `name`...) is ignored.
    fn from_config(name: &str) -> Option<Role> {
        let name = name.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// A header cell (`header = true`): the role names and their aliases, compared case-insensitively
    /// with spaces, `_`, `-`, `.` and `/` removed (so `User ID`, `user_id` and `UserID` are alike).
    fn from_header(cell: &str) -> Option<Role> {
        let norm: String = cell
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-' | '.' | '/' | '\u{3000}'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match norm.as_str() {
            "user" | "pin" | "userid" | "uid" | "id" | "acno" | "badge" | "badgenumber"
            | "badgeno" | "employee" | "employeeid" | "employeeno" | "empno" | "staffid"
            | "personid" | "enrollnumber" | "enrollno" | "工号" | "用户" | "用户id" | "用户号"
            | "人员编号" | "员工编号" | "考勤号" | "考勤号码" | "编号" => {
                Role::User
            }
            "time" | "datetime" | "checktime" | "punchtime" | "clocktime" | "logtime"
            | "timestamp" | "attendancetime" | "时间" | "打卡时间" | "考勤时间" | "日期时间"
            | "签到时间" | "刷卡时间" => Role::Time,
            "date" | "day" | "日期" | "打卡日期" | "考勤日期" => Role::Date,
            "state" | "status" | "checktype" | "punchstate" | "attstate" | "inout"
            | "direction" | "event" | "状态" | "考勤状态" | "打卡状态" | "打卡类型" | "方向"
            | "进出" => Role::State,
            "verify" | "verifycode" | "verifymode" | "verifytype" | "verification" | "验证方式"
            | "验证类型" | "比对方式" => Role::Verify,
            "workcode" | "工作代码" | "工作号" => Role::Workcode,
            _ => return None,
        })
    }
}

/// Where each role is in a line split into columns.
#[derive(Clone, Debug)]
struct Columns {
    /// Each role's 0-based column.
    at: [Option<usize>; ROLES],
    /// The role of each column up to the last one that has a role.
    roles: Vec<Option<Role>>,
}

impl Columns {
    fn from_roles(at: [Option<usize>; ROLES]) -> Columns {
        let len = at.iter().flatten().max().map_or(0, |&m| m + 1);
        let mut roles = vec![None; len];
        for r in Role::ALL {
            if let Some(c) = at[r as usize] {
                roles[c] = Some(r);
            }
        }
        Columns { at, roles }
    }

    /// The zk-attlog order: user, time, state, verify, workcode.
    fn zk_default() -> Columns {
        Columns::from_roles([Some(0), Some(1), None, Some(2), Some(3), Some(4)])
    }

    /// From `columns`: each role at most once, user and time required.
    fn from_config(names: &[String]) -> Result<Columns, FormatError> {
        let mut at = [None; ROLES];
        for (i, name) in names.iter().enumerate() {
            let Some(role) = Role::from_config(name) else {
                continue;
            };
            if let Some(first) = at[role as usize] {
                return Err(FormatError::new(
                    "columns",
                    format!(
                        "names {} twice (columns {} and {})",
                        role.name(),
                        first + 1,
                        i + 1
                    ),
                ));
            }
            at[role as usize] = Some(i);
        }
        for role in [Role::User, Role::Time] {
            if at[role as usize].is_none() {
                return Err(FormatError::new(
                    "columns",
                    format!(
                        "has no {} column: name the columns in order with user, time, date, state, \
                         verify, workcode (\"\" or \"skip\" for a column to ignore)",
                        role.name()
                    ),
                ));
            }
        }
        Ok(Columns::from_roles(at))
    }

    /// From the cells of a header row: the first cell naming a role wins; user and time required.
    fn from_header<'a>(
        cells: impl Iterator<Item = &'a str>,
        unix: bool,
    ) -> Result<Columns, ParseError> {
        let mut at = [None; ROLES];
        for (i, cell) in cells.enumerate() {
            let cell = clean_csv(cell);
            let cell = cell.strip_prefix('\u{feff}').unwrap_or(cell);
            match Role::from_header(cell) {
                // Unix seconds are a whole date and time: a date column is not needed
                Some(Role::Date) if unix => {}
                Some(r) if at[r as usize].is_none() => at[r as usize] = Some(i),
                _ => {}
            }
        }
        let missing = match (at[Role::User as usize], at[Role::Time as usize]) {
            (None, None) => Some("user or time"),
            (None, _) => Some("user"),
            (_, None) => Some("time"),
            _ => None,
        };
        match missing {
            Some(missing) => Err(ParseError::NoHeader { missing }),
            None => Ok(Columns::from_roles(at)),
        }
    }

    /// Index of the last column with a role.
    fn last(&self) -> usize {
        self.roles.len().saturating_sub(1)
    }

    /// The first required column (user, time, date) a line of `found` fields lacks.
    fn check_found(&self, found: usize) -> Result<(), ParseError> {
        for role in [Role::User, Role::Time, Role::Date] {
            if let Some(c) = self.at[role as usize] {
                if c >= found {
                    return Err(ParseError::TooFewFields {
                        found,
                        role: role.name(),
                        column: c + 1,
                    });
                }
            }
        }
        Ok(())
    }
}

/// How the time field is written.
#[derive(Clone, Debug)]
enum TimeSpec {
    /// `YYYY-MM-DD HH:MM:SS`, read by the hand-rolled [`parse_datetime`].
    Standard,
    /// A chrono format, parsed once.
    Custom {
        format: String,
        items: Vec<chrono::format::Item<'static>>,
    },
    /// Unix seconds.
    Unix,
}

const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl TimeSpec {
    fn new(format: Option<&str>) -> Result<TimeSpec, FormatError> {
        let Some(format) = format else {
            return Ok(TimeSpec::Standard);
        };
        if format == DEFAULT_TIME_FORMAT {
            return Ok(TimeSpec::Standard);
        }
        if format.trim().eq_ignore_ascii_case("unix") {
            return Ok(TimeSpec::Unix);
        }
        let bad = |reason: String| FormatError::new("time_format", reason);
        if format.trim().is_empty() {
            return Err(bad(
                "is empty: use a chrono format such as \"%d-%m-%Y %H:%M:%S\", or \"unix\"".into(),
            ));
        }
        let items = chrono::format::StrftimeItems::new(format)
            .parse_to_owned()
            .map_err(|e| {
                bad(format!(
                    "is not a valid chrono format ({e}): use specifiers such as %Y, %m, %d, %H, %M, %S"
                ))
            })?;
        // it must write a date and time and read the same one back (to the minute when it has no
        // seconds): a date alone, a 12-hour clock without %p... cannot tell punches apart
        let sample = NaiveDate::from_ymd_opt(2026, 11, 28)
            .and_then(|d| d.and_hms_opt(13, 4, 5))
            .unwrap_or_default();
        let mut written = String::new();
        if write!(written, "{}", sample.format_with_items(items.iter())).is_err() {
            return Err(bad("cannot write a date and time".into()));
        }
        let spec = TimeSpec::Custom {
            format: format.to_string(),
            items,
        };
        match spec.parse_custom(&written) {
            Ok(back) if back == sample || back == sample.with_second(0).unwrap_or(sample) => {
                Ok(spec)
            }
            Ok(back) => Err(bad(format!(
                "does not keep a date and time: {sample} is written {written:?} and read back as {back}"
            ))),
            Err(e) => Err(bad(format!(
                "cannot read back the date and time it writes ({written:?}: {e}): it needs the year, \
                 month, day, hour and minute"
            ))),
        }
    }

    fn parse_custom(&self, s: &str) -> chrono::ParseResult<NaiveDateTime> {
        let TimeSpec::Custom { items, .. } = self else {
            return NaiveDateTime::parse_from_str(s, DEFAULT_TIME_FORMAT);
        };
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, s, items.iter())?;
        parsed.to_naive_datetime_with_offset(0)
    }
}

/// Largest Unix time accepted: 9999-12-31 23:59:59 UTC (a larger number is milliseconds or garbage).
const UNIX_MAX: i64 = 253_402_300_799;

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

/// `encoding`: `None` for UTF-8 (the fast path), else a WHATWG encoding that can be read line by line.
fn parse_encoding(
    label: Option<&str>,
) -> Result<Option<&'static encoding_rs::Encoding>, FormatError> {
    let Some(label) = label else {
        return Ok(None);
    };
    let Some(enc) = encoding_rs::Encoding::for_label(label.trim().as_bytes()) else {
        return Err(FormatError::new(
            "encoding",
            "is not a known encoding label: use utf-8, gb18030, gbk, big5, shift_jis, euc-kr or \
             another WHATWG label",
        ));
    };
    if enc == encoding_rs::UTF_8 {
        Ok(None)
    } else if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
        Err(FormatError::new(
            "encoding",
            "is not supported: lines are split at byte 0x0A, which does not work for UTF-16 text",
        ))
    } else if enc == encoding_rs::REPLACEMENT {
        Err(FormatError::new(
            "encoding",
            "is not supported: WHATWG decodes it to a replacement character only",
        ))
    } else {
        Ok(Some(enc))
    }
}

/// `delimiter`: one character; the two characters `\t` also mean a tab.
fn parse_delimiter(d: Option<&str>) -> Result<char, FormatError> {
    let Some(d) = d else {
        return Ok(',');
    };
    if d == "\\t" {
        return Ok('\t');
    }
    let mut chars = d.chars();
    match (chars.next(), chars.next()) {
        (Some('"' | '\r' | '\n'), None) => Err(FormatError::new(
            "delimiter",
            "cannot be a double quote or a line break",
        )),
        (Some(c), None) => Ok(c),
        _ => Err(FormatError::new(
            "delimiter",
            "must be exactly one character, e.g. \",\", \";\", \"|\" or \"\\t\" for a tab",
        )),
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
                if *header && !self.header_done {
                    if columns.is_none() {
                        let mut cells = Vec::new();
                        split_csv(text, delimiter, usize::MAX, |_, c| cells.push(c))?;
                        let unix = matches!(inner.time, TimeSpec::Unix);
                        let cols = Columns::from_header(cells.iter().map(|c| c.as_ref()), unix)?;
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
                let found = split_csv(text, delimiter, cols.last(), |i, v| {
                    if let Some(r) = cols.roles.get(i).copied().flatten() {
                        f[r as usize] = Some(v);
                    }
                })?;
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

/// Spaces that surround fields.
fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A csv field: spaces trimmed, then one leading apostrophe (a spreadsheet's text marker) removed.
fn clean_csv(s: &str) -> &str {
    let s = s.trim_matches(is_space);
    s.strip_prefix('\'').unwrap_or(s)
}

/// Splits a csv line at `delim`, handing each field up to index `last` to `put` (quotes removed, `""`
/// inside quotes read as `"`); returns the number of fields (at least `last + 2` when it stops early).
/// A quoted field may be surrounded by spaces; text after its closing quote is kept, as spreadsheets do.
fn split_csv<'a>(
    text: &'a str,
    delim: char,
    last: usize,
    mut put: impl FnMut(usize, Cow<'a, str>),
) -> Result<usize, ParseError> {
    let dlen = delim.len_utf8();
    let mut rest = text;
    let mut i = 0usize;
    loop {
        if i > last {
            return Ok(i + 1);
        }
        let lead = if delim == ' ' {
            rest
        } else {
            rest.trim_start_matches(' ')
        };
        let next = if let Some(quoted) = lead.strip_prefix('"') {
            let mut s = quoted;
            let mut owned: Option<String> = None;
            let mut value: &'a str;
            loop {
                let Some(p) = s.find('"') else {
                    return Err(ParseError::UnterminatedQuote { column: i + 1 });
                };
                value = &s[..p];
                if s[p + 1..].starts_with('"') {
                    owned.get_or_insert_with(String::new).push_str(&s[..=p]);
                    s = &s[p + 2..];
                } else {
                    s = &s[p + 1..];
                    break;
                }
            }
            let (tail, next) = match s.find(delim) {
                Some(p) => (&s[..p], Some(&s[p + dlen..])),
                None => (s, None),
            };
            let tail = tail.trim_matches(' ');
            let field = match owned {
                None if tail.is_empty() => Cow::Borrowed(value),
                owned => {
                    let mut o = owned.unwrap_or_default();
                    o.push_str(value);
                    o.push_str(tail);
                    Cow::Owned(o)
                }
            };
            put(i, field);
            next
        } else {
            match rest.find(delim) {
                Some(p) => {
                    put(i, Cow::Borrowed(&rest[..p]));
                    Some(&rest[p + dlen..])
                }
                None => {
                    put(i, Cow::Borrowed(rest));
                    None
                }
            }
        };
        match next {
            Some(n) => rest = n,
            None => return Ok(i + 1),
        }
        i += 1;
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

/// Offset of the first malformed byte sequence of `line` in `enc`.
fn malformed_offset(enc: &'static encoding_rs::Encoding, line: &[u8]) -> usize {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(line.len())
        .unwrap_or(line.len().saturating_mul(4).saturating_add(16));
    let mut out = String::with_capacity(cap);
    let (result, read) = decoder.decode_to_string_without_replacement(line, &mut out, true);
    match result {
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            read.saturating_sub(usize::from(bad) + usize::from(after))
        }
        _ => read,
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
        state_text: None,
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

    // ---- configured formats (LineParser) ----

    /// A device's line keys and its time zone.
    struct TestDevice {
        timezone: String,
        spec: LineSpec,
    }

    impl std::ops::Deref for TestDevice {
        type Target = LineSpec;
        fn deref(&self) -> &LineSpec {
            &self.spec
        }
    }

    impl std::ops::DerefMut for TestDevice {
        fn deref_mut(&mut self) -> &mut LineSpec {
            &mut self.spec
        }
    }

    fn device(edit: impl FnOnce(&mut TestDevice)) -> TestDevice {
        let mut d = TestDevice {
            timezone: "Asia/Shanghai".into(),
            spec: LineSpec::default(),
        };
        edit(&mut d);
        d
    }

    fn new_parser(d: &TestDevice) -> Result<LineParser, FormatError> {
        LineParser::new("door-1", d.timezone.parse().unwrap(), &d.spec)
    }

    fn parser(edit: impl FnOnce(&mut TestDevice)) -> LineParser {
        new_parser(&device(edit)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn config_err(edit: impl FnOnce(&mut TestDevice)) -> FormatError {
        new_parser(&device(edit)).expect_err("config should be refused")
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Parses a data line (not a header) or panics with the error.
    fn punch(s: &mut LineSession, line: &[u8]) -> Punch {
        match s.parse(line) {
            Ok(Some(p)) => p,
            other => panic!("{:?}: {other:?}", sample(line)),
        }
    }

    fn perr(s: &mut LineSession, line: &[u8]) -> String {
        match s.parse(line) {
            Err(e) => e.to_string(),
            other => panic!("{:?} should be refused: {other:?}", sample(line)),
        }
    }

    /// shared/samples/tab-ddmmyyyy.txt (CRLF line ends).
    const TAB_DDMMYYYY_SAMPLE: &[u8] = b"1\t02-03-2026\t08:01:02\t'0001234\t01\t03\r\n\
2\t02-03-2026\t17:45:10\t'0001234\t01\t03\r\n\
1\t02-03-2026\t08:15:59\t'0000077\t01\t03\r\n";

    /// shared/samples/serial-gb18030.txt: GB18030, CR line ends;
    /// `0001,张三,2026-03-02 08:01:02,上班` / `0002,李四,...,上班` / `0001,张三,...,下班`.
    const SERIAL_GB18030_SAMPLE: &[u8] =
        b"0001,\xd5\xc5\xc8\xfd,2026-03-02 08:01:02,\xc9\xcf\xb0\xe0\x0d\
0002,\xc0\xee\xcb\xc4,2026-03-02 08:03:45,\xc9\xcf\xb0\xe0\x0d\
0001,\xd5\xc5\xc8\xfd,2026-03-02 18:00:10,\xcf\xc2\xb0\xe0\x0d";

    /// `0003,王五,2026-03-02 12:00:00,外出` in GB18030 (外出 = out, not in the state map).
    const GB18030_UNMAPPED: &[u8] = b"0003,\xcd\xf5\xce\xe5,2026-03-02 12:00:00,\xcd\xe2\xb3\xf6";

    const GB18030_PATTERN: &str = r"^(?P<user>\d+),[^,]*,(?P<time>[^,]+),(?P<state>.+)$";

    fn gb18030_parser() -> LineParser {
        parser(|d| {
            d.format = LineFormat::Pattern;
            d.encoding = Some("gb18030".into());
            d.pattern = Some(GB18030_PATTERN.into());
            d.state_map = [("上班".to_string(), 0), ("下班".to_string(), 1)]
                .into_iter()
                .collect();
        })
    }

    #[test]
    fn line_parser_zk_attlog_default_is_parse_line() {
        let p = parser(|_| {});
        assert!(matches!(p.inner.layout, Layout::ZkFast));
        let mut s = p.session();
        for line in ZK_ATTLOG_SAMPLE.lines() {
            assert_eq!(s.parse(line.as_bytes()).map(Option::unwrap), zk(line));
        }
        for bad in [
            "12345",
            "1\t2026-13-02 08:00:00",
            "   ",
            "1\t2026-03-02 08:00:00\tin",
        ] {
            assert_eq!(s.parse(bad.as_bytes()).unwrap_err(), zk(bad).unwrap_err());
        }
        // a UTF-8 byte-order mark (first line of an exported file) is not part of the PIN
        let p = punch(&mut s, b"\xef\xbb\xbf7\t2026-03-02 08:00:00\t0\t1");
        assert_eq!(p.device_user_id, "7");
    }

    #[test]
    fn zk_attlog_reordered_columns() {
        // firmware that swaps state and verify in USB exports
        let p = parser(|d| d.columns = Some(strs(&["user", "time", "verify", "state"])));
        let mut s = p.session();
        let got = punch(&mut s, b"     1005\t2026-03-02 12:00:03\t4\t2\t0\t0\t0\r");
        assert_eq!(got.device_user_id, "1005");
        assert_eq!(got.local_time, dt("2026-03-02 12:00:03"));
        assert_eq!((got.state, got.verify), (Some(2), Some(4)));
        assert_eq!(got.workcode, None, "no workcode column");
        let got = punch(&mut s, b"1\t2026-03-02 08:00:00");
        assert_eq!((got.state, got.verify), (None, None));

        assert_eq!(
            perr(&mut s, b"1"),
            "line has only 1 field: time is expected in column 2"
        );
        assert_eq!(
            perr(&mut s, b"1\t2026-03-02 08:00:00\tface\t0"),
            r#"verify "face" is not an integer"#
        );
        // zk-attlog states are numbers: a word means the columns are wrong
        assert_eq!(
            perr(&mut s, b"1\t2026-03-02 08:00:00\t1\tin"),
            r#"state "in" is not an integer"#
        );
        assert_eq!(
            perr(&mut s, b"1\t2026-02-30 08:00:00").split(':').next(),
            Some(r#"time "2026-02-30 08"#)
        );
        assert_eq!(perr(&mut s, b" \t "), "line is blank");

        // time first, user last, with a work code
        let p = parser(|d| d.columns = Some(strs(&["time", "skip", "workcode", "user"])));
        let got = punch(&mut p.session(), b"2026-03-02 08:00:00\tx\tW7\t42");
        assert_eq!(got.device_user_id, "42");
        assert_eq!(got.workcode.as_deref(), Some("W7"));
        assert_eq!(
            perr(&mut p.session(), b"2026-03-02 08:00:00\tx\tW7"),
            "line has only 3 fields: user is expected in column 4"
        );
    }

    #[test]
    fn zk_attlog_with_state_words_and_an_encoding() {
        let p = parser(|d| {
            d.encoding = Some("gbk".into());
            d.state_map = [("上班".to_string(), 0)].into_iter().collect();
        });
        assert!(matches!(p.inner.layout, Layout::Zk(_)));
        let mut s = p.session();
        let got = punch(&mut s, b"  8\t2026-03-02 08:00:00\t\xc9\xcf\xb0\xe0\t1");
        assert_eq!(
            (got.device_user_id.as_str(), got.state, got.verify),
            ("8", Some(0), Some(1))
        );
        assert_eq!(
            perr(&mut s, b"8\t2026-03-02 08:00:00\tin"),
            r#"state "in" is not an integer"#
        );
    }

    #[test]
    fn csv_tab_ddmmyyyy_sample() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.delimiter = Some("\t".into());
            d.columns = Some(strs(&["state", "date", "time", "user", "", ""]));
            d.time_format = Some("%d-%m-%Y %H:%M:%S".into());
        });
        let mut s = p.session();
        // the line reader strips LF; the CR of CRLF may stay
        let got: Vec<(String, NaiveDateTime, Option<i64>)> = TAB_DDMMYYYY_SAMPLE
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let p = punch(&mut s, l);
                (p.device_user_id, p.local_time, p.state)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("0001234".to_string(), dt("2026-03-02 08:01:02"), Some(1)),
                ("0001234".to_string(), dt("2026-03-02 17:45:10"), Some(2)),
                ("0000077".to_string(), dt("2026-03-02 08:15:59"), Some(1)),
            ]
        );
        // and with the CR already gone
        let p2 = punch(&mut s, b"4\t02-03-2026\t12:00:00\t'0000077\t01\t03");
        assert_eq!(
            (p2.state, p2.local_time),
            (Some(4), dt("2026-03-02 12:00:00"))
        );

        assert_eq!(
            perr(&mut s, b"1\t32-03-2026\t08:01:02\t'0001234\t01\t03\r"),
            r#"time "32-03-2026 08:01:02" does not match time_format "%d-%m-%Y %H:%M:%S": input is out of range"#
        );
        assert_eq!(
            perr(&mut s, b"1\t2026-03-02\t08:01:02\t'0001234\t01\t03"),
            r#"time "2026-03-02 08:01:02" does not match time_format "%d-%m-%Y %H:%M:%S": input contains invalid characters"#
        );
        assert_eq!(
            perr(&mut s, b"1\t02-03-2026\t08:01:02"),
            "line has only 3 fields: user is expected in column 4"
        );
        assert_eq!(perr(&mut s, b"1\t\t08:01:02\t'1"), "date is missing");
        assert_eq!(perr(&mut s, b"1\t02-03-2026\t\t'1"), "time is missing");
        assert_eq!(
            perr(&mut s, b"1\t02-03-2026\t08:01:02\t'"),
            "user PIN is empty"
        );
        assert_eq!(perr(&mut s, b"   \r"), "line is blank");
        assert!(perr(&mut s, b"\xff\t02").starts_with("line is not valid UTF-8"));
    }

    #[test]
    fn csv_header_row() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.header = true;
        });
        let file: [&[u8]; 4] = [
            b"\xef\xbb\xbfName,PIN,Date/Time,Status,Verify Code,Work_Code\r",
            b"Zhang San,0001,2026-03-02 08:01:02,0,1,0",
            b"Li Si,0002,2026-03-02 08:03:45,C/Out,15,W7",
            b"Li Si,,2026-03-02 08:03:45,1,15,0",
        ];
        for _ in 0..2 {
            // each session (connection, file) starts with its header row
            let mut s = p.session();
            assert_eq!(s.parse(file[0]), Ok(None));
            let a = punch(&mut s, file[1]);
            assert_eq!(a.device_user_id, "0001");
            assert_eq!((a.state, a.verify, a.workcode), (Some(0), Some(1), None));
            let b = punch(&mut s, file[2]);
            assert_eq!(b.local_time, dt("2026-03-02 08:03:45"));
            assert_eq!((b.state, b.state_text.as_deref()), (None, Some("C/Out")));
            assert_eq!((b.verify, b.workcode.as_deref()), (Some(15), Some("W7")));
            assert_eq!(perr(&mut s, file[3]), "user PIN is empty");
            // a second header-like line is just a bad data line
            assert!(perr(&mut s, file[0]).starts_with(r#"time "Date/Time""#));
        }

        // Chinese headers, a separate date column
        let mut s = p.session();
        assert_eq!(s.parse("工号,姓名,日期,时间,状态".as_bytes()), Ok(None));
        let c = punch(&mut s, "7,王五,2026-03-02,08:00:00,1".as_bytes());
        assert_eq!(
            (c.device_user_id.as_str(), c.local_time, c.state),
            ("7", dt("2026-03-02 08:00:00"), Some(1))
        );
    }

    #[test]
    fn csv_bad_header() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.header = true;
        });
        let mut s = p.session();
        assert_eq!(
            perr(&mut s, b"name,card,when"),
            "expected a header row naming the user and time columns (header = true); this line names no user or time column"
        );
        // still no header: data lines fail clearly, they are not misread
        assert!(perr(&mut s, b"0001,Zhang San,2026-03-02 08:01:02")
            .starts_with("expected a header row naming the user and time columns"));
        assert!(perr(&mut s, b"pin,name").ends_with("names no time column"));
        // a proper header later is accepted
        assert_eq!(s.parse(b"userid,name,checktime"), Ok(None));
        assert_eq!(
            punch(&mut s, b"1,x,2026-03-02 08:01:02").device_user_id,
            "1"
        );
    }

    #[test]
    fn csv_header_with_columns_skips_the_first_line_but_never_a_punch() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.header = true;
            d.columns = Some(strs(&["skip", "user", "time"]));
        });
        let mut s = p.session();
        assert_eq!(s.parse(b"No.,AC-No.,Date Time"), Ok(None));
        assert_eq!(
            punch(&mut s, b"1,42,2026-03-02 08:00:00").device_user_id,
            "42"
        );
        // a file without the header row: its first line is a punch, not lost
        let mut s = p.session();
        assert_eq!(
            punch(&mut s, b"1,43,2026-03-02 08:00:00").device_user_id,
            "43"
        );
        assert_eq!(
            punch(&mut s, b"2,44,2026-03-02 08:00:00").device_user_id,
            "44"
        );
    }

    #[test]
    fn csv_quotes() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "name", "time", "state", "workcode"]));
            d.state_map = [("in".to_string(), 0), ("out".to_string(), 1)]
                .into_iter()
                .collect();
        });
        let mut s = p.session();
        let a = punch(
            &mut s,
            br#""0001","Zhang, San","2026-03-02 08:01:02","in","say ""hi""""#,
        );
        assert_eq!(a.device_user_id, "0001");
        assert_eq!(a.local_time, dt("2026-03-02 08:01:02"));
        assert_eq!(a.state, Some(0));
        assert_eq!(a.workcode.as_deref(), Some(r#"say "hi""#));
        // spaces around quoted and plain fields, a quoted apostrophe marker, an empty quoted field
        let b = punch(
            &mut s,
            br#"  "'0002" , "" ,  2026-03-02 18:00:00 , "out " ,"""#,
        );
        assert_eq!(b.device_user_id, "0002");
        assert_eq!((b.state, b.workcode), (Some(1), None));
        assert_eq!(
            perr(&mut s, br#""0003,Wang,2026-03-02 08:00:00"#),
            "line has an unterminated quoted field (column 1)"
        );
        assert_eq!(
            perr(&mut s, br#"0003,"Wang,2026-03-02 08:00:00"#),
            "line has an unterminated quoted field (column 2)"
        );
        assert_eq!(
            perr(&mut s, br#""00 03",x,2026-03-02 08:00:00"#),
            r#"user PIN "00 03" contains whitespace or control characters"#
        );
    }

    #[test]
    fn csv_delimiters() {
        for (delim, line) in [
            ("\\t", "1\t2026-03-02 08:00:00"),
            (";", "1;2026-03-02 08:00:00"),
            ("|", "1|2026-03-02 08:00:00"),
            ("；", "1；2026-03-02 08:00:00"),
        ] {
            let p = parser(|d| {
                d.format = LineFormat::Csv;
                d.delimiter = Some(delim.into());
                d.columns = Some(strs(&["user", "time"]));
            });
            let got = punch(&mut p.session(), line.as_bytes());
            assert_eq!(
                (got.device_user_id.as_str(), got.local_time),
                ("1", dt("2026-03-02 08:00:00")),
                "{delim}"
            );
        }
    }

    #[test]
    fn pattern_gb18030_sample() {
        let p = gb18030_parser();
        let mut s = p.session();
        // the reader splits at CR; a CR left at the end is tolerated too
        let lines: Vec<&[u8]> = SERIAL_GB18030_SAMPLE
            .split_inclusive(|&b| b == b'\r')
            .collect();
        assert_eq!(lines.len(), 3);
        let got: Vec<(String, NaiveDateTime, Option<i64>)> = lines
            .iter()
            .map(|l| {
                let p = punch(&mut s, l);
                assert_eq!(p.state_text, None);
                (p.device_user_id, p.local_time, p.state)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("0001".to_string(), dt("2026-03-02 08:01:02"), Some(0)),
                ("0002".to_string(), dt("2026-03-02 08:03:45"), Some(0)),
                ("0001".to_string(), dt("2026-03-02 18:00:10"), Some(1)),
            ]
        );
        assert_eq!(p.decode(lines[0]), "0001,张三,2026-03-02 08:01:02,上班\r");

        // an unmapped word is kept, never dropped
        let q = punch(&mut s, GB18030_UNMAPPED);
        assert_eq!((q.device_user_id.as_str(), q.state), ("0003", None));
        assert_eq!(q.state_text.as_deref(), Some("外出"));
    }

    #[test]
    fn pattern_bad_lines() {
        let p = gb18030_parser();
        let mut s = p.session();
        assert_eq!(perr(&mut s, b"hello"), "line does not match the pattern");
        assert_eq!(perr(&mut s, b"  \r"), "line is blank");
        assert_eq!(
            perr(&mut s, b"0001,\xd5\xc5,2026-03-02 08:01:02,\xff\xff"),
            "line is not valid gb18030 text (bad bytes at offset 28)"
        );
        assert_eq!(
            perr(&mut s, b"0001,x,2026-03-02 25:01:02,\xc9\xcf\xb0\xe0"),
            r#"time "2026-03-02 25:01:02" is not YYYY-MM-DD HH:MM:SS: hour 25 is out of range"#
        );
        assert_eq!(p.decode(b"0001,\xff"), "0001,\u{fffd}");
    }

    #[test]
    fn pattern_with_optional_groups_and_a_date() {
        let p = parser(|d| {
            d.format = LineFormat::Pattern;
            d.pattern = Some(
                r"^ID=(?P<user>\S+) D=(?P<date>\d{8}) T=(?P<time>\d{4})(?: V=(?P<verify>\w+))?(?: W=(?P<workcode>\w*))?"
                    .into(),
            );
            d.time_format = Some("%Y%m%d %H%M".into());
        });
        let mut s = p.session();
        let a = punch(&mut s, b"ID=A7 D=20260302 T=0805 V=15 W=0 trailing");
        assert_eq!(a.device_user_id, "A7");
        assert_eq!(a.local_time, dt("2026-03-02 08:05:00"));
        assert_eq!((a.state, a.verify, a.workcode), (None, Some(15), None));
        let b = punch(&mut s, b"ID=A8 D=20260302 T=2359");
        assert_eq!((b.verify, b.workcode), (None, None));
        assert_eq!(
            perr(&mut s, b"ID=A8 D=20260302 T=2359 V=face"),
            r#"verify "face" is not an integer"#
        );
        assert_eq!(
            perr(&mut s, b"ID=A8 D=20261302 T=2359"),
            r#"time "20261302 2359" does not match time_format "%Y%m%d %H%M": input is out of range"#
        );
    }

    #[test]
    fn unix_time_in_a_dst_zone() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "time", "state"]));
            d.time_format = Some("unix".into());
            d.timezone = "Europe/Berlin".into();
        });
        let mut s = p.session();
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        for (secs, local) in [
            (1_768_464_000, "2026-01-15 09:00:00"), // 08:00Z, CET (+1)
            (1_784_102_400, "2026-07-15 10:00:00"), // 08:00Z, CEST (+2)
            (1_774_747_800, "2026-03-29 03:30:00"), // 01:30Z, just after the spring-forward gap
            (1_774_744_200, "2026-03-29 01:30:00"), // 00:30Z, just before it
        ] {
            let got = punch(&mut s, format!("9,{secs},0").as_bytes());
            assert_eq!(got.local_time, dt(local), "{secs}");
            // the pipeline resolves the local time in the device zone: the same instant comes back
            assert_eq!(
                crate::punch::resolve_local(tz, got.local_time).timestamp(),
                secs
            );
        }
        assert_eq!(
            perr(&mut s, b"9,2026-03-02 08:00:00,0"),
            r#"time "2026-03-02 08:00:00" is not unix seconds: not an integer"#
        );
        assert_eq!(
            perr(&mut s, b"9,1772438400000,0"),
            r#"time "1772438400000" is not unix seconds: out of range (milliseconds?)"#
        );
    }

    #[test]
    fn state_words_map_and_unknowns() {
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "time", "state", "verify", "workcode"]));
            d.state_map = [(" C/In".to_string(), 0), ("C/Out".to_string(), 1)]
                .into_iter()
                .collect();
        });
        let mut s = p.session();
        let state = |s: &mut LineSession, st: &str| {
            let p = punch(s, format!("1,2026-03-02 08:00:00,{st}").as_bytes());
            (p.state, p.state_text)
        };
        assert_eq!(state(&mut s, "3"), (Some(3), None));
        assert_eq!(state(&mut s, " 255 "), (Some(255), None));
        assert_eq!(state(&mut s, "-1"), (Some(-1), None));
        assert_eq!(state(&mut s, " C/In"), (Some(0), None), "exact key");
        assert_eq!(state(&mut s, "C/In"), (Some(0), None), "trimmed");
        assert_eq!(state(&mut s, "C/Out  "), (Some(1), None), "trimmed");
        assert_eq!(
            state(&mut s, "c/out"),
            (None, Some("c/out".into())),
            "kept as written"
        );
        assert_eq!(state(&mut s, ""), (None, None));
        let p = punch(&mut s, b"1,2026-03-02 08:00:00,,,W1");
        assert_eq!((p.verify, p.workcode.as_deref()), (None, Some("W1")));
        assert_eq!(
            perr(&mut s, b"1,2026-03-02 08:00:00,0,fp"),
            r#"verify "fp" is not an integer"#
        );
    }

    #[test]
    fn invalid_configs_name_their_key() {
        let csv = |d: &mut TestDevice| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "time"]));
        };
        let pattern = |d: &mut TestDevice, p: &str| {
            d.format = LineFormat::Pattern;
            d.pattern = Some(p.into());
        };
        let cases: Vec<(FormatError, &str, &str)> = vec![
            (
                config_err(|d| pattern(d, r"(?P<user>\d+")),
                "pattern",
                "is not a valid regular expression: unclosed group",
            ),
            (
                config_err(|d| pattern(d, r"(?P<usr>\d+),(?P<time>.+)")),
                "pattern",
                "has no group named user",
            ),
            (
                config_err(|d| pattern(d, r"(?P<user>\d+),(.+)")),
                "pattern",
                "has no group named time",
            ),
            (
                config_err(|d| d.format = LineFormat::Pattern),
                "pattern",
                "missing: format = \"pattern\" needs",
            ),
            (
                config_err(|d| {
                    pattern(d, r"(?P<user>\d+),(?P<time>.+)");
                    d.columns = Some(strs(&["user", "time"]))
                }),
                "columns",
                "is not used with format = \"pattern\"",
            ),
            (
                config_err(|d| d.format = LineFormat::Csv),
                "columns",
                "missing: format = \"csv\" needs columns",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.columns = Some(strs(&["user", "tme"]))
                }),
                "columns",
                "has no time column",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.columns = Some(strs(&["user", "time", "User"]))
                }),
                "columns",
                "names user twice (columns 1 and 3)",
            ),
            (
                config_err(|d| d.columns = Some(strs(&["time", "state"]))),
                "columns",
                "has no user column",
            ),
            (
                config_err(|d| d.encoding = Some("gb-18030".into())),
                "encoding",
                "is not a known encoding label",
            ),
            (
                config_err(|d| d.encoding = Some("utf-16le".into())),
                "encoding",
                "is not supported",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.time_format = Some("%Y-%m-%d".into())
                }),
                "time_format",
                "cannot read back",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.time_format = Some("%Y-%m-%d %I:%M".into())
                }),
                "time_format",
                "cannot read back",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.time_format = Some("%Y-%m-%d %H:%M:%".into())
                }),
                "time_format",
                "is not a valid chrono format",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.time_format = Some(" ".into())
                }),
                "time_format",
                "is empty",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.columns = Some(strs(&["user", "date", "time"]));
                    d.time_format = Some("unix".into())
                }),
                "time_format",
                "cannot be combined with a date",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.delimiter = Some(", ".into())
                }),
                "delimiter",
                "must be exactly one character",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.delimiter = Some("\"".into())
                }),
                "delimiter",
                "cannot be a double quote",
            ),
            (
                config_err(|d| d.delimiter = Some(";".into())),
                "delimiter",
                "is only used with format = \"csv\"",
            ),
            (
                config_err(|d| d.header = true),
                "header",
                "is only used with format = \"csv\"",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.pattern = Some("x".into())
                }),
                "pattern",
                "is only used with format = \"pattern\"",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.state_map = [("1".to_string(), 0)].into_iter().collect()
                }),
                "state_map",
                "key \"1\" is a number",
            ),
            (
                config_err(|d| {
                    csv(d);
                    d.state_map = [("in".to_string(), 0), (" in".to_string(), 1)]
                        .into_iter()
                        .collect()
                }),
                "state_map",
                "the same word with different codes",
            ),
        ];
        for (e, key, reason) in cases {
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(reason), "{key}: {e}");
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
        // good ones
        parser(|d| d.encoding = Some("UTF-8".into()));
        parser(|d| d.encoding = Some("big5".into()));
        parser(|d| d.time_format = Some("%Y-%m-%d %H:%M:%S".into()));
        parser(|d| {
            csv(d);
            d.time_format = Some("%d/%m/%y %H:%M".into())
        });
        parser(|d| {
            csv(d);
            d.time_format = Some("%Y-%m-%dT%H:%M:%S%.f".into())
        });
    }

    #[test]
    fn check_config_names_the_device_key_and_value() {
        let base = r#"
[feishu]
app_id = "cli_test"
app_secret = "x"

[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "0.0.0.0:5005"
timezone = "Asia/Shanghai"
"#;
        let load = |extra: &str| {
            crate::config::Config::from_toml_with_env(
                &format!("{base}{extra}"),
                "t.toml",
                Vec::new(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            load("format = \"pattern\"\npattern = '(?P<usr>\\d+)'\n"),
            Err(r#"config key devices[0] (id "door-1").pattern: "(?P<usr>\d+)" has no group named user"#.into())
        );
        let e = load("format = \"csv\"\n").unwrap_err();
        assert!(
            e.starts_with("config key devices[0] (id \"door-1\").columns: missing: "),
            "{e}"
        );
        let e = load("encoding = \"klingon\"\n").unwrap_err();
        assert!(
            e.starts_with(
                r#"config key devices[0] (id "door-1").encoding: "klingon" is not a known"#
            ),
            "{e}"
        );
        let e = load("format = \"csv\"\ncolumns = [\"user\", \"when\"]\n").unwrap_err();
        assert!(
            e.starts_with(r#"config key devices[0] (id "door-1").columns: ["user", "when"] has no time column"#),
            "{e}"
        );
        let e = load("format = \"csv\"\ncolumns = [\"user\", \"time\"]\ndelimiter = \"\\t\\t\"\n")
            .unwrap_err();
        assert!(
            e.starts_with(r#"config key devices[0] (id "door-1").delimiter: "\t\t" must be"#),
            "{e}"
        );
        load("format = \"csv\"\ncolumns = [\"user\", \"time\"]\ndelimiter = \"\\t\"\nencoding = \"gb18030\"\n[devices.state_map]\n\"上班\" = 0\n").unwrap();
    }

    #[test]
    fn parse_line_needs_a_line_parser_for_csv_and_pattern() {
        let e = parse_line(LineFormat::Csv, "door-1", b"1,2026-03-02 08:00:00").unwrap_err();
        assert!(e.to_string().contains("parse it with a LineParser"), "{e}");
        assert!(parse_line(LineFormat::Pattern, "door-1", b"x").is_err());
    }

    #[test]
    fn every_format_refuses_blank_lines() {
        let parsers = [
            parser(|_| {}),
            parser(|d| d.columns = Some(strs(&["user", "time"]))),
            parser(|d| {
                d.format = LineFormat::Csv;
                d.columns = Some(strs(&["user", "time"]));
            }),
            parser(|d| {
                d.format = LineFormat::Csv;
                d.header = true;
            }),
            gb18030_parser(),
        ];
        for p in &parsers {
            for line in [&b" "[..], b"    ", b"\t \r", b"\r"] {
                assert!(p.session().parse(line).is_err(), "{:?}", p);
            }
        }
    }

    #[test]
    fn configured_formats_never_panic_on_garbage() {
        let parsers = [
            parser(|d| d.columns = Some(strs(&["user", "time", "verify", "state"]))),
            parser(|d| {
                d.format = LineFormat::Csv;
                d.columns = Some(strs(&["state", "date", "time", "user"]));
                d.time_format = Some("%d-%m-%Y %H:%M:%S".into());
            }),
            parser(|d| {
                d.format = LineFormat::Csv;
                d.delimiter = Some("；".into());
                d.header = true;
            }),
            parser(|d| {
                d.format = LineFormat::Csv;
                d.columns = Some(strs(&["user", "time"]));
                d.time_format = Some("unix".into());
            }),
            gb18030_parser(),
        ];
        let mut seed: u32 = 11;
        for p in &parsers {
            let mut s = p.session();
            for len in 0..3000 {
                let mut line = Vec::with_capacity(len % 64);
                for _ in 0..len % 64 {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let b = match (seed >> 29) & 7 {
                        0 => b'\t',
                        1 => b',',
                        2 => b'0' + ((seed >> 8) % 10) as u8,
                        3 => b'"',
                        4 => b'-',
                        _ => (seed >> 16) as u8,
                    };
                    line.push(b);
                }
                let _ = s.parse(&line);
                let _ = p.decode(&line);
            }
        }
    }

    #[test]
    fn parse_errors_are_lowercase_and_short() {
        let long = "x".repeat(5000);
        let csv = parser(|d| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "time", "state", "verify"]));
            d.time_format = Some("%d-%m-%Y %H:%M:%S".into());
        });
        let lines = [
            format!("1,{long}"),
            format!("{long} x,02-03-2026 08:00:00"),
            format!("1,02-03-2026 08:00:00,0,{long}"),
            format!("\"{long}"),
            "1".to_string(),
        ];
        for l in &lines {
            let e = perr(&mut csv.session(), l.as_bytes());
            assert!(e.len() < 200, "{e}");
            assert!(e.starts_with(|c: char| c.is_lowercase()), "{e}");
        }
    }

    /// `cargo test --release --lib formats::tests::csv_parse_rate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn csv_parse_rate() {
        let n = 1_000_000;
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{}\t{:02}-03-2026\t{:02}:{:02}:{:02}\t'{:07}\t01\t03\r",
                    1 + i % 4,
                    1 + i % 28,
                    i % 24,
                    i % 60,
                    (i / 60) % 60,
                    i % 5000
                )
            })
            .collect();
        for (label, time_format, cols) in [(
            "csv, chrono time format, date column",
            Some("%d-%m-%Y %H:%M:%S"),
            ["state", "date", "time", "user", "", ""],
        )] {
            let p = parser(|d| {
                d.format = LineFormat::Csv;
                d.delimiter = Some("\t".into());
                d.columns = Some(strs(&cols));
                d.time_format = time_format.map(str::to_string);
            });
            let mut s = p.session();
            let started = std::time::Instant::now();
            let mut ok = 0usize;
            for l in &lines {
                ok += usize::from(matches!(s.parse(l.as_bytes()), Ok(Some(_))));
            }
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(ok, n);
            println!("{label}: {:.0} lines/s", n as f64 / secs);
        }
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "\"{:04}\",\"Name {i}\",2026-03-02 {:02}:{:02}:{:02},in",
                    i % 5000,
                    i % 24,
                    i % 60,
                    (i / 60) % 60
                )
            })
            .collect();
        let p = parser(|d| {
            d.format = LineFormat::Csv;
            d.columns = Some(strs(&["user", "name", "time", "state"]));
            d.state_map = [("in".to_string(), 0)].into_iter().collect();
        });
        let mut s = p.session();
        let started = std::time::Instant::now();
        for l in &lines {
            assert!(matches!(s.parse(l.as_bytes()), Ok(Some(_))));
        }
        println!(
            "csv, quoted, standard time, state word: {:.0} lines/s",
            n as f64 / started.elapsed().as_secs_f64()
        );
        let lines: Vec<Vec<u8>> = (0..n)
            .map(|_| SERIAL_GB18030_SAMPLE[..36].to_vec())
            .collect();
        let p = gb18030_parser();
        let mut s = p.session();
        let started = std::time::Instant::now();
        for l in &lines {
            assert!(matches!(s.parse(l), Ok(Some(_))));
        }
        println!(
            "pattern, gb18030: {:.0} lines/s",
            n as f64 / started.elapsed().as_secs_f64()
        );
    }
}
