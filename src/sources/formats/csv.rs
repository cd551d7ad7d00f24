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

/// Splits a csv line at `delim`, handing each field up to index `last` to `put` (quotes removed, `""`
/// inside quotes read as `"`); returns the number of fields (at least `last + 2` when it stops early).
/// A quoted field may be surrounded by spaces; text after its closing quote is kept, as spreadsheets do.
pub(super) fn split_csv<'a>(
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
