//! The punch lane: `POST /open-apis/attendance/v1/user_flows/batch_create`, up to
//! `sender.batch_size` punches per call.
//!
//! A normalised punch ([`crate::punch::Normalised`]) becomes one `user_flow` record ([`UserFlow`]),
//! stored as the JSON text it is sent as; a batch is those texts in `{"flow_records": [...]}`. The
//! record carries the punch's idempotent key as `idempotent_id`, so a re-send is harmless.
//!
//! The platform's rules that live here:
//! - it imports no punch before 2022-01-01 ([`EARLIEST_IMPORTABLE`]): such a punch, or one far in the
//!   future, is queued as a dead letter with its reason ([`Unsendable`]), never sent;
//! - a punch whose user the mapping does not know waits `unmapped`; when the mapping gains the user,
//!   its stored record gets `user_id` and `creator_id` ([`with_user`]).

use serde::{Deserialize, Serialize};

use super::{Lane, Sending};
use crate::config::SenderConfig;
use crate::feishu::{classify, FeishuClient, Reply, Verdict};
use crate::punch::{state_name, verify_name, Normalised, Punch};
use crate::queue::{Claimed, KindRules, NewRecord, Remap, Status};

/// The queue kind of punches.
pub const KIND: &str = "user_flow";

/// Path of punch import.
pub const PATH: &str = "/open-apis/attendance/v1/user_flows/batch_create";

/// 2022-01-01T00:00:00+08:00: the platform imports no punch before this instant (UTC+8 is the
/// platform's own reference; using the earliest interpretation keeps us on the safe side).
pub const EARLIEST_IMPORTABLE: i64 = 1_640_966_400;

/// The punch lane (registered in [`super::ALL`]).
pub struct UserFlows;

impl KindRules for UserFlows {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// From 2022-01-01 ([`EARLIEST_IMPORTABLE`]) to `latest`.
    fn sendable(&self, event_time: i64, latest: i64) -> bool {
        (EARLIEST_IMPORTABLE..=latest).contains(&event_time)
    }

    fn remap(&self) -> Option<Remap> {
        Some(with_user)
    }
}

impl Lane for UserFlows {
    fn batch_limit(&self, cfg: &SenderConfig) -> usize {
        cfg.batch_size
    }

    fn send<'a>(&'a self, client: &'a FeishuClient, rows: &'a [Claimed]) -> Sending<'a> {
        Box::pin(async move {
            let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
            batch_create(client, &payloads).await
        })
    }

    fn classify(&self, reply: &Reply) -> Verdict {
        classify(reply)
    }

    /// None: a refused batch's `data` is not kept with its punches.
    fn failure_detail(&self, _reply: &Reply) -> Option<String> {
        None
    }

    /// No: punches come by the thousand; their figures are in `status` and `/metrics`.
    fn logs_deliveries(&self) -> bool {
        false
    }
}

/// The `user_flow` record as sent to `user_flows/batch_create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFlow {
    pub user_id: String,
    pub creator_id: String,
    pub location_name: String,
    /// Unix seconds, as a string (the platform's type).
    pub check_time: String,
    pub comment: String,
    pub device_id: String,
    pub external_id: String,
    pub idempotent_id: String,
    /// 7 = open-platform import.
    #[serde(rename = "type")]
    pub flow_type: i32,
}

/// The record for a normalised punch; `user_id` / `creator_id` are empty until the user is mapped.
pub fn flow(n: &Normalised) -> UserFlow {
    let uid = n.user_id.clone().unwrap_or_default();
    UserFlow {
        user_id: uid.clone(),
        creator_id: uid,
        location_name: n.location_name.clone(),
        check_time: n.check_time.to_string(),
        comment: comment(&n.punch),
        device_id: n.punch.device_id.clone(),
        external_id: external_id(&n.punch),
        idempotent_id: n.idempotent_key.clone(),
        flow_type: 7,
    }
}

/// A readable record id for `user_flow.external_id`: `device/user/YYYYMMDDHHMMSS`.
pub fn external_id(p: &Punch) -> String {
    format!(
        "{}/{}/{}",
        p.device_id,
        p.device_user_id,
        p.local_time.format("%Y%m%d%H%M%S")
    )
}

/// The `user_flow.comment` for a punch: device, state and verification, e.g.
/// `clockbridge door-1: check-in, fingerprint`. Unknown codes are kept as numbers, never dropped.
pub fn comment(p: &Punch) -> String {
    let mut parts = Vec::new();
    match (p.state, &p.state_text) {
        (Some(s), _) => parts.push(
            state_name(s)
                .map(str::to_string)
                .unwrap_or_else(|| format!("state {s}")),
        ),
        (None, Some(t)) => parts.push(t.clone()),
        (None, None) => parts.push("punch".to_string()),
    }
    if let Some(v) = p.verify {
        parts.push(
            verify_name(v)
                .map(str::to_string)
                .unwrap_or_else(|| format!("verify {v}")),
        );
    }
    if let Some(w) = &p.workcode {
        parts.push(format!("work code {w}"));
    }
    format!("clockbridge {}: {}", p.device_id, parts.join(", "))
}

/// Why a punch is not sent but kept as a dead letter straight away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// Before 2022-01-01: the platform cannot import it.
    Before2022,
    /// Further in the future than the configured tolerance: the device clock is probably wrong.
    FarFuture,
}

impl Unsendable {
    /// The reason a normalised punch cannot be sent, if any.
    pub fn of(n: &Normalised) -> Option<Unsendable> {
        if n.check_time < EARLIEST_IMPORTABLE {
            Some(Unsendable::Before2022)
        } else if n.far_future {
            Some(Unsendable::FarFuture)
        } else {
            None
        }
    }
    /// Stable reason code, stored with the dead letter.
    pub fn reason(self) -> &'static str {
        match self {
            Unsendable::Before2022 => "before_2022",
            Unsendable::FarFuture => "far_future",
        }
    }
    /// What the operator should know of `n`: its time as the device wrote it, how far that is from
    /// the gateway's clock, and what to check (kept as the dead letter's message and logged).
    pub fn message(self, n: &Normalised) -> String {
        let at = n.punch.local_time.format("%Y-%m-%d %H:%M:%S");
        let off = offset_text(n.ahead_secs.unsigned_abs());
        match self {
            Unsendable::Before2022 => format!(
                "punch at {at} (device time) is before 2022-01-01, which the platform cannot import; \
                 it is {off} behind the gateway's clock: check the device's date and time (a clock \
                 that lost its setting often restarts in 2000)"
            ),
            Unsendable::FarFuture => {
                // a whole number of hours (or half hours) off is a time zone, not a drifting clock
                let zone = n.ahead_secs < 15 * 3600 && (n.ahead_secs + 300) % 1800 < 600;
                let check = if zone {
                    "check the device's time zone (its timezone key, or the clock's own setting)"
                } else {
                    "check the device's date and time"
                };
                format!(
                    "punch at {at} (device time) is {off} ahead of the gateway's clock, more than \
                     queue.max_future_secs allows: {check}"
                )
            }
        }
    }
}

/// `secs` as an operator reads an offset: "8 h", "8 h 30 min", "12 min", "3 days 4 h", "45 s".
fn offset_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (1, h, _) => format!("1 day {h} h"),
        (d, h, _) if d < 400 => format!("{d} days {h} h"),
        (d, _, _) => format!("{} years", d / 365),
    }
}

/// The queue row for a normalised punch: pending, unmapped (no user yet) or dead on arrival.
pub fn record(n: &Normalised) -> NewRecord {
    let (status, dead) = match (Unsendable::of(n), &n.user_id) {
        (Some(u), _) => (Status::Dead, Some((u.reason().to_string(), u.message(n)))),
        (None, None) => (Status::Unmapped, None),
        (None, Some(_)) => (Status::Pending, None),
    };
    NewRecord {
        kind: KIND,
        idem: n.idempotent_key.clone(),
        ukey: format!(
            "{}{}",
            n.punch.local_time.format("%Y%m%d%H%M%S"),
            n.idempotent_key
        ),
        device_id: n.punch.device_id.clone(),
        subject: n.punch.device_user_id.clone(),
        user_id: n.user_id.clone(),
        event_time: n.check_time,
        payload: serde_json::to_string(&flow(n)).unwrap_or_default(),
        status,
        dead,
        live: n.live,
    }
}

/// A stored record with `user_id` and `creator_id` set to `user_id` (emptied with `None`), every
/// other field as it was; `None` when the stored text is not a `user_flow` record.
pub fn with_user(payload: &str, user_id: Option<&str>) -> Option<String> {
    let mut f: UserFlow = serde_json::from_str(payload).ok()?;
    let uid = user_id.unwrap_or_default();
    f.user_id = uid.to_string();
    f.creator_id = uid.to_string();
    serde_json::to_string(&f).ok()
}

/// Sends one `user_flows/batch_create` request with `records` (JSON texts of user_flow objects).
pub async fn batch_create(client: &FeishuClient, records: &[&str]) -> Reply {
    let mut body = String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 20);
    body.push_str("{\"flow_records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str("]}");
    let path = format!("{PATH}?employee_type={}", client.employee_type().as_str());
    client.send(reqwest::Method::POST, &path, body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::punch::{normalise, sample as punch};
    use chrono::Utc;

    #[test]
    fn normalise_fills_every_required_field_in_shanghai_time() {
        let n = normalise(
            punch("door-1", "1", "2026-03-02 08:59:59"),
            chrono_tz::Asia::Shanghai,
            "HQ 1F door",
            Some("abd754f7"),
            Utc::now(),
            3600,
        );
        let f = flow(&n);
        assert_eq!(f.user_id, "abd754f7");
        assert_eq!(f.creator_id, "abd754f7");
        assert_eq!(f.location_name, "HQ 1F door");
        // 2026-03-02 08:59:59 +08:00 = 00:59:59 UTC
        assert_eq!(f.check_time, "1772413199");
        assert_eq!(f.comment, "clockbridge door-1: check-in, fingerprint");
        assert_eq!(f.external_id, "door-1/1/20260302085959");
        assert_eq!(f.idempotent_id, n.idempotent_key);
        assert_eq!(f.flow_type, 7);
        assert_eq!(Unsendable::of(&n), None);
        let r = record(&n);
        assert_eq!((r.kind, r.status), (KIND, Status::Pending));
        assert_eq!(r.payload, serde_json::to_string(&f).unwrap());
    }

    #[test]
    fn unknown_state_codes_are_kept_in_the_comment() {
        let mut p = punch("door-1", "1", "2026-03-02 08:59:59");
        p.state = Some(255);
        p.verify = Some(99);
        p.workcode = Some("7".into());
        assert_eq!(
            comment(&p),
            "clockbridge door-1: state 255, verify 99, work code 7"
        );
    }

    #[test]
    fn punches_before_2022_and_far_future_are_unsendable() {
        let now = Utc::now();
        let old = normalise(
            punch("d", "1", "2021-12-31 23:59:59"),
            chrono_tz::Asia::Shanghai,
            "x",
            Some("u"),
            now,
            3600,
        );
        assert_eq!(Unsendable::of(&old), Some(Unsendable::Before2022));
        assert_eq!(
            record(&old).dead.map(|d| d.0),
            Some("before_2022".to_string())
        );
        let first = normalise(
            punch("d", "1", "2022-01-01 00:00:00"),
            chrono_tz::Asia::Shanghai,
            "x",
            Some("u"),
            now,
            3600,
        );
        assert_eq!(Unsendable::of(&first), None);
        let future_local = (now + chrono::Duration::days(3)).naive_utc();
        let fut = normalise(
            Punch {
                local_time: future_local,
                ..punch("d", "1", "2026-01-01 00:00:00")
            },
            chrono_tz::UTC,
            "x",
            Some("u"),
            now,
            3600,
        );
        assert_eq!(Unsendable::of(&fut), Some(Unsendable::FarFuture));
        assert_eq!(record(&fut).status, Status::Dead);
    }

    #[test]
    fn a_punch_that_cannot_be_sent_says_how_far_off_its_time_is_and_what_to_check() {
        let now = Utc::now();
        let at = |ahead: chrono::Duration, tz: chrono_tz::Tz| {
            // the device's local time is `ahead` of now, in the zone the device is configured with
            let local = (now + ahead).with_timezone(&tz).naive_local();
            let n = normalise(
                Punch {
                    local_time: local,
                    ..punch("door-1", "1", "2026-01-01 00:00:00")
                },
                tz,
                "x",
                Some("u"),
                now,
                3600,
            );
            record(&n).dead.expect("dead on arrival")
        };
        // a clock set to UTC+8 read as UTC: 8 hours ahead, a time zone
        let (reason, msg) = at(chrono::Duration::hours(8), chrono_tz::UTC);
        assert_eq!(reason, "far_future");
        assert!(msg.contains("is 8 h ahead of the gateway's clock"), "{msg}");
        assert!(msg.contains("check the device's time zone"), "{msg}");
        assert!(msg.contains("(device time)"), "{msg}");
        // India's half hour
        let (_, msg) = at(chrono::Duration::minutes(5 * 60 + 30), chrono_tz::UTC);
        assert!(
            msg.contains("5 h 30 min ahead") && msg.contains("time zone"),
            "{msg}"
        );
        // three days ahead: the date, not the zone
        let (_, msg) = at(
            chrono::Duration::days(3) + chrono::Duration::minutes(7),
            chrono_tz::UTC,
        );
        assert!(msg.contains("3 days 0 h ahead"), "{msg}");
        assert!(msg.contains("check the device's date and time"), "{msg}");
        // a reset clock in 2000
        let old = normalise(
            punch("door-1", "1", "2000-01-01 00:03:12"),
            chrono_tz::Asia::Shanghai,
            "x",
            Some("u"),
            now,
            3600,
        );
        let (reason, msg) = record(&old).dead.unwrap();
        assert_eq!(reason, "before_2022");
        assert!(
            msg.starts_with("punch at 2000-01-01 00:03:12 (device time) is before 2022-01-01"),
            "{msg}"
        );
        assert!(msg.contains("years behind the gateway's clock"), "{msg}");
    }

    #[test]
    fn offsets_read_as_an_operator_reads_them() {
        assert_eq!(offset_text(45), "45 s");
        assert_eq!(offset_text(12 * 60 + 5), "12 min");
        assert_eq!(offset_text(8 * 3600), "8 h");
        assert_eq!(offset_text(8 * 3600 + 30 * 60), "8 h 30 min");
        assert_eq!(offset_text(86_400 + 2 * 3600), "1 day 2 h");
        assert_eq!(offset_text(3 * 86_400), "3 days 0 h");
        assert_eq!(offset_text(26 * 365 * 86_400), "26 years");
    }

    #[test]
    fn a_remapped_record_changes_its_user_and_nothing_else() {
        let n = normalise(
            punch("door-1", "7", "2026-03-02 08:59:59"),
            chrono_tz::Asia::Shanghai,
            "总部 \"HQ\"",
            None,
            Utc::now(),
            3600,
        );
        let r = record(&n);
        assert_eq!(r.status, Status::Unmapped);
        let mapped = with_user(&r.payload, Some("fs-7 \"新\"")).unwrap();
        // the text the record would have had if the user had been known at insert, byte for byte
        let expect = record(&Normalised {
            user_id: Some("fs-7 \"新\"".into()),
            ..n
        });
        assert_eq!(mapped, expect.payload);
        assert_eq!(with_user(&mapped, None).unwrap(), r.payload);
        assert_eq!(with_user("not json", Some("u")), None);
    }
}
