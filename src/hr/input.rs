//! Reading HR files: JSON (one document: an object or an array), JSON Lines, and CSV with a header row.
//! Every unit read keeps the line it starts on, so every error names a line.
//!
//! The format comes from the extension (`.json`, `.jsonl` / `.ndjson`, `.csv`); without one of those,
//! a file whose first non-blank character is `{` or `[` is JSON (or JSON Lines), anything else CSV. A
//! `.json` file holding several documents one after the other is read as JSON Lines. Text is UTF-8 (a
//! byte-order mark is ignored) unless another encoding is given (`--encoding gb18030`, `[inbox]
//! encoding`), for spreadsheets that save CSV in the system's code page.
//!
//! Guarantees:
//! - **Streamed, in bounded memory.** [`Units`] reads a file front to back through a fixed buffer and
//!   holds one unit at a time: a CSV row, a JSON Lines line, one element of a top-level JSON array, or
//!   one JSON document. A unit larger than [`MAX_RECORD_BYTES`] is reported (with its line) and
//!   skipped without being held. Nothing here keeps the file, or the units already read.
//! - **Linear, with exact line numbers.** Every byte is looked at a fixed number of times: the line
//!   of a unit is counted as the bytes pass, never by searching back from the file's start.
//! - Text that is not valid in the file's encoding ends the reading with one problem naming the line.

use std::io::{BufRead, BufReader, Chain, Cursor, Read};

use encoding_rs::{Decoder, DecoderResult, Encoding};
use serde_json::Value;

use super::Issue;

/// The largest unit (CSV row, JSON Lines line, array element or JSON document) read, in bytes.
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// The most columns a CSV row may have.
const MAX_FIELDS: usize = 10_000;
/// Bytes read from the file at a time.
const CHUNK: usize = 64 << 10;

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

/// Why a unit could not be read: a problem of the file's content (reported with its line; reading
/// goes on unless the file cannot be read further), or a failure to read the file at all.
#[derive(Debug)]
pub enum Problem {
    Issue(Issue),
    Io(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    JsonLines,
    Csv,
}

/// Reads every unit of `bytes` (the file named `name`, text in `encoding`), or says what is wrong
/// with the file's form (the rules of each kind are checked elsewhere). For tests and small inputs:
/// files are read with [`Units`].
pub fn read_units(
    bytes: &[u8],
    name: &str,
    encoding: &'static Encoding,
) -> Result<Vec<Unit>, Vec<Issue>> {
    let mut units = Vec::new();
    let mut issues = Vec::new();
    for u in Units::new(bytes, name, encoding) {
        match u {
            Ok(u) => units.push(u),
            Err(Problem::Issue(i)) => issues.push(i),
            Err(Problem::Io(e)) => issues.push(Issue::new(0, format!("cannot read: {e}"))),
        }
    }
    if issues.is_empty() {
        Ok(units)
    } else {
        Err(issues)
    }
}

/// The text of the file as UTF-8, decoded from its encoding as it is read (a byte-order mark of that
/// encoding is dropped). Text that is not valid ends the stream with an error; the problem, with its
/// line, is kept in `issue`. Errors are sticky: every read after one fails the same way.
struct Decoded<R> {
    inner: R,
    decoder: Decoder,
    encoding: &'static Encoding,
    raw: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// The decoder has seen the end (it must not be used again).
    finished: bool,
    /// Newlines handed out so far.
    newlines: u64,
    issue: Option<Issue>,
    failed: Option<(std::io::ErrorKind, String)>,
}

impl<R: Read> Decoded<R> {
    fn new(inner: R, encoding: &'static Encoding) -> Decoded<R> {
        Decoded {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            encoding,
            raw: vec![0; CHUNK],
            start: 0,
            end: 0,
            eof: false,
            finished: false,
            newlines: 0,
            issue: None,
            failed: None,
        }
    }

    fn fail(&mut self, kind: std::io::ErrorKind, msg: String) -> std::io::Error {
        self.failed = Some((kind, msg.clone()));
        std::io::Error::new(kind, msg)
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(std::io::Error::new(*kind, msg.clone()));
        }
        // (every caller gives a buffer of kilobytes: room for any character)
        if self.finished {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.eof {
                match self.inner.read(&mut self.raw) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.start = 0;
                        self.end = n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.fail(e.kind(), e.to_string())),
                }
            }
            let (res, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.raw[self.start..self.end],
                out,
                self.eof,
            );
            self.start += read;
            self.newlines += out[..written].iter().filter(|b| **b == b'\n').count() as u64;
            match res {
                DecoderResult::InputEmpty if written == 0 && !self.eof => continue,
                DecoderResult::InputEmpty => {
                    self.finished = self.eof;
                    return Ok(written);
                }
                DecoderResult::OutputFull => return Ok(written),
                DecoderResult::Malformed(..) => {
                    let line = self.newlines + 1;
                    let message = if self.encoding == encoding_rs::UTF_8 {
                        "the file is not UTF-8 text: save it as UTF-8 (CSV from a spreadsheet: \"CSV UTF-8\")".to_string()
                    } else {
                        format!(
                            "the file is not valid {} text: check the encoding it was saved in (--encoding, [inbox] encoding)",
                            self.encoding.name()
                        )
                    };
                    self.issue = Some(Issue::new(line, message.clone()));
                    let e = self.fail(std::io::ErrorKind::InvalidData, message);
                    if written > 0 {
                        // hand out the valid text first; the error comes with the next read
                        return Ok(written);
                    }
                    return Err(e);
                }
            }
        }
    }
}

type Source<R> = BufReader<Chain<Cursor<Vec<u8>>, Decoded<R>>>;

/// The units of one file, read as a stream (see the module's guarantees). Each item is a unit or a
/// problem; after a problem that ends the reading (text not valid, a broken CSV header, a JSON
/// document that is not closed, a read error) the iterator ends.
pub struct Units<R> {
    src: Source<R>,
    /// The line of the next byte to be consumed (1-based).
    line: u64,
    state: State,
    done: bool,
    yielded_any: bool,
}

enum State {
    JsonLines { buf: Vec<u8> },
    Json(JsonScan),
    Csv(Box<CsvScan>),
}

impl<R: Read> Units<R> {
    /// Starts reading `inner` (the file named `name`, text in `encoding`).
    pub fn new(inner: R, name: &str, encoding: &'static Encoding) -> Units<R> {
        let mut decoded = Decoded::new(inner, encoding);
        // the first non-blank character decides the format when the name does not
        let mut head = Vec::new();
        let mut tmp = [0u8; 4096];
        let mut first = None;
        let mut bom_checked = false;
        while first.is_none() && head.len() < CHUNK {
            match decoded.read(&mut tmp) {
                // an error is kept by the decoder and comes again with the next read
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    head.extend_from_slice(&tmp[..n]);
                    if !bom_checked && head.len() >= 3 {
                        bom_checked = true;
                        if head.starts_with("\u{feff}".as_bytes()) {
                            head.drain(..3);
                        }
                    }
                    first = head.iter().copied().find(|b| !b.is_ascii_whitespace());
                }
            }
        }
        let lower = name.to_ascii_lowercase();
        let format = if lower.ends_with(".csv") {
            Format::Csv
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Format::JsonLines
        } else if lower.ends_with(".json") {
            Format::Json
        } else {
            match first {
                Some(b'{') | Some(b'[') => Format::Json,
                _ => Format::Csv,
            }
        };
        let state = match format {
            Format::JsonLines => State::JsonLines { buf: Vec::new() },
            Format::Json => State::Json(JsonScan::default()),
            Format::Csv => State::Csv(Box::new(CsvScan::new())),
        };
        Units {
            src: BufReader::with_capacity(CHUNK, Cursor::new(head).chain(decoded)),
            line: 1,
            state,
            done: false,
            yielded_any: false,
        }
    }

    /// The problem for a read error: the decoder's (with its line) or the file's.
    fn read_error(&mut self, e: std::io::Error) -> Problem {
        self.done = true;
        match self.src.get_mut().get_mut().1.issue.take() {
            Some(i) => Problem::Issue(i),
            None => Problem::Io(e),
        }
    }

    fn consume(&mut self, n: usize) {
        let buf = self.src.buffer();
        self.line += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.src.consume(n);
    }

    fn next_unit(&mut self) -> Option<Result<Unit, Problem>> {
        match &mut self.state {
            State::JsonLines { .. } => self.next_json_line(),
            State::Json(_) => self.next_json(),
            State::Csv(_) => self.next_csv(),
        }
    }

    // ------------------------------------------------------------------ JSON Lines

    fn next_json_line(&mut self) -> Option<Result<Unit, Problem>> {
        let State::JsonLines { buf } = &mut self.state else {
            unreachable!()
        };
        let mut buf = std::mem::take(buf);
        let result = loop {
            buf.clear();
            let line = self.line;
            let mut oversized = false;
            let mut end = false;
            loop {
                let chunk = match self.src.fill_buf() {
                    Ok(c) => c,
                    Err(e) => return Some(Err(self.read_error(e))),
                };
                if chunk.is_empty() {
                    end = true;
                    break;
                }
                let (take, newline) = match chunk.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                if buf.len() + take <= MAX_RECORD_BYTES {
                    buf.extend_from_slice(&chunk[..take]);
                } else {
                    oversized = true;
                }
                self.consume(take);
                if newline {
                    break;
                }
            }
            if oversized {
                break Some(Err(Problem::Issue(too_large(line))));
            }
            let text = buf.trim_ascii();
            if text.is_empty() {
                if end {
                    break None;
                }
                continue;
            }
            break Some(match serde_json::from_slice::<Value>(text) {
                Ok(value) => Ok(Unit::Json { line, value }),
                Err(e) => Err(Problem::Issue(json_error(line, &e, true))),
            });
        };
        if let State::JsonLines { buf: b } = &mut self.state {
            *b = buf;
        }
        result
    }

    // ------------------------------------------------------------------ JSON

    fn next_json(&mut self) -> Option<Result<Unit, Problem>> {
        loop {
            let line = self.line;
            let chunk = match self.src.fill_buf() {
                Ok(c) => c,
                Err(e) => return Some(Err(self.read_error(e))),
            };
            let State::Json(scan) = &mut self.state else {
                unreachable!()
            };
            if chunk.is_empty() {
                let out = scan.finish(line);
                if out.is_none() {
                    self.done = true;
                }
                return out;
            }
            let (used, out) = scan.feed(chunk, line);
            let fatal = scan.fatal;
            self.consume(used);
            if let Some(out) = out {
                if fatal {
                    self.done = true;
                }
                return Some(out);
            }
        }
    }

    // ------------------------------------------------------------------ CSV

    fn next_csv(&mut self) -> Option<Result<Unit, Problem>> {
        loop {
            // blank lines and comment lines between records: skipped here, so a row's line is the
            // line its first cell is on
            loop {
                let State::Csv(scan) = &mut self.state else {
                    unreachable!()
                };
                let in_comment = scan.in_comment;
                let chunk = match self.src.fill_buf() {
                    Ok(c) => c,
                    Err(e) => return Some(Err(self.read_error(e))),
                };
                if chunk.is_empty() {
                    break;
                }
                let mut n = 0;
                let mut comment = in_comment;
                let mut at_record = false;
                for &b in chunk {
                    if comment {
                        n += 1;
                        if b == b'\n' {
                            comment = false;
                        }
                    } else if b == b'\n' || b == b'\r' {
                        n += 1;
                    } else if b == b'#' {
                        comment = true;
                        n += 1;
                    } else {
                        at_record = true;
                        break;
                    }
                }
                self.consume(n);
                if let State::Csv(scan) = &mut self.state {
                    scan.in_comment = comment;
                }
                if at_record {
                    break;
                }
            }
            let line = self.line;
            let (fields, oversized, end) = match self.csv_record() {
                Ok(r) => r,
                Err(e) => return Some(Err(self.read_error(e))),
            };
            let State::Csv(scan) = &mut self.state else {
                unreachable!()
            };
            if end {
                if scan.headers.is_none() {
                    self.done = true;
                    return Some(Err(Problem::Issue(Issue::new(
                        1,
                        "the first line must name the columns (see the README for each kind's CSV layout)",
                    ))));
                }
                return None;
            }
            if oversized {
                if scan.headers.is_none() {
                    self.done = true;
                }
                return Some(Err(Problem::Issue(too_large(line))));
            }
            let cells = match scan.cells(fields) {
                Ok(c) => c,
                Err(_) => {
                    return Some(Err(Problem::Issue(Issue::new(
                        line,
                        "unreadable CSV row: not valid UTF-8",
                    ))))
                }
            };
            let Some(headers) = &scan.headers else {
                // the header row
                let headers: Vec<String> = cells.iter().map(|s| s.to_ascii_lowercase()).collect();
                if headers.iter().all(|h| h.is_empty()) {
                    self.done = true;
                    return Some(Err(Problem::Issue(Issue::new(
                        line,
                        "the first line must name the columns (see the README for each kind's CSV layout)",
                    ))));
                }
                let mut seen = std::collections::HashSet::new();
                for h in &headers {
                    if !h.is_empty() && !seen.insert(h) {
                        self.done = true;
                        return Some(Err(Problem::Issue(Issue::new(
                            line,
                            format!("column {h:?} appears twice"),
                        ))));
                    }
                }
                scan.headers = Some(headers);
                continue;
            };
            if cells.len() != headers.len() {
                return Some(Err(Problem::Issue(Issue::new(
                    line,
                    format!(
                        "unreadable CSV row: it has {} field{}, but the header has {}",
                        cells.len(),
                        if cells.len() == 1 { "" } else { "s" },
                        headers.len()
                    ),
                ))));
            }
            let row: Vec<(String, String)> = headers
                .iter()
                .zip(cells)
                .filter(|(h, v)| !h.is_empty() && !v.is_empty())
                .map(|(h, v)| (h.clone(), v.to_string()))
                .collect();
            if row.is_empty() {
                continue;
            }
            return Some(Ok(Unit::Csv { line, row }));
        }
    }

    /// Reads one CSV record into the scanner's buffers: (fields, too large, end of data).
    fn csv_record(&mut self) -> std::io::Result<(usize, bool, bool)> {
        use csv_core::ReadRecordResult as R;
        let (mut outlen, mut endlen, mut oversized) = (0usize, 0usize, false);
        loop {
            let State::Csv(scan) = &mut self.state else {
                unreachable!()
            };
            let input = self.src.fill_buf()?;
            let at_end = input.is_empty();
            let (res, nin, nout, nend) =
                scan.rdr
                    .read_record(input, &mut scan.out[outlen..], &mut scan.ends[endlen..]);
            outlen += nout;
            endlen += nend;
            match res {
                R::InputEmpty => {}
                R::OutputFull => {
                    if scan.out.len() >= MAX_RECORD_BYTES {
                        oversized = true;
                        (outlen, endlen) = (0, 0);
                    } else {
                        let n = (scan.out.len() * 2).min(MAX_RECORD_BYTES);
                        scan.out.resize(n, 0);
                    }
                }
                R::OutputEndsFull => {
                    if scan.ends.len() >= MAX_FIELDS {
                        oversized = true;
                        (outlen, endlen) = (0, 0);
                    } else {
                        let n = (scan.ends.len() * 2).min(MAX_FIELDS);
                        scan.ends.resize(n, 0);
                    }
                }
                R::Record => {
                    self.consume(nin);
                    return Ok((endlen, oversized, false));
                }
                // csv-core drops a byte-order mark at the start of its input, then takes what is
                // left of the buffer for the end of the input: when the buffer held the mark alone,
                // the file goes on
                R::End if !at_end && nin > 0 => {}
                R::End => {
                    self.consume(nin);
                    return Ok((0, false, true));
                }
            }
            self.consume(nin);
        }
    }
}

impl<R: Read> Iterator for Units<R> {
    type Item = Result<Unit, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let out = self.next_unit();
        match &out {
            None => {
                self.done = true;
                if !self.yielded_any {
                    self.yielded_any = true;
                    return Some(Err(Problem::Issue(Issue::new(
                        1,
                        "the file holds no records",
                    ))));
                }
            }
            Some(_) => self.yielded_any = true,
        }
        out
    }
}

fn too_large(line: u64) -> Issue {
    Issue::new(
        line,
        format!(
            "the record is larger than {} MiB: split it (an archived report body: one row per line, JSON Lines)",
            MAX_RECORD_BYTES >> 20
        ),
    )
}

/// A JSON error of a unit starting on `line` (the error's own line counts from the unit's start).
fn json_error(line: u64, e: &serde_json::Error, column: bool) -> Issue {
    let s = e.to_string();
    let msg = s.rfind(" at line ").map(|i| &s[..i]).unwrap_or(&s);
    let at = line + (e.line() as u64).saturating_sub(1);
    if column || e.line() > 1 {
        Issue::new(at, format!("not valid JSON: {msg} (column {})", e.column()))
    } else {
        Issue::new(at, format!("not valid JSON: {msg}"))
    }
}

mod json_scan;
use json_scan::JsonScan;

// ---------------------------------------------------------------------- CSV scanner

struct CsvScan {
    rdr: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    headers: Option<Vec<String>>,
    /// Inside a comment line between records (across buffer refills).
    in_comment: bool,
}

impl CsvScan {
    fn new() -> CsvScan {
        CsvScan {
            rdr: csv_core::ReaderBuilder::new().comment(Some(b'#')).build(),
            out: vec![0; 4096],
            ends: vec![0; 64],
            headers: None,
            in_comment: false,
        }
    }

    /// The trimmed cells of the record just read.
    fn cells(&self, n: usize) -> Result<Vec<&str>, std::str::Utf8Error> {
        let mut start = 0;
        let mut cells = Vec::with_capacity(n);
        for &end in &self.ends[..n] {
            cells.push(std::str::from_utf8(&self.out[start..end])?.trim());
            start = end;
        }
        Ok(cells)
    }
}

#[cfg(test)]
mod tests;
