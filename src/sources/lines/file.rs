//! [`FileLines`]: the [`Splitter`] over a file (`clockbridge import`), with large reads and the line
//! numbers an editor shows.

use std::io::Read;

use super::{Found, Splitter};

/// Size of one read from the file.
const FILE_CHUNK: usize = 256 * 1024;

/// One line of a file, borrowed until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLine<'a> {
    /// Its number as an editor shows it (empty lines count).
    pub no: u64,
    /// The line (without terminator), or for a line longer than the limit its first bytes.
    pub text: &'a [u8],
    /// For a line longer than the limit: how long it was.
    pub too_long: Option<usize>,
}

/// Splits a file into numbered lines; see the module documentation of [`super`].
pub struct FileLines<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    splitter: Splitter,
    eof: bool,
}

impl<R: Read> FileLines<R> {
    /// Lines of `inner` at most `max_len` bytes long.
    pub fn new(inner: R, max_len: usize) -> Self {
        Self::with_chunk(inner, max_len, FILE_CHUNK)
    }

    /// With reads of `chunk` bytes (tests use tiny ones to reach every boundary).
    pub fn with_chunk(inner: R, max_len: usize, chunk: usize) -> Self {
        FileLines {
            inner,
            buf: vec![0; chunk.max(1)],
            start: 0,
            end: 0,
            splitter: Splitter::new(max_len),
            eof: false,
        }
    }

    /// The next non-empty line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> std::io::Result<Option<FileLine<'_>>> {
        let found = loop {
            if let Some(f) = self.splitter.next(&self.buf[..self.end], &mut self.start) {
                break Some(f);
            }
            if self.eof {
                break self.splitter.finish();
            }
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.start = 0;
            self.end = n;
            self.eof = n == 0;
        };
        Ok(found.map(|f| match f {
            Found::Text { no, at } => FileLine {
                no,
                text: self.splitter.bytes(&self.buf, at),
                too_long: None,
            },
            Found::TooLong { no, len_seen, head } => FileLine {
                no,
                text: self.splitter.bytes(&self.buf, head),
                too_long: Some(len_seen),
            },
        }))
    }

    /// True when the file's last line has no terminator (known once the end is reached).
    pub fn ended_mid_line(&self) -> bool {
        self.splitter.ended_mid_line()
    }
}
