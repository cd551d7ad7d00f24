//! A bounded line reader for byte streams from clocks (TCP now, serial ports and files later).
//!
//! Clocks and serial-to-Ethernet converters end their lines with LF, CRLF or a lone CR, and a broken or
//! hostile peer can send anything: binary garbage, a line that never ends, a terminator split across two
//! reads. [`LineReader`] turns any [`AsyncRead`] into lines with these guarantees:
//!
//! - LF, CRLF and a lone CR each end a line; a CR followed by LF is one terminator, even when the two
//!   bytes arrive in different reads. Empty lines are skipped.
//! - Memory is bounded by `max_len` plus one fixed read buffer ([`READ_CHUNK`] bytes), whatever the
//!   input: a line longer than `max_len` is never buffered beyond `max_len`; the rest of it is discarded
//!   up to the next terminator and reported once as [`Line::TooLong`].
//! - At end of input, a trailing line without terminator is still returned.
//! - Any byte sequence is accepted without panicking; lines are bytes, decoding is the caller's job.
//! - Reading is done in [`READ_CHUNK`]-byte reads and lines are found by scanning slices, so the cost
//!   per line is a slice scan, not an async call or a system call per byte.

use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Where the line found by [`LineReader::scan`] lives.
enum Found {
    /// `buf[start..end]`.
    InBuf(usize, usize),
    /// The whole of `partial`.
    InPartial,
    TooLong(usize),
    Eof,
}

/// Splits a byte stream into bounded lines; see the module documentation.
pub struct LineReader<R> {
    reader: R,
    max_len: usize,
    /// Read buffer, always `READ_CHUNK` long; `buf[start..end]` is not consumed yet.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The beginning of a line that spans reads (never longer than `max_len`).
    partial: Vec<u8>,
    /// `partial` was returned by the previous call and must be cleared.
    partial_returned: bool,
    /// Inside an over-long line: discard up to the next terminator.
    discarding: bool,
    /// Bytes of the over-long line seen so far.
    discarded: usize,
    /// The last terminator was a CR at the very end of a read: a LF first in the next read belongs to it.
    skip_lf: bool,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader of lines at most `max_len` bytes long (terminator excluded).
    pub fn new(reader: R, max_len: usize) -> Self {
        LineReader {
            reader,
            max_len,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            partial: Vec::new(),
            partial_returned: false,
            discarding: false,
            discarded: 0,
            skip_lf: false,
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
        Ok(match self.scan().await? {
            Found::InBuf(s, e) => Some(LineRef::Text(&self.buf[s..e])),
            Found::InPartial => Some(LineRef::Text(&self.partial)),
            Found::TooLong(len_seen) => Some(LineRef::TooLong { len_seen }),
            Found::Eof => None,
        })
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    async fn scan(&mut self) -> std::io::Result<Found> {
        if self.partial_returned {
            self.partial_returned = false;
            self.partial.clear();
        }
        loop {
            if self.start == self.end {
                if self.eof {
                    return Ok(self.finish());
                }
                // The only await point: everything before and after it leaves the state consistent.
                let n = self.reader.read(&mut self.buf).await?;
                self.start = 0;
                self.end = n;
                if n == 0 {
                    self.eof = true;
                }
                continue;
            }
            if self.skip_lf {
                self.skip_lf = false;
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                    continue;
                }
            }
            let hay = &self.buf[self.start..self.end];
            match hay.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    let seg_start = self.start;
                    let seg_end = self.start + i;
                    self.start = seg_end + 1;
                    if self.buf[seg_end] == b'\r' {
                        if self.start < self.end {
                            if self.buf[self.start] == b'\n' {
                                self.start += 1;
                            }
                        } else {
                            self.skip_lf = true;
                        }
                    }
                    if self.discarding {
                        self.discarding = false;
                        let len_seen = self.discarded + i;
                        self.discarded = 0;
                        return Ok(Found::TooLong(len_seen));
                    }
                    if self.partial.is_empty() {
                        if i == 0 {
                            continue; // empty line
                        }
                        if i > self.max_len {
                            return Ok(Found::TooLong(i));
                        }
                        return Ok(Found::InBuf(seg_start, seg_end));
                    }
                    let total = self.partial.len() + i;
                    if total > self.max_len {
                        self.partial.clear();
                        return Ok(Found::TooLong(total));
                    }
                    self.push_partial(seg_start, seg_end);
                    self.partial_returned = true;
                    return Ok(Found::InPartial);
                }
                None => {
                    let n = hay.len();
                    let (s, e) = (self.start, self.end);
                    self.start = self.end;
                    if self.discarding {
                        self.discarded = self.discarded.saturating_add(n);
                    } else if self.partial.len() + n > self.max_len {
                        self.discarding = true;
                        self.discarded = self.partial.len() + n;
                        self.partial.clear();
                    } else {
                        self.push_partial(s, e);
                    }
                }
            }
        }
    }

    /// End of input: hand out what is left, once.
    fn finish(&mut self) -> Found {
        if self.discarding {
            self.discarding = false;
            let len_seen = self.discarded;
            self.discarded = 0;
            return Found::TooLong(len_seen);
        }
        if !self.partial.is_empty() {
            self.partial_returned = true;
            return Found::InPartial;
        }
        Found::Eof
    }

    /// Appends `buf[s..e]` to `partial`, growing it (doubling) but never past `max_len` capacity.
    fn push_partial(&mut self, s: usize, e: usize) {
        let need = self.partial.len() + (e - s);
        if need > self.partial.capacity() {
            let want = need
                .max(self.partial.capacity() * 2)
                .min(self.max_len)
                .max(need);
            self.partial.reserve_exact(want - self.partial.len());
        }
        self.partial.extend_from_slice(&self.buf[s..e]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Yields the given chunks, one per read (a chunk larger than the caller's buffer is split).
    struct Chunks(VecDeque<Vec<u8>>);

    impl Chunks {
        fn new(chunks: &[&[u8]]) -> Self {
            Chunks(chunks.iter().map(|c| c.to_vec()).collect())
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if let Some(mut c) = self.0.pop_front() {
                let n = c.len().min(buf.remaining());
                buf.put_slice(&c[..n]);
                if n < c.len() {
                    self.0.push_front(c.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn all(chunks: &[&[u8]], max_len: usize) -> Vec<Line> {
        let mut r = LineReader::new(Chunks::new(chunks), max_len);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        // EOF is sticky
        assert_eq!(r.next_line().await.unwrap(), None);
        out
    }

    fn t(s: &str) -> Line {
        Line::Text(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn lf_crlf_and_cr_endings() {
        let got = all(&[b"a\nbb\r\nccc\rdddd\n"], 100).await;
        assert_eq!(got, vec![t("a"), t("bb"), t("ccc"), t("dddd")]);
    }

    #[tokio::test]
    async fn empty_lines_are_skipped() {
        let got = all(&[b"\n\r\n\r\ra\n\n\r\nb\r\r\n"], 100).await;
        assert_eq!(got, vec![t("a"), t("b")]);
    }

    #[tokio::test]
    async fn crlf_split_across_reads_is_one_terminator() {
        let got = all(&[b"one\r", b"\ntwo\r", b"\n", b"\r", b"three"], 100).await;
        assert_eq!(got, vec![t("one"), t("two"), t("three")]);
        // a CR at the end of a read followed by a line (no LF) still ends the line
        let got = all(&[b"one\r", b"two\n"], 100).await;
        assert_eq!(got, vec![t("one"), t("two")]);
    }

    #[tokio::test]
    async fn line_split_across_many_reads() {
        let got = all(&[b"ab", b"c", b"d\r", b"\ne", b"f"], 100).await;
        assert_eq!(got, vec![t("abcd"), t("ef")]);
    }

    #[tokio::test]
    async fn trailing_partial_line_at_eof() {
        assert_eq!(all(&[b"a\npartial"], 100).await, vec![t("a"), t("partial")]);
        assert_eq!(
            all(&[b"a\npar", b"tial"], 100).await,
            vec![t("a"), t("partial")]
        );
        assert_eq!(all(&[b""], 100).await, vec![]);
    }

    #[tokio::test]
    async fn exactly_max_len_is_accepted() {
        let got = all(&[b"12345\n123", b"45\n"], 5).await;
        assert_eq!(got, vec![t("12345"), t("12345")]);
    }

    #[tokio::test]
    async fn over_long_line_is_discarded_and_next_line_is_read() {
        let got = all(&[b"short\n0123456789abc\nnext\n"], 8).await;
        assert_eq!(
            got,
            vec![t("short"), Line::TooLong { len_seen: 13 }, t("next")]
        );
    }

    #[tokio::test]
    async fn over_long_line_across_reads_is_reported_once_and_not_buffered() {
        let big = vec![b'x'; 100_000];
        let mut r = LineReader::new(
            Chunks::new(&[b"ok\nxxx", &big, &big, b"yy\r", b"\nafter\n"]),
            64,
        );
        assert_eq!(r.next_line().await.unwrap(), Some(t("ok")));
        assert_eq!(
            r.next_line().await.unwrap(),
            Some(Line::TooLong { len_seen: 200_005 })
        );
        assert!(r.partial.capacity() <= 64, "{}", r.partial.capacity());
        assert_eq!(r.next_line().await.unwrap(), Some(t("after")));
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn over_long_line_growing_from_a_partial() {
        // the partial is within the limit until the terminator read makes it too long
        let got = all(&[b"abcdef", b"ghij\nk\n"], 8).await;
        assert_eq!(got, vec![Line::TooLong { len_seen: 10 }, t("k")]);
        // over-long trailing line at EOF
        let got = all(&[b"k\n", b"abcdef", b"ghij"], 8).await;
        assert_eq!(got, vec![t("k"), Line::TooLong { len_seen: 10 }]);
    }

    #[tokio::test]
    async fn binary_garbage_does_not_panic() {
        let mut seed: u32 = 0x1234_5678;
        let mut data = Vec::with_capacity(300_000);
        for _ in 0..300_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            data.push((seed >> 24) as u8);
        }
        for max_len in [0usize, 1, 16, 1024] {
            let chunks: Vec<&[u8]> = data.chunks(777).collect();
            let mut r = LineReader::new(Chunks::new(&chunks), max_len);
            let mut bytes = 0usize;
            while let Some(l) = r.next_line().await.unwrap() {
                match l {
                    Line::Text(v) => {
                        assert!(!v.is_empty() && v.len() <= max_len);
                        assert!(!v.contains(&b'\n') && !v.contains(&b'\r'));
                        bytes += v.len();
                    }
                    Line::TooLong { len_seen } => {
                        assert!(len_seen > max_len);
                        bytes += len_seen;
                    }
                }
            }
            let content = data.iter().filter(|&&b| b != b'\n' && b != b'\r').count();
            assert_eq!(bytes, content, "max_len {max_len}");
        }
    }

    #[tokio::test]
    async fn works_over_a_duplex_pipe() {
        let (mut w, r) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for i in 0..1000 {
                w.write_all(format!("line {i}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let mut r = LineReader::new(r, 32);
        let mut n = 0;
        while let Some(l) = r.next_line_ref().await.unwrap() {
            assert_eq!(l, LineRef::Text(format!("line {n}").as_bytes()));
            n += 1;
        }
        assert_eq!(n, 1000);
        writer.await.unwrap();
    }
}
