use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;
use crate::health::{Limits, Parts};
use crate::queue::{now_ms, Queue, StateCounts};
use crate::sender::SenderStats;

const S: fn(u64) -> Duration = Duration::from_secs;

/// Runs the supervisor on a real queue with a 200 ms watchdog; returns what it sends.
fn supervised(
    limits: Limits,
) -> (
    Arc<SenderStats>,
    std::sync::mpsc::Receiver<String>,
    CancellationToken,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(&dir.path().join("queue.db")).unwrap();
    let sender = Arc::new(SenderStats::default());
    sender.heartbeat.store(now_ms(), Ordering::Relaxed);
    let monitor = Monitor::new(Parts {
        reconcile: Default::default(),
        queue,
        devices: Arc::new(Default::default()),
        sender: sender.clone(),
        senders: vec![("user_flow", sender.clone())],
        storage: Default::default(),
        inbox: Default::default(),
        limits,
        request_timeout_secs: 15,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let out: Notifier = Arc::new(move |states: &[NotifyState<'_>]| {
        for s in states {
            let _ = tx.lock().unwrap().send(s.to_string());
        }
    });
    let stop = CancellationToken::new();
    tokio::spawn(supervise(
        monitor,
        Some(Duration::from_millis(200)),
        String::new(),
        stop.clone(),
        out,
    ));
    (sender, rx, stop, dir)
}

/// Receives notifications until one satisfies `pred`; fails after 30 s with what came.
fn until(rx: &std::sync::mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + S(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => {
                let done = pred(&m);
                seen.push(m);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("condition not met; received {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_stop_while_the_sender_is_stuck_and_resume_when_it_moves() {
    let limits = Limits {
        db_answer: S(30),
        sender_idle: Duration::from_millis(1500),
    };
    let (stats, rx, stop, _dir) = supervised(limits);
    let rx = tokio::task::spawn_blocking(move || {
        // healthy: pings
        until(&rx, |m| m == "WATCHDOG=1");
        until(&rx, |m| m == "WATCHDOG=1");
        // the sender never turns again: a stuck status, and no ping after it
        until(&rx, |m| m.starts_with("STATUS=stuck: 0 devices"));
        rx
    })
    .await
    .unwrap();
    // several ticks (100 ms each) pass without a ping
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while let Ok(m) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now())) {
        assert_ne!(m, "WATCHDOG=1", "pinged while stuck");
    }
    // a request starts: the sender is alive again
    stats.requests.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        let seen = until(&rx, |m| m.starts_with("STATUS=running: 0 devices"));
        assert!(seen.contains(&"WATCHDOG=1".to_string()), "{seen:?}");
        until(&rx, |m| m == "WATCHDOG=1");
    })
    .await
    .unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_no_restart_cures_is_shown_as_degraded_and_the_pings_go_on() {
    let limits = Limits {
        db_answer: S(30),
        sender_idle: S(95),
    };
    let (stats, rx, stop, _dir) = supervised(limits);
    for _ in 0..4 {
        stats.record_timing(true);
    }
    tokio::task::spawn_blocking(move || {
        let seen = until(&rx, |m| m.starts_with("STATUS=degraded: 0 devices"));
        let line = seen.last().unwrap();
        assert!(
            line.contains("sender user_flow: its last 4 requests got no answer"),
            "{line}"
        );
        // still pinged: a restart would not make the platform faster
        until(&rx, |m| m == "WATCHDOG=1");
    })
    .await
    .unwrap();
    stop.cancel();
}

#[test]
fn status_line_says_what_it_is_doing() {
    let counts = Counts {
        total: StateCounts {
            pending: 12,
            in_flight: 2,
            delivered: 300,
            dead: 1,
            unmapped: 0,
        },
        ..Counts::default()
    };
    assert_eq!(
        status_line("ready", 3, 2, Some(&counts), ""),
        "ready: 3 devices (2 online), queue 12 pending, 2 in flight, 1 dead, 0 unmapped; uploads ok"
    );
    assert_eq!(
        status_line("degraded", 1, 0, None, "sender user_flow blocked, its records stay queued: check the App Secret"),
        "degraded: 1 device (0 online), queue not answering; sender user_flow blocked, its records stay queued: check the App Secret"
    );
}
