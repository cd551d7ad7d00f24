//! ZKTeco terminals that push (`kind = "adms"`): the daemon's `[adms]` listener under realtime load
//! from many terminals, and one terminal's large catch-up push.
//!
//! Run: `cargo bench --bench adms`. The terminals are the test kit's simulated firmware HTTP client
//! (`clockbridge_testkit::admssim::request`: one connection per request, as the simulator and many
//! terminals do); the daemon runs in this process with its queue in a temporary directory and uploads
//! to a local stand-in of the platform meanwhile.
//!
//! 1. Realtime: `CLOCKBRIDGE_BENCH_TERMINALS` terminals (default 50) each push one punch every
//!    `terminals / rate` s for `CLOCKBRIDGE_BENCH_SECS` (default 20) s, `CLOCKBRIDGE_BENCH_RATE`
//!    punches/s in all (default 500), and poll `getrequest` once a second. Figures: punches committed
//!    and acknowledged per second, push→`OK` latency (p50, p99, max; goal p99 ≤ 50 ms), the process's
//!    RSS. Reference in the same run: the same load against a server that answers `OK` without
//!    storing anything (the cost of HTTP on loopback alone).
//! 2. Catch-up: one terminal pushes `CLOCKBRIDGE_BENCH_RECORDS` records (default 100 000) in one
//!    request: time to `OK` (goal ≤ 2 s), against the same body to the null server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clockbridge_testkit::admssim::{generate_records, request, SimRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A server that reads a request and answers `OK` at once (the reference: HTTP alone).
async fn null_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                let (start, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < start + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nOK: 1\n",
                    )
                    .await;
            });
        }
    });
    addr
}

struct Load {
    acked: u64,
    failed: u64,
    latencies: Vec<Duration>,
    secs: f64,
}

/// `terminals` terminals pushing one punch each every `period`, for `secs`, to `server`.
async fn realtime(
    server: SocketAddr,
    terminals: usize,
    period: Duration,
    secs: u64,
    base_pin: u32,
) -> Load {
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..terminals {
        tasks.push(tokio::spawn(async move {
            let sn = format!("BENCH{t:03}");
            let mut lat = Vec::new();
            let (mut acked, mut failed) = (0u64, 0u64);
            let _ = request(
                server,
                "GET",
                &format!("/iclock/cdata?SN={sn}&options=all&pushver=2.4.1"),
                b"",
                Duration::from_secs(10),
            )
            .await;
            // spread the terminals over the period
            tokio::time::sleep(period.mul_f64(t as f64 / terminals as f64)).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            let start = chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
                .unwrap()
                .and_hms_opt(7, 0, 0)
                .unwrap();
            let polls_every = (Duration::from_secs(1).as_nanos() / period.as_nanos()).max(1) as u64;
            while Instant::now() < until {
                tick.tick().await;
                let r = SimRecord {
                    pin: (base_pin + t as u32).to_string(),
                    time: start + chrono::Duration::seconds(seq as i64),
                    status: 0,
                    verify: 15,
                };
                seq += 1;
                let body = format!("{}\r\n", r.line());
                match request(
                    server,
                    "POST",
                    &format!("/iclock/cdata?SN={sn}&table=ATTLOG&Stamp={seq}"),
                    body.as_bytes(),
                    Duration::from_secs(10),
                )
                .await
                {
                    Ok((reply, took)) if reply.is_ok() => {
                        acked += 1;
                        lat.push(took);
                    }
                    _ => failed += 1,
                }
                if seq.is_multiple_of(polls_every) {
                    let _ = request(
                        server,
                        "GET",
                        &format!("/iclock/getrequest?SN={sn}"),
                        b"",
                        Duration::from_secs(10),
                    )
                    .await;
                }
            }
            (acked, failed, lat)
        }));
    }
    let mut load = Load {
        acked: 0,
        failed: 0,
        latencies: Vec::new(),
        secs: 0.0,
    };
    for t in tasks {
        let (a, f, l) = t.await.unwrap();
        load.acked += a;
        load.failed += f;
        load.latencies.extend(l);
    }
    load.secs = started.elapsed().as_secs_f64();
    load.latencies.sort();
    load
}

fn pct(l: &[Duration], p: f64) -> f64 {
    if l.is_empty() {
        return f64::NAN;
    }
    let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
    l[i].as_secs_f64() * 1000.0
}

fn main() {
    let terminals = env_num("CLOCKBRIDGE_BENCH_TERMINALS", 50);
    let rate = env_num("CLOCKBRIDGE_BENCH_RATE", 500);
    let secs = env_num("CLOCKBRIDGE_BENCH_SECS", 20) as u64;
    let records = env_num("CLOCKBRIDGE_BENCH_RECORDS", 100_000);
    let period = Duration::from_secs_f64(terminals as f64 / rate as f64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let standin = clockbridge_testkit::standin::Standin::start(Default::default()).await.unwrap();
        let mut toml = format!(
            "[feishu]\nbase_url = \"{}\"\napp_id = \"cli_standin\"\napp_secret = \"standin-secret\"\nemployee_type = \"employee_id\"\n[queue]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n[adms]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_address = 1024\n",
            standin.base_url(),
            dir.path().join("queue.db").display()
        );
        for t in 0..terminals {
            toml.push_str(&format!("\n[[devices]]\nid = \"t{t:03}\"\nkind = \"adms\"\nserial_number = \"BENCH{t:03}\"\ntimezone = \"Asia/Shanghai\"\n"));
        }
        toml.push_str("\n[[devices]]\nid = \"catchup\"\nkind = \"adms\"\nserial_number = \"CATCHUP1\"\ntimezone = \"Asia/Shanghai\"\n");
        let cfg = clockbridge::config::Config::from_toml_with_env(&toml, "bench", std::iter::empty()).unwrap();
        let running = clockbridge::daemon::start(cfg, clockbridge::daemon::RunOptions {
            snapshot_interval: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            prune_interval: Duration::from_secs(3600),
        })
        .await
        .unwrap();
        let server = running.adms_addr().unwrap();
        let null = null_server().await;
        let rss_before = rss_kib("VmRSS:");
        println!(
            "adms: {terminals} terminals, one punch each every {:.0} ms ({rate} punches/s in all) for {secs} s, each polling getrequest once a second; daemon in this process (queue in {})",
            period.as_secs_f64() * 1000.0,
            dir.path().display()
        );

        let reference = realtime(null, terminals, period, secs.min(10), 1).await;
        println!(
            "adms: reference (a server answering OK without storing): {} pushes in {:.1} s = {:.0}/s; push->OK p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            reference.acked,
            reference.secs,
            reference.acked as f64 / reference.secs,
            pct(&reference.latencies, 0.5),
            pct(&reference.latencies, 0.99),
            pct(&reference.latencies, 1.0),
        );

        let load = realtime(server, terminals, period, secs, 10_000).await;
        let counts = running.queue.counts().await.unwrap().total;
        let committed = counts.pending + counts.in_flight + counts.delivered + counts.dead + counts.unmapped;
        let p99 = pct(&load.latencies, 0.99);
        println!(
            "adms: clockbridge: {} punches committed and acknowledged in {:.1} s = {:.0}/s ({} refused; {committed} rows in the queue, {} delivered to the stand-in meanwhile)",
            load.acked,
            load.secs,
            load.acked as f64 / load.secs,
            load.failed,
            counts.delivered,
        );
        println!(
            "adms: push->OK p50 {:.2} ms, p99 {p99:.2} ms ({:.1}x the reference's p99), max {:.2} ms; goal p99 <= 50 ms: {}",
            pct(&load.latencies, 0.5),
            p99 / pct(&reference.latencies, 0.99),
            pct(&load.latencies, 1.0),
            if p99 <= 50.0 { "met" } else { "NOT met" }
        );
        println!(
            "adms: RSS of the process (daemon, stand-in and the {terminals} clients): {} MiB before the load, {} MiB after, peak {} MiB",
            rss_before / 1024,
            rss_kib("VmRSS:") / 1024,
            rss_kib("VmHWM:") / 1024,
        );

        // one terminal's catch-up in one push
        let log = generate_records(chrono::NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(), records, 50_000);
        let mut body = String::with_capacity(records * 40);
        for r in &log {
            body.push_str(&r.line());
            body.push_str("\r\n");
        }
        let (_, null_took) = request(null, "POST", "/iclock/cdata?SN=CATCHUP1&table=ATTLOG&Stamp=1", body.as_bytes(), Duration::from_secs(120)).await.unwrap();
        let _ = request(server, "GET", "/iclock/cdata?SN=CATCHUP1&options=all", b"", Duration::from_secs(10)).await.unwrap();
        let (reply, took) = request(server, "POST", "/iclock/cdata?SN=CATCHUP1&table=ATTLOG&Stamp=1", body.as_bytes(), Duration::from_secs(120)).await.unwrap();
        assert!(reply.is_ok(), "{} {}", reply.status, reply.text());
        let secs = took.as_secs_f64();
        println!(
            "adms: catch-up: {records} records ({:.1} MB) in one push, committed and answered '{}' in {secs:.2} s = {:.0} records/s (the same body to the reference: {:.3} s); goal <= 2 s: {}",
            body.len() as f64 / 1e6,
            reply.text().trim(),
            records as f64 / secs,
            null_took.as_secs_f64(),
            if secs <= 2.0 { "met" } else { "NOT met" }
        );
        println!("adms: RSS peak after the catch-up: {} MiB", rss_kib("VmHWM:") / 1024);
        running.stop().await;
    });
}
