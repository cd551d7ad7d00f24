//! A serial clock over a pseudo-terminal, through the whole daemon, to the stand-in.

use std::time::Duration;

use clockbridge_testkit::standin::StandinConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialStream};

use crate::util::*;

/// The sample serial clock: GB18030, comma-separated `user,name,time,direction word`, CR line ends.
/// (`0001,张三,2026-03-02 08:01:02,上班\r0002,李四,2026-03-02 08:03:45,上班\r0001,张三,2026-03-02 18:00:10,下班\r`)
const GB18030_SAMPLE: &[u8] = &[
    0x30, 0x30, 0x30, 0x31, 0x2c, 0xd5, 0xc5, 0xc8, 0xfd, 0x2c, 0x32, 0x30, 0x32, 0x36, 0x2d, 0x30,
    0x33, 0x2d, 0x30, 0x32, 0x20, 0x30, 0x38, 0x3a, 0x30, 0x31, 0x3a, 0x30, 0x32, 0x2c, 0xc9, 0xcf,
    0xb0, 0xe0, 0x0d, 0x30, 0x30, 0x30, 0x32, 0x2c, 0xc0, 0xee, 0xcb, 0xc4, 0x2c, 0x32, 0x30, 0x32,
    0x36, 0x2d, 0x30, 0x33, 0x2d, 0x30, 0x32, 0x20, 0x30, 0x38, 0x3a, 0x30, 0x33, 0x3a, 0x34, 0x35,
    0x2c, 0xc9, 0xcf, 0xb0, 0xe0, 0x0d, 0x30, 0x30, 0x30, 0x31, 0x2c, 0xd5, 0xc5, 0xc8, 0xfd, 0x2c,
    0x32, 0x30, 0x32, 0x36, 0x2d, 0x30, 0x33, 0x2d, 0x30, 0x32, 0x20, 0x31, 0x38, 0x3a, 0x30, 0x30,
    0x3a, 0x31, 0x30, 0x2c, 0xcf, 0xc2, 0xb0, 0xe0, 0x0d,
];

#[tokio::test]
async fn a_gb18030_serial_clock_over_a_pty_reaches_the_platform_with_acks_after_commit() {
    let (mut master, slave) = SerialStream::pair().expect("cannot create a pseudo-terminal");
    let path = slave.name().expect("the slave has a name");
    let env = Env::new(StandinConfig::default()).await;
    let device = format!(
        r#"
[[devices]]
id = "clock-3"
kind = "serial"
path = "{path}"
baud_rate = 9600
format = "pattern"
encoding = "gb18030"
pattern = '^(?P<user>\d+),[^,]*,(?P<time>[^,]+),(?P<state>.+)$'
state_map = {{ "上班" = 0, "下班" = 1 }}
ack_template = 'OK {{user}}\r\n'
timezone = "Asia/Shanghai"
location_name = "Plant gate"
"#
    );
    let running = env.start(&device).await;
    let stats = running.devices["clock-3"].stats.clone();
    stats
        .wait_for(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed) > 0)
        .await;
    master.write_all(GB18030_SAMPLE).await.unwrap();

    // one acknowledgement per punch, each only after its commit
    let mut acks = Vec::new();
    let mut buf = [0u8; 64];
    while acks.windows(2).filter(|w| w == b"\r\n").count() < 3 {
        let n = tokio::time::timeout(PATIENCE, master.read(&mut buf))
            .await
            .expect("no acknowledgement")
            .unwrap();
        acks.extend_from_slice(&buf[..n]);
    }
    assert_eq!(acks, b"OK 0001\r\nOK 0002\r\nOK 0001\r\n");
    let committed = running.queue.counts().await.unwrap();
    assert_eq!(
        committed.total.pending + committed.total.in_flight + committed.total.delivered,
        3
    );

    env.standin.wait_stored(3).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 3)
        .await
        .unwrap();
    let stored = env.standin.stored();
    let first = &stored
        .iter()
        .find(|f| f.record["external_id"] == "clock-3/0001/20260302080102")
        .unwrap()
        .record;
    assert_eq!(first["location_name"], "Plant gate");
    assert_eq!(first["check_time"], "1772409662"); // 2026-03-02 08:01:02 +08:00
    assert_eq!(first["comment"], "clockbridge clock-3: check-in");
    assert!(stored
        .iter()
        .any(|f| f.record["comment"] == "clockbridge clock-3: check-out"));
    drop(slave);
    let _ = tokio::time::timeout(Duration::from_secs(5), running.stop()).await;
}
