//! The punch model and its normalisation into a Feishu `user_flow` record.
//!
//! A [`Punch`] is what a clock says: which device, which device user, the device-local wall-clock time,
//! and the optional state / verify / work-code columns. [`normalise`] turns it into a [`Normalised`]
//! record with every field the platform requires, resolves the local time in the device's IANA time zone
//! and checks that the platform can import it.
//!
//! Guarantees:
//! - [`Punch::idempotent_key`] is a pure function of the physical punch (device id, device user id,
//!   device-local time), so reading the same punch again — after a restart, from a re-sent line, from a
//!   re-read device log — always yields the same key. It deliberately ignores the state and verify columns
//!   (some firmware swaps them between channels) and the configured time zone (fixing a wrong zone must not
//!   turn old punches into new ones).
//! - Punches the platform cannot import (before 2022-01-01) or far in the future are not sent: they become
//!   dead letters with the reason, so nothing disappears silently.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// 2022-01-01T00:00:00+08:00: the platform imports no punch before this instant (UTC+8 is the
/// platform's own reference; using the earliest interpretation keeps us on the safe side).
pub const EARLIEST_IMPORTABLE: i64 = 1_640_966_400;

/// One punch as read from a clock, before any mapping or time-zone resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Punch {
    /// The configured device id (`devices[].id`).
    pub device_id: String,
    /// The user id as the clock knows it (PIN, badge number...), trimmed.
    pub device_user_id: String,
    /// Wall-clock time on the device, in the device's own time zone.
    pub local_time: NaiveDateTime,
    /// Punch state code as sent (0 check-in, 1 check-out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out;
    /// other codes such as 255 are kept as they are).
    pub state: Option<i64>,
    /// Verification mode code as sent (1 fingerprint, 15 face, ...).
    pub verify: Option<i64>,
    /// Work code, when the clock sends one other than "0".
    pub workcode: Option<String>,
    /// The state as the clock wrote it, when it is a word the configured `state_map` does not know
    /// (kept for the comment, never dropped).
    #[serde(default)]
    pub state_text: Option<String>,
}

impl Punch {
    /// The deterministic idempotent key of this physical punch: 32 lowercase hex characters of
    /// SHA-256 over `v1 \0 device_id \0 device_user_id \0 YYYY-MM-DD HH:MM:SS`.
    pub fn idempotent_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"clockbridge-punch-v1\0");
        h.update(self.device_id.as_bytes());
        h.update([0]);
        h.update(self.device_user_id.as_bytes());
        h.update([0]);
        h.update(
            self.local_time
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
                .as_bytes(),
        );
        let digest = h.finalize();
        let mut out = String::with_capacity(32);
        for b in &digest[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// A readable record id for `user_flow.external_id`: `device/user/YYYYMMDDHHMMSS`.
    pub fn external_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.device_id,
            self.device_user_id,
            self.local_time.format("%Y%m%d%H%M%S")
        )
    }
}

/// Human name of a ZKTeco-style punch state code.
pub fn state_name(code: i64) -> Option<&'static str> {
    Some(match code {
        0 => "check-in",
        1 => "check-out",
        2 => "break-out",
        3 => "break-in",
        4 => "overtime-in",
        5 => "overtime-out",
        _ => return None,
    })
}

/// Human name of a ZKTeco-style verification mode code.
pub fn verify_name(code: i64) -> Option<&'static str> {
    Some(match code {
        0 => "password",
        1 => "fingerprint",
        2 => "card",
        3 => "password",
        4 => "card",
        15 => "face",
        25 => "palm",
        _ => return None,
    })
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

/// Resolves a device-local time in `tz` to a UTC instant.
///
/// Daylight-saving overlaps (a local time that happens twice) resolve to the earlier instant; gaps (a
/// local time that never happens, e.g. 02:30 on a spring-forward night) are read with the offset in force
/// just before the gap, which is what a clock that did not jump yet meant.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // offset in force a few hours before the gap
            let before = local - chrono::Duration::hours(6);
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(t) => t.offset().fix_seconds(),
                LocalResult::Ambiguous(a, _) => a.offset().fix_seconds(),
                LocalResult::None => 0,
            };
            DateTime::<Utc>::from_naive_utc_and_offset(
                local - chrono::Duration::seconds(offset as i64),
                Utc,
            )
        }
    }
}

trait FixSeconds {
    fn fix_seconds(&self) -> i32;
}
impl FixSeconds for chrono_tz::TzOffset {
    fn fix_seconds(&self) -> i32 {
        use chrono::Offset;
        self.fix().local_minus_utc()
    }
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
    /// Stable reason code, stored with the dead letter.
    pub fn reason(self) -> &'static str {
        match self {
            Unsendable::Before2022 => "before_2022",
            Unsendable::FarFuture => "far_future",
        }
    }
    /// What the operator should know.
    pub fn message(self) -> &'static str {
        match self {
            Unsendable::Before2022 => {
                "punch is before 2022-01-01, which the platform cannot import: check the device clock"
            }
            Unsendable::FarFuture => {
                "punch is far in the future: check the device clock and its timezone setting"
            }
        }
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

/// A punch after normalisation, ready for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub punch: Punch,
    pub idempotent_key: String,
    /// Unix seconds.
    pub check_time: i64,
    /// The record to send; `user_id` / `creator_id` are empty until the user is mapped.
    pub flow: UserFlow,
    /// `Some` when the punch must not be sent (it is stored as a dead letter).
    pub unsendable: Option<Unsendable>,
}

/// Normalises a punch: resolves its time in `tz`, builds the `user_flow` record (with the Feishu user id
/// when `user_id` is known) and checks the time window. `now` and `max_future_secs` bound the future.
pub fn normalise(
    punch: Punch,
    tz: Tz,
    location_name: &str,
    user_id: Option<&str>,
    now: DateTime<Utc>,
    max_future_secs: i64,
) -> Normalised {
    let instant = resolve_local(tz, punch.local_time);
    let check_time = instant.timestamp();
    let unsendable = if check_time < EARLIEST_IMPORTABLE {
        Some(Unsendable::Before2022)
    } else if check_time > now.timestamp() + max_future_secs {
        Some(Unsendable::FarFuture)
    } else {
        None
    };
    let idempotent_key = punch.idempotent_key();
    let uid = user_id.unwrap_or("").to_string();
    let flow = UserFlow {
        user_id: uid.clone(),
        creator_id: uid,
        location_name: location_name.to_string(),
        check_time: check_time.to_string(),
        comment: comment(&punch),
        device_id: punch.device_id.clone(),
        external_id: punch.external_id(),
        idempotent_id: idempotent_key.clone(),
        flow_type: 7,
    };
    Normalised {
        punch,
        idempotent_key,
        check_time,
        flow,
        unsendable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn punch(dev: &str, user: &str, t: &str) -> Punch {
        Punch {
            device_id: dev.into(),
            device_user_id: user.into(),
            local_time: NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap(),
            state: Some(0),
            verify: Some(1),
            workcode: None,
            state_text: None,
        }
    }

    #[test]
    fn idempotent_key_is_a_pure_function_of_the_physical_punch() {
        let a = punch("door-1", "1", "2026-03-02 08:59:59");
        let mut b = a.clone();
        // a re-read may carry swapped or different state/verify columns: same physical punch
        b.state = Some(1);
        b.verify = Some(15);
        assert_eq!(a.idempotent_key(), b.idempotent_key());
        assert_eq!(a.idempotent_key().len(), 32);
        // any part of the physical identity changes the key
        assert_ne!(
            a.idempotent_key(),
            punch("door-2", "1", "2026-03-02 08:59:59").idempotent_key()
        );
        assert_ne!(
            a.idempotent_key(),
            punch("door-1", "11", "2026-03-02 08:59:59").idempotent_key()
        );
        assert_ne!(
            a.idempotent_key(),
            punch("door-1", "1", "2026-03-02 08:59:58").idempotent_key()
        );
        // pinned value (computed independently: sha256 of the documented input, first 16 bytes):
        // changing the derivation would make every punch ever queued look new
        assert_eq!(
            punch("d", "u", "2022-01-01 00:00:00").idempotent_key(),
            "e1440a3c9fc77892dd1f7a35bf8d10b8"
        );
    }

    #[test]
    fn normalise_fills_every_required_field_in_shanghai_time() {
        let now = Utc::now();
        let n = normalise(
            punch("door-1", "1", "2026-03-02 08:59:59"),
            chrono_tz::Asia::Shanghai,
            "HQ 1F door",
            Some("abd754f7"),
            now,
            3600,
        );
        assert_eq!(n.flow.user_id, "abd754f7");
        assert_eq!(n.flow.creator_id, "abd754f7");
        assert_eq!(n.flow.location_name, "HQ 1F door");
        // 2026-03-02 08:59:59 +08:00 = 00:59:59 UTC
        let expect = NaiveDate::from_ymd_opt(2026, 3, 2)
            .unwrap()
            .and_hms_opt(0, 59, 59)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(n.check_time, expect);
        assert_eq!(n.flow.check_time, expect.to_string());
        assert_eq!(n.flow.comment, "clockbridge door-1: check-in, fingerprint");
        assert_eq!(n.flow.external_id, "door-1/1/20260302085959");
        assert_eq!(n.flow.idempotent_id, n.idempotent_key);
        assert_eq!(n.unsendable, None);
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
        assert_eq!(old.unsendable, Some(Unsendable::Before2022));
        let first = normalise(
            punch("d", "1", "2022-01-01 00:00:00"),
            chrono_tz::Asia::Shanghai,
            "x",
            Some("u"),
            now,
            3600,
        );
        assert_eq!(first.unsendable, None);
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
        assert_eq!(fut.unsendable, Some(Unsendable::FarFuture));
    }

    #[test]
    fn dst_gap_and_overlap_resolve_deterministically() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00): read as +01:00
        let gap =
            NaiveDateTime::parse_from_str("2026-03-29 02:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            resolve_local(tz, gap).to_rfc3339(),
            "2026-03-29T01:30:00+00:00"
        );
        // 2026-10-25 02:30 happens twice: the earlier (+02:00) instant
        let overlap =
            NaiveDateTime::parse_from_str("2026-10-25 02:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            resolve_local(tz, overlap).to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
    }
}
