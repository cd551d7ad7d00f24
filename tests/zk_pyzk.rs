//! The ZKTeco simulator (`clockbridge_testkit::zksim`) read by the public Python client pyzk 0.9: proof that
//! the simulator speaks the protocol the way public clients expect, so that clockbridge's own client
//! can then be tested against it. Each test starts a simulator on loopback, runs a script from
//! `tests/pyzk/` with the test venv's interpreter, and compares what pyzk printed (JSON) with what
//! the simulator holds.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{NaiveDateTime, TimeDelta};
use clockbridge_testkit::zksim::{
    self, EventFormat, RecordSize, SimConfig, SimHandle, SimRecord, SimUser, UserSize,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::util::{python_with, PATIENCE};

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pyzk")
        .join(name)
}

fn pyzk_command(python: &Path, name: &str, sim: &SimHandle, password: u32) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script(name))
        .arg(sim.addr().ip().to_string())
        .arg(sim.addr().port().to_string())
        .arg(password.to_string())
        .kill_on_drop(true);
    cmd
}

/// Runs a pyzk script to its end and returns the JSON object of its last output line.
async fn pyzk(python: &Path, name: &str, sim: &SimHandle, password: u32, extra: &[&str]) -> Value {
    let out = tokio::time::timeout(
        PATIENCE,
        pyzk_command(python, name, sim, password)
            .args(extra)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: pyzk did not finish; counters {:?}", sim.counters()))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

/// Starts pyzk's live_capture, waits until it has registered for events, then adds each record and
/// waits for pyzk to print its event before adding the next. Returns the events pyzk printed.
async fn live_capture(
    python: &Path,
    sim: &SimHandle,
    password: u32,
    records: &[SimRecord],
) -> Vec<Value> {
    let mut child = pyzk_command(python, "live_capture.py", sim, password)
        .arg(records.len().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    sim.wait_counters(PATIENCE, |c| c.event_sessions == 1)
        .await
        .expect("pyzk registers for realtime events");
    let mut events = Vec::new();
    for r in records {
        sim.add_records([r.clone()]).unwrap();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("pyzk prints the event")
            .unwrap()
            .expect("pyzk's output ended early");
        let v: Value = serde_json::from_str(&line).unwrap();
        events.push(v["event"].clone());
    }
    let done = lines.next_line().await.unwrap().unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<Value>(&done).unwrap()["done"],
        records.len()
    );
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "live_capture.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pyzk unsubscribes (reg_event(0)) and exits
    sim.wait_counters(PATIENCE, |c| {
        c.event_sessions == 0 && c.open_connections == 0
    })
    .await
    .expect("pyzk unsubscribes and disconnects");
    events
}

/// Records of `users` spread over months, month ends and midnights, with varied verify types,
/// states and work codes.
fn varied_records(users: &[&str], n: usize) -> Vec<SimRecord> {
    let mut out: Vec<SimRecord> = (0..n)
        .map(|i| SimRecord {
            user_id: users[i % users.len()].to_owned(),
            time: at("2026-01-30 23:00:00") + TimeDelta::seconds(i as i64 * (86_400 / 7 + 13)),
            verify: [1, 15, 4, 0, 2][i % 5],
            state: (i % 6) as u8,
            workcode: (i % 3) as u32,
        })
        .collect();
    for (i, t) in [
        "2026-02-28 23:59:59",
        "2026-03-01 00:00:00",
        "2026-12-31 23:59:59",
        "2027-01-01 00:00:00",
    ]
    .iter()
    .enumerate()
    {
        let mut r = SimRecord::new(users[i % users.len()], at(t));
        r.state = 255;
        out.push(r);
    }
    out
}

/// Asserts pyzk read exactly `want`, in order: user id (also for 8-byte records, which carry a uid
/// pyzk resolves through the user table), time, verify type (`status`) and state (`punch`).
fn assert_attendance(got: &Value, want: &[SimRecord]) {
    let got = got.as_array().expect("attendance list");
    assert_eq!(got.len(), want.len(), "record count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let expected = serde_json::json!({
            "user_id": w.user_id,
            "timestamp": w.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            "status": w.verify,
            "punch": w.state,
        });
        let g = serde_json::json!({
            "user_id": g["user_id"], "timestamp": g["timestamp"],
            "status": g["status"], "punch": g["punch"],
        });
        assert_eq!(g, expected, "record {i}");
    }
}

fn assert_users(got: &Value, want: &[SimUser], name_len: usize) {
    let got = got.as_array().expect("user list");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let name: String = {
            let bytes = &w.name.as_bytes()[..w.name.len().min(name_len)];
            String::from_utf8_lossy(bytes).trim().to_owned()
        };
        assert_eq!(g["uid"], w.uid, "{g}");
        assert_eq!(g["user_id"], w.user_id.as_str(), "{g}");
        assert_eq!(g["name"], name.as_str(), "{g}");
        assert_eq!(g["privilege"], w.privilege, "{g}");
        assert_eq!(g["password"], w.password.as_str(), "{g}");
        assert_eq!(g["card"], w.card, "{g}");
        assert_eq!(g["group_id"], w.group.to_string().as_str(), "{g}");
    }
}

/// Asserts the device time pyzk printed lies between the simulator's clock before and after.
fn assert_time_between(got: &Value, before: NaiveDateTime, after: NaiveDateTime) {
    let t = at(got.as_str().expect("time string"));
    let slack = TimeDelta::seconds(1);
    assert!(
        before - slack <= t && t <= after + slack,
        "pyzk read {t}, device showed {before} .. {after}"
    );
}

fn staff() -> Vec<SimUser> {
    vec![
        SimUser {
            privilege: 14,
            password: "4321".into(),
            card: 7_654_321,
            group: 1,
            ..SimUser::new(1, "1001", "Zhang Wei")
        },
        SimUser {
            group: 2,
            ..SimUser::new(2, "1002", "Li Na")
        },
        SimUser::new(3, "A-17", "Wang Fang, night shift"),
        SimUser::new(40, "88", "Guest"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_reads_users_attendance_and_a_realtime_event_from_the_simulator() {
    let python = python_with("zk");
    let users = staff();
    let records = varied_records(&["1001", "A-17", "1002", "88", "nobody-9"], 200);
    let sim = zksim::start(SimConfig {
        comm_key: 45,
        users: users.clone(),
        records: records.clone(),
        serial_number: "ZK-SIM-4242".into(),
        clock_offset: TimeDelta::hours(8) + TimeDelta::seconds(17),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = sim.device_time();
    let v = pyzk(&python, "read_device.py", &sim, 45, &[]).await;
    let after = sim.device_time();
    assert_eq!(v["serial"], "ZK-SIM-4242");
    assert_eq!(v["platform"], "ZMM220_TFT");
    assert_eq!(v["device_name"], "clockbridge-zksim");
    assert_eq!(v["fp_version"], 10);
    assert_eq!(v["pin_width"], 9);
    assert_time_between(&v["time"], before, after);
    assert_eq!(v["sizes"]["users"], 4);
    assert_eq!(v["sizes"]["records"], 204);
    assert_eq!(v["user_packet_size"], 72.0);
    assert_users(&v["users"], &users, 24);
    assert_attendance(&v["attendance"], &records);
    assert_eq!(v["attendance_again"], 204);
    let c = sim.counters();
    assert_eq!((c.sessions, c.auths, c.auth_failures), (1, 1, 0), "{c:?}");
    assert_eq!((c.disables, c.enables, c.exits), (1, 1, 1), "{c:?}");
    assert_eq!((c.attendance_reads, c.user_reads), (2, 3), "{c:?}");
    assert_eq!(c.frees, 5, "every buffered read freed: {c:?}");
    assert_eq!(c.bad_packets, 0, "pyzk's checksums all accepted: {c:?}");

    let mut punch = SimRecord::new("A-17", at("2026-03-02 08:59:58"));
    punch.verify = 15;
    punch.state = 1;
    let events = live_capture(&python, &sim, 45, &[punch.clone()]).await;
    assert_eq!(
        events[0],
        serde_json::json!({
            "user_id": "A-17", "uid": 3, "timestamp": "2026-03-02 08:59:58", "status": 15, "punch": 1
        })
    );
    assert_eq!(sim.counters().events_sent, 1);
    // the punch is in the log too
    let v = pyzk(&python, "read_device.py", &sim, 45, &[]).await;
    assert_eq!(v["attendance"].as_array().unwrap().len(), 205);
    assert_eq!(v["attendance"][204]["user_id"], "A-17");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_reads_8_byte_records_through_the_uids_of_28_byte_users() {
    let python = python_with("zk");
    let users = vec![
        SimUser {
            password: "12345".into(),
            card: 99,
            ..SimUser::new(1, "5001", "Zhao")
        },
        SimUser::new(2, "5002", "Qian Lei"),
        SimUser::new(7, "70000", "Sun"),
    ];
    // "77" is in no user table: the record carries uid 77 and pyzk reports it as the user id
    let records = varied_records(&["5001", "70000", "77", "5002"], 150);
    let sim = zksim::start(SimConfig {
        comm_key: 999_999,
        record_size: RecordSize::B8,
        user_size: UserSize::B28,
        users: users.clone(),
        records: records.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "read_device.py", &sim, 999_999, &[]).await;
    assert_eq!(v["user_packet_size"], 28.0);
    assert_users(&v["users"], &users, 8);
    assert_attendance(&v["attendance"], &records);
    assert_eq!(sim.counters().auths, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_reads_16_byte_records_and_72_byte_users_without_a_comm_key_from_a_slow_device() {
    let python = python_with("zk");
    let users = vec![
        SimUser::new(1, "1001", "Zhang Wei"),
        SimUser::new(2, "4822257", "Zhou"),
    ];
    let records = varied_records(&["4822257", "1001", "123456789"], 120);
    let sim = zksim::start(SimConfig {
        record_size: RecordSize::B16,
        user_size: UserSize::B72,
        users: users.clone(),
        records: records.clone(),
        // every reply late: pyzk waits for each, nothing gets out of step
        reply_delay: std::time::Duration::from_millis(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "read_device.py", &sim, 0, &[]).await;
    assert_users(&v["users"], &users, 24);
    assert_attendance(&v["attendance"], &records);
    let c = sim.counters();
    assert_eq!((c.sessions, c.auths), (1, 0), "no key, no auth: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_is_refused_with_a_wrong_comm_key_and_reads_nothing() {
    let python = python_with("zk");
    let sim = zksim::start(SimConfig {
        comm_key: 45,
        users: staff(),
        records: varied_records(&["1001"], 10),
        ..Default::default()
    })
    .await
    .unwrap();
    for wrong in [46, 0] {
        let v = pyzk(&python, "read_device.py", &sim, wrong, &[]).await;
        assert_eq!(v["connect_error"], "Unauthenticated", "key {wrong}");
    }
    let c = sim.counters();
    assert_eq!((c.sessions, c.auths, c.auth_failures), (2, 0, 2), "{c:?}");
    assert_eq!((c.attendance_reads, c.user_reads, c.chunks), (0, 0, 0));
    // the right key still works
    let v = pyzk(&python, "read_device.py", &sim, 45, &[]).await;
    assert_eq!(v["attendance"].as_array().unwrap().len(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_parses_realtime_events_of_every_payload_size() {
    let python = python_with("zk");
    for (records, format, user) in [
        (RecordSize::B16, EventFormat::Short12, "4822257"),
        (RecordSize::B8, EventFormat::Short12, "1001"),
        (RecordSize::B40, EventFormat::Id32, "A-17"),
        (RecordSize::B40, EventFormat::Id36, "1002"),
        (RecordSize::B40, EventFormat::Id52, "A-17"),
    ] {
        let sim = zksim::start(SimConfig {
            record_size: records,
            event_format: Some(format),
            users: staff(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut punches = vec![
            SimRecord::new(user, at("2026-03-02 07:58:01")),
            SimRecord::new(user, at("2026-03-02 18:30:59")),
        ];
        punches[1].state = 1;
        punches[1].verify = 4;
        let events = live_capture(&python, &sim, 0, &punches).await;
        for (e, p) in events.iter().zip(&punches) {
            assert_eq!(e["user_id"], user, "{format:?}");
            assert_eq!(
                e["timestamp"],
                p.time.format("%Y-%m-%d %H:%M:%S").to_string()
            );
            assert_eq!(
                (e["status"].clone(), e["punch"].clone()),
                (p.verify.into(), p.state.into())
            );
        }
        assert_eq!(sim.counters().events_sent, 2, "{format:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_reads_a_log_of_several_chunks_and_one_sent_directly() {
    let python = python_with("zk");
    let records = varied_records(&["1001", "A-17", "1002"], 5000);
    let n = records.len();
    let log_chunks = (4 + n * 40).div_ceil(zksim::TCP_CHUNK) as u64;
    assert!(log_chunks >= 3);
    let sim = zksim::start(SimConfig {
        users: staff(),
        records: records.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "read_device.py", &sim, 0, &[]).await;
    assert_attendance(&v["attendance"], &records);
    // get_users once, then get_attendance twice (each reads the users, then the log)
    let c = sim.counters();
    assert_eq!(c.chunks, 3 + 2 * log_chunks, "{c:?}");

    let direct = zksim::start(SimConfig {
        users: staff(),
        records: records.clone(),
        direct_max: 1 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "read_device.py", &direct, 0, &[]).await;
    assert_attendance(&v["attendance"], &records);
    let c = direct.counters();
    assert_eq!((c.chunks, c.frees), (5, 0), "direct replies only: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_clears_the_log() {
    let python = python_with("zk");
    let sim = zksim::start(SimConfig {
        comm_key: 7,
        users: staff(),
        records: varied_records(&["1001", "A-17"], 300),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "clear_log.py", &sim, 7, &[]).await;
    assert_eq!(
        v,
        serde_json::json!({"before": 304, "cleared": true, "after": 0, "records_after": 0})
    );
    assert_eq!(sim.record_count(), 0);
    assert_eq!(sim.counters().clears, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_reads_and_sets_the_device_clock() {
    let python = python_with("zk");
    let sim = zksim::start(SimConfig {
        clock_offset: -TimeDelta::hours(3) + TimeDelta::seconds(17),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = sim.device_time();
    let v = pyzk(&python, "set_time.py", &sim, 0, &["2031-05-06 07:08:09"]).await;
    assert_time_between(&v["before"], before, before + PATIENCE);
    assert_time_between(
        &v["after"],
        at("2031-05-06 07:08:09"),
        at("2031-05-06 07:08:09") + TimeDelta::seconds(5),
    );
    let now = sim.device_time();
    assert!(
        at("2031-05-06 07:08:09") <= now && now <= at("2031-05-06 07:08:09") + PATIENCE,
        "{now}"
    );
    assert_eq!(sim.counters().set_times, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzk_sees_new_records_and_a_new_serial_number_at_the_next_read() {
    let python = python_with("zk");
    let first = varied_records(&["1001", "1002"], 50);
    let sim = zksim::start(SimConfig {
        users: staff(),
        records: first.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let v = pyzk(&python, "read_device.py", &sim, 0, &[]).await;
    assert_eq!(v["serial"], "CBSIM0000001");
    assert_attendance(&v["attendance"], &first);
    let more: Vec<SimRecord> = (0..3)
        .map(|i| SimRecord::new("88", at("2027-02-03 09:00:00") + TimeDelta::minutes(i)))
        .collect();
    sim.add_records(more.clone()).unwrap();
    sim.set_serial_number("REPLACED-7");
    let v = pyzk(&python, "read_device.py", &sim, 0, &[]).await;
    assert_eq!(v["serial"], "REPLACED-7");
    let all: Vec<SimRecord> = first.into_iter().chain(more).collect();
    assert_attendance(&v["attendance"], &all);
}
