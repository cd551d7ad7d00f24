//! Queue scaling: claim + acknowledge, counts, opening the queue, and the read of the users waiting
//! for a mapping (`status`, `clockbridge unmapped`), with 10,000 rows and with 1,000,000 rows in the
//! same run. "Fast with millions of rows" means the ratio stays near 1; the unmapped users' read
//! grows with the unmapped rows instead (measured with 1,000 and with 100,000 of them). The claim is
//! measured twice: with only backlog rows due, and with live punches waiting too (each claim then
//! takes 25 live rows and 25 backlog rows: both of the claim order's index reads).
//!
//! Run: `cargo bench --bench queue` (`CLOCKBRIDGE_BENCH_ROWS` changes the large size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clockbridge::feishu::lanes::user_flows;
use clockbridge::feishu::lanes::user_flows::KIND as KIND_USER_FLOW;
use clockbridge::punch::{normalise, Punch};
use clockbridge::queue::{open_read_only, read_waiting_users, NewRecord, Queue};

/// `n` live punches (the gateway's current time, users `live-{i}`).
fn live_records(n: usize) -> Vec<NewRecord> {
    let now = chrono::Utc::now();
    let local = now.with_timezone(&chrono_tz::Asia::Shanghai).naive_local();
    (0..n)
        .map(|i| {
            let p = Punch {
                device_id: "door-0".into(),
                device_user_id: format!("live-{i}"),
                local_time: local,
                state: Some(0),
                verify: Some(1),
                workcode: None,
                state_text: None,
            };
            let user = p.device_user_id.clone();
            let r = user_flows::record(&normalise(
                p,
                chrono_tz::Asia::Shanghai,
                "HQ",
                Some(&user),
                now,
                3600,
            ));
            assert!(r.live);
            r
        })
        .collect()
}

fn records(from: usize, n: usize) -> Vec<NewRecord> {
    punches(from, n, true)
}

/// `n` punches of 5,000 users on 4 devices, mapped (passthrough) or not.
fn punches(from: usize, n: usize, mapped: bool) -> Vec<NewRecord> {
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    (from..from + n)
        .map(|i| {
            let p = Punch {
                device_id: format!("door-{}", i % 4),
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
                mapped.then_some(user.as_str()),
                chrono::Utc::now(),
                3600,
            ))
        })
        .collect()
}

struct Figures {
    fill: Duration,
    open: Duration,
    claim_ack: Duration,
    claim_ack_live: Duration,
    counts: Duration,
    /// The read of the waiting users (read-only connection, top 5), with 1,000 unmapped rows.
    waiting: Duration,
    /// The same with 100,000 unmapped rows (measured on the large queue only).
    waiting_many: Option<Duration>,
}

/// Adds `n` unmapped punches to the queue and times the read `status` makes of its waiting users.
async fn time_waiting(q: &Queue, path: &std::path::Path, from: usize, n: usize) -> Duration {
    let mut done = 0;
    while done < n {
        let k = 4096.min(n - done);
        q.insert(Arc::new(punches(from + done, k, false)))
            .await
            .unwrap();
        done += k;
    }
    let conn = open_read_only(path).unwrap();
    let w = read_waiting_users(&conn, 5).unwrap();
    assert!(w.total_rows >= n as u64, "{w:?}");
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        let w = read_waiting_users(&conn, 5).unwrap();
        assert_eq!(w.users.len(), 5);
    }
    t.elapsed() / rounds
}

async fn measure(rows: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let mut fill = Duration::ZERO;
    {
        let (q, _) = Queue::open(&path).unwrap();
        let mut done = 0;
        while done < rows {
            let n = 4096.min(rows - done);
            let recs = Arc::new(records(done, n));
            let t = Instant::now();
            q.insert(recs).await.unwrap();
            fill += t.elapsed();
            done += n;
        }
        // a realistic mix: the newest 10,000 rows pending, the rest delivered
        let delivered_upto = rows.saturating_sub(10_000);
        // set-up only: the queue has no API for a bulk status change, so a second connection does it
        let c = rusqlite::Connection::open(&path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute(
            "UPDATE outbox SET status = 2, delivered_at = 1 WHERE id <= ?1",
            [delivered_upto as i64],
        )
        .unwrap();
        drop(q);
        // steady state: the big set-up transaction is checkpointed, as it would be long since
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let t = Instant::now();
    let (q, _) = Queue::open(&path).unwrap();
    let open = t.elapsed();
    // warm-up: the first claims after opening read cold pages
    for _ in 0..20 {
        let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
        q.mark_delivered(c.iter().map(|r| r.id).collect())
            .await
            .unwrap();
    }
    // the 10,000 pending rows: 20 warm-up claims, 170 rounds, then 20 rounds of 25 beside live rows
    let rounds = 170;
    let t = Instant::now();
    for _ in 0..rounds {
        let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
        assert_eq!(c.len(), 50);
        q.mark_delivered(c.iter().map(|r| r.id).collect())
            .await
            .unwrap();
    }
    let claim_ack = t.elapsed() / rounds;
    // live punches waiting: each claim takes 25 of them and 25 backlog rows
    let live_rounds = 20usize;
    q.insert(Arc::new(live_records(live_rounds * 25)))
        .await
        .unwrap();
    let t = Instant::now();
    for _ in 0..live_rounds {
        let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
        let live = c
            .iter()
            .filter(|r| r.user_id.as_deref().unwrap_or("").starts_with("live-"))
            .count();
        assert_eq!((c.len(), live), (50, 25));
        q.mark_delivered(c.iter().map(|r| r.id).collect())
            .await
            .unwrap();
    }
    let claim_ack_live = t.elapsed() / live_rounds as u32;
    let total = rows + live_rounds * 25;
    let t = Instant::now();
    for _ in 0..rounds {
        let c = q.counts().await.unwrap();
        assert_eq!(c.total.pending + c.total.delivered, total as u64);
    }
    let counts = t.elapsed() / rounds;
    // unmapped punches after every row above (their keys are new)
    let waiting = time_waiting(&q, &path, 3 * rows, 1_000).await;
    let waiting_many = if rows > 10_000 {
        Some(time_waiting(&q, &path, 3 * rows + 1_000, 99_000).await)
    } else {
        None
    };
    Figures {
        fill,
        open,
        claim_ack,
        claim_ack_live,
        counts,
        waiting,
        waiting_many,
    }
}

fn main() {
    let large: usize = std::env::var("CLOCKBRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let small = 10_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(measure(small));
    let l = rt.block_on(measure(large));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "queue: insert (groups of 4096, one commit each): {:.0} rows/s into an empty queue up to {small} rows, {:.0} rows/s up to {large} rows",
        small as f64 / s.fill.as_secs_f64(),
        large as f64 / l.fill.as_secs_f64()
    );
    println!(
        "queue: claim 50 + acknowledge (2 commits, fsync): {:.2} ms at {small} rows, {:.2} ms at {large} rows; ratio {:.2}",
        ms(s.claim_ack),
        ms(l.claim_ack),
        ms(l.claim_ack) / ms(s.claim_ack)
    );
    println!(
        "queue: claim 50 with live punches waiting (25 live + 25 backlog) + acknowledge: {:.2} ms at {small} rows, {:.2} ms at {large} rows; ratio {:.2}; against the backlog-only claim of the same size: {:.2}",
        ms(s.claim_ack_live),
        ms(l.claim_ack_live),
        ms(l.claim_ack_live) / ms(s.claim_ack_live),
        ms(l.claim_ack_live) / ms(l.claim_ack)
    );
    println!(
        "queue: counts by state and device: {:.3} ms at {small} rows, {:.3} ms at {large} rows; ratio {:.2}",
        ms(s.counts),
        ms(l.counts),
        ms(l.counts) / ms(s.counts)
    );
    println!(
        "queue: unmapped users (status's read: grouped by device and user, top 5) with 1000 unmapped rows: {:.2} ms at {small} rows, {:.2} ms at {large} rows; ratio {:.2}",
        ms(s.waiting),
        ms(l.waiting),
        ms(l.waiting) / ms(s.waiting)
    );
    if let Some(many) = l.waiting_many {
        println!(
            "queue: unmapped users with 100000 unmapped rows at {large} rows: {:.1} ms ({:.0}x the time for 100x the unmapped rows)",
            ms(many),
            ms(many) / ms(l.waiting)
        );
    }
    println!(
        "queue: open (pragmas, migrations, re-queue in-flight): {:.1} ms at {small} rows, {:.1} ms at {large} rows",
        ms(s.open),
        ms(l.open)
    );
}
