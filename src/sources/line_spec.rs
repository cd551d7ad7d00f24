//! The keys of line clocks, shared by every kind that reads text lines (`tcp`, `serial`) and by
//! `import`: the line format (`format`, `encoding`, `delimiter`, `columns`, `header`, `pattern`,
//! `time_format`, `state_map`), the conversation (`poll_command`, `ack_template`) and the line limit
//! (`max_line_length`).
//!
//! This file is the keys as data only, and imports nothing of the sources: the format
//! ([`super::formats`]), the session ([`super::session`]) and the kind framework ([`super::kind`])
//! read it. Reading and checking the keys of a device is [`super::line_check`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

crate::choice_enum! {
    /// The line formats (`format = "..."`).
    pub enum LineFormat {
        ZkAttlog = "zk-attlog",
        Csv = "csv",
        Pattern = "pattern",
    }
}

/// The keys of [`LineSpec`].
pub const LINE_KEYS: &[&str] = &[
    "format",
    "encoding",
    "delimiter",
    "columns",
    "header",
    "pattern",
    "time_format",
    "state_map",
    "poll_command",
    "ack_template",
    "max_line_length",
];

/// How a line clock's lines are read and answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LineSpec {
    /// Line format: `zk-attlog`, `csv` or `pattern`.
    #[serde(default = "default_format")]
    pub format: LineFormat,
    /// Text encoding of the clock's lines: `utf-8` (default), `gb18030`, `gbk`, or any WHATWG label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// For `csv`: the field separator (one character; `"\t"` for tabs). Default `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// For `csv` (and to reorder `zk-attlog`): the meaning of each column, in order: `user`, `time`,
    /// `date`, `state`, `verify`, `workcode`, or `""` / `skip` for a column to ignore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// For `csv`: the first line (of each connection or file) names the columns.
    #[serde(default)]
    pub header: bool,
    /// For `pattern`: a regular expression with named groups `user` and `time` (and optionally `date`,
    /// `state`, `verify`, `workcode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// How `time` (or `date` + ` ` + `time`) is written: a chrono format such as `%d-%m-%Y %H:%M:%S`,
    /// or `unix` for Unix seconds. Default `%Y-%m-%d %H:%M:%S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_format: Option<String>,
    /// Words a clock uses for the punch state, mapped to state codes (e.g. `上班 = 0`, `下班 = 1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state_map: BTreeMap<String, i64>,
    /// For polled clocks: a command written on connect and every `poll_interval` (escapes `\r`,
    /// `\n`, `\t`, `\\`, `\xNN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_command: Option<String>,
    /// For clocks that expect an acknowledgement: written back for each record, only after it is
    /// committed to the queue. Placeholders `{user}`, `{time}` (device-local, `%Y-%m-%d %H:%M:%S`),
    /// `{state}`, `{line}` (the line as received); escapes as in `poll_command` (a literal `{` is
    /// `\\x7b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_template: Option<String>,
    /// Longest accepted line in bytes; longer lines are counted as malformed and skipped.
    #[serde(default = "default_max_line")]
    pub max_line_length: usize,
}

fn default_format() -> LineFormat {
    LineFormat::ZkAttlog
}
fn default_max_line() -> usize {
    1024
}

impl Default for LineSpec {
    fn default() -> Self {
        LineSpec {
            format: default_format(),
            encoding: None,
            delimiter: None,
            columns: None,
            header: false,
            pattern: None,
            time_format: None,
            state_map: BTreeMap::new(),
            poll_command: None,
            ack_template: None,
            max_line_length: default_max_line(),
        }
    }
}
