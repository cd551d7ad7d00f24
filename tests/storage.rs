//! Storage faults: the queue on a small filesystem that fills up (in process; the real binary's
//! case, with a clock held back and a stop, is in `hardening.rs`).

use std::process::Command;
use std::sync::atomic::Ordering;

use clockbridge_testkit::standin::StandinConfig;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_punches_back_and_the_daemon_resumes_when_space_returns() {
    let env = Env::new(StandinConfig::default()).await;
    // mounting needs root (CI runs as root): without it the test fails saying so
    let disk = Tmpfs::mount(env.dir.path(), "8m");
    let queue = disk.0.join("queue.db");
    let device = "[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ntimezone = \"Asia/Shanghai\"\n";
    let running = env
        .start_with(
            device,
            &[("CLOCKBRIDGE__QUEUE__PATH", queue.to_str().unwrap())],
        )
        .await;
    let stats = running.devices["door-1"].stats.clone();
    // a first punch goes through; then ballast fills the disk
    submit_all(&running, punches("door-1", 1)).await;
    env.standin.wait_stored(1).await;
    let ballast = disk.fill("ballast");
    // punches arrive while the disk is full: they are held back, not dropped
    let sink = running.sink().unwrap();
    let pending = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for p in punches("door-1", 1000).into_iter().skip(1) {
            outcomes.push(sink.submit_committed(p).await.unwrap());
        }
        outcomes
    });
    tokio::time::timeout(
        PATIENCE,
        stats.wait_for(|s| {
            s.last_error()
                .map(|e| e.contains("queue refuses punches"))
                .unwrap_or(false)
        }),
    )
    .await
    .expect("the full disk was never reported");
    assert!(
        !pending.is_finished(),
        "punches were acknowledged while the disk was full"
    );

    // space returns: everything is committed and delivered, once, without a restart
    std::fs::remove_file(&ballast).unwrap();
    let outcomes = match tokio::time::timeout(PATIENCE, pending).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!(
            "punches were not committed after space returned: {:?}; df: {}",
            stats.last_error(),
            String::from_utf8_lossy(&Command::new("df").arg(&disk.0).output().unwrap().stdout)
        ),
    };
    assert_eq!(outcomes.len(), 999);
    assert!(outcomes.iter().all(|o| o.is_committed()), "{outcomes:?}");
    expect_delivered_once(&env, &running, 1000).await;
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0);
    running.stop().await;

    let conn = rusqlite::Connection::open(&queue).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
