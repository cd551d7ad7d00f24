//! `clockbridge unmapped` and the unmapped users of `status` / `/status`: what an admin needs to fill
//! the mapping table, read from the queue by the real binary beside a running daemon, with the
//! names a (simulated) ZKTeco terminal knows and the punch times in each device's zone.

use std::net::SocketAddr;
use std::process::Command;

use chrono::{NaiveDateTime, TimeDelta};
use clockbridge::daemon::Running;
use clockbridge::sources::zk::ZkFigures;
use clockbridge_testkit::standin::StandinConfig;
use clockbridge_testkit::zksim::{
    self, RecordSize, SimConfig, SimHandle, SimRecord, SimUser, UserSize,
};
use serde_json::Value;

use crate::util::*;

fn clockbridge(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CLOCKBRIDGE__FEISHU__APP_SECRET")
        .output()
        .unwrap()
}

/// Standard output of a command that must succeed.
fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn at(t: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// Unix seconds of the wall-clock time `t` at UTC offset `hours`.
fn unix(t: &str, hours: i64) -> i64 {
    at(t).and_utc().timestamp() - hours * 3600
}

/// A terminal in Shanghai whose users are 1001 Li Lei, 1002 Han Meimei and 1003, whose name holds
/// an escape sequence; 1001 punched once, 1002 twice, 1003 four times.
async fn lobby() -> SimHandle {
    let users = vec![
        SimUser::new(1, "1001", "Li Lei"),
        SimUser::new(2, "1002", "Han Meimei"),
        SimUser::new(3, "1003", "Zhang\u{1b}[2JWei"),
    ];
    let records = vec![
        SimRecord::new("1001", at("2026-03-02 08:01:00")),
        SimRecord::new("1002", at("2026-03-02 08:02:00")),
        SimRecord::new("1003", at("2026-03-02 08:44:56")),
        SimRecord::new("1003", at("2026-03-02 12:00:00")),
        SimRecord::new("1002", at("2026-03-03 18:30:00")),
        SimRecord::new("1003", at("2026-03-03 09:00:00")),
        SimRecord::new("1003", at("2026-03-04 17:59:59")),
    ];
    zksim::start(SimConfig {
        record_size: RecordSize::B40,
        user_size: UserSize::B72,
        users,
        records,
        clock_offset: TimeDelta::hours(8),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// The daemon reading `lobby-zk` (the terminal) and `door-1` (a line clock in New York, whose user 77
/// punched three times), with a mapping table that has user 1001 only and the `[http]` endpoint.
struct Site {
    env: Env,
    running: Running,
    config: std::path::PathBuf,
    table: std::path::PathBuf,
    _sim: SimHandle,
}

async fn site() -> Site {
    let sim = lobby().await;
    let env = Env::new(StandinConfig::default()).await;
    let table = env.dir.path().join("users.csv");
    std::fs::write(&table, "device_user_id,user_id\n1001,fs-1001\n").unwrap();
    let extra = format!(
        r#"
[mapping]
mode = "table"
file = "{table}"

[http]
listen = "127.0.0.1:0"

[[devices]]
id = "lobby-zk"
kind = "zk"
address = "{zk}"
timezone = "Asia/Shanghai"
realtime = false

[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "America/New_York"
"#,
        table = table.display(),
        zk = sim.addr(),
    );
    let config = env.write_config(&extra);
    let running = env.start(&extra).await;
    submit_all(
        &running,
        vec![
            punch("door-1", "77", "2026-03-02 07:58:00"),
            punch("door-1", "77", "2026-03-02 17:01:00"),
            punch("door-1", "77", "2026-03-05 08:00:30"),
        ],
    )
    .await;
    // the terminal's first poll is over (its names are kept after its records' commit), and every
    // punch of an unmapped user waits
    let stats = running.devices["lobby-zk"].stats.clone();
    tokio::time::timeout(
        PATIENCE,
        stats.wait_for(|s| s.snapshot().figures::<ZkFigures>().polls.is_some()),
    )
    .await
    .expect("the terminal was polled");
    running
        .wait_for(PATIENCE, |c| {
            c.total.unmapped == 9 && c.total.delivered == 1
        })
        .await
        .unwrap();
    Site {
        env,
        running,
        config,
        table,
        _sim: sim,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_lists_each_device_user_with_counts_times_and_the_name_the_clock_knows() {
    let s = site().await;
    // the real binary, beside the running daemon, without the secret
    let text = ok(clockbridge(&["unmapped"], &s.config));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("3 device users have 9 punches waiting for a mapping (queue "),
        "{text}"
    );
    assert_eq!(
        &lines[1..5],
        [
            "  device   user punches first punch                last punch                 name on the device",
            // most punches first; the name as the terminal has it, its escape sequence made visible
            "  lobby-zk 1003       4 2026-03-02 08:44:56 +08:00 2026-03-04 17:59:59 +08:00 Zhang\\u{1b}[2JWei",
            // a line clock knows no names; its times in its own zone
            "  door-1   77         3 2026-03-02 07:58:00 -05:00 2026-03-05 08:00:30 -05:00 -",
            "  lobby-zk 1002       2 2026-03-02 08:02:00 +08:00 2026-03-03 18:30:00 +08:00 Han Meimei",
        ],
        "{text}"
    );
    // it ends with what to do: the table, its format, and when the daemon sends what waits
    let table = s.table.display().to_string();
    assert!(
        text.contains(&format!(
            "add one row per user to the mapping table {table}, as device_user_id,user_id[,device_id]"
        )) && text.contains("  1003,<employee_id>,lobby-zk\n")
            && text.contains("systemctl reload clockbridge")
            && text.contains("then maps and sends the punches kept for these users"),
        "{text}"
    );

    // --json: one object, times in Unix seconds, names as the device has them
    let v: Value =
        serde_json::from_str(&ok(clockbridge(&["unmapped", "--json"], &s.config))).unwrap();
    assert_eq!(v["users"], 3, "{v}");
    assert_eq!(v["punches"], 9, "{v}");
    assert_eq!(v["mapping"]["mode"], "table", "{v}");
    assert_eq!(v["mapping"]["file"], table.as_str(), "{v}");
    let first = &v["unmapped_users"][0];
    assert_eq!(first["device_id"], "lobby-zk", "{v}");
    assert_eq!(first["device_user_id"], "1003", "{v}");
    assert_eq!(first["name"], "Zhang\u{1b}[2JWei", "{v}");
    assert_eq!(first["count"], 4, "{v}");
    assert_eq!(first["first_event_time"], unix("2026-03-02 08:44:56", 8));
    assert_eq!(first["last_event_time"], unix("2026-03-04 17:59:59", 8));
    let door = &v["unmapped_users"][1];
    assert_eq!(
        (&door["device_user_id"], &door["name"]),
        (&"77".into(), &Value::Null)
    );
    assert_eq!(door["first_event_time"], unix("2026-03-02 07:58:00", -5));
    let order: Vec<u64> = v["unmapped_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["count"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [4, 3, 2]);

    // the admin fills the table as told and reloads: the kept punches are mapped and sent
    std::fs::write(
        &s.table,
        "device_user_id,user_id\n1001,fs-1001\n1002,fs-1002\n1003,fs-1003,lobby-zk\n77,fs-77,door-1\n",
    )
    .unwrap();
    s.running.reload_mapping();
    expect_delivered_once(&s.env, &s.running, 10).await;
    let text = ok(clockbridge(&["unmapped"], &s.config));
    assert!(text.starts_with("no punches wait for a mapping"), "{text}");
    let v: Value =
        serde_json::from_str(&ok(clockbridge(&["unmapped", "--json"], &s.config))).unwrap();
    assert_eq!(
        (&v["users"], &v["unmapped_users"]),
        (&0.into(), &Value::Array(vec![]))
    );
    s.running.stop().await;
}

async fn get_status(addr: SocketAddr) -> Value {
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_http_status_show_the_top_unmapped_users_with_their_names() {
    let s = site().await;
    let text = ok(clockbridge(&["status"], &s.config));
    assert!(
        text.contains(
            "unmapped users: 3 (their punches wait for a mapping: `clockbridge unmapped` lists them all and says what to do)\n\
             \x20 lobby-zk 1003 4 punches  Zhang\\u{1b}[2JWei\n\
             \x20 door-1   77   3 punches  -\n\
             \x20 lobby-zk 1002 2 punches  Han Meimei\n"
        ),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&ok(clockbridge(&["status", "--json"], &s.config))).unwrap();
    let served = get_status(s.running.http_addr().unwrap()).await;
    for v in [&json, &served] {
        let u = &v["unmapped_users"];
        assert_eq!(u["users"], 3, "{u}");
        assert_eq!(u["top"].as_array().unwrap().len(), 3, "{u}");
        assert_eq!(u["top"][0]["device_user_id"], "1003", "{u}");
        assert_eq!(u["top"][0]["name"], "Zhang\u{1b}[2JWei", "{u}");
        assert_eq!(u["top"][0]["count"], 4, "{u}");
        assert_eq!(u["top"][1]["name"], Value::Null, "{u}");
        // the contract members are all still there
        for m in [
            "daemon", "queue", "kinds", "devices", "sender", "senders", "inbox",
        ] {
            assert!(v.get(m).is_some(), "{m} missing: {v}");
        }
        assert_eq!(v["queue"]["unmapped"], 9);
    }
    s.running.stop().await;
}

#[tokio::test]
async fn unmapped_refuses_a_queue_that_does_not_exist_and_creates_nothing() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    // no secret needed, like status
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("app_secret = \"standin-secret\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    for args in [&["unmapped"][..], &["unmapped", "--json"]] {
        let out = clockbridge(args, &cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&env.queue_path().display().to_string())
                && stderr.contains("does not exist: check queue.path"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        let name = env
            .queue_path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let left: Vec<_> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&name))
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
    // with a queue (made by the daemon), the same configuration reads it
    env.start("").await.stop().await;
    let text = ok(clockbridge(&["unmapped"], &cfg));
    assert!(text.starts_with("no punches wait for a mapping"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_terminal_with_8_byte_records_has_its_names_shown_under_the_internal_number() {
    // 8-byte records carry the terminal's internal user number, not the PIN: the names must be kept
    // under that number to meet the punches
    // 28-byte users: numeric PINs, names of at most 8 bytes
    let users = vec![
        SimUser::new(1, "1001", "Li Lei"),
        SimUser::new(2, "1002", "Han Mei"),
        SimUser::new(3, "1003", "Wang Wu"),
    ];
    let records = zksim::generate_records(5, &users, at("2026-03-02 08:00:00"));
    let sim = zksim::start(SimConfig {
        record_size: RecordSize::B8,
        user_size: UserSize::B28,
        users,
        records,
        clock_offset: TimeDelta::hours(8),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let env = Env::new(StandinConfig::default()).await;
    let table = env.dir.path().join("users.csv");
    std::fs::write(&table, "device_user_id,user_id\n").unwrap();
    let extra = format!(
        "[mapping]\nmode = \"table\"\nfile = \"{}\"\n\n[[devices]]\nid = \"old-zk\"\nkind = \"zk\"\naddress = \"{}\"\ntimezone = \"Asia/Shanghai\"\nrealtime = false\n",
        table.display(),
        sim.addr()
    );
    let config = env.write_config(&extra);
    let running = env.start(&extra).await;
    let stats = running.devices["old-zk"].stats.clone();
    tokio::time::timeout(
        PATIENCE,
        stats.wait_for(|s| s.snapshot().figures::<ZkFigures>().polls.is_some()),
    )
    .await
    .expect("the terminal was polled");
    let v: Value =
        serde_json::from_str(&ok(clockbridge(&["unmapped", "--json"], &config))).unwrap();
    let listed: Vec<(String, String, u64)> = v["unmapped_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["device_user_id"].as_str().unwrap().to_string(),
                u["name"].as_str().unwrap_or("-").to_string(),
                u["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // 5 punches of PINs 1001, 1002, 1003 in turn, carried as their numbers 1, 2, 3
    assert_eq!(
        listed,
        [
            ("1".to_string(), "Li Lei".to_string(), 2),
            ("2".to_string(), "Han Mei".to_string(), 2),
            ("3".to_string(), "Wang Wu".to_string(), 1),
        ],
        "{v}"
    );
    running.stop().await;
}
