//! Reconciling a month: 2,000 users, 4 punches a day for 30 days (240,000 punches, every one
//! delivered) against the platform stand-in answering `user_flows/query` after 100 ms, with its
//! limit of 50 requests per second.
//!
//! Run: `cargo bench --bench reconcile`. `CLOCKBRIDGE_BENCH_USERS` and `CLOCKBRIDGE_BENCH_DAYS`
//! change the size. The queue is seeded through its own insert path (transactions of 10,000 rows,
//! then claimed and acknowledged in bulk) and the stand-in with the same records (no uploads), so
//! only the reconcile is timed: reading the range from the queue, the queries, the matching.
//!
//! Figures, each against its reference:
//! - requests against the least the platform's limits allow (`ceil(users / 50)`: 50 user ids a
//!   call, no paging): goal at most 1.1 times;
//! - the time of the queries against `requests / 50` seconds (the rate limit's floor): goal within
//!   1.1 times; and the whole run's time;
//! - the same queries made unpaced against a stand-in that answers at once and has no limit, in the
//!   same run: what moving and reading the flows costs on this machine (the replies carry 240,000
//!   flows, about 80 MB of JSON), split into the stand-in serving plus the transfer (the replies
//!   received, not read) and the client's reading; the last figure is the querying against
//!   `max(reference, requests / 50) + 100 ms`;
//! - the range read by event time with the index of schema 7 and without it (dropped at the end
//!   of the run): one day, as the daily check reads, and the month.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clockbridge::config::Config;
use clockbridge::feishu::lanes::user_flows;
use clockbridge::feishu::{query, FeishuClient};
use clockbridge::punch::{normalise, Punch};
use clockbridge::queue::Queue;
use clockbridge::reconcile::{self, Options};
use clockbridge_testkit::standin::{Api, Standin, StandinConfig};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let users = env_num("CLOCKBRIDGE_BENCH_USERS", 2_000);
    let days = env_num("CLOCKBRIDGE_BENCH_DAYS", 30) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let standin = Standin::start(StandinConfig {
            latency: Duration::from_millis(100),
            rate_limit_per_sec: 50,
            ..StandinConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let queue_path = dir.path().join("queue.db");
        let (queue, _) = Queue::open(&queue_path).unwrap();

        let seeding = Instant::now();
        let now = chrono::Utc::now();
        let times = ["08:58:01", "12:01:30", "13:02:10", "18:05:45"];
        let mut total = 0usize;
        for d in 1..=days {
            let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Duration::days(d as i64 - 1);
            let rows: Vec<_> = (0..users)
                .flat_map(|u| {
                    times.iter().map(move |t| Punch {
                        device_id: "door-1".into(),
                        device_user_id: format!("u{u}"),
                        local_time: date.and_time(t.parse().unwrap()),
                        state: Some(0),
                        verify: Some(1),
                        workcode: None,
                        state_text: None,
                    })
                })
                .map(|p| {
                    let user = p.device_user_id.clone();
                    user_flows::record(&normalise(
                        p,
                        chrono_tz::Asia::Shanghai,
                        "HQ",
                        Some(&user),
                        now,
                        3600,
                    ))
                })
                .collect();
            standin.seed_flows(
                rows.iter()
                    .map(|r| serde_json::from_str(&r.payload).unwrap())
                    .collect(),
            );
            total += rows.len();
            queue.insert(Arc::new(rows)).await.unwrap();
        }
        loop {
            let claimed = queue.claim(user_flows::KIND, 10_000).await.unwrap();
            if claimed.is_empty() {
                break;
            }
            queue
                .mark_delivered(claimed.iter().map(|c| c.id).collect())
                .await
                .unwrap();
        }
        println!(
            "seeded {total} delivered punches ({users} users, {days} days, 4 a day) in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );

        let toml = format!(
            "[feishu]\nbase_url = \"{}\"\napp_id = \"cli_standin\"\napp_secret = \"standin-secret\"\n\n[queue]\npath = \"{}\"\n\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ntimezone = \"Asia/Shanghai\"\n",
            standin.base_url(),
            queue_path.display()
        );
        let cfg = Config::from_toml_with_env(&toml, "bench", std::iter::empty()).unwrap();
        let client = Arc::new(FeishuClient::new(&cfg.feishu, 16).unwrap());
        // the reference, measured in the same run: the same 40 queries unpaced (as many at once
        // as reconcile keeps in flight) against a stand-in that answers at once and has no rate
        // limit: what moving and reading 240,000 flows costs on this machine, whatever the pacing.
        // And its parts: the same requests with the replies only received (the stand-in serving
        // and the transfer), the rest being the client's reading of the flows.
        standin.set_latency(Duration::ZERO);
        standin.set_rate_limit(0);
        let users_list: Vec<String> = (0..users).map(|u| format!("u{u}")).collect();
        let (from, to_s) = (1_772_294_400 - 86_400, 1_772_294_400 + 32 * 86_400);
        // warm: the token and a connection
        query::query(&client, &users_list[..1], from, to_s).await.unwrap();
        let token = client.token().await.unwrap();
        let raw = reqwest::Client::new();
        let url = format!(
            "{}{}?employee_type=employee_id&include_terminated_user=true",
            standin.base_url(),
            query::PATH
        );
        let t = Instant::now();
        let mut bytes = 0usize;
        for wave in users_list.chunks(50 * reconcile::fetch::IN_FLIGHT) {
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in wave.chunks(50) {
                let body = serde_json::json!({"user_ids": chunk,
                    "check_time_from": from.to_string(), "check_time_to": to_s.to_string()});
                let request = raw.post(&url).bearer_auth(&token).json(&body);
                tasks.spawn(async move { request.send().await.unwrap().bytes().await.unwrap().len() });
            }
            while let Some(n) = tasks.join_next().await {
                bytes += n.unwrap();
            }
        }
        let serving = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut seen = 0;
        for wave in users_list.chunks(50 * reconcile::fetch::IN_FLIGHT) {
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in wave.chunks(50) {
                let (client, chunk) = (client.clone(), chunk.to_vec());
                tasks.spawn(async move { query::query(&client, &chunk, from, to_s).await.unwrap().len() });
            }
            while let Some(n) = tasks.join_next().await {
                seen += n.unwrap();
            }
        }
        let reference = t.elapsed().as_secs_f64();
        let minimum_reference = standin.requests_to(Api::UserFlowQuery);
        assert_eq!(seen, total);
        standin.set_latency(Duration::from_millis(100));
        standin.set_rate_limit(50);
        // the reference's 81 requests leave the stand-in's one-second window first: reconcile's
        // budget is the whole window (as when it takes its turn), and another client of the same
        // app still in it would rate-limit it (a first run of this bench without the wait had 20
        // of its requests refused, then waited out)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let to = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Duration::days(days as i64 - 1);
        let opts = Options {
            from: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            to,
            devices: Vec::new(),
            users: Vec::new(),
            requeue: false,
            wait: Duration::ZERO,
            clocks: false,
        };
        let t = Instant::now();
        let rec = reconcile::run(&cfg, &queue, client, &opts).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        rec.turn_end.wait().await;
        let turn_after = t.elapsed().as_secs_f64();
        assert_eq!(rec.matched.total.confirmed as usize, total);
        assert_eq!(rec.exit_code(), reconcile::EXIT_MATCHED);
        let c = &rec.cost;
        let floor = c.requests as f64 / 50.0;
        println!(
            "reconcile of {total} punches: {secs:.2} s in all: {:.2} s reading the queue, {:.2} s querying, {:.2} s matching",
            rec.read_secs, c.query_secs, rec.match_secs
        );
        println!(
            "requests: {} for {users} users; the least the limits allow: {} ({:.2}x, goal <= 1.1x); rate-limited: {}",
            c.requests,
            c.minimum_requests,
            c.requests as f64 / c.minimum_requests as f64,
            c.rate_limited
        );
        println!(
            "querying against requests / 50 per second ({floor:.2} s): {:.2}x (goal <= 1.1x); the whole run: {:.2}x",
            c.query_secs / floor,
            secs / floor
        );
        let bound = reference.max(floor) + 0.1;
        println!(
            "reference: the same queries unpaced, no latency: {reference:.2} s; the bound, max(reference, requests / 50) + one reply's 100 ms: {bound:.2} s; querying against it: {:.2}x",
            c.query_secs / bound
        );
        println!(
            "the reference's parts: the stand-in serving and the transfer of {:.1} MB: {serving:.2} s; the client reading the flows: {:.2} s",
            bytes as f64 / 1e6,
            (reference - serving).max(0.0)
        );
        println!("the query turn passed on {turn_after:.2} s after the run returned (a window after the last reply)");

        // the range read by event time, with the index of schema 7 and without it (dropped here,
        // in the same run): one day (the daily check) and the month
        let day = 1_772_294_400 + 14 * 86_400; // 2026-03-15 in Shanghai
        let read = |from: i64, to: i64| {
            let queue = queue.clone();
            async move {
                let t = Instant::now();
                let n = queue.rows_in_range(user_flows::KIND, from, to).await.unwrap().len();
                (n, t.elapsed().as_secs_f64())
            }
        };
        let month = (1_772_294_400 - 86_400, 1_772_294_400 + 32 * 86_400);
        let (day_rows, day_with) = read(day, day + 86_400).await;
        let (_, month_with) = read(month.0, month.1).await;
        let conn = rusqlite::Connection::open(&queue_path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("DROP INDEX outbox_event_time").unwrap();
        drop(conn);
        let (day_rows_without, day_without) = read(day, day + 86_400).await;
        let (_, month_without) = read(month.0, month.1).await;
        assert_eq!(day_rows, day_rows_without);
        println!(
            "range read of one day ({day_rows} rows of {total}): {:.1} ms with the index, {:.1} ms without ({:.1}x); the month: {:.2} s with, {:.2} s without ({:.2}x)",
            day_with * 1e3,
            day_without * 1e3,
            day_without / day_with,
            month_with,
            month_without,
            month_without / month_with
        );
        println!(
            "stand-in: {} user_flows/query requests, {} rate-limited",
            standin.requests_to(Api::UserFlowQuery) - minimum_reference,
            standin.stats().rate_limited
        );
    });
}
