//! Splitting a JSON text into units as it streams past (see [`JsonScan`]).

use super::{json_error, too_large, Problem, Unit, MAX_RECORD_BYTES};
use crate::hr::Issue;
use serde_json::Value;

/// Splits a JSON text into units without parsing it: each top-level document, except that the
/// elements of a top-level array are units of their own. Only string, escape and nesting state is
/// kept; each unit's bytes are then parsed by serde_json.
#[derive(Default)]
pub(super) struct JsonScan {
    /// Inside a top-level array.
    in_array: bool,
    /// In an array: a `,` was seen and no element followed yet.
    after_comma: bool,
    /// In an array: an element was seen since the `[` or the last `,`.
    had_element: bool,
    /// The line the current array started on.
    array_line: u64,
    /// The unit being collected.
    cur: Option<Collect>,
    /// A problem that ends the reading was reported.
    pub(super) fatal: bool,
}

struct Collect {
    line: u64,
    buf: Vec<u8>,
    oversized: bool,
    depth: usize,
    in_str: bool,
    esc: bool,
    /// A number, `true`, `false` or `null`: ends at the first byte that cannot continue it.
    scalar: bool,
}

impl JsonScan {
    /// Looks at `chunk` (starting on `line`): the bytes used, and a unit or problem when one ended.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        mut line: u64,
    ) -> (usize, Option<Result<Unit, Problem>>) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if let Some(c) = &mut self.cur {
                // collecting a value
                let ended = if c.scalar {
                    if b.is_ascii_whitespace()
                        || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b'"')
                    {
                        Some(i) // this byte is not part of it
                    } else {
                        None
                    }
                } else if c.in_str {
                    match (c.esc, b) {
                        (true, _) => c.esc = false,
                        (false, b'\\') => c.esc = true,
                        (false, b'"') => c.in_str = false,
                        _ => {}
                    }
                    (c.depth == 0 && !c.in_str).then_some(i + 1)
                } else {
                    match b {
                        b'"' => c.in_str = true,
                        b'[' | b'{' => c.depth += 1,
                        b']' | b'}' => c.depth = c.depth.saturating_sub(1),
                        _ => {}
                    }
                    (c.depth == 0).then_some(i + 1)
                };
                match ended {
                    None => {
                        push(c, b);
                        if b == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    Some(end) => {
                        // (a value never ends on a newline it contains)
                        if end > i {
                            push(c, b);
                        }
                        let c = self.cur.take().expect("collecting");
                        return (end, Some(finish_value(c)));
                    }
                }
                continue;
            }
            if b.is_ascii_whitespace() {
                if b == b'\n' {
                    line += 1;
                }
                i += 1;
                continue;
            }
            if self.in_array {
                match b {
                    b']' => {
                        self.in_array = false;
                        let trailing = self.after_comma;
                        self.after_comma = false;
                        if trailing {
                            return (
                                i + 1,
                                Some(Err(Problem::Issue(Issue::new(
                                    line,
                                    "not valid JSON: a `,` is followed by `]` (a trailing comma)",
                                )))),
                            );
                        }
                        i += 1;
                        continue;
                    }
                    b',' => {
                        if self.after_comma || !self.had_element {
                            self.after_comma = true;
                            return (
                                i + 1,
                                Some(Err(Problem::Issue(Issue::new(
                                    line,
                                    "not valid JSON: expected a value before `,`",
                                )))),
                            );
                        }
                        self.after_comma = true;
                        self.had_element = false;
                        i += 1;
                        continue;
                    }
                    _ => {
                        if self.had_element {
                            self.fatal = true;
                            return (
                                i,
                                Some(Err(Problem::Issue(Issue::new(
                                    line,
                                    "not valid JSON: expected `,` or `]` between the array's elements",
                                )))),
                            );
                        }
                        self.had_element = true;
                        self.after_comma = false;
                    }
                }
            } else if b == b'[' {
                self.in_array = true;
                self.had_element = false;
                self.after_comma = false;
                self.array_line = line;
                i += 1;
                continue;
            } else if matches!(b, b']' | b'}' | b',' | b':') {
                self.fatal = true;
                return (
                    i + 1,
                    Some(Err(Problem::Issue(Issue::new(
                        line,
                        format!("not valid JSON: unexpected `{}`", b as char),
                    )))),
                );
            }
            // a value starts here
            let mut c = Collect {
                line,
                buf: Vec::new(),
                oversized: false,
                depth: 0,
                in_str: false,
                esc: false,
                scalar: false,
            };
            match b {
                b'{' | b'[' => c.depth = 1,
                b'"' => c.in_str = true,
                _ => c.scalar = true,
            }
            push(&mut c, b);
            self.cur = Some(c);
            i += 1;
        }
        (i, None)
    }

    /// The end of the text: the last value, or what is left open.
    pub(super) fn finish(&mut self, line: u64) -> Option<Result<Unit, Problem>> {
        if let Some(c) = self.cur.take() {
            if c.scalar {
                return Some(finish_value(c));
            }
            let start = c.line;
            self.in_array = false;
            return Some(Err(Problem::Issue(match finish_value(c) {
                Err(Problem::Issue(i)) => i,
                _ => Issue::new(start, "not valid JSON: the text ends inside a value"),
            })));
        }
        if self.in_array {
            self.in_array = false;
            return Some(Err(Problem::Issue(Issue::new(
                line,
                format!(
                    "not valid JSON: the array that starts on line {} is not closed with `]`",
                    self.array_line
                ),
            ))));
        }
        None
    }
}

fn push(c: &mut Collect, b: u8) {
    if c.buf.len() < MAX_RECORD_BYTES {
        c.buf.push(b);
    } else {
        c.oversized = true;
    }
}

fn finish_value(c: Collect) -> Result<Unit, Problem> {
    if c.oversized {
        return Err(Problem::Issue(too_large(c.line)));
    }
    match serde_json::from_slice::<Value>(&c.buf) {
        Ok(value) => Ok(Unit::Json {
            line: c.line,
            value,
        }),
        Err(e) => Err(Problem::Issue(json_error(c.line, &e, false))),
    }
}
