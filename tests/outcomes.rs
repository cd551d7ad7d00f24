//! One test per outcome class of the platform's replies (integration guide error table, batch_create
//! error codes, platform notes), each against the stand-in.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use clockbridge_testkit::standin::{DedupMode, Fault, StandinConfig};

use crate::util::*;

async fn deliver_with_faults(faults: Vec<Fault>, dedup: DedupMode, n: usize) -> (Env, u64) {
    let env = Env::new(StandinConfig {
        dedup,
        ..StandinConfig::default()
    })
    .await;
    for f in faults {
        env.standin.push_fault(f);
    }
    let running = env.start("").await;
    submit_all(&running, punches("door-1", n)).await;
    env.standin.wait_stored(n).await;
    let counts = running
        .wait_for(PATIENCE, |c| c.total.delivered == n as u64)
        .await
        .unwrap();
    assert_eq!(counts.total.dead, 0);
    assert_eq!(counts.total.outstanding(), 0);
    let retries = running.sender_stats.retries.load(Ordering::Relaxed);
    running.stop().await;
    (env, retries)
}

#[tokio::test]
async fn no_row_affected_is_retried_until_delivered() {
    let (env, retries) = deliver_with_faults(
        vec![Fault::NoRowAffected, Fault::NoRowAffected],
        DedupMode::Silent,
        10,
    )
    .await;
    assert!(retries >= 2, "retries {retries}");
    assert_eq!(assert_each_written_once(&env.standin), 10);
}

#[tokio::test]
async fn a_lost_response_then_no_row_affected_delivers_the_punches_once() {
    // the first batch is stored but its reply is lost; the re-send meets an optimistic-lock
    // conflict; the one after is absorbed by the idempotent ids
    let (env, retries) = deliver_with_faults(
        vec![Fault::LoseResponseAfterApply, Fault::NoRowAffected],
        DedupMode::Silent,
        10,
    )
    .await;
    assert!(retries >= 2, "retries {retries}");
    assert_eq!(assert_each_written_once(&env.standin), 10);
    assert_eq!(env.standin.stats().lost_responses, 1);
}

#[tokio::test]
async fn server_errors_resets_and_timeouts_are_retried() {
    let (env, retries) = deliver_with_faults(
        vec![
            Fault::ServerError,
            Fault::CloseBeforeApply,
            // longer than request_timeout_secs = 5: the client times out
            Fault::Delay(std::time::Duration::from_secs(7)),
        ],
        DedupMode::Silent,
        10,
    )
    .await;
    assert!(retries >= 3, "retries {retries}");
    assert_eq!(assert_each_written_once(&env.standin), 10);
}

#[tokio::test]
async fn lost_response_after_apply_is_resent_without_a_duplicate_silent_dedup() {
    let (env, _) =
        deliver_with_faults(vec![Fault::LoseResponseAfterApply], DedupMode::Silent, 10).await;
    assert_eq!(assert_each_written_once(&env.standin), 10);
    // the re-send happened and the platform absorbed it
    assert!(env.standin.stats().records_duplicate >= 1);
    assert_eq!(env.standin.stats().lost_responses, 1);
}

#[tokio::test]
async fn lost_response_after_apply_is_resent_without_a_duplicate_conflict_dedup() {
    // this platform refuses a batch naming a record it already has: "the object already exists"
    let (env, _) =
        deliver_with_faults(vec![Fault::LoseResponseAfterApply], DedupMode::Conflict, 10).await;
    assert_eq!(assert_each_written_once(&env.standin), 10);
}

#[tokio::test]
async fn already_exists_in_a_mixed_batch_delivers_the_new_records_too() {
    // 10 punches delivered, then a batch of those 10 re-read plus 10 new ones: the conflict must not
    // make the 10 new ones count as delivered without being written
    let env = Env::new(StandinConfig {
        dedup: DedupMode::Conflict,
        ..StandinConfig::default()
    })
    .await;
    let running = env.start("").await;
    let all = punches("door-1", 20);
    submit_all(&running, all[..10].to_vec()).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 10)
        .await
        .unwrap();
    running.stop().await;
    // the queue forgets them (as after the retention period) so they are queued again
    let conn = rusqlite::Connection::open(env.queue_path()).unwrap();
    conn.execute("DELETE FROM outbox", []).unwrap();
    drop(conn);
    let running = env.start("").await;
    let sink = running.sink().unwrap();
    for p in all {
        sink.submit(p).await.unwrap();
    }
    drop(sink);
    expect_delivered_once(&env, &running, 20).await;
    assert!(running.sender_stats.splits.load(Ordering::Relaxed) > 0);
    running.stop().await;
}

#[tokio::test]
async fn unknown_users_become_dead_letters_and_the_rest_of_the_batch_is_delivered() {
    let known: HashSet<String> = (0..97)
        .filter(|u| *u != 5)
        .map(|u| format!("u{u}"))
        .collect();
    let env = Env::new(StandinConfig {
        known_users: Some(known),
        ..StandinConfig::default()
    })
    .await;
    let running = env.start("").await;
    let ps = punches("door-1", 40); // users u0..u39: u5 once
    let sink = running.sink().unwrap();
    for p in ps {
        sink.submit(p).await.unwrap();
    }
    drop(sink);
    let counts = running
        .wait_for(PATIENCE, |c| c.total.delivered + c.total.dead == 40)
        .await
        .unwrap();
    assert_eq!(counts.total.dead, 1);
    assert_eq!(counts.total.delivered, 39);
    assert_eq!(env.standin.stored_len(), 39);
    let dead = running.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.device_user_id, "u5");
    assert_eq!(d.reason.as_deref(), Some("rejected_record"));
    assert_eq!(d.code, Some(0));
    assert_eq!(d.message.as_deref(), Some("[u5-u5]"));
    assert!(
        d.log_id.as_deref().unwrap_or("").contains("standin"),
        "{d:?}"
    );
    // the operator fixes the cause and retries: it goes through
    env.standin.set_known_users(None);
    assert_eq!(
        running
            .queue
            .retry_dead(clockbridge::feishu::lanes::rules, None)
            .await
            .unwrap(),
        1
    );
    env.standin.wait_stored(40).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 40)
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn an_invalid_batch_is_split_until_the_bad_record_is_alone() {
    let env = Env::new(StandinConfig {
        invalid_users: HashSet::from(["u7".to_string()]),
        ..StandinConfig::default()
    })
    .await;
    let running = env.start("").await;
    let sink = running.sink().unwrap();
    for p in punches("door-1", 50) {
        sink.submit(p).await.unwrap();
    }
    drop(sink);
    let counts = running
        .wait_for(PATIENCE, |c| c.total.delivered + c.total.dead == 50)
        .await
        .unwrap();
    assert_eq!(counts.total.dead, 1);
    assert_eq!(counts.total.delivered, 49);
    assert_eq!(assert_each_written_once(&env.standin), 49);
    let dead = running.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].device_user_id, "u7");
    assert_eq!(dead[0].code, Some(1220004));
    assert!(dead[0]
        .message
        .as_deref()
        .unwrap()
        .contains("user_id is not exist"));
    assert!(running.sender_stats.splits.load(Ordering::Relaxed) >= 5);
    running.stop().await;
}

#[tokio::test]
async fn a_rate_limit_reply_pauses_until_the_reset_then_delivers() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.push_fault(Fault::RateLimited { reset_secs: 1 });
    let running = env.start("").await;
    submit_all(&running, punches("door-1", 10)).await;
    env.standin.wait_stored(10).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 10)
        .await
        .unwrap();
    assert_eq!(running.sender_stats.rate_limited.load(Ordering::Relaxed), 1);
    assert_eq!(env.standin.stats().rate_limited, 0);
    // the rate-limited attempt is not counted against the rows
    let attempts: i64 = clockbridge::queue::open_read_only(&env.queue_path())
        .unwrap()
        .query_row("SELECT max(attempts) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 1);
    running.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_dropped_refetched_and_the_batch_resent_once() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    submit_all(&running, punches("door-1", 5)).await;
    env.standin.wait_stored(5).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 5)
        .await
        .unwrap();
    assert_eq!(running.client.token_fetches(), 1);
    env.standin.revoke_tokens();
    let more: Vec<_> = punches("door-1", 10).into_iter().skip(5).collect();
    submit_all(&running, more).await;
    env.standin.wait_stored(10).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 10)
        .await
        .unwrap();
    assert_eq!(running.client.token_fetches(), 2);
    assert_eq!(running.sender_stats.retries.load(Ordering::Relaxed), 0);
    running.stop().await;
}

#[tokio::test]
async fn a_bad_secret_blocks_uploads_keeps_every_row_and_recovers_when_fixed() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.set_app_secret("rotated-secret");
    let running = env.start("").await;
    submit_all(&running, punches("door-1", 10)).await;
    // wait until the sender has hit the refusal
    let mut rx = running.sender_stats.subscribe();
    while running.sender_stats.snapshot().state != "blocked" {
        rx.changed().await.unwrap();
    }
    let snap = running.sender_stats.snapshot();
    let reason = snap.blocked_reason.unwrap();
    assert!(reason.contains("app secret"), "{reason}");
    assert!(
        !reason.contains("standin-secret"),
        "the secret leaked: {reason}"
    );
    let counts = running.queue.counts().await.unwrap();
    assert_eq!(counts.total.dead, 0);
    assert_eq!(counts.total.outstanding(), 10);
    // the operator fixes the secret (here: the platform accepts the configured one again)
    env.standin.set_app_secret("standin-secret");
    env.standin.wait_stored(10).await;
    running
        .wait_for(PATIENCE, |c| c.total.delivered == 10)
        .await
        .unwrap();
    assert_eq!(running.sender_stats.snapshot().state, "ok");
    running.stop().await;
}

#[tokio::test]
async fn a_missing_scope_blocks_uploads_without_dead_letters() {
    let env = Env::new(StandinConfig::default()).await;
    env.standin.set_sticky_fault(Some(Fault::ScopeMissing));
    let running = env.start("").await;
    submit_all(&running, punches("door-1", 60)).await;
    let mut rx = running.sender_stats.subscribe();
    while running.sender_stats.snapshot().state != "blocked" {
        rx.changed().await.unwrap();
    }
    let reason = running.sender_stats.snapshot().blocked_reason.unwrap();
    assert!(reason.contains("attendance:task"), "{reason}");
    // blocked: retries slowly (one probe per pause), not one request per batch
    let before = env.standin.stats().batch_requests;
    assert!(before <= 2, "{before} requests while blocked");
    env.standin.set_sticky_fault(None);
    env.standin.wait_stored(60).await;
    let counts = running
        .wait_for(PATIENCE, |c| c.total.delivered == 60)
        .await
        .unwrap();
    assert_eq!(counts.total.dead, 0);
    running.stop().await;
}

#[tokio::test]
async fn an_unmapped_punch_waits_and_is_released_when_the_mapping_gains_its_user() {
    let env = Env::new(StandinConfig::default()).await;
    let users = env.dir.path().join("users.csv");
    std::fs::write(&users, "device_user_id,user_id,device_id\n1,fs-1,\n").unwrap();
    let running = env
        .start(&format!(
            "[mapping]\nmode = \"table\"\nfile = \"{}\"\n",
            users.display()
        ))
        .await;
    let sink = running.sink().unwrap();
    let a = sink
        .submit_committed(punch("door-1", "1", "2026-03-02 08:00:00"))
        .await
        .unwrap();
    let b = sink
        .submit_committed(punch("door-1", "2", "2026-03-02 08:00:05"))
        .await
        .unwrap();
    assert_eq!(a, clockbridge::ingest::IngestOutcome::Queued);
    assert_eq!(b, clockbridge::ingest::IngestOutcome::Unmapped);
    env.standin.wait_stored(1).await;
    running
        .wait_for(PATIENCE, |c| {
            c.total.delivered == 1 && c.total.unmapped == 1
        })
        .await
        .unwrap();
    std::fs::write(
        &users,
        "device_user_id,user_id,device_id\n1,fs-1,\n2,fs-2,door-1\n",
    )
    .unwrap();
    running.reload_mapping();
    env.standin.wait_stored(2).await;
    let c = running
        .wait_for(PATIENCE, |c| c.total.delivered == 2)
        .await
        .unwrap();
    assert_eq!(c.total.unmapped, 0);
    let stored = env.standin.stored();
    assert_eq!(stored[1].record["user_id"], "fs-2");
    assert_eq!(stored[1].record["creator_id"], "fs-2");
    running.stop().await;
}

#[tokio::test]
async fn punches_the_platform_cannot_import_are_dead_letters_never_sent() {
    let env = Env::new(StandinConfig::default()).await;
    let running = env.start("").await;
    let sink = running.sink().unwrap();
    // door-1 is not configured here, so its times are read as UTC
    let old = sink
        .submit_committed(punch("door-1", "1", "2021-12-31 15:59:59"))
        .await
        .unwrap();
    let first = sink
        .submit_committed(punch("door-1", "1", "2021-12-31 16:00:00"))
        .await
        .unwrap();
    assert_eq!(first, clockbridge::ingest::IngestOutcome::Queued);
    let future = sink
        .submit_committed(punch("door-1", "1", "2099-01-01 08:00:00"))
        .await
        .unwrap();
    assert_eq!(
        old,
        clockbridge::ingest::IngestOutcome::Dead("before_2022".into())
    );
    assert_eq!(
        future,
        clockbridge::ingest::IngestOutcome::Dead("far_future".into())
    );
    env.standin.wait_stored(1).await;
    let c = running
        .wait_for(PATIENCE, |c| c.total.delivered == 1)
        .await
        .unwrap();
    assert_eq!(c.total.dead, 2);
    assert_eq!(env.standin.stored_len(), 1);
    running.stop().await;
}
