//! ZKTeco terminals (`kind = "zk"`) end to end: the simulator (`clockbridge_testkit::zksim`) as the device,
//! the daemon reading it, the stand-in as the platform.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use clockbridge::daemon::Running;
use clockbridge::sources::zk::ZkFigures;
use clockbridge::sources::DeviceStats;
use clockbridge_testkit::standin::StandinConfig;
use clockbridge_testkit::zksim::{
    self, generate_records, generate_users, RecordSize, SimConfig, SimHandle, SimRecord, UserSize,
};

use crate::util::*;

const DEVICE: &str = "door-zk";

fn start_time() -> NaiveDateTime {
    NaiveDateTime::parse_from_str("2026-03-02 06:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A simulated device with `users` users and `records` records.
async fn sim(record_size: RecordSize, comm_key: u32, users: usize, records: usize) -> SimHandle {
    let users = generate_users(users);
    let records = generate_records(records, &users, start_time());
    zksim::start(SimConfig {
        comm_key,
        record_size,
        user_size: if record_size == RecordSize::B40 {
            UserSize::B72
        } else {
            UserSize::B28
        },
        users,
        records,
        // a correct clock in Shanghai
        clock_offset: TimeDelta::hours(8),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// The `[[devices]]` block of a zk device at `sim`, with `extra` keys.
fn device(sim: &SimHandle, extra: &str) -> String {
    device_named(DEVICE, &sim.addr().to_string(), extra)
}

fn device_named(id: &str, address: &str, extra: &str) -> String {
    format!(
        "\n[[devices]]\nid = \"{id}\"\nkind = \"zk\"\naddress = \"{address}\"\ntimezone = \"Asia/Shanghai\"\nlocation_name = \"HQ gate\"\n{extra}\n"
    )
}

/// The external ids (`device/user/YYYYMMDDHHMMSS`) the records of `sim` must arrive as, with the
/// device user id `user(record)`.
fn expected_ids(records: &[SimRecord], user: impl Fn(&SimRecord) -> String) -> HashSet<String> {
    records
        .iter()
        .map(|r| format!("{DEVICE}/{}/{}", user(r), r.time.format("%Y%m%d%H%M%S")))
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

fn zk(running: &Running) -> ZkFigures {
    stats(running).snapshot().figures()
}

/// Waits until the device's figures satisfy `cond` (re-checked on every change of the device).
async fn until(running: &Running, what: &str, mut cond: impl FnMut(&DeviceStats) -> bool) {
    let st = stats(running);
    tokio::time::timeout(PATIENCE, st.wait_for(&mut cond))
        .await
        .unwrap_or_else(|_| panic!("device never {what}: {:?}", st.snapshot()));
}

#[tokio::test]
async fn zk_logs_of_8_16_and_40_byte_records_with_and_without_a_comm_key_arrive_once() {
    for (size, key) in [
        (RecordSize::B8, 0),
        (RecordSize::B16, 0),
        (RecordSize::B16, 20_240),
        (RecordSize::B40, 0),
        (RecordSize::B40, 999_999),
    ] {
        let sim = sim(size, key, 12, 700).await;
        let env = Env::new(StandinConfig::default()).await;
        let running = env
            .start(&device(
                &sim,
                &format!("comm_key = {key}\nrealtime = false"),
            ))
            .await;
        expect_delivered_once(&env, &running, 700).await;
        let users = sim.users();
        let want = expected_ids(&sim.records(), |r| match size {
            // 8-byte records carry the device's internal number (user_id_source = "record")
            RecordSize::B8 => users
                .iter()
                .find(|u| u.user_id == r.user_id)
                .unwrap()
                .uid
                .to_string(),
            _ => r.user_id.clone(),
        });
        assert_eq!(stored_ids(&env), want, "{size:?} key {key}");
        let first = env.standin.stored()[0].record.clone();
        assert_eq!(first["location_name"], "HQ gate");
        assert_eq!(first["device_id"], DEVICE);
        // the device was re-enabled after the read
        assert!(sim.is_enabled(), "{size:?}");
        let c = sim.counters();
        assert_eq!(c.disables, c.enables, "{size:?}: {c:?}");
        if key != 0 {
            assert!(c.auths >= 1, "{c:?}");
            assert_eq!(c.auth_failures, 0, "{c:?}");
        }
        running.stop().await;
    }
}

#[tokio::test]
async fn user_table_source_gives_8_byte_records_the_users_pin() {
    let sim = sim(RecordSize::B8, 0, 5, 40).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "user_id_source = \"user_table\"\nrealtime = false",
        ))
        .await;
    expect_delivered_once(&env, &running, 40).await;
    assert_eq!(
        stored_ids(&env),
        expected_ids(&sim.records(), |r| r.user_id.clone())
    );
    running.stop().await;
}

#[tokio::test]
async fn incremental_poll_after_new_records_queues_only_those() {
    let sim = sim(RecordSize::B40, 0, 20, 2000).await;
    let env = Env::new(StandinConfig::default()).await;
    let extra = "poll_interval = 1\nrealtime = false";
    let running = env.start(&device(&sim, extra)).await;
    expect_delivered_once(&env, &running, 2000).await;
    until(&running, "reached the watermark 2000", |s| {
        s.snapshot().figures::<ZkFigures>().watermark == Some(2000)
    })
    .await;
    let polls = zk(&running).polls.unwrap();

    let more = generate_records(7, &sim.users(), start_time() + TimeDelta::days(1));
    sim.add_records(more.clone()).unwrap();
    expect_delivered_once(&env, &running, 2007).await;
    until(&running, "reached the watermark 2007", |s| {
        s.snapshot().figures::<ZkFigures>().watermark == Some(2007)
    })
    .await;
    // a poll with nothing new reads nothing new
    until(&running, "polled twice more", |s| {
        s.snapshot().figures::<ZkFigures>().polls.unwrap_or(0) >= polls + 3
    })
    .await;
    let st = stats(&running);
    // only the new records were handed over: not the whole log again
    assert_eq!(st.punches_read.load(Ordering::Relaxed), 2007);
    assert_eq!(st.duplicates.load(Ordering::Relaxed), 0);
    // clearing is off by default: the device keeps its log
    assert_eq!(sim.record_count(), 2007);
    assert_eq!(sim.counters().clears, 0);
    running.stop().await;

    // the watermark survives a restart: nothing is read again
    let running = env.start(&device(&sim, extra)).await;
    until(&running, "polled after the restart", |s| {
        s.snapshot().figures::<ZkFigures>().polls.unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(zk(&running).watermark, Some(2007));
    assert_eq!(stats(&running).punches_read.load(Ordering::Relaxed), 0);
    running.stop().await;
    assert_eq!(assert_each_written_once(&env.standin), 2007);
}

#[tokio::test]
async fn transfer_cut_mid_chunk_recovers_with_nothing_lost_or_duplicated() {
    // 4 000 records of 40 bytes: three chunks of 64 KiB
    let sim = sim(RecordSize::B40, 0, 30, 4000).await;
    sim.drop_mid_chunk(2, false);
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(&sim, "realtime = false\npoll_interval = 1"))
        .await;
    expect_delivered_once(&env, &running, 4000).await;
    assert_eq!(
        stored_ids(&env),
        expected_ids(&sim.records(), |r| r.user_id.clone())
    );
    let c = sim.counters();
    assert_eq!(c.injected_drops, 1, "{c:?}");
    let st = stats(&running);
    // the broken read handed nothing over; the retried one, everything once
    assert_eq!(st.punches_read.load(Ordering::Relaxed), 4000);
    assert_eq!(st.duplicates.load(Ordering::Relaxed), 0);
    assert!(st.connects.load(Ordering::Relaxed) >= 2);
    running.stop().await;
}

#[tokio::test]
async fn the_log_is_cleared_only_after_every_record_is_committed() {
    let sim = sim(RecordSize::B16, 0, 10, 300).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "clear_device_log = true\nrealtime = false\npoll_interval = 1",
        ))
        .await;
    until(&running, "cleared its log", |s| {
        s.snapshot().figures::<ZkFigures>().records_cleared == Some(300)
    })
    .await;
    // when the device's log is gone, all 300 punches are in the queue
    let counts = running.queue.counts().await.unwrap();
    let c = counts.total;
    assert_eq!(
        c.pending + c.in_flight + c.delivered + c.dead + c.unmapped,
        300
    );
    assert_eq!(sim.record_count(), 0);
    assert_eq!(sim.counters().clears, 1);
    // the poll that cleared the log enables the device again, just after its figures show the clear
    sim.wait_counters(PATIENCE, |c| c.enables >= 1)
        .await
        .unwrap_or_else(|c| panic!("the device was not enabled again after the clear: {c:?}"));

    // new punches after the clear are read from the start of the new log, then cleared too
    let more = generate_records(25, &sim.users(), start_time() + TimeDelta::days(2));
    sim.add_records(more).unwrap();
    until(&running, "cleared its log twice", |s| {
        s.snapshot().figures::<ZkFigures>().records_cleared == Some(325)
    })
    .await;
    expect_delivered_once(&env, &running, 325).await;
    // a clear by clockbridge is not reported as a shrunk log
    assert_eq!(zk(&running).last_warning, None);
    running.stop().await;
}

#[tokio::test]
async fn a_wrong_comm_key_gives_the_clear_error_in_status() {
    let sim = sim(RecordSize::B40, 0, 3, 5).await;
    sim.set_comm_key(424_242);
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(&sim, "comm_key = 171717\nrealtime = false"))
        .await;
    until(&running, "reported the refused key", |s| {
        s.last_error()
            .is_some_and(|e| e.contains("authentication refused"))
    })
    .await;
    let err = stats(&running).last_error().unwrap();
    assert_eq!(
        err,
        format!(
            "device {DEVICE} ({}): authentication refused: check comm_key",
            sim.addr()
        )
    );
    let json = serde_json::to_string(&running.snapshot()).unwrap();
    assert!(
        json.contains("authentication refused: check comm_key"),
        "{json}"
    );
    assert!(
        !json.contains("171717") && !json.contains("424242"),
        "{json}"
    );
    assert_eq!(env.standin.stored().len(), 0);
    running.stop().await;
}

#[tokio::test]
async fn a_realtime_punch_is_delivered_without_waiting_for_the_poll() {
    let sim = sim(RecordSize::B40, 0, 4, 10).await;
    let env = Env::new(StandinConfig::default()).await;
    // the next poll is an hour away
    let running = env.start(&device(&sim, "poll_interval = \"1h\"")).await;
    expect_delivered_once(&env, &running, 10).await;
    until(&running, "subscribed to events", |s| {
        s.snapshot().figures::<ZkFigures>().realtime == Some(true)
    })
    .await;
    let punch = SimRecord::new("1003", start_time() + TimeDelta::days(3));
    sim.add_records([punch.clone()]).unwrap();
    expect_delivered_once(&env, &running, 11).await;
    let want = format!("{DEVICE}/1003/{}", punch.time.format("%Y%m%d%H%M%S"));
    assert!(stored_ids(&env).contains(&want));
    assert_eq!(zk(&running).realtime_events, Some(1));
    assert_eq!(zk(&running).polls, Some(1));
    running.stop().await;
}

#[tokio::test]
async fn clock_skew_is_shown_in_status_and_corrected_with_sync_clock() {
    let sim = sim(RecordSize::B40, 0, 2, 3).await;
    // 90 s fast in Shanghai
    sim.set_clock_offset(TimeDelta::hours(8) + TimeDelta::seconds(90));
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(&device(&sim, "realtime = false")).await;
    until(&running, "measured its clock", |s| {
        s.snapshot()
            .figures::<ZkFigures>()
            .clock_skew_secs
            .is_some()
    })
    .await;
    let z = zk(&running);
    let skew = z.clock_skew_secs.unwrap();
    assert!((89..=91).contains(&skew), "{z:?}");
    assert!(z.clock_skew_measured_at.is_some());
    assert!(
        z.last_warning
            .as_deref()
            .unwrap()
            .contains(&format!("{skew:+} s off the gateway's")),
        "{z:?}"
    );
    let json = serde_json::to_value(stats(&running).snapshot()).unwrap();
    assert!(json["clock_skew_secs"].as_i64().is_some(), "{json}");
    assert_eq!(sim.counters().set_times, 0);
    running.stop().await;

    let running = env
        .start(&device(&sim, "realtime = false\nsync_clock = true"))
        .await;
    until(&running, "set its clock", |s| {
        s.snapshot().figures::<ZkFigures>().clock_set_at.is_some()
    })
    .await;
    assert_eq!(sim.counters().set_times, 1);
    let skew = zk(&running).clock_skew_secs.unwrap();
    assert!(skew.abs() <= 1, "{skew}");
    let off = sim.device_time() - (chrono::Utc::now().naive_utc() + TimeDelta::hours(8));
    assert!(off.num_seconds().abs() <= 2, "{off}");
    running.stop().await;
}

#[tokio::test]
async fn a_shrunk_log_and_a_new_serial_number_are_reported() {
    let sim = sim(RecordSize::B40, 0, 5, 50).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(&sim, "realtime = false\npoll_interval = 1"))
        .await;
    expect_delivered_once(&env, &running, 50).await;
    until(&running, "reached the watermark", |s| {
        s.snapshot().figures::<ZkFigures>().watermark == Some(50)
    })
    .await;
    // cleared on the device's keypad, then two punches
    sim.clear_records();
    sim.add_records(generate_records(
        2,
        &sim.users(),
        start_time() + TimeDelta::days(4),
    ))
    .unwrap();
    until(&running, "reported the shrunk log", |s| {
        s.snapshot()
            .figures::<ZkFigures>()
            .last_warning
            .is_some_and(|w| w.contains("shrank from 50 to 2"))
    })
    .await;
    expect_delivered_once(&env, &running, 52).await;

    sim.set_serial_number("OTHER-SERIAL-9");
    running.stop().await;
    let running = env
        .start(&device(&sim, "realtime = false\npoll_interval = 1"))
        .await;
    until(&running, "reported the new serial number", |s| {
        s.snapshot()
            .figures::<ZkFigures>()
            .last_warning
            .is_some_and(|w| w.contains("serial number changed") && w.contains("OTHER-SERIAL-9"))
    })
    .await;
    assert_eq!(
        zk(&running).serial_number.as_deref(),
        Some("OTHER-SERIAL-9")
    );
    running.stop().await;
}

#[tokio::test]
async fn an_offline_zk_device_does_not_hold_up_another() {
    let sim = sim(RecordSize::B40, 0, 5, 120).await;
    // a port nothing listens on
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&format!(
            "{}{}",
            device_named("door-off", &dead.to_string(), "realtime = false"),
            device(&sim, "realtime = false"),
        ))
        .await;
    expect_delivered_once(&env, &running, 120).await;
    let off = running.devices["door-off"].stats.clone();
    tokio::time::timeout(
        PATIENCE,
        off.wait_for(|s| s.last_error().is_some_and(|e| e.contains("cannot connect"))),
    )
    .await
    .unwrap();
    assert!(!off.snapshot().online);
    running.stop().await;
}

#[tokio::test]
async fn unmapped_users_are_shown_with_their_names_from_the_device() {
    let sim = sim(RecordSize::B40, 0, 3, 9).await;
    let env = Env::new(StandinConfig::default()).await;
    let table = env.dir.path().join("users.csv");
    std::fs::write(
        &table,
        "device_user_id,user_id\n1001,fs-1001\n1002,fs-1002\n",
    )
    .unwrap();
    let running = env
        .start(&format!(
            "[mapping]\nmode = \"table\"\nfile = \"{}\"\n{}",
            table.display(),
            device(&sim, "realtime = false")
        ))
        .await;
    until(&running, "listed the unmapped user", |s| {
        !s.snapshot()
            .figures::<ZkFigures>()
            .unmapped_users
            .is_empty()
    })
    .await;
    let z = zk(&running);
    assert_eq!(z.unmapped_users.len(), 1, "{z:?}");
    assert_eq!(z.unmapped_users[0].device_user_id, "1003");
    assert_eq!(z.unmapped_users[0].name.as_deref(), Some("User 1003"));
    expect_delivered_once(&env, &running, 6).await;
    assert_eq!(running.queue.counts().await.unwrap().total.unmapped, 3);
    running.stop().await;
}

#[tokio::test]
async fn slow_replies_within_the_timeouts_still_read_everything() {
    let sim = sim(RecordSize::B40, 0, 5, 200).await;
    sim.set_reply_delay(Duration::from_millis(30));
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(&device(&sim, "realtime = false")).await;
    expect_delivered_once(&env, &running, 200).await;
    assert_eq!(stats(&running).connects.load(Ordering::Relaxed), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_punch_arriving_between_read_and_clear_is_not_lost() {
    let sim = sim(RecordSize::B40, 0, 5, 200).await;
    // slow replies: the gap between the read and the clear is several replies long
    sim.set_reply_delay(Duration::from_millis(150));
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(
            &sim,
            "clear_device_log = true\nrealtime = false\npoll_interval = 1",
        ))
        .await;
    // the first read of the log has begun (its dataset is fixed): a punch arrives meanwhile
    sim.wait_counters(PATIENCE, |c| c.attendance_reads >= 1)
        .await
        .unwrap();
    let late = SimRecord::new("1002", start_time() + TimeDelta::days(5));
    sim.add_records([late.clone()]).unwrap();
    until(&running, "cleared its log", |s| {
        s.snapshot()
            .figures::<ZkFigures>()
            .records_cleared
            .is_some()
    })
    .await;
    // the clear waited until the late punch was read and committed too
    assert_eq!(zk(&running).records_cleared, Some(201));
    assert_eq!(sim.counters().clears, 1);
    expect_delivered_once(&env, &running, 201).await;
    let want = format!("{DEVICE}/1002/{}", late.time.format("%Y%m%d%H%M%S"));
    assert!(stored_ids(&env).contains(&want));
    running.stop().await;
}

#[tokio::test]
async fn status_shows_the_zk_figures_as_text_and_json() {
    let sim = sim(RecordSize::B40, 0, 3, 12).await;
    let env = Env::new(StandinConfig::default()).await;
    let extra = device(&sim, "realtime = false");
    let running = env.start(&extra).await;
    until(&running, "polled", |s| {
        s.snapshot().figures::<ZkFigures>().polls.is_some()
    })
    .await;
    // the snapshot `status` reads, written now rather than waiting for the timer
    let snap = serde_json::to_string(&running.snapshot()).unwrap();
    running
        .queue
        .put_runtime(clockbridge::daemon::RUNTIME_KEY, snap)
        .await
        .unwrap();
    let cfg = env.config_with(&extra, &[]);
    let status = clockbridge::status::read(&cfg).unwrap();
    let json = serde_json::to_value(&status).unwrap();
    let d = &json["devices"][0];
    assert_eq!(d["kind"], "zk");
    assert_eq!(d["serial_number"], "CBSIM0000001");
    assert_eq!(d["device_records"], 12);
    assert_eq!(d["watermark"], 12);
    assert!(d["clock_skew_secs"].as_i64().unwrap().abs() <= 2, "{d}");
    assert!(d["clock_skew_measured_at"].as_i64().is_some(), "{d}");
    let text = clockbridge::status::render_text(&status);
    assert!(
        text.contains(
            "zk: serial CBSIM0000001, 12 records on the device, watermark 12, clock skew"
        ),
        "{text}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_transfer_stalled_mid_chunk_times_out_and_is_read_again() {
    let sim = sim(RecordSize::B40, 0, 30, 4000).await;
    sim.stall_mid_chunk(2, false);
    let env = Env::new(StandinConfig::default()).await;
    // a chunk may take 3 x io_timeout
    let running = env
        .start(&device(&sim, "realtime = false\nio_timeout = 1"))
        .await;
    expect_delivered_once(&env, &running, 4000).await;
    let st = stats(&running);
    assert_eq!(st.punches_read.load(Ordering::Relaxed), 4000);
    assert_eq!(st.duplicates.load(Ordering::Relaxed), 0);
    assert_eq!(st.connects.load(Ordering::Relaxed), 2);
    assert_eq!(sim.counters().injected_drops, 1);
    // the session that stalled left the device disabled; the next one re-enabled it first
    assert!(sim.is_enabled());
    let c = sim.counters();
    assert!(c.enables >= c.disables, "{c:?}");
    running.stop().await;
}

#[tokio::test]
async fn a_device_that_answers_with_one_direct_data_packet_is_read_incrementally_too() {
    let users = generate_users(4);
    let records = generate_records(90, &users, start_time());
    let sim = zksim::start(SimConfig {
        record_size: RecordSize::B16,
        user_size: UserSize::B28,
        users,
        records,
        clock_offset: TimeDelta::hours(8),
        // every dataset in one CMD_DATA reply to PREPARE_BUFFER
        direct_max: 1 << 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let env = Env::new(StandinConfig::default()).await;
    let running = env
        .start(&device(&sim, "realtime = false\npoll_interval = 1"))
        .await;
    expect_delivered_once(&env, &running, 90).await;
    sim.add_records(generate_records(
        4,
        &sim.users(),
        start_time() + TimeDelta::days(6),
    ))
    .unwrap();
    expect_delivered_once(&env, &running, 94).await;
    until(&running, "reached the watermark 94", |s| {
        s.snapshot().figures::<ZkFigures>().watermark == Some(94)
    })
    .await;
    assert_eq!(stats(&running).punches_read.load(Ordering::Relaxed), 94);
    assert_eq!(
        sim.counters().chunks,
        sim.counters().attendance_reads + sim.counters().user_reads
    );
    assert_eq!(
        stored_ids(&env),
        expected_ids(&sim.records(), |r| r.user_id.clone())
    );
    running.stop().await;
}

#[tokio::test]
async fn a_realtime_punch_of_an_8_byte_terminal_keeps_the_key_of_its_log_record() {
    let sim = sim(RecordSize::B8, 0, 5, 10).await;
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(&device(&sim, "poll_interval = \"1h\"")).await;
    expect_delivered_once(&env, &running, 10).await;
    until(&running, "subscribed to events", |s| {
        s.snapshot().figures::<ZkFigures>().realtime == Some(true)
    })
    .await;
    // the event carries the user id 1003; the log record, the internal number 3
    let punch = SimRecord::new("1003", start_time() + TimeDelta::days(7));
    sim.add_records([punch.clone()]).unwrap();
    expect_delivered_once(&env, &running, 11).await;
    let want = format!("{DEVICE}/3/{}", punch.time.format("%Y%m%d%H%M%S"));
    assert!(stored_ids(&env).contains(&want), "{:?}", stored_ids(&env));
    running.stop().await;

    // the next poll reads the same punch from the log: a duplicate, not a second punch
    let running = env.start(&device(&sim, "poll_interval = \"1h\"")).await;
    until(&running, "read the log", |s| {
        s.snapshot().figures::<ZkFigures>().watermark == Some(11)
    })
    .await;
    assert_eq!(stats(&running).duplicates.load(Ordering::Relaxed), 1);
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 11)
        .await
        .unwrap();
    assert_eq!(assert_each_written_once(&env.standin), 11);
    running.stop().await;
}

#[tokio::test]
async fn a_terminal_that_splits_chunks_into_1008_byte_packets_is_read_whole() {
    let users = generate_users(10);
    let records = generate_records(3000, &users, start_time());
    let sim = zksim::start(SimConfig {
        users,
        records,
        clock_offset: TimeDelta::hours(8),
        // as real terminals send them
        data_packet_max: Some(1008),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start(&device(&sim, "realtime = false")).await;
    expect_delivered_once(&env, &running, 3000).await;
    assert_eq!(
        stored_ids(&env),
        expected_ids(&sim.records(), |r| r.user_id.clone())
    );
    assert_eq!(stats(&running).connects.load(Ordering::Relaxed), 1);
    running.stop().await;
}
