//! The testkit's binaries, run as a user runs them: `demo` (the whole pipeline, checking its own
//! figures), `standin`, `zk-sim` and `hik-sim` (served on loopback until a signal stops them).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn the_demo_shows_every_case_and_checks_its_own_figures() {
    // the demo fails (exit 1) when a figure it prints is not what the pipeline must give
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--punches", "20"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "10 duplicates ignored, 1 malformed, 2 connection(s)",
        "lobby-zk (ZKTeco, TCP 4370 protocol, comm key): 101 punches, 101 newly queued",
        "its realtime event queued it",
        "leaves.jsonl -> done/ (2 leave items delivered",
        "more-leaves.jsonl -> rejected/, nothing of it queued (line 2: item.leaves[0].unit: 9",
        "user 9999 was unmapped until the mapping gained it",
        "dead letter: door-1 user 77: before_2022",
        "0 written more than once",
        "gate-face (ZKTeco terminal that pushes, ADMS/iclock, SN DEMOADMS0001): 51 punches in 2 pushes",
        "user names from its OPERLOG in GB18030: 2001 王伟",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // the terminal's clock is 42 s fast; the measurement may straddle a second
    assert!(
        ["+41", "+42", "+43"]
            .iter()
            .any(|s| stdout.contains(&format!("clock {s} s off the gateway's"))),
        "{stdout}"
    );
}

/// Reads the child's standard error line by line until one contains `marker`; returns that line and
/// the rest of the stream (read in a thread, so that the child never blocks on a full pipe).
fn wait_for_line(child: &mut Child, marker: &str) -> (String, std::thread::JoinHandle<String>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => {
                let rest = std::thread::spawn(move || {
                    lines
                        .map_while(Result::ok)
                        .fold(String::new(), |mut all, l| {
                            all.push_str(&l);
                            all.push('\n');
                            all
                        })
                });
                return (line, rest);
            }
            Some(Ok(line)) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            _ => {
                let status = child.wait();
                panic!("no line with {marker:?} before the end ({status:?}):\n{seen}")
            }
        }
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn zk_sim_serves_a_terminal_until_sigterm_then_prints_its_counters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zk-sim"))
        .args(["--listen", "127.0.0.1:0", "--records", "5", "--users", "2"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "clockbridge zk-sim: serving a simulated ZKTeco terminal on 127.0.0.1:PORT (5 records ..."
    let (line, rest) = wait_for_line(&mut child, "serving a simulated ZKTeco terminal on ");
    assert!(
        line.contains("(5 records of 40 bytes, 2 users of 72 bytes, comm key none)"),
        "{line}"
    );
    let addr = line
        .split("terminal on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap();
    // a CONNECT answered proves the terminal handled the connection before it is told to stop
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    // CMD_CONNECT (1000), session 0, reply 0, checksum 0xfc17: the packet pyzk sends first
    conn.write_all(&[
        0x50, 0x50, 0x82, 0x7d, 0x08, 0x00, 0x00, 0x00, 0xe8, 0x03, 0x17, 0xfc, 0x00, 0x00, 0x00,
        0x00,
    ])
    .unwrap();
    let mut reply = [0u8; 16];
    conn.read_exact(&mut reply).unwrap();
    drop(conn);
    signal(&child, Signal::SIGTERM);
    let status = child.wait().unwrap();
    let rest = rest.join().unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    let counters = rest
        .lines()
        .find_map(|l| l.strip_prefix("clockbridge zk-sim: counters "))
        .unwrap_or_else(|| panic!("no counters in:\n{rest}"));
    let counters: serde_json::Value = serde_json::from_str(counters).unwrap();
    assert_eq!(counters["connections"], 1, "{counters}");
}

#[test]
fn zk_sim_refuses_a_bad_record_size_with_the_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_zk-sim"))
        .args(["--listen", "127.0.0.1:0", "--record-size", "12"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("zk-sim: --record-size 12: use 8, 16 or 40"),
        "{stderr}"
    );
}

#[tokio::test]
async fn standin_serves_the_platform_until_interrupted() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_standin"))
        .args(["--listen", "127.0.0.1:0", "--app-secret", "s3"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (line, rest) = wait_for_line(&mut child, "clockbridge standin: serving ");
    let base = line.rsplit(' ').next().unwrap().to_owned();
    let token = |secret: &'static str| {
        let url = format!("{base}/open-apis/auth/v3/tenant_access_token/internal");
        async move {
            let reply: serde_json::Value = reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({"app_id": "cli_standin", "app_secret": secret}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reply
        }
    };
    let good = token("s3").await;
    assert_eq!(good["code"], 0, "{good}");
    assert!(good["tenant_access_token"].as_str().is_some(), "{good}");
    let bad = token("standin-secret").await;
    assert_eq!(bad["code"], 99_991_543, "{bad}");
    signal(&child, Signal::SIGINT);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", rest.join().unwrap());
}

#[test]
fn hik_sim_serves_isapi_with_digest_until_sigterm_then_prints_its_counters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hik-sim"))
        .args(["--listen", "127.0.0.1:0", "--events", "40", "--users", "3"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "clockbridge hik-sim: serving a simulated Hikvision terminal on http://127.0.0.1:PORT (40 events ..."
    let (line, rest) = wait_for_line(&mut child, "serving a simulated Hikvision terminal on ");
    assert!(
        line.contains("(40 events, 3 users, user \"admin\", at most 30 events a page)"),
        "{line}"
    );
    let addr = line
        .split("terminal on http://")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap();
    // a request without credentials is challenged, as a terminal does
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(
        b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\nHost: terminal\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("www-authenticate: digest qop=\"auth\""),
        "{reply}"
    );
    signal(&child, Signal::SIGTERM);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let rest = rest.join().unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(
        stdout.starts_with(
            "hik-sim: 1 requests (0 accepted, 0 failed logins, 1 challenges), 0 event pages"
        ),
        "{stdout}"
    );
}
