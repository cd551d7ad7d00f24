//! HR files as an attacker (or a careless HR system) would drop them (issue 16): a large file must not
//! freeze the daemon, a file the daemon dies on must not crash-loop it, a huge file is refused by
//! size, and names, links and swapped directories cannot forge logs or lead files out of the inbox.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clockbridge_testkit::standin::StandinConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::util::*;

const MARKER: &str = clockbridge::inbox::MARKER;

/// An approvals CSV of `rows` valid leave items (distinct ids).
pub(crate) fn approvals_csv(path: &Path, rows: usize) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        w,
        "type,user_id,date,start_time,end_time,idempotent_id,reason,unit,interval,uniq_id,name_ch,default_locale"
    )
    .unwrap();
    for i in 0..rows {
        let day = 1 + i % 28;
        writeln!(
            w,
            "leave,u{},202603{day:02},2026-03-{day:02} 09:00:00,2026-03-{day:02} 18:00:00,HR-{i},family,1,28800,annual,年假,ch",
            i % 500
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// `clockbridge run`, under a fake service manager when `notify` names its socket.
fn spawn_daemon(config: &Path, log: &Path, notify: Option<&Path>) -> Child {
    let mut cmd = daemon_command(config, log);
    if let Some(socket) = notify {
        cmd.env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", "2000000");
    }
    cmd.spawn().unwrap()
}

/// Bounds the wait for a large file to be taken by the (unoptimised) test binary on a loaded machine:
/// it only bounds a failure.
const LONG_PATIENCE: Duration = Duration::from_secs(600);

/// Rows of the large files: a few seconds of work for the test binary, far longer than the checks
/// made while it works.
const LARGE: usize = 20_000;

fn attempt(dir: &Path) -> Option<Value> {
    let text = std::fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn report(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn inbox_config(env: &Env, dir: &Path, extra: &str) -> PathBuf {
    env.write_config(&format!(
        "[log]\nlevel = \"info\"\n\n[inbox]\napprovals = \"{}\"\npoll_interval = 1\n{extra}",
        dir.display()
    ))
}

/// Break 1: the file is parsed off the async runtime and queued in chunks, so while it is taken the
/// daemon answers `/healthz`, accepts a TCP clock and commits and delivers its punches, and keeps
/// pinging the watchdog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_approvals_csv_in_the_inbox_leaves_health_punches_and_the_watchdog_working() {
    let env = Env::new(StandinConfig::default()).await;
    let inbox = env.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let rows = LARGE;
    approvals_csv(&inbox.join("big.csv"), rows);
    let (http, clock) = (free_port(), free_port());
    let config = env.write_config(&format!(
        "[log]\nlevel = \"info\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[inbox]\napprovals = \"{}\"\npoll_interval = 1\n\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:{clock}\"\ntimezone = \"Asia/Shanghai\"\n",
        inbox.display()
    ));
    let log = env.dir.path().join("daemon.log");
    let socket_path = env.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let child = spawn_daemon(&config, &log, Some(&socket_path));

    // the file is being taken
    until("the take of big.csv", &log, || attempt(&inbox)).await;

    // health answers
    let url = format!("http://127.0.0.1:{http}/healthz");
    let health = tokio::time::timeout(PATIENCE, reqwest::get(&url))
        .await
        .expect("/healthz did not answer while the file was taken")
        .unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap());

    // a clock connects and its punches are committed and delivered
    let mut s = tokio::time::timeout(
        PATIENCE,
        tokio::net::TcpStream::connect(("127.0.0.1", clock)),
    )
    .await
    .expect("the clock could not connect while the file was taken")
    .unwrap();
    s.write_all(b"        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0\n        2\t2026-03-02 09:00:07\t0\t1\t0\t0\t0\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(2))
        .await
        .expect("the clock's punches were not delivered while the file was taken");

    // the watchdog is pinged (the socket is read to the end, as systemd does: a full socket would
    // block the daemon's notifications)
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                let _ = pings_tx.send(());
            }
        }
    });
    let pinged = tokio::time::timeout(PATIENCE, pings.recv()).await;
    assert!(
        matches!(pinged, Ok(Some(()))),
        "no WATCHDOG=1 while the file was taken"
    );

    // all of that happened while the file was still being taken: otherwise this test showed nothing
    assert!(
        attempt(&inbox).is_some() && inbox.join("big.csv").exists(),
        "big.csv was taken before the checks above finished: make it larger; daemon log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let done = inbox.join("done/big.csv.report.json");
    let r = until_within(LONG_PATIENCE, "done/big.csv.report.json", &log, || {
        report(&done)
    })
    .await;
    assert_eq!(r["status"], "queued");
    assert_eq!(r["records"], rows);
    assert_eq!(r["queued"], rows);
    until("the attempt record removed", &log, || {
        attempt(&inbox).is_none().then_some(())
    })
    .await;
    stop(child, &log).await;
    reader.abort();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("taking the file") && text.contains("big.csv"),
        "{text}"
    );
}

/// Break 2: a file during which the daemon dies is recorded before it is taken; after three deaths
/// it is set aside with a report that says so, instead of killing every start. Taking it again
/// (here: `submit`) queues only what the interrupted attempts had not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_daemon_dies_on_three_times_is_set_aside_with_a_report_instead_of_retried_forever(
) {
    let env = Env::new(StandinConfig::default()).await;
    let inbox = env.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let rows = LARGE;
    let file = inbox.join("poison.csv");
    approvals_csv(&file, rows);
    let config = inbox_config(&env, &inbox, "");
    let log = env.dir.path().join("daemon.log");

    for round in 1..=3u64 {
        let mut child = spawn_daemon(&config, &log, None);
        let a = until("the attempt record", &log, || {
            attempt(&inbox).filter(|a| a["attempts"] == round)
        })
        .await;
        assert_eq!(a["name"], "poison.csv");
        if round == 3 {
            // the last time, once part of the file is queued
            let queue = env.queue_path();
            until_within(LONG_PATIENCE, "a first committed chunk", &log, || {
                let conn = clockbridge::queue::open_read_only(&queue).ok()?;
                let c = clockbridge::queue::read_counts(&conn).ok()?;
                let k = c.by_kind.get(clockbridge::feishu::lanes::approvals::KIND)?;
                (k.pending + k.in_flight + k.delivered > 0).then_some(())
            })
            .await;
        }
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
        child.wait().await.unwrap();
        assert!(
            file.exists(),
            "round {round}: poison.csv was taken before the kill: make it larger"
        );
    }

    let mut child = spawn_daemon(&config, &log, None);
    let rp = inbox.join("rejected/poison.csv.report.json");
    let r = until("rejected/poison.csv.report.json", &log, || report(&rp)).await;
    assert_eq!(r["status"], "rejected");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("stopped 3 times"), "{msg}");
    assert!(inbox.join("rejected/poison.csv").exists());
    assert!(!file.exists());
    until("the attempt record removed", &log, || {
        attempt(&inbox).is_none().then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
    stop(child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("inbox.approvals: taking the file").count(),
        3,
        "{text}"
    );

    // putting the file back (here through submit) queues the rest, each item once
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["submit", "approvals", "--json", "--config"])
        .arg(&config)
        .arg(inbox.join("rejected/poison.csv"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sub["records"], rows);
    assert_eq!(
        sub["queued"].as_u64().unwrap() + sub["duplicates"].as_u64().unwrap(),
        rows as u64
    );
    assert!(
        sub["duplicates"].as_u64().unwrap() > 0,
        "no chunk was committed before the kills: {sub}"
    );
    let (q, _) = clockbridge::queue::Queue::open(&env.queue_path()).unwrap();
    let c = q.counts().await.unwrap();
    let k = c.by_kind[clockbridge::feishu::lanes::approvals::KIND];
    assert_eq!(k.pending + k.in_flight + k.delivered + k.dead, rows as u64);
}

/// Break 2: a file over `max_file_size` is refused unread, with a report; `submit` has the same
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_max_file_size_is_refused_unread_with_a_report() {
    let env = Env::new(StandinConfig::default()).await;
    let inbox = env.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    approvals_csv(&inbox.join("huge.csv"), 100);
    let config = inbox_config(&env, &inbox, "max_file_size = \"2kB\"\n");
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&config, &log, None);
    let rp = inbox.join("rejected/huge.csv.report.json");
    let r = until("rejected/huge.csv.report.json", &log, || report(&rp)).await;
    assert_eq!(r["status"], "rejected");
    assert_eq!(r["queued"], 0);
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("more than the limit of 2000 bytes"), "{msg}");
    assert!(msg.contains("max_file_size"), "{msg}");
    stop(child, &log).await;

    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["submit", "approvals", "--max-file-size", "1KiB", "--config"])
        .arg(&config)
        .arg(inbox.join("rejected/huge.csv"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than the limit of 1024 bytes"), "{err}");
    let (q, _) = clockbridge::queue::Queue::open(&env.queue_path()).unwrap();
    assert_eq!(q.counts().await.unwrap().total.pending, 0);
}

/// Break 8: a name with a newline and an escape sequence cannot forge or colour a log line, and a
/// 254-character name (whose `.report.json` would not fit) is taken once, twice over, each time
/// with its report, without an ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_overlong_file_names_are_escaped_in_the_log_and_taken_once() {
    let env = Env::new(StandinConfig::default()).await;
    let inbox = env.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let config = inbox_config(&env, &inbox, "");
    let log = env.dir.path().join("daemon.log");
    let forged = OsString::from_vec(
        b"a.csv\n2026-01-01T00:00:00Z  INFO clockbridge: all good \x1b[2K.csv".to_vec(),
    );
    approvals_csv(&inbox.join(&forged), 2);
    let child = spawn_daemon(&config, &log, None);
    let done = inbox.join("done");
    let mut rp = done.join(&forged);
    rp.as_mut_os_string().push(".report.json");
    let r = until("the forged name's report", &log, || report(&rp)).await;
    assert_eq!(r["status"], "queued");
    assert_eq!(
        r["name"],
        "a.csv\\n2026-01-01T00:00:00Z  INFO clockbridge: all good \\u{1b}[2K.csv"
    );

    // 254 characters, dropped twice under the same name
    let long = format!("{}.csv", "n".repeat(250));
    for round in 0..2 {
        let tmp = inbox.join("long.part");
        approvals_csv(&tmp, 3 + round);
        std::fs::rename(&tmp, inbox.join(&long)).unwrap();
        let n = until("the long name's report", &log, || {
            let reports: Vec<PathBuf> = std::fs::read_dir(&done)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("nnnn") && n.ends_with(".report.json")
                })
                .collect();
            (reports.len() == round + 1).then_some(reports)
        })
        .await;
        for p in n {
            assert!(p.file_name().unwrap().len() <= 255);
        }
        assert!(!inbox.join(&long).exists());
    }
    stop(child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "a raw ESC reached the log:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line reached the log:\n{text}"
    );
    assert!(text.contains("a.csv\\n2026-01-01"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// Break 8: a `done/` replaced by a symbolic link is never followed: the directory's work stops with
/// an ERROR and a condition in `status`, and resumes once it is a directory again; a symbolic link
/// dropped in the inbox is moved to `rejected/` (the link, not its target) with a report, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_for_done_or_in_the_inbox_are_refused_and_reported() {
    let env = Env::new(StandinConfig::default()).await;
    let inbox = env.dir.path().join("inbox");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let config = inbox_config(&env, &inbox, "");
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&config, &log, None);
    until("done/", &log, || {
        inbox.join("rejected").is_dir().then_some(())
    })
    .await;

    // a link in the inbox
    approvals_csv(&outside.join("target.csv"), 2);
    std::os::unix::fs::symlink(outside.join("target.csv"), inbox.join("link.csv")).unwrap();
    let rp = inbox.join("rejected/link.csv.report.json");
    let r = until("rejected/link.csv.report.json", &log, || report(&rp)).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{r}"
    );
    let moved = std::fs::symlink_metadata(inbox.join("rejected/link.csv")).unwrap();
    assert!(moved.file_type().is_symlink());
    assert!(outside.join("target.csv").exists());

    // done/ swapped for a link outside the inbox
    std::fs::remove_dir(inbox.join("done")).unwrap();
    std::os::unix::fs::symlink(&outside, inbox.join("done")).unwrap();
    approvals_csv(&inbox.join("a.csv"), 2);
    let status = || async {
        let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let condition = loop {
        let st = status().await;
        if let Some(c) = st["inbox"]["approvals"]["condition"].as_str() {
            break c.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no condition: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(condition.contains("symbolic link"), "{condition}");
    assert!(inbox.join("a.csv").exists());
    assert!(!outside.join("a.csv").exists());

    // fixed: the file is taken
    std::fs::remove_file(inbox.join("done")).unwrap();
    std::fs::create_dir(inbox.join("done")).unwrap();
    let rp = inbox.join("done/a.csv.report.json");
    until("done/a.csv.report.json", &log, || report(&rp)).await;
    assert!(!outside.join("a.csv").exists());
    stop(child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("files are never moved through it").count(),
        1,
        "the condition was not logged exactly once:\n{text}"
    );
    assert_eq!(
        text.matches("moving the link to rejected/").count(),
        1,
        "{text}"
    );
}
