//! Shared test support: a temporary directory, a stand-in of the platform, and configs pointing at it.

use std::time::Duration;

use chrono::NaiveDateTime;
use clockbridge::config::Config;
use clockbridge::daemon::{self, RunOptions, Running};
use clockbridge::feishu::lanes::user_flows;
use clockbridge::punch::{normalise, Punch};
use clockbridge::queue::NewRecord;
use clockbridge_testkit::standin::{Standin, StandinConfig};

/// Long enough for any test on a loaded machine; tests wait on events, this only bounds a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub standin: Standin,
}

impl Env {
    pub async fn new(cfg: StandinConfig) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            standin: Standin::start(cfg).await.unwrap(),
        }
    }

    pub fn queue_path(&self) -> std::path::PathBuf {
        self.dir.path().join("queue.db")
    }

    /// A config for the stand-in with fast retries; `extra` is appended (devices, mapping...).
    pub fn toml(&self, extra: &str) -> String {
        config_toml(&self.standin.base_url(), &self.queue_path(), extra)
    }

    /// A config with `CLOCKBRIDGE__...` overrides.
    pub fn config_with(&self, extra: &str, env: &[(&str, &str)]) -> Config {
        Config::from_toml_with_env(
            &self.toml(extra),
            "test",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    pub fn write_config(&self, extra: &str) -> std::path::PathBuf {
        self.write_config_for(&self.queue_path(), extra)
    }

    /// [`Env::write_config`] for a queue at `queue` (a small disk, a read-only one...).
    pub fn write_config_for(&self, queue: &std::path::Path, extra: &str) -> std::path::PathBuf {
        let p = self.dir.path().join("clockbridge.toml");
        std::fs::write(&p, config_toml(&self.standin.base_url(), queue, extra)).unwrap();
        p
    }

    pub async fn start(&self, extra: &str) -> Running {
        self.start_with(extra, &[]).await
    }

    pub async fn start_with(&self, extra: &str, env: &[(&str, &str)]) -> Running {
        let cfg = self.config_with(extra, env);
        daemon::start(
            cfg,
            RunOptions {
                snapshot_interval: Duration::from_millis(200),
                grace: Duration::from_secs(5),
                prune_interval: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap()
    }
}

/// The test configuration: the platform at `base_url`, the queue at `queue`, fast retries, and `extra`
/// appended (devices, mapping...).
pub fn config_toml(base_url: &str, queue: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[feishu]
base_url = "{base_url}"
app_id = "cli_standin"
app_secret = "standin-secret"
employee_type = "employee_id"
request_timeout_secs = 5

[queue]
path = "{queue}"

[sender]
linger_ms = 20
retry_initial_secs = 1
retry_max_secs = 2
app_error_pause_secs = 1
{extra}
"#,
        queue = queue.display(),
    )
}

/// A punch of `user` on `device` at local time `t` (`YYYY-MM-DD HH:MM:SS`).
pub fn punch(device: &str, user: &str, t: &str) -> Punch {
    Punch {
        device_id: device.into(),
        device_user_id: user.into(),
        local_time: NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap(),
        state: Some(0),
        verify: Some(1),
        workcode: None,
        state_text: None,
    }
}

/// `n` distinct punches on `device` (users u0..u{n/10}, times spread over 2026-03-02).
pub fn punches(device: &str, n: usize) -> Vec<Punch> {
    (0..n)
        .map(|i| {
            let secs = 6 * 3600 + i;
            let t = format!(
                "2026-03-02 {:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            punch(device, &format!("u{}", i % 97), &t)
        })
        .collect()
}

/// Submits punches and waits for each to be committed.
pub async fn submit_all(running: &Running, ps: Vec<Punch>) {
    let sink = running.sink().unwrap();
    for p in ps {
        let outcome = sink.submit_committed(p).await.unwrap();
        assert!(outcome.is_committed(), "{outcome:?}");
    }
}

/// Waits until the stand-in holds `n` records and the queue shows `n` delivered, and asserts each was
/// written exactly once.
pub async fn expect_delivered_once(env: &Env, running: &Running, n: usize) {
    env.standin.wait_stored(n).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == n as u64)
        .await
        .unwrap();
    assert_eq!(assert_each_written_once(&env.standin), n);
}

/// Asserts the stand-in holds exactly the idempotent ids `expected`, each written once.
pub fn assert_stored_exactly_once(standin: &Standin, expected: &std::collections::HashSet<String>) {
    assert_eq!(assert_each_written_once(standin), expected.len());
    let stored: std::collections::HashSet<String> = standin
        .stored()
        .iter()
        .map(|f| f.idempotent_id().unwrap().to_string())
        .collect();
    assert_eq!(&stored, expected);
}

/// Asserts each idempotent id the stand-in holds was written exactly once, and returns how many.
pub fn assert_each_written_once(standin: &Standin) -> usize {
    let counts = standin.write_counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    counts.len()
}

/// Queue rows for punches, as ingest makes them with passthrough mapping on a Shanghai device.
pub fn records(ps: &[Punch]) -> Vec<NewRecord> {
    ps.iter()
        .map(|p| {
            let user = p.device_user_id.clone();
            user_flows::record(&normalise(
                p.clone(),
                chrono_tz::Asia::Shanghai,
                "HQ",
                Some(&user),
                chrono::Utc::now(),
                3600,
            ))
        })
        .collect()
}

/// The interpreter of the test venv (`scripts/test-venv.sh`: `target/pyenv`, or `$CLOCKBRIDGE_PYTHON`),
/// which must import `module`. Without it the test fails and says how to make the venv: a test that
/// cannot run here must not pass as if it had (make the venv once with `bash scripts/test-venv.sh`,
/// which needs PyPI; the README's test command does it).
pub fn python_with(module: &str) -> std::path::PathBuf {
    let python = std::env::var_os("CLOCKBRIDGE_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        });
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import {module}: run `bash scripts/test-venv.sh` (once, needs PyPI) to make the \
         test venv, or set CLOCKBRIDGE_PYTHON to a Python that has the packages of \
         tests/python-requirements.txt",
        python.display()
    );
    python
}

// ---------------------------------------------------------------------------------------------------
// the real binary

/// A free TCP port on loopback (bound and released: the daemon binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `clockbridge run --config CONFIG` as a service manager would start it, but not under one (no
/// `NOTIFY_SOCKET`, no watchdog), its standard error (the log) appended to `log`; killed when
/// dropped.
pub fn daemon_command(config: &std::path::Path, log: &std::path::Path) -> tokio::process::Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"));
    cmd.args(["run", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    cmd
}

/// Starts `clockbridge run` ([`daemon_command`]).
pub fn spawn_daemon(config: &std::path::Path, log: &std::path::Path) -> tokio::process::Child {
    daemon_command(config, log).spawn().unwrap()
}

/// The pid of a running child.
pub fn pid_of(child: &tokio::process::Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(child.id().expect("the child has exited") as i32)
}

/// Sends SIGTERM and waits (up to [`PATIENCE`]) for a clean exit.
pub async fn stop(mut child: tokio::process::Child, log: &std::path::Path) {
    nix::sys::signal::kill(pid_of(&child), nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the daemon did not stop on SIGTERM; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .unwrap();
    assert!(
        exit.success(),
        "{exit:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Waits (re-checking every few milliseconds) until `f` gives a value; fails after [`PATIENCE`]
/// with `what` and the log.
pub async fn until<T>(what: &str, log: &std::path::Path, f: impl FnMut() -> Option<T>) -> T {
    until_within(PATIENCE, what, log, f).await
}

/// [`until`] with another bound.
pub async fn until_within<T>(
    patience: Duration,
    what: &str,
    log: &std::path::Path,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`until`], for a check that must await (a request, another process): re-checked every
/// 50 ms.
pub async fn until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    log: &std::path::Path,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `clockbridge ARGS --config CONFIG` to its end.
pub async fn clockbridge_cli(args: &[&str], config: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap()
}

/// `clockbridge status --json`, which must succeed.
pub async fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = clockbridge_cli(&["status", "--json"], config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `clockbridge status` (text), which must succeed.
pub async fn status_text(config: &std::path::Path) -> String {
    let out = clockbridge_cli(&["status"], config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An HTTP GET on loopback (no proxy): the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted when dropped: a small disk
/// that fills up. Mounting needs root (or CAP_SYS_ADMIN):
/// without it the test fails and says so, it does not pass as if it had run.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let point = dir.join("small-disk");
        std::fs::create_dir_all(&point).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&point)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(point),
            other => panic!(
                "needs root to mount a tmpfs: run the tests as root or with CAP_SYS_ADMIN (uid {}: {})",
                nix::unistd::geteuid(),
                match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => format!("cannot run mount: {e}"),
                }
            ),
        }
    }

    /// Fills it up with a file `name`; returns the file's path.
    pub fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A file made read-only by a read-only bind mount of it onto itself (its directory stays
/// writable; root cannot write it either, unlike a file whose mode bits say so), undone when
/// dropped. Mounting needs root: without it the test fails and says so.
pub struct ReadOnlyFile(pub std::path::PathBuf);

impl ReadOnlyFile {
    pub fn bind(path: &std::path::Path) -> ReadOnlyFile {
        let mount = |args: &[&str]| {
            let out = std::process::Command::new("mount")
                .args(args)
                .arg(path)
                .arg(path)
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                other => panic!(
                    "needs root to bind-mount {} read-only: run the tests as root or with CAP_SYS_ADMIN (uid {}: {})",
                    path.display(),
                    nix::unistd::geteuid(),
                    match other {
                        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                        Err(e) => format!("cannot run mount: {e}"),
                    }
                ),
            }
        };
        mount(&["--bind"]);
        let bound = ReadOnlyFile(path.to_path_buf());
        mount(&["-o", "remount,bind,ro"]);
        assert!(
            std::fs::OpenOptions::new().write(true).open(path).is_err(),
            "{} is still writable",
            path.display()
        );
        bound
    }
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

// ---------------------------------------------------------------------------------------------------
// /metrics

/// A `/metrics` page, parsed.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the one sample of `name` whose labels include `labels`.
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            // the parser knows OpenMetrics counters (`_total` samples) only as untyped
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: not a single value: {other:?}"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}
