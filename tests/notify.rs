//! systemd notifications of the real binary: `clockbridge run` is started with `NOTIFY_SOCKET` pointing
//! at a datagram socket this test binds (as systemd's own), and the test reads what a service manager
//! would receive: `READY=1` only once the queue exists, `WATCHDOG=1` again and again while the daemon is
//! healthy, `STOPPING=1` on SIGTERM, then a clean exit.
//!
//! Its own test binary: the notification socket and the watchdog are per process, and these tests
//! spawn daemons that must not mix with the integration tests'.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clockbridge_testkit::standin::{Standin, StandinConfig};

/// The integration tests' helpers (this binary uses only the configuration writer).
#[allow(dead_code)]
#[path = "util.rs"]
mod util;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Bounds a failure only: every wait below ends on an event long before this on a healthy run.
use util::PATIENCE;

/// One listen-mode clock: it binds a free port on loopback and waits for a clock that never dials.
const DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#;

fn write_config(dir: &Path, base_url: &str, queue: &Path) -> PathBuf {
    let p = dir.join("clockbridge.toml");
    std::fs::write(&p, util::config_toml(base_url, queue, DEVICE)).unwrap();
    p
}

/// A daemon under a fake service manager: the child process and the notification socket it writes to.
struct Supervised {
    child: Child,
    socket: UnixDatagram,
    log: PathBuf,
    /// Every notification received so far, in order.
    seen: Vec<String>,
}

impl Supervised {
    /// Starts `clockbridge run` with `NOTIFY_SOCKET` (and `WATCHDOG_USEC` when given).
    fn start(dir: &Path, config: &Path, watchdog: Option<(&str, Option<&str>)>) -> Supervised {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clockbridge"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((usec, pid)) = watchdog {
            cmd.env("WATCHDOG_USEC", usec);
            if let Some(pid) = pid {
                cmd.env("WATCHDOG_PID", pid);
            }
        }
        Supervised {
            child: cmd.spawn().unwrap(),
            socket,
            log,
            seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        format!(
            "notifications so far: {:?}\ndaemon log:\n{}",
            self.seen,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// The next notification, or `None` when `deadline` passes first (a blocking read with a timeout).
    fn next_before(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                Some(msg)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notification socket: {e}"),
        }
    }

    /// Reads the notifications already queued on the socket, without waiting.
    fn drain(&mut self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.seen
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Waits for a notification holding the line `line`; returns the whole datagram.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.next_before(deadline) {
                Some(msg) if has_line(&msg, line) => return msg,
                Some(_) => {}
                None => panic!("no {line} within {PATIENCE:?}\n{}", self.context()),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit (on a helper thread, so the wait has a bound).
    fn wait_exit(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(self.child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = tx.send(self.child.wait());
            });
            match rx.recv_timeout(PATIENCE) {
                Ok(status) => status.unwrap(),
                Err(_) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    panic!("daemon did not exit within {PATIENCE:?}");
                }
            }
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| l.strip_prefix("STATUS="))
}

#[test]
fn ready_after_the_queue_exists_watchdog_while_healthy_stopping_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(Standin::start(StandinConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue.db");
    let config = write_config(dir.path(), &standin.base_url(), &queue);
    let mut d = Supervised::start(dir.path(), &config, Some(("2000000", None)));

    // READY=1 comes once daemon::start returned: the queue file exists by then
    let ready = d.wait_for("READY=1");
    assert!(
        queue.exists(),
        "READY=1 before the queue file exists\n{}",
        d.context()
    );
    let starting = d.seen.iter().position(|m| {
        status_of(m)
            .map(|s| s.starts_with("starting"))
            .unwrap_or(false)
    });
    assert_eq!(
        starting,
        Some(0),
        "the first notification says it is starting\n{}",
        d.context()
    );
    let status = status_of(&ready).unwrap_or_default();
    assert!(
        status.starts_with("ready: 1 device (") && status.contains("queue 0 pending"),
        "{status:?}"
    );
    assert!(
        !d.seen[..d.seen.len() - 1]
            .iter()
            .any(|m| has_line(m, "WATCHDOG=1")),
        "watchdog pinged before READY=1\n{}",
        d.context()
    );

    // WATCHDOG_USEC=2 s: a healthy daemon pings every second, again and again
    for _ in 0..4 {
        d.wait_for("WATCHDOG=1");
    }

    d.signal(Signal::SIGTERM);
    let stopping = d.wait_for("STOPPING=1");
    assert!(
        status_of(&stopping).unwrap_or_default().contains("SIGTERM"),
        "{stopping:?}"
    );
    let exit = d.wait_exit();
    assert!(
        exit.success(),
        "daemon did not stop cleanly on SIGTERM: {exit:?}\n{}",
        d.context()
    );
    // nothing after STOPPING=1 feeds the watchdog
    let after: Vec<&String> = d
        .seen
        .iter()
        .skip_while(|m| !has_line(m, "STOPPING=1"))
        .collect();
    assert!(
        !after.iter().any(|m| has_line(m, "WATCHDOG=1")),
        "watchdog pinged after STOPPING=1\n{}",
        d.context()
    );
    rt.block_on(standin.shutdown());
}

#[test]
fn no_watchdog_pings_when_the_watchdog_belongs_to_another_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(Standin::start(StandinConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue.db");
    let config = write_config(dir.path(), &standin.base_url(), &queue);
    // WATCHDOG_PID names another process (pid 1): sd_watchdog_enabled() says no
    let mut d = Supervised::start(dir.path(), &config, Some(("2000000", Some("1"))));
    d.wait_for("READY=1");
    // a watchdog of 2 s would have pinged twice within 3 s
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(msg) = d.next_before(deadline) {
        assert!(
            !has_line(&msg, "WATCHDOG=1"),
            "pinged a watchdog that is not ours\n{}",
            d.context()
        );
    }
    d.signal(Signal::SIGTERM);
    d.wait_for("STOPPING=1");
    assert!(d.wait_exit().success(), "{}", d.context());
    rt.block_on(standin.shutdown());
}

#[test]
fn a_failed_start_says_why_and_never_says_ready() {
    let dir = tempfile::tempdir().unwrap();
    // the queue's directory cannot be created: a file is in the way
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let queue = blocker.join("queue.db");
    let config = write_config(dir.path(), "http://127.0.0.1:9", &queue);
    let mut d = Supervised::start(dir.path(), &config, Some(("2000000", None)));
    let exit = d.wait_exit();
    assert_eq!(exit.code(), Some(1), "{}", d.context());
    d.drain();
    assert!(
        !d.seen.iter().any(|m| has_line(m, "READY=1")),
        "READY=1 from a daemon that failed to start\n{}",
        d.context()
    );
    let failed = d
        .seen
        .iter()
        .filter_map(|m| status_of(m))
        .find(|s| s.starts_with("failed to start: "));
    assert!(
        failed.is_some_and(|s| s.contains("not-a-dir")),
        "{}",
        d.context()
    );
}
