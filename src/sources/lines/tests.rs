//! The line splitter's tests: through the async reader (the sources) and the file reader (import).

use super::*;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

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
    assert!(
        r.splitter.held().len() <= 64 && r.splitter.held.capacity() <= 64,
        "{}",
        r.splitter.held.capacity()
    );
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

// ---- files (import): editor line numbers, over-long lines, a file cut mid-line ----

fn split(input: &[u8], max: usize) -> Vec<(u64, Result<String, usize>)> {
    // a tiny buffer exercises every chunk boundary
    let mut l = FileLines::with_chunk(input, max, 3);
    let mut out = Vec::new();
    while let Some(x) = l.next_line().unwrap() {
        out.push(match x.too_long {
            None => (x.no, Ok(String::from_utf8_lossy(x.text).into_owned())),
            Some(n) => (x.no, Err(n)),
        });
    }
    out
}

#[test]
fn lines_are_numbered_like_an_editor_across_endings_and_chunks() {
    let want = vec![
        (1, Ok("a".into())),
        (2, Ok("bb".into())),
        (4, Ok("ccc".into())),
        (5, Ok("d".into())),
        (7, Ok("e".into())),
    ];
    assert_eq!(split(b"a\r\nbb\n\nccc\rd\r\r\ne", 100), want);
    // the same in one read
    let mut l = FileLines::new(&b"a\r\nbb\n\nccc\rd\r\r\ne"[..], 100);
    let mut got = Vec::new();
    while let Some(x) = l.next_line().unwrap() {
        got.push((x.no, Ok(String::from_utf8_lossy(x.text).into_owned())));
    }
    assert_eq!(got, want);
}

#[test]
fn over_long_lines_are_reported_with_their_head_and_without_being_buffered() {
    let got = split(b"ok\n0123456789abcdef\nok2\n", 8);
    assert_eq!(got[0], (1, Ok("ok".into())));
    assert_eq!(got[1], (2, Err(16)));
    assert_eq!(got[2], (3, Ok("ok2".into())));
    for chunk in [3, 1024] {
        let mut l = FileLines::with_chunk(&b"0123456789abcdef\n"[..], 8, chunk);
        let x = l.next_line().unwrap().unwrap();
        assert_eq!(
            (x.text, x.too_long),
            (&b"01234567"[..], Some(16)),
            "{chunk}"
        );
    }
}

#[test]
fn a_file_cut_mid_line_is_detected() {
    let mut l = FileLines::new(&b"a\nb"[..], 10);
    while l.next_line().unwrap().is_some() {}
    assert!(l.ended_mid_line());
    let mut l = FileLines::new(&b"a\nb\r\n"[..], 10);
    while l.next_line().unwrap().is_some() {}
    assert!(!l.ended_mid_line());
    let mut l = FileLines::with_chunk(&b"a\n0123456789"[..], 4, 3);
    assert_eq!(l.next_line().unwrap().unwrap().text, b"a");
    assert_eq!(l.next_line().unwrap().unwrap().too_long, Some(10));
    assert!(l.next_line().unwrap().is_none());
    assert!(l.ended_mid_line());
}
