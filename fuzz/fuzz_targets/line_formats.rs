//! Line clocks (`tcp`, `serial`, `import`): bytes cut into lines by the one splitter, each line read
//! by a device's configured format, each punch normalised into a queue record.
//!
//! Input: one byte choosing a device profile (format, columns, header, pattern, encoding, time_format,
//! state_map), one choosing the read size and line limit, one the time zone; the rest is the stream.
//!
//! Checked beyond "no panic":
//! - the lines are the same whatever the read size (every boundary of a read is tried);
//! - a punch has the device's id, a non-empty user without spaces or control characters, and with the
//!   standard time format the very `YYYY-MM-DD HH:MM:SS` text of the line (its quotes aside);
//! - its queue record has the punch's 32-hex-digit key and a JSON payload naming it;
//! - its acknowledgement (`ack_template` with every placeholder, in the clock's encoding) ends with the
//!   template's one CR LF and holds no other: a line cannot make the bridge send a second answer;
//! - an error message and a log sample hold no control character (no forged log lines) and stay short;
//! - the sources' reader ([`LineReader`], TCP and serial) finds the same lines as the file reader
//!   ([`FileLines`], `import`), whatever the size of the stream's reads.

#![no_main]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use clockbridge::feishu::lanes::user_flows;
use clockbridge::punch::normalise;
use clockbridge::sources::formats::{sample, LineFormat, LineParser, SAMPLE_MAX};
use clockbridge::sources::line_spec::LineSpec;
use clockbridge::sources::lines::{FileLines, Line, LineReader};
use clockbridge::sources::session::AckTemplate;
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

const DEVICE: &str = "fuzz-1";

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn words() -> BTreeMap<String, i64> {
    [("上班", 0), ("下班", 1), ("IN", 0), ("OUT", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The device profiles: every format, layout, encoding and time format.
fn profile(n: usize) -> LineSpec {
    let mut d = LineSpec::default();
    match n {
        // zk-attlog as clocks send it (the fast reader)
        0 => {}
        // zk-attlog with swapped state and verify
        1 => d.columns = strs(&["user", "time", "verify", "state"]),
        // zk-attlog in GB18030 with state words and a day-first time
        2 => {
            d.encoding = Some("gb18030".into());
            d.state_map = words();
            d.time_format = Some("%d.%m.%Y %H:%M:%S".into());
        }
        // tab-separated export with a date column (seeds/line_formats/tab-ddmmyyyy.txt)
        3 => {
            d.format = LineFormat::Csv;
            d.delimiter = Some("\t".into());
            d.columns = strs(&["state", "date", "time", "user", "", ""]);
            d.time_format = Some("%d-%m-%Y %H:%M:%S".into());
        }
        // a serial clock's GB18030 csv with words (seeds/line_formats/serial-gb18030.txt)
        4 => {
            d.format = LineFormat::Csv;
            d.encoding = Some("gb18030".into());
            d.columns = strs(&["user", "", "time", "state"]);
            d.state_map = words();
        }
        // csv whose first line names the columns
        5 => {
            d.format = LineFormat::Csv;
            d.header = true;
        }
        // csv with columns and a header row that may be missing
        6 => {
            d.format = LineFormat::Csv;
            d.header = true;
            d.columns = strs(&["user", "time", "state", "verify", "workcode"]);
        }
        // csv with Unix seconds
        7 => {
            d.format = LineFormat::Csv;
            d.delimiter = Some(";".into());
            d.columns = strs(&["user", "time", "state"]);
            d.time_format = Some("unix".into());
        }
        // a pattern with a date group and a minute-only time
        8 => {
            d.format = LineFormat::Pattern;
            d.pattern = Some(
                r"^\s*(?P<user>\S+)\s+(?P<date>\d{4}/\d{1,2}/\d{1,2})\s+(?P<time>\d{1,2}:\d{2})(?:\s+(?P<state>\S+))?(?:\s+(?P<verify>-?\d+))?".into(),
            );
            d.time_format = Some("%Y/%m/%d %H:%M".into());
            d.state_map = words();
        }
        // a pattern with Unix seconds and a work code
        9 => {
            d.format = LineFormat::Pattern;
            d.pattern = Some(r"U=(?P<user>[^,]*),T=(?P<time>[^,]*)(?:,W=(?P<workcode>.*))?".into());
            d.time_format = Some("unix".into());
        }
        // csv in Big5 with a header row and a 12-hour clock
        10 => {
            d.format = LineFormat::Csv;
            d.encoding = Some("big5".into());
            d.header = true;
            d.time_format = Some("%Y-%m-%d %I:%M:%S %p".into());
        }
        // csv in Shift_JIS, quoted fields, the standard time
        _ => {
            d.format = LineFormat::Csv;
            d.encoding = Some("shift_jis".into());
            d.columns = strs(&["", "user", "time", "state", "verify"]);
        }
    }
    d
}
const PROFILES: usize = 12;

const ZONES: [chrono_tz::Tz; 4] = [
    chrono_tz::Asia::Shanghai,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::UTC,
];

/// Every profile's parser in every zone, built once (a pattern is compiled once per device too).
fn parser(n: usize, zone: usize) -> &'static (LineParser, AckTemplate) {
    static PARSERS: OnceLock<Vec<(LineParser, AckTemplate)>> = OnceLock::new();
    let all = PARSERS.get_or_init(|| {
        (0..PROFILES)
            .flat_map(|n| ZONES.iter().map(move |tz| (n, *tz)))
            .map(|(n, tz)| {
                let spec = profile(n);
                let parser = LineParser::new(DEVICE, tz, &spec)
                    .unwrap_or_else(|e| panic!("profile {n} refused: {e}"));
                let enc = spec.encoding.as_deref().unwrap_or("utf-8");
                let enc =
                    encoding_rs::Encoding::for_label(enc.as_bytes()).expect("a known encoding");
                let ack = AckTemplate::parse_in(ACK, enc).expect("the template parses");
                (parser, ack)
            })
            .collect()
    });
    &all[n * ZONES.len() + zone]
}

/// An acknowledgement with every placeholder.
const ACK: &str = r"ACK {user}\t{time}\t{state}\t{line}\r\n";

/// A fixed "now", so that a run can be replayed.
fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_900_000_000, 0).expect("a valid time")
}

/// Every line of `data` (number, bytes, too long), read `chunk` bytes at a time.
fn lines(data: &[u8], max_len: usize, chunk: usize) -> Vec<(u64, Vec<u8>, Option<usize>)> {
    let mut lines = FileLines::with_chunk(data, max_len, chunk);
    let mut out = Vec::new();
    while let Some(l) = lines.next_line().expect("a slice cannot fail to read") {
        assert!(
            l.text.len() <= max_len,
            "line {} of {} bytes over the limit {max_len}",
            l.no,
            l.text.len()
        );
        out.push((l.no, l.text.to_vec(), l.too_long));
    }
    out
}

/// A stream that hands out at most `step` bytes per read, and never waits.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.data.len().min(this.step).min(buf.remaining());
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (its reads are all ready).
fn ready<T>(f: impl Future<Output = T>) -> T {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read of a slice waited"),
    }
}

/// The lines the sources read from a stream of `data` delivered `step` bytes at a time.
fn stream_lines(data: &[u8], max_len: usize, step: usize) -> Vec<Line> {
    ready(async {
        let mut reader = LineReader::new(Trickle { data, step }, max_len);
        let mut out = Vec::new();
        while let Some(l) = reader
            .next_line()
            .await
            .expect("a slice cannot fail to read")
        {
            out.push(l);
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let n = input.choose(PROFILES);
    let sizes = input.byte();
    let zone = input.choose(ZONES.len());
    let data = input.rest();
    let chunk = 1 + (sizes & 0x0f) as usize;
    let max_len = if sizes & 0x80 != 0 { 48 } else { 1024 };
    let spec = profile(n);
    let tz = ZONES[zone];
    let (parser, ack) = parser(n, zone);

    let found = lines(data, max_len, chunk);
    assert_eq!(
        found,
        lines(data, max_len, 1 << 16),
        "the lines depend on the read size"
    );
    let as_stream: Vec<Line> = found
        .iter()
        .map(|(_, text, too_long)| match too_long {
            Some(len_seen) => Line::TooLong {
                len_seen: *len_seen,
            },
            None => Line::Text(text.clone()),
        })
        .collect();
    assert_eq!(
        stream_lines(data, max_len, chunk),
        as_stream,
        "a stream's lines differ from a file's"
    );
    let mut numbers = found.iter().map(|(no, ..)| *no);
    if let Some(mut last) = numbers.next() {
        for no in numbers {
            assert!(no > last, "line numbers go back: {last} then {no}");
            last = no;
        }
    }

    let mut session = parser.session();
    for (no, line, too_long) in &found {
        let shown = sample(line);
        assert_loggable("sample", &shown);
        assert!(
            shown.chars().count() <= SAMPLE_MAX + 1,
            "sample too long: {shown}"
        );
        if too_long.is_some() {
            continue;
        }
        match session.parse(line) {
            Ok(None) => {}
            Ok(Some(p)) => {
                assert_eq!(p.device_id, DEVICE);
                assert!(!p.device_user_id.is_empty(), "line {no}: empty user");
                assert!(
                    !p.device_user_id
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()),
                    "line {no}: user {:?}",
                    p.device_user_id
                );
                if spec.time_format.is_none() {
                    // csv quotes may cut the text anywhere ("2026-03-02 08:0"1:02 is one field)
                    let text = parser.decode(line).replace('"', "");
                    let time = p.local_time.format("%Y-%m-%d %H:%M:%S").to_string();
                    assert!(text.contains(&time), "line {no}: {time} is not in {text:?}");
                }
                let answer = ack.render(&p, || parser.decode(line));
                assert!(
                    answer.ends_with(b"\r\n")
                        && answer.iter().filter(|&&b| b == b'\r' || b == b'\n').count() == 2,
                    "line {no}: acknowledgement {:?}",
                    sample(&answer)
                );
                let key = p.idempotent_key();
                let n = normalise(p, tz, "HQ", Some("u1"), now(), 3600);
                let rec = user_flows::record(&n);
                assert_eq!(rec.idem, key);
                assert!(key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()));
                assert!(rec.ukey.ends_with(&key));
                let payload: serde_json::Value = serde_json::from_str(&rec.payload)
                    .unwrap_or_else(|e| panic!("line {no}: payload {:?}: {e}", rec.payload));
                assert_eq!(payload["idempotent_id"], serde_json::json!(key));
            }
            Err(e) => {
                let message = e.to_string();
                assert_loggable("parse error", &message);
                assert!(
                    message.chars().count() <= 400,
                    "message too long: {message}"
                );
            }
        }
    }
});
