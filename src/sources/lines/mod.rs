//! The one line splitter of clockbridge: byte streams from clocks (a TCP connection, a serial port)
//! and exported files (`clockbridge import`) are cut into lines by the same [`Splitter`], so a line
//! ends the same way whichever way it arrives.
//!
//! Clocks and serial-to-Ethernet converters end their lines with LF, CRLF or a lone CR, and a broken or
//! hostile peer can send anything: binary garbage, a line that never ends, a terminator split across two
//! reads. The splitter guarantees:
//!
//! - LF, CRLF and a lone CR each end a line; a CR followed by LF is one terminator, even when the two
//!   bytes arrive in different reads. Empty lines are skipped, but numbered: line numbers are those an
//!   editor shows ([`Found`] carries them).
//! - Memory is bounded by `max_len` plus the caller's read buffer, whatever the input: a line longer
//!   than `max_len` is never buffered beyond `max_len`; the rest of it is discarded up to the next
//!   terminator and reported once as too long, with its first `max_len` bytes (for a sample).
//! - At end of input, a trailing line without terminator is still returned (and
//!   [`Splitter::ended_mid_line`] says so).
//! - Any byte sequence is accepted without panicking; lines are bytes, decoding is the caller's job.
//! - Lines are found by scanning slices of the caller's buffer and handed out without copying, unless
//!   a line spans two reads.
//!
//! Two readers drive it: [`LineReader`] over any `AsyncRead` (the sources) and [`FileLines`] over a
//! `std::io::Read` (`import`).

mod file;
mod reader;

pub use file::{FileLine, FileLines};
pub use reader::{Line, LineReader, LineRef, READ_CHUNK};

/// Where a found line's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `buf[start..end]` of the buffer given to [`Splitter::next`].
    Buf(usize, usize),
    /// The splitter's own buffer ([`Splitter::held`]): the line spanned reads.
    Held,
}

/// A line found by the [`Splitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A non-empty line (number `no`, counting from 1 and counting empty lines), without its
    /// terminator.
    Text { no: u64, at: At },
    /// A line longer than the limit: `len_seen` bytes of it were seen (terminator excluded); `head`
    /// holds its first bytes (at most the limit).
    TooLong { no: u64, len_seen: usize, head: At },
}

/// The splitting state between reads; see the module documentation.
#[derive(Debug)]
pub struct Splitter {
    max_len: usize,
    /// The beginning of a line that spans reads (never longer than `max_len`).
    held: Vec<u8>,
    /// `held` was handed out by the previous call and must be cleared.
    held_returned: bool,
    /// Inside an over-long line: discard up to the next terminator.
    discarding: bool,
    /// Bytes of the over-long line seen so far.
    discarded: usize,
    /// The last terminator was a CR at the very end of a read: a LF first in the next read belongs to it.
    skip_lf: bool,
    /// The number of the next line.
    next_no: u64,
    /// The input ended inside a line.
    ended_mid_line: bool,
}

impl Splitter {
    /// A splitter of lines at most `max_len` bytes long (terminator excluded).
    pub fn new(max_len: usize) -> Splitter {
        Splitter {
            max_len,
            held: Vec::new(),
            held_returned: false,
            discarding: false,
            discarded: 0,
            skip_lf: false,
            next_no: 1,
            ended_mid_line: false,
        }
    }

    /// The next non-empty line in `buf[*pos..]`, moving `*pos` past it; `None` once `buf` is used up
    /// (the start of an unfinished line is kept for the next call).
    pub fn next(&mut self, buf: &[u8], pos: &mut usize) -> Option<Found> {
        self.release();
        loop {
            if *pos >= buf.len() {
                return None;
            }
            if self.skip_lf {
                self.skip_lf = false;
                if buf[*pos] == b'\n' {
                    *pos += 1;
                    continue;
                }
            }
            let start = *pos;
            let hay = &buf[start..];
            let Some(i) = hay.iter().position(|&b| b == b'\n' || b == b'\r') else {
                *pos = buf.len();
                self.hold(hay);
                return None;
            };
            let end = start + i;
            *pos = end + 1;
            if buf[end] == b'\r' {
                if *pos < buf.len() {
                    if buf[*pos] == b'\n' {
                        *pos += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            let no = self.next_no;
            self.next_no += 1;
            if self.discarding {
                self.discarding = false;
                let len_seen = self.discarded + i;
                self.discarded = 0;
                self.held_returned = true;
                return Some(Found::TooLong {
                    no,
                    len_seen,
                    head: At::Held,
                });
            }
            if self.held.is_empty() {
                if i == 0 {
                    continue; // an empty line: numbered, skipped
                }
                if i > self.max_len {
                    return Some(Found::TooLong {
                        no,
                        len_seen: i,
                        head: At::Buf(start, start + self.max_len),
                    });
                }
                return Some(Found::Text {
                    no,
                    at: At::Buf(start, end),
                });
            }
            let total = self.held.len() + i;
            self.held_returned = true;
            if total > self.max_len {
                self.top_up(&buf[start..end]);
                return Some(Found::TooLong {
                    no,
                    len_seen: total,
                    head: At::Held,
                });
            }
            self.push(&buf[start..end]);
            return Some(Found::Text { no, at: At::Held });
        }
    }

    /// End of input: the last line if it has no terminator (once; `None` afterwards).
    pub fn finish(&mut self) -> Option<Found> {
        self.release();
        let no = self.next_no;
        if self.discarding {
            self.discarding = false;
            let len_seen = self.discarded;
            self.discarded = 0;
            self.held_returned = true;
            self.ended_mid_line = true;
            self.next_no += 1;
            return Some(Found::TooLong {
                no,
                len_seen,
                head: At::Held,
            });
        }
        if self.held.is_empty() {
            return None;
        }
        self.held_returned = true;
        self.ended_mid_line = true;
        self.next_no += 1;
        Some(Found::Text { no, at: At::Held })
    }

    /// True once [`Splitter::finish`] has returned a line without terminator (a file cut short).
    pub fn ended_mid_line(&self) -> bool {
        self.ended_mid_line
    }

    /// The bytes of a found line (`buf` is the buffer given to [`Splitter::next`]).
    pub fn bytes<'a>(&'a self, buf: &'a [u8], at: At) -> &'a [u8] {
        match at {
            At::Buf(s, e) => &buf[s..e],
            At::Held => &self.held,
        }
    }

    /// The splitter's own buffer (a line that spanned reads).
    pub fn held(&self) -> &[u8] {
        &self.held
    }

    fn release(&mut self) {
        if self.held_returned {
            self.held_returned = false;
            self.held.clear();
        }
    }

    /// Keeps `piece`, the rest of the buffer, as the start of a line (or counts it as discarded).
    fn hold(&mut self, piece: &[u8]) {
        let n = piece.len();
        if self.discarding {
            self.discarded = self.discarded.saturating_add(n);
        } else if self.held.len() + n > self.max_len {
            self.discarding = true;
            self.discarded = self.held.len() + n;
            self.top_up(piece);
        } else {
            self.push(piece);
        }
    }

    /// Fills `held` with the start of `piece` up to `max_len` (the head of an over-long line).
    fn top_up(&mut self, piece: &[u8]) {
        let room = self.max_len.saturating_sub(self.held.len());
        self.push(&piece[..room.min(piece.len())]);
    }

    /// Appends `piece` to `held`, growing it (doubling) but never past `max_len` capacity.
    fn push(&mut self, piece: &[u8]) {
        let need = self.held.len() + piece.len();
        if need > self.held.capacity() {
            let want = need
                .max(self.held.capacity() * 2)
                .min(self.max_len)
                .max(need);
            self.held.reserve_exact(want - self.held.len());
        }
        self.held.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests;
