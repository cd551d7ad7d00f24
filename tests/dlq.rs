//! `clockbridge dlq`: list, retry after the operator fixes the cause, drop with confirmation.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use clockbridge_testkit::standin::StandinConfig;

use crate::util::*;

fn dlq(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .arg("dlq")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_retried_with_the_corrected_mapping_and_delivered() {
    let env = Env::new(StandinConfig {
        known_users: Some(HashSet::from(["fs-1".to_string(), "fs-2".to_string()])),
        ..StandinConfig::default()
    })
    .await;
    let users = env.dir.path().join("users.csv");
    // user 2 is mapped to a wrong Feishu id: the platform rejects it
    std::fs::write(&users, "1,fs-1\n2,fs-typo\n").unwrap();
    let mapping = format!(
        "[mapping]\nmode = \"table\"\nfile = \"{}\"\n",
        users.display()
    );
    let config = env.write_config(&mapping);
    let running = env.start(&mapping).await;
    submit_all(
        &running,
        vec![
            punch("door-1", "1", "2026-03-02 08:00:00"),
            punch("door-1", "2", "2026-03-02 08:00:01"),
        ],
    )
    .await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 1 && c.total.dead == 1)
        .await
        .unwrap();

    let out = dlq(&config, &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["device_user_id"], "2");
    assert_eq!(list[0]["code"], 0);
    assert_eq!(list[0]["message"], "[fs-typo-fs-typo]");
    assert!(list[0]["log_id"].as_str().unwrap().contains("standin"));
    let text = String::from_utf8_lossy(&dlq(&config, &["list"]).stdout).into_owned();
    assert!(
        text.contains("rejected_record") && text.contains("log id"),
        "{text}"
    );

    // retry needs a target
    let out = dlq(&config, &["retry"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));

    // the operator corrects the mapping and retries: the running daemon sends it within seconds
    std::fs::write(&users, "1,fs-1\n2,fs-2\n").unwrap();
    let out = dlq(&config, &["retry", "--all", "--reason", "rejected_record"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 pending again"));
    env.standin.wait_stored(2).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 2 && c.total.dead == 0)
        .await
        .unwrap();
    let stored = env.standin.stored();
    assert_eq!(stored[1].record["user_id"], "fs-2");
    running.stop().await;
}

#[tokio::test]
async fn dropping_dead_letters_asks_for_confirmation_and_keeps_a_copy() {
    let env = Env::new(StandinConfig::default()).await;
    let config = env.write_config("");
    let running = env.start("").await;
    let sink = running.sink().unwrap();
    // door-1 is not configured here: its times are read as UTC
    sink.submit_committed(punch("door-1", "9", "2021-05-01 08:00:00"))
        .await
        .unwrap();
    running.stop().await;

    // a retry leaves it dead: the platform still cannot import it
    let out = dlq(&config, &["retry", "--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 left dead"));

    let out = dlq(&config, &["drop", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = dlq(
        &config,
        &["drop", "--reason", "before_2022", "--all", "--yes"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped 1"));

    let conn = rusqlite::Connection::open(env.queue_path()).unwrap();
    let (kept, reason): (i64, String) = conn
        .query_row("SELECT count(*), max(dead_reason) FROM dropped", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((kept, reason.as_str()), (1, "before_2022"));
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["queue"]["dead"], 0);
    drop(conn);

    // the clock sends the same punch again (a full re-read): it does not come back as a dead letter
    let running = env.start("").await;
    let statuses = running
        .sink()
        .unwrap()
        .submit_committed(punch("door-1", "9", "2021-05-01 08:00:00"))
        .await
        .unwrap();
    running.stop().await;
    assert!(
        matches!(statuses, clockbridge::ingest::IngestOutcome::Duplicate),
        "{statuses:?}"
    );
    let out = dlq(&config, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn dlq_list_and_status_show_each_punch_time_in_its_devices_zone_with_the_offset() {
    let env = Env::new(StandinConfig::default()).await;
    let device = "[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ntimezone = \"Asia/Shanghai\"\n";
    let config = env.write_config(device);
    let running = env.start(device).await;
    // two punches the platform cannot import: one of door-1 (in Shanghai), one of door-9, a device
    // no longer in the configuration (its times are UTC)
    submit_all(
        &running,
        vec![
            punch("door-1", "9", "2021-05-01 08:00:00"),
            punch("door-9", "5", "2021-05-01 08:00:00"),
        ],
    )
    .await;
    running.stop().await;

    let text = String::from_utf8(dlq(&config, &["list"]).stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0]
            .starts_with("#1 user_flow door-1 user 9 at 2021-05-01 08:00:00 +08:00: before_2022"),
        "{text}"
    );
    // never attempted: no attempt times
    assert!(
        lines[0].ends_with("(attempts 0, first -, last -)"),
        "{text}"
    );
    assert!(
        lines[1]
            .starts_with("#2 user_flow door-9 user 5 at 2021-05-01 08:00:00 +00:00: before_2022"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "(door-9 is not a device in the configuration: its times are shown in UTC (+00:00))"
    );

    // --json keeps Unix seconds
    let out = dlq(&config, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shanghai = chrono::NaiveDate::from_ymd_opt(2021, 5, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    assert_eq!(list[0]["event_time"], shanghai, "{list}");
    assert_eq!(list[1]["event_time"], shanghai + 8 * 3600, "{list}");

    // status's dead letters read the same way
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  #1 door-1 user 9 at 2021-05-01 08:00:00 +08:00: before_2022")
            && text.contains("  #2 door-9 user 5 at 2021-05-01 08:00:00 +00:00: before_2022")
            && text.contains(
                "  (door-9 is not a device in the configuration: its times are shown in UTC (+00:00))"
            ),
        "{text}"
    );
}
