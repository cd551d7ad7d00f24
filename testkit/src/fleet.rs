//! A fleet of gateways sharing one app: N real `clockbridge run` processes, each with its own queue
//! and backlog (queued beforehand by `clockbridge import`), uploading to one stand-in that enforces
//! the platform's 50 requests/s per API and app (its window is shared by every caller). Used by
//! `benches/fleet.rs` (adaptive against fixed pacing for N = 1, 3, 10).
//!
//! What it measures, from the stand-in's own records (never from the daemons):
//! - **aggregate**: records stored per second, as a ratio of the ceiling (50 requests/s × 50
//!   records = [`CEILING_PER_SEC`] punches/s);
//! - **fairness**: Jain's index over the gateways' rates ([`jain`]: 1 when all are equal, 1/N when
//!   one takes everything);
//! - **429 share**: requests refused by the rate limit as a share of the requests that reached it;
//!
//! each over the whole run and over its steady part (after a warm-up, when every gateway has left
//! its start).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use chrono::Timelike;

use crate::standin::{Api, Standin, StandinConfig};

/// Punches per second the platform admits to one app: 50 requests/s of 50 records.
pub const CEILING_PER_SEC: f64 = 2_500.0;

/// Jain's fairness index of `rates`: (Σx)² / (n · Σx²); 1 for equal rates, 1/n when one gateway
/// has everything (1 for an empty or all-zero list).
pub fn jain(rates: &[f64]) -> f64 {
    let sum: f64 = rates.iter().sum();
    let squares: f64 = rates.iter().map(|x| x * x).sum();
    if rates.is_empty() || squares == 0.0 {
        return 1.0;
    }
    sum * sum / (rates.len() as f64 * squares)
}

/// One run of a fleet.
#[derive(Debug, Clone)]
pub struct FleetRun {
    /// The `clockbridge` binary.
    pub binary: PathBuf,
    /// `adaptive` or `fixed` (`sender.pacing`).
    pub pacing: String,
    /// How long the daemons run.
    pub duration: Duration,
    /// The start of the run left out of the steady figures.
    pub warmup: Duration,
    /// The stand-in's latency per batch_create reply.
    pub latency: Duration,
}

/// What one gateway got.
#[derive(Debug, Clone)]
pub struct GatewayFigures {
    pub id: String,
    /// Records stored over the whole run, and after the warm-up.
    pub stored: usize,
    pub stored_steady: usize,
    /// Its backlog ran out before the end (its rate then says less about the pacing).
    pub ran_dry: bool,
}

/// The figures of one run (see the module's doc).
#[derive(Debug, Clone)]
pub struct FleetFigures {
    pub gateways: Vec<GatewayFigures>,
    pub aggregate: f64,
    pub aggregate_steady: f64,
    pub fairness: f64,
    pub fairness_steady: f64,
    pub requests: usize,
    pub rate_limited: usize,
    pub requests_steady: usize,
    pub rate_limited_steady: usize,
    /// WARN or ERROR lines the daemons logged (other than rate-limit replies).
    pub other_log_lines: Vec<String>,
}

impl FleetFigures {
    pub fn share_429(&self) -> f64 {
        self.rate_limited as f64 / self.requests.max(1) as f64
    }
    pub fn share_429_steady(&self) -> f64 {
        self.rate_limited_steady as f64 / self.requests_steady.max(1) as f64
    }
}

/// A gateway's directory: its configuration, queue and log.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: String,
    pub dir: PathBuf,
    pub backlog: usize,
}

fn config_text(g: &Gateway, base_url: &str, pacing: &str) -> String {
    format!(
        r#"[feishu]
base_url = "{base_url}"
app_id = "cli_standin"
app_secret_file = "{secret}"

[queue]
path = "{queue}"

[sender]
pacing = "{pacing}"

[log]
level = "warn"

[[devices]]
id = "{id}"
kind = "tcp"
mode = "connect"
address = "127.0.0.1:9"
format = "zk-attlog"
timezone = "Asia/Shanghai"
enabled = false
"#,
        secret = g.dir.join("app_secret").display(),
        queue = g.dir.join("queue.db").display(),
        id = g.id,
    )
}

/// Makes `n` gateways under `root` (`gw-1`...), each with `backlog` punches of 30 days ago queued
/// by `clockbridge import` (run `n` at a time).
pub async fn prepare(
    binary: &Path,
    root: &Path,
    n: usize,
    backlog: usize,
) -> anyhow::Result<Vec<Gateway>> {
    let mut gateways = Vec::new();
    let mut imports = Vec::new();
    for i in 1..=n {
        let g = Gateway {
            id: format!("gw-{i}"),
            dir: root.join(format!("gw-{i}")),
            backlog,
        };
        std::fs::create_dir_all(&g.dir)?;
        let secret = g.dir.join("app_secret");
        std::fs::write(&secret, "standin-secret\n")?;
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let config = g.dir.join("clockbridge.toml");
        std::fs::write(&config, config_text(&g, "http://127.0.0.1:9", "adaptive"))?;
        let file = g.dir.join("attlog.dat");
        write_backlog(&file, backlog)?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(["import", "--quiet", "--device", &g.id, "--config"])
            .arg(&config)
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        imports.push(tokio::spawn(async move { cmd.output().await }));
        gateways.push(g);
    }
    for (g, import) in gateways.iter().zip(imports) {
        let out = import.await?.context("clockbridge import")?;
        ensure!(
            out.status.success(),
            "import into {}: {}",
            g.id,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(gateways)
}

/// `n` punches of 1,000 users, one per user per second, from 30 days ago.
fn write_backlog(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    // UTC+8, the gateways' zone (Asia/Shanghai: no daylight saving time since 1991)
    let tz = chrono::FixedOffset::east_opt(8 * 3600).context("offset")?;
    let start = (chrono::Utc::now() - chrono::Duration::days(30))
        .with_timezone(&tz)
        .naive_local()
        .with_nanosecond(0)
        .context("time")?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let t = start + chrono::Duration::seconds((i / 1_000) as i64);
        writeln!(
            w,
            "{:>9}\t{}\t0\t1\t0\t0\t0",
            10_000 + i % 1_000,
            t.format("%Y-%m-%d %H:%M:%S")
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Copies the gateways' queues (as `prepare` left them) to `root`, for a second run from the same
/// start.
pub fn copy(gateways: &[Gateway], root: &Path) -> anyhow::Result<Vec<Gateway>> {
    let mut out = Vec::new();
    for g in gateways {
        let dir = root.join(&g.id);
        std::fs::create_dir_all(&dir)?;
        for name in ["app_secret", "queue.db", "queue.db-wal"] {
            let from = g.dir.join(name);
            if from.exists() {
                std::fs::copy(&from, dir.join(name))?;
            }
        }
        out.push(Gateway {
            id: g.id.clone(),
            dir,
            backlog: g.backlog,
        });
    }
    Ok(out)
}

/// Runs the gateways against a fresh stand-in for `run.duration`, then stops them (SIGTERM) and
/// reads the figures.
pub async fn run(run: &FleetRun, gateways: &[Gateway]) -> anyhow::Result<FleetFigures> {
    let standin = Standin::start(StandinConfig {
        latency: run.latency,
        ..Default::default()
    })
    .await?;
    let mut children = Vec::new();
    let started = Instant::now();
    let started_at = SystemTime::now();
    for g in gateways {
        let config = g.dir.join("clockbridge.toml");
        std::fs::write(&config, config_text(g, &standin.base_url(), &run.pacing))?;
        let child = tokio::process::Command::new(&run.binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("CLOCKBRIDGE_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(g.dir.join("daemon.log"))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", run.binary.display()))?;
        children.push(child);
    }
    let end = started + run.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (g, c) in gateways.iter().zip(children.iter_mut()) {
            if let Ok(Some(st)) = c.try_wait() {
                bail!("{} exited early: {st}", g.id);
            }
        }
    }
    let stopped_at = SystemTime::now();
    let log = standin.rate_log(Api::UserFlows);
    let flows = standin.stored();
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for (g, c) in gateways.iter().zip(children.iter_mut()) {
        let st = tokio::time::timeout(Duration::from_secs(40), c.wait())
            .await
            .with_context(|| format!("{} did not stop within 40 s of SIGTERM", g.id))??;
        ensure!(st.success(), "{} did not stop cleanly: {st}", g.id);
    }
    standin.shutdown().await;

    let steady_from = started_at + run.warmup;
    let mut stored: HashMap<&str, (usize, usize)> = HashMap::new();
    for f in &flows {
        if f.stored_at > stopped_at {
            continue;
        }
        let gw = f.record["external_id"]
            .as_str()
            .and_then(|e| e.split('/').next())
            .unwrap_or("");
        let e = stored.entry(gw).or_default();
        e.0 += 1;
        if f.stored_at >= steady_from {
            e.1 += 1;
        }
    }
    let figures: Vec<GatewayFigures> = gateways
        .iter()
        .map(|g| {
            let (all, steady) = stored.get(g.id.as_str()).copied().unwrap_or_default();
            GatewayFigures {
                id: g.id.clone(),
                stored: all,
                stored_steady: steady,
                ran_dry: all >= g.backlog,
            }
        })
        .collect();
    let total = stopped_at
        .duration_since(started_at)
        .unwrap_or(run.duration)
        .as_secs_f64();
    let steady = (total - run.warmup.as_secs_f64()).max(1e-3);
    let sum = |f: &dyn Fn(&GatewayFigures) -> usize| figures.iter().map(f).sum::<usize>() as f64;
    let steady_start = started + run.warmup;
    let mut other = Vec::new();
    for g in gateways {
        let text = std::fs::read_to_string(g.dir.join("daemon.log")).unwrap_or_default();
        other.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.contains("rate limited"))
                .map(|l| format!("{}: {l}", g.id)),
        );
    }
    Ok(FleetFigures {
        aggregate: sum(&|g| g.stored) / total / CEILING_PER_SEC,
        aggregate_steady: sum(&|g| g.stored_steady) / steady / CEILING_PER_SEC,
        fairness: jain(&figures.iter().map(|g| g.stored as f64).collect::<Vec<_>>()),
        fairness_steady: jain(
            &figures
                .iter()
                .map(|g| g.stored_steady as f64)
                .collect::<Vec<_>>(),
        ),
        requests: log.len(),
        rate_limited: log.iter().filter(|(_, ok)| !ok).count(),
        requests_steady: log.iter().filter(|(t, _)| *t >= steady_start).count(),
        rate_limited_steady: log
            .iter()
            .filter(|(t, ok)| *t >= steady_start && !ok)
            .count(),
        gateways: figures,
        other_log_lines: other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_for_equal_rates_and_one_over_n_for_one_taker() {
        assert!((jain(&[5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[9.0, 0.0, 0.0]) - 1.0 / 3.0).abs() < 1e-12);
        assert!((jain(&[1.0, 1.0, 0.7]) - 7.29 / 7.47).abs() < 1e-12);
        assert_eq!(jain(&[]), 1.0);
    }
}
