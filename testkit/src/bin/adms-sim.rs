//! `adms-sim`: a simulated ZKTeco terminal that pushes over HTTP (`clockbridge_testkit::admssim`,
//! ADMS / iclock) to a server, for trials by hand against `clockbridge run` with an `[adms]`
//! listener; Ctrl-C or SIGTERM stops it and prints its counters. Point it at loopback or a test
//! network only.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clockbridge_testkit::admssim::{generate_records, SimConfig, SimTerminal, SimUser};

#[derive(Parser)]
#[command(
    name = "adms-sim",
    version,
    about = "Push like a ZKTeco ADMS terminal to a server; Ctrl-C or SIGTERM stops it and prints its counters"
)]
struct Args {
    /// The server's [adms] listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    server: std::net::SocketAddr,
    /// The serial number sent (SN=).
    #[arg(long, default_value = "CBADMS000001")]
    sn: String,
    /// Records in the log at start, pushed at once (a catch-up), one a second from --day 07:00.
    #[arg(long, default_value_t = 100)]
    records: usize,
    /// The day of the generated records.
    #[arg(long, default_value = "2026-03-02")]
    day: String,
    /// Records per push at most.
    #[arg(long, default_value_t = 1000)]
    max_batch: usize,
    /// Add one punch (pushed at once) every this many seconds; 0 = never.
    #[arg(long, default_value_t = 0.0)]
    punch_every: f64,
    /// Send the users' names in GB18030 (Chinese firmware) instead of UTF-8.
    #[arg(long)]
    gb18030: bool,
}

async fn adms_sim(args: Args) -> anyhow::Result<String> {
    let day = chrono::NaiveDate::parse_from_str(&args.day, "%Y-%m-%d")
        .with_context(|| format!("--day {:?} is not YYYY-MM-DD", args.day))?;
    let mut cfg = SimConfig::new(&args.sn, args.server);
    cfg.max_batch = args.max_batch;
    cfg.gb18030_names = args.gb18030;
    cfg.users = vec![
        SimUser {
            pin: "1001".into(),
            name: "李雷".into(),
        },
        SimUser {
            pin: "1002".into(),
            name: "Han Meimei".into(),
        },
    ];
    let sim = SimTerminal::start(cfg, generate_records(day, args.records, 1001));
    let mut term = clockbridge_testkit::sigterm()?;
    let mut next = day.and_hms_opt(18, 0, 0).unwrap_or_default();
    clockbridge_testkit::serve_until_signal(
        &mut term,
        clockbridge_testkit::every(args.punch_every),
        || {
            sim.punch("1001", next);
            next += chrono::Duration::seconds(1);
            Ok(())
        },
    )
    .await?;
    let c = sim.stop().await;
    Ok(format!(
        "adms-sim {}: {} handshakes, {} pushes answered OK, {} not ({} too large), {} of {} records acknowledged, {} polls, {} commands done; last refusal {:?}\n",
        args.sn,
        c.handshakes,
        c.pushes_ok,
        c.pushes_failed,
        c.refused_too_large,
        c.acked,
        args.records,
        c.getrequests_ok,
        c.commands_done,
        c.last_refusal,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    clockbridge_testkit::run_main("info", adms_sim(args))
}
