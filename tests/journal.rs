//! What the journal says at INFO and WARN, read from the real binary's log: the story of each clock
//! (connections, polls), punches kept as dead letters on arrival with how far off their time is,
//! and never a line per punch.

use chrono::{NaiveDateTime, TimeDelta};
use clockbridge_testkit::standin::StandinConfig;
use clockbridge_testkit::zksim::{
    self, generate_records, generate_users, RecordSize, SimConfig, UserSize,
};
use tokio::io::AsyncWriteExt;

use crate::util::*;

/// Lines of `log` holding every one of `words`.
fn lines_with(log: &std::path::Path, words: &[&str]) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_clock_in_the_wrong_time_zone_is_logged_once_with_how_far_off_it_is() {
    let env = Env::new(StandinConfig::default()).await;
    let port = free_port();
    // the clock writes Shanghai time, but the device is configured as UTC: 8 h ahead
    let cfg = env.write_config(&format!(
        "\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:{port}\"\ntimezone = \"UTC\"\n"
    ));
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&cfg, &log);
    until("the listening line", &log, || {
        (!lines_with(&log, &["door-1", "listening"]).is_empty()).then_some(())
    })
    .await;
    let shanghai = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let mut clock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut text = String::new();
    for (i, user) in ["1001", "1002", "1003", "1004", "1005"].iter().enumerate() {
        let t = shanghai - TimeDelta::seconds(60 - i as i64);
        text.push_str(&format!(
            "{user}\t{}\t0\t1\t0\t0\t0\n",
            t.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    clock.write_all(text.as_bytes()).await.unwrap();
    let status = until_async("five dead letters", &log, || async {
        let s = status_json(&cfg).await;
        (s["queue"]["dead"].as_u64() == Some(5)).then_some(s)
    })
    .await;
    let msg = status["dead_letters"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("ahead of the gateway's clock"), "{msg}");
    assert!(msg.contains("7 h 59 min") || msg.contains("8 h"), "{msg}");
    assert!(msg.contains("check the device's time zone"), "{msg}");
    // one WARN for the five, saying the same, and what to look at
    let warned = until("the WARN", &log, || {
        let w = lines_with(
            &log,
            &[
                "WARN",
                "device door-1: punch at",
                "ahead of the gateway's clock",
            ],
        );
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].contains("dlq list --reason far_future"),
        "{}",
        warned[0]
    );
    // the connection is in the story; no punch has a line of its own at INFO
    assert_eq!(
        lines_with(&log, &["INFO", "door-1", "clock connected"]).len(),
        1
    );
    for user in ["1001", "1002", "1003"] {
        assert!(
            lines_with(&log, &["INFO", user]).is_empty(),
            "a line for punch {user}"
        );
    }
    drop(clock);
    stop(child, &log).await;
}

#[tokio::test]
async fn each_zk_poll_has_one_summary_line_and_no_line_per_punch() {
    let env = Env::new(StandinConfig::default()).await;
    let users = generate_users(3);
    let start = NaiveDateTime::parse_from_str("2026-03-02 06:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let sim = zksim::start(SimConfig {
        record_size: RecordSize::B40,
        user_size: UserSize::B72,
        records: generate_records(25, &users, start),
        users,
        clock_offset: TimeDelta::hours(8),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cfg = env.write_config(&format!(
        "\n[[devices]]\nid = \"gate\"\nkind = \"zk\"\naddress = \"{}\"\ntimezone = \"Asia/Shanghai\"\n",
        sim.addr()
    ));
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&cfg, &log);
    let polled = until("the first poll's line", &log, || {
        let l = lines_with(&log, &["INFO", "device gate", "polled:"]);
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(
        polled[0].contains("25 new records committed, watermark 25 records, clock"),
        "{}",
        polled[0]
    );
    let connected = lines_with(&log, &["INFO", "device gate", "connected (serial number"]);
    assert_eq!(connected.len(), 1, "{connected:#?}");
    // 25 punches, and only these lines about the device at INFO so far
    let info = lines_with(&log, &["INFO", "device gate"]);
    assert!(info.len() < 6, "{info:#?}");
    stop(child, &log).await;
}
