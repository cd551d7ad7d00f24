//! `clockbridge reconcile` end to end: the daemon delivers to the stand-in, then the queue is
//! proved against what the stand-in's `user_flows/query` shows, per device and day; mismatches made
//! at the stand-in (a flow judged invalid, a flow lost, flows from another source) and at a ZKTeco
//! terminal (a watermark moved past records by hand) are found, and `--requeue` repairs what it can.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use clockbridge::config::Config;
use clockbridge::feishu::lanes::user_flows::KIND;
use clockbridge::feishu::FeishuClient;
use clockbridge::queue::store::DeviceStore;
use clockbridge::queue::Queue;
use clockbridge::reconcile::{self, Options, Outcome, Reconciliation};
use clockbridge::sources::zk::watermark;
use clockbridge_testkit::standin::{Api, StandinConfig};
use clockbridge_testkit::zksim::{self, generate_records, generate_users, SimConfig};
use serde_json::json;

use crate::util::*;

const LINE_DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
location_name = "HQ 1F door"
"#;

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn opts(from: &str, to: &str) -> Options {
    Options {
        from: day(from),
        to: day(to),
        devices: Vec::new(),
        users: Vec::new(),
        requeue: false,
        wait: Duration::from_secs(30),
        clocks: true,
    }
}

async fn reconcile_with(cfg: &Config, queue: &Queue, o: &Options) -> Reconciliation {
    let client = Arc::new(FeishuClient::new(&cfg.feishu, 16).unwrap());
    reconcile::run(cfg, queue, client, o).await.unwrap()
}

/// The daemon delivers `n` punches of 2026-03-02 from door-1 (Shanghai); returns it running.
async fn delivered(env: &Env, n: usize) -> clockbridge::daemon::Running {
    let running = env.start(LINE_DEVICE).await;
    submit_all(&running, punches("door-1", n)).await;
    expect_delivered_once(env, &running, n).await;
    running
}

#[tokio::test]
async fn every_punch_is_confirmed_after_a_normal_run() {
    let env = Env::new(StandinConfig::default()).await;
    let running = delivered(&env, 300).await;
    let cfg = env.config_with(LINE_DEVICE, &[]);
    let rec = reconcile_with(&cfg, &running.queue, &opts("2026-03-02", "2026-03-02")).await;
    assert_eq!(rec.matched.total.confirmed, 300, "{:?}", rec.matched.total);
    assert_eq!(rec.matched.total.total(), 300);
    assert!(rec.matched.unconfirmed.is_empty());
    assert!(rec.matched.other_sources.is_empty());
    assert_eq!(rec.exit_code(), reconcile::EXIT_MATCHED);
    // 97 users, one call each 50: the least the limits allow
    assert_eq!(rec.cost.requests, 2);
    assert_eq!(rec.cost.minimum_requests, 2);
    assert_eq!(env.standin.requests_to(Api::UserFlowQuery), 2);
    let d = &rec.matched.devices[0];
    assert_eq!(
        (d.device.as_str(), d.timezone.as_str()),
        ("door-1", "Asia/Shanghai")
    );
    assert_eq!(
        d.days.keys().copied().collect::<Vec<_>>(),
        vec![day("2026-03-02")]
    );
    // a line clock cannot be asked: said, not guessed
    assert_eq!(rec.clocks.len(), 1);
    assert!(rec.clocks[0]
        .note
        .as_deref()
        .unwrap()
        .contains("cannot be asked"));
    // the day before holds none of them (the days are the device's, not UTC's)
    let before = reconcile_with(&cfg, &running.queue, &opts("2026-03-01", "2026-03-01")).await;
    assert_eq!(before.matched.total.total(), 0);

    // the command beside the running daemon: exit 0, the zone named, a CSV with its header only
    let config = env.write_config(LINE_DEVICE);
    let csv = env.dir.path().join("hr.csv");
    let out = clockbridge_cli(
        &[
            "reconcile",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "--csv",
            csv.to_str().unwrap(),
        ],
        &config,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(text.contains("door-1 Asia/Shanghai"), "{text}");
    assert!(
        text.contains("every punch of the range is in Feishu"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_flow_made_invisible_is_reported_and_requeue_brings_it_back_exactly_once() {
    let env = Env::new(StandinConfig::default()).await;
    let running = delivered(&env, 100).await;
    let cfg = env.config_with(LINE_DEVICE, &[]);
    let stored = env.standin.stored();
    let invalid = stored[10].idempotent_id().unwrap().to_string();
    let lost = stored[20].idempotent_id().unwrap().to_string();
    assert_eq!(env.standin.invalidate_flow(&invalid), 1);
    assert_eq!(env.standin.lose_flow(&lost), 1);

    let rec = reconcile_with(&cfg, &running.queue, &opts("2026-03-02", "2026-03-02")).await;
    let times = clockbridge::device_time::DeviceTimes::of(&cfg);
    eprintln!("{}", reconcile::render::text(&rec, &times));
    assert_eq!(rec.matched.total.confirmed, 98);
    assert_eq!(rec.matched.total.not_visible, 2);
    assert_eq!(rec.exit_code(), reconcile::EXIT_MISMATCH);
    let mut missing: Vec<&str> = rec
        .matched
        .unconfirmed
        .iter()
        .filter(|u| u.outcome == Outcome::NotVisible)
        .map(|u| u.idempotent_id.as_str())
        .collect();
    missing.sort();
    let mut want = vec![invalid.as_str(), lost.as_str()];
    want.sort();
    assert_eq!(missing, want);

    // the CSV for HR names each one, where it is stuck and what to do
    let config = env.write_config(LINE_DEVICE);
    let csv = env.dir.path().join("hr.csv");
    let out = clockbridge_cli(
        &[
            "reconcile",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "--csv",
            csv.to_str().unwrap(),
        ],
        &config,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    eprintln!("{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("--requeue"), "{text}");
    assert!(text.contains("+08:00"), "{text}");

    env.standin.set_record_bodies(true);
    let batches_before = env.standin.requests_to(Api::UserFlows);
    let rec = reconcile_with(
        &cfg,
        &running.queue,
        &Options {
            requeue: true,
            ..opts("2026-03-02", "2026-03-02")
        },
    )
    .await;
    eprintln!("{}", reconcile::render::text(&rec, &times));
    let r = rec.requeue.clone().unwrap();
    assert!(r.daemon_running);
    assert_eq!(
        (
            r.requeued,
            r.delivered_again,
            r.now_visible,
            r.still_not_visible
        ),
        (2, 2, 2, 0)
    );
    assert_eq!(rec.matched.total.confirmed, 100);
    assert_eq!(rec.exit_code(), reconcile::EXIT_MATCHED);
    // each was re-sent exactly once, and the platform shows each exactly once
    let bodies = env.standin.recorded_bodies();
    for id in [&invalid, &lost] {
        let sent = bodies
            .iter()
            .filter(|(api, b)| *api == Api::UserFlows && b.contains(id.as_str()))
            .count();
        assert_eq!(sent, 1, "{id} re-sent {sent} times");
        let visible = env
            .standin
            .stored()
            .iter()
            .filter(|f| f.valid && f.idempotent_id() == Some(id.as_str()))
            .count();
        assert_eq!(visible, 1, "{id}");
    }
    assert!(env.standin.requests_to(Api::UserFlows) > batches_before);
    let again = reconcile_with(&cfg, &running.queue, &opts("2026-03-02", "2026-03-02")).await;
    assert_eq!(again.matched.total.confirmed, 100);
    assert_eq!(again.exit_code(), reconcile::EXIT_MATCHED);
    running.stop().await;
}

#[tokio::test]
async fn flows_from_another_source_are_listed_apart_and_never_resent() {
    let env = Env::new(StandinConfig::default()).await;
    let running = delivered(&env, 50).await;
    let cfg = env.config_with(LINE_DEVICE, &[]);
    // a punch in the mobile app, and one from another gateway (with its own ids), for users the
    // bridge sent punches of; and one for a user it never did (not asked, so not seen)
    let t = 1_772_413_199; // 2026-03-02 08:59:59 +08:00
    env.standin
        .add_foreign_flow(json!({"user_id": "u1", "check_time": t.to_string(),
        "location_name": "mobile", "comment": "app punch"}));
    env.standin
        .add_foreign_flow(json!({"user_id": "u2", "check_time": (t + 60).to_string(),
        "location_name": "B2", "comment": "other gateway", "idempotent_id": "gw2-1",
        "external_id": "gate-9/2/20260302090059", "type": 7}));
    env.standin
        .add_foreign_flow(json!({"user_id": "stranger", "check_time": t.to_string(),
        "location_name": "x", "comment": "x"}));
    let stored_before = env.standin.stored_len();
    env.standin.set_record_bodies(true);

    let rec = reconcile_with(
        &cfg,
        &running.queue,
        &Options {
            requeue: true,
            ..opts("2026-03-02", "2026-03-02")
        },
    )
    .await;
    assert_eq!(rec.matched.total.confirmed, 50);
    assert_eq!(
        rec.matched.other_sources.len(),
        2,
        "{:?}",
        rec.matched.other_sources
    );
    assert!(rec.matched.pruned_from_queue.is_empty());
    // other sources do not make a mismatch, and nothing is re-sent for them
    assert_eq!(rec.exit_code(), reconcile::EXIT_MATCHED);
    assert_eq!(rec.requeue.as_ref().unwrap().requeued, 0);
    assert!(env
        .standin
        .recorded_bodies()
        .iter()
        .all(|(api, _)| *api != Api::UserFlows));
    assert_eq!(env.standin.stored_len(), stored_before);
    let text = reconcile::render::text(&rec, &clockbridge::device_time::DeviceTimes::of(&cfg));
    assert!(text.contains("other sources: 2 flows"), "{text}");
    assert!(text.contains("never re-sent"), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn a_zk_terminal_whose_log_holds_records_the_queue_lacks_is_reported() {
    let start = NaiveDateTime::parse_from_str("2026-03-02 06:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let users = generate_users(8);
    let all = generate_records(40, &users, start);
    let sim = zksim::start(SimConfig {
        users,
        records: all[..30].to_vec(),
        clock_offset: TimeDelta::hours(8),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let env = Env::new(StandinConfig::default()).await;
    let device = format!(
        "\n[[devices]]\nid = \"door-zk\"\nkind = \"zk\"\naddress = \"{}\"\ntimezone = \"Asia/Shanghai\"\nrealtime = false\n",
        sim.addr()
    );
    let running = env.start(&device).await;
    expect_delivered_once(&env, &running, 30).await;
    running.stop().await;

    // ten more punches on the terminal, and a watermark moved past them by hand
    sim.add_records(all[30..].to_vec()).unwrap();
    let queue = Queue::open_beside_daemon(&env.queue_path()).unwrap();
    let store = DeviceStore::new(queue.clone(), "door-zk");
    let mut wm = watermark::load(&store).await.unwrap().unwrap();
    assert_eq!(wm.records, 30);
    wm.records = 40;
    watermark::save(&store, &wm).await.unwrap();

    let cfg = env.config_with(&device, &[]);
    let last = all.last().unwrap().time.date().to_string();
    let rec = reconcile_with(&cfg, &queue, &opts("2026-03-02", &last)).await;
    assert_eq!(rec.matched.total.confirmed, 30);
    let c = &rec.clocks[0];
    assert_eq!(
        (c.counted.device_records, c.counted.watermark, c.queue_rows),
        (Some(40), Some(40), 30)
    );
    assert_eq!(c.missing_from_queue, 10);
    assert_eq!(rec.exit_code(), reconcile::EXIT_MISMATCH);
    let text = reconcile::render::text(&rec, &clockbridge::device_time::DeviceTimes::of(&cfg));
    eprintln!("{text}");
    assert!(
        text.contains("10 records the clock holds are NOT in the queue"),
        "{text}"
    );

    // with the watermark back where the queue is, the clock says what is not read yet instead
    wm.records = 30;
    watermark::save(&store, &wm).await.unwrap();
    let rec = reconcile_with(&cfg, &queue, &opts("2026-03-02", &last)).await;
    assert_eq!(
        (rec.clocks[0].missing_from_queue, rec.clocks[0].not_read_yet),
        (0, 10)
    );
    assert_eq!(rec.exit_code(), reconcile::EXIT_UNDELIVERED);
}

#[tokio::test]
async fn reconcile_beside_a_running_daemon_under_load_causes_no_429s() {
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(20),
        ..StandinConfig::default()
    })
    .await;
    // a rate two reconciles at once would take over the query's limit of 50 (2 x 40), with room
    // for the jitter of a loaded test machine: they must take turns, and a turn must pass on only
    // once the one-second window holds none of its requests (each reconcile sends its 40 at once)
    let extra = format!("{LINE_DEVICE}\n[reconcile]\nmax_requests_per_second = 40\n");
    let running = env.start(&extra).await;
    let backlog = records(&punches("door-1", 8_000));
    running.queue.insert(Arc::new(backlog)).await.unwrap();
    running.wake_kind(KIND);
    let cfg = env.config_with(&extra, &[]);
    let users: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
    let o = Options {
        users,
        ..opts("2026-03-02", "2026-03-02")
    };
    // the scheduled check and a CLI run at the same time, while the sender drains the backlog
    let (a, b) = tokio::join!(
        reconcile_with(&cfg, &running.queue, &o),
        reconcile_with(&cfg, &running.queue, &o)
    );
    for rec in [&a, &b] {
        assert_eq!(rec.cost.requests, 40);
        assert_eq!(rec.cost.rate_limited, 0);
    }
    assert!(a.cost.waited_for_turn_secs > 0.3 || b.cost.waited_for_turn_secs > 0.3);
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 8_000)
        .await
        .unwrap();
    // the platform counts per API: the queries have their own window, which the two reconciles
    // share and never overrun. (The sender's uploads have theirs: a 429 there is the adaptive
    // pacing probing its ceiling while slow-starting on a loaded machine, which reconcile cannot
    // cause; issue 15's fleet benchmark measures that share.)
    let refused: Vec<_> = env
        .standin
        .rate_log(Api::UserFlowQuery)
        .into_iter()
        .filter(|(_, admitted)| !admitted)
        .collect();
    assert_eq!(refused.len(), 0, "queries refused with 429");
    assert_eq!(env.standin.requests_to(Api::UserFlowQuery), 80);
    running.stop().await;
}

#[tokio::test]
async fn a_range_of_31_days_for_2000_users_finishes() {
    let env = Env::new(StandinConfig::default()).await;
    let (queue, _) = Queue::open(&env.queue_path()).unwrap();
    let ps: Vec<_> = (1..=31)
        .flat_map(|d| {
            (0..2_000).map(move |u| {
                punch(
                    "door-1",
                    &format!("u{u}"),
                    &format!("2026-03-{d:02} 09:00:00"),
                )
            })
        })
        .collect();
    let rows = records(&ps);
    env.standin.seed_flows(
        rows.iter()
            .map(|r| serde_json::from_str(&r.payload).unwrap())
            .collect(),
    );
    for chunk in rows.chunks(10_000) {
        queue.insert(Arc::new(chunk.to_vec())).await.unwrap();
    }
    loop {
        let claimed = queue.claim(KIND, 10_000).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        queue
            .mark_delivered(claimed.iter().map(|c| c.id).collect())
            .await
            .unwrap();
    }
    let cfg = env.config_with(LINE_DEVICE, &[]);
    let rec = reconcile_with(&cfg, &queue, &opts("2026-03-01", "2026-03-31")).await;
    assert_eq!(rec.matched.total.confirmed, 62_000);
    assert_eq!(rec.matched.devices[0].days.len(), 31);
    // 40 calls of 50 users; a reply slower than request_timeout_secs (a debug build on a loaded
    // machine) is asked again, so a few more requests may be made, never a rate-limited one
    assert_eq!(rec.cost.minimum_requests, 40);
    assert!((40..=45).contains(&rec.cost.requests), "{:?}", rec.cost);
    assert_eq!(rec.cost.rate_limited, 0);
    assert_eq!(env.standin.stats().rate_limited, 0);
    assert_eq!(rec.exit_code(), reconcile::EXIT_MATCHED);
}

#[tokio::test]
async fn the_scheduled_check_shows_in_status_and_metrics() {
    let env = Env::new(StandinConfig::default()).await;
    let extra = format!(
        "{LINE_DEVICE}\n[http]\nlisten = \"127.0.0.1:0\"\n\n[reconcile]\nschedule = \"daily 02:30\"\n"
    );
    let running = env.start(&extra).await;
    submit_all(&running, punches("door-1", 100)).await;
    expect_delivered_once(&env, &running, 100).await;
    let stored = env.standin.stored();
    env.standin
        .invalidate_flow(stored[5].idempotent_id().unwrap());
    let cfg = env.config_with(&extra, &[]);
    // the check the schedule runs at 02:30, for the day of the punches, its journal lines caught
    let (check, lines) = check_logged(&cfg, &running).await;
    let warns: Vec<&str> = lines.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "{lines}");
    assert!(
        warns[0].contains("device door-1 on 2026-03-02: 99 confirmed, 1 delivered but not visible"),
        "{lines}"
    );
    assert!(!lines.contains("every punch of"), "{lines}");
    assert_eq!(
        (check.matched, check.not_visible, check.missing_from_queue),
        (99, 1, 0)
    );
    assert_eq!(check.exit_code, reconcile::EXIT_MISMATCH);
    let addr = running.http_addr().unwrap();
    let (code, text) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let scrape = parse_metrics(&text);
    assert_eq!(metric(&scrape, "clockbridge_reconcile_matched", &[]), 99.0);
    assert_eq!(
        metric(&scrape, "clockbridge_reconcile_not_visible", &[]),
        1.0
    );
    assert_eq!(
        metric(&scrape, "clockbridge_reconcile_missing_from_queue", &[]),
        0.0
    );
    let config = env.write_config(&extra);
    let status = until_async("status shows the check", &env.queue_path(), || async {
        let st = status_json(&config).await;
        (!st["reconcile"].is_null()).then_some(st)
    })
    .await;
    assert_eq!(status["reconcile"]["not_visible"], 1);
    assert_eq!(status["reconcile"]["day"], "2026-03-02");
    assert!(status_text(&config)
        .await
        .contains("1 NOT VISIBLE in Feishu"));

    // once the flow is back (re-sent), one INFO line and no WARN
    let back = running
        .queue
        .rows_in_range(KIND, 0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| Some(r.idem.as_str()) == stored[5].idempotent_id())
        .map(|r| r.id)
        .collect();
    assert_eq!(running.queue.requeue_delivered(back).await.unwrap(), 1);
    running.wake_kind(KIND);
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 100)
        .await
        .unwrap();
    let (check, lines) = check_logged(&cfg, &running).await;
    assert_eq!((check.matched, check.not_visible), (100, 0));
    assert!(!lines.contains("WARN"), "{lines}");
    let infos: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("every punch of 2026-03-02 is in Feishu (100 punches, 1 device)"))
        .collect();
    assert_eq!(infos.len(), 1, "{lines}");
    assert!(infos[0].contains("INFO"), "{lines}");
    running.stop().await;
}

/// The scheduled check of 2026-03-02, with the journal lines it wrote.
async fn check_logged(
    cfg: &Config,
    running: &clockbridge::daemon::Running,
) -> (reconcile::schedule::LastCheck, String) {
    let journal = Journal::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(journal.clone())
        .with_ansi(false)
        .finish();
    let _on = tracing::subscriber::set_default(subscriber);
    let check = reconcile::schedule::check_and_keep(
        cfg,
        &running.queue,
        running.client.clone(),
        day("2026-03-02"),
        &running.reconcile,
    )
    .await;
    (check, journal.text())
}

/// Journal lines written by a test's own subscriber.
#[derive(Clone, Default)]
struct Journal(Arc<std::sync::Mutex<Vec<u8>>>);

impl Journal {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Journal {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Journal {
    type Writer = Journal;
    fn make_writer(&'a self) -> Journal {
        self.clone()
    }
}
