//! `clockbridge demo`: the real pipeline (TCP sources, ingest, SQLite queue, sender, Feishu client)
//! against two built-in simulated clocks and the local stand-in of the platform, in a temporary
//! directory. It shows in seconds what the daemon does with the cases that matter: a connection that
//! drops and a clock that re-sends, a malformed line, a punch before 2022, a user the platform does not
//! know, and a user missing from the mapping until the table gains it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::daemon::{self, RunOptions};
use crate::standin::{Standin, StandinConfig};

/// The user missing from the mapping table until the demo adds it.
const LATE_USER: &str = "9999";
/// A user mapped to an id the platform does not know.
const GHOST_USER: &str = "4444";

fn line(pin: &str, t: &str, state: u8) -> String {
    format!("{pin:>9}\t{t}\t{state}\t1\t0\t0\t0\n")
}

/// Lines of one simulated clock: `n` punches of users 1..=50 on 2026-03-02, spread over the day.
fn clock_lines(n: usize, offset_secs: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let secs = 8 * 3600 + offset_secs + i * 37;
            let t = format!(
                "2026-03-02 {:02}:{:02}:{:02}",
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60
            );
            line(&(1 + i % 50).to_string(), &t, (i % 2) as u8)
        })
        .collect()
}

/// Runs the demo and returns its summary.
pub async fn run(punches: usize, keep: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("clockbridge-demo-")
        .tempdir()?;
    let users: HashSet<String> = (1..=50)
        .map(|u| format!("fs-{u}"))
        .chain([format!("fs-{LATE_USER}")])
        .collect();
    let standin = Standin::start(StandinConfig {
        latency: Duration::from_millis(20),
        known_users: Some(users),
        ..StandinConfig::default()
    })
    .await?;

    // mapping: users 1..=50 and the ghost; LATE_USER is added later
    let mapping = dir.path().join("users.csv");
    let mut csv = String::from("device_user_id,user_id,device_id\n");
    for u in 1..=50 {
        writeln!(csv, "{u},fs-{u},")?;
    }
    writeln!(csv, "{GHOST_USER},fs-ghost,")?;
    std::fs::write(&mapping, &csv)?;

    // clock A: we dial it (connect mode); it drops the connection halfway and re-sends on reconnect
    let clock_a = TcpListener::bind("127.0.0.1:0").await?;
    let a_addr = clock_a.local_addr()?;
    let mut a_lines = clock_lines(punches, 0);
    a_lines.push("this is not a punch\n".into());
    a_lines.push(line(LATE_USER, "2026-03-02 09:30:00", 0));
    a_lines.push(line("77", "2021-12-31 09:00:00", 0)); // before 2022: dead on arrival
    let half = a_lines.len() / 2;
    let a_first: String = a_lines[..half].concat();
    // on reconnect the clock re-sends its last 10 lines before the rest: duplicates
    let a_second: String = a_lines[half.saturating_sub(10)..].concat();
    let a_expected_lines = a_lines.len() + 10;

    // clock B: it dials us (listen mode)
    let mut b_lines = clock_lines(punches, 17);
    b_lines.push(line(GHOST_USER, "2026-03-02 10:00:00", 0));
    let b_text: String = b_lines.concat();
    let b_expected_lines = b_lines.len();

    let listen_probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b_addr = listen_probe.local_addr()?;
    drop(listen_probe);

    let toml = format!(
        r#"
[feishu]
base_url = "{base}"
app_id = "cli_standin"
app_secret = "standin-secret"
employee_type = "employee_id"

[queue]
path = "{queue}"

[mapping]
mode = "table"
file = "{mapping}"

[sender]
linger_ms = 50

[[devices]]
id = "door-1"
kind = "tcp"
mode = "connect"
address = "{a_addr}"
timezone = "Asia/Shanghai"
location_name = "HQ 1F door"
reconnect_max_secs = 1

[[devices]]
id = "door-2"
kind = "tcp"
mode = "listen"
address = "{b_addr}"
timezone = "Asia/Shanghai"
location_name = "HQ 2F door"
"#,
        base = standin.base_url(),
        queue = dir.path().join("queue.db").display(),
        mapping = mapping.display(),
    );
    std::fs::write(dir.path().join("clockbridge.toml"), &toml)?;
    let cfg = Config::from_toml_with_env(&toml, "demo", std::iter::empty())?;
    let running = daemon::start(
        cfg,
        RunOptions {
            snapshot_interval: Duration::from_millis(500),
            grace: Duration::from_secs(5),
            prune_interval: Duration::from_secs(3600),
        },
    )
    .await?;

    // clock A serves two connections
    let a_task = tokio::spawn(async move {
        for chunk in [a_first, a_second] {
            let (mut s, _) = clock_a.accept().await?;
            s.write_all(chunk.as_bytes()).await?;
            s.shutdown().await?;
        }
        anyhow::Ok(())
    });
    // clock B dials the daemon's listening port once it is bound
    let b_stats = running.devices["door-2"].stats.clone();
    let b_task = tokio::spawn(async move {
        let addr = b_stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b_text.as_bytes()).await?;
        s.shutdown().await?;
        anyhow::Ok(())
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let a_stats = running.devices["door-1"].stats.clone();
    let b_stats = running.devices["door-2"].stats.clone();
    let lines_seen = |s: &crate::sources::DeviceStats| {
        s.lines_read.load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    // wait for both clocks' lines to be read and the queue to settle
    let mut released_late = false;
    loop {
        let counts = running.queue.counts().await?;
        let all_read =
            lines_seen(&a_stats) >= a_expected_lines && lines_seen(&b_stats) >= b_expected_lines;
        if all_read && counts.total.outstanding() == 0 {
            if !released_late && counts.total.unmapped > 0 {
                // the operator adds the missing user: the daemon releases the waiting punch
                std::fs::write(&mapping, format!("{csv}{LATE_USER},fs-{LATE_USER},\n"))?;
                running.reload_mapping();
                released_late = true;
            } else if counts.total.unmapped == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("demo: the pipeline did not settle within 60 s: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a_task.await??;
    b_task.await??;
    let counts = running.queue.counts().await?;
    let dead = running.queue.dead_letters(10).await?;
    let sender = running.sender_stats.snapshot();
    let devs: Vec<_> = ["door-1", "door-2"]
        .iter()
        .map(|id| (id.to_string(), running.devices[*id].stats.snapshot()))
        .collect();
    running.stop().await;
    let st = standin.stats();
    let writes = standin.write_counts();
    let written_twice = writes.values().filter(|n| **n > 1).count();

    let mut o = String::new();
    writeln!(
        o,
        "clockbridge demo: 2 simulated clocks -> clockbridge -> local Feishu stand-in ({})",
        standin.base_url()
    )?;
    for (id, d) in &devs {
        writeln!(
            o,
            "  {id}: {} lines read, {} punches, {} newly queued, {} duplicates ignored, {} malformed, {} connection(s)",
            d.lines_read, d.punches_read, d.queued, d.duplicates, d.malformed, d.connects
        )?;
    }
    writeln!(
        o,
        "  queue: {} delivered, {} dead, {} unmapped, {} pending",
        counts.total.delivered,
        counts.total.dead,
        counts.total.unmapped,
        counts.total.outstanding()
    )?;
    writeln!(
        o,
        "  user {LATE_USER} was unmapped until the mapping gained it; its punch was then delivered"
    )?;
    for d in &dead {
        writeln!(
            o,
            "  dead letter: {} user {}: {} (code {}, {:?}, log id {})",
            d.device_id,
            d.device_user_id,
            d.reason.as_deref().unwrap_or("-"),
            d.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            d.message.as_deref().unwrap_or(""),
            d.log_id.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(
        o,
        "  sender: {} requests, {} records delivered, {} rate-limited",
        sender.requests, sender.delivered, sender.rate_limited
    )?;
    writeln!(
        o,
        "  stand-in: {} records stored, {} written more than once, {} duplicate sends absorbed",
        st.records_stored, written_twice, st.records_duplicate
    )?;
    writeln!(o, "  finished in {:.2} s", started.elapsed().as_secs_f64())?;
    if keep {
        let kept = dir.keep();
        writeln!(o, "  kept {} (clockbridge.toml and queue.db): try `clockbridge --config {}/clockbridge.toml status`", kept.display(), kept.display())?;
    }
    standin.shutdown().await;
    Ok(o)
}
