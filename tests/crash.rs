//! Crash safety: the real binary is killed with SIGKILL while uploading, several times, then restarted;
//! every punch must end up accepted by the platform exactly once, with none lost.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clockbridge::queue::Queue;
use clockbridge_testkit::standin::{DedupMode, StandinConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::util::*;

/// Queues `n` punches in the queue file, as a previous run of the daemon would have, and closes it;
/// returns their keys.
pub async fn prefill(path: &Path, n: usize) -> HashSet<String> {
    let (q, _) = Queue::open(path).unwrap();
    let mut keys = HashSet::new();
    for chunk in punches("door-1", n).chunks(1000) {
        let recs = records(chunk);
        keys.extend(recs.iter().map(|r| r.idem.clone()));
        q.insert(Arc::new(recs)).await.unwrap();
    }
    assert_eq!(q.counts().await.unwrap().total.pending, n as u64);
    drop(q);
    // the queue's thread closes the file on its own: its last connection folds the -wal into it
    // and removes it; wait for that, so that the file is whole and nothing writes it any more
    let wal = clockbridge::queue::side_file(path, "-wal");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while wal.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still there: the prefilled queue was not closed",
            wal.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_uploading_loses_and_duplicates_nothing() {
    let n = 3000;
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(80),
        dedup: DedupMode::Silent,
        ..StandinConfig::default()
    })
    .await;
    let expected = prefill(&env.queue_path(), n).await;
    let config = env.write_config("[log]\nlevel = \"info\"\n");
    let log = env.dir.path().join("daemon.log");

    for round in 0..4 {
        let mut child = spawn_daemon(&config, &log);
        // kill it while requests are in flight: a few requests after this run started uploading
        let target = env.standin.stats().batch_requests + 4 + round;
        tokio::time::timeout(PATIENCE, env.standin.wait_requests(target))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "daemon never uploaded: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
        child.wait().await.unwrap();
    }
    let killed_stored = env.standin.stored_len();
    assert!(
        killed_stored < n,
        "all delivered before the last kill: the test did not test anything"
    );

    let mut child = spawn_daemon(&config, &log);
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .expect("not every punch reached the platform");
    // the daemon records the last outcomes: wait until its queue says so (another process: poll)
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let status = loop {
        let st = status_json(&config).await;
        let q = &st["queue"];
        if q["delivered"] == n && q["pending"] == 0 && q["in_flight"] == 0 {
            break st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue never settled: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["queue"]["dead"], 0);
    assert_eq!(status["queue"]["unmapped"], 0);
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "daemon did not stop cleanly on SIGTERM: {exit:?}"
    );

    // exactly once: every expected punch is there, each written once, nothing else
    assert_stored_exactly_once(&env.standin, &expected);
    // the kills did interrupt requests whose writes had been applied: their re-sends were absorbed
    // by the idempotent id, not written again
    let st = env.standin.stats();
    assert!(st.records_duplicate > 0, "no re-send happened: {st:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("pending again and will be re-sent"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_secret_nor_a_token_reaches_the_log_at_trace_level() {
    let env = Env::new(StandinConfig::default()).await;
    // the first request gets a revoked token, so the token refresh path is logged too
    prefill(&env.queue_path(), 120).await;
    let config = env.write_config("[log]\nlevel = \"trace\"\n");
    let log = env.dir.path().join("trace.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(60))
        .await
        .unwrap();
    env.standin.revoke_tokens();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(120))
        .await
        .unwrap();
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    child.wait().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() > 2_000,
        "trace logging was not on: {} bytes",
        text.len()
    );
    assert!(text.contains("TRACE"), "no trace lines");
    assert!(
        !text.contains("standin-secret"),
        "the app secret reached the log"
    );
    assert!(
        !text.contains("t-standin"),
        "a tenant token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_uploads_stops_cleanly_and_loses_and_duplicates_nothing() {
    let n = 2000;
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(150),
        ..StandinConfig::default()
    })
    .await;
    let expected = prefill(&env.queue_path(), n).await;
    let config = env.write_config("");
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    tokio::time::timeout(PATIENCE, env.standin.wait_requests(6))
        .await
        .expect("daemon never uploaded");
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "{exit:?}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    // stopped mid-way: nothing left in flight, nothing lost
    let st = status_json(&config).await;
    let q = &st["queue"];
    assert_eq!(q["in_flight"], 0, "{st}");
    assert!(
        q["pending"].as_u64().unwrap() > 0,
        "the stop came after everything was sent: {st}"
    );
    assert_eq!(
        q["delivered"].as_u64().unwrap() + q["pending"].as_u64().unwrap(),
        n as u64
    );
    assert_eq!(st["daemon"]["running"], false);
    // the next run sends the rest, each punch once
    let mut child = spawn_daemon(&config, &log);
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .expect("not every punch reached the platform");
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    child.wait().await.unwrap();
    assert_stored_exactly_once(&env.standin, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_a_new_mapping_and_releases_unmapped_punches() {
    use tokio::io::AsyncWriteExt;
    let env = Env::new(StandinConfig::default()).await;
    let users = env.dir.path().join("users.csv");
    std::fs::write(&users, "1,fs-1\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = env.write_config(&format!(
        "[mapping]\nmode = \"table\"\nfile = \"{}\"\nreload_interval_secs = 3600\n\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:{port}\"\ntimezone = \"Asia/Shanghai\"\n",
        users.display()
    ));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    // the clock connects once the daemon listens
    let mut clock = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) => {
                assert!(child.try_wait().unwrap().is_none(), "daemon exited");
                tokio::task::yield_now().await;
            }
        }
    };
    clock
        .write_all(b"        1\t2026-03-02 08:00:00\t0\t1\t0\t0\t0\n        2\t2026-03-02 08:00:05\t0\t1\t0\t0\t0\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(1))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while status_json(&config).await["queue"]["unmapped"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "user 2 never became unmapped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&users, "1,fs-1\n2,fs-2\n").unwrap();
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGHUP).unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(2))
        .await
        .expect("the unmapped punch was not released by SIGHUP");
    assert_eq!(env.standin.stored()[1].record["user_id"], "fs-2");
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().await.unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGHUP"), "{text}");
}

/// A ZKTeco terminal with log clearing on: the real binary is killed in the middle of a log transfer,
/// while uploading, and right after it cleared the terminal's log, with records arriving on the
/// terminal meanwhile (some while the daemon is down, some as realtime events). Every record the
/// terminal ever held reaches the platform exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_reading_and_clearing_a_zk_terminal_loses_and_duplicates_nothing() {
    use clockbridge_testkit::zksim::{
        self, generate_records, generate_users, RecordSize, SimConfig,
    };

    const DEVICE: &str = "gate-zk";
    let users = generate_users(20);
    let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .unwrap()
        .and_hms_opt(6, 0, 0)
        .unwrap();
    // records are made in groups, each later than the one before (7 s apart within a group)
    let group = |i: usize, n: usize| {
        generate_records(n, &users, start + chrono::TimeDelta::hours(4 * i as i64))
    };
    let first = group(0, 6000);
    let sim = zksim::start(SimConfig {
        comm_key: 7,
        record_size: RecordSize::B40,
        users: users.clone(),
        records: first.clone(),
        clock_offset: chrono::TimeDelta::hours(8),
        // ~100 records a chunk, each reply a little slow: a transfer takes long enough to be cut
        max_chunk: 4_000,
        reply_delay: Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut all = first;
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(60),
        dedup: DedupMode::Silent,
        ..StandinConfig::default()
    })
    .await;
    let config = env.write_config(&format!(
        "[log]\nlevel = \"info\"\n\n[[devices]]\nid = \"{DEVICE}\"\nkind = \"zk\"\naddress = \"{}\"\ncomm_key = 7\ntimezone = \"Asia/Shanghai\"\npoll_interval = 1\nclear_device_log = true\n",
        sim.addr()
    ));
    let log = env.dir.path().join("daemon.log");
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let kill9 = |child: &Child| {
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    };

    // 1: killed in the middle of the first transfer (nothing of it committed yet, or part of it)
    let mut child = spawn_daemon(&config, &log);
    sim.wait_counters(PATIENCE, |c| c.chunks >= 20)
        .await
        .unwrap_or_else(|c| panic!("no transfer: {c:?}\n{}", daemon_log()));
    kill9(&child);
    child.wait().await.unwrap();
    assert_eq!(
        sim.counters().clears,
        0,
        "cleared before anything was read whole"
    );

    // 2: killed while uploading
    let mut child = spawn_daemon(&config, &log);
    let target = env.standin.stats().batch_requests + 5;
    tokio::time::timeout(PATIENCE, env.standin.wait_requests(target))
        .await
        .unwrap_or_else(|_| panic!("daemon never uploaded: {}", daemon_log()));
    kill9(&child);
    child.wait().await.unwrap();

    // punches made while the daemon is down
    let g = group(1, 500);
    sim.add_records(g.clone()).unwrap();
    all.extend(g);

    // 3: killed right after it cleared the terminal's log
    let mut child = spawn_daemon(&config, &log);
    sim.wait_counters(PATIENCE, |c| c.clears >= 1)
        .await
        .unwrap_or_else(|c| panic!("never cleared: {c:?}\n{}", daemon_log()));
    kill9(&child);
    child.wait().await.unwrap();
    let cleared_at_kill = sim.counters().clears;
    assert!(
        env.standin.stored_len() < all.len(),
        "everything was delivered before the last kill: the test did not test anything"
    );

    // more punches while it is down, then some while it runs (realtime events and the next polls)
    let g = group(2, 300);
    sim.add_records(g.clone()).unwrap();
    all.extend(g);
    let mut child = spawn_daemon(&config, &log);
    let g = group(3, 40);
    for r in &g {
        sim.add_records([r.clone()]).unwrap();
    }
    all.extend(g);

    let n = all.len();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {n} stored: {}",
                env.standin.stored_len(),
                daemon_log()
            )
        });
    // and the terminal is cleared again once everything on it is committed
    sim.wait_counters(PATIENCE, |c| c.clears > cleared_at_kill)
        .await
        .unwrap_or_else(|c| panic!("not cleared again: {c:?}\n{}", daemon_log()));
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "no clean stop: {exit:?}\n{}", daemon_log());

    // exactly once, nothing missing, nothing else
    assert_eq!(assert_each_written_once(&env.standin), n);
    let stored: HashSet<String> = env
        .standin
        .stored()
        .iter()
        .map(|f| f.record["external_id"].as_str().unwrap().to_string())
        .collect();
    let expected: HashSet<String> = all
        .iter()
        .map(|r| format!("{DEVICE}/{}/{}", r.user_id, r.time.format("%Y%m%d%H%M%S")))
        .collect();
    assert_eq!(expected.len(), n, "the test's records are distinct");
    assert_eq!(stored, expected);
    let st = status_json(&config).await;
    assert_eq!(st["queue"]["delivered"], n as u64, "{st}");
    assert_eq!(st["queue"]["dead"], 0, "{st}");
    sim.shutdown().await;
}
