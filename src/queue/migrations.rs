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

/// All migrations, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(ZK_WATERMARKS)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
