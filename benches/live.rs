//! Live punches behind a backlog (`cargo bench --bench live`): the scenario of issue 11, section 1.
//!
//! The real `clockbridge run` binary (a child process, default `[sender]` settings) reads one TCP
//! clock (`mode = "connect"`: the benchmark is the clock, and clockbridge dials it) and uploads to
//! the in-process stand-in, which answers every batch_create in 100 ms and enforces 50 requests per
//! sliding second (the ceiling: 50 x 50 = 2,500 punches/s).
//!
//! 1. **Reference, no backlog**: the clock sends 20 live punches (its current time), one every
//!    0.5 s; each one's latency is measured from the moment its line is written to the socket to the
//!    moment the stand-in stores it (its store time, by idempotent id).
//! 2. **Behind a backlog**: `clockbridge import` (the real binary, a second child process) queues
//!    100,000 punches of 30 days ago from an attlog file (`CLOCKBRIDGE_BENCH_PUNCHES` changes the
//!    number) while the clock goes on sending one live punch every 0.5 s until the backlog is
//!    delivered. Printed: the live punches' latency (p50, p99, max) for those sent while the backlog
//!    drained, how many backlog punches were stored after each of them (it overtook them: the
//!    median and the least), the backlog's drain rate (from its first to its last stored punch) as
//!    a ratio of the 2,500/s ceiling, and the 429 replies the daemon caused.
//!
//! Fails (exit 1) if a punch was not stored, or was stored twice; a goal missed is printed as
//! "MISSED", not a failure. Every other argument (cargo passes `--bench`) is ignored.
//!
//! `CLOCKBRIDGE_BENCH_BIN=/path/to/clockbridge` runs another build of the binary (both the daemon
//! and the import) in the same scenario: an A/B against an earlier commit on a shared machine.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use chrono::{NaiveDateTime, Timelike};
use clockbridge::punch::Punch;
use clockbridge_testkit::standin::{Standin, StandinConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const BACKLOG: usize = 100_000;
const LIVE_EVERY: Duration = Duration::from_millis(500);
const REFERENCE_LIVE: usize = 20;
const STANDIN_LATENCY: Duration = Duration::from_millis(100);
const CEILING: f64 = 2_500.0;
const DRAIN_GOAL: f64 = 0.95;
const P99_GOAL: Duration = Duration::from_secs(2);
const DEVICE: &str = "door-1";
const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
/// Users of the backlog (10000..); live punches use users from 900000 on.
const BACKLOG_USERS: usize = 1_000;

/// The `clockbridge` binary under test: this build's, or `CLOCKBRIDGE_BENCH_BIN`.
fn binary() -> std::path::PathBuf {
    std::env::var_os("CLOCKBRIDGE_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_clockbridge").into())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let n = match std::env::var("CLOCKBRIDGE_BENCH_PUNCHES") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                println!("FAILED: CLOCKBRIDGE_BENCH_PUNCHES={v:?} is not a positive integer");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => BACKLOG,
    };
    match rt.block_on(run(n)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The clock's side of the connection clockbridge dialled, and what it sent.
struct Clock {
    stream: TcpStream,
    next_user: usize,
    /// idempotent id -> when its line was written.
    sent: HashMap<String, SystemTime>,
}

impl Clock {
    /// Sends one punch at the gateway's current time (in the device's zone); returns its key.
    async fn punch_now(&mut self) -> anyhow::Result<String> {
        let local = chrono::Utc::now().with_timezone(&TZ).naive_local();
        let local = local.with_nanosecond(0).unwrap_or(local);
        let user = format!("{}", 900_000 + self.next_user);
        self.next_user += 1;
        let key = punch(&user, local).idempotent_key();
        let line = format!(
            "{user:>9}\t{}\t0\t1\t0\t0\t0\n",
            local.format("%Y-%m-%d %H:%M:%S")
        );
        let at = SystemTime::now();
        self.stream.write_all(line.as_bytes()).await?;
        self.stream.flush().await?;
        self.sent.insert(key.clone(), at);
        Ok(key)
    }
}

fn punch(user: &str, local_time: NaiveDateTime) -> Punch {
    Punch {
        device_id: DEVICE.into(),
        device_user_id: user.into(),
        local_time,
        state: Some(0),
        verify: Some(1),
        workcode: None,
        state_text: None,
    }
}

/// Writes the backfill: `n` punches of `BACKLOG_USERS` users, one per user per second, from 30 days
/// ago. Returns their idempotent ids.
fn write_backfill(path: &Path, n: usize) -> anyhow::Result<HashSet<String>> {
    use std::io::Write;
    let start = (chrono::Utc::now() - chrono::Duration::days(30))
        .with_timezone(&TZ)
        .naive_local()
        .with_nanosecond(0)
        .context("time")?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ids = HashSet::with_capacity(n);
    for i in 0..n {
        let user = format!("{}", 10_000 + i % BACKLOG_USERS);
        let t = start + chrono::Duration::seconds((i / BACKLOG_USERS) as i64);
        writeln!(
            w,
            "{user:>9}\t{}\t0\t1\t0\t0\t0",
            t.format("%Y-%m-%d %H:%M:%S")
        )?;
        ids.insert(punch(&user, t).idempotent_key());
    }
    w.flush()?;
    ensure!(ids.len() == n, "backfill: {} distinct ids", ids.len());
    Ok(ids)
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Latencies (store time - send time) of the live punches in `keys`, sorted.
fn latencies(
    keys: &[String],
    sent: &HashMap<String, SystemTime>,
    stored: &HashMap<String, SystemTime>,
) -> anyhow::Result<Vec<Duration>> {
    let mut v = Vec::with_capacity(keys.len());
    for k in keys {
        let (s, t) = (
            sent[k],
            stored.get(k).context("a live punch was not stored")?,
        );
        v.push(t.duration_since(s).unwrap_or(Duration::ZERO));
    }
    v.sort();
    Ok(v)
}

async fn run(n: usize) -> anyhow::Result<()> {
    println!("live: binary {}", binary().display());
    let dir = tempfile::tempdir().context("temp dir")?;
    let standin = Standin::start(StandinConfig {
        latency: STANDIN_LATENCY,
        ..Default::default()
    })
    .await
    .context("stand-in")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let secret = dir.path().join("app_secret");
    std::fs::write(&secret, "standin-secret\n")?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let config = dir.path().join("clockbridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[feishu]
base_url = "{base}"
app_id = "cli_standin"
app_secret_file = "{secret}"

[queue]
path = "{queue}"

[log]
level = "warn"

[[devices]]
id = "{DEVICE}"
kind = "tcp"
mode = "connect"
address = "{clock}"
format = "zk-attlog"
timezone = "Asia/Shanghai"
"#,
            base = standin.base_url(),
            queue = dir.path().join("queue.db").display(),
            clock = listener.local_addr()?,
            secret = secret.display(),
        ),
    )?;
    let file = dir.path().join("attlog.dat");
    let backlog_ids = write_backfill(&file, n)?;

    let log_path = dir.path().join("daemon.log");
    let mut daemon = tokio::process::Command::new(binary())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("CLOCKBRIDGE_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the daemon {}", binary().display()))?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .context("the daemon did not dial the clock within 30 s")??;
    stream.set_nodelay(true)?;
    let mut clock = Clock {
        stream,
        next_user: 0,
        sent: HashMap::new(),
    };

    // 1. reference: live punches with no backlog
    let mut reference = Vec::new();
    for _ in 0..REFERENCE_LIVE {
        reference.push(clock.punch_now().await?);
        tokio::time::sleep(LIVE_EVERY).await;
    }
    tokio::time::timeout(Duration::from_secs(30), standin.wait_stored(REFERENCE_LIVE))
        .await
        .context("the reference punches were not stored within 30 s")?;

    // 2. the backfill, with live punches every 0.5 s until it is delivered
    let started = Instant::now();
    let started_at = SystemTime::now();
    let import = {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.args([
            "import", "--device", DEVICE, "--json", "--quiet", "--config",
        ])
        .arg(&config)
        .arg(&file)
        .stdin(Stdio::null())
        .kill_on_drop(true);
        tokio::spawn(async move {
            let t = Instant::now();
            let out = cmd.output().await;
            (out, t.elapsed())
        })
    };
    let limit = Duration::from_secs_f64((n as f64 / CEILING * 4.0).max(120.0));
    let mut during = Vec::new();
    // `clockbridge status` once two fifths of the backlog are delivered: its backlog line
    let mut status_line: Option<tokio::task::JoinHandle<String>> = None;
    let mut tick = tokio::time::interval(LIVE_EVERY);
    let backlog_done = loop {
        tick.tick().await;
        // every backlog punch stored: stop sending (the live ones so far are all stored or in the queue)
        if standin.stored_len() >= REFERENCE_LIVE + n + during.len() {
            break true;
        }
        if started.elapsed() > limit {
            break false;
        }
        if status_line.is_none() && standin.stored_len() >= REFERENCE_LIVE + n * 2 / 5 {
            let mut cmd = tokio::process::Command::new(binary());
            cmd.args(["status", "--config"]).arg(&config);
            status_line = Some(tokio::spawn(async move {
                let out = cmd.output().await.map(|o| o.stdout).unwrap_or_default();
                String::from_utf8_lossy(&out)
                    .lines()
                    .find(|l| l.starts_with("backlog:"))
                    .unwrap_or("(no backlog line)")
                    .to_string()
            }));
        }
        if let Ok(Some(st)) = daemon.try_wait() {
            bail!("the daemon exited early: {st}");
        }
        during.push(clock.punch_now().await?);
    };
    let total = REFERENCE_LIVE + n + during.len();
    let all_stored =
        tokio::time::timeout(Duration::from_secs(60), standin.wait_stored(total)).await;
    let (import_out, import_took) = import.await?;
    let import_out = import_out.context("clockbridge import")?;

    // stop the daemon as an operator would
    if let Some(pid) = daemon.id() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    let status = tokio::time::timeout(Duration::from_secs(40), daemon.wait())
        .await
        .context("the daemon did not stop within 40 s of SIGTERM")??;

    let report: serde_json::Value =
        serde_json::from_slice(&import_out.stdout).unwrap_or(serde_json::Value::Null);
    // --json: one object per file, one per line; one file here
    let queued = report["queued"].as_u64().unwrap_or(0) as usize;
    println!(
        "live: backfill of {n} punches of 30 days ago queued by `clockbridge import` in {} (queued {queued}; exit {})",
        secs(import_took),
        import_out.status
    );
    ensure!(
        import_out.status.success() && queued == n,
        "import: {}",
        String::from_utf8_lossy(&import_out.stderr)
    );

    // exactly once
    let counts = standin.write_counts();
    let twice = counts.values().filter(|c| **c > 1).count();
    let live_ids: HashSet<&String> = clock.sent.keys().collect();
    let missing = backlog_ids
        .iter()
        .chain(clock.sent.keys())
        .filter(|k| !counts.contains_key(*k))
        .count();
    let foreign = counts
        .keys()
        .filter(|k| !backlog_ids.contains(*k) && !live_ids.contains(k))
        .count();
    println!(
        "live: every punch written exactly once: {} ({} stored; written twice: {twice}; missing: {missing}; unknown: {foreign})",
        if twice == 0 && missing == 0 && foreign == 0 { "yes" } else { "NO" },
        standin.stored_len()
    );

    // the backlog's drain
    let times = standin.store_times();
    let mut backlog_times: Vec<SystemTime> = backlog_ids
        .iter()
        .filter_map(|k| times.get(k))
        .copied()
        .collect();
    backlog_times.sort();
    let first = backlog_times.first().copied();
    let last = backlog_times.last().copied();
    let st = standin.stats();
    if let (Some(first), Some(last)) = (first, last) {
        let span = last.duration_since(first).unwrap_or(Duration::ZERO);
        let rate = n as f64 / span.as_secs_f64().max(1e-3);
        println!(
            "live: backlog drained in {} (first to last stored) = {rate:.0} punches/s = {:.3} of the {CEILING:.0}/s ceiling (goal >= {DRAIN_GOAL}: {}); 429s caused by the daemon = {} (goal 0: {}); max requests in any second = {}; max concurrent = {}; records per request = {:.2}",
            secs(span),
            rate / CEILING,
            verdict(rate / CEILING >= DRAIN_GOAL),
            st.rate_limited,
            verdict(st.rate_limited == 0),
            st.max_requests_in_any_second,
            st.max_concurrent,
            st.records_stored as f64 / st.batch_requests.max(1) as f64,
        );
        let lat = latencies(&reference, &clock.sent, &times)?;
        println!(
            "live: reference, no backlog: {} live punches every 0.5 s: p50 {}, p99 {}, max {}",
            lat.len(),
            secs(pct(&lat, 0.5)),
            secs(pct(&lat, 0.99)),
            secs(pct(&lat, 1.0))
        );
        // the live punches sent while the backlog drained (after its first store, before its last)
        let draining: Vec<String> = during
            .iter()
            .filter(|k| clock.sent[*k] >= first && clock.sent[*k] <= last)
            .cloned()
            .collect();
        let lat = latencies(&draining, &clock.sent, &times)?;
        // backlog punches stored after each live punch: those it overtook
        let mut overtaken: Vec<usize> = draining
            .iter()
            .filter_map(|k| times.get(k))
            .map(|t| backlog_times.len() - backlog_times.partition_point(|b| b <= t))
            .collect();
        overtaken.sort();
        println!(
            "live: behind the backlog: {} live punches sent while it drained; each overtook {} backlog punches (median; the least: {}): p50 {}, p99 {} (goal <= {}: {}), max {}",
            lat.len(),
            overtaken.get(overtaken.len() / 2).copied().unwrap_or(0),
            overtaken.first().copied().unwrap_or(0),
            secs(pct(&lat, 0.5)),
            secs(pct(&lat, 0.99)),
            secs(P99_GOAL),
            verdict(!lat.is_empty() && pct(&lat, 0.99) <= P99_GOAL),
            secs(pct(&lat, 1.0))
        );
        // where the slowest ones were: seconds into the drain, and when the import was running
        let mut slow: Vec<(Duration, f64)> = draining
            .iter()
            .map(|k| {
                let sent = clock.sent[k];
                let took = times[k].duration_since(sent).unwrap_or(Duration::ZERO);
                let into = sent.duration_since(first).unwrap_or(Duration::ZERO);
                (took, into.as_secs_f64())
            })
            .collect();
        slow.sort_by_key(|s| std::cmp::Reverse(s.0));
        let import_end = started_at + import_took;
        println!(
            "live: the slowest: {} (the import ran until {:.1} s into the drain)",
            slow.iter()
                .take(5)
                .map(|(took, into)| format!("{} sent {into:.1} s into the drain", secs(*took)))
                .collect::<Vec<_>>()
                .join(", "),
            import_end
                .duration_since(first)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        );
    }
    if let Some(line) = status_line {
        println!(
            "live: `clockbridge status` with two fifths of the backlog delivered: {}",
            line.await.unwrap_or_default()
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if !lines.is_empty() {
        println!(
            "live: the daemon logged {} line(s) at WARN or above:",
            lines.len()
        );
        for l in lines.iter().take(10) {
            println!("  {l}");
        }
    }
    standin.shutdown().await;

    ensure!(
        backlog_done,
        "the backlog was not delivered within {}",
        secs(limit)
    );
    ensure!(all_stored.is_ok(), "not every live punch was stored");
    ensure!(
        twice == 0 && missing == 0 && foreign == 0,
        "not every punch was written exactly once"
    );
    ensure!(
        status.success(),
        "the daemon did not stop cleanly: {status}"
    );
    Ok(())
}
