//! What a simulated device stores (users, attendance records) and how each is laid out for the
//! configured record and user sizes.

use chrono::{NaiveDateTime, TimeDelta};

use super::codec;

/// Layout of the attendance records a device serves (see docs/zkteco-protocol.md, "Sizes, and reading the log").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordSize {
    /// 8 bytes: `uid u16, verify, time, state`: the user is the table's `uid` (old firmware).
    B8,
    /// 16 bytes: `user_id u32, time, verify, state, reserved, workcode`: numeric user ids only.
    B16,
    /// 40 bytes: `uid, user_id char[24], verify, time, state, 8 bytes` (most current terminals).
    #[default]
    B40,
}

impl RecordSize {
    /// Bytes per record.
    pub fn bytes(self) -> usize {
        match self {
            RecordSize::B8 => 8,
            RecordSize::B16 => 16,
            RecordSize::B40 => 40,
        }
    }

    /// The size for `8`, `16` or `40`.
    pub fn from_bytes(n: usize) -> Option<RecordSize> {
        match n {
            8 => Some(RecordSize::B8),
            16 => Some(RecordSize::B16),
            40 => Some(RecordSize::B40),
            _ => None,
        }
    }
}

/// Layout of the user table a device serves (see docs/zkteco-protocol.md, "Sizes, and reading the log").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserSize {
    /// 28 bytes, numeric user ids (u32), 8-byte names.
    B28,
    /// 72 bytes, user ids of up to 24 bytes, 24-byte names.
    #[default]
    B72,
}

impl UserSize {
    /// Bytes per user.
    pub fn bytes(self) -> usize {
        match self {
            UserSize::B28 => 28,
            UserSize::B72 => 72,
        }
    }

    /// The size for `28` or `72`.
    pub fn from_bytes(n: usize) -> Option<UserSize> {
        match n {
            28 => Some(UserSize::B28),
            72 => Some(UserSize::B72),
            _ => None,
        }
    }
}

/// Payload layout of the realtime EF_ATTLOG events pushed to registered sessions (see docs/zkteco-protocol.md, "Realtime events"; the
/// lengths pyzk 0.9 parses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// 12 bytes `<IBB6s`: numeric user id u32, verify, state, time.
    Short12,
    /// 32 bytes `<24sBB6s`: user id char[24], verify, state, time.
    Id32,
    /// 36 bytes: as 32, then 4 zero bytes.
    Id36,
    /// 52 bytes: as 32, then 20 zero bytes (what node-zklib reads).
    Id52,
}

impl EventFormat {
    /// The usual format for a record size: 12 bytes for 8- and 16-byte devices, 52 for 40-byte ones.
    pub fn for_records(size: RecordSize) -> EventFormat {
        match size {
            RecordSize::B8 | RecordSize::B16 => EventFormat::Short12,
            RecordSize::B40 => EventFormat::Id52,
        }
    }
}

/// One user of the device's user table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    /// Internal number, unique on the device (8-byte records refer to users by it).
    pub uid: u16,
    /// The user id (PIN) shown on the device; digits only for 28-byte users.
    pub user_id: String,
    /// Display name (truncated to 8 bytes in 28-byte users, 24 in 72-byte users).
    pub name: String,
    /// Privilege byte: 0 user, 2 enroller, 6 manager, 14 admin; bit 0 = disabled.
    pub privilege: u8,
    /// Password (truncated to 5 / 8 bytes).
    pub password: String,
    /// Card number (0 = none).
    pub card: u32,
    /// Group number.
    pub group: u8,
}

impl SimUser {
    /// A plain user: privilege 0, no password, no card, group 1.
    pub fn new(uid: u16, user_id: &str, name: &str) -> SimUser {
        SimUser {
            uid,
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            privilege: 0,
            password: String::new(),
            card: 0,
            group: 1,
        }
    }
}

/// One attendance record (a punch) in the device's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRecord {
    /// The user id (PIN). 8-byte records store the uid of the user with this id (or the id itself
    /// if it is a number that fits u16); 16-byte records and 12-byte events need a number (u32).
    pub user_id: String,
    /// Device wall-clock time (no zone), years 2000–2099.
    pub time: NaiveDateTime,
    /// Verify type (pyzk's `status`): 1 fingerprint, 15 face...
    pub verify: u8,
    /// State (pyzk's `punch`): 0 check-in, 1 check-out...
    pub state: u8,
    /// Work code (16-byte and 40-byte records).
    pub workcode: u32,
}

impl SimRecord {
    /// A fingerprint check-in of `user_id` at `time`.
    pub fn new(user_id: &str, time: NaiveDateTime) -> SimRecord {
        SimRecord {
            user_id: user_id.to_owned(),
            time,
            verify: 1,
            state: 0,
            workcode: 0,
        }
    }
}

/// `n` users: uid 1..=n, user ids `"1001"`, `"1002"`..., names `User 1001`...
pub fn generate_users(n: usize) -> Vec<SimUser> {
    (0..n)
        .map(|i| {
            let id = (1001 + i).to_string();
            let mut u = SimUser::new((i + 1) as u16, &id, &format!("User {id}"));
            u.card = 5_000_000 + i as u32;
            u
        })
        .collect()
}

/// `n` distinct records starting at `start`, 7 seconds apart, cycling through `users` (user id
/// `"1001"` if there are none), states cycling through 0..=5 and verify types through 1, 15, 4.
pub fn generate_records(n: usize, users: &[SimUser], start: NaiveDateTime) -> Vec<SimRecord> {
    const VERIFY: [u8; 3] = [1, 15, 4];
    (0..n)
        .map(|i| SimRecord {
            user_id: users
                .get(i % users.len().max(1))
                .map(|u| u.user_id.clone())
                .unwrap_or_else(|| "1001".to_owned()),
            time: start + TimeDelta::seconds(7 * i as i64),
            verify: VERIFY[i % VERIFY.len()],
            state: (i % 6) as u8,
            workcode: 0,
        })
        .collect()
}

/// A record or user that the configured layout cannot carry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The time is outside 2000–2099.
    #[error("zk simulator: record of user {user_id:?} at {time}: the packed time holds years 2000-2099 only")]
    TimeOutOfRange {
        /// The record's user id.
        user_id: String,
        /// The record's time.
        time: NaiveDateTime,
    },
    /// The user id does not fit the layout.
    #[error("zk simulator: user id {user_id:?} does not fit {layout}: {need}")]
    UserId {
        /// The offending user id.
        user_id: String,
        /// The layout.
        layout: &'static str,
        /// What the layout needs.
        need: &'static str,
    },
    /// Two users share a uid.
    #[error("zk simulator: uid {0} is used by two users: uids must be unique")]
    DuplicateUid(u16),
}

/// Encodes records and users for one device layout, resolving 8-byte uids through the user table.
pub struct Layout<'a> {
    /// Record layout.
    pub records: RecordSize,
    /// User layout.
    pub users: UserSize,
    /// Event layout.
    pub events: EventFormat,
    /// The user table (for uids).
    pub table: &'a [SimUser],
}

impl Layout<'_> {
    fn uid_of(&self, user_id: &str) -> Option<u16> {
        self.table
            .iter()
            .find(|u| u.user_id == user_id)
            .map(|u| u.uid)
    }

    fn err(user_id: &str, layout: &'static str, need: &'static str) -> LayoutError {
        LayoutError::UserId {
            user_id: user_id.to_owned(),
            layout,
            need,
        }
    }

    /// Appends the record's bytes to `out`.
    pub fn encode_record(&self, r: &SimRecord, out: &mut Vec<u8>) -> Result<(), LayoutError> {
        let time = codec::encode_time(r.time).ok_or_else(|| LayoutError::TimeOutOfRange {
            user_id: r.user_id.clone(),
            time: r.time,
        })?;
        match self.records {
            RecordSize::B8 => {
                let uid = self
                    .uid_of(&r.user_id)
                    .or_else(|| r.user_id.parse().ok())
                    .ok_or_else(|| {
                        Self::err(
                            &r.user_id,
                            "8-byte records",
                            "a user of the table or a number up to 65535",
                        )
                    })?;
                out.extend_from_slice(&codec::record8(uid, r.verify, time, r.state));
            }
            RecordSize::B16 => {
                let id = r.user_id.parse().map_err(|_| {
                    Self::err(&r.user_id, "16-byte records", "a number up to 4294967295")
                })?;
                out.extend_from_slice(&codec::record16(id, time, r.verify, r.state, r.workcode));
            }
            RecordSize::B40 => {
                if r.user_id.len() > 24 {
                    return Err(Self::err(&r.user_id, "40-byte records", "at most 24 bytes"));
                }
                let uid = self.uid_of(&r.user_id).unwrap_or(0);
                out.extend_from_slice(&codec::record40(
                    uid, &r.user_id, r.verify, time, r.state, r.workcode,
                ));
            }
        }
        Ok(())
    }

    /// Appends the user's bytes to `out`.
    pub fn encode_user(&self, u: &SimUser, out: &mut Vec<u8>) -> Result<(), LayoutError> {
        let f = codec::UserFields {
            uid: u.uid,
            privilege: u.privilege,
            password: &u.password,
            name: &u.name,
            card: u.card,
            group: u.group,
            user_id: &u.user_id,
        };
        match self.users {
            UserSize::B28 => out.extend_from_slice(&codec::user28(&f).ok_or_else(|| {
                Self::err(&u.user_id, "28-byte users", "a number up to 4294967295")
            })?),
            UserSize::B72 => {
                if u.user_id.len() > 24 {
                    return Err(Self::err(&u.user_id, "72-byte users", "at most 24 bytes"));
                }
                out.extend_from_slice(&codec::user72(&f))
            }
        }
        Ok(())
    }

    /// The payload of the EF_ATTLOG realtime event for `r`.
    pub fn encode_event(&self, r: &SimRecord) -> Result<Vec<u8>, LayoutError> {
        let time = codec::event_time(r.time);
        let mut v = Vec::with_capacity(52);
        match self.events {
            EventFormat::Short12 => {
                let id: u32 = r.user_id.parse().map_err(|_| {
                    Self::err(&r.user_id, "12-byte events", "a number up to 4294967295")
                })?;
                v.extend_from_slice(&id.to_le_bytes());
                v.extend_from_slice(&[r.verify, r.state]);
                v.extend_from_slice(&time);
            }
            EventFormat::Id32 | EventFormat::Id36 | EventFormat::Id52 => {
                if r.user_id.len() > 24 {
                    return Err(Self::err(&r.user_id, "realtime events", "at most 24 bytes"));
                }
                v.extend_from_slice(&codec::fixed(&r.user_id, 24));
                v.extend_from_slice(&[r.verify, r.state]);
                v.extend_from_slice(&time);
                let len = match self.events {
                    EventFormat::Id36 => 36,
                    EventFormat::Id52 => 52,
                    _ => 32,
                };
                v.resize(len, 0);
            }
        }
        Ok(v)
    }

    /// Checks that every user and record can be encoded (and uids are unique).
    pub fn validate(&self, records: &[SimRecord]) -> Result<(), LayoutError> {
        let mut seen = std::collections::HashSet::new();
        let mut scratch = Vec::with_capacity(72);
        for u in self.table {
            if !seen.insert(u.uid) {
                return Err(LayoutError::DuplicateUid(u.uid));
            }
            scratch.clear();
            self.encode_user(u, &mut scratch)?;
        }
        for r in records {
            scratch.clear();
            self.encode_record(r, &mut scratch)?;
            if self.events == EventFormat::Short12 {
                self.encode_event(r)?;
            }
        }
        Ok(())
    }

    /// The dataset of a buffered read: `u32 total` then the records.
    pub fn attendance_dataset(&self, records: &[SimRecord]) -> Result<Vec<u8>, LayoutError> {
        let mut out = Vec::with_capacity(4 + records.len() * self.records.bytes());
        out.extend_from_slice(&[0; 4]);
        for r in records {
            self.encode_record(r, &mut out)?;
        }
        let total = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&total.to_le_bytes());
        Ok(out)
    }

    /// The dataset of a buffered user read: `u32 total` then the users.
    pub fn user_dataset(&self) -> Result<Vec<u8>, LayoutError> {
        let mut out = Vec::with_capacity(4 + self.table.len() * self.users.bytes());
        out.extend_from_slice(&[0; 4]);
        for u in self.table {
            self.encode_user(u, &mut out)?;
        }
        let total = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&total.to_le_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn eight_byte_records_carry_the_uid_of_the_user() {
        let users = vec![SimUser::new(42, "A-7", "Alice")];
        let l = Layout {
            records: RecordSize::B8,
            users: UserSize::B72,
            events: EventFormat::Short12,
            table: &users,
        };
        let mut out = Vec::new();
        l.encode_record(&SimRecord::new("A-7", at("2026-03-02 08:00:00")), &mut out)
            .unwrap();
        assert_eq!(&out[0..2], &[42, 0]);
        l.encode_record(&SimRecord::new("513", at("2026-03-02 08:00:00")), &mut out)
            .unwrap();
        assert_eq!(&out[8..10], &513u16.to_le_bytes());
        assert!(l
            .encode_record(&SimRecord::new("B-9", at("2026-03-02 08:00:00")), &mut out)
            .is_err());
    }

    #[test]
    fn datasets_start_with_the_size_of_their_records() {
        let users = generate_users(3);
        let recs = generate_records(10, &users, at("2026-03-02 08:00:00"));
        for (size, ev) in [
            (RecordSize::B8, EventFormat::Short12),
            (RecordSize::B16, EventFormat::Short12),
            (RecordSize::B40, EventFormat::Id52),
        ] {
            let l = Layout {
                records: size,
                users: UserSize::B28,
                events: ev,
                table: &users,
            };
            l.validate(&recs).unwrap();
            let d = l.attendance_dataset(&recs).unwrap();
            assert_eq!(d.len(), 4 + 10 * size.bytes());
            assert_eq!(&d[..4], &((10 * size.bytes()) as u32).to_le_bytes());
            let u = l.user_dataset().unwrap();
            assert_eq!(&u[..4], &(3 * 28u32).to_le_bytes());
            assert_eq!(
                l.encode_event(&recs[0]).unwrap().len(),
                if ev == EventFormat::Short12 { 12 } else { 52 }
            );
        }
    }

    #[test]
    fn layouts_refuse_what_they_cannot_carry() {
        let l = Layout {
            records: RecordSize::B16,
            users: UserSize::B28,
            events: EventFormat::Short12,
            table: &[],
        };
        let r = SimRecord::new("x1", at("2026-03-02 08:00:00"));
        assert!(matches!(l.validate(&[r]), Err(LayoutError::UserId { .. })));
        let old = SimRecord::new("1", at("1999-03-02 08:00:00"));
        let e = l.validate(&[old]).unwrap_err();
        assert!(e.to_string().contains("2000-2099"), "{e}");
        let users = vec![SimUser::new(1, "1", "a"), SimUser::new(1, "2", "b")];
        let l = Layout { table: &users, ..l };
        assert_eq!(l.validate(&[]), Err(LayoutError::DuplicateUid(1)));
        let long = "x".repeat(25);
        let users = vec![SimUser::new(1, &long, "a")];
        let l = Layout {
            records: RecordSize::B40,
            users: UserSize::B72,
            events: EventFormat::Id52,
            table: &users,
        };
        assert!(l.validate(&[]).is_err());
    }
}
