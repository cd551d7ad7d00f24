//! ZKTeco terminals that push (`kind = "adms"`) end to end: the simulator
//! (`clockbridge_testkit::admssim`) as the terminal, the daemon's `[adms]` listener, the stand-in as
//! the platform.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::NaiveDate;
use clockbridge::daemon::Running;
use clockbridge::queue::store::DeviceStore;
use clockbridge::sources::adms::commands::CommandKind;
use clockbridge::sources::adms::{cli, verify, AdmsFigures};
use clockbridge::sources::DeviceStats;
use clockbridge_testkit::admssim::{generate_records, SimConfig, SimRecord, SimTerminal, SimUser};
use clockbridge_testkit::standin::StandinConfig;
use nix::sys::signal::{kill, Signal};

use crate::util::*;

const DEVICE: &str = "lobby-adms";
const SN: &str = "CQUJ230160089";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
}

/// The `[adms]` section on `listen` and one terminal, with `extra` appended.
fn adms_toml(listen: &str, extra: &str) -> String {
    format!(
        r#"
[adms]
listen = "{listen}"
{extra}

[[devices]]
id = "{DEVICE}"
kind = "adms"
serial_number = "{SN}"
timezone = "Asia/Shanghai"
delay = 1
error_delay = 1
"#
    )
}

async fn start(env: &Env, extra: &str) -> (Running, SocketAddr) {
    let running = env.start(&adms_toml("127.0.0.1:0", extra)).await;
    let addr = running.adms_addr().expect("the adms listener runs");
    (running, addr)
}

/// A terminal `sn` pushing to `addr`, polling every 100 ms, re-sending 200 ms after a failure.
fn terminal(sn: &str, addr: SocketAddr) -> SimConfig {
    let mut c = SimConfig::new(sn, addr);
    c.delay = Some(Duration::from_millis(100));
    c.error_delay = Some(Duration::from_millis(200));
    c
}

fn expected_ids(records: &[SimRecord]) -> HashSet<String> {
    records
        .iter()
        .map(|r| format!("{DEVICE}/{}/{}", r.pin, r.time.format("%Y%m%d%H%M%S")))
        .collect()
}

fn stored_ids(env: &Env) -> HashSet<String> {
    env.standin
        .stored()
        .iter()
        .map(|f| f.record["external_id"].as_str().unwrap().to_string())
        .collect()
}

fn stats(running: &Running) -> std::sync::Arc<DeviceStats> {
    running.devices[DEVICE].stats.clone()
}

fn figures(running: &Running) -> AdmsFigures {
    stats(running).snapshot().figures()
}

async fn until(running: &Running, what: &str, mut cond: impl FnMut(&DeviceStats) -> bool) {
    let st = stats(running);
    tokio::time::timeout(PATIENCE, st.wait_for(&mut cond))
        .await
        .unwrap_or_else(|_| panic!("device never {what}: {:?}", st.snapshot()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushing_terminals_punches_reach_the_platform_exactly_once() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    let mut cfg = terminal(SN, addr);
    cfg.max_batch = 200;
    let mut log = generate_records(day(), 500, 1001);
    let sim = SimTerminal::start(cfg, log.clone());
    sim.wait(PATIENCE, |c| c.acked == 500).await.unwrap();
    // then punches as they happen, one push each
    for i in 0..5 {
        let t = day().and_hms_opt(18, 0, i).unwrap();
        sim.punch("2001", t);
        log.push(SimRecord {
            pin: "2001".into(),
            time: t,
            status: 0,
            verify: 15,
        });
        sim.wait(PATIENCE, |c| c.acked == 501 + i as usize)
            .await
            .unwrap();
    }
    expect_delivered_once(&env, &running, 505).await;
    assert_eq!(stored_ids(&env), expected_ids(&log));
    // the terminal's next poll says how many records it holds
    until(&running, "reported its 505 records", |s| {
        s.snapshot().figures::<AdmsFigures>().device_records == Some(505)
    })
    .await;
    let c = sim.stop().await;
    assert_eq!(c.pushes_failed, 0);
    // the handshake gave the device's zone (Shanghai: 8 hours)
    assert!(c.options.contains(&("TimeZone".into(), "8".into())));
    let f = figures(&running);
    assert_eq!((f.records_pushed, f.pushes), (505, 8));
    assert_eq!(f.serial_number.as_deref(), Some(SN));
    assert!(f
        .firmware
        .as_deref()
        .unwrap_or("")
        .starts_with("Ver 8.0.4.7"));
    let snap = stats(&running).snapshot();
    assert!(snap.online, "{snap:?}");
    assert_eq!(
        (snap.punches_read, snap.queued, snap.malformed),
        (505, 505, 0)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_terminal_is_refused_and_shown_in_status() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    let stranger = SimTerminal::start(terminal("EVIL0042", addr), generate_records(day(), 3, 1));
    let c = stranger
        .wait(PATIENCE, |c| c.last_refusal == Some(403))
        .await
        .unwrap();
    // never answered OK: no handshake taken, nothing pushed, nothing queued
    assert_eq!((c.handshakes, c.acked), (0, 0));
    until(&running, "listed the stranger", |s| {
        s.snapshot()
            .figures::<AdmsFigures>()
            .unknown_terminals
            .iter()
            .any(|u| u.serial_number == "EVIL0042")
    })
    .await;
    // status (read from the queue file, as `clockbridge status` does) says who tried
    let cfg = env.config_with(&adms_toml("127.0.0.1:0", ""), &[]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        let st = clockbridge::status::read(&cfg).unwrap();
        let text = clockbridge::status::render_text(&st);
        if text.contains("an unknown terminal SN=EVIL0042 from 127.0.0.1 tried to push") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("tried to push"), "{text}");
    assert_eq!(running.queue.counts().await.unwrap().total.pending, 0);
    stranger.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repush_with_another_stamp_is_deduplicated() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    let log = generate_records(day(), 300, 1001);
    let sim = SimTerminal::start(terminal(SN, addr), log.clone());
    sim.wait(PATIENCE, |c| c.acked == 300).await.unwrap();
    expect_delivered_once(&env, &running, 300).await;
    let first_stamp = figures(&running).last_stamp;
    // the terminal's stamps were reset: it sends its whole log again, with other stamps
    let before = sim.counters().pushes_ok;
    sim.resend_from(0, 70_000);
    sim.wait(PATIENCE, |c| c.pushes_ok > before).await.unwrap();
    until(&running, "counted the duplicates", |s| {
        s.duplicates.load(std::sync::atomic::Ordering::Relaxed) == 300
    })
    .await;
    assert_ne!(figures(&running).last_stamp, first_stamp);
    assert_eq!(running.queue.counts().await.unwrap().total.delivered, 300);
    assert_eq!(assert_each_written_once(&env.standin), 300);
    assert_eq!(stored_ids(&env), expected_ids(&log));
    sim.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30000_record_catch_up_push_after_an_outage_arrives_whole() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    let mut cfg = terminal(SN, addr);
    // the whole day in one push, as firmware does after an outage
    cfg.max_batch = 30_000;
    let log = generate_records(day(), 30_000, 1001);
    let sim = SimTerminal::start(cfg, log.clone());
    let c = sim.wait(PATIENCE, |c| c.acked == 30_000).await.unwrap();
    assert_eq!((c.pushes_ok, c.pushes_failed), (1, 0));
    // answered OK only once committed: the queue has every one of them
    let counts = running.queue.counts().await.unwrap();
    assert_eq!(
        counts.total.pending + counts.total.in_flight + counts.total.delivered,
        30_000
    );
    expect_delivered_once(&env, &running, 30_000).await;
    assert_eq!(stored_ids(&env), expected_ids(&log));
    sim.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_verify_commands_round_trip() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    // the terminal holds 400 records; the first 150 went to another server before
    let log = generate_records(day(), 400, 1001);
    let mut tc = terminal(SN, addr);
    tc.already_pushed = 150;
    let sim = SimTerminal::start(tc, log.clone());
    sim.wait(PATIENCE, |c| c.acked == 400).await.unwrap();
    let (from, to) = (
        cli::parse_bound("from", "2026-11-02").unwrap(),
        cli::parse_bound("to", "2026-11-02").unwrap(),
    );
    // verify: the terminal counts 400, the queue has 250
    let v = cli::queue_command(&running.queue, DEVICE, CommandKind::Verify, from, to)
        .await
        .unwrap();
    let answered = cli::wait_answer(&running.queue, DEVICE, &v.id, PATIENCE)
        .await
        .unwrap()
        .expect("the terminal answered the verify");
    assert_eq!((answered.ret, answered.device_sum), (Some(0), Some(400)));
    assert_eq!(answered.queue_count, Some(250));
    let report = verify::compare(&running.queue, DEVICE, from, to, 400)
        .await
        .unwrap();
    assert_eq!(report.verdict, "queue_missing");
    assert!(
        report.render().contains("the queue lacks 150 punches"),
        "{}",
        report.render()
    );
    // backfill: the terminal pushes the day again; what was missing is queued, the rest duplicates
    let b = cli::queue_command(&running.queue, DEVICE, CommandKind::Backfill, from, to)
        .await
        .unwrap();
    let done = cli::wait_answer(&running.queue, DEVICE, &b.id, PATIENCE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.ret, Some(0));
    expect_delivered_once(&env, &running, 400).await;
    assert_eq!(stored_ids(&env), expected_ids(&log));
    let v = cli::queue_command(&running.queue, DEVICE, CommandKind::Verify, from, to)
        .await
        .unwrap();
    let again = cli::wait_answer(&running.queue, DEVICE, &v.id, PATIENCE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.device_sum, again.queue_count),
        (Some(400), Some(400))
    );
    assert!(again
        .describe()
        .ends_with("terminal 400, queue 400 (match)"));
    // every command kept, answered, in the order given
    let all = cli::list(&running.queue, DEVICE).await.unwrap();
    let states: Vec<&str> = all.iter().map(|c| c.state()).collect();
    assert_eq!(states, vec!["done", "done", "done"]);
    assert!(figures(&running).last_command.is_some());
    sim.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gb18030_user_names_reach_the_unmapped_view() {
    let env = Env::new(StandinConfig::default()).await;
    let table = env.dir.path().join("users.csv");
    std::fs::write(&table, "device_user_id,user_id\n1001,fs-1001\n").unwrap();
    let mapping = format!(
        "[mapping]\nmode = \"table\"\nfile = \"{}\"\n",
        table.display()
    );
    let extra = format!("{mapping}{}", adms_toml("127.0.0.1:0", ""));
    let running = env.start(&extra).await;
    let addr = running.adms_addr().unwrap();
    let mut tc = terminal(SN, addr);
    tc.gb18030_names = true;
    tc.users = vec![
        SimUser {
            pin: "1001".into(),
            name: "李雷".into(),
        },
        SimUser {
            pin: "1002".into(),
            name: "王伟".into(),
        },
    ];
    let t = day().and_hms_opt(9, 0, 0).unwrap();
    let log = vec![
        SimRecord {
            pin: "1001".into(),
            time: t,
            status: 0,
            verify: 15,
        },
        SimRecord {
            pin: "1002".into(),
            time: t,
            status: 0,
            verify: 15,
        },
    ];
    let sim = SimTerminal::start(tc, log);
    sim.wait(PATIENCE, |c| c.users_sent && c.acked == 2)
        .await
        .unwrap();
    let names = DeviceStore::new(running.queue.clone(), DEVICE)
        .user_names()
        .await
        .unwrap();
    assert_eq!(
        names,
        vec![
            ("1001".to_string(), "李雷".to_string()),
            ("1002".to_string(), "王伟".to_string())
        ]
    );
    let cfg = env.config_with(&extra, &[]);
    let u = clockbridge::unmapped::read(&cfg).unwrap();
    assert_eq!(u.users, 1);
    assert_eq!(u.unmapped_users[0].device_user_id, "1002");
    assert_eq!(u.unmapped_users[0].name.as_deref(), Some("王伟"));
    assert_eq!(figures(&running).user_names_seen, 2);
    sim.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_is_refused_with_a_clear_log_line_and_other_requests_keep_working() {
    let env = Env::new(StandinConfig::default()).await;
    let port = free_port();
    let config = env.write_config(&adms_toml(
        &format!("127.0.0.1:{port}"),
        "max_body_size = 4096",
    ));
    let log_path = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log_path);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // 300 records in one push are about 10 KiB: over the cap
    let mut tc = terminal(SN, addr);
    tc.max_batch = 300;
    let log = generate_records(day(), 300, 1001);
    let sim = SimTerminal::start(tc, log.clone());
    let c = sim
        .wait(PATIENCE, |c| {
            c.refused_too_large > 0 && c.getrequests_ok > 0
        })
        .await
        .unwrap();
    assert_eq!(c.last_refusal, Some(413));
    // the terminal's other requests were answered, and smaller pushes take everything
    let c = sim.wait(PATIENCE, |c| c.acked == 300).await.unwrap();
    assert!(c.handshakes >= 2 && c.getrequests_ok > 0, "{c:?}");
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(300))
        .await
        .unwrap();
    sim.stop().await;
    stop_daemon(&mut child).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains(&format!("device {DEVICE} (SN {SN}, 127.0.0.1): a push of "))
            && text.contains("is over adms.max_body_size (4096 bytes): refused with 413; the terminal keeps its records"),
        "{text}"
    );
    assert_stored_exactly_once(&env.standin, &ids_of(&log));
}

/// A terminal dialling while the gateway starts (as after a reboot of the gateway) is answered by
/// its first answered request, never told "starting" with a 503: firmware would then wait its
/// `ErrorDelay`, 30 s by default. The daemon registers its pushing terminals before its listener
/// accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_dialling_while_the_gateway_starts_is_answered_not_told_starting() {
    let env = Env::new(StandinConfig::default()).await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // the terminal first: its connections are refused until the daemon listens, and it dials
    // again every 20 ms
    let mut tc = terminal(SN, addr);
    tc.error_delay = Some(Duration::from_millis(20));
    let log = generate_records(day(), 20, 1001);
    let sim = SimTerminal::start(tc, log.clone());
    let running = env
        .start(&adms_toml(&format!("127.0.0.1:{port}"), ""))
        .await;
    let c = sim.wait(PATIENCE, |c| c.acked == 20).await.unwrap();
    assert_eq!(
        c.last_refusal, None,
        "a request was refused while the gateway started: {c:?}"
    );
    assert!(c.handshakes >= 1 && c.pushes_failed == 0, "{c:?}");
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(20))
        .await
        .unwrap();
    sim.stop().await;
    running.stop().await;
    assert_stored_exactly_once(&env.standin, &ids_of(&log));
}

fn ids_of(log: &[SimRecord]) -> HashSet<String> {
    // the idempotent ids the records must arrive with (the product's own key function)
    log.iter()
        .map(|r| {
            clockbridge::punch::Punch {
                device_id: DEVICE.into(),
                device_user_id: r.pin.clone(),
                local_time: r.time,
                state: None,
                verify: None,
                workcode: None,
                state_text: None,
            }
            .idempotent_key()
        })
        .collect()
}

async fn stop_daemon(child: &mut tokio::process::Child) {
    kill(pid_of(child), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_terminal_pushes_loses_and_duplicates_nothing() {
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(40),
        ..StandinConfig::default()
    })
    .await;
    let port = free_port();
    let config = env.write_config(&adms_toml(&format!("127.0.0.1:{port}"), ""));
    let log_path = env.dir.path().join("daemon.log");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let n = 6000;
    let log = generate_records(day(), n, 1001);
    let mut tc = terminal(SN, addr);
    tc.max_batch = 100;
    tc.request_timeout = Duration::from_secs(5);
    let sim = SimTerminal::start(tc, log.clone());
    let mut child = spawn_daemon(&config, &log_path);
    // kill the daemon three times while the terminal pushes; it re-sends what got no OK
    for round in 1..=3 {
        let target = round * n / 5;
        sim.wait(PATIENCE, |c| c.acked >= target).await.unwrap();
        kill(pid_of(&child), Signal::SIGKILL).unwrap();
        child.wait().await.unwrap();
        child = spawn_daemon(&config, &log_path);
    }
    let c = sim.wait(PATIENCE, |c| c.acked == n).await.unwrap();
    assert!(c.pushes_failed > 0, "no push was refused or cut: {c:?}");
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .unwrap_or_else(|_| panic!("{} of {n} stored", env.standin.stored_len()));
    sim.stop().await;
    stop_daemon(&mut child).await;
    assert_stored_exactly_once(&env.standin, &ids_of(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_asks_a_pushing_terminal_for_its_count_of_the_range() {
    let env = Env::new(StandinConfig::default()).await;
    let (running, addr) = start(&env, "").await;
    // the terminal holds 400 records of the day; the first 150 went to another server before
    let log = generate_records(day(), 400, 1001);
    let mut tc = terminal(SN, addr);
    tc.already_pushed = 150;
    let sim = SimTerminal::start(tc, log);
    sim.wait(PATIENCE, |c| c.acked == 400).await.unwrap();
    let cfg = env.config_with(&adms_toml("127.0.0.1:0", ""), &[]);
    let zones = std::collections::HashMap::from([(DEVICE.to_string(), chrono_tz::Asia::Shanghai)]);
    let range = clockbridge::reconcile::range::Range::new(day(), day(), zones);
    let w = range.window(DEVICE);
    let rows = running
        .queue
        .rows_in_range("user_flow", w.from, w.to)
        .await
        .unwrap();
    assert_eq!(rows.len(), 250);
    // the reconcile's clock side: the terminal's own count (VERIFY SUM ATTLOG, answered at its
    // next poll) against the queue's 250 rows of the device in the range
    let checks =
        clockbridge::reconcile::clocks::check(&cfg, &running.queue, &range, &[], &rows).await;
    assert_eq!(checks.len(), 1);
    let c = &checks[0];
    assert_eq!((c.device.as_str(), c.kind.as_str()), (DEVICE, "adms"));
    assert_eq!(c.counted.range_records, Some(400), "{c:?}");
    assert_eq!(c.queue_rows_in_range, 250);
    assert_eq!(c.missing_from_queue, 150);
    assert!(!c.agrees());
    sim.stop().await;
    running.stop().await;
}
