//! Safe renderings of clock input for messages and logs: [`sample`] for a whole line, [`quote`] for a
//! field in an error.

use std::fmt::Write as _;

/// Longest part of a bad field quoted in a [`ParseError`] message, in characters.
pub(super) const QUOTE_MAX: usize = 40;

/// A field value for an error message: escaped, quoted, at most [`QUOTE_MAX`] characters of it.
pub(super) fn quote(s: &str) -> String {
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
pub(super) struct Sampler {
    out: String,
    /// Characters in `out`.
    chars: usize,
    /// Length of `out` at the last piece boundary that leaves room for the ellipsis.
    cut: usize,
}

impl Sampler {
    /// Adds `piece`, or ends the sample with `…` when it does not fit; false when full.
    pub(super) fn add(&mut self, piece: &str) -> bool {
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
pub(super) fn push_escaped(out: &mut String, c: char) {
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
pub(super) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}
