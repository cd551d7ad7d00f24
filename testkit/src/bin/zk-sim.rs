//! `zk-sim`: serves a simulated ZKTeco terminal (`clockbridge_testkit::zksim`, the ZK binary
//! protocol over TCP), for trials and benchmarks; Ctrl-C or SIGTERM stops it and prints its
//! counters. It has no security: keep it on loopback or a test network.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "zk-sim",
    version,
    about = "Serve a simulated ZKTeco terminal (ZK binary protocol over TCP); Ctrl-C or SIGTERM stops it and prints its counters"
)]
struct ZkSimArgs {
    /// Address to listen on (real terminals use port 4370).
    #[arg(long, default_value = "127.0.0.1:4370")]
    listen: std::net::SocketAddr,
    /// Comm key (password) clients must authenticate with; 0 = none.
    #[arg(long, default_value_t = 0)]
    comm_key: u32,
    /// Attendance record size in bytes: 8, 16 or 40.
    #[arg(long, default_value_t = 40)]
    record_size: usize,
    /// User record size in bytes: 28 or 72.
    #[arg(long, default_value_t = 72)]
    user_size: usize,
    /// Records generated in the log at start (7 s apart from --start, cycling through the users).
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Users generated in the table (uid 1.., user ids 1001..).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Device time of the first generated record.
    #[arg(long, default_value = "2026-03-02 06:00:00")]
    start: String,
    /// Serial number (`~SerialNumber`).
    #[arg(long, default_value = "CBSIM0000001")]
    serial: String,
    /// Device clock minus UTC, e.g. "8h" or "-5h 30s" (humantime; a leading '-' is behind UTC).
    #[arg(long, default_value = "0s", allow_hyphen_values = true)]
    clock_offset: String,
    /// Most bytes served per chunk request.
    #[arg(long, default_value_t = clockbridge_testkit::zksim::TCP_CHUNK)]
    max_chunk: usize,
    /// Largest CMD_DATA packet within a chunk (real devices have used 1008); default: one packet
    /// per chunk (pyzk 0.9 over TCP needs that).
    #[arg(long)]
    data_packet_max: Option<usize>,
    /// Answer reads of datasets up to this many bytes with one direct CMD_DATA packet.
    #[arg(long, default_value_t = 0)]
    direct_max: usize,
    /// Milliseconds added before every reply.
    #[arg(long, default_value_t = 0)]
    reply_delay_ms: u64,
    /// Add one punch (and push its realtime event) every this many seconds; 0 = never.
    #[arg(long, default_value_t = 0.0)]
    punch_every: f64,
}

impl ZkSimArgs {
    fn config(&self) -> anyhow::Result<clockbridge_testkit::zksim::SimConfig> {
        use clockbridge_testkit::zksim::{generate_records, generate_users, RecordSize, UserSize};
        let record_size = RecordSize::from_bytes(self.record_size).with_context(|| {
            format!(
                "zk-sim: --record-size {}: use 8, 16 or 40",
                self.record_size
            )
        })?;
        let user_size = UserSize::from_bytes(self.user_size)
            .with_context(|| format!("zk-sim: --user-size {}: use 28 or 72", self.user_size))?;
        let start = chrono::NaiveDateTime::parse_from_str(&self.start, "%Y-%m-%d %H:%M:%S")
            .with_context(|| {
                format!("zk-sim: --start {:?}: use YYYY-MM-DD HH:MM:SS", self.start)
            })?;
        let (negative, magnitude) = match self.clock_offset.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, self.clock_offset.as_str()),
        };
        let offset = humantime::parse_duration(magnitude.trim()).with_context(|| {
            format!(
                "zk-sim: --clock-offset {:?}: use a duration such as 8h or -30s",
                self.clock_offset
            )
        })?;
        let offset = chrono::TimeDelta::from_std(offset)?;
        let users = generate_users(self.users);
        Ok(clockbridge_testkit::zksim::SimConfig {
            listen: self.listen,
            comm_key: self.comm_key,
            record_size,
            user_size,
            records: generate_records(self.records, &users, start),
            users,
            serial_number: self.serial.clone(),
            clock_offset: if negative { -offset } else { offset },
            max_chunk: self.max_chunk,
            data_packet_max: self.data_packet_max,
            direct_max: self.direct_max,
            reply_delay: std::time::Duration::from_millis(self.reply_delay_ms),
            ..Default::default()
        })
    }
}

async fn zk_sim(args: ZkSimArgs) -> anyhow::Result<()> {
    use chrono::Timelike;
    use clockbridge_testkit::zksim::{SimRecord, SimUser};
    // before anything can connect: a SIGTERM from whoever saw the "serving" line must be caught
    let mut term = clockbridge_testkit::sigterm()?;
    let sim = clockbridge_testkit::zksim::start(args.config()?).await?;
    let c = sim.record_count();
    eprintln!(
        "clockbridge zk-sim: serving a simulated ZKTeco terminal on {} ({c} records of {} bytes, {} users of {} bytes, comm key {}); Ctrl-C or SIGTERM stops",
        sim.addr(),
        args.record_size,
        args.users,
        args.user_size,
        if args.comm_key == 0 { "none" } else { "set" },
    );
    let ticker = match args.punch_every {
        0.0 => None,
        s => Some(tokio::time::interval(
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!("zk-sim: --punch-every {s}: use a positive number of seconds")
                })?,
        )),
    };
    let users: Vec<SimUser> = sim.users();
    let mut n = 0usize;
    clockbridge_testkit::serve_until_signal(&mut term, ticker, || {
        let user = users
            .get(n % users.len().max(1))
            .map(|u| u.user_id.clone())
            .unwrap_or_else(|| "1001".into());
        n += 1;
        let t = sim
            .device_time()
            .with_nanosecond(0)
            .unwrap_or_else(|| sim.device_time());
        sim.add_records([SimRecord::new(&user, t)])?;
        eprintln!("clockbridge zk-sim: punch of {user} at {t}");
        Ok(())
    })
    .await?;
    eprintln!(
        "clockbridge zk-sim: counters {}",
        serde_json::to_string(&sim.counters())?
    );
    sim.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = ZkSimArgs::parse();
    clockbridge_testkit::run_main("info", async { zk_sim(args).await.map(|()| String::new()) })
}
