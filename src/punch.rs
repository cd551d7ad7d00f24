//! The punch model: what a clock says, its time resolved in the device's time zone, and its
//! idempotent key.
//!
//! A [`Punch`] is what a clock says: which device, which device user, the device-local wall-clock time,
//! and the optional state / verify / work-code columns. [`normalise`] resolves the local time in the
//! device's IANA time zone, computes the key and notes the mapped user and the location; the
//! platform's record is built from it by its lane ([`crate::feishu::lanes::user_flows`]).
//!
//! Guarantees:
//! - [`Punch::idempotent_key`] is a pure function of the physical punch (device id, device user id,
//!   device-local time), so reading the same punch again — after a restart, from a re-sent line, from a
//!   re-read device log — always yields the same key. It deliberately ignores the state and verify columns
//!   (some firmware swaps them between channels) and the configured time zone (fixing a wrong zone must not
//!   turn old punches into new ones).
//! - A punch further in the future than the configured tolerance is marked ([`Normalised::far_future`]):
//!   the device clock is probably wrong, and it is kept as a dead letter rather than sent.
//! - A punch whose instant is within [`LIVE_WINDOW_SECS`] (10 minutes) of the gateway's clock when it
//!   is normalised, which is just before its commit, is marked live ([`Normalised::live`]): a clock
//!   read as punches happen. The sender claims live punches before the backlog (a first sync of old
//!   records, an import of old files, a queue that grew while the platform was unreachable); see
//!   [`crate::queue`]'s claim order.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// How close (seconds, either side) a punch's instant must be to the gateway's clock when it is
/// queued for the punch to be live: claimed before the backlog. Ten minutes covers a clock read as
/// punches happen, a ZKTeco poll interval, a short network outage and a clock a few minutes off;
/// it leaves out a first sync of a terminal's log, an import of old files, and a clock whose time is
/// more than ten minutes wrong (its punches are then sent as backlog, still in order).
pub const LIVE_WINDOW_SECS: i64 = 600;

/// A punch after normalisation: its instant, its key, and what the platform's record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub punch: Punch,
    pub idempotent_key: String,
    /// Unix seconds.
    pub check_time: i64,
    /// The device's `location_name`.
    pub location_name: String,
    /// The Feishu user id, once the mapping knows the device user (`None`: unmapped).
    pub user_id: Option<String>,
    /// More than the configured tolerance ahead of the gateway's clock: the device clock is probably
    /// wrong.
    pub far_future: bool,
    /// How far the punch's instant is ahead of the gateway's clock when it was normalised, in
    /// seconds (negative: behind). Said in the reason of a punch that cannot be sent.
    pub ahead_secs: i64,
    /// Within [`LIVE_WINDOW_SECS`] of the gateway's clock (`now`): a punch read as it happens.
    pub live: bool,
}

/// Normalises a punch: resolves its time in `tz`, computes its key, and notes the location and the
/// Feishu user id (when `user_id` is known). `now` and `max_future_secs` bound the future; `now` also
/// decides whether the punch is live ([`LIVE_WINDOW_SECS`]).
pub fn normalise(
    punch: Punch,
    tz: Tz,
    location_name: &str,
    user_id: Option<&str>,
    now: DateTime<Utc>,
    max_future_secs: i64,
) -> Normalised {
    let check_time = resolve_local(tz, punch.local_time).timestamp();
    Normalised {
        idempotent_key: punch.idempotent_key(),
        check_time,
        location_name: location_name.to_string(),
        user_id: user_id.filter(|u| !u.is_empty()).map(str::to_string),
        far_future: check_time > now.timestamp() + max_future_secs,
        ahead_secs: check_time - now.timestamp(),
        live: (check_time - now.timestamp()).abs() <= LIVE_WINDOW_SECS,
        punch,
    }
}

/// A punch for tests: state 0 (check-in), verify 1 (fingerprint), at local time `t`
/// (`YYYY-MM-DD HH:MM:SS`).
#[cfg(test)]
pub(crate) fn sample(dev: &str, user: &str, t: &str) -> Punch {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use sample as punch;

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
    fn normalise_resolves_the_time_in_shanghai_and_keeps_the_user() {
        let now = Utc::now();
        let n = normalise(
            punch("door-1", "1", "2026-03-02 08:59:59"),
            chrono_tz::Asia::Shanghai,
            "HQ 1F door",
            Some("abd754f7"),
            now,
            3600,
        );
        assert_eq!(n.user_id.as_deref(), Some("abd754f7"));
        assert_eq!(n.location_name, "HQ 1F door");
        // 2026-03-02 08:59:59 +08:00 = 00:59:59 UTC
        let expect = NaiveDate::from_ymd_opt(2026, 3, 2)
            .unwrap()
            .and_hms_opt(0, 59, 59)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(n.check_time, expect);
        assert_eq!(n.idempotent_key, n.punch.idempotent_key());
        assert!(!n.far_future);
        // an empty user id is no user
        let n = normalise(
            punch("door-1", "1", "2026-03-02 08:59:59"),
            chrono_tz::Asia::Shanghai,
            "HQ",
            Some(""),
            now,
            3600,
        );
        assert_eq!(n.user_id, None);
    }

    /// Live: the punch's instant within ten minutes of the gateway's clock, on either side, in
    /// whatever zone the device is; older (a first sync, an import) or further ahead is backlog.
    #[test]
    fn a_punch_is_live_within_ten_minutes_of_the_gateways_clock() {
        let tz = chrono_tz::Asia::Shanghai;
        let now = NaiveDate::from_ymd_opt(2026, 3, 2)
            .unwrap()
            .and_hms_opt(1, 0, 0)
            .unwrap()
            .and_utc();
        // 01:00 UTC is 09:00 in Shanghai
        let live = |t: &str| normalise(punch("door-1", "1", t), tz, "HQ", None, now, 3600).live;
        assert!(live("2026-03-02 09:00:00"));
        assert!(live("2026-03-02 08:50:00"), "exactly the window behind");
        assert!(live("2026-03-02 09:10:00"), "exactly the window ahead");
        assert!(!live("2026-03-02 08:49:59"));
        assert!(!live("2026-03-02 09:10:01"));
        assert!(!live("2026-02-02 09:00:00"), "a month old: backlog");
        // the same wall-clock time on a clock in UTC is eight hours off: backlog
        let n = normalise(
            punch("door-1", "1", "2026-03-02 09:00:00"),
            chrono_tz::UTC,
            "HQ",
            None,
            now,
            3600,
        );
        assert!(!n.live);
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
