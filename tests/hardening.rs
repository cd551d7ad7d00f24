//! The attacks of issue 16 on the real binary (a hostile environment, not hostile input): a full
//! disk under a clock that does not acknowledge, a truncated or gutted queue file, a second daemon
//! on the same queue, a flood of idle connections under a low limit of open files, a queue damaged
//! under the running daemon, an upstream slower than the request timeout, a read-only queue and a
//! bus error. Each test reproduces the attack and checks what the issue asked for: nothing lost
//! without a count, nothing silent, health and `status` telling the truth.
//!
//! The HR file attacks (breaks 1, 2 and the file names of 8) are in `hr_hardening.rs`; the
//! in-process full-disk test in `storage.rs`; the configuration warnings of break 8 in `cli.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clockbridge_testkit::standin::StandinConfig;
use nix::sys::signal::{kill, Signal};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::util::*;

// ---------------------------------------------------------------------------------------------------
// a daemon with its endpoint and a listening clock

/// `clockbridge run` with the `[http]` endpoint and a listening line clock `door-1` (no
/// `ack_template`: a plain clock that forgets what it has sent), each on a free loopback port.
struct Daemon {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    http: SocketAddr,
    clock: SocketAddr,
}

impl Daemon {
    /// Starts it on the queue at `queue`; `extra` is appended to the configuration (after the
    /// device: more keys of `door-1`, or other sections).
    fn start(env: &Env, queue: &Path, extra: &str) -> Daemon {
        Daemon::start_with(env, queue, extra, |_| {})
    }

    /// [`Daemon::start`], with `prepare` applied to the command before it is spawned.
    fn start_with(
        env: &Env,
        queue: &Path,
        extra: &str,
        prepare: impl FnOnce(&mut tokio::process::Command),
    ) -> Daemon {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let clock: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = env.write_config_for(
            queue,
            &format!(
                "[log]\nlevel = \"info\"\n\n[http]\nlisten = \"{http}\"\n\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"{clock}\"\ntimezone = \"Asia/Shanghai\"\n{extra}"
            ),
        );
        let log = env.dir.path().join("daemon.log");
        let mut cmd = daemon_command(&config, &log);
        prepare(&mut cmd);
        let child = cmd.spawn().unwrap();
        Daemon {
            child,
            config,
            log,
            http,
            clock,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/healthz`: the status code and the body.
    async fn health(&self) -> (u16, Value) {
        let (code, body) = http_get(self.http, "/healthz").await;
        (code, serde_json::from_str(&body).unwrap())
    }

    /// `/metrics`, parsed.
    async fn scrape(&self) -> prometheus_parse::Scrape {
        let (code, text) = http_get(self.http, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        parse_metrics(&text)
    }

    /// `/healthz`, or `None` while the endpoint is not bound yet.
    async fn try_health(&self) -> Option<(u16, Value)> {
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .unwrap()
            .get(format!("http://{}/healthz", self.http))
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.json().await.unwrap()))
    }

    /// Waits until `/healthz` answers 200 (started, nothing wrong).
    async fn healthy(&self) {
        until_async("/healthz 200", &self.log, || async {
            (self.try_health().await?.0 == 200).then_some(())
        })
        .await
    }

    /// Waits until `/healthz` lists a condition of `kind` whose message holds `text`; returns it.
    async fn condition(&self, kind: &str, text: &str) -> (u16, Value) {
        until_async(&format!("condition {kind} ({text})"), &self.log, || async {
            let (code, h) = self.try_health().await?;
            has_condition(&h, kind, text).then_some((code, h))
        })
        .await
    }

    /// A clock connection, once the daemon counts it.
    async fn connect(&self, open_before: f64) -> TcpStream {
        let s = TcpStream::connect(self.clock).await.unwrap();
        self.until_metric(
            "the connection counted",
            "clockbridge_device_connections",
            |v| v == open_before + 1.0,
        )
        .await;
        s
    }

    /// Waits until the `door-1` figure `name` satisfies `ok`; returns it.
    async fn until_metric(&self, what: &str, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        until_async(what, &self.log, || async {
            let v = metric(&self.scrape().await, name, &[("device", "door-1")]);
            ok(v).then_some(v)
        })
        .await
    }
}

/// Whether the `/healthz` body (or `status --json`) lists a condition of `kind` whose message
/// holds `text`.
fn has_condition(body: &Value, kind: &str, text: &str) -> bool {
    body["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["kind"] == kind && c["message"].as_str().is_some_and(|m| m.contains(text)))
    })
}

/// Line `i` of a ZKTeco attlog stream: user 1..=97, one second apart from 2026-03-02 06:00:00, so
/// every line is a distinct punch.
fn punch_line(i: usize) -> String {
    let t = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .unwrap()
        .and_hms_opt(6, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(i as i64);
    format!(
        "{:>9}\t{}\t0\t1\t0\t0\t0\n",
        1 + i % 97,
        t.format("%Y-%m-%d %H:%M:%S")
    )
}

fn punch_lines(range: std::ops::Range<usize>) -> Vec<u8> {
    range.map(punch_line).collect::<String>().into_bytes()
}

/// `TimeoutStopSec=` of the shipped unit: how long systemd waits for a stop before it kills.
fn unit_stop_timeout() -> Duration {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/clockbridge.service"),
    )
    .unwrap();
    let secs = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("the unit sets TimeoutStopSec=")
        .trim()
        .parse()
        .expect("TimeoutStopSec= in seconds");
    Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------------------------------
// break 3: the queue's disk is full under a clock that does not acknowledge

/// Punches sent per round while the disk fills: at most this many wait in memory once commits fail.
const ROUND: usize = 50;

/// Sends rounds of [`ROUND`] punches on `conn` (from line `next` on), each round once the last one
/// is committed, until a commit fails (the storage condition of the ingest gate); returns the next
/// line number.
async fn send_until_commits_fail(d: &Daemon, conn: &mut TcpStream, mut next: usize) -> usize {
    loop {
        conn.write_all(&punch_lines(next..next + ROUND))
            .await
            .unwrap();
        next += ROUND;
        let failed = until_async(
            "a round committed, or the storage condition",
            &d.log,
            || async {
                let (_, h) = d.health().await;
                if has_condition(&h, "storage_failing", "refuses commits") {
                    return Some(true);
                }
                let m = d.scrape().await;
                let device = [("device", "door-1")];
                let committed = metric(&m, "clockbridge_device_queued_punches_total", &device)
                    + metric(&m, "clockbridge_device_duplicate_punches_total", &device);
                (committed as usize == next).then_some(false)
            },
        )
        .await;
        if failed {
            return next;
        }
        assert!(
            next < 50_000,
            "50,000 punches committed on a full disk: the disk never filled"
        );
    }
}

/// The `door-1` figures: lines read, and punches read but not committed (in the daemon's memory).
async fn read_and_held(d: &Daemon) -> (u64, u64) {
    let m = d.scrape().await;
    let device = [("device", "door-1")];
    let v = |name| metric(&m, name, &device) as u64;
    let read = v("clockbridge_device_lines_read_total");
    let punches = v("clockbridge_device_punches_read_total");
    let committed = v("clockbridge_device_queued_punches_total")
        + v("clockbridge_device_duplicate_punches_total");
    (read, punches - committed)
}

/// Offers `conn` as many punches as the kernel takes (from line `from` on, at most 8 MB, far more
/// than a loopback connection buffers while its reader does not read); returns how many bytes it
/// took before writes would block.
async fn flood_until_blocked(conn: &TcpStream, from: usize) -> usize {
    let flood = punch_lines(from..from + 200_000);
    let mut taken = 0;
    loop {
        tokio::time::timeout(PATIENCE, conn.writable())
            .await
            .expect("the flooded connection never became writable")
            .unwrap();
        match conn.try_write(&flood[taken..]) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return taken,
            Err(e) => panic!("flood: {e}"),
        }
        assert!(
            taken < flood.len(),
            "the daemon read {} bytes of punches while its queue could commit nothing",
            flood.len()
        );
    }
}

/// Break 3: with the queue's disk full, a plain TCP clock is no longer read (its writes block in
/// the kernel's buffers: at most one round of punches is in the daemon's memory), `/healthz` and
/// `status` say so while the daemon runs, and a SIGTERM ends it within the unit's stop timeout,
/// with the exact count of punches it could not keep, named as lost (a plain clock keeps nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_reading_a_plain_clock_and_a_stop_counts_exactly_what_it_could_not_keep()
{
    let env = Env::new(StandinConfig::default()).await;
    let disk = Tmpfs::mount(env.dir.path(), "8m");
    let queue = disk.0.join("queue.db");
    let mut d = Daemon::start(&env, &queue, "");
    d.healthy().await;
    let mut first = d.connect(0.0).await;
    first.write_all(&punch_lines(0..1)).await.unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(1))
        .await
        .expect("the first punch was not delivered");

    disk.fill("ballast");
    let sent = send_until_commits_fail(&d, &mut first, 1).await;
    let (code, h) = d.health().await;
    assert_eq!(code, 503, "{h}");
    let (read, held) = read_and_held(&d).await;
    assert!(
        read as usize <= sent && held as usize <= ROUND && held > 0,
        "read {read} of {sent} lines, {held} punches in memory: {h}"
    );
    assert!(
        has_condition(
            &h,
            "storage_failing",
            &format!("queue {} refuses commits", queue.display())
        ) && has_condition(&h, "storage_failing", "reading from the clocks is paused"),
        "{h}"
    );

    // status: the daemon runs, and says what is wrong
    let st = until_async(
        "status --json with the storage condition",
        &d.log,
        || async {
            let st = status_json(&d.config).await;
            has_condition(&st, "storage_failing", "refuses commits").then_some(st)
        },
    )
    .await;
    assert_eq!(st["daemon"]["running"], true, "{st}");
    let text = status_text(&d.config).await;
    assert!(
        text.contains(&format!(
            "daemon:    running (pid {}",
            d.child.id().unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("  - storage_failing: storage: queue"),
        "{text}"
    );

    // another connection offers a flood: not a line of it is read
    let second = d.connect(1.0).await;
    let taken = flood_until_blocked(&second, sent).await;
    assert!(taken > 0);
    assert_eq!(
        read_and_held(&d).await,
        (read, held),
        "the daemon read while nothing could be committed"
    );

    // SIGTERM: the stop ends within the unit's timeout and counts what it could not keep
    let stop_timeout = unit_stop_timeout();
    let asked = Instant::now();
    kill(pid_of(&d.child), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(stop_timeout, d.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still running {stop_timeout:?} after SIGTERM (TimeoutStopSec): systemd would kill it; log:\n{}",
                d.log_text()
            )
        })
        .unwrap();
    let took = asked.elapsed();
    let log = d.log_text();
    assert!(exit.code().is_some(), "{exit:?}: {took:?}\n{log}");
    assert!(
        log.contains(&format!(
            "device door-1: {held} punches read from the clock were not committed (the queue refused writes: "
        )) && log.contains("and are lost: a tcp clock without ack_template does not keep what it has sent"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "clockbridge stopped with {held} punches not committed: {held} lost, 0 still held by their clocks"
        )),
        "{log}"
    );
    assert!(!log.contains("still in the clock"), "{log}");
    drop((first, second));
}

/// Break 3, continued: once space returns, the gate opens by itself and every punch (the round
/// that was held in memory and what the clocks kept in the kernel's buffers meanwhile) is
/// committed and delivered once, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_space_returns_every_punch_held_back_is_delivered_once() {
    let env = Env::new(StandinConfig::default()).await;
    let disk = Tmpfs::mount(env.dir.path(), "8m");
    let d = Daemon::start(&env, &disk.0.join("queue.db"), "");
    d.healthy().await;
    let mut first = d.connect(0.0).await;
    first.write_all(&punch_lines(0..1)).await.unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(1))
        .await
        .expect("the first punch was not delivered");

    let ballast = disk.fill("ballast");
    let sent = send_until_commits_fail(&d, &mut first, 1).await;
    let held_back = read_and_held(&d).await;
    let mut second = d.connect(1.0).await;
    let more = 1_000;
    second
        .write_all(&punch_lines(sent..sent + more))
        .await
        .unwrap();
    assert_eq!(read_and_held(&d).await, held_back);

    std::fs::remove_file(&ballast).unwrap();
    let total = sent + more;
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(total))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {total} punches delivered after space returned; log:\n{}",
                env.standin.stored_len(),
                d.log_text()
            )
        });
    assert_eq!(assert_each_written_once(&env.standin), total);
    d.until_metric(
        "every punch read",
        "clockbridge_device_lines_read_total",
        |v| v as usize == total,
    )
    .await;
    // and nothing is wrong any more
    d.healthy().await;
    drop((first, second));
    stop(d.child, &d.log).await;
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("ingest: the queue accepts punches again; reading from the clocks resumes"),
        "{log}"
    );
    assert!(!log.contains("not committed"), "{log}");
}

// ---------------------------------------------------------------------------------------------------
// break 4: a queue file that exists is opened only if it is a whole queue

/// Runs `clockbridge run` on a queue it must refuse: it exits non-zero on its own; returns its log.
async fn refused_run(env: &Env, queue: &Path) -> String {
    let config = env.write_config_for(queue, "");
    let log = env.dir.path().join(format!(
        "refused-{}.log",
        queue
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    ));
    let mut child = spawn_daemon(&config, &log);
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "run did not refuse the queue: still running; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(exit.code(), Some(1), "{exit:?}: {text}");
    text
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Break 4: a 0-byte queue file beside a `-wal` that holds queued punches, and a queue whose
/// `outbox` table was dropped, are refused by `run` with the path and what to do, and left exactly
/// as they were (no new queue over them, the `-wal` byte for byte); only where nothing is does
/// `run` create a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_gutted_queue_is_refused_untouched_and_only_an_empty_path_gets_a_new_queue()
{
    use std::sync::Arc;
    let env = Env::new(StandinConfig::default()).await;

    // a -wal holding 3,000 queued punches (copied while its queue is open), beside a 0-byte file
    let (live_dir, truncated_dir) = (
        env.dir.path().join("live"),
        env.dir.path().join("truncated"),
    );
    std::fs::create_dir_all(&truncated_dir).unwrap();
    let (live, _) = clockbridge::queue::Queue::open(&live_dir.join("queue.db")).unwrap();
    for chunk in punches("door-1", 3_000).chunks(1_000) {
        live.insert(Arc::new(records(chunk))).await.unwrap();
    }
    let wal = std::fs::read(live_dir.join("queue.db-wal")).unwrap();
    assert!(wal.len() > 100_000, "the -wal holds {} bytes", wal.len());
    drop(live);
    let queue = truncated_dir.join("queue.db");
    std::fs::write(&queue, b"").unwrap();
    std::fs::write(truncated_dir.join("queue.db-wal"), &wal).unwrap();
    let log = refused_run(&env, &queue).await;
    let wal_path = truncated_dir.join("queue.db-wal");
    assert!(
        log.contains(&format!(
            "clockbridge: queue {}: cannot open: is empty (0 bytes): ",
            queue.display()
        )) && log.contains(&format!(
            "{} ({} bytes) may still hold queued records: leave it where it is",
            wal_path.display(),
            wal.len()
        )) && log.contains("clockbridge never recreates a queue that exists"),
        "{log}"
    );
    assert!(!log.contains("clockbridge started"), "{log}");
    assert_eq!(std::fs::metadata(&queue).unwrap().len(), 0);
    assert!(
        std::fs::read(&wal_path).unwrap() == wal,
        "the -wal was changed"
    );
    // nothing was created beside them but the lock file of the refused daemon
    assert_eq!(
        names_in(&truncated_dir),
        ["queue.db", "queue.db-wal", "queue.db.lock"]
    );

    // a whole queue whose outbox table was dropped by hand
    let gutted_dir = env.dir.path().join("gutted");
    let queue = gutted_dir.join("queue.db");
    crate::crash::prefill(&queue, 10).await;
    {
        let conn = rusqlite::Connection::open(&queue).unwrap();
        conn.execute_batch("DROP TABLE outbox").unwrap();
    }
    let before = std::fs::read(&queue).unwrap();
    let log = refused_run(&env, &queue).await;
    assert!(
        log.contains(&format!(
            "clockbridge: queue {}: cannot open: is not a whole clockbridge queue: schema version ",
            queue.display()
        )) && log.contains("but no table outbox (dropped by hand, or another program's file?)"),
        "{log}"
    );
    assert!(
        std::fs::read(&queue).unwrap() == before,
        "the file was changed"
    );
    assert_eq!(names_in(&gutted_dir), ["queue.db", "queue.db.lock"]);

    // where nothing is, a queue is created, and the daemon runs on it
    let queue = env.dir.path().join("new").join("queue.db");
    let d = Daemon::start(&env, &queue, "");
    d.healthy().await;
    let st = status_json(&d.config).await;
    assert_eq!(st["daemon"]["running"], true, "{st}");
    assert_eq!(st["queue"]["path"], queue.display().to_string());
    assert_eq!(st["queue"]["pending"], 0);
    stop(d.child, &d.log).await;
    assert!(clockbridge::queue::open_read_only(&queue).is_ok());
}

// ---------------------------------------------------------------------------------------------------
// break 5: one daemon per queue

/// Break 5: while a daemon has rows in flight, a second `run` on its queue is refused naming the
/// first one's pid, before it touches the queue: the first one's rows are not put back and sent
/// again (each punch reaches the platform once, in no more requests than one daemon makes), while
/// `import`, `submit`, `status` and `dlq` work beside the running daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_queue_is_refused_with_the_first_ones_pid_and_the_tools_work_beside_it(
) {
    let env = Env::new(StandinConfig {
        // each request stays in flight a while: the first daemon has 16 batches out at a time
        latency: Duration::from_millis(700),
        ..StandinConfig::default()
    })
    .await;
    let n = 1_000;
    let queue = env.queue_path();
    let prefilled = crate::crash::prefill(&queue, n).await;
    let first = Daemon::start(&env, &queue, "");
    let pid = first.child.id().unwrap();
    until_async("rows in flight", &first.log, || async {
        let st = status_json(&first.config).await;
        (st["queue"]["in_flight"].as_u64().unwrap() > 0).then_some(())
    })
    .await;

    let second_log = env.dir.path().join("second.log");
    let mut second = spawn_daemon(&first.config, &second_log);
    let exit = tokio::time::timeout(PATIENCE, second.wait())
        .await
        .expect("the second daemon was not refused")
        .unwrap();
    let text = std::fs::read_to_string(&second_log).unwrap();
    assert_eq!(exit.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "clockbridge: queue {} is in use by clockbridge pid {pid}: only one daemon may run on a queue",
            queue.display()
        )),
        "{text}"
    );
    assert!(!text.contains("pending again"), "{text}");

    // the tools, beside the running daemon
    let file = env.dir.path().join("attlog.dat");
    std::fs::write(&file, punch_lines(n..n + 10)).unwrap();
    let out = clockbridge_cli(
        &[
            "import",
            "--device",
            "door-1",
            "--json",
            file.to_str().unwrap(),
        ],
        &first.config,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --json: one object per file
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(imported["queued"], 10, "{imported}");
    let csv = env.dir.path().join("approvals.csv");
    crate::hr_hardening::approvals_csv(&csv, 2);
    let out = clockbridge_cli(
        &["submit", "approvals", "--json", csv.to_str().unwrap()],
        &first.config,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(submitted["queued"], 2, "{submitted}");
    let out = clockbridge_cli(&["dlq", "list"], &first.config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no dead letters\n");
    let st = status_json(&first.config).await;
    assert_eq!(
        (st["daemon"]["running"].clone(), st["daemon"]["pid"].clone()),
        (Value::Bool(true), Value::from(pid)),
        "{st}"
    );
    assert!(status_text(&first.config)
        .await
        .starts_with(&format!("daemon:    running (pid {pid})\n")),);

    // everything reaches the platform once, at one daemon's request rate
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n + 10))
        .await
        .expect("not every punch was delivered");
    until("the approvals delivered", &first.log, || {
        (env.standin.approvals().len() == 2).then_some(())
    })
    .await;
    stop(first.child, &first.log).await;
    assert_eq!(assert_each_written_once(&env.standin), n + 10);
    let stored: std::collections::HashSet<String> = env
        .standin
        .stored()
        .iter()
        .map(|f| f.idempotent_id().unwrap().to_string())
        .collect();
    assert!(prefilled.is_subset(&stored));
    let stats = env.standin.stats();
    assert_eq!(
        stats.records_duplicate, 0,
        "rows were sent twice: {stats:?}"
    );
    let requests = env
        .standin
        .requests_to(clockbridge_testkit::standin::Api::UserFlows);
    assert!(
        requests <= (n as u64 + 10).div_ceil(50) + 1,
        "{requests} requests for {} punches in batches of 50: {stats:?}",
        n + 10
    );
}

// ---------------------------------------------------------------------------------------------------
// break 6: file descriptors

/// The daemon's limit of open files in this test (soft and hard): far below the default cap of
/// clock connections, so the cap comes from the limit less its reserve of 64.
const NOFILE: u64 = 256;

/// Break 6: under a low limit of open files, a flood of idle connections to a listening clock is
/// capped within the limit (those beyond are refused at once, counted and logged), so `/healthz`
/// answers, a clock that connects once there is room is read and its punches are uploaded; and
/// `idle_timeout` closes a silent connection (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_cap_are_refused_and_counted_while_health_and_uploads_go_on() {
    let env = Env::new(StandinConfig::default()).await;
    let quiet: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let d = Daemon::start_with(
        &env,
        &env.queue_path(),
        &format!(
            "\n[[devices]]\nid = \"door-2\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"{quiet}\"\ntimezone = \"Asia/Shanghai\"\nidle_timeout = 1\n"
        ),
        |cmd| {
            // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        NOFILE,
                        NOFILE,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        },
    );
    d.healthy().await;
    let cap = clockbridge::limits::clock_connection_cap(
        clockbridge::limits::DEFAULT_MAX_CLOCK_CONNECTIONS,
        NOFILE,
    );
    assert!(cap < 256, "the cap {cap} is not the limit's");
    let log = d.log_text();
    assert!(
        log.contains(&format!(
            "open files: soft limit {NOFILE}, hard limit {NOFILE}; clock connections: at most {cap} on all listening devices together"
        )) && log.contains(&format!(
            "WARN open files: the soft limit of {NOFILE} leaves room for {cap} clock connections, fewer than limits.max_clock_connections = 1024"
        )),
        "{log}"
    );

    // idle_timeout: a silent connection is closed by the daemon and counted
    let mut silent = TcpStream::connect(quiet).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the silent connection was not closed")
    .unwrap_or(0);
    assert_eq!(n, 0, "the daemon wrote to a silent clock");
    until_async("the idle close counted", &d.log, || async {
        let m = d.scrape().await;
        (metric(
            &m,
            "clockbridge_device_connections_closed_idle",
            &[("device", "door-2")],
        ) == 1.0)
            .then_some(())
    })
    .await;

    // a flood of idle connections to door-1: the cap's worth are kept, the rest refused
    let extra = 40;
    let mut open = Vec::new();
    for _ in 0..cap + extra {
        open.push(TcpStream::connect(d.clock).await.unwrap());
    }
    let refused = d
        .until_metric(
            "the refused connections counted",
            "clockbridge_device_connections_refused",
            |v| v as usize == extra,
        )
        .await;
    d.until_metric(
        "the cap's worth of connections open",
        "clockbridge_device_connections",
        |v| v as usize == cap,
    )
    .await;
    assert_eq!(refused as usize, extra);
    // health answers, and says nothing is wrong: the descriptors kept in reserve serve it
    let (code, h) = d.health().await;
    assert_eq!(code, 200, "{h}");
    let log = d.log_text();
    assert!(
        log.contains("refused a connection from 127.0.0.1:") && log.contains(&format!(
            "all listening devices together have [limits] max_clock_connections = {cap} open (within the limit of open files)"
        )),
        "{log}"
    );
    until_async(
        "status --json with the refused connections",
        &d.log,
        || async {
            let st = status_json(&d.config).await;
            let door1 = st["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == "door-1")
                .cloned()
                .unwrap();
            (door1["connections_refused"] == extra).then_some(())
        },
    )
    .await;

    // room for one: a clock that connects now is read, and its punches are uploaded
    open.truncate(open.len() - extra - 1);
    d.until_metric("a place freed", "clockbridge_device_connections", |v| {
        v as usize == cap - 1
    })
    .await;
    let mut clock = d.connect((cap - 1) as f64).await;
    clock.write_all(&punch_lines(0..3)).await.unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(3))
        .await
        .expect("the punches of a connection within the cap were not uploaded");
    assert_eq!(assert_each_written_once(&env.standin), 3);
    let (code, h) = d.health().await;
    assert_eq!(code, 200, "{h}");
    drop((open, clock, silent));
    stop(d.child, &d.log).await;
}

// ---------------------------------------------------------------------------------------------------
// break 7: a queue damaged under the running daemon

/// Overwrites pages `pages` (1-based) of the file at `path` with pseudo-random bytes (a fixed
/// seed: the same damage every run), each page's first byte made an invalid page type.
fn scribble(path: &Path, page_size: u64, pages: &[i64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in pages {
        assert!(p > 1, "page 1 holds the database header");
        let mut page = vec![0u8; page_size as usize];
        for b in page.iter_mut() {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        page[0] = 0xff;
        f.write_all_at(&page, (p as u64 - 1) * page_size).unwrap();
    }
    f.sync_all().unwrap();
}

/// Break 7: pages in the middle of the queue's `outbox` table are overwritten with random bytes
/// while the daemon runs with many rows pending; once the sender reaches them, `/healthz` fails
/// naming the damage, `status` shows it, and the log has an ERROR that says to stop, how to recover
/// with `sqlite3 .recover`, and which files lie beside the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_damaged_under_the_running_daemon_fails_health_and_the_log_says_how_to_recover() {
    use clockbridge_testkit::standin::Fault;
    let env = Env::new(StandinConfig::default()).await;
    let queue = env.queue_path();
    crate::crash::prefill(&queue, 6_000).await;
    // the platform refuses for now: the sender is blocked, every row stays pending, and the
    // daemon reads no row of the table's middle
    env.standin.set_sticky_fault(Some(Fault::NoPermission));
    let d = Daemon::start(&env, &queue, "");
    d.condition("sender_blocked", "").await;

    {
        let conn = rusqlite::Connection::open(&queue).unwrap();
        conn.busy_timeout(PATIENCE).unwrap();
        // every committed page into the file itself, so that what is written below is what the
        // daemon reads (a page with a newer copy in the -wal would hide the damage)
        let (busy, log, done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((busy, log, done), (0, 0, 0), "checkpoint");
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let leaves: Vec<i64> = conn
            .prepare(
                "SELECT pageno FROM dbstat WHERE name = 'outbox' AND pagetype = 'leaf' ORDER BY path",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(leaves.len() > 30, "{} leaf pages", leaves.len());
        // the middle third of the table's rows, in key order
        scribble(
            &queue,
            page_size as u64,
            &leaves[leaves.len() / 3..2 * leaves.len() / 3],
        );
        // a write by another connection: the daemon's connection drops its cached pages at its
        // next read, so it reads the damaged ones from the file
        conn.execute(
            "INSERT OR REPLACE INTO runtime(key, value, updated_at) VALUES ('hardening-test', '', 0)",
            [],
        )
        .unwrap();
    }
    assert_eq!(d.health().await.0, 503, "sender blocked");

    // the platform accepts: the sender works its way into the damaged pages
    env.standin.set_sticky_fault(None);
    let (code, h) = d.condition("queue_damaged", ".recover").await;
    assert_eq!(code, 503, "{h}");
    assert!(
        has_condition(
            &h,
            "queue_damaged",
            &format!("queue {} is damaged (", queue.display())
        ),
        "{h}"
    );
    let st = until_async("status --json with the damage", &d.log, || async {
        let st = status_json(&d.config).await;
        has_condition(&st, "queue_damaged", ".recover").then_some(st)
    })
    .await;
    assert_eq!(st["daemon"]["running"], true, "{st}");
    let text = status_text(&d.config).await;
    assert!(
        text.contains(&format!(
            "  - queue_damaged: queue {} is damaged",
            queue.display()
        )),
        "{text}"
    );
    let log = d.log_text();
    let dir = queue.parent().unwrap().display().to_string();
    let error = log
        .lines()
        .find(|l| l.contains(" ERROR ") && l.contains("is damaged"))
        .unwrap_or_else(|| panic!("no ERROR about the damage:\n{log}"));
    for part in [
        "stop clockbridge (systemctl stop clockbridge)",
        &format!("sqlite3 {} '.recover'", queue.display()),
        &format!("beside it in {dir}: "),
        "queue.db-wal",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    assert_eq!(
        log.matches("is damaged (").count(),
        1,
        "the damage was logged more than once:\n{log}"
    );
    stop(d.child, &d.log).await;
}

// ---------------------------------------------------------------------------------------------------
// break 8: an upstream slower than the request timeout; a read-only queue

/// Break 8: when every request outlasts `feishu.request_timeout_secs`, the timeouts are a
/// condition (not only WARN lines): `/healthz` fails and `status` says that the platform is slower
/// than the timeout and what to do; once it answers in time, the condition clears and every punch
/// is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_slower_than_the_request_timeout_is_a_condition_in_health_and_status() {
    let env = Env::new(StandinConfig {
        latency: Duration::from_secs(3),
        ..StandinConfig::default()
    })
    .await;
    let queue = env.queue_path();
    let n = 150;
    let expected = crate::crash::prefill(&queue, n).await;
    let d = Daemon::start_with(&env, &queue, "", |cmd| {
        cmd.env("CLOCKBRIDGE__FEISHU__REQUEST_TIMEOUT_SECS", "1");
    });
    let (code, h) = d
        .condition(
            "upstream_timeouts",
            "got no answer within feishu.request_timeout_secs = 1 s",
        )
        .await;
    assert_eq!(code, 503, "{h}");
    assert!(
        has_condition(&h, "upstream_timeouts", "raise feishu.request_timeout_secs"),
        "{h}"
    );
    until_async("status --json with the timeouts", &d.log, || async {
        let st = status_json(&d.config).await;
        has_condition(&st, "upstream_timeouts", "request_timeout_secs = 1 s").then_some(())
    })
    .await;
    let text = status_text(&d.config).await;
    assert!(
        text.contains("  - upstream_timeouts: sender user_flow: its last ")
            && text.contains("requests timed out (no answer within feishu.request_timeout_secs)"),
        "{text}"
    );

    // the platform answers in time again
    env.standin.set_latency(Duration::ZERO);
    d.healthy().await;
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .expect("not every punch was delivered");
    stop(d.child, &d.log).await;
    assert_stored_exactly_once(&env.standin, &expected);
}

/// Break 8: a queue file that cannot be written (a read-only mount of it: root cannot write it
/// either) is refused when `run` opens it, with one error naming the path and what to check,
/// instead of an error at every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_queue_is_refused_at_start_with_one_error_naming_its_path() {
    let env = Env::new(StandinConfig::default()).await;
    let queue = env.queue_path();
    crate::crash::prefill(&queue, 3).await;
    let before = std::fs::read(&queue).unwrap();
    let _ro = ReadOnlyFile::bind(&queue);
    let log = refused_run(&env, &queue).await;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.starts_with("clockbridge:"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].starts_with(&format!(
            "clockbridge: queue {}: cannot open: cannot write it (",
            queue.display()
        )) && lines[0].contains("must be writable by the user clockbridge runs as")
            && lines[0].contains("findmnt -T"),
        "{log}"
    );
    assert!(!log.contains("clockbridge started"), "{log}");
    assert!(std::fs::read(&queue).unwrap() == before);
}

// ---------------------------------------------------------------------------------------------------
// break 9: SIGBUS

/// Break 9: a bus error (what SQLite's mapped `-shm` raises when its file can no longer be backed)
/// kills the daemon as before, but not silently: its log says why, names the `-shm` file and what
/// to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_error_kills_the_daemon_with_a_line_naming_the_shm_file_and_what_to_check() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new(StandinConfig::default()).await;
    let queue = env.queue_path();
    let mut d = Daemon::start(&env, &queue, "");
    d.healthy().await;
    kill(pid_of(&d.child), Signal::SIGBUS).unwrap();
    let exit = tokio::time::timeout(PATIENCE, d.child.wait())
        .await
        .expect("the daemon survived SIGBUS")
        .unwrap();
    assert_eq!(exit.signal(), Some(Signal::SIGBUS as i32), "{exit:?}");
    let log = d.log_text();
    let dir = queue.parent().unwrap().display().to_string();
    let line = log
        .lines()
        .find(|l| l.starts_with("clockbridge: SIGBUS (bus error)"))
        .unwrap_or_else(|| panic!("no SIGBUS line:\n{log}"));
    for part in [
        &format!("{}-shm", queue.display()),
        &format!("df {dir}"),
        "read-only",
        "nothing committed to the queue is lost",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
}
