//! [`LineReader`]: the [`Splitter`] over any [`AsyncRead`] (a TCP connection, a serial port), reading
//! in [`READ_CHUNK`]-byte reads, so the cost per line is a slice scan, not an async call or a system
//! call per byte.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Found, Splitter};

/// Size of one read from the underlying stream.
pub const READ_CHUNK: usize = 8 * 1024;

/// One line read from a stream, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A non-empty line, without its terminator.
    Text(Vec<u8>),
    /// A line longer than the limit: it was discarded; `len_seen` bytes of it were seen (terminator
    /// excluded).
    TooLong { len_seen: usize },
}

/// One line read from a stream, borrowed from the reader's buffers until the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRef<'a> {
    /// A non-empty line, without its terminator.
    Text(&'a [u8]),
    /// A line longer than the limit: it was discarded; `len_seen` bytes of it were seen.
    TooLong { len_seen: usize },
}

impl LineRef<'_> {
    /// An owned copy.
    pub fn to_owned_line(self) -> Line {
        match self {
            LineRef::Text(t) => Line::Text(t.to_vec()),
            LineRef::TooLong { len_seen } => Line::TooLong { len_seen },
        }
    }
}

/// Splits a byte stream into bounded lines; see the module documentation of [`super`].
pub struct LineReader<R> {
    reader: R,
    /// Read buffer, always `READ_CHUNK` long; `buf[start..end]` is not consumed yet.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    pub(super) splitter: Splitter,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader of lines at most `max_len` bytes long (terminator excluded).
    pub fn new(reader: R, max_len: usize) -> Self {
        LineReader {
            reader,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            splitter: Splitter::new(max_len),
            eof: false,
        }
    }

    /// The next non-empty line, or `None` at end of input.
    ///
    /// Cancel-safe: dropping the future loses no data already read (it stays in the buffers).
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        Ok(self.next_line_ref().await?.map(LineRef::to_owned_line))
    }

    /// Like [`LineReader::next_line`], without copying the line: it borrows the reader's buffers.
    ///
    /// Cancel-safe, like [`LineReader::next_line`].
    pub async fn next_line_ref(&mut self) -> std::io::Result<Option<LineRef<'_>>> {
        let found = loop {
            if let Some(f) = self.splitter.next(&self.buf[..self.end], &mut self.start) {
                break Some(f);
            }
            if self.eof {
                break self.splitter.finish();
            }
            // The only await point: everything before and after it leaves the state consistent.
            let n = self.reader.read(&mut self.buf).await?;
            self.start = 0;
            self.end = n;
            self.eof = n == 0;
        };
        Ok(found.map(|f| match f {
            Found::Text { at, .. } => LineRef::Text(self.splitter.bytes(&self.buf, at)),
            Found::TooLong { len_seen, .. } => LineRef::TooLong { len_seen },
        }))
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }
}
