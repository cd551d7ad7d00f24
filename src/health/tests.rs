use super::*;
use crate::queue::Fault;

const S: fn(u64) -> Duration = Duration::from_secs;

fn defaults() -> Limits {
    Limits::new(S(60), S(15))
}

/// A healthy observation at `now`, the sender active at `now`.
fn healthy(now: Instant) -> Observation {
    Observation {
        now,
        stopping: false,
        db: DbState::Answered,
        sender_active_at: now,
        sender_started: true,
        faults: Faults::default(),
        held: None,
        senders: vec![
            (
                "user_flow".into(),
                SenderSnapshot {
                    state: "ok".into(),
                    ..SenderSnapshot::default()
                },
            ),
            ("leave_accrual".into(), SenderSnapshot::default()),
        ],
        inbox: vec![],
        queue_path: "/var/lib/clockbridge/queue.db".into(),
        request_timeout_secs: 15,
    }
}

fn kinds(v: &Verdict) -> Vec<ConditionKind> {
    v.conditions.iter().map(|c| c.kind).collect()
}

#[test]
fn limits_cover_every_legitimate_wait_of_the_sender() {
    let l = defaults();
    assert_eq!(l.db_answer, S(30));
    // the app-level pause (60 s) and 4 × 15 s requests, plus the database limit and slack
    assert_eq!(l.sender_idle, S(95));
    // a long app-level pause dominates
    assert_eq!(Limits::new(S(600), S(15)).sender_idle, S(635));
    // so does a long request timeout (4 × 300 s)
    assert_eq!(Limits::new(S(60), S(300)).sender_idle, S(1235));
    // short settings never go below the rate-limit pause
    let short = Limits::new(S(1), S(1));
    assert!(short.sender_idle >= RATE_LIMIT_PAUSE_MAX + DB_ANSWER_LIMIT);
    assert!(short.sender_idle > IDLE_RECHECK && short.sender_idle > SENDER_DB_BACKOFF_MAX);
}

#[test]
fn nothing_wrong_is_healthy_ready_and_pinged() {
    let v = judge(&healthy(Instant::now()), &defaults());
    assert!(v.healthy() && v.ready() && !v.restart(), "{v:?}");
}

#[test]
fn a_sender_paused_for_the_app_error_pause_is_still_progress() {
    let now = Instant::now() + S(500);
    let o = Observation {
        sender_active_at: now - S(94),
        ..healthy(now)
    };
    assert!(judge(&o, &defaults()).healthy());
}

#[test]
fn a_database_question_waiting_within_the_limit_is_still_progress() {
    let now = Instant::now() + S(500);
    let o = Observation {
        db: DbState::Waiting { since: now - S(29) },
        ..healthy(now)
    };
    assert!(judge(&o, &defaults()).healthy());
}

#[test]
fn a_database_question_unanswered_past_the_limit_is_a_restart_condition() {
    let now = Instant::now() + S(500);
    let o = Observation {
        db: DbState::Waiting { since: now - S(31) },
        ..healthy(now)
    };
    let v = judge(&o, &defaults());
    assert_eq!(kinds(&v), vec![ConditionKind::DatabaseStuck]);
    assert!(v.restart() && !v.ready());
    assert!(
        v.conditions[0]
            .message
            .contains("has not answered for 31 s (limit 30 s)"),
        "{v:?}"
    );
    let gone = Observation {
        db: DbState::Gone,
        ..healthy(now)
    };
    assert_eq!(
        kinds(&judge(&gone, &defaults())),
        vec![ConditionKind::DatabaseStuck]
    );
}

#[test]
fn a_sender_idle_past_its_limit_is_a_restart_condition_named_first() {
    let now = Instant::now() + S(500);
    let o = Observation {
        sender_active_at: now - S(96),
        inbox: vec![("approvals".into(), "done/ is a symbolic link".into())],
        ..healthy(now)
    };
    let v = judge(&o, &defaults());
    assert_eq!(
        kinds(&v),
        vec![ConditionKind::SenderStuck, ConditionKind::InboxStopped]
    );
    assert!(v.restart());
    assert!(v.conditions[0].message.starts_with("the sender"), "{v:?}");
    assert_eq!(
        v.summary(|c| c.restart),
        "the sender has not turned its claim loop, started or finished a request for 96 s (limit 95 s)"
    );
}

#[test]
fn a_sender_active_after_now_is_not_idle() {
    // observations may race the decision by a few microseconds
    let now = Instant::now();
    let o = Observation {
        sender_active_at: now + S(1),
        ..healthy(now)
    };
    assert!(judge(&o, &defaults()).healthy());
}

#[test]
fn storage_damage_timeouts_blocks_and_inbox_fail_health_but_are_no_restart() {
    let now = Instant::now();
    let fault = |error: &str| Fault {
        since_ms: 1_772_400_000_000,
        last_ms: 1_772_400_060_000,
        error: error.into(),
        count: 7,
    };
    let o = Observation {
        held: Some(Held {
            since_ms: 1_772_400_000_000,
            error: "queue: database or disk is full".into(),
            punches: 20_480,
        }),
        faults: Faults {
            damaged: Some(fault("queue: database disk image is malformed")),
            writes_failing: Some(fault("queue: database or disk is full")),
        },
        senders: vec![
            (
                "user_flow".into(),
                SenderSnapshot {
                    timeouts_in_a_row: 4,
                    timing_out_since: Some(1_772_400_000),
                    ..SenderSnapshot::default()
                },
            ),
            (
                "leave_accrual".into(),
                SenderSnapshot {
                    blocked_reason: Some("add the scope attendance:rule".into()),
                    // two timeouts are no streak yet
                    timeouts_in_a_row: 2,
                    ..SenderSnapshot::default()
                },
            ),
        ],
        inbox: vec![("approvals".into(), "done/ is a symbolic link".into())],
        ..healthy(now)
    };
    let v = judge(&o, &defaults());
    assert_eq!(
        kinds(&v),
        vec![
            ConditionKind::StorageFailing,
            ConditionKind::QueueDamaged,
            ConditionKind::UpstreamTimeouts,
            ConditionKind::SenderBlocked,
            ConditionKind::InboxStopped,
        ]
    );
    assert!(!v.healthy() && v.ready() && !v.restart(), "{v:?}");
    let m = v.problems();
    assert!(m[0].contains("20480 punches wait in memory"), "{}", m[0]);
    assert!(
        m[0].contains("reading from the clocks is paused"),
        "{}",
        m[0]
    );
    assert!(m[0].contains("since 2026-03-01T21:20:00Z"), "{}", m[0]);
    assert_eq!(v.conditions[0].since, Some(1_772_400_000));
    assert!(m[1].contains("stop clockbridge"), "{}", m[1]);
    assert!(m[1].contains("'.recover'"), "{}", m[1]);
    assert!(
        m[2].starts_with("sender user_flow: its last 4 requests got no answer within feishu.request_timeout_secs = 15 s (since 2026-03-01T21:20:00Z)"),
        "{}",
        m[2]
    );
    assert_eq!(v.conditions[2].subject.as_deref(), Some("user_flow"));
    assert!(m[3].contains("add the scope attendance:rule"), "{}", m[3]);
    assert!(
        m[4].starts_with("inbox.approvals: done/ is a symbolic link"),
        "{}",
        m[4]
    );
    // the JSON names are stable
    let json = serde_json::to_value(&v.conditions[0]).unwrap();
    assert_eq!(json["kind"], "storage_failing");
    assert_eq!(json["restart"], false);
}

#[test]
fn writes_failing_without_punches_waiting_is_still_the_storage_condition() {
    let o = Observation {
        faults: Faults {
            damaged: None,
            writes_failing: Some(Fault {
                since_ms: 0,
                last_ms: 0,
                error: "queue: disk I/O error".into(),
                count: 1,
            }),
        },
        ..healthy(Instant::now())
    };
    let v = judge(&o, &defaults());
    assert_eq!(kinds(&v), vec![ConditionKind::StorageFailing]);
    assert!(v.problems()[0].contains("disk I/O error"));
}

#[test]
fn starting_and_stopping_are_conditions_and_stopping_is_not_ready() {
    let now = Instant::now();
    let v = judge(
        &Observation {
            sender_started: false,
            ..healthy(now)
        },
        &defaults(),
    );
    assert_eq!(kinds(&v), vec![ConditionKind::Starting]);
    assert!(v.ready() && !v.healthy());
    let v = judge(
        &Observation {
            stopping: true,
            ..healthy(now)
        },
        &defaults(),
    );
    assert_eq!(kinds(&v), vec![ConditionKind::Stopping]);
    assert!(!v.ready() && !v.restart());
}

#[test]
fn tracker_dates_a_heartbeat_by_its_wall_clock_age() {
    let t0 = Instant::now();
    let mut t = SenderTracker::new(t0, 1_000_000, 0);
    // 30 s later the heartbeat turned 3 s ago
    t.observe(t0 + S(30), 1_030_000, 1_027_000, 0);
    assert_eq!(t.active_at(), t0 + S(27));
    // nothing changes for 100 s: the last activity stays where it was
    t.observe(t0 + S(130), 1_130_000, 1_027_000, 0);
    assert_eq!(t.active_at(), t0 + S(27));
    let o = Observation {
        sender_active_at: t.active_at(),
        ..healthy(t0 + S(130))
    };
    assert_eq!(
        kinds(&judge(&o, &defaults())),
        vec![ConditionKind::SenderStuck]
    );
}

#[test]
fn tracker_is_not_fooled_by_wall_clock_jumps() {
    let t0 = Instant::now();
    let mut t = SenderTracker::new(t0, 1_000_000, 0);
    // the wall clock jumped a year ahead (NTP after boot): the new heartbeat looks a year old to
    // the wall clock, but it changed since the last look, 30 s ago
    t.observe(t0 + S(30), 1_000_000 + 365 * 86_400_000, 1_025_000, 0);
    assert_eq!(t.active_at(), t0);
    // a heartbeat written after the jump is dated normally
    let base = 1_000_000 + 365 * 86_400_000;
    t.observe(t0 + S(60), base + 30_000, base + 28_000, 0);
    assert_eq!(t.active_at(), t0 + S(58));
    // the clock jumped back: a heartbeat "in the future" is dated now, not later
    t.observe(t0 + S(90), 0, base + 60_000, 0);
    assert_eq!(t.active_at(), t0 + S(90));
}

#[test]
fn tracker_counts_requests_and_replies_as_activity_and_ignores_late_looks() {
    let t0 = Instant::now();
    // the claim loop waits for a permit (heartbeat frozen) while requests keep finishing
    let mut t = SenderTracker::new(t0, 1_000_000, 10);
    t.observe(t0 + S(30), 1_030_000, 1_000_000, 12);
    t.observe(t0 + S(60), 1_060_000, 1_000_000, 14);
    t.observe(t0 + S(90), 1_090_000, 1_000_000, 16);
    t.observe(t0 + S(120), 1_120_000, 1_000_000, 18);
    assert_eq!(t.active_at(), t0 + S(120));
    // a look that took its time before the last one (two callers at once) does not move it back
    t.observe(t0 + S(110), 1_110_000, 1_000_000, 18);
    assert_eq!(t.active_at(), t0 + S(120));
}

#[tokio::test]
async fn a_busy_database_thread_is_stuck_only_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = crate::queue::Queue::open(&dir.path().join("q.db")).unwrap();
    let probe = DbProbe::default();
    let wait = Duration::from_millis(100);
    assert_eq!(probe.check(&queue, wait).await, DbState::Answered);
    // hold the database thread until released
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (entered, busy_now) = std::sync::mpsc::channel::<()>();
    let busy = {
        let q = queue.clone();
        tokio::spawn(async move {
            q.ping(move || {
                let _ = entered.send(());
                let _ = held.recv_timeout(Duration::from_secs(30));
            })
            .await
        })
    };
    tokio::task::spawn_blocking(move || busy_now.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the database thread never took the busy job");
    // a question behind the busy one: unanswered, dated from its first asking
    let first = probe.check(&queue, wait).await;
    let DbState::Waiting { since } = first else {
        panic!("answered while busy: {first:?}")
    };
    // later looks keep the date of the oldest question
    assert_eq!(probe.check(&queue, wait).await, DbState::Waiting { since });
    let limits = Limits {
        db_answer: S(30),
        sender_idle: S(95),
    };
    let o = Observation {
        db: DbState::Waiting { since },
        ..healthy(since + S(31))
    };
    assert!(judge(&o, &limits).restart());
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    // the questions left behind record their own answers (the thread answers in order), so the
    // count starts afresh
    assert_eq!(
        probe.check(&queue, Duration::from_secs(10)).await,
        DbState::Answered
    );
    assert!(!probe.waiting());
}

#[test]
fn condition_names_are_their_json_names() {
    for k in ConditionKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.name());
    }
}
