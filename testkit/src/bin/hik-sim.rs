//! `hik-sim`: a simulated Hikvision access-control terminal speaking ISAPI
//! (`clockbridge_testkit::hiksim`), for trials by hand against `clockbridge run` with a
//! `kind = "hikvision"` device, or against `tests/hikvision/read_log.py`; Ctrl-C or SIGTERM stops it
//! and prints its counters. It has no security (a fixed user and password): keep it on loopback or
//! a test network.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clockbridge_testkit::hiksim::{self, generate_events, generate_users, HikSimConfig};

#[derive(Parser)]
#[command(
    name = "hik-sim",
    version,
    about = "Serve a simulated Hikvision terminal over ISAPI; Ctrl-C or SIGTERM stops it and prints its counters"
)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: std::net::SocketAddr,
    /// The digest user and password the terminal accepts.
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, default_value = "Passw0rd!")]
    password: String,
    /// Events in the log at start (7 s apart, ending an hour ago): of every 20, 14 are punches.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Users of the terminal (employee numbers from 1001).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// The most events a page holds, whatever maxResults asks.
    #[arg(long, default_value_t = 30)]
    max_results: u32,
    /// The time an AcsEvent page takes in the terminal, in milliseconds.
    #[arg(long, default_value_t = 0)]
    page_delay_ms: u64,
    /// The device clock's offset from the host's, in seconds (positive: ahead).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew: i64,
    /// The alert stream drops after this many seconds (closed), as some firmware does; 0: never.
    #[arg(long, default_value_t = 0)]
    stream_drop_after: u64,
    /// Serve HTTPS with a self-signed certificate made at start (clockbridge needs
    /// accept_invalid_certs = true for it).
    #[arg(long)]
    tls: bool,
    /// Add one punch (user 1001, face) every this many seconds; 0: never.
    #[arg(long, default_value_t = 0.0)]
    punch_every: f64,
}

async fn hik_sim(args: Args) -> anyhow::Result<String> {
    let defaults = HikSimConfig::default();
    let users = generate_users(args.users.max(1));
    let skew = chrono::TimeDelta::seconds(args.clock_skew);
    let now = (chrono::Utc::now() + skew).with_timezone(&defaults.offset);
    let start = now.naive_local()
        - chrono::TimeDelta::seconds(7 * args.events as i64)
        - chrono::TimeDelta::hours(1);
    let sim = hiksim::start(HikSimConfig {
        listen: args.listen,
        username: args.username.clone(),
        password: args.password,
        max_results_cap: args.max_results.max(1),
        page_delay: Duration::from_millis(args.page_delay_ms),
        clock_skew: skew,
        events: generate_events(args.events, &users, start),
        users,
        stream_drop_after: (args.stream_drop_after > 0)
            .then(|| Duration::from_secs(args.stream_drop_after)),
        tls: args.tls,
        ..defaults
    })
    .await
    .with_context(|| format!("hik-sim: cannot listen on {}", args.listen))?;
    eprintln!(
        "clockbridge hik-sim: serving a simulated Hikvision terminal on {} ({} events, {} users, user {:?}, at most {} events a page); Ctrl-C or SIGTERM stops",
        sim.url(),
        args.events,
        args.users.max(1),
        args.username,
        args.max_results.max(1),
    );
    let mut term = clockbridge_testkit::sigterm()?;
    clockbridge_testkit::serve_until_signal(
        &mut term,
        clockbridge_testkit::every(args.punch_every),
        || {
            let e = sim.punch("1001", 75, 0);
            eprintln!(
                "clockbridge hik-sim: punch of 1001 at {} (serial {})",
                e.time, e.serial
            );
            Ok(())
        },
    )
    .await?;
    let c = sim.counters();
    sim.shutdown();
    Ok(format!(
        "hik-sim: {} requests ({} accepted, {} failed logins, {} challenges), {} event pages ({} events), {} user pages, {} alert streams opened ({} dropped), {} time sets\n",
        c.requests,
        c.auth_ok,
        c.auth_failures,
        c.challenges,
        c.acs_pages,
        c.acs_events_served,
        c.user_pages,
        c.stream_opens,
        c.stream_drops,
        c.time_sets,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    clockbridge_testkit::run_main("info", hik_sim(args))
}
