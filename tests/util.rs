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
        let p = self.dir.path().join("clockbridge.toml");
        std::fs::write(&p, self.toml(extra)).unwrap();
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
