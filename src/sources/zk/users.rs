//! A ZKTeco terminal's user table as the source last read it: which device user id a record
//! carries (`user_id_source`), and the name the terminal knows for each user, kept in the queue
//! (`DeviceStore::save_user_names`) by the device user id its punches carry, so that
//! `clockbridge unmapped` and `status` can show it.
//!
//! Guarantee: the id a name is kept under is the id [`UserTable::user_of`] gives the user's records
//! (for `record`: the PIN, or the internal number on terminals with 8-byte records; for
//! `user_table`: the PIN), so the name meets the user's unmapped punches.

use std::collections::HashMap;

use super::spec::UserIdSource;
use super::User;

/// The user table, by internal number.
#[derive(Debug, Default)]
pub struct UserTable {
    by_uid: HashMap<u16, User>,
    /// How many users the device had when the table was read (`None`: not read).
    count: Option<u32>,
    /// How many times it was read, and (that number, the record size) when the names were last
    /// kept in the queue.
    reads: u64,
    names_kept: Option<(u64, usize)>,
}

impl UserTable {
    /// Whether the table must be read (again): never read, or the device's user count changed.
    pub fn needs_read(&self, count: u32) -> bool {
        self.count != Some(count)
    }

    /// The table as just read from a device that reported `count` users.
    pub fn replace(&mut self, users: Vec<User>, count: u32) {
        self.by_uid = users.into_iter().map(|u| (u.uid, u)).collect();
        self.count = Some(count);
        self.reads += 1;
    }

    /// Forgets the table (another device answers at the address): the next poll reads it.
    pub fn clear(&mut self) {
        self.by_uid.clear();
        self.count = None;
    }

    /// The device user id of a record of internal number `uid` that carries `carried` (empty for
    /// 8-byte records), per `source`.
    pub fn user_of(&self, source: UserIdSource, uid: u16, carried: &str) -> String {
        let record = if carried.is_empty() {
            uid.to_string()
        } else {
            carried.to_string()
        };
        match source {
            UserIdSource::Record => record,
            UserIdSource::UserTable => self
                .by_uid
                .get(&uid)
                .map(|u| u.user_id.clone())
                .filter(|u| !u.is_empty())
                .unwrap_or(record),
        }
    }

    /// The internal number of the user whose PIN is `user_id`, as text.
    pub fn uid_of(&self, user_id: &str) -> Option<String> {
        self.by_uid
            .values()
            .find(|u| u.user_id == user_id)
            .map(|u| u.uid.to_string())
    }

    /// The name the device knows for a device user id (its PIN or internal number).
    pub fn name_of(&self, device_user_id: &str) -> Option<String> {
        self.by_uid
            .values()
            .find(|u| u.user_id == device_user_id || u.uid.to_string() == device_user_id)
            .map(|u| u.name.clone())
            .filter(|n| !n.is_empty())
    }

    /// The names to keep in the queue, by the device user id the users' records of `record_size`
    /// bytes carry (0: not known yet), when they changed since they were last kept: the table was
    /// read again, or the record size became known or changed. `None`: nothing new (or not read).
    pub fn names_to_keep(
        &self,
        source: UserIdSource,
        record_size: usize,
    ) -> Option<Vec<(String, String)>> {
        if self.count.is_none() || self.names_kept == Some((self.reads, record_size)) {
            return None;
        }
        Some(
            self.by_uid
                .values()
                .map(|u| (self.subject_of(source, u, record_size), u.name.clone()))
                .collect(),
        )
    }

    /// The names of [`UserTable::names_to_keep`] for `record_size` are kept.
    pub fn names_kept(&mut self, record_size: usize) {
        self.names_kept = Some((self.reads, record_size));
    }

    /// The device user id the records of user `u` carry (see [`UserTable::user_of`]).
    fn subject_of(&self, source: UserIdSource, u: &User, record_size: usize) -> String {
        // 8-byte records carry the internal number; the others the PIN
        let carried = if record_size == 8 {
            String::new()
        } else {
            u.user_id.clone()
        };
        self.user_of(source, u.uid, &carried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u16, pin: &str, name: &str) -> User {
        User {
            uid,
            privilege: 0,
            name: name.into(),
            card: 0,
            user_id: pin.into(),
        }
    }

    fn table() -> UserTable {
        let mut t = UserTable::default();
        t.replace(
            vec![
                user(1, "1001", "Li Lei"),
                user(2, "1002", ""),
                user(3, "", "Nobody"),
            ],
            3,
        );
        t
    }

    fn kept(t: &UserTable, source: UserIdSource, size: usize) -> Vec<(String, String)> {
        let mut v = t.names_to_keep(source, size).unwrap();
        v.sort();
        v
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn names_are_kept_under_the_id_the_users_records_carry() {
        let t = table();
        // 40- and 16-byte records carry the PIN; a user without a PIN, the internal number
        assert_eq!(
            kept(&t, UserIdSource::Record, 40),
            pairs(&[("1001", "Li Lei"), ("1002", ""), ("3", "Nobody")])
        );
        // 8-byte records carry the internal number
        assert_eq!(
            kept(&t, UserIdSource::Record, 8),
            pairs(&[("1", "Li Lei"), ("2", ""), ("3", "Nobody")])
        );
        // user_table: the PIN, whatever the record
        for size in [8, 16, 40] {
            assert_eq!(
                kept(&t, UserIdSource::UserTable, size),
                pairs(&[("1001", "Li Lei"), ("1002", ""), ("3", "Nobody")])
            );
        }
        // each is the id the source gives the user's records
        for u in [user(1, "1001", ""), user(3, "", "")] {
            for (size, carried) in [(8, String::new()), (40, u.user_id.clone())] {
                for source in [UserIdSource::Record, UserIdSource::UserTable] {
                    assert_eq!(
                        t.subject_of(source, &u, size),
                        t.user_of(source, u.uid, &carried)
                    );
                }
            }
        }
    }

    #[test]
    fn names_are_kept_again_only_after_a_new_read_or_a_new_record_size() {
        let mut t = UserTable::default();
        assert!(t.needs_read(3));
        assert_eq!(t.names_to_keep(UserIdSource::Record, 0), None);
        t.replace(vec![user(1, "1001", "Li Lei")], 1);
        assert!(!t.needs_read(1) && t.needs_read(2));
        assert!(t.names_to_keep(UserIdSource::Record, 0).is_some());
        t.names_kept(0);
        assert_eq!(t.names_to_keep(UserIdSource::Record, 0), None);
        // the first log read tells the record size: 8 bytes changes the ids
        assert_eq!(
            t.names_to_keep(UserIdSource::Record, 8),
            Some(pairs(&[("1", "Li Lei")]))
        );
        t.names_kept(8);
        // another device at the address, with as many users: read again, kept again
        t.clear();
        assert!(t.needs_read(1));
        t.replace(vec![user(1, "1001", "Han Meimei")], 1);
        assert_eq!(
            t.names_to_keep(UserIdSource::Record, 8),
            Some(pairs(&[("1", "Han Meimei")]))
        );
        assert_eq!(t.name_of("1001").as_deref(), Some("Han Meimei"));
        assert_eq!(t.name_of("1").as_deref(), Some("Han Meimei"));
        assert_eq!(t.uid_of("1001").as_deref(), Some("1"));
    }
}
