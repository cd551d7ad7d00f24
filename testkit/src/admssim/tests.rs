//! The simulator against examples we did not write (`tests/fixtures/adms/` of the product, sources
//! in its README), served by a scripted server of a few lines here (not the product's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const VENDOR_HANDSHAKE: &str =
    include_str!("../../../tests/fixtures/adms/vendor-handshake-reply.txt");
const COMMANDS: &str = include_str!("../../../tests/fixtures/adms/capture-getrequest-commands.txt");
const RESULT_SINGLE: &str =
    include_str!("../../../tests/fixtures/adms/capture-devicecmd-single.txt");
const ATTLOG_CRLF: &str = include_str!("../../../tests/fixtures/adms/layout-attlog-crlf.txt");

/// One request as the scripted server received it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    body: Vec<u8>,
}

/// Reads one request: its request line and its body (by Content-Length).
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (start, len) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (p + 4, len);
        }
    };
    while buf.len() < start + len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf[..start])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Some((line, buf[start..].to_vec()))
}

/// A server that answers the handshake with the vendor's example, the first poll with the captured
/// commands, and `OK` to everything else; it keeps what it received.
async fn scripted() -> (std::net::SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut polls = 0;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let Some((line, body)) = read_request(&mut s).await else {
                continue;
            };
            let reply = if line.starts_with("GET /iclock/cdata") {
                VENDOR_HANDSHAKE.to_string()
            } else if line.starts_with("GET /iclock/getrequest") {
                polls += 1;
                if polls == 1 {
                    COMMANDS.to_string()
                } else {
                    "OK".to_string()
                }
            } else {
                "OK".to_string()
            };
            log.lock().unwrap().push(Seen { line, body });
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            let _ = s.write_all(out.as_bytes()).await;
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn the_simulator_takes_the_vendors_handshake_and_answers_captured_commands_in_their_form() {
    let (addr, seen) = scripted().await;
    let mut cfg = SimConfig::new("0316144680030", addr);
    cfg.delay = Some(Duration::from_millis(50));
    cfg.users = vec![SimUser {
        pin: "1002".into(),
        name: "王伟".into(),
    }];
    cfg.gb18030_names = true;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let sim = SimTerminal::start(cfg, generate_records(day, 3, 1001));
    let c = sim
        .wait(Duration::from_secs(20), |c| {
            c.acked == 3 && c.commands_done >= 3
        })
        .await
        .unwrap();
    // the vendor's options were read
    let opt = |k: &str| {
        c.options
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(opt("Delay").as_deref(), Some("10"));
    assert_eq!(opt("ErrorDelay").as_deref(), Some("30"));
    assert_eq!(opt("TimeZone").as_deref(), Some("8"));
    sim.stop().await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen[0]
        .line
        .starts_with("GET /iclock/cdata?options=all&pushver=2.4.1&language=69&SN=0316144680030 "));
    // OPERLOG names in GB18030
    let op = seen
        .iter()
        .find(|s| s.line.contains("table=OPERLOG"))
        .unwrap();
    let (name, _, bad) = encoding_rs::GB18030.decode(&op.body);
    assert!(
        !bad && name.contains("USER PIN=1002\tName=王伟\t"),
        "{name}"
    );
    assert!(std::str::from_utf8(&op.body).is_err(), "not sent as UTF-8");
    // ATTLOG lines with the vendor layout's columns and CRLF ends
    let push = seen
        .iter()
        .find(|s| s.line.contains("table=ATTLOG"))
        .unwrap();
    let text = String::from_utf8(push.body.clone()).unwrap();
    let fixture_cols = ATTLOG_CRLF
        .lines()
        .next()
        .unwrap()
        .trim_end_matches('\r')
        .split('\t')
        .count();
    for l in text.split_terminator("\r\n") {
        assert_eq!(l.split('\t').count(), fixture_cols, "{l:?}");
    }
    assert!(text.ends_with("\r\n") && text.starts_with("1001\t2026-11-02 07:00:00\t0\t15\t"));
    // the captured commands' results, in the captured form (INFO done; the two others refused
    // with -1002 as the capture's terminal refuses commands it does not take)
    let results = seen
        .iter()
        .find(|s| s.line.starts_with("POST /iclock/devicecmd"))
        .unwrap();
    let results = String::from_utf8(results.body.clone()).unwrap();
    assert_eq!(results.lines().next(), RESULT_SINGLE.lines().next());
    assert!(results.contains("ID=2&Return=0&CMD=CHECK\n"), "{results}");
    assert!(
        results.contains("ID=3&Return=-1002&CMD=DATA\n"),
        "{results}"
    );
    // INFO came as an options body before the result
    assert!(seen.iter().any(|s| s.line.contains("table=options")
        && String::from_utf8_lossy(&s.body).contains("FWVersion=")));
}

#[tokio::test]
async fn a_push_that_gets_no_ok_is_sent_again_after_the_error_delay() {
    // a server that refuses the first ATTLOG push with 503, then accepts
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let pushes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let p2 = pushes.clone();
    tokio::spawn(async move {
        let mut refused = false;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let Some((line, body)) = read_request(&mut s).await else {
                continue;
            };
            let (status, reply) = if line.starts_with("GET /iclock/cdata") {
                (
                    "200 OK",
                    "GET OPTION FROM: X\nDelay=10\nErrorDelay=30\n".to_string(),
                )
            } else if line.contains("table=ATTLOG") {
                p2.lock().unwrap().push(body);
                if !refused {
                    refused = true;
                    ("503 Service Unavailable", "FAIL".to_string())
                } else {
                    ("200 OK", "OK: 1".to_string())
                }
            } else {
                ("200 OK", "OK".to_string())
            };
            let out = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            let _ = s.write_all(out.as_bytes()).await;
        }
    });
    let mut cfg = SimConfig::new("X", addr);
    cfg.error_delay = Some(Duration::from_millis(100));
    let sim = SimTerminal::start(cfg, Vec::new());
    sim.wait(Duration::from_secs(10), |c| c.handshakes == 1)
        .await
        .unwrap();
    let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap();
    sim.punch("7", t);
    let c = sim
        .wait(Duration::from_secs(10), |c| c.acked == 1)
        .await
        .unwrap();
    assert_eq!((c.pushes_failed, c.pushes_ok, c.handshakes), (1, 1, 2));
    assert_eq!(c.last_refusal, Some(503));
    let pushes = pushes.lock().unwrap();
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0], pushes[1], "the same records are sent again");
    assert!(pushes[0].starts_with(b"7\t2026-11-02 09:00:00\t"));
}
