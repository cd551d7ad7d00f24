//! Reading a large ZKTeco attendance log: clockbridge's client (`clockbridge::zk`) against the public
//! Python client pyzk, both reading the same simulated device (`clockbridge_testkit::zksim`) in the same run.
//!
//! Run: `cargo bench --bench zk` (pyzk from the test venv: `scripts/test-venv.sh`, or
//! `$CLOCKBRIDGE_PYTHON`). `CLOCKBRIDGE_BENCH_RECORDS` changes the size (default 100 000 records of
//! 40 bytes). Each client does the same work, timed from connect to disconnect: connect, sizes, the
//! user table, the buffered chunked read of the whole log, decoding every record. clockbridge also
//! disables and re-enables the device around the read, as its source does. Goal: the full read in
//! under 3 s and at least 10 times pyzk's rate.
//!
//! A third figure is the whole source path: the daemon's `zk` source reading the same log into the
//! SQLite queue (every record committed), with uploads going to a local stand-in.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use clockbridge::sources::zk::{Timeouts, ZkClient, ZkFigures};
use clockbridge_testkit::zksim::{
    self, generate_records, generate_users, RecordSize, SimConfig, UserSize,
};

const RUNS: usize = 3;

async fn clockbridge_read(addr: &str, expect: usize) -> f64 {
    let t = Instant::now();
    let mut c = ZkClient::connect("device bench", addr, 0, Timeouts::default())
        .await
        .unwrap();
    let sizes = c.free_sizes().await.unwrap();
    let users = c.read_users(sizes.users as u64).await.unwrap();
    c.disable().await.unwrap();
    let log = c.read_attendance(0, sizes.records as u64).await.unwrap();
    c.enable().await.unwrap();
    c.exit().await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(log.records.len(), expect);
    assert!(!users.is_empty());
    secs
}

fn python() -> std::path::PathBuf {
    std::env::var_os("CLOCKBRIDGE_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        })
}

fn main() {
    let n: usize = std::env::var("CLOCKBRIDGE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let users = generate_users(500);
        let start =
            NaiveDateTime::parse_from_str("2026-01-05 06:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let records = generate_records(n, &users, start);
        let sim = zksim::start(SimConfig {
            record_size: RecordSize::B40,
            user_size: UserSize::B72,
            users,
            records,
            clock_offset: chrono::TimeDelta::hours(8),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let addr = sim.addr().to_string();
        let bytes = 4 + n * 40;
        println!(
            "zk: simulated device with {n} records of 40 bytes ({:.1} MB) and 500 users, on {addr}",
            bytes as f64 / 1e6
        );

        let mut ours = Vec::new();
        for _ in 0..RUNS {
            ours.push(clockbridge_read(&addr, n).await);
        }
        let best = ours.iter().cloned().fold(f64::INFINITY, f64::min);
        let rate = n as f64 / best;
        println!(
            "zk: clockbridge client: full read in {best:.3} s (best of {RUNS}: {}) = {rate:.0} records/s ({:.1} MB/s); goal < 3 s: {}",
            ours.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(", "),
            bytes as f64 / best / 1e6,
            if best < 3.0 { "met" } else { "NOT met" }
        );

        // pyzk, in a child process, against the same device
        let py = python();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyzk/bench_read.py");
        let port = sim.addr().port().to_string();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&py)
                .arg(&script)
                .args(["127.0.0.1", &port])
                .output()
        })
        .await
        .unwrap();
        match out {
            Ok(o) if o.status.success() => {
                let line = String::from_utf8_lossy(&o.stdout);
                let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
                let py_n = v["records"].as_u64().unwrap_or(0);
                let py_secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
                let py_rate = py_n as f64 / py_secs;
                println!(
                    "zk: pyzk 0.9 (get_attendance): {py_n} records in {py_secs:.3} s = {py_rate:.0} records/s"
                );
                if py_n != n as u64 {
                    println!("zk: WARNING: pyzk read {py_n} records, expected {n}");
                }
                println!(
                    "zk: ratio clockbridge / pyzk = {:.1}x (goal >= 10x): {}",
                    rate / py_rate,
                    if rate / py_rate >= 10.0 { "met" } else { "NOT met" }
                );
            }
            Ok(o) => println!(
                "zk: pyzk reference FAILED: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => println!(
                "zk: pyzk reference skipped: {e}: run scripts/test-venv.sh (or set CLOCKBRIDGE_PYTHON)"
            ),
        }

        // the whole source path: the daemon's zk source into the queue
        let dir = tempfile::tempdir().unwrap();
        let standin = clockbridge_testkit::standin::Standin::start(Default::default()).await.unwrap();
        let toml = format!(
            "[feishu]\nbase_url = \"{}\"\napp_id = \"cli_bench\"\napp_secret = \"bench\"\n[queue]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n\n[[devices]]\nid = \"door-zk\"\nkind = \"zk\"\naddress = \"{addr}\"\ntimezone = \"Asia/Shanghai\"\nrealtime = false\npoll_interval = \"1h\"\n",
            standin.base_url(),
            dir.path().join("queue.db").display()
        );
        let cfg = clockbridge::config::Config::from_toml_with_env(&toml, "bench", std::iter::empty())
            .unwrap();
        let t = Instant::now();
        let running = clockbridge::daemon::start(cfg, clockbridge::daemon::RunOptions {
            snapshot_interval: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            prune_interval: Duration::from_secs(3600),
        })
        .await
        .unwrap();
        let stats = running.devices["door-zk"].stats.clone();
        tokio::time::timeout(
            Duration::from_secs(300),
            stats.wait_for(|s| s.snapshot().figures::<ZkFigures>().watermark == Some(n as u64)),
        )
        .await
        .expect("the source never committed the whole log");
        let secs = t.elapsed().as_secs_f64();
        let counts = running.queue.counts().await.unwrap().total;
        let committed = counts.pending + counts.in_flight + counts.delivered + counts.dead + counts.unmapped;
        println!(
            "zk: daemon source: {n} records read and committed to the queue in {secs:.2} s = {:.0} records/s ({committed} rows in the queue)",
            n as f64 / secs
        );
        running.stop().await;
        sim.shutdown().await;
    });
}
