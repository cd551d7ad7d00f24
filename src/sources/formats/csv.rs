//! `format = "csv"`: the separator (`delimiter`), and the split of a line into fields with `csv-core`.

use super::*;

/// `delimiter`: one character; the two characters `\t` also mean a tab.
pub(super) fn parse_delimiter(d: Option<&str>) -> Result<char, FormatError> {
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

/// Spaces that surround fields.
pub(super) fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A csv field: spaces trimmed, then one leading apostrophe (a spreadsheet's text marker) removed.
pub(super) fn clean_csv(s: &str) -> &str {
    let s = s.trim_matches(is_space);
    s.strip_prefix('\'').unwrap_or(s)
}

/// Splits csv lines into fields with `csv-core` (quotes removed, `""` inside quotes read as `"`), and
/// keeps the fields of the last line.
///
/// On top of csv-core: a quoted field may be preceded by spaces (they are dropped); a quote that the
/// line never closes is an error ([`ParseError::UnterminatedQuote`]) rather than a field running to
/// the end; a delimiter of several bytes (`；`) is handed to csv-core as a control byte the line does
/// not hold.
#[derive(Debug)]
pub(super) struct CsvSplit {
    delim: char,
    /// The byte csv-core splits at, and the reader built for it.
    byte: u8,
    reader: csv_core::Reader,
    /// The fields of the last line, one after the other; field `i` ends at `ends[i]`.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The line with its delimiter replaced by `byte` (delimiters of several bytes).
    swapped: String,
}

/// Control bytes that stand in for a delimiter of several bytes (the first one the line lacks).
const STAND_INS: &[u8] = b"\x1f\x1e\x1d\x1c\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f";

impl CsvSplit {
    pub(super) fn new(delim: char) -> CsvSplit {
        let byte = if delim.is_ascii() {
            delim as u8
        } else {
            STAND_INS[0]
        };
        CsvSplit {
            delim,
            byte,
            reader: reader(byte),
            out: Vec::with_capacity(256),
            ends: Vec::with_capacity(16),
            swapped: String::new(),
        }
    }

    /// Splits `text` into fields, up to index `last`; returns the number of fields (at least
    /// `last + 2` when it stops early). The fields are then [`CsvSplit::field`].
    pub(super) fn split(&mut self, text: &str, last: usize) -> Result<usize, ParseError> {
        let mut input: &[u8] = if self.delim.is_ascii() {
            text.as_bytes()
        } else {
            let byte = STAND_INS
                .iter()
                .copied()
                .find(|b| !text.as_bytes().contains(b))
                .unwrap_or(STAND_INS[0]);
            if byte != self.byte {
                self.byte = byte;
                self.reader = reader(byte);
            }
            self.swapped.clear();
            for c in text.chars() {
                self.swapped
                    .push(if c == self.delim { byte as char } else { c });
            }
            self.swapped.as_bytes()
        };
        self.reader.reset();
        self.ends.clear();
        self.out.clear();
        self.out.resize(input.len() + 1, 0);
        let mut used = 0;
        // the line's end is fed as a terminator: a quote still open swallows it, which is how an
        // unterminated quote shows
        let mut fed_end = false;
        loop {
            let field = self.ends.len();
            if field > last {
                return Ok(field + 1);
            }
            // spaces before a quoted field are not part of it
            if self.byte != b' ' {
                let spaces = input.iter().take_while(|&&b| b == b' ').count();
                if input.get(spaces) == Some(&b'"') {
                    input = &input[spaces..];
                }
            }
            loop {
                if input.is_empty() {
                    if fed_end {
                        return Err(ParseError::UnterminatedQuote { column: field + 1 });
                    }
                    input = b"\n";
                    fed_end = true;
                }
                let (result, nin, nout) = self.reader.read_field(input, &mut self.out[used..]);
                input = &input[nin..];
                used += nout;
                match result {
                    csv_core::ReadFieldResult::InputEmpty => {}
                    csv_core::ReadFieldResult::OutputFull => {
                        let grown = self.out.len() * 2 + 8;
                        self.out.resize(grown, 0);
                    }
                    csv_core::ReadFieldResult::Field { record_end } => {
                        self.ends.push(used);
                        if record_end {
                            return Ok(self.ends.len());
                        }
                        break;
                    }
                    csv_core::ReadFieldResult::End => return Ok(self.ends.len()),
                }
            }
        }
    }

    /// Field `i` of the last line (empty when there is none).
    pub(super) fn field(&self, i: usize) -> &str {
        let Some(&end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        // csv-core only drops ASCII bytes (quotes, delimiters) from valid UTF-8: still valid
        std::str::from_utf8(&self.out[start..end]).unwrap_or_default()
    }

    /// The fields of the last line.
    pub(super) fn fields(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len()).map(|i| self.field(i))
    }
}

/// A csv-core reader splitting at `byte`, with one record per line (the line's end is the only
/// terminator; CR is data, the line splitter has taken line ends off).
fn reader(byte: u8) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(byte)
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build()
}
