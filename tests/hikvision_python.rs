//! The simulated Hikvision terminal (`clockbridge_testkit::hiksim`) read by an independent client:
//! Python `requests` with `HTTPDigestAuth` (`tests/hikvision/read_log.py`), so that the simulator is
//! not proven by clockbridge's own client alone. Its documents are also checked against the shapes
//! the public captures show (`docs/hikvision-protocol.md`).

use std::process::Command;
use std::time::Duration;

use clockbridge::sources::hikvision::isapi;
use clockbridge_testkit::hiksim::HikSimConfig;

use crate::hikvision::sim_with;
use crate::util::python_with;

fn read_log(url: &str, password: &str, extra: &[&str]) -> serde_json::Value {
    let py = python_with("requests");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hikvision/read_log.py");
    let out = Command::new(py)
        .arg(script)
        .args([url, "admin", password])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read_log.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_with_digest_auth_reads_the_simulated_terminal() {
    let sim = sim_with(
        1000,
        HikSimConfig {
            // nonces expire during the read: requests' digest answers the new challenge by itself
            nonce_ttl: Duration::from_millis(50),
            page_delay: Duration::from_millis(1),
            heartbeat_every: Some(Duration::from_millis(100)),
            ..HikSimConfig::default()
        },
    )
    .await;
    let url = sim.url();
    let s2 = sim.clone();
    // a punch on the stream once Python has read the log and opened the stream
    let pusher = tokio::spawn(async move {
        s2.wait_counters(|c| c.stream_opens >= 1).await;
        s2.punch("1001", 75, 0);
    });
    let v = tokio::task::spawn_blocking(move || {
        read_log(
            &url,
            "Passw0rd!",
            &["--max-results", "100", "--stream-seconds", "1.5"],
        )
    })
    .await
    .unwrap();
    pusher.await.unwrap();
    // the events of the log when it was read (the punch came later, on the stream)
    let major5 = sim.events().iter().filter(|e| e.major == 5).count() as u64 - 1;
    assert_eq!(v["device_info_status"], 200, "{v}");
    assert_eq!(
        v["serial_number"], "DS-K1T341AMF20260101V031000ENK00000001",
        "{v}"
    );
    // the device caps maxResults at 30 whatever is asked; paging ends on OK
    assert_eq!(v["largest_page"], 30, "{v}");
    assert_eq!(v["events"].as_u64(), Some(major5), "{v}");
    assert_eq!(v["pages"].as_u64(), Some(major5.div_ceil(30)), "{v}");
    assert_eq!(v["statuses"], serde_json::json!(["MORE", "OK"]), "{v}");
    assert_eq!(v["serials_ascending"], true, "{v}");
    assert_eq!(v["users"], 20, "{v}");
    assert_eq!(v["time_zone"], "CST-8:00:00", "{v}");
    assert!(v["local_time"].as_str().unwrap().ends_with("+08:00"), "{v}");
    assert!(
        v["stream_content_type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/mixed; boundary="),
        "{v}"
    );
    assert!(v["stream_parts"]["heartBeat"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(v["stream_parts"]["AccessControllerEvent"], 1, "{v}");
    let c = sim.counters();
    assert!(
        c.stale_nonces >= 1,
        "no nonce expired during the read: {c:?}"
    );
    assert_eq!(c.auth_failures, 0, "{c:?}");

    // a wrong password: refused with 401, counted as a failed login
    let url = sim.url();
    let v = tokio::task::spawn_blocking(move || read_log(&url, "nope", &[]))
        .await
        .unwrap();
    assert_eq!(v["device_info_status"], 401, "{v}");
    assert!(sim.counters().auth_failures >= 1);
    sim.shutdown();
}

#[tokio::test]
async fn the_simulators_documents_have_the_documented_shapes() {
    // the same member names and types as the documented example reply (docs/hikvision-protocol.md)
    let documented = serde_json::json!({"major": 5, "minor": 75, "time": "2026-12-01T08:59:01+08:00",
        "employeeNoString": "1001", "name": "x", "cardReaderNo": 1, "doorNo": 1, "serialNo": 4711,
        "currentVerifyMode": "face", "attendanceStatus": "checkIn", "mask": "no"});
    let users = clockbridge_testkit::hiksim::generate_users(3);
    let t =
        chrono::NaiveDateTime::parse_from_str("2026-12-01 08:59:01", "%Y-%m-%d %H:%M:%S").unwrap();
    let events = clockbridge_testkit::hiksim::generate_events(3, &users, t);
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let info = events[0].info(offset, true);
    for (k, v) in documented.as_object().unwrap() {
        let got = &info[k];
        assert!(
            std::mem::discriminant(got) == std::mem::discriminant(v),
            "{k}: {got} is not like the documented {v}"
        );
    }
    assert_eq!(info["time"], "2026-12-01T08:59:01+08:00");
    // the alert documents read as the product reads them, JSON and XML alike
    for doc in [
        events[0].alert_json(offset, true),
        events[0].alert_xml(offset, true),
    ] {
        match isapi::parse_alert(doc.as_bytes()).unwrap() {
            isapi::Alert::Event(e) => {
                assert_eq!((e.major, e.minor, e.serial), (5, 75, Some(1)));
                assert_eq!(e.employee.as_deref(), Some("1001"));
            }
            other => panic!("{other:?}"),
        }
    }
}
