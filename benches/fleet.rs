//! Many gateways, one app (`cargo bench --bench fleet`): the scenario of issue 15, section 1.
//!
//! N real `clockbridge run` processes (N = 1, 3, 10), each with its own queue holding its own
//! backlog of punches of 30 days ago (queued beforehand by `clockbridge import`), upload with the
//! same app id to one in-process stand-in that answers each batch_create in 100 ms and admits 50
//! requests per sliding second for the whole app (the platform's limit, shared by every gateway:
//! 2,500 punches/s). All N start at the same moment, as after a power cut or on the first morning,
//! and run for 30 s; the same queues (copies) are run twice, with the default `pacing =
//! "adaptive"` and with `pacing = "fixed"` (every gateway at 49 requests/s, the behaviour before).
//!
//! Printed per N and pacing, from the stand-in's records (`clockbridge_testkit::fleet`): punches
//! stored per second as a ratio of the 2,500/s ceiling ("aggregate"), Jain's fairness index over the
//! gateways' rates, and 429 replies as a share of the requests that reached the limit, over the
//! whole run and over its steady part (after the first 10 s), with the goals of the issue (aggregate
//! ≥ 0.90, fairness ≥ 0.95, 429s ≤ 2%, and with N = 1 aggregate ≥ 0.95), judged on the whole run.
//! A goal missed is printed as "MISSED", not a failure; the run fails (exit 1) if a daemon exits
//! early or does not stop cleanly.
//!
//! `CLOCKBRIDGE_BENCH_FLEET=1,3` picks the sizes, `CLOCKBRIDGE_BENCH_SECS=60` the length of a run,
//! `CLOCKBRIDGE_BENCH_PACING=adaptive` one pacing only (a quicker run while tuning),
//! `CLOCKBRIDGE_BENCH_KEEP=1` keeps the gateways' directories (their logs) for a look;
//! `CLOCKBRIDGE_BENCH_BIN=/path/to/clockbridge` runs another build. Every other argument (cargo
//! passes `--bench`) is ignored. Takes about 5 minutes with the defaults.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clockbridge_testkit::fleet::{self, FleetFigures, FleetRun, CEILING_PER_SEC};

const SIZES: [usize; 3] = [1, 3, 10];
const RUN_SECS: u64 = 30;
const WARMUP: Duration = Duration::from_secs(10);
const LATENCY: Duration = Duration::from_millis(100);
const AGGREGATE_GOAL: f64 = 0.90;
const SOLO_GOAL: f64 = 0.95;
const FAIRNESS_GOAL: f64 = 0.95;
const SHARE_429_GOAL: f64 = 0.02;

fn binary() -> PathBuf {
    std::env::var_os("CLOCKBRIDGE_BENCH_BIN")
        .map(PathBuf::from)
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
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn report(n: usize, pacing: &str, f: &FleetFigures) {
    let goal = if n == 1 { SOLO_GOAL } else { AGGREGATE_GOAL };
    println!(
        "fleet: N={n:<2} {pacing:<8} aggregate {:.3} of {CEILING_PER_SEC:.0}/s (goal >= {goal}: {}; steady {:.3}) | fairness {:.3} (goal >= {FAIRNESS_GOAL}: {}; steady {:.3}) | 429s {} of {} requests (goal <= {}: {}; steady {})",
        f.aggregate,
        verdict(f.aggregate >= goal),
        f.aggregate_steady,
        f.fairness,
        verdict(f.fairness >= FAIRNESS_GOAL),
        f.fairness_steady,
        pct(f.share_429()),
        f.requests,
        pct(SHARE_429_GOAL),
        verdict(f.share_429() <= SHARE_429_GOAL),
        pct(f.share_429_steady()),
    );
    println!(
        "fleet:        per gateway (stored / after warm-up): {}",
        f.gateways
            .iter()
            .map(|g| format!(
                "{} {}/{}{}",
                g.id,
                g.stored,
                g.stored_steady,
                if g.ran_dry { " (ran dry)" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for l in f.other_log_lines.iter().take(5) {
        println!("fleet:        logged: {l}");
    }
}

async fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = match std::env::var("CLOCKBRIDGE_BENCH_FLEET") {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("CLOCKBRIDGE_BENCH_FLEET={v:?}"))?,
        Err(_) => SIZES.to_vec(),
    };
    let secs = match std::env::var("CLOCKBRIDGE_BENCH_SECS") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("CLOCKBRIDGE_BENCH_SECS={v:?}"))?,
        Err(_) => RUN_SECS,
    };
    let only = std::env::var("CLOCKBRIDGE_BENCH_PACING").ok();
    println!(
        "fleet: binary {}; {secs} s per run, steady figures after {} s; stand-in 100 ms per request, 50 requests/s for the app",
        binary().display(),
        WARMUP.as_secs()
    );
    for n in sizes {
        let tmp = tempfile::tempdir().context("temp dir")?;
        let dir = tmp.path().to_path_buf();
        let _guard = if std::env::var_os("CLOCKBRIDGE_BENCH_KEEP").is_some() {
            // the gateways' logs stay for a look (each 429 is a WARN with the new rate)
            println!("fleet: N={n}: kept in {}", dir.display());
            std::mem::forget(tmp);
            None
        } else {
            Some(tmp)
        };
        // enough for a gateway to take twice its fair share (all of it when alone) for the whole run
        let share = (2.0 / n as f64).min(1.0);
        let backlog = (CEILING_PER_SEC * secs as f64 * share * 1.1) as usize;
        let t = std::time::Instant::now();
        let adaptive_gw = fleet::prepare(&binary(), &dir.join("adaptive"), n, backlog).await?;
        let fixed_gw = fleet::copy(&adaptive_gw, &dir.join("fixed"))?;
        println!(
            "fleet: N={n}: {n} queue(s) of {backlog} punches each queued by `clockbridge import` in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for (pacing, gws) in [("adaptive", &adaptive_gw), ("fixed", &fixed_gw)] {
            if only.as_deref().is_some_and(|o| o != pacing) {
                continue;
            }
            let figures = fleet::run(
                &FleetRun {
                    binary: binary(),
                    pacing: pacing.into(),
                    duration: Duration::from_secs(secs),
                    warmup: WARMUP,
                    latency: LATENCY,
                },
                gws,
            )
            .await
            .with_context(|| format!("N={n}, {pacing}"))?;
            report(n, pacing, &figures);
        }
    }
    Ok(())
}
