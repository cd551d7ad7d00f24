//! Unit tests of `sources/tcp/source.rs` (kept apart so the production file holds one topic).

use super::*;
use crate::ingest::{IngestItem, IngestOutcome, PunchSink};
use crate::punch::Punch;
use crate::sources::formats::LineFormat;
use crate::sources::line_spec::LineSpec;
use crate::sources::test_support::{context, Running};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A guard against a hung test, not a synchronisation.
const GUARD: Duration = Duration::from_secs(20);

fn device(mode: TcpMode, address: &str, max_line_length: usize) -> TcpSpec {
    TcpSpec {
        lines: LineSpec {
            format: LineFormat::ZkAttlog,
            max_line_length,
            ..LineSpec::default()
        },
        ..TcpSpec::new(mode, address)
    }
}

/// Starts device `door-1` (back-off up to 2 s).
fn start(spec: TcpSpec, sink: PunchSink) -> Running {
    start_every(spec, 5, sink)
}

/// [`start`], polled every `poll_secs`.
fn start_every(spec: TcpSpec, poll_secs: u64, sink: PunchSink) -> Running {
    let ctx = SourceContext {
        reconnect_max_secs: 2,
        poll_interval: Duration::from_secs(poll_secs),
        ..context("door-1", sink)
    };
    Running::start(&spec, ctx)
}

fn line(pin: u32, minute: u32) -> String {
    format!("{pin:>9}\t2026-03-02 08:{minute:02}:00\t0\t1\t0\t0\t0\r\n")
}

async fn recv(rx: &mut mpsc::Receiver<IngestItem>) -> Punch {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("no punch arrived")
        .expect("sink closed")
        .punch
}

fn key(p: &Punch) -> (String, String) {
    (p.device_user_id.clone(), p.local_time.to_string())
}

#[tokio::test]
async fn listen_mode_two_concurrent_clients() {
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
    let addr = dev.stats.wait_listening().await;
    assert!(addr.port() != 0);

    let mut clients = Vec::new();
    for pin in [1u32, 2] {
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for m in 0..50 {
                // small writes interleave the two clients
                s.write_all(line(pin, m).as_bytes()).await.unwrap();
            }
            s.shutdown().await.unwrap();
        }));
    }
    let mut got = BTreeSet::new();
    for _ in 0..100 {
        let p = recv(&mut rx).await;
        assert_eq!(p.device_id, "door-1");
        assert_eq!(
            (p.state, p.verify, p.workcode.clone()),
            (Some(0), Some(1), None)
        );
        got.insert(key(&p));
    }
    let mut want = BTreeSet::new();
    for pin in [1u32, 2] {
        for m in 0..50 {
            want.insert((pin.to_string(), format!("2026-03-02 08:{m:02}:00")));
        }
    }
    assert_eq!(got, want);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(dev.get(&dev.stats.punches_read), 100);
    assert_eq!(dev.get(&dev.stats.lines_read), 100);
    assert_eq!(dev.get(&dev.stats.malformed), 0);
    assert_eq!(dev.get(&dev.stats.connects), 2);
    assert!(dev.stats.last_line_at.load(Ordering::Relaxed) > 0);
    let stats = dev.stop().await;
    assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn malformed_and_over_long_lines_are_counted_and_skipped() {
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 64), sink);
    let addr = dev.stats.wait_listening().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut data = line(7, 1);
    data.push_str("this is not a punch\n");
    data.push_str(&"x".repeat(10_000));
    data.push('\n');
    data.push_str("\u{0}\u{1}garbage\t2026-99-99 99:99:99\n");
    data.push_str(&line(7, 2));
    s.write_all(data.as_bytes()).await.unwrap();

    let first = recv(&mut rx).await;
    assert_eq!(first.local_time.to_string(), "2026-03-02 08:01:00");
    let second = recv(&mut rx).await;
    assert_eq!(second.local_time.to_string(), "2026-03-02 08:02:00");
    assert_eq!(dev.get(&dev.stats.malformed), 3);
    s.write_all(b"\xff\xfe\n").await.unwrap();
    s.write_all(line(7, 3).as_bytes()).await.unwrap();
    let third = recv(&mut rx).await;
    assert_eq!(third.local_time.to_string(), "2026-03-02 08:03:00");
    assert_eq!(dev.get(&dev.stats.malformed), 4);
    assert_eq!(dev.get(&dev.stats.lines_read), 7);
    assert_eq!(dev.get(&dev.stats.punches_read), 3);
    // the connection is still open and usable
    s.write_all(line(7, 4).as_bytes()).await.unwrap();
    assert_eq!(
        recv(&mut rx).await.local_time.to_string(),
        "2026-03-02 08:04:00"
    );
    dev.stop().await;
}

#[tokio::test]
async fn connect_mode_reconnects_after_the_clock_closes() {
    let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = clock.local_addr().unwrap();
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);

    let (mut c1, _) = clock.accept().await.unwrap();
    for m in 0..3 {
        c1.write_all(line(5, m).as_bytes()).await.unwrap();
    }
    drop(c1);
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        got.insert(key(&recv(&mut rx).await));
    }

    let (mut c2, _) = clock.accept().await.unwrap();
    for m in 10..13 {
        c2.write_all(line(5, m).as_bytes()).await.unwrap();
    }
    for _ in 0..3 {
        got.insert(key(&recv(&mut rx).await));
    }
    let minutes: Vec<String> = got.iter().map(|(_, t)| t[14..16].to_string()).collect();
    assert_eq!(minutes, ["00", "01", "02", "10", "11", "12"]);
    assert_eq!(dev.get(&dev.stats.connects), 2);
    assert_eq!(dev.stats.connections.load(Ordering::Relaxed), 1);

    // shutdown closes the live connection
    let stats = dev.stop().await;
    assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(GUARD, c2.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
}

#[tokio::test]
async fn shutdown_stops_listener_and_open_connections() {
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
    let addr = dev.stats.wait_listening().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(line(9, 0).as_bytes()).await.unwrap();
    recv(&mut rx).await; // the connection is being served

    let stats = dev.stop().await;
    assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
    // the port is released: nobody accepts any more
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_stops_a_device_that_keeps_failing_to_connect() {
    // a port nobody listens on
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (sink, _rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);
    while dev.stats.last_error().is_none() {
        tokio::task::yield_now().await;
    }
    let e = dev.stats.last_error().unwrap();
    assert!(e.contains("door-1") && e.contains("cannot connect"), "{e}");
    assert_eq!(dev.get(&dev.stats.connects), 0);
    dev.stop().await;
}

#[tokio::test]
async fn bind_failure_is_recorded_and_retried() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap();
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Listen, &addr.to_string(), 1024), sink);
    while dev.stats.last_error().is_none() {
        tokio::task::yield_now().await;
    }
    let e = dev.stats.last_error().unwrap();
    assert!(e.contains("cannot listen on"), "{e}");
    drop(blocker);
    let bound = tokio::time::timeout(GUARD, dev.stats.wait_listening())
        .await
        .expect("bind was not retried");
    assert_eq!(bound, addr);
    assert_eq!(dev.stats.last_error(), None);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(line(3, 3).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "3");
    dev.stop().await;
}

#[tokio::test]
async fn closed_sink_stops_reading_but_not_the_task() {
    let (sink, rx) = PunchSink::channel(16);
    drop(rx);
    let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
    let addr = dev.stats.wait_listening().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(line(1, 1).as_bytes()).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
    let e = dev.stats.last_error().unwrap_or_default();
    assert!(e.contains("queue is closed"), "{e}");
    assert!(!dev.task.is_finished());
    dev.stop().await;
}

#[tokio::test]
async fn listen_mode_acknowledges_committed_punches() {
    let (sink, mut rx) = PunchSink::channel(16);
    let mut cfg = device(TcpMode::Listen, "127.0.0.1:0", 1024);
    cfg.lines.ack_template = Some(r"ACK {user} {time} {state}\r\n".into());
    let dev = start(cfg, sink);
    let addr = dev.stats.wait_listening().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(line(7, 1).as_bytes()).await.unwrap();
    s.write_all(line(8, 2).as_bytes()).await.unwrap();

    let first = tokio::time::timeout(GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.punch.device_user_id, "7");
    // not answered yet: nothing may have been written back
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::ZERO, s.read(&mut buf))
            .await
            .is_err(),
        "acknowledged before the commit"
    );
    first.ack.unwrap().send(IngestOutcome::Queued).unwrap();
    let want = b"ACK 7 2026-03-02 08:01:00 0\r\n";
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(GUARD, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);

    // a failed commit is not acknowledged: the next bytes are the third line's ack
    let second = tokio::time::timeout(GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    second
        .ack
        .unwrap()
        .send(IngestOutcome::Failed("disk full".into()))
        .unwrap();
    s.write_all(line(9, 3).as_bytes()).await.unwrap();
    let third = tokio::time::timeout(GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    third.ack.unwrap().send(IngestOutcome::Duplicate).unwrap();
    let want = b"ACK 9 2026-03-02 08:03:00 0\r\n";
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(GUARD, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(dev.get(&dev.stats.acks_written), 2);
    assert_eq!(dev.get(&dev.stats.punches_read), 3);
    dev.stop().await;
}

#[tokio::test]
async fn connect_mode_writes_the_poll_command_on_connect() {
    let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = clock.local_addr().unwrap();
    let (sink, mut rx) = PunchSink::channel(16);
    let mut cfg = device(TcpMode::Connect, &addr.to_string(), 1024);
    cfg.lines.poll_command = Some(r"POLL\r\n".into());
    let dev = start_every(cfg, 60, sink);
    let (mut c, _) = clock.accept().await.unwrap();
    let mut got = [0u8; 6];
    tokio::time::timeout(GUARD, c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"POLL\r\n");
    c.write_all(line(5, 5).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "5");
    dev.stop().await;
}

#[tokio::test]
async fn a_bad_ack_template_is_reported_and_the_device_idles() {
    let (sink, _rx) = PunchSink::channel(16);
    let mut cfg = device(TcpMode::Listen, "127.0.0.1:0", 1024);
    cfg.lines.ack_template = Some("{nope}".into());
    let dev = start(cfg, sink);
    tokio::time::timeout(GUARD, dev.stats.wait_for(|s| s.last_error().is_some()))
        .await
        .unwrap();
    let e = dev.stats.last_error().unwrap();
    assert!(
        e.starts_with("device door-1: ack_template: placeholder"),
        "{e}"
    );
    assert!(!dev.task.is_finished());
    dev.stop().await;
}

fn figures(dev: &Running) -> TcpFigures {
    dev.stats.snapshot().figures()
}

#[tokio::test]
async fn a_listening_device_refuses_connections_beyond_max_connections_and_counts_them() {
    let (sink, mut rx) = PunchSink::channel(16);
    let spec = TcpSpec {
        max_connections: 2,
        ..device(TcpMode::Listen, "127.0.0.1:0", 1024)
    };
    let dev = start(spec, sink);
    let addr = dev.stats.wait_listening().await;
    assert_eq!(
        figures(&dev),
        TcpFigures {
            max_connections: Some(2),
            connections_refused: Some(0),
            connections_closed_idle: Some(0),
            last_refused_at: None,
        }
    );
    // two clocks are served (each gets a punch through)
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(line(1, 1).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "1");
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(line(2, 2).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "2");

    // a third is closed at once, and counted before it is closed
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(GUARD, third.read(&mut buf))
        .await
        .expect("the connection beyond max_connections stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let f = figures(&dev);
    assert_eq!(f.connections_refused, Some(1));
    assert!(f.last_refused_at.is_some());
    assert_eq!(dev.stats.connections.load(Ordering::Relaxed), 2);

    // a place freed is a place taken again
    drop(first);
    dev.until("the first connection ended", |s| {
        s.connections.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth.write_all(line(4, 4).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "4");
    second.write_all(line(2, 3).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "2");
    assert_eq!(figures(&dev).connections_refused, Some(1));
    dev.stop().await;
}

#[tokio::test]
async fn a_connection_that_stays_silent_for_idle_timeout_is_closed_and_counted() {
    let (sink, mut rx) = PunchSink::channel(16);
    let spec = TcpSpec {
        idle_timeout_secs: 1,
        ..device(TcpMode::Listen, "127.0.0.1:0", 1024)
    };
    let dev = start(spec, sink);
    let addr = dev.stats.wait_listening().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(line(5, 5).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "5");
    // then silence: the daemon closes it (the test waits for the close, whenever it comes)
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .expect("the silent connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    dev.until("the close is counted", |s| {
        s.snapshot().figures::<TcpFigures>().connections_closed_idle == Some(1)
    })
    .await;
    // not an error of the device
    assert_eq!(dev.stats.last_error(), None);
    dev.stop().await;
}

#[tokio::test]
async fn connect_mode_has_no_listening_figures() {
    let clock = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = clock.local_addr().unwrap();
    let (sink, mut rx) = PunchSink::channel(16);
    let dev = start(device(TcpMode::Connect, &addr.to_string(), 1024), sink);
    let (mut c, _) = clock.accept().await.unwrap();
    c.write_all(line(6, 6).as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.device_user_id, "6");
    assert_eq!(figures(&dev), TcpFigures::default());
    dev.stop().await;
}

/// `cargo test --release --lib tcp_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement"]
async fn tcp_throughput() {
    const N: u32 = 1_000_000;
    let (sink, mut rx) = PunchSink::channel(4096);
    let dev = start(device(TcpMode::Listen, "127.0.0.1:0", 1024), sink);
    let addr = dev.stats.wait_listening().await;
    let mut data = Vec::with_capacity(N as usize * 48);
    for i in 0..N {
        data.extend_from_slice(
            format!(
                "{:>9}\t2026-03-02 {:02}:{:02}:{:02}\t0\t1\t0\t0\t0\r\n",
                i % 5000,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            )
            .as_bytes(),
        );
    }
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&data).await.unwrap();
    });
    let mut n = 0u32;
    let mut items = Vec::with_capacity(4096);
    while n < N {
        items.clear();
        n += rx.recv_many(&mut items, 4096).await as u32;
    }
    let secs = start.elapsed().as_secs_f64();
    writer.await.unwrap();
    println!(
        "{N} punches in {secs:.3} s: {:.0} punches/s",
        f64::from(N) / secs
    );
    assert_eq!(dev.get(&dev.stats.malformed), 0);
    dev.stop().await;
}
