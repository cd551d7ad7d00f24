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
//! Binaries: `demo` (run the demo), `standin` (serve the stand-in) and `zk-sim` (serve a simulated
//! terminal). The product uses this crate only as a dev-dependency (tests/, benches/, a few unit
//! tests), so `cargo build -p clockbridge` never compiles it.

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
