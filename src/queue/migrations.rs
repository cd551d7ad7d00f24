//! Schema versions of the queue. Append new migrations; never edit a released one.

use rusqlite_migration::{Migrations, M};

const V1: &str = r#"
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL,
    idem             TEXT    NOT NULL,
    ukey             TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    subject          TEXT    NOT NULL,
    user_id          TEXT,
    event_time       INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    status           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    delivered_at     INTEGER,
    err_code         INTEGER,
    err_msg          TEXT,
    err_log_id       TEXT,
    dead_reason      TEXT,
    UNIQUE (kind, ukey)
);
CREATE INDEX outbox_ready     ON outbox (kind, status, next_attempt_at, id);
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE status = 2;
CREATE INDEX outbox_unmapped  ON outbox (device_id, subject) WHERE status = 4;
CREATE INDEX outbox_dead      ON outbox (id) WHERE status = 3;
CREATE INDEX outbox_in_flight ON outbox (id) WHERE status = 1;
CREATE INDEX outbox_pending   ON outbox (created_at) WHERE status = 0;

CREATE TABLE counts (
    kind      TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    status    INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (kind, device_id, status)
) WITHOUT ROWID;

-- inserts are counted by Queue::insert, once per (kind, device, status) per transaction: a trigger
-- would run once per row and cost a third of the insert rate
CREATE TRIGGER outbox_count_update AFTER UPDATE OF status ON outbox WHEN OLD.status <> NEW.status BEGIN
    UPDATE counts SET n = n - 1 WHERE kind = OLD.kind AND device_id = OLD.device_id AND status = OLD.status;
    INSERT INTO counts (kind, device_id, status, n) VALUES (NEW.kind, NEW.device_id, NEW.status, 1)
    ON CONFLICT (kind, device_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER outbox_count_delete AFTER DELETE ON outbox BEGIN
    UPDATE counts SET n = n - 1 WHERE kind = OLD.kind AND device_id = OLD.device_id AND status = OLD.status;
END;

CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO totals (name, value) VALUES ('pruned_delivered', 0);

CREATE TABLE runtime (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Dead letters an operator dropped (`clockbridge dlq drop`): kept for the record, never sent.
const V2: &str = r#"
CREATE TABLE dropped (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    idem        TEXT    NOT NULL,
    device_id   TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    event_time  INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    dead_reason TEXT,
    err_code    INTEGER,
    err_msg     TEXT,
    err_log_id  TEXT,
    attempts    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    dropped_at  INTEGER NOT NULL
);
"#;

/// ZKTeco devices (`kind = "zk"`): the watermark of each device's attendance log. `records` is how
/// many records of the log are committed to the outbox; `last_record` holds the raw bytes of the last of
/// them (record `records - 1`), compared at the next poll to prove the log is the same log; `serial` is
/// the serial number last seen at `address`; `clearing` is 1 while clockbridge clears the log.
const ZK_WATERMARKS: &str = r#"
CREATE TABLE zk_watermarks (
    device_id   TEXT    PRIMARY KEY,
    address     TEXT    NOT NULL,
    serial      TEXT,
    records     INTEGER NOT NULL,
    record_size INTEGER NOT NULL,
    last_record BLOB,
    clearing    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Per-device source state ([`super::store`]): one JSON value per `(device_id, name)`. The ZKTeco
/// watermarks of `zk_watermarks` move in as `zk_watermark` values (`last_record` as lowercase hex), so
/// a deployment keeps its watermarks, and the old table goes.
const SOURCE_STATE: &str = r#"
CREATE TABLE source_state (
    device_id  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, name)
) WITHOUT ROWID;
INSERT INTO source_state (device_id, name, value, updated_at)
SELECT device_id, 'zk_watermark',
       json_object(
           'address', address,
           'serial', serial,
           'records', records,
           'record_size', record_size,
           'last_record', CASE WHEN last_record IS NULL THEN NULL ELSE lower(hex(last_record)) END,
           'clearing', json(CASE WHEN clearing <> 0 THEN 'true' ELSE 'false' END)
       ),
       updated_at
FROM zk_watermarks;
DROP TABLE zk_watermarks;
"#;

/// The names the devices know for their users (a ZKTeco terminal's user table), by the device user
/// id the device's punches carry (`outbox.subject`), so that `clockbridge unmapped` and `status`
/// can show the name of a user whose punches wait for a mapping. Written through
/// [`super::store::DeviceStore::save_user_names`], which replaces a device's names whole.
/// The partial index of unmapped rows gains `event_time`, so that their count and first and last
/// time per device user (`super::unmapped`) are read from the index alone.
const DEVICE_USERS: &str = r#"
DROP INDEX outbox_unmapped;
CREATE INDEX outbox_unmapped ON outbox (device_id, subject, event_time) WHERE status = 4;
CREATE TABLE device_users (
    device_id      TEXT    NOT NULL,
    device_user_id TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (device_id, device_user_id)
) WITHOUT ROWID;
"#;

/// Live punches first (issue 11): `live` is 1 for a punch read as it happens
/// ([`crate::punch::LIVE_WINDOW_SECS`]), set at insert and never changed; rows of earlier versions
/// are backlog. `outbox_live` holds only the pending live rows (a few at any time: one entry per
/// punch from its commit to its claim), so claiming them first costs one short index range, and an
/// import of old punches never touches it. `outbox_pending`, the index of pending rows, also holds
/// their kind and event time, so that `status` finds the backlog's oldest event in it alone (a scan of
/// the pending rows' entries) without one more index to keep up at every insert.
const LIVE: &str = r#"
ALTER TABLE outbox ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_live    ON outbox (kind, next_attempt_at, id) WHERE status = 0 AND live = 1;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (created_at, kind, event_time) WHERE status = 0;
"#;

/// `clockbridge reconcile` reads the rows of a kind by event time ([`super::Queue::rows_in_range`]):
/// without an index that is a scan of the whole outbox (every delivered row a deployment keeps,
/// months of them), with it a range of the index in event order (no sort). Entries of one event
/// time are in row id order, as the read wants them. Building it on an existing queue reads the
/// outbox once, at the first open by this version.
const EVENT_TIME: &str = r#"
CREATE INDEX outbox_event_time ON outbox (kind, event_time);
"#;

/// The schema version that added live punches ([`LIVE`]): a queue older than this has no `live`
/// column and no event time in `outbox_pending`.
pub const LIVE_SINCE: i64 = 6;

/// The schema version of this binary: the number of migrations.
pub const VERSION: i64 = 7;

/// The tables a queue holds, with the schema version that created each and the one that dropped it:
/// a file whose version says it holds a table it lacks was altered by hand (or is another program's
/// file), and is refused rather than written to. Keep it in step with the migrations below.
pub const TABLES: &[(&str, i64, Option<i64>)] = &[
    ("outbox", 1, None),
    ("counts", 1, None),
    ("totals", 1, None),
    ("runtime", 1, None),
    ("dropped", 2, None),
    ("zk_watermarks", 3, Some(4)),
    ("source_state", 4, None),
    ("device_users", 5, None),
];

/// All migrations, oldest first.
pub fn migrations() -> Migrations<'static> {
    let all = vec![
        M::up(V1),
        M::up(V2),
        M::up(ZK_WATERMARKS),
        M::up(SOURCE_STATE),
        M::up(DEVICE_USERS),
        M::up(LIVE),
        M::up(EVENT_TIME),
    ];
    debug_assert_eq!(
        all.len() as i64,
        VERSION,
        "VERSION is the number of migrations"
    );
    Migrations::new(all)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, super::VERSION, "VERSION is the number of migrations");
    }

    /// Rows queued by a version before live punches are backlog: none is claimed ahead of another.
    #[test]
    fn rows_of_a_version_4_database_become_backlog() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut conn, 4).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox (kind, idem, ukey, device_id, subject, event_time, payload, status, created_at)
             VALUES ('user_flow', 'a', 'ka', 'd', 's', 1, '{}', 0, 1), ('user_flow', 'b', 'kb', 'd', 's', 2, '{}', 1, 1);",
        )
        .unwrap();
        // `status` of a newer binary reads a queue its daemon has not migrated yet
        let reading = crate::queue::read_backlog(&conn, "user_flow").unwrap();
        assert_eq!(reading.oldest, Some((1, "d".to_string())));
        assert_eq!(reading.live_pending, 0);
        super::migrations().to_latest(&mut conn).unwrap();
        assert_eq!(
            crate::queue::read_backlog(&conn, "user_flow").unwrap(),
            reading
        );
        let live: Vec<i64> = conn
            .prepare("SELECT live FROM outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(live, vec![0, 0]);
    }

    /// `TABLES` says what each version holds: checked against the migrations themselves.
    #[test]
    fn the_tables_of_each_version_are_those_the_migrations_create() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        for v in 1..=super::VERSION {
            super::migrations()
                .to_version(&mut conn, v as usize)
                .unwrap();
            let mut st = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            let have: Vec<String> = st
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let mut want: Vec<String> = super::TABLES
                .iter()
                .filter(|(_, since, until)| *since <= v && until.is_none_or(|u| v < u))
                .map(|(name, _, _)| name.to_string())
                .collect();
            want.sort();
            assert_eq!(have, want, "schema version {v}");
        }
    }

    /// A queue of schema 4 with users waiting for a mapping: after the upgrade they are listed, and
    /// the count and times come from the rebuilt index alone.
    #[tokio::test]
    async fn unmapped_rows_of_a_version_4_database_are_listed_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::migrations().to_version(&mut conn, 4).unwrap();
            conn.execute_batch(
                "INSERT INTO outbox (kind, idem, ukey, device_id, subject, event_time, payload, status, created_at)
                 VALUES ('user_flow', 'a', 'a', 'door-1', '77', 100, '{}', 4, 1),
                        ('user_flow', 'b', 'b', 'door-1', '77', 300, '{}', 4, 1),
                        ('user_flow', 'c', 'c', 'door-1', '78', 200, '{}', 2, 1);",
            )
            .unwrap();
        }
        let (q, _) = crate::queue::Queue::open(&path).unwrap();
        crate::queue::store::DeviceStore::new(q.clone(), "door-1")
            .save_user_names(vec![("77".into(), "Li Lei".into())])
            .await
            .unwrap();
        let (w, plan) = q
            .call(|c| {
                let plan: Vec<String> = c
                    .prepare(
                        "EXPLAIN QUERY PLAN SELECT device_id, subject, count(*), min(event_time), max(event_time)
                         FROM outbox WHERE status = 4 GROUP BY device_id, subject",
                    )?
                    .query_map([], |r| r.get::<_, String>(3))?
                    .collect::<Result<_, _>>()?;
                Ok((crate::queue::read_waiting_users(c, 5)?, plan))
            })
            .await
            .unwrap();
        assert_eq!((w.total_users, w.total_rows), (1, 2));
        let u = &w.users[0];
        assert_eq!((u.first_event_time, u.last_event_time), (100, 300));
        assert_eq!(u.name.as_deref(), Some("Li Lei"));
        assert!(
            plan.iter()
                .any(|p| p.contains("COVERING INDEX outbox_unmapped")),
            "{plan:?}"
        );
    }

    /// A queue of schema 6 (before the index by event time) is upgraded in place when opened: its
    /// rows are kept, the index is built, and the range read of `reconcile` uses it (no scan of the
    /// outbox, no sort).
    #[tokio::test]
    async fn a_version_6_database_gains_the_event_time_index_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::migrations().to_version(&mut conn, 6).unwrap();
            conn.execute_batch(
                "INSERT INTO outbox (kind, idem, ukey, device_id, subject, user_id, event_time, payload, status, created_at)
                 VALUES ('user_flow', 'a', 'a', 'door-1', '7', 'u7', 300, '{\"external_id\":\"x\"}', 2, 1),
                        ('user_flow', 'b', 'b', 'door-1', '7', 'u7', 100, '{}', 0, 1),
                        ('user_flow', 'c', 'c', 'door-1', '7', 'u7', 900, '{}', 2, 1),
                        ('approval', 'd', 'd', 'hr', '7', 'u7', 200, '{}', 2, 1);",
            )
            .unwrap();
            let has: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_event_time'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(has, 0);
        }
        let (q, _) = crate::queue::Queue::open(&path).unwrap();
        let (version, plan) = q
            .call(|c| {
                let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let plan: Vec<String> = c
                    .prepare(&format!(
                        "EXPLAIN QUERY PLAN {}",
                        crate::queue::reconcile::RANGE_SQL
                    ))?
                    .query_map(rusqlite::params!["user_flow", 0, 1000], |r| {
                        r.get::<_, String>(3)
                    })?
                    .collect::<Result<_, _>>()?;
                Ok((v, plan))
            })
            .await
            .unwrap();
        assert_eq!(version, super::VERSION);
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX outbox_event_time")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        let rows = q.rows_in_range("user_flow", 100, 900).await.unwrap();
        let got: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.idem.as_str(), r.event_time))
            .collect();
        assert_eq!(got, [("b", 100), ("a", 300)]);
        let ext = q.external_ids(vec![rows[1].id]).await.unwrap();
        assert_eq!(ext, [(rows[1].id, "x".to_string())]);
    }

    /// A deployment of the version with `zk_watermarks` (schema 3) keeps its watermarks.
    #[tokio::test]
    async fn zk_watermarks_of_a_version_3_database_move_to_source_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::migrations().to_version(&mut conn, 3).unwrap();
            conn.execute_batch(
                "INSERT INTO zk_watermarks VALUES ('door-9', '10.0.0.5:4370', 'SN1', 120, 40, x'00ff10', 0, 1);
                 INSERT INTO zk_watermarks VALUES ('gate', '10.0.0.6:4370', NULL, 0, 8, NULL, 1, 2);",
            )
            .unwrap();
        }
        let (q, _) = crate::queue::Queue::open(&path).unwrap();
        let store = |d: &str| crate::queue::store::DeviceStore::new(q.clone(), d);
        let door: serde_json::Value = store("door-9").load("zk_watermark").await.unwrap().unwrap();
        assert_eq!(
            door,
            serde_json::json!({"address": "10.0.0.5:4370", "serial": "SN1", "records": 120,
                "record_size": 40, "last_record": "00ff10", "clearing": false})
        );
        let gate: serde_json::Value = store("gate").load("zk_watermark").await.unwrap().unwrap();
        assert_eq!(
            gate,
            serde_json::json!({"address": "10.0.0.6:4370", "serial": null, "records": 0,
                "record_size": 8, "last_record": null, "clearing": true})
        );
        // the old table is gone: one place holds the watermark
        let left = q
            .call(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'zk_watermarks'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
