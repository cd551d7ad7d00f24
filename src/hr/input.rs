//! Reading HR files: JSON (one document: an object or an array), JSON Lines, and CSV with a header row.
//! Every unit read keeps the line it starts on, so every error names a line.
//!
//! The format comes from the extension (`.json`, `.jsonl` / `.ndjson`, `.csv`); without one of those,
//! a file whose first non-blank character is `{` or `[` is JSON (or JSON Lines), anything else CSV. A
//! `.json` file holding several documents one per line is read as JSON Lines. Text is UTF-8 (a
//! byte-order mark is ignored) unless another encoding is given (`--encoding gb18030`, `[inbox]
//! encoding`), for spreadsheets that save CSV in the system's code page.

use encoding_rs::Encoding;
use serde_json::Value;

use super::Issue;

/// One unit of input: a JSON value or a CSV row (header name → cell, both trimmed, empty cells left
/// out), with the line it starts on.
#[derive(Debug, Clone)]
pub enum Unit {
    Json {
        line: u64,
        value: Value,
    },
    Csv {
        line: u64,
        row: Vec<(String, String)>,
    },
}

impl Unit {
    pub fn line(&self) -> u64 {
        match self {
            Unit::Json { line, .. } | Unit::Csv { line, .. } => *line,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    JsonLines,
    Csv,
}

/// Splits `bytes` (the file named `name`, text in `encoding`) into units, or says what is wrong with
/// the file.
pub fn read_units(
    bytes: &[u8],
    name: &str,
    encoding: &'static Encoding,
) -> Result<Vec<Unit>, Vec<Issue>> {
    let decoded;
    let bytes = if encoding == encoding_rs::UTF_8 {
        bytes
    } else {
        decoded = decode(bytes, encoding)?;
        decoded.as_bytes()
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            return Err(vec![Issue::new(
                line,
                "the file is not UTF-8 text: save it as UTF-8 (CSV from a spreadsheet: \"CSV UTF-8\")",
            )]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lower = name.to_ascii_lowercase();
    let format = if lower.ends_with(".csv") {
        Format::Csv
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        Format::JsonLines
    } else if lower.ends_with(".json") {
        Format::Json
    } else {
        match text.trim_start().chars().next() {
            Some('{') | Some('[') => Format::Json,
            _ => Format::Csv,
        }
    };
    let units = match format {
        Format::Json => match serde_json::from_str::<Value>(text) {
            Ok(v) => json_document(text, v),
            // several documents: JSON Lines
            Err(e) if e.to_string().contains("trailing characters") => json_lines(text)?,
            Err(e) => {
                return Err(vec![Issue::new(
                    e.line() as u64,
                    format!("not valid JSON: {e}"),
                )])
            }
        },
        Format::JsonLines => json_lines(text)?,
        Format::Csv => csv_rows(text)?,
    };
    if units.is_empty() {
        return Err(vec![Issue::new(1, "the file holds no records")]);
    }
    Ok(units)
}

/// The text of a file in `encoding` (a byte-order mark of that encoding is dropped), or the first line
/// that is not valid in it.
fn decode(bytes: &[u8], encoding: &'static Encoding) -> Result<String, Vec<Issue>> {
    let (bytes, encoding) = match Encoding::for_bom(bytes) {
        Some((bom, len)) if bom == encoding => (&bytes[len..], encoding),
        _ => (bytes, encoding),
    };
    if let Some(text) = encoding.decode_without_bom_handling_and_without_replacement(bytes) {
        return Ok(text.into_owned());
    }
    let line = bytes
        .split(|b| *b == b'\n')
        .position(|l| {
            encoding
                .decode_without_bom_handling_and_without_replacement(l)
                .is_none()
        })
        .map(|i| i as u64 + 1)
        .unwrap_or(1);
    Err(vec![Issue::new(
        line,
        format!(
            "the file is not valid {} text: check the encoding it was saved in (--encoding, [inbox] encoding)",
            encoding.name()
        ),
    )])
}

/// One JSON document: an array gives one unit per element (each with its own line), anything else one.
fn json_document(text: &str, v: Value) -> Vec<Unit> {
    match v {
        Value::Array(items) => {
            let lines = array_element_lines(text);
            items
                .into_iter()
                .enumerate()
                .map(|(i, value)| Unit::Json {
                    line: lines.get(i).copied().unwrap_or(1),
                    value,
                })
                .collect()
        }
        value => {
            let offset = text.len() - text.trim_start().len();
            vec![Unit::Json {
                line: line_of(text, offset),
                value,
            }]
        }
    }
}

fn line_of(text: &str, offset: usize) -> u64 {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64
}

/// The line each element of a top-level JSON array starts on (the text is valid JSON).
fn array_element_lines(text: &str) -> Vec<u64> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let (mut depth, mut in_str, mut esc, mut line) = (0usize, false, false, 1u64);
    let mut expect_element = false;
    for &b in bytes {
        if b == b'\n' {
            line += 1;
        }
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if expect_element && !b.is_ascii_whitespace() && b != b']' {
            lines.push(line);
            expect_element = false;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expect_element = true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_element = true,
            _ => {}
        }
    }
    lines
}

fn json_lines(text: &str) -> Result<Vec<Unit>, Vec<Issue>> {
    let mut units = Vec::new();
    let mut issues = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(value) => units.push(Unit::Json { line, value }),
            Err(e) => issues.push(Issue::new(line, format!("not valid JSON: {e}"))),
        }
    }
    if issues.is_empty() {
        Ok(units)
    } else {
        Err(issues)
    }
}

/// The line a CSV record starting at `offset` is on (its position may include blank lines before it).
fn record_line(text: &str, mut offset: usize) -> u64 {
    let b = text.as_bytes();
    while offset < b.len() && (b[offset] == b'\n' || b[offset] == b'\r') {
        offset += 1;
    }
    line_of(text, offset)
}

fn csv_rows(text: &str) -> Result<Vec<Unit>, Vec<Issue>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(false)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.to_ascii_lowercase()).collect(),
        Err(e) => return Err(vec![Issue::new(1, format!("unreadable CSV header: {e}"))]),
    };
    if headers.iter().all(|h| h.is_empty()) {
        return Err(vec![Issue::new(
            1,
            "the first line must name the columns (see the README for each kind's CSV layout)",
        )]);
    }
    let mut seen = std::collections::HashSet::new();
    for h in &headers {
        if !h.is_empty() && !seen.insert(h) {
            return Err(vec![Issue::new(1, format!("column {h:?} appears twice"))]);
        }
    }
    let mut units = Vec::new();
    let mut issues = Vec::new();
    for rec in rdr.records() {
        match rec {
            Ok(r) => {
                // from the byte offset: the csv crate's line count skips blank lines
                let line = r
                    .position()
                    .map(|p| record_line(text, p.byte() as usize))
                    .unwrap_or(0);
                let row: Vec<(String, String)> = headers
                    .iter()
                    .zip(r.iter())
                    .filter(|(h, v)| !h.is_empty() && !v.is_empty())
                    .map(|(h, v)| (h.clone(), v.to_string()))
                    .collect();
                if row.is_empty() {
                    continue;
                }
                units.push(Unit::Csv { line, row });
            }
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| line_of(text, p.byte() as usize))
                    .unwrap_or(0);
                issues.push(Issue::new(line, format!("unreadable CSV row: {e}")));
            }
        }
    }
    if issues.is_empty() {
        Ok(units)
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::UTF_8;

    #[test]
    fn array_elements_keep_their_lines() {
        let text = "[\n  {\"a\": \"x,[y\"},\n  {\"b\": [1, 2]},\n\n  3\n]\n";
        let units = read_units(text.as_bytes(), "f.json", UTF_8).unwrap();
        let lines: Vec<u64> = units.iter().map(Unit::line).collect();
        assert_eq!(lines, vec![2, 3, 5]);
    }

    #[test]
    fn several_documents_are_json_lines() {
        let text = "{\"a\":1}\n\n{\"a\":2}\n";
        let units = read_units(text.as_bytes(), "f.json", UTF_8).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[1].line(), 3);
        let err = read_units(b"{\"a\":1}\n{\"a\":\n", "f.jsonl", UTF_8).unwrap_err();
        assert_eq!(err[0].line, 2);
    }

    #[test]
    fn csv_rows_carry_line_numbers_and_skip_empty_cells() {
        let text = "\u{feff}A,b\n1,\n\n x , y \n";
        let units = read_units(text.as_bytes(), "f.csv", UTF_8).unwrap();
        match &units[1] {
            Unit::Csv { line, row } => {
                assert_eq!(*line, 4);
                assert_eq!(
                    row,
                    &vec![("a".into(), "x".into()), ("b".into(), "y".into())]
                );
            }
            u => panic!("{u:?}"),
        }
        match &units[0] {
            Unit::Csv { row, .. } => assert_eq!(row.len(), 1),
            u => panic!("{u:?}"),
        }
    }

    #[test]
    fn broken_files_are_refused_with_a_line() {
        assert_eq!(
            read_units(b"a,b\n\xff\xfe,1\n", "x.csv", UTF_8).unwrap_err()[0].line,
            2
        );
        assert!(read_units(b"", "x.json", UTF_8).is_err());
        assert!(read_units(b"a,b\n1,2,3\n", "x.csv", UTF_8).unwrap_err()[0]
            .message
            .contains("CSV"));
    }

    #[test]
    fn a_gb18030_csv_is_read_when_the_encoding_is_given_and_refused_when_not() {
        let text = "type,user_id,reason\nleave,u1,年假 家事\n";
        let (gbk, _, _) = encoding_rs::GB18030.encode(text);
        let units = read_units(&gbk, "a.csv", encoding_rs::GB18030).unwrap();
        match &units[0] {
            Unit::Csv { line, row } => {
                assert_eq!(*line, 2);
                assert!(row.contains(&("reason".to_string(), "年假 家事".to_string())));
            }
            u => panic!("{u:?}"),
        }
        let err = read_units(&gbk, "a.csv", UTF_8).unwrap_err();
        assert_eq!(err[0].line, 2);
        assert!(err[0].message.contains("not UTF-8"), "{:?}", err[0]);
        // bytes that are not GB18030 either: the line is named
        let err = read_units(b"a,b\n1,2\n\x81\x20,3\n", "x.csv", encoding_rs::GB18030).unwrap_err();
        assert_eq!(err[0].line, 3);
        assert!(
            err[0].message.contains("not valid gb18030 text"),
            "{:?}",
            err[0]
        );
    }
}
