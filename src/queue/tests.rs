//! Unit tests of the queue's state machine.

use super::*;
use crate::feishu::lanes::user_flows::{self, KIND as KIND_USER_FLOW};
use crate::feishu::lanes::{reports::KIND as KIND_ARCHIVE_REPORT, rules};
use crate::mapping::Mapping;
use crate::punch::{normalise, Punch};

fn rec(dev: &str, user: &str, t: &str, mapped: bool) -> NewRecord {
    let p = Punch {
        device_id: dev.into(),
        device_user_id: user.into(),
        local_time: chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap(),
        state: Some(0),
        verify: Some(1),
        workcode: None,
        state_text: None,
    };
    let n = normalise(
        p,
        chrono_tz::Asia::Shanghai,
        "HQ",
        mapped.then_some(user),
        chrono::Utc::now(),
        3600,
    );
    user_flows::record(&n)
}

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(&dir.path().join("q.db")).unwrap();
    (dir, q)
}

#[tokio::test]
async fn pragmas_take_effect() {
    let (_d, q) = open();
    let (mode, sync) = q
        .call(|c| {
            Ok((
                c.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?,
                c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2);
}

#[tokio::test]
async fn reinserting_the_same_punch_is_a_no_op() {
    let (_d, q) = open();
    let a = rec("door-1", "1", "2026-03-02 08:59:59", true);
    let st = q
        .insert(Arc::new(vec![a.clone(), a.clone()]))
        .await
        .unwrap();
    assert_eq!(st, vec![InsertStatus::Pending, InsertStatus::Duplicate]);
    let st = q.insert(Arc::new(vec![a])).await.unwrap();
    assert_eq!(st, vec![InsertStatus::Duplicate]);
    assert_eq!(q.counts().await.unwrap().total.pending, 1);
}

#[tokio::test]
async fn claim_ack_retry_dead_move_counts() {
    let (_d, q) = open();
    let recs: Vec<_> = (0..5)
        .map(|i| rec("door-1", &i.to_string(), "2026-03-02 08:00:00", true))
        .collect();
    q.insert(Arc::new(recs)).await.unwrap();
    let c = q.claim(KIND_USER_FLOW, 3).await.unwrap();
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|r| r.attempts == 1));
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.total.in_flight, 3);
    assert_eq!(counts.total.pending, 2);
    assert_eq!(counts.by_device["door-1"].in_flight, 3);

    q.mark_delivered(vec![c[0].id]).await.unwrap();
    q.mark_dead(
        vec![c[1].id],
        "rejected".into(),
        ErrorInfo {
            code: Some(1220001),
            message: "param invalid".into(),
            log_id: Some("log-1".into()),
        },
    )
    .await
    .unwrap();
    q.mark_retry(vec![c[2].id], now_ms() + 60_000, None, false)
        .await
        .unwrap();
    let counts = q.counts().await.unwrap();
    assert_eq!(
        counts.total,
        StateCounts {
            pending: 3,
            in_flight: 0,
            delivered: 1,
            dead: 1,
            unmapped: 0
        }
    );
    // the retried row is not due yet: only the 2 untouched rows are claimable
    assert_eq!(q.ready_count(KIND_USER_FLOW, 50).await.unwrap(), 2);
    let dl = q.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].code, Some(1220001));
    assert_eq!(dl[0].log_id.as_deref(), Some("log-1"));
    assert_eq!(dl[0].reason.as_deref(), Some("rejected"));
}

#[tokio::test]
async fn acknowledging_an_unclaimed_row_is_an_error() {
    let (_d, q) = open();
    q.insert(Arc::new(vec![rec("d", "1", "2026-03-02 08:00:00", true)]))
        .await
        .unwrap();
    let c = q.claim(KIND_USER_FLOW, 1).await.unwrap();
    q.mark_delivered(vec![c[0].id]).await.unwrap();
    let e = q.mark_delivered(vec![c[0].id]).await.unwrap_err();
    assert!(matches!(
        e,
        QueueError::NotClaimed {
            expected: 1,
            changed: 0
        }
    ));
    assert_eq!(q.counts().await.unwrap().total.delivered, 1);
}

#[tokio::test]
async fn rows_in_flight_at_a_crash_are_pending_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let (q, _) = Queue::open(&path).unwrap();
        q.insert(Arc::new(vec![
            rec("d", "1", "2026-03-02 08:00:00", true),
            rec("d", "2", "2026-03-02 08:00:00", true),
        ]))
        .await
        .unwrap();
        assert_eq!(q.claim(KIND_USER_FLOW, 50).await.unwrap().len(), 2);
    }
    let (q, report) = Queue::open(&path).unwrap();
    assert_eq!(report.requeued_in_flight, 2);
    assert_eq!(q.counts().await.unwrap().total.pending, 2);
    assert_eq!(q.claim(KIND_USER_FLOW, 50).await.unwrap().len(), 2);
}

#[tokio::test]
async fn unmapped_rows_are_released_when_the_mapping_gains_the_user() {
    let (_d, q) = open();
    let st = q
        .insert(Arc::new(vec![
            rec("door-1", "77", "2026-03-02 08:00:00", false),
            rec("door-1", "77", "2026-03-02 18:00:00", false),
            rec("door-1", "78", "2026-03-02 08:00:00", false),
        ]))
        .await
        .unwrap();
    assert_eq!(st[0], InsertStatus::Unmapped);
    assert_eq!(q.counts().await.unwrap().total.unmapped, 3);
    assert!(q.claim(KIND_USER_FLOW, 50).await.unwrap().is_empty());

    let table = crate::mapping::load_table_from_str("77,feishu-77\n").unwrap();
    let n = q
        .release_unmapped(&user_flows::UserFlows, Arc::new(Mapping::Table(table)))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
    assert_eq!(c.len(), 2);
    for row in &c {
        let v: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        assert_eq!(v["user_id"], "feishu-77");
        assert_eq!(v["creator_id"], "feishu-77");
        assert_eq!(row.user_id.as_deref(), Some("feishu-77"));
    }
    assert_eq!(q.counts().await.unwrap().total.unmapped, 1);
}

#[tokio::test]
async fn punches_before_2022_are_dead_on_arrival_with_the_reason() {
    let (_d, q) = open();
    let st = q
        .insert(Arc::new(vec![rec("d", "1", "2021-06-01 08:00:00", true)]))
        .await
        .unwrap();
    assert_eq!(st, vec![InsertStatus::Dead("before_2022".into())]);
    let dl = q.dead_letters(10).await.unwrap();
    assert_eq!(dl[0].reason.as_deref(), Some("before_2022"));
    assert!(dl[0].message.as_deref().unwrap().contains("2022-01-01"));
    assert!(q.claim(KIND_USER_FLOW, 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn dead_rows_can_be_retried() {
    let (_d, q) = open();
    q.insert(Arc::new(vec![rec("d", "1", "2026-03-02 08:00:00", true)]))
        .await
        .unwrap();
    let c = q.claim(KIND_USER_FLOW, 1).await.unwrap();
    q.mark_dead(vec![c[0].id], "rejected".into(), ErrorInfo::default())
        .await
        .unwrap();
    assert_eq!(q.retry_dead(rules, None).await.unwrap(), 1);
    let c = q.claim(KIND_USER_FLOW, 1).await.unwrap();
    assert_eq!(c[0].attempts, 2);
}

#[tokio::test]
async fn pruning_removes_old_delivered_rows_and_keeps_the_total() {
    let (_d, q) = open();
    let recs: Vec<_> = (0..12)
        .map(|i| rec("d", &i.to_string(), "2026-03-02 08:00:00", true))
        .collect();
    q.insert(Arc::new(recs)).await.unwrap();
    let c = q.claim(KIND_USER_FLOW, 10).await.unwrap();
    q.mark_delivered(c.iter().map(|r| r.id).collect())
        .await
        .unwrap();
    assert_eq!(q.prune_delivered(now_ms() - 60_000).await.unwrap(), 0);
    assert_eq!(q.prune_delivered(now_ms() + 1).await.unwrap(), 10);
    let counts = q.counts().await.unwrap();
    assert_eq!(counts.total.delivered, 0);
    assert_eq!(counts.pruned_delivered, 10);
    assert_eq!(counts.total.pending, 2);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let e = Queue::open(&path).err().unwrap().to_string();
    assert!(e.contains("not a readable clockbridge queue"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x42u8; 8192]);
}

#[tokio::test]
async fn claims_stay_indexed_with_many_rows() {
    let (_d, q) = open();
    let plan: Vec<String> = q
        .call(|c| {
            let mut st = c.prepare(
                "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE kind = 'user_flow' AND status = 0 AND next_attempt_at <= 5 ORDER BY next_attempt_at, id LIMIT 50",
            )?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(3))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    let plan = plan.join(" | ");
    assert!(
        plan.contains("USING INDEX outbox_ready")
            || plan.contains("USING COVERING INDEX outbox_ready"),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "claim must not sort: {plan}");
}

#[tokio::test]
async fn start_up_and_status_queries_use_small_partial_indexes() {
    let (_d, q) = open();
    let plans: Vec<String> = q
        .call(|c| {
            let mut out = Vec::new();
            for sql in [
                "UPDATE outbox SET status = 0 WHERE status = 1",
                "SELECT min(created_at) FROM outbox WHERE status = 0",
                "SELECT min(created_at) FROM outbox WHERE status = 1",
                "SELECT DISTINCT device_id, subject FROM outbox WHERE status = 4 AND kind = 'user_flow'",
                "SELECT id FROM outbox WHERE status = 3 ORDER BY id DESC LIMIT 20",
            ] {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = st
                    .query_map([], |r| r.get::<_, String>(3))?
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(format!("{sql} => {}", rows.join(" | ")));
            }
            Ok(out)
        })
        .await
        .unwrap();
    for p in plans {
        assert!(p.contains("INDEX outbox_"), "full scan: {p}");
    }
}

/// A value of an ordered kind: `key` is the target, `value` what is written, `group` the request group.
fn value(key: &str, value: &str, group: &str) -> NewRecord {
    NewRecord {
        kind: KIND_ARCHIVE_REPORT,
        idem: crate::hr::derive_key(&[value]),
        ukey: key.into(),
        device_id: group.into(),
        subject: "m".into(),
        user_id: Some("m".into()),
        event_time: 0,
        payload: value.into(),
        status: Status::Pending,
        dead: None,
        live: false,
    }
}

#[tokio::test]
async fn a_repeated_value_is_a_duplicate_and_a_new_one_queues_behind_the_old() {
    let (_d, q) = open();
    let st = q
        .insert_latest(Arc::new(vec![
            value("r/1", "a", "g"),
            value("r/1", "a", "g"),
            value("r/1", "b", "g"),
            value("r/2", "a", "g"),
        ]))
        .await
        .unwrap();
    use InsertStatus::*;
    assert_eq!(st, vec![Pending, Duplicate, Pending, Pending]);
    // only the oldest value of each target may go: r/1 "a" and r/2 "a"
    let c = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    assert_eq!(
        c.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>(),
        vec!["a", "a"]
    );
    // while r/1 "a" is in flight, r/1 "b" waits
    assert!(q
        .claim_latest(KIND_ARCHIVE_REPORT, 50)
        .await
        .unwrap()
        .is_empty());
    q.mark_delivered(c.iter().map(|r| r.id).collect())
        .await
        .unwrap();
    let c2 = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0].payload, "b");
    // "b" is the newest of r/1: submitting it again changes nothing; "a" again is newer than "b"
    let st = q
        .insert_latest(Arc::new(vec![
            value("r/1", "b", "g"),
            value("r/1", "a", "g"),
        ]))
        .await
        .unwrap();
    assert_eq!(st, vec![Duplicate, Pending]);
    assert_eq!(
        q.counts().await.unwrap().by_kind[KIND_ARCHIVE_REPORT].pending,
        1
    );
}

#[tokio::test]
async fn ordered_claims_take_one_request_group_at_a_time() {
    let (_d, q) = open();
    q.insert_latest(Arc::new(vec![
        value("r/1", "a", "g1"),
        value("r/2", "a", "g2"),
        value("r/3", "a", "g1"),
    ]))
    .await
    .unwrap();
    let c = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    assert_eq!(
        c.iter().map(|r| r.device_id.as_str()).collect::<Vec<_>>(),
        vec!["g1", "g1"]
    );
    let c = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].device_id, "g2");
}

#[tokio::test]
async fn a_dead_value_with_a_newer_one_is_not_retried() {
    let (_d, q) = open();
    q.insert_latest(Arc::new(vec![value("r/1", "a", "g")]))
        .await
        .unwrap();
    let c = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    q.mark_dead(vec![c[0].id], "rejected".into(), ErrorInfo::default())
        .await
        .unwrap();
    let r = q
        .retry_dead_selected(rules, DeadSelection::default(), None, i64::MAX)
        .await
        .unwrap();
    assert_eq!(r.pending, 1, "alone, it is retried");
    let c = q.claim_latest(KIND_ARCHIVE_REPORT, 50).await.unwrap();
    q.mark_dead(vec![c[0].id], "rejected".into(), ErrorInfo::default())
        .await
        .unwrap();
    q.insert_latest(Arc::new(vec![value("r/1", "b", "g")]))
        .await
        .unwrap();
    let r = q
        .retry_dead_selected(rules, DeadSelection::default(), None, i64::MAX)
        .await
        .unwrap();
    assert_eq!((r.pending, r.kept), (0, 1), "a newer value is queued");
}

#[tokio::test]
async fn waiting_users_are_listed_most_punches_first_with_their_times_and_device_names() {
    let (d, q) = open();
    q.insert(Arc::new(vec![
        rec("lobby", "1003", "2026-03-02 08:00:00", false),
        rec("lobby", "1003", "2026-03-03 18:00:00", false),
        rec("lobby", "1003", "2026-03-02 12:00:00", false),
        rec("door-1", "77", "2026-03-02 09:00:00", false),
        rec("door-1", "77", "2026-03-02 10:00:00", false),
        rec("door-1", "1003", "2026-03-02 09:00:00", false),
        rec("lobby", "1001", "2026-03-02 09:00:00", true),
    ]))
    .await
    .unwrap();
    // the lobby terminal knows its users' names; the same PIN on door-1 (a line clock) has none
    store::DeviceStore::new(q.clone(), "lobby")
        .save_user_names(vec![
            ("1003".into(), "Zhang Wei".into()),
            ("1001".into(), "Li Lei".into()),
        ])
        .await
        .unwrap();
    let w = q.call(|c| read_waiting_users(c, 2)).await.unwrap();
    assert_eq!((w.total_users, w.total_rows), (3, 6));
    // 2026-03-02 08:00:00 and 2026-03-03 18:00:00 in Shanghai
    let t = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp()
            - 8 * 3600
    };
    assert_eq!(
        w.users,
        vec![
            WaitingUser {
                device_id: "lobby".into(),
                device_user_id: "1003".into(),
                name: Some("Zhang Wei".into()),
                count: 3,
                first_event_time: t("2026-03-02 08:00:00"),
                last_event_time: t("2026-03-03 18:00:00"),
            },
            WaitingUser {
                device_id: "door-1".into(),
                device_user_id: "77".into(),
                name: None,
                count: 2,
                first_event_time: t("2026-03-02 09:00:00"),
                last_event_time: t("2026-03-02 10:00:00"),
            },
        ]
    );
    // the mapping gains 1003: only door-1's users wait; read as status does, read-only
    let table = crate::mapping::load_table_from_str("1003,fs-1003\n").unwrap();
    q.release_unmapped(&user_flows::UserFlows, Arc::new(Mapping::Table(table)))
        .await
        .unwrap();
    let conn = open_read_only(&d.path().join("q.db")).unwrap();
    let w = read_waiting_users(&conn, usize::MAX).unwrap();
    assert_eq!((w.total_users, w.total_rows), (1, 2));
    assert_eq!(w.users[0].device_user_id, "77");
}

#[tokio::test]
async fn a_queue_of_schema_4_lists_its_waiting_users_without_names() {
    // a daemon not yet restarted after an upgrade: its queue has no device_users table
    let (d, q) = open();
    q.insert(Arc::new(vec![rec(
        "door-1",
        "77",
        "2026-03-02 09:00:00",
        false,
    )]))
    .await
    .unwrap();
    q.call(|c| {
        c.execute_batch("DROP TABLE device_users; PRAGMA user_version = 4")?;
        Ok(())
    })
    .await
    .unwrap();
    let conn = open_read_only(&d.path().join("q.db")).unwrap();
    let w = read_waiting_users(&conn, 5).unwrap();
    assert_eq!((w.total_users, w.users[0].name.clone()), (1, None));
}

// ---------------------------------------------------------------------------------------------------
// claim order: live punches first, the backlog never starved

/// A punch of `user` at the gateway's current time, on a clock in Shanghai: live.
fn live_rec(user: &str) -> NewRecord {
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let r = rec("door-1", user, &now, true);
    assert!(r.live, "a punch of now is live");
    r
}

/// `n` backlog punches (of 2026-03-02), users `b{from}`...
fn backlog_recs(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| rec("door-1", &format!("b{i}"), "2026-03-02 08:00:00", true))
        .collect()
}

/// The live (user `live-*`) and backlog rows of a claim.
fn split_claim(c: &[Claimed]) -> (usize, usize) {
    let live = c
        .iter()
        .filter(|r| r.user_id.as_deref().unwrap_or("").starts_with("live-"))
        .count();
    (live, c.len() - live)
}

#[test]
fn live_rows_may_take_half_a_batch_and_every_other_single_row() {
    assert_eq!(live_cap(50, 7), 25);
    assert_eq!(live_cap(49, 0), 25);
    assert_eq!(live_cap(2, 3), 1);
    assert_eq!(live_cap(0, 0), 0);
    assert_eq!(
        (0..4).map(|t| live_cap(1, t)).collect::<Vec<_>>(),
        [1, 0, 1, 0]
    );
}

#[tokio::test]
async fn a_live_punch_is_claimed_before_an_older_backlog() {
    let (_d, q) = open();
    q.insert(Arc::new(backlog_recs(0, 200))).await.unwrap();
    let live = live_rec("live-1");
    q.insert(Arc::new(vec![live.clone()])).await.unwrap();
    // by queue order it would be the 201st row; it is in the first batch
    let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
    assert_eq!(c.len(), 50, "the batch is full");
    assert_eq!(split_claim(&c), (1, 49));
    assert!(c.iter().any(|r| r.idem == live.idem));
    // the rest of the batch is the oldest backlog, in queue order
    let backlog: Vec<i64> = c
        .iter()
        .filter(|r| r.idem != live.idem)
        .map(|r| r.id)
        .collect();
    assert_eq!(backlog, (1..=49).collect::<Vec<i64>>());
    // and the backlog drains to the end, each row once
    let mut seen: std::collections::HashSet<i64> = c.iter().map(|r| r.id).collect();
    loop {
        let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
        if c.is_empty() {
            break;
        }
        assert!(c.iter().all(|r| seen.insert(r.id)), "a row claimed twice");
    }
    assert_eq!(seen.len(), 201);
}

#[tokio::test]
async fn a_flood_of_live_punches_leaves_the_backlog_half_of_every_batch() {
    let (_d, q) = open();
    q.insert(Arc::new(backlog_recs(0, 60))).await.unwrap();
    let live: Vec<NewRecord> = (0..80).map(|i| live_rec(&format!("live-{i}"))).collect();
    q.insert(Arc::new(live)).await.unwrap();
    assert_eq!(
        split_claim(&q.claim(KIND_USER_FLOW, 50).await.unwrap()),
        (25, 25)
    );
    assert_eq!(
        split_claim(&q.claim(KIND_USER_FLOW, 50).await.unwrap()),
        (25, 25)
    );
    // 10 backlog rows left: the live rows fill the rest of the batch
    assert_eq!(
        split_claim(&q.claim(KIND_USER_FLOW, 50).await.unwrap()),
        (30, 10)
    );
    assert!(q.claim(KIND_USER_FLOW, 50).await.unwrap().is_empty());
    // and the reverse: a few live rows leave the backlog the rest of a full batch
    q.insert(Arc::new(backlog_recs(100, 100))).await.unwrap();
    let few: Vec<NewRecord> = (80..83).map(|i| live_rec(&format!("live-{i}"))).collect();
    q.insert(Arc::new(few)).await.unwrap();
    assert_eq!(
        split_claim(&q.claim(KIND_USER_FLOW, 50).await.unwrap()),
        (3, 47)
    );
}

#[tokio::test]
async fn with_one_row_per_batch_live_and_backlog_rows_alternate() {
    let (_d, q) = open();
    q.insert(Arc::new(backlog_recs(0, 3))).await.unwrap();
    let live: Vec<NewRecord> = (0..5).map(|i| live_rec(&format!("live-{i}"))).collect();
    q.insert(Arc::new(live)).await.unwrap();
    let mut order = String::new();
    for turn in 0..8 {
        let c = q
            .claim_capped(KIND_USER_FLOW, 1, live_cap(1, turn))
            .await
            .unwrap();
        order.push(if split_claim(&c).0 == 1 { 'L' } else { 'B' });
    }
    // alternate while both are due; then the live rows have every claim
    assert_eq!(order, "LBLBLBLL");
}

#[tokio::test]
async fn a_live_row_backing_off_keeps_its_delay() {
    let (_d, q) = open();
    q.insert(Arc::new(vec![live_rec("live-1")])).await.unwrap();
    let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
    assert_eq!(split_claim(&c), (1, 0));
    q.mark_retry(vec![c[0].id], now_ms() + 60_000, None, false)
        .await
        .unwrap();
    q.insert(Arc::new(backlog_recs(0, 10))).await.unwrap();
    // not due: the backlog goes, the live row waits out its back-off
    assert_eq!(
        split_claim(&q.claim(KIND_USER_FLOW, 50).await.unwrap()),
        (0, 10)
    );
    assert!(q.claim(KIND_USER_FLOW, 50).await.unwrap().is_empty());
    assert_eq!(q.ready_count(KIND_USER_FLOW, 50).await.unwrap(), 0);
    assert!(q.next_due(KIND_USER_FLOW).await.unwrap().unwrap() > now_ms() + 50_000);
    // once due (here: a retry due now), it is first again, with its attempts counted
    q.insert(Arc::new(backlog_recs(10, 60))).await.unwrap();
    let id = c[0].id;
    q.call(move |conn| {
        Ok(conn.execute("UPDATE outbox SET next_attempt_at = 1 WHERE id = ?1", [id])?)
    })
    .await
    .unwrap();
    let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
    assert_eq!(split_claim(&c), (1, 49));
    assert_eq!(c.iter().find(|r| r.id == id).unwrap().attempts, 2);
}

#[tokio::test]
async fn hr_records_are_never_live() {
    let (_d, q) = open();
    let r = value("r/1", "a", "g");
    assert!(!r.live);
    q.insert_latest(Arc::new(vec![r])).await.unwrap();
    let live = q
        .call(|c| Ok(c.query_row("SELECT sum(live) FROM outbox", [], |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn the_backlog_reading_names_the_oldest_outstanding_punch_and_the_live_ones_waiting() {
    let (_d, q) = open();
    let conn = |q: &Queue| {
        let q = q.clone();
        async move { q.call(|c| read_backlog(c, KIND_USER_FLOW)).await.unwrap() }
    };
    assert_eq!(conn(&q).await, BacklogReading::default());
    let mut old = backlog_recs(0, 3);
    old.push(rec("door-2", "x", "2026-01-05 07:00:00", true));
    q.insert(Arc::new(old)).await.unwrap();
    q.insert(Arc::new(vec![live_rec("live-1"), live_rec("live-2")]))
        .await
        .unwrap();
    // 2026-01-05 07:00:00 in Shanghai
    let jan5 = 1_767_567_600;
    assert_eq!(
        conn(&q).await,
        BacklogReading {
            oldest: Some((jan5, "door-2".into())),
            live_pending: 2
        }
    );
    // in flight still counts as not delivered; delivered no longer does
    let c = q.claim(KIND_USER_FLOW, 50).await.unwrap();
    let r = conn(&q).await;
    assert_eq!(
        (r.oldest.clone(), r.live_pending),
        (Some((jan5, "door-2".into())), 0)
    );
    q.mark_delivered(c.iter().map(|r| r.id).collect())
        .await
        .unwrap();
    assert_eq!(conn(&q).await, BacklogReading::default());
}

#[tokio::test]
async fn claims_and_backlog_reads_stay_on_their_indexes() {
    let (_d, q) = open();
    let plans: Vec<String> = q
        .call(|c| {
            let mut out = Vec::new();
            for sql in [
                super::claim::DUE_LIVE.to_string(),
                super::claim::DUE_BACKLOG.to_string(),
                "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE kind = ?1 AND status = 0 AND next_attempt_at <= ?2 LIMIT ?3)".into(),
                "SELECT min(next_attempt_at) FROM outbox WHERE kind = ?1 AND status = 0".into(),
            ] {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let n = st.parameter_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter((0..n).map(|_| 1i64)), |r| {
                        r.get::<_, String>(3)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(format!("{sql} => {}", rows.join(" | ")));
            }
            Ok(out)
        })
        .await
        .unwrap();
    assert!(plans[0].contains("INDEX outbox_live"), "{}", plans[0]);
    for p in &plans[1..] {
        assert!(p.contains("INDEX outbox_ready"), "{p}");
    }
    for p in &plans {
        assert!(!p.contains("TEMP B-TREE"), "must not sort: {p}");
    }
    // the backlog's oldest event: the index of pending rows alone, no row read
    let plan = q
        .call(|c| {
            let mut st = c.prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::counts::OLDEST_PENDING
            ))?;
            let rows = st
                .query_map([1i64], |r| r.get::<_, String>(3))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows.join(" | "))
        })
        .await
        .unwrap();
    assert!(plan.contains("COVERING INDEX outbox_pending"), "{plan}");
}
