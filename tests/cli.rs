//! The commands a newcomer runs first: `check-config` and `status --json`; and the commands the product
//! does not have.

use std::process::Command;

use clockbridge::feishu::lanes::user_flows::KIND as KIND_USER_FLOW;
use clockbridge::queue::{ErrorInfo, Queue};
use clockbridge_testkit::standin::StandinConfig;

use crate::crash::prefill;
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

const DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "0.0.0.0:5005"
timezone = "Asia/Shanghai"
"#;

#[tokio::test]
async fn check_config_masks_the_secret_and_exits_0() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let out = clockbridge(&["check-config"], &cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("app_secret = \"***\""), "{stdout}");
    assert!(!stdout.contains("standin-secret") && !stderr.contains("standin-secret"));
    assert!(stdout.contains("[[devices]]"));
}

#[tokio::test]
async fn check_config_names_the_key_path_and_value_and_exits_1() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(&DEVICE.replace("Asia/Shanghai", "Asia/Shanghia"));
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("devices[0] (id \"door-1\").timezone"),
        "{stderr}"
    );
    assert!(stderr.contains("Asia/Shanghia"), "{stderr}");
    assert!(!stderr.contains("standin-secret"), "{stderr}");

    let cfg = env.write_config(&DEVICE.replace("kind = \"tcp\"", "kind = \"tcp\"\nbaud = 9600"));
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("devices[0]") && stderr.contains("baud"),
        "{stderr}"
    );
    assert!(stderr.contains("baud: unknown key"), "{stderr}");

    // two devices on one listening port
    let twice = format!("{DEVICE}{}", DEVICE.replace("door-1", "door-2"));
    let out = clockbridge(&["check-config"], &env.write_config(&twice));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("devices[1] (id \"door-2\").address: \"0.0.0.0:5005\" is the listen address of devices[0] (id \"door-1\") too"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_warns_about_a_serial_port_that_is_not_there_and_exits_0() {
    let env = Env::new(StandinConfig::default()).await;
    let missing = env.dir.path().join("ttyUSB9");
    let cfg = env.write_config(&format!(
        "{DEVICE}\n[[devices]]\nid = \"clock-3\"\nkind = \"serial\"\npath = \"{}\"\ntimezone = \"UTC\"\n",
        missing.display()
    ));
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "clockbridge: warning: config key devices[1] (id \"clock-3\").path: \"{}\" does not exist (yet)",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("configuration is valid"), "{stderr}");
}

#[tokio::test]
async fn check_config_names_the_environment_variable_of_a_bad_value() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("CLOCKBRIDGE__SENDER__MAX_IN_FLIGHT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("config key sender.max_in_flight (from CLOCKBRIDGE__SENDER__MAX_IN_FLIGHT): 0 must be between 1 and 256"),
        "{stderr}"
    );
}

/// A config file others can change, holding the secret inline (no device: `run` binds nothing).
fn exposed_config(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let cfg = env.write_config("");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    cfg
}

#[tokio::test]
async fn check_config_warns_about_an_inline_secret_a_writable_config_and_a_readable_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(StandinConfig::default()).await;
    let cfg = exposed_config(&env);
    let shown = format!("{:?}", cfg.display().to_string());
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("clockbridge: warning: config file {shown} (mode 0666) can be changed by every user on this host")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("clockbridge: warning: feishu.app_secret is written in the configuration {shown}: whoever can read that file has the secret")),
        "{stderr}"
    );
    assert!(stderr.contains("configuration is valid"), "{stderr}");

    // the secret in a file saved by Notepad (a byte-order mark, CRLF) that every user can read
    let secret = env.dir.path().join("app_secret");
    std::fs::write(&secret, "\u{feff}standin-secret\r\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "app_secret = \"standin-secret\"",
        &format!("app_secret_file = {:?}", secret.display().to_string()),
    );
    std::fs::write(&cfg, text).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].starts_with(&format!("clockbridge: warning: feishu.app_secret_file {:?} (mode 0644) can be read by every user on this host", secret.display().to_string())),
        "{stderr}"
    );
    assert!(!stderr.contains("standin-secret") && !stdout.contains("standin-secret"));

    // and the secret as read is the one the platform knows (no BOM, no CR): a queued punch is
    // delivered, with a token granted for that secret
    prefill(&env.queue_path(), 1).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, env.standin.wait_stored(1))
        .await
        .expect("the daemon gets a token with the secret of the file and delivers the punch");
    child.start_kill().unwrap();
}

#[tokio::test]
async fn run_logs_the_configuration_warnings_at_start() {
    use tokio::io::AsyncBufReadExt;
    let env = Env::new(StandinConfig::default()).await;
    let cfg = exposed_config(&env);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CLOCKBRIDGE__FEISHU__APP_SECRET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let (mut writable, mut inline) = (false, false);
    while !(writable && inline) {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no warnings within {PATIENCE:?}: {log:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the daemon ended without the warnings: {log:#?}"));
        writable |= line.contains("WARN")
            && line.contains("(mode 0666) can be changed by every user on this host");
        inline |= line.contains("WARN")
            && line.contains("feishu.app_secret is written in the configuration");
        assert!(!line.contains("standin-secret"), "{line}");
        log.push(line);
    }
    child.start_kill().unwrap();
}

#[test]
fn the_example_config_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clockbridge.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["check-config", "--config"])
        .arg(&example)
        .env("CLOCKBRIDGE__FEISHU__APP_SECRET", "example-secret-value")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("example-secret-value"));
}

#[tokio::test]
async fn status_json_has_the_contract_fields() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(DEVICE);
    prefill(&env.queue_path(), 7).await;
    {
        let (q, _) = Queue::open(&env.queue_path()).unwrap();
        let c = q.claim(KIND_USER_FLOW, 3).await.unwrap();
        q.mark_delivered(vec![c[0].id]).await.unwrap();
        q.mark_dead(
            vec![c[1].id],
            "rejected".into(),
            ErrorInfo {
                code: Some(1220001),
                message: "param is invalid".into(),
                log_id: Some("log-xyz".into()),
            },
        )
        .await
        .unwrap();
    }
    let out = clockbridge(&["status", "--json"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = &v["queue"];
    // one claimed row is still in flight (the daemon re-queues it when it opens the queue)
    assert_eq!(q["pending"].as_u64(), Some(4), "{v}");
    assert_eq!(q["in_flight"].as_u64(), Some(1), "{v}");
    assert_eq!(q["delivered"].as_u64(), Some(1), "{v}");
    assert_eq!(q["dead"].as_u64(), Some(1), "{v}");
    assert_eq!(q["unmapped"].as_u64(), Some(0), "{v}");
    let d = &v["devices"][0];
    assert_eq!(d["id"], "door-1");
    assert_eq!(d["queue"]["pending"].as_u64(), Some(4));
    assert_eq!(d["queue"]["dead"].as_u64(), Some(1));
    assert_eq!(v["daemon"]["running"], false);
    assert_eq!(v["dead_letters"][0]["code"], 1220001);
    assert_eq!(v["dead_letters"][0]["log_id"], "log-xyz");

    let text = clockbridge(&["status"], &cfg);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("dead letters"), "{text}");
    assert!(text.contains("log-xyz"), "{text}");
}

#[tokio::test]
async fn status_without_a_queue_says_how_to_create_it() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    let out = clockbridge(&["status"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist: check queue.path"),
        "{stderr}"
    );
    assert!(!env.queue_path().exists());
}

#[tokio::test]
async fn dlq_commands_refuse_a_queue_that_does_not_exist_and_create_nothing() {
    // a wrong queue.path must not get a new empty queue that answers "no dead letters"
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    for args in [
        &["dlq", "list"][..],
        &["dlq", "list", "--json"],
        &["dlq", "retry", "--all"],
        &["dlq", "drop", "--all", "--yes"],
    ] {
        let out = clockbridge(args, &cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&env.queue_path().display().to_string())
                && stderr.contains("does not exist: check queue.path"),
            "{args:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("no dead letters"),
            "{args:?}"
        );
        let left: Vec<_> = std::fs::read_dir(env.queue_path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&*env.queue_path().file_name().unwrap().to_string_lossy()))
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[tokio::test]
async fn check_config_fails_on_a_broken_mapping_table() {
    let env = Env::new(StandinConfig::default()).await;
    let users = env.dir.path().join("users.csv");
    std::fs::write(&users, "1,fs-1\n2\n").unwrap();
    let cfg = env.write_config(&format!(
        "[mapping]\nmode = \"table\"\nfile = \"{}\"\n",
        users.display()
    ));
    let out = clockbridge(&["check-config"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[tokio::test]
async fn status_needs_no_secret() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config("");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("app_secret = \"standin-secret\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    prefill(&env.queue_path(), 2).await;
    let out = clockbridge(&["status", "--json"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // while run and check-config do need it
    let out = clockbridge(&["check-config"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("feishu.app_secret: missing"));
}

#[test]
fn the_test_doubles_are_not_commands_of_the_product() {
    // the stand-in, the ZKTeco simulator and the demo live in clockbridge-testkit (its bins
    // `standin`, `zk-sim`, `adms-sim`, `hik-sim`, `demo`); the binary the package installs has none
    // of them, hidden or not
    for cmd in ["standin", "zk-sim", "adms-sim", "hik-sim", "demo"] {
        let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
            .arg(cmd)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains(&format!("unrecognized subcommand '{cmd}'")),
            "{cmd}: {stderr}"
        );
    }
    let text = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let help = text(&["--help"]);
    assert!(help.contains("check-config"), "{help}");
    // what packaging/build-deb.sh installs: the man page and the completions
    for (what, body) in [
        ("--help", help),
        ("man", text(&["man"])),
        ("completions bash", text(&["completions", "bash"])),
    ] {
        for cmd in ["standin", "zk-sim", "adms-sim", "hik-sim", "demo", "zk_sim"] {
            assert!(
                !body
                    .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                    .any(|w| w == cmd),
                "{what} names {cmd}:\n{body}"
            );
        }
    }
}

#[tokio::test]
async fn status_shows_where_each_device_is_in_aligned_columns() {
    let env = Env::new(StandinConfig::default()).await;
    let cfg = env.write_config(
        r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"

[[devices]]
id = "canteen-serial"
kind = "serial"
path = "/dev/ttyUSB-clockbridge-test"
baud_rate = 19200
timezone = "Asia/Shanghai"

[[devices]]
id = "gate"
kind = "zk"
address = "127.0.0.1:1"
timezone = "Asia/Shanghai"
"#,
    );
    prefill(&env.queue_path(), 1).await;
    let out = clockbridge(&["status"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "devices:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("    "))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[1].contains("serial") && rows[1].contains("/dev/ttyUSB-clockbridge-test 19200"),
        "{text}"
    );
    assert!(rows[2].contains("127.0.0.1:1"), "{text}");
    // the columns after the address start at the same place on every row
    let at = |r: &str| r.find(" | pending").unwrap();
    assert!(rows.iter().all(|r| at(r) == at(rows[0])), "{text}");
    let kind_at = |r: &str, k: &str| r.find(&format!(" {k} ")).unwrap();
    assert_eq!(
        kind_at(rows[0], "tcp"),
        kind_at(rows[1], "serial"),
        "{text}"
    );
}
