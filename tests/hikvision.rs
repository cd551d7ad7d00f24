//! Hikvision terminals (`kind = "hikvision"`) end to end: the simulator
//! (`clockbridge_testkit::hiksim`) as the terminal, the daemon reading it over ISAPI, the stand-in as
//! the platform.

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use clockbridge::daemon::Running;
use clockbridge::sources::hikvision::{HikFigures, HikSpec};
use clockbridge::sources::DeviceStats;
use clockbridge_testkit::hiksim::{
    self, generate_events, generate_users, is_punch, HikEvent, HikSimConfig, HikSimHandle,
};
use clockbridge_testkit::standin::StandinConfig;

use crate::util::*;

const DEVICE: &str = "door-hik";

/// A terminal holding `n` generated events ending about an hour ago (device time), with `cfg`'s
/// other settings.
pub async fn sim_with(n: usize, cfg: HikSimConfig) -> HikSimHandle {
    let users = generate_users(20);
    let now = (chrono::Utc::now() + cfg.clock_skew).with_timezone(&cfg.offset);
    let start = now.naive_local() - TimeDelta::seconds(7 * n as i64) - TimeDelta::hours(1);
    hiksim::start(HikSimConfig {
        events: generate_events(n, &users, start),
        users,
        ..cfg
    })
    .await
    .unwrap()
}

/// The `[[devices]]` block of the terminal at `sim`, with `extra` keys.
pub fn device(sim: &HikSimHandle, password: &str, extra: &str) -> String {
    format!(
        "\n[[devices]]\nid = \"{DEVICE}\"\nkind = \"hikvision\"\naddress = \"{}\"\nusername = \"admin\"\npassword = \"{password}\"\ntimezone = \"Asia/Shanghai\"\nlocation_name = \"HQ door\"\n{extra}\n",
        sim.url()
    )
}

/// The external ids (`device/user/YYYYMMDDHHMMSS`) the punches among `events` arrive as.
pub fn expected(events: &[HikEvent]) -> HashSet<String> {
    let minors = clockbridge::sources::hikvision::spec::DEFAULT_EVENT_MINORS;
    events
        .iter()
        .filter(|e| is_punch(e, minors))
        .map(|e| {
            format!(
                "{DEVICE}/{}/{}",
                e.employee.as_deref().unwrap(),
                e.time.format("%Y%m%d%H%M%S")
            )
        })
        .collect()
}

fn stored(env: &Env) -> HashSet<String> {
    env.standin
        .stored()
        .iter()
        .map(|f| f.record["external_id"].as_str().unwrap().to_string())
        .collect()
}

fn stats(running: &Running) -> std::sync::Arc<DeviceStats> {
    running.devices[DEVICE].stats.clone()
}

fn hik(running: &Running) -> HikFigures {
    stats(running).snapshot().figures()
}

async fn until(running: &Running, what: &str, mut cond: impl FnMut(&DeviceStats) -> bool) {
    let st = stats(running);
    tokio::time::timeout(PATIENCE, st.wait_for(&mut cond))
        .await
        .unwrap_or_else(|_| panic!("device never {what}: {:?}", st.snapshot()));
}

/// Waits (at most [`PATIENCE`]) until the terminal's counters satisfy `cond`.
async fn wait_sim(sim: &HikSimHandle, cond: impl FnMut(&hiksim::HikCounters) -> bool) {
    tokio::time::timeout(PATIENCE, sim.wait_counters(cond))
        .await
        .unwrap_or_else(|_| panic!("the terminal never saw it: {:?}", sim.counters()));
}

fn figures_of(s: &DeviceStats) -> HikFigures {
    s.snapshot().figures()
}

/// Waits until the stand-in holds exactly the punches of `events`, each written once.
async fn expect_exactly(env: &Env, running: &Running, events: &[HikEvent]) {
    let want = expected(events);
    bounded(env, want.len()).await;
    expect_delivered_once(env, running, want.len()).await;
    assert_eq!(stored(env), want);
}

/// Waits (at most [`PATIENCE`]) until the stand-in holds `n` records.
async fn bounded(env: &Env, n: usize) {
    if tokio::time::timeout(PATIENCE, env.standin.wait_stored(n))
        .await
        .is_err()
    {
        panic!(
            "the platform holds {} records, not {n}",
            env.standin.stored().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hikvision_events_become_punches_exactly_once_across_pulls_realtime_and_reconnects() {
    let sim = sim_with(
        700,
        HikSimConfig {
            // nonces expire often: re-challenges must be transparent
            nonce_ttl: Duration::from_millis(900),
            heartbeat_every: Some(Duration::from_millis(200)),
            // the stream is closed by the terminal every 2 s
            stream_drop_after: Some(Duration::from_secs(2)),
            ..HikSimConfig::default()
        },
    )
    .await;
    let env = Env::new(StandinConfig::default()).await;
    let cfg = device(&sim, "Passw0rd!", "poll_interval = 1\nstream_timeout = 2");
    let running = env.start(&cfg).await;
    expect_exactly(&env, &running, &sim.events()).await;
    let first = running.devices[DEVICE].stats.snapshot();
    assert!(first.online);
    let f = hik(&running);
    assert_eq!(f.serial_watermark, Some(700));
    assert!(f.events_skipped.unwrap_or(0) > 0, "{f:?}");
    // the names of the users reached the queue (for `clockbridge unmapped`)
    assert!(sim.counters().user_pages >= 1);

    // realtime punches (and a failed verification, never sent), while nonces expire and a 401
    // storm of one request hits
    until(&running, "opened the alert stream", |s| {
        figures_of(s).realtime == Some(true)
    })
    .await;
    sim.auth_storm(1);
    for (i, minor) in [75u32, 38, 76, 1].into_iter().enumerate() {
        sim.punch(&format!("{}", 1001 + i), minor, 0);
    }
    expect_exactly(&env, &running, &sim.events()).await;
    // the stream was closed and opened again at least once meanwhile
    wait_sim(&sim, |c| c.stream_opens >= 2).await;
    running.stop().await;

    // punches made while the daemon is down, then a restart: read by the first pull, once
    sim.punch("1010", 77, 1);
    sim.punch("1011", 181, 2);
    let running = env.start(&cfg).await;
    expect_exactly(&env, &running, &sim.events()).await;
    let c = sim.counters();
    assert_eq!(c.auth_failures, 0, "{c:?}");
    assert!(c.stale_nonces >= 1 && c.storm_refusals == 1, "{c:?}");
    assert!(c.max_page <= 30, "{c:?}");
    running.stop().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_alert_stream_is_detected_and_the_gap_closed_by_a_pull() {
    let sim = sim_with(
        40,
        HikSimConfig {
            heartbeat_every: Some(Duration::from_millis(200)),
            stream_xml: true,
            ..HikSimConfig::default()
        },
    )
    .await;
    let env = Env::new(StandinConfig::default()).await;
    // no regular pull during the test: only the one after a reconnect can bring the punches
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 3600\nstream_timeout = 1",
        ))
        .await;
    expect_exactly(&env, &running, &sim.events()).await;
    until(&running, "opened the alert stream", |s| {
        figures_of(s).realtime == Some(true)
    })
    .await;
    // a realtime punch over the XML stream
    sim.punch("1003", 75, 0);
    expect_exactly(&env, &running, &sim.events()).await;
    assert_eq!(hik(&running).realtime_events, Some(1));
    let pulls = hik(&running).pulls.unwrap_or(0);

    // the stream goes silent (left open, as some firmware does); punches made then reach no stream
    let drops = sim.counters().stream_drops;
    sim.drop_streams(true);
    wait_sim(&sim, |c| c.stream_drops > drops).await;
    sim.punch("1004", 38, 0);
    sim.punch("1005", 1, 1);
    expect_exactly(&env, &running, &sim.events()).await;
    let f = hik(&running);
    assert!(f.stream_drops.unwrap_or(0) >= 1, "{f:?}");
    assert!(
        f.pulls.unwrap_or(0) > pulls,
        "the gap was closed by a pull: {f:?}"
    );
    // the two punches made while the stream was silent came by the pull, not the stream
    assert_eq!(f.realtime_events, Some(1), "{f:?}");
    running.stop().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gives_the_clear_error_and_backs_off() {
    let sim = sim_with(10, HikSimConfig::default()).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(&sim, "wrong-Secret-42", "poll_interval = 1"))
        .await;
    until(&running, "reported the refused login", |s| {
        s.last_error()
            .is_some_and(|e| e.contains("check the device user and password"))
            && figures_of(s).auth_retry_at.is_some()
    })
    .await;
    let st = stats(&running);
    let f = hik(&running);
    assert!(f.auth_failures >= 1, "{f:?}");
    let now = chrono::Utc::now().timestamp();
    assert!(
        f.auth_retry_at.unwrap() >= now + 55,
        "the next login waits at least a minute: {f:?}"
    );
    let err = st.last_error().unwrap();
    assert!(!err.contains("wrong-Secret-42"), "{err}");
    // the snapshot (what `status` shows) never holds the password either
    let snap = serde_json::to_string(&st.snapshot()).unwrap();
    assert!(!snap.contains("wrong-Secret-42"), "{snap}");
    // at most the two tries of one request (an expired nonce's, a fresh one's): no hammering, so
    // the terminal never locked the account
    let c = sim.counters();
    assert!(c.auth_failures <= 2 && c.locked_refusals == 0, "{c:?}");
    assert_eq!(env.standin.stored().len(), 0);
    // the spec never shows the password
    let spec = HikSpec::new(&sim.url(), "admin", "wrong-Secret-42");
    assert!(!format!("{spec:?}").contains("wrong-Secret-42"));
    running.stop().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_punch_events_are_never_sent() {
    let sim = sim_with(200, HikSimConfig::default()).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 1\n# only faces count here\nevent_minors = [75]",
        ))
        .await;
    let faces: Vec<HikEvent> = sim
        .events()
        .into_iter()
        .filter(|e| e.major == 5 && e.minor == 75 && e.employee.is_some())
        .collect();
    until(&running, "realtime", |s| {
        figures_of(s).realtime == Some(true)
    })
    .await;
    // failures, a door event, and a stranger's face on the stream: none is sent
    let none = [
        (76u32, Some("1001")),
        (39, Some("1002")),
        (22, None),
        (75, None),
    ];
    let added = sim.add_events(none.into_iter().map(|(minor, who)| HikEvent {
        serial: 0,
        major: 5,
        minor,
        time: sim.device_now(),
        employee: who.map(str::to_string),
        name: None,
        attendance_status: None,
    }));
    // a card punch (not in event_minors here) and a face punch
    sim.punch("1005", 1, 1);
    let face = sim.punch("1006", 75, 2);
    let mut want: Vec<HikEvent> = faces;
    want.push(face);
    let ids: HashSet<String> = want
        .iter()
        .map(|e| {
            format!(
                "{DEVICE}/{}/{}",
                e.employee.as_deref().unwrap(),
                e.time.format("%Y%m%d%H%M%S")
            )
        })
        .collect();
    bounded(&env, ids.len()).await;
    expect_delivered_once(&env, &running, ids.len()).await;
    // one more pull after the last realtime event: still nothing else
    let pulls = hik(&running).pulls.unwrap_or(0);
    until(&running, "pulled again", |s| {
        figures_of(s).pulls.unwrap_or(0) > pulls + 1
    })
    .await;
    assert_eq!(stored(&env), ids);
    // every major-5 event that is not a face punch was seen and skipped (the pull asks for major 5
    // only: alarms and operations are not even read)
    let others = sim
        .events()
        .iter()
        .filter(|e| e.major == 5 && !(e.minor == 75 && e.employee.is_some()))
        .count() as u64;
    assert_eq!(added.len(), 4);
    let f = hik(&running);
    assert!(f.events_skipped.unwrap_or(0) >= others, "{others}: {f:?}");
    running.stop().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_reset_is_reported_without_loss_or_double() {
    let sim = sim_with(150, HikSimConfig::default()).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 1\nrealtime = false",
        ))
        .await;
    let mut all = sim.events();
    expect_exactly(&env, &running, &all).await;

    // a factory reset: the log emptied, serial numbers from 1 again, new punches after it
    sim.factory_reset();
    let users = generate_users(20);
    let fresh = generate_events(60, &users, sim.device_now() - TimeDelta::minutes(8));
    all.extend(sim.add_events(fresh));
    until(&running, "reported the serial reset", |s| {
        figures_of(s).serial_resets == Some(1)
    })
    .await;
    expect_exactly(&env, &running, &all).await;
    let f = hik(&running);
    assert!(
        f.last_warning
            .as_deref()
            .unwrap_or("")
            .contains("went back"),
        "{f:?}"
    );
    assert_eq!(f.serial_watermark, Some(60), "{f:?}");

    // another terminal at the address: reported, its whole log read, nothing doubled
    running.stop().await;
    sim.swap_device("DS-K1T341AMF20260101V031000ENK00000002");
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 1\nrealtime = false",
        ))
        .await;
    until(&running, "reported the other terminal", |s| {
        figures_of(s)
            .last_warning
            .is_some_and(|w| w.contains("serial number changed"))
    })
    .await;
    sim.punch("1001", 75, 0);
    all = sim.events().into_iter().chain(all).collect();
    expect_exactly(&env, &running, &all).await;
    running.stop().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_hikvision_pull_loses_and_duplicates_nothing() {
    use clockbridge_testkit::standin::DedupMode;
    use nix::sys::signal::{kill, Signal};

    let sim = sim_with(
        12_000,
        HikSimConfig {
            // ~400 pages of 30, each a little slow: a pull takes long enough to be cut
            page_delay: Duration::from_millis(3),
            ..HikSimConfig::default()
        },
    )
    .await;
    let env = Env::new(StandinConfig {
        latency: Duration::from_millis(40),
        dedup: DedupMode::Silent,
        ..StandinConfig::default()
    })
    .await;
    let config = env.write_config(&format!(
        "[log]\nlevel = \"info\"\n{}",
        device(&sim, "Passw0rd!", "poll_interval = 1")
    ));
    let log = env.dir.path().join("daemon.log");
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let kill9 = |child: &tokio::process::Child| kill(pid_of(child), Signal::SIGKILL).unwrap();

    // 1: killed in the middle of the first pull (part of it handed over, part committed)
    let mut child = spawn_daemon(&config, &log);
    wait_sim(&sim, |c| c.acs_pages >= 150).await;
    kill9(&child);
    child.wait().await.unwrap();
    // punches while it is down
    sim.punch("1001", 75, 0);
    // 2: killed in the middle of the next pull (from the watermark stored before the kill)
    let pages = sim.counters().acs_pages;
    let mut child = spawn_daemon(&config, &log);
    wait_sim(&sim, |c| c.acs_pages >= pages + 60).await;
    kill9(&child);
    child.wait().await.unwrap();
    // 3: killed while uploading
    let mut child = spawn_daemon(&config, &log);
    let target = env.standin.stats().batch_requests + 5;
    tokio::time::timeout(PATIENCE, env.standin.wait_requests(target))
        .await
        .unwrap_or_else(|_| panic!("the daemon never uploaded: {}", daemon_log()));
    kill9(&child);
    child.wait().await.unwrap();
    assert!(
        env.standin.stored_len() < expected(&sim.events()).len(),
        "everything was delivered before the last kill: the test did not test anything"
    );

    // and to the end, with a punch on the stream
    let child = spawn_daemon(&config, &log);
    sim.punch("1002", 38, 1);
    let want = expected(&sim.events());
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(want.len()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {} stored: {}",
                env.standin.stored_len(),
                want.len(),
                daemon_log()
            )
        });
    stop(child, &log).await;
    assert_eq!(assert_each_written_once(&env.standin), want.len());
    assert_eq!(stored(&env), want);
    let st = status_json(&config).await;
    assert_eq!(st["queue"]["delivered"], want.len() as u64, "{st}");
    assert_eq!(st["queue"]["dead"], 0, "{st}");
    sim.shutdown();
}

/// A terminal on HTTPS with its own self-signed certificate (as they ship): refused with an error
/// that names the certificate while `accept_invalid_certs` is false, nothing read; read exactly
/// once when the operator accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_over_https_with_its_own_certificate_is_read_only_when_accepted() {
    let sim = sim_with(
        60,
        HikSimConfig {
            tls: true,
            ..HikSimConfig::default()
        },
    )
    .await;
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 1\nrealtime = false",
        ))
        .await;
    until(&running, "reported the untrusted certificate", |s| {
        s.last_error().is_some_and(|e| {
            e.contains("certificate is not trusted") && e.contains("accept_invalid_certs = true")
        })
    })
    .await;
    let err = stats(&running).last_error().unwrap();
    assert!(
        err.contains(DEVICE) || err.contains(&sim.addr().to_string()),
        "the error names the terminal: {err}"
    );
    assert_eq!(sim.counters().requests, 0, "no request got through");
    assert_eq!(env.standin.stored().len(), 0);
    running.stop().await;

    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 1\naccept_invalid_certs = true",
        ))
        .await;
    let events = sim.events();
    expect_exactly(&env, &running, &events).await;
    assert!(hik(&running).auth_failures == 0);
    running.stop().await;
    sim.shutdown();
}

/// `clockbridge reconcile`'s clock side for a Hikvision terminal: it reads the terminal's punches of
/// the range from its event log (strangers, failures and other events not counted) and holds them
/// against the queue's rows of the device: punches the source has not read yet are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_a_hikvision_terminals_punches_of_the_range() {
    let sim = sim_with(300, HikSimConfig::default()).await;
    let env = Env::new(StandinConfig::default()).await;
    // one pull at start, then none within the test
    let running = env
        .start(&device(
            &sim,
            "Passw0rd!",
            "poll_interval = 3600\nrealtime = false",
        ))
        .await;
    let read = sim.events();
    expect_exactly(&env, &running, &read).await;
    // after the pull: five punches, a failed face and a stranger, none read yet
    for i in 1..=5 {
        sim.punch(&format!("{}", 1000 + i), 75, -2 * i);
    }
    sim.punch("1001", 76, -1);
    let _ = sim.add_events([HikEvent {
        serial: 0,
        major: 5,
        minor: 75,
        time: sim.device_now() - TimeDelta::seconds(1),
        employee: None,
        name: None,
        attendance_status: None,
    }]);

    let today = sim.device_now().date();
    let cfg = env.config_with(&device(&sim, "Passw0rd!", ""), &[]);
    let zones = std::collections::HashMap::from([(DEVICE.to_string(), chrono_tz::Asia::Shanghai)]);
    let range = clockbridge::reconcile::range::Range::new(today.pred_opt().unwrap(), today, zones);
    let w = range.window(DEVICE);
    let rows = running
        .queue
        .rows_in_range("user_flow", w.from, w.to)
        .await
        .unwrap();
    let punches = expected(&read).len() as u64;
    assert_eq!(rows.len() as u64, punches);
    let checks =
        clockbridge::reconcile::clocks::check(&cfg, &running.queue, &range, &[], &rows).await;
    assert_eq!(checks.len(), 1);
    let c = &checks[0];
    assert_eq!((c.device.as_str(), c.kind.as_str()), (DEVICE, "hikvision"));
    assert_eq!(c.note, None, "{c:?}");
    assert_eq!(c.counted.range_records, Some(punches + 5), "{c:?}");
    assert_eq!(c.queue_rows_in_range, punches);
    assert_eq!(c.missing_from_queue, 5);
    assert!(!c.agrees());
    running.stop().await;
    sim.shutdown();
}
