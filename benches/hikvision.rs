//! A first read of a large Hikvision event log: the daemon's `hikvision` source (the real binary,
//! `clockbridge run`) against the simulated terminal (`clockbridge_testkit::hiksim`), beside a plain
//! Python `requests` loop (`tests/hikvision/read_log.py`, HTTPDigestAuth) reading the same pages in
//! the same run.
//!
//! Run: `cargo bench --bench hikvision` (Python from the test venv: `scripts/test-venv.sh`, or
//! `$CLOCKBRIDGE_PYTHON`). `CLOCKBRIDGE_BENCH_EVENTS` changes the size (default 100 000 events, of
//! which the 90 000 of major 5 are read and 70 000 are punches). The terminal caps `maxResults` at 30
//! and takes 5 ms per page: paging is sequential, so the terminal sets the floor (pages × 5 ms).
//! Goal: every punch committed to the queue within 1.15 × the floor, with the daemon's peak RSS
//! (VmHWM) under 30 MiB.

use std::process::Command;
use std::time::{Duration, Instant};

use clockbridge_testkit::hiksim::{self, generate_events, generate_users, is_punch, HikSimConfig};

const PAGE: Duration = Duration::from_millis(5);

fn python() -> std::path::PathBuf {
    std::env::var_os("CLOCKBRIDGE_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        })
}

/// Peak and current resident set of a process, in KiB (VmHWM, VmRSS).
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name (which is in parentheses and may hold spaces)
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line (12 and 13 after the name), in the kernel's
    // USER_HZ, which is 100 on Linux
    (ticks(11) + ticks(12)) / 100.0
}

fn rows(queue: &std::path::Path) -> u64 {
    let Ok(c) = rusqlite::Connection::open_with_flags(
        queue,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return 0;
    };
    c.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .unwrap_or(0)
}

/// Starts the stand-in on a runtime of its own, in a thread that lives as long as the process;
/// returns its base URL.
fn standin_on_its_own_runtime() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let standin = clockbridge_testkit::standin::Standin::start(Default::default())
                .await
                .unwrap();
            tx.send(standin.base_url()).unwrap();
            std::future::pending::<()>().await
        })
    });
    rx.recv().unwrap()
}

fn main() {
    let n: usize = std::env::var("CLOCKBRIDGE_BENCH_EVENTS")
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
        let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        let start = chrono::Utc::now().with_timezone(&offset).naive_local()
            - chrono::TimeDelta::seconds(7 * n as i64 + 3600);
        let events = generate_events(n, &users, start);
        let minors = clockbridge::sources::hikvision::spec::DEFAULT_EVENT_MINORS;
        let punches = events.iter().filter(|e| is_punch(e, minors)).count() as u64;
        let sim = hiksim::start(HikSimConfig {
            users,
            events,
            page_delay: PAGE,
            max_results_cap: 30,
            ..HikSimConfig::default()
        })
        .await
        .unwrap();
        let url = sim.url();
        println!("hikvision: simulated terminal with {n} events ({punches} punches), maxResults capped at 30, {} ms per page, on {url}", PAGE.as_millis());

        // the plain Python requests loop over the same pages
        let py = python();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hikvision/read_log.py");
        let u = url.clone();
        let before = sim.counters().acs_pages;
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&py).arg(&script).args([u.as_str(), "admin", "Passw0rd!"]).output()
        })
        .await
        .unwrap();
        let py_secs = match out {
            Ok(o) if o.status.success() => {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
                let pages = v["pages"].as_u64().unwrap_or(0);
                let floor = pages as f64 * PAGE.as_secs_f64();
                println!(
                    "hikvision: Python requests loop: {} events in {pages} pages in {secs:.2} s = {:.2} x its floor ({floor:.2} s)",
                    v["events"], secs / floor
                );
                Some(secs)
            }
            Ok(o) => {
                println!("hikvision: Python reference FAILED: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                println!("hikvision: Python reference skipped: {e}: run scripts/test-venv.sh (or set CLOCKBRIDGE_PYTHON)");
                None
            }
        };
        let py_pages = sim.counters().acs_pages - before;

        // the daemon, as it runs on a gateway
        let dir = tempfile::tempdir().unwrap();
        // the platform on a runtime of its own (as it is another machine): its work on the uploads
        // never delays the terminal's replies on this runtime's two threads
        let standin_url = standin_on_its_own_runtime();
        let queue = dir.path().join("queue.db");
        let config = dir.path().join("clockbridge.toml");
        std::fs::write(&config, format!(
            "[feishu]\nbase_url = \"{}\"\napp_id = \"cli_standin\"\napp_secret = \"standin-secret\"\n[queue]\npath = \"{}\"\n[log]\nlevel = \"error\"\n\n[[devices]]\nid = \"door-hik\"\nkind = \"hikvision\"\naddress = \"{url}\"\nusername = \"admin\"\npassword = \"Passw0rd!\"\ntimezone = \"Asia/Shanghai\"\nrealtime = false\npoll_interval = \"1h\"\n",
            standin_url,
            queue.display()
        )).unwrap();
        let before = sim.counters().acs_pages;
        let busy_before = sim.counters().acs_busy;
        sim.reset_page_times();
        let t = Instant::now();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut peak = 0;
        loop {
            let got = rows(&queue);
            peak = peak.max(rss_kib(pid).0);
            if got >= punches {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(600), "only {got} of {punches} committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let pages = sim.counters().acs_pages - before;
        let floor = pages as f64 * PAGE.as_secs_f64();
        let busy = (sim.counters().acs_busy - busy_before).as_secs_f64();
        peak = peak.max(rss_kib(pid).0);
        let cpu = cpu_secs(pid);
        let c = sim.counters();
        if let (Some(first), Some(last)) = (c.first_acs_at, c.last_acs_at) {
            println!(
                "hikvision: the daemon's start to its first page {:.2} s; paging {:.2} s; the last page to all committed {:.2} s (seen every 20 ms)",
                first.saturating_duration_since(t).as_secs_f64(),
                (last - first).as_secs_f64(),
                secs - last.saturating_duration_since(t).as_secs_f64(),
            );
        }
        println!(
            "hikvision: the daemon's CPU time: {cpu:.2} s ({:.3} ms a page)",
            cpu * 1000.0 / pages.max(1) as f64
        );
        println!(
            "hikvision: the terminal's own time for those pages: {busy:.2} s ({:.3} ms a page; configured {} ms)",
            busy * 1000.0 / pages.max(1) as f64,
            PAGE.as_millis()
        );
        println!(
            "hikvision: daemon: {punches} punches committed in {secs:.2} s, {pages} pages, floor {floor:.2} s: {:.3} x the floor (goal <= 1.15: {}); peak RSS {:.1} MiB (goal < 30: {})",
            secs / floor,
            if secs / floor <= 1.15 { "met" } else { "NOT met" },
            peak as f64 / 1024.0,
            if peak < 30 * 1024 { "met" } else { "NOT met" },
        );
        if let Some(py) = py_secs {
            println!(
                "hikvision: daemon (read and committed) / Python requests loop (read only, {py_pages} pages): {:.2}",
                secs / py
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        sim.shutdown();
    });
}
