//! The line session's tests: templates, escapes, acknowledgements after commits, polling.

use std::time::Instant;

use super::*;
use crate::ingest::{IngestItem, IngestOutcome};
use crate::sources::formats::LineFormat;
use crate::sources::test_support::context;
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::mpsc;

/// A guard against a hung test, not a synchronisation.
const GUARD: Duration = Duration::from_secs(20);

fn config() -> LineSpec {
    LineSpec {
        format: LineFormat::ZkAttlog,
        max_line_length: 64,
        ..LineSpec::default()
    }
}

/// Device `clock-1` with the line keys `cfg`, polled every `poll_secs`.
fn device(cfg: &LineSpec, poll_secs: u64, sink: PunchSink) -> Result<LineDevice, SetupError> {
    let ctx = SourceContext {
        poll_interval: Duration::from_secs(poll_secs),
        ..context("clock-1", sink)
    };
    LineDevice::new(&ctx, cfg)
}

fn line(pin: u32, minute: u32) -> String {
    format!("{pin:>9}\t2026-03-02 08:{minute:02}:00\t1\t1\t0\t0\t0\r\n")
}

async fn recv(rx: &mut mpsc::Receiver<IngestItem>) -> IngestItem {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("no punch arrived")
        .expect("sink closed")
}

/// Reads exactly `n` bytes from the clock's end.
async fn read_n(clock: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(GUARD, clock.read_exact(&mut buf))
        .await
        .expect("nothing written to the clock")
        .expect("read from the clock's end");
    buf
}

/// True when nothing is waiting to be read at the clock's end (polls the read once).
async fn nothing_written(clock: &mut DuplexStream) -> bool {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::ZERO, clock.read(&mut buf))
        .await
        .is_err()
}

struct Served {
    stats: Arc<DeviceStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<super::Served>,
}

fn serve(cfg: LineSpec) -> (Served, DuplexStream, mpsc::Receiver<IngestItem>) {
    serve_every(cfg, 5)
}

fn serve_every(
    cfg: LineSpec,
    poll_secs: u64,
) -> (Served, DuplexStream, mpsc::Receiver<IngestItem>) {
    let (sink, rx) = PunchSink::channel(16);
    let dev = device(&cfg, poll_secs, sink).unwrap();
    let (stats, shutdown) = (dev.stats.clone(), dev.shutdown.clone());
    let (ours, clock) = tokio::io::duplex(4096);
    let task = tokio::spawn(async move { dev.serve(ours, "test").await });
    (
        Served {
            stats,
            shutdown,
            task,
        },
        clock,
        rx,
    )
}

impl Served {
    async fn stop(self) -> super::Served {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("serve did not stop")
            .expect("serve panicked")
    }
}

#[test]
fn unescape_resolves_every_escape() {
    assert_eq!(unescape("plain").unwrap(), b"plain");
    assert_eq!(unescape("").unwrap(), b"");
    assert_eq!(unescape(r"a\r\n\t\\b").unwrap(), b"a\r\n\t\\b".as_slice());
    assert_eq!(
        unescape(r"\x00\x7f\xFF\x0d").unwrap(),
        [0, 0x7f, 0xff, 0x0d]
    );
    assert_eq!(unescape(r"\\x41").unwrap(), br"\x41".as_slice());
    assert_eq!(unescape("上班\\n").unwrap(), "上班\n".as_bytes());
}

#[test]
fn unescape_rejects_invalid_escapes_naming_them() {
    let e = unescape(r"ab\q").unwrap_err();
    assert!(e.starts_with("escape \"\\q\" at character 2"), "{e}");
    assert!(e.contains(r"\r, \n, \t, \\, \xNN"), "{e}");
    let e = unescape(r"\x4").unwrap_err();
    assert!(e.contains("\\x4") && e.contains("two hex digits"), "{e}");
    let e = unescape(r"\xZZ").unwrap_err();
    assert!(e.contains("\\xZZ") && e.contains("two hex digits"), "{e}");
    let e = unescape(r"\x").unwrap_err();
    assert!(e.contains("two hex digits"), "{e}");
    let e = unescape("end\\").unwrap_err();
    assert!(e.starts_with("backslash at character 3"), "{e}");
    assert!(unescape(r"\0").is_err());
    assert!(unescape(r"\u{41}").is_err());
}

#[test]
fn unescape_in_an_encoding() {
    let gbk = Encoding::for_label(b"gb18030").unwrap();
    assert_eq!(unescape_in("上\\r", gbk, 0).unwrap(), [0xc9, 0xcf, b'\r']);
    let latin = Encoding::for_label(b"iso-8859-2").unwrap();
    let e = unescape_in("上", latin, 0).unwrap_err();
    assert!(e.contains("cannot be written"), "{e}");
}

fn punch(state: Option<i64>, state_text: Option<&str>) -> Punch {
    Punch {
        device_id: "clock-1".into(),
        device_user_id: "42".into(),
        local_time: "2026-03-02T08:01:00".parse().unwrap(),
        state,
        verify: None,
        workcode: None,
        state_text: state_text.map(String::from),
    }
}

#[test]
fn ack_template_placeholders_and_escapes() {
    let t = AckTemplate::parse(r"ACK {user} {time} [{state}] {line}\r\n").unwrap();
    assert!(t.uses_line());
    let got = t.render(&punch(Some(1), None), || "the line".into());
    assert_eq!(got, b"ACK 42 2026-03-02 08:01:00 [1] the line\r\n");
    let got = t.render(&punch(None, Some("上班")), || "x".into());
    assert_eq!(got, "ACK 42 2026-03-02 08:01:00 [上班] x\r\n".as_bytes());
    let got = t.render(&punch(None, None), || "x".into());
    assert_eq!(got, b"ACK 42 2026-03-02 08:01:00 [] x\r\n");

    // {line} is decoded only when used; a literal brace by escape
    let t = AckTemplate::parse(r"\x7bok\x7d{user}\x06").unwrap();
    assert!(!t.uses_line());
    let got = t.render(&punch(None, None), || panic!("not used"));
    assert_eq!(got, b"{ok}42\x06");

    // values in the clock's encoding
    let gbk = Encoding::for_label(b"gbk").unwrap();
    let t = AckTemplate::parse_in("{state}", gbk).unwrap();
    assert_eq!(
        t.render(&punch(None, Some("上")), || "".into()),
        [0xc9, 0xcf]
    );
}

#[test]
fn ack_template_errors_name_the_problem() {
    let e = AckTemplate::parse("OK {usr}").unwrap_err();
    assert!(e.starts_with("placeholder \"{usr}\" at character 3"), "{e}");
    assert!(e.contains("{user}, {time}, {state}, {line}"), "{e}");
    let e = AckTemplate::parse("ok {user").unwrap_err();
    assert!(
        e.starts_with("\"{\" at character 3 opens no placeholder"),
        "{e}"
    );
    let e = AckTemplate::parse(r"{user}\q").unwrap_err();
    assert!(e.starts_with("escape \"\\q\" at character 6"), "{e}");
    assert!(AckTemplate::parse("a } b").is_ok());
}

#[test]
fn bad_templates_stop_the_device_at_start_naming_the_key() {
    let (sink, _rx) = PunchSink::channel(1);
    let cfg = LineSpec {
        poll_command: Some(r"POLL\q".into()),
        ..config()
    };
    let e = device(&cfg, 5, sink.clone()).err().unwrap().to_string();
    assert!(e.starts_with("device clock-1: poll_command: escape"), "{e}");
    assert!(e.ends_with("fix it in the configuration"), "{e}");
    let cfg = LineSpec {
        ack_template: Some("{when}".into()),
        ..config()
    };
    let e = device(&cfg, 5, sink).err().unwrap().to_string();
    assert!(
        e.starts_with("device clock-1: ack_template: placeholder"),
        "{e}"
    );
}

#[tokio::test]
async fn ack_is_written_only_after_the_commit_and_never_for_a_failure() {
    let cfg = LineSpec {
        ack_template: Some(r"OK {user} {time}\r\n".into()),
        ..config()
    };
    let (served, mut clock, mut rx) = serve(cfg);
    clock.write_all(line(7, 1).as_bytes()).await.unwrap();
    clock.write_all(line(8, 2).as_bytes()).await.unwrap();

    // the first punch arrives; until it is answered, nothing goes back to the clock
    let first = recv(&mut rx).await;
    assert_eq!(first.punch.device_user_id, "7");
    assert!(nothing_written(&mut clock).await);
    first
        .ack
        .expect("an acknowledged punch waits for its commit")
        .send(IngestOutcome::Failed("disk full".into()))
        .unwrap();

    let second = recv(&mut rx).await;
    assert_eq!(second.punch.device_user_id, "8");
    // no acknowledgement for the failed one
    assert!(nothing_written(&mut clock).await);
    second.ack.unwrap().send(IngestOutcome::Queued).unwrap();
    let want = b"OK 8 2026-03-02 08:02:00\r\n";
    assert_eq!(read_n(&mut clock, want.len()).await, want);

    // a duplicate is committed too: acknowledged
    clock.write_all(line(8, 2).as_bytes()).await.unwrap();
    recv(&mut rx)
        .await
        .ack
        .unwrap()
        .send(IngestOutcome::Duplicate)
        .unwrap();
    assert_eq!(read_n(&mut clock, want.len()).await, want);

    assert!(nothing_written(&mut clock).await);
    assert_eq!(served.stats.acks_written.load(Ordering::Relaxed), 2);
    assert_eq!(served.stats.punches_read.load(Ordering::Relaxed), 3);
    let end = served.stop().await;
    assert!(matches!(end.end, End::Stopped), "{:?}", end.end);
    assert_eq!(end.lines, 3);
}

#[tokio::test]
async fn without_a_template_punches_are_not_held_for_their_commit() {
    let (served, mut clock, mut rx) = serve(config());
    for m in 0..3 {
        clock.write_all(line(1, m).as_bytes()).await.unwrap();
    }
    for _ in 0..3 {
        assert!(recv(&mut rx).await.ack.is_none());
    }
    assert!(nothing_written(&mut clock).await);
    served.stop().await;
}

#[tokio::test]
async fn lines_are_counted_and_garbage_is_skipped() {
    let (served, mut clock, mut rx) = serve(config());
    clock.write_all(b"garbage\n").await.unwrap();
    clock.write_all(&[b'x'; 200]).await.unwrap();
    clock.write_all(b"\n\xff\xfe\x00\n").await.unwrap();
    clock.write_all(line(3, 3).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.punch.device_user_id, "3");
    let s = &served.stats;
    assert_eq!(s.lines_read.load(Ordering::Relaxed), 4);
    assert_eq!(s.malformed.load(Ordering::Relaxed), 3);
    assert_eq!(s.punches_read.load(Ordering::Relaxed), 1);
    assert!(s.last_line_at.load(Ordering::Relaxed) > 0);
    assert_eq!(s.connections.load(Ordering::Relaxed), 1);
    drop(clock);
    let end = tokio::time::timeout(GUARD, served.task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end.end, End::Eof), "{:?}", end.end);
    assert_eq!(served.stats.connections.load(Ordering::Relaxed), 0);
    assert_eq!(served.stats.connects.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn poll_command_on_open_and_every_interval() {
    let cfg = LineSpec {
        poll_command: Some(r"GET\x20LOG\r\n".into()),
        ..config()
    };
    let (served, mut clock, mut rx) = serve_every(cfg, 1);
    let start = Instant::now();
    assert_eq!(read_n(&mut clock, 9).await, b"GET LOG\r\n");
    // lines are read between polls
    clock.write_all(line(4, 4).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.punch.device_user_id, "4");
    assert_eq!(read_n(&mut clock, 9).await, b"GET LOG\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    served.stop().await;
}

#[tokio::test]
async fn a_failing_poll_write_ends_the_connection() {
    let cfg = LineSpec {
        poll_command: Some("POLL\r".into()),
        ..config()
    };
    let (sink, _rx) = PunchSink::channel(1);
    let dev = device(&cfg, 5, sink).unwrap();
    // a stream whose write side is closed: every write fails
    let (ours, clock) = tokio::io::duplex(64);
    drop(clock);
    let served = tokio::time::timeout(GUARD, dev.serve(ours, "test"))
        .await
        .unwrap();
    // the poll is written on open, before anything is read: the write fails before EOF is seen
    match served.end {
        End::Write(e) => assert!(
            e.to_string().starts_with("cannot write the poll command"),
            "{e}"
        ),
        other => panic!("unexpected end {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_sink_ends_the_connection() {
    let (sink, rx) = PunchSink::channel(1);
    drop(rx);
    let dev = device(&config(), 5, sink).unwrap();
    let (ours, mut clock) = tokio::io::duplex(4096);
    clock.write_all(line(1, 1).as_bytes()).await.unwrap();
    let served = tokio::time::timeout(GUARD, dev.serve(ours, "test"))
        .await
        .unwrap();
    assert!(matches!(served.end, End::SinkClosed), "{:?}", served.end);
    dev.sink_closed();
    assert!(dev.stop().is_cancelled());
    assert!(dev
        .stats()
        .last_error()
        .unwrap()
        .contains("queue is closed"));
}

fn minute(item: &IngestItem) -> String {
    item.punch.local_time.format("%M").to_string()
}

#[tokio::test(start_paused = true)]
async fn nothing_more_is_read_while_the_storage_gate_is_closed() {
    let (sink, mut rx) = PunchSink::channel(16);
    let storage = sink.storage().clone();
    let dev = device(&config(), 5, sink).unwrap();
    let (stats, shutdown) = (dev.stats.clone(), dev.shutdown.clone());
    let (ours, mut clock) = tokio::io::duplex(4096);
    let task = tokio::spawn(async move { dev.serve(ours, "test").await });
    clock.write_all(line(1, 0).as_bytes()).await.unwrap();
    assert_eq!(minute(&recv(&mut rx).await), "00");
    // the session now waits in a read (the paused clock jumps ahead once every task idles)
    tokio::time::sleep(Duration::from_secs(1)).await;
    // a commit failed: the read already waiting takes one line, and no more
    storage.close("database or disk is full".into(), 0);
    let lines: String = (1..6).map(|m| line(1, m)).collect();
    clock.write_all(lines.as_bytes()).await.unwrap();
    assert_eq!(minute(&recv(&mut rx).await), "01");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        rx.try_recv().is_err(),
        "a punch was read behind a closed gate"
    );
    assert_eq!(stats.lines_read.load(Ordering::Relaxed), 2);
    // a commit succeeded: the rest is read, in order
    storage.reopen();
    for m in 2..6 {
        assert_eq!(minute(&recv(&mut rx).await), format!("{m:02}"));
    }
    assert_eq!(stats.lines_read.load(Ordering::Relaxed), 6);
    // a stop while waiting at the gate ends the connection at once, nothing counted as not kept
    storage.close("database or disk is full".into(), 0);
    clock.write_all(line(1, 9).as_bytes()).await.unwrap();
    assert_eq!(minute(&recv(&mut rx).await), "09");
    shutdown.cancel();
    let end = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert!(matches!(end.end, End::Stopped), "{:?}", end.end);
    assert!(storage.not_kept_so_far().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_punch_of_a_plain_clock_not_handed_over_at_a_stop_is_counted_as_lost() {
    // a channel of one, which nobody drains: the second punch cannot be handed over
    let (sink, _rx) = PunchSink::channel(1);
    let storage = sink.storage().clone();
    let dev = device(&config(), 5, sink).unwrap();
    let (stats, shutdown) = (dev.stats.clone(), dev.shutdown.clone());
    let (ours, mut clock) = tokio::io::duplex(4096);
    let task = tokio::spawn(async move { dev.serve(ours, "test").await });
    let lines: String = (0..2).map(|m| line(1, m)).collect();
    clock.write_all(lines.as_bytes()).await.unwrap();
    while stats.punches_read.load(Ordering::Relaxed) < 2 {
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    let end = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert!(matches!(end.end, End::Stopped), "{:?}", end.end);
    let t = storage.not_kept_so_far();
    assert_eq!(
        t["clock-1"],
        crate::ingest::NotKept {
            lost: 1,
            clock_keeps: 0
        }
    );
}
