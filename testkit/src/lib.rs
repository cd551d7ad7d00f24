//! clockbridge-testkit: the test doubles of clockbridge, kept out of the product.
//!
//! The product crate (`clockbridge`) ships to gateways as one binary; nothing here is in it. This
//! crate holds what its tests, benchmarks and the demo need instead of real hardware and a real
//! tenant:
//! - [`standin`]: a local HTTP stand-in of the Feishu / Lark platform (tokens, `user_flows`, the
//!   three HR endpoints) that enforces the platform's rules, records every write and injects faults;
//! - [`zksim`]: a simulated ZKTeco terminal speaking the ZK binary protocol (TCP 4370), written
//!   independently of the product's client;
//! - [`admssim`]: a simulated ZKTeco terminal that pushes over HTTP (ADMS / iclock), written
//!   independently of the product's server;
//! - [`hiksim`]: a simulated Hikvision access-control terminal speaking ISAPI (HTTP Digest,
//!   the event log, the alert stream), written independently of the product's client;
//! - [`demo`]: the real daemon (`clockbridge::daemon`) against simulated clocks and the stand-in;
//! - [`fleet`]: N real daemons (separate processes, one queue each) sharing one app's rate limit at
//!   the stand-in, with the figures of the fleet (aggregate, Jain's fairness, 429 share).
//!
//! Binaries: `demo` (run the demo), `standin` (serve the stand-in), `zk-sim`, `adms-sim` and `hik-sim`
//! (serve or run a simulated terminal until Ctrl-C or SIGTERM: [`serve_until_signal`]). The
//! product uses this crate only as a dev-dependency (tests/, benches/, a few unit tests), so
//! `cargo build -p clockbridge` never compiles it.

pub mod admssim;
pub mod demo;
pub mod fleet;
pub mod hiksim;
pub mod standin;
pub mod zksim;

/// The body of each binary's `main`: logging at `log_level`, a two-thread runtime running `work`,
/// its output printed, and an error printed as `clockbridge: ...` with exit status 1.
pub fn run_main<F>(log_level: &str, work: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<String>>,
{
    use anyhow::Context;
    clockbridge::logging::init(log_level, "text");
    let run = || -> anyhow::Result<String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(work)
    };
    match run() {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clockbridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGTERM's stream, for [`serve_until_signal`]: installed by a simulator binary before anything
/// can connect, so a SIGTERM from whoever saw its "serving" line is caught.
pub fn sigterm() -> anyhow::Result<tokio::signal::unix::Signal> {
    use anyhow::Context;
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")
}

/// A tick `secs` seconds from now and every `secs` seconds after the previous one (a late tick
/// moves the next ones, never bunches them); `None` when `secs` is not positive.
pub fn every(secs: f64) -> Option<tokio::time::Interval> {
    let d = std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())?;
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(t)
}

/// How a simulator binary serves until it is told to stop: until Ctrl-C or SIGTERM (`term`, from
/// [`sigterm`]), calling `tick` at each tick of `ticker` meanwhile (never without one). An error of
/// `tick` ends it with that error.
pub async fn serve_until_signal(
    term: &mut tokio::signal::unix::Signal,
    mut ticker: Option<tokio::time::Interval>,
    mut tick: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    loop {
        let next = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = next => tick()?,
        }
    }
}
