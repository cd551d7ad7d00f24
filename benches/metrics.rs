//! The cost of a `/metrics` scrape (`cargo bench --bench metrics`): what the `[http]` endpoint runs
//! for each scrape ([`clockbridge::metrics::gather`]: the queue's counts and its oldest
//! outstanding row on the queue's thread, every sender's and device's figures, the queue disk's
//! statvfs; then [`clockbridge::metrics::render`]) with 200 devices and 1,000,000 punches queued
//! (pending, spread over the devices), against the same scrape of a queue of 10,000 rows in the same
//! run (the reference: a scrape must not grow with the queue). Goal: under 50 ms per scrape.
//!
//! Printed: the time to fill each queue, then per size the scrape's median, p99 and max over 200
//! scrapes, the size of the text, and the ratio of the large median to the reference's.
//! `CLOCKBRIDGE_BENCH_ROWS` changes the large size. Every argument (cargo passes `--bench`) is
//! ignored.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clockbridge::device_stats::DeviceStats;
use clockbridge::feishu::lanes::user_flows;
use clockbridge::ingest::DeviceInfo;
use clockbridge::metrics::{gather, render};
use clockbridge::punch::{normalise, Punch};
use clockbridge::queue::{NewRecord, Queue};
use clockbridge::sender::SenderStats;

const DEVICES: usize = 200;
const ROWS: usize = 1_000_000;
const REFERENCE_ROWS: usize = 10_000;
const SCRAPES: usize = 200;
const GOAL: Duration = Duration::from_millis(50);

/// `n` punches from `from` on, spread over the devices, mapped (pending).
fn punches(from: usize, n: usize) -> Vec<NewRecord> {
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    (from..from + n)
        .map(|i| {
            let p = Punch {
                device_id: format!("door-{}", i % DEVICES),
                device_user_id: format!("{}", i % 5000),
                local_time: base + chrono::Duration::seconds(i as i64),
                state: Some(0),
                verify: Some(1),
                workcode: None,
                state_text: None,
            };
            let user = p.device_user_id.clone();
            user_flows::record(&normalise(
                p,
                chrono_tz::Asia::Shanghai,
                "HQ",
                Some(user.as_str()),
                chrono::Utc::now(),
                3600,
            ))
        })
        .collect()
}

fn devices() -> HashMap<String, DeviceInfo> {
    (0..DEVICES)
        .map(|i| {
            let stats = DeviceStats::new();
            stats.connections.store(1, Ordering::Relaxed);
            stats.punches_read.store(1000 + i as u64, Ordering::Relaxed);
            stats.queued.store(1000 + i as u64, Ordering::Relaxed);
            stats.last_line_at.store(1_780_000_000, Ordering::Relaxed);
            stats.last_punch_at.store(1_780_000_000, Ordering::Relaxed);
            (
                format!("door-{i}"),
                DeviceInfo {
                    kind: "tcp".into(),
                    tz: chrono_tz::Asia::Shanghai,
                    location: format!("site {i}"),
                    stats,
                },
            )
        })
        .collect()
}

struct Figures {
    fill: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    bytes: usize,
}

async fn measure(rows: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let (q, _) = Queue::open(&path).unwrap();
    let t = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = 4096.min(rows - done);
        q.insert(Arc::new(punches(done, n))).await.unwrap();
        done += n;
    }
    let fill = t.elapsed();
    let devices = devices();
    let sender = SenderStats::default();
    let mut times = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let scrape = gather(&q, &devices, &sender, 1_780_000_000, Duration::from_secs(5)).await;
        assert!(scrape.queue.is_some(), "the queue did not answer");
        let text = render(scrape).unwrap();
        times.push(t.elapsed());
        bytes = text.len();
    }
    times.sort();
    Figures {
        fill,
        p50: times[times.len() / 2],
        p99: times[(times.len() * 99).div_ceil(100) - 1],
        max: times[times.len() - 1],
        bytes,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let rows = std::env::var("CLOCKBRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(ROWS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reference = measure(REFERENCE_ROWS).await;
        let large = measure(rows).await;
        for (n, f) in [(REFERENCE_ROWS, &reference), (rows, &large)] {
            println!(
                "metrics: {DEVICES} devices, {n} punches queued (filled in {:.1} s): scrape p50 {}, p99 {}, max {} over {SCRAPES} scrapes; {} bytes of text",
                f.fill.as_secs_f64(),
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                f.bytes
            );
        }
        println!(
            "metrics: with {rows} rows the median scrape takes {:.2}x the one with {REFERENCE_ROWS}; p99 {} (goal < {}: {})",
            large.p50.as_secs_f64() / reference.p50.as_secs_f64().max(1e-9),
            ms(large.p99),
            ms(GOAL),
            if large.p99 < GOAL { "met" } else { "MISSED" }
        );
    });
}
