//! Live punches first (issue 11): a punch read as it happens overtakes a backlog of old punches, the
//! backlog still drains, each punch exactly once, and `status` says how far behind the backlog is.

use std::collections::HashSet;
use std::sync::Arc;

use clockbridge::punch::Punch;
use clockbridge::queue::Queue;
use clockbridge_testkit::standin::{Standin, StandinConfig};
use tokio::io::AsyncWriteExt;

use crate::util::*;

const LISTEN_DEVICE: &str = r#"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#;

/// Small batches at a low rate, few in flight: a backlog of 1,000 punches takes about 5 s to drain,
/// and at most 4 batches are claimed ahead of the next claim.
const BATCH: usize = 10;
const IN_FLIGHT: usize = 4;
const SLOW: [(&str, &str); 3] = [
    ("CLOCKBRIDGE__SENDER__BATCH_SIZE", "10"),
    ("CLOCKBRIDGE__SENDER__MAX_REQUESTS_PER_SECOND", "20"),
    ("CLOCKBRIDGE__SENDER__MAX_IN_FLIGHT", "4"),
];

/// Queues `n` punches of 2026-03-02 (a backfill: not live) before the daemon starts, as
/// `clockbridge import` leaves them. Returns their idempotent ids.
async fn queue_backlog(env: &Env, n: usize) -> HashSet<String> {
    let backlog = punches("door-1", n);
    let (q, _) = Queue::open(&env.queue_path()).unwrap();
    let rows = records(&backlog);
    assert!(
        rows.iter().all(|r| !r.live),
        "a backfill of old punches is not live"
    );
    q.insert(Arc::new(rows)).await.unwrap();
    backlog.iter().map(Punch::idempotent_key).collect()
}

/// A line of the clock for a punch of `user` at the gateway's current time, and that punch's key.
fn punch_now(user: &str) -> (String, String) {
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let key = punch("door-1", user, &now).idempotent_key();
    (format!("{user:>9}\t{now}\t0\t1\t0\t0\t0\n"), key)
}

/// Waits until the stand-in has stored `key`, and returns its position in the order of writing.
async fn stored_position(standin: &Standin, key: &str) -> usize {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = standin.stored_len();
            if let Some(i) = standin
                .stored()
                .iter()
                .position(|f| f.idempotent_id() == Some(key))
            {
                return i;
            }
            standin.wait_stored(n + 1).await;
        }
    })
    .await
    .expect("the live punch was not stored")
}

#[tokio::test]
async fn a_live_punch_overtakes_a_backlog_and_the_backlog_still_drains() {
    const BACKLOG: usize = 1_000;
    let env = Env::new(StandinConfig::default()).await;
    let mut expected = queue_backlog(&env, BACKLOG).await;
    let running = env.start_with(LISTEN_DEVICE, &SLOW).await;
    let addr = running.devices["door-1"].stats.wait_listening().await;
    // the backlog is draining
    env.standin.wait_stored(1).await;

    // a clock sends a punch as it happens
    let (line, key) = punch_now("4242");
    let mut clock = tokio::net::TcpStream::connect(addr).await.unwrap();
    clock.write_all(line.as_bytes()).await.unwrap();
    running
        .wait_for(PATIENCE, |c| {
            (c.total.outstanding() + c.total.delivered) as usize == BACKLOG + 1
        })
        .await
        .unwrap();
    // stored when it was committed, or later
    let stored_then = env.standin.stored_len();
    // it rides in the next claim: behind at most the IN_FLIGHT batches claimed when it was
    // committed (and, were its task slow to queue for the limiter, the fewer than IN_FLIGHT claimed
    // after it), not behind the backlog: in queue order it would be the last of 1,001
    let bound = stored_then + (2 * IN_FLIGHT + 1) * BATCH;
    assert!(
        bound < BACKLOG,
        "the backlog drained before the test could look ({stored_then} stored): nothing to overtake"
    );
    let at = stored_position(&env.standin, &key).await;
    assert!(
        at < bound,
        "the live punch was stored {at}th, with {stored_then} stored when it was committed"
    );
    assert!(at < BACKLOG, "backlog punches were stored after it");

    // and the backlog still drains, every punch exactly once
    expected.insert(key);
    expect_delivered_once(&env, &running, BACKLOG + 1).await;
    assert_stored_exactly_once(&env.standin, &expected);
    let counts = running.queue.counts().await.unwrap();
    assert_eq!((counts.total.outstanding(), counts.total.dead), (0, 0));
    running.stop().await;
}

#[tokio::test]
async fn status_shows_how_far_behind_the_backlog_is_and_when_it_will_be_drained() {
    const BACKLOG: usize = 600;
    let env = Env::new(StandinConfig::default()).await;
    queue_backlog(&env, BACKLOG).await;
    let cfg = env.config_with(LISTEN_DEVICE, &SLOW);

    // no daemon: the backlog and its oldest punch (06:00:00 local, the first of `punches`), but
    // no rate to say when it will be drained
    let st = clockbridge::status::read(&cfg).unwrap();
    let b = &st.backlog;
    assert_eq!((b.outstanding, b.live_pending), (BACKLOG as u64, 0));
    assert_eq!(
        b.oldest_pending_event_local.as_deref(),
        Some("2026-03-02 06:00:00 +08:00")
    );
    assert_eq!(b.oldest_pending_device_id.as_deref(), Some("door-1"));
    assert_eq!((b.delivery_rate_per_sec, b.drain_eta_secs), (None, None));
    let text = clockbridge::status::render_text(&st);
    assert!(
        text.contains(
            "backlog:   600 punches to send (0 live); oldest 2026-03-02 06:00:00 +08:00 (door-1, "
        ) && text.contains("; time to drain unknown (the daemon is not running)\n"),
        "{text}"
    );

    // a running daemon drains it: its rate gives the time to drain
    let running = env.start_with(LISTEN_DEVICE, &SLOW).await;
    env.standin.wait_stored(5 * BATCH).await;
    running
        .queue
        .put_runtime(
            clockbridge::daemon::RUNTIME_KEY,
            serde_json::to_string(&running.snapshot()).unwrap(),
        )
        .await
        .unwrap();
    let st = clockbridge::status::read(&cfg).unwrap();
    let b = &st.backlog;
    assert!(b.outstanding > 0 && b.outstanding < BACKLOG as u64, "{b:?}");
    let rate = b
        .delivery_rate_per_sec
        .expect("a rate once punches were delivered");
    assert!(rate > 0.0, "{b:?}");
    let eta = b.drain_eta_secs.expect("a time to drain with a rate");
    assert_eq!(eta, (b.outstanding as f64 / rate).ceil() as i64);
    // the oldest punch not yet delivered is later than the first ones, which are
    let first = b.oldest_pending_event_time.unwrap();
    assert!(first > 1_772_402_400, "{b:?}"); // 2026-03-02 06:00:00 +08:00
    let json = serde_json::to_value(&st).unwrap();
    for member in [
        "outstanding",
        "live_pending",
        "oldest_pending_event_time",
        "oldest_pending_event_local",
        "oldest_pending_device_id",
        "oldest_pending_age_secs",
        "delivery_rate_per_sec",
        "drain_eta_secs",
    ] {
        assert!(
            json["backlog"].get(member).is_some(),
            "backlog.{member}: {json}"
        );
    }
    assert!(
        json["sender"]["delivery_rate_per_sec"].is_number(),
        "{json}"
    );
    let text = clockbridge::status::render_text(&st);
    assert!(text.contains(" to drain at "), "{text}");

    // drained: nothing outstanding, nothing to wait for
    expect_delivered_once(&env, &running, BACKLOG).await;
    let st = clockbridge::status::read(&cfg).unwrap();
    assert_eq!(
        (st.backlog.outstanding, st.backlog.drain_eta_secs),
        (0, Some(0))
    );
    assert_eq!(st.backlog.oldest_pending_event_time, None);
    assert!(
        clockbridge::status::render_text(&st).contains("backlog:   none"),
        "{}",
        clockbridge::status::render_text(&st)
    );
    running.stop().await;
}
