//! `clockbridge import`: backfill from exported files, through the real binary.

use std::process::Command;

use clockbridge_testkit::standin::StandinConfig;

use crate::util::*;

const DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#;

fn import(config: &std::path::Path, files: &[&std::path::Path]) -> (serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--json", "--config"])
        .arg(config)
        .args(files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (json_lines(&out.stdout), stderr)
}

/// `import --json`'s output: one object per file, each on its own line; as an array.
fn json_lines(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::Value::Array(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {text}")))
            .collect(),
    )
}

fn attlog(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{:>9}\t2026-03-02 {:02}:{:02}:{:02}\t{}\t1\t0\t0\t0\r\n",
                i % 40,
                8 + i / 3600,
                (i / 60) % 60,
                i % 60,
                i % 2
            )
        })
        .collect()
}

#[tokio::test]
async fn importing_the_same_file_twice_queues_nothing_new() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let file = env.dir.path().join("attlog.dat");
    std::fs::write(&file, attlog(25_000)).unwrap();
    let (first, _) = import(&cfg, &[&file]);
    assert_eq!(first[0]["lines"], 25_000);
    assert_eq!(first[0]["queued"], 25_000);
    assert_eq!(first[0]["duplicates"], 0);
    assert_eq!(first[0]["rejected"], 0);
    let (second, _) = import(&cfg, &[&file]);
    assert_eq!(second[0]["queued"], 0);
    assert_eq!(second[0]["duplicates"], 25_000);
    // and the daemon delivers what was imported, once
    let running = env.start(DEVICE).await;
    expect_delivered_once(&env, &running, 25_000).await;
    running.stop().await;
}

#[tokio::test]
async fn rejected_lines_are_reported_with_their_numbers_and_the_rest_imported() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let file = env.dir.path().join("attlog.dat");
    let text = "        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0\n\
                \n\
                not a punch\n\
                       23\t2026-13-02 09:01:12\t0\t15\t0\t0\t0\n\
                        1\t2021-06-01 18:02:40\t1\t1\t0\t0\t0\n\
                     1005\t2026-03-02 12:00:03\t2\t4\t0\t0\t0\n";
    std::fs::write(&file, text).unwrap();
    let (r, _) = import(&cfg, &[&file]);
    let r = &r[0];
    assert_eq!(r["lines"], 5);
    assert_eq!(r["queued"], 2);
    assert_eq!(r["dead"], 1); // before 2022: kept as a dead letter, not rejected
    assert_eq!(r["dead_reasons"]["before_2022"]["count"], 1);
    let first = r["dead_reasons"]["before_2022"]["first"].as_str().unwrap();
    assert!(
        first.starts_with("punch at 2021-06-01 18:02:40 (device time) is before 2022-01-01"),
        "{first}"
    );
    assert_eq!(r["rejected"], 2);
    assert_eq!(r["rejected_lines"][0]["line"], 3);
    assert_eq!(r["rejected_lines"][1]["line"], 4);
    let reason = r["rejected_lines"][1]["reason"].as_str().unwrap();
    assert!(reason.contains("2026-13-02"), "{reason}");
    assert_eq!(r["ends_mid_line"], false);
}

#[tokio::test]
async fn a_file_cut_mid_line_or_holding_binary_garbage_gets_a_clear_report() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let cut = env.dir.path().join("cut.dat");
    std::fs::write(
        &cut,
        "        1\t2026-03-02 08:59:59\t0\t1\t0\t0\t0\n       23\t2026-03-02 09:0",
    )
    .unwrap();
    let garbage = env.dir.path().join("garbage.bin");
    let mut bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    bytes.extend_from_slice(b"\n        7\t2026-03-02 10:00:00\t0\t1\t0\t0\t0\n");
    std::fs::write(&garbage, bytes).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--quiet", "--config"])
        .arg(&cfg)
        .arg(&cut)
        .arg(&garbage)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ends mid-line"), "{text}");
    assert!(text.contains("binary data"), "{text}");
    assert!(text.contains("line 2:"), "{text}");

    let (r, _) = import(&cfg, &[&cut, &garbage]);
    assert_eq!(r[0]["ends_mid_line"], true);
    assert_eq!(r[0]["queued"], 0); // imported by the first run
    assert!(r[1]["binary_lines"].as_u64().unwrap() > 0);
    assert!(r[1]["rejected"].as_u64().unwrap() > 0);
    // the good line after the garbage is still there (queued by the first run)
    assert_eq!(r[1]["duplicates"], 1);
}

#[tokio::test]
async fn an_unknown_device_is_refused_with_the_known_ones() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-9", "--config"])
        .arg(&cfg)
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("door-9") && stderr.contains("door-1"),
        "{stderr}"
    );
}

const CSV_DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
format = "csv"
columns = ["user", "time"]
header = true
"#;

#[tokio::test]
async fn json_is_one_object_per_file_on_its_own_line() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let a = env.dir.path().join("a.dat");
    let b = env.dir.path().join("b.dat");
    std::fs::write(&a, attlog(3)).unwrap();
    std::fs::write(&b, attlog(5)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--json", "--config"])
        .arg(&cfg)
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, (path, lines_read)) in lines.iter().zip([(&a, 3), (&b, 5)]) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.is_object(), "{line}");
        assert_eq!(v["path"], path.display().to_string());
        assert_eq!(v["lines"], lines_read);
    }
}

#[tokio::test]
async fn a_file_whose_every_line_is_rejected_exits_3_and_names_the_delimiter_that_works() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(CSV_DEVICE);
    let file = env.dir.path().join("export.csv");
    std::fs::write(
        &file,
        "user;time\n1001;2026-03-02 08:59:59\n1002;2026-03-02 09:01:12\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--quiet", "--config"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("0 punches queued") && stdout.contains("2 rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint: the lines look separated by semicolons: with delimiter = \";\""),
        "{stdout}"
    );
    assert!(stdout.contains("the first 2 read as punches"), "{stdout}");
    assert!(
        stderr.contains("no line of") && stderr.contains("export.csv"),
        "{stderr}"
    );
    // the same in --json, and nothing was queued
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--json", "--config"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let r = &json_lines(&out.stdout)[0];
    assert_eq!(r["queued"], 0);
    assert!(
        r["hint"].as_str().unwrap().contains("delimiter = \";\""),
        "{r}"
    );
    // with the delimiter the hint names, every punch is taken and the exit is 0
    let fixed =
        env.write_config(&CSV_DEVICE.replace("header = true", "header = true\ndelimiter = \";\""));
    let (r, _) = import(&fixed, &[&file]);
    assert_eq!(r[0]["queued"], 2);
    assert!(r[0].get("hint").is_none(), "{r}");
}

#[tokio::test]
async fn a_missing_file_is_named_with_its_cause_said_once() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let missing = env.dir.path().join("no-such.dat");
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--config"])
        .arg(&cfg)
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such.dat: cannot read"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
