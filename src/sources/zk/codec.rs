//! The ZK packet codec: pure functions, no I/O.
//!
//! A TCP packet is `50 50 82 7D`, a little-endian u32 length, then the 8-byte header (command, checksum,
//! session id, reply id, each a little-endian u16) and the data. The checksum is the 16-bit ones'
//! complement of the ones'-complement sum of the header (checksum field 0) and the data.
//!
//! Guarantees: decoding never panics on any input; a record or packet that cannot be decoded is a
//! [`DecodeError`] naming what is wrong.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

/// The TCP wrapper's magic bytes.
pub const MAGIC: [u8; 4] = [0x50, 0x50, 0x82, 0x7D];
/// Longest packet (header plus data) accepted from a device. A chunk is at most 64 KiB; this leaves
/// room for a device that answers a bulk read with one direct data packet of a large log.
pub const MAX_PACKET: usize = 16 << 20;

pub const CMD_CONNECT: u16 = 1000;
pub const CMD_EXIT: u16 = 1001;
pub const CMD_ENABLEDEVICE: u16 = 1002;
pub const CMD_DISABLEDEVICE: u16 = 1003;
pub const CMD_AUTH: u16 = 1102;
pub const CMD_GET_FREE_SIZES: u16 = 50;
pub const CMD_GET_TIME: u16 = 201;
pub const CMD_SET_TIME: u16 = 202;
pub const CMD_REG_EVENT: u16 = 500;
pub const CMD_PREPARE_DATA: u16 = 1500;
pub const CMD_DATA: u16 = 1501;
pub const CMD_FREE_DATA: u16 = 1502;
pub const CMD_PREPARE_BUFFER: u16 = 1503;
pub const CMD_READ_BUFFER: u16 = 1504;
pub const CMD_ATTLOG_RRQ: u16 = 13;
pub const CMD_USERTEMP_RRQ: u16 = 9;
pub const CMD_CLEAR_ATTLOG: u16 = 15;
pub const CMD_OPTIONS_RRQ: u16 = 11;
pub const CMD_ACK_OK: u16 = 2000;
pub const CMD_ACK_ERROR: u16 = 2001;
pub const CMD_ACK_DATA: u16 = 2002;
pub const CMD_ACK_UNAUTH: u16 = 2005;
pub const CMD_ACK_UNKNOWN: u16 = 0xFFFF;

/// Realtime event flag: attendance punches.
pub const EF_ATTLOG: u32 = 1;
/// Bytes per chunk of a buffered read over TCP (what pyzk and node-zklib use).
pub const CHUNK: u32 = 0xFFC0;

/// Why bytes from a device could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a ZK packet (magic {0:02x?}, expected 50 50 82 7d)")]
    Magic([u8; 4]),
    #[error("packet length {0} is impossible (8 to {MAX_PACKET} bytes)")]
    Length(usize),
    #[error("{what}: {len} bytes, expected {expected}")]
    Short {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("record time {0:#010x} is not a calendar date")]
    Time(u32),
    #[error("event time {0:02x?} is not a calendar date")]
    EventTime([u8; 6]),
    #[error("{total} bytes of {what} do not divide into {count} records")]
    Layout {
        what: &'static str,
        total: usize,
        count: u64,
    },
}

/// The 8-byte header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command: u16,
    pub checksum: u16,
    pub session: u16,
    pub reply: u16,
}

/// The ones'-complement checksum of a header (checksum field zero) followed by data.
pub fn checksum(command: u16, session: u16, reply: u16, data: &[u8]) -> u16 {
    let mut sum: u32 = command as u32 + session as u32 + reply as u32;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u16::from_le_bytes([w[0], w[1]]) as u32;
    }
    if let [last] = words.remainder() {
        sum += *last as u32;
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// A whole TCP packet: wrapper, header and data.
pub fn encode(command: u16, session: u16, reply: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&((8 + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(&command.to_le_bytes());
    out.extend_from_slice(&checksum(command, session, reply, data).to_le_bytes());
    out.extend_from_slice(&session.to_le_bytes());
    out.extend_from_slice(&reply.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The length (header plus data) announced by an 8-byte TCP wrapper.
pub fn wrapper_len(w: &[u8; 8]) -> Result<usize, DecodeError> {
    let magic = [w[0], w[1], w[2], w[3]];
    if magic != MAGIC {
        return Err(DecodeError::Magic(magic));
    }
    let len = u32::from_le_bytes([w[4], w[5], w[6], w[7]]) as usize;
    if !(8..=MAX_PACKET).contains(&len) {
        return Err(DecodeError::Length(len));
    }
    Ok(len)
}

/// Splits a packet body (after the wrapper) into header and data.
pub fn decode_body(body: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if body.len() < 8 {
        return Err(DecodeError::Short {
            what: "packet header",
            len: body.len(),
            expected: 8,
        });
    }
    let u = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    Ok((
        Header {
            command: u(0),
            checksum: u(2),
            session: u(4),
            reply: u(6),
        },
        &body[8..],
    ))
}

/// The 4 bytes of CMD_AUTH for a comm key (pyzk `make_commkey`).
pub fn commkey(key: u32, session: u16, ticks: u8) -> [u8; 4] {
    let k = key.reverse_bits().wrapping_add(session as u32);
    let b = k.to_le_bytes();
    let x = [b[0] ^ b'Z', b[1] ^ b'K', b[2] ^ b'S', b[3] ^ b'O'];
    let c = [x[2], x[3], x[0], x[1]];
    [c[0] ^ ticks, c[1] ^ ticks, ticks, c[3] ^ ticks]
}

/// Decodes a packed device time.
pub fn decode_time(t: u32) -> Result<NaiveDateTime, DecodeError> {
    let mut v = t;
    let s = v % 60;
    v /= 60;
    let m = v % 60;
    v /= 60;
    let h = v % 24;
    v /= 24;
    let d = v % 31 + 1;
    v /= 31;
    let mo = v % 12 + 1;
    v /= 12;
    let y = v as i32 + 2000;
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, m, s))
        .ok_or(DecodeError::Time(t))
}

/// Packs a time for CMD_SET_TIME (years 2000 to 2099).
pub fn encode_time(t: NaiveDateTime) -> u32 {
    let y = (t.year() % 100) as u32;
    ((y * 12 * 31 + (t.month() - 1) * 31 + t.day() - 1) * 86400)
        + (t.hour() * 60 + t.minute()) * 60
        + t.second()
}

/// Decodes the 6-byte time of a realtime event: `Y-2000, M, D, h, m, s`.
pub fn decode_timehex(b: [u8; 6]) -> Result<NaiveDateTime, DecodeError> {
    NaiveDate::from_ymd_opt(2000 + b[0] as i32, b[1] as u32, b[2] as u32)
        .and_then(|d| d.and_hms_opt(b[3] as u32, b[4] as u32, b[5] as u32))
        .ok_or(DecodeError::EventTime(b))
}

/// A NUL-terminated (or full-width) string field; invalid UTF-8 is replaced, spaces trimmed.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// One attendance record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttRecord {
    /// The device's internal user number (0 when the layout has none, as in 16-byte records).
    pub uid: u16,
    /// The user id (PIN) the layout carries: the string of 40-byte records, the number of 16-byte
    /// records; empty for 8-byte records, which carry only `uid`.
    pub user_id: String,
    /// Device-local wall-clock time.
    pub time: NaiveDateTime,
    /// Verify type (pyzk's `status`): 1 fingerprint, 15 face...
    pub verify: u8,
    /// Punch state (pyzk's `punch`): 0 check-in, 1 check-out...
    pub state: u8,
    /// Work code (16-byte records only).
    pub workcode: u32,
}

/// Decodes one record of `size` bytes (8, 16, or 40 and more: the 40-byte layout).
pub fn decode_record(b: &[u8]) -> Result<AttRecord, DecodeError> {
    match b.len() {
        8 => Ok(AttRecord {
            uid: u16_at(b, 0),
            user_id: String::new(),
            verify: b[2],
            time: decode_time(u32_at(b, 3))?,
            state: b[7],
            workcode: 0,
        }),
        16 => Ok(AttRecord {
            uid: 0,
            user_id: u32_at(b, 0).to_string(),
            time: decode_time(u32_at(b, 4))?,
            verify: b[8],
            state: b[9],
            workcode: u32_at(b, 12),
        }),
        n if n >= 40 => Ok(AttRecord {
            uid: u16_at(b, 0),
            user_id: cstr(&b[2..26]),
            verify: b[26],
            time: decode_time(u32_at(b, 27))?,
            state: b[31],
            workcode: 0,
        }),
        n => Err(DecodeError::Short {
            what: "attendance record",
            len: n,
            expected: 40,
        }),
    }
}

/// The record size a log of `total` bytes and `count` records uses (pyzk: `total / count`).
pub fn record_size(what: &'static str, total: usize, count: u64) -> Result<usize, DecodeError> {
    let layout = DecodeError::Layout { what, total, count };
    // no records of 0 bytes: an empty table for `count` records is a corrupt one
    if count == 0 || total == 0 || !(total as u64).is_multiple_of(count) {
        return Err(layout);
    }
    Ok((total as u64 / count) as usize)
}

/// Decodes consecutive attendance records of `size` bytes.
pub fn decode_records(data: &[u8], size: usize) -> Result<Vec<AttRecord>, DecodeError> {
    if !(size == 8 || size == 16 || size >= 40) || !data.len().is_multiple_of(size) {
        return Err(DecodeError::Layout {
            what: "attendance records",
            total: data.len(),
            count: (data.len() / size.max(1)) as u64,
        });
    }
    data.chunks_exact(size).map(decode_record).collect()
}

/// One user of the device's user table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u16,
    pub privilege: u8,
    pub name: String,
    pub card: u32,
    /// The user id (PIN) shown on the device.
    pub user_id: String,
}

/// Decodes a user table of `size`-byte records (28, or 72 for anything else, as pyzk does).
pub fn decode_users(data: &[u8], size: usize) -> Result<Vec<User>, DecodeError> {
    let min = if size == 28 { 28 } else { 72 };
    if size < min || !data.len().is_multiple_of(size) {
        return Err(DecodeError::Layout {
            what: "users",
            total: data.len(),
            count: (data.len() / size.max(1)) as u64,
        });
    }
    Ok(data
        .chunks_exact(size)
        .map(|b| {
            if size == 28 {
                User {
                    uid: u16_at(b, 0),
                    privilege: b[2],
                    name: cstr(&b[8..16]),
                    card: u32_at(b, 16),
                    user_id: u32_at(b, 24).to_string(),
                }
            } else {
                User {
                    uid: u16_at(b, 0),
                    privilege: b[2],
                    name: cstr(&b[11..35]),
                    card: u32_at(b, 35),
                    user_id: cstr(&b[48..72]),
                }
            }
        })
        .collect())
}

/// The figures of CMD_GET_FREE_SIZES.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreeSizes {
    pub users: u32,
    pub fingers: u32,
    pub records: u32,
    pub record_capacity: u32,
}

/// Decodes the GET_FREE_SIZES reply (at least 80 bytes, as pyzk requires).
pub fn decode_sizes(b: &[u8]) -> Result<FreeSizes, DecodeError> {
    if b.len() < 80 {
        return Err(DecodeError::Short {
            what: "free sizes reply",
            len: b.len(),
            expected: 80,
        });
    }
    let i = |n: usize| u32_at(b, n * 4);
    Ok(FreeSizes {
        users: i(4),
        fingers: i(6),
        records: i(8),
        record_capacity: i(16),
    })
}

/// One realtime punch (CMD_REG_EVENT, EF_ATTLOG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The user as the event carries it: a number for 10-, 12- and 14-byte events (the uid on
    /// devices with 8-byte records, the user id on others), the user id string otherwise.
    pub user: String,
    /// True when `user` is the numeric form of a short event (10 or 14 bytes: a u16).
    pub short_id: bool,
    pub verify: u8,
    pub state: u8,
    pub time: NaiveDateTime,
}

/// Decodes the events in one EF_ATTLOG payload (pyzk `live_capture`'s layouts by length).
pub fn decode_events(mut data: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let mut out = Vec::new();
    while data.len() >= 10 {
        let t6 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5]];
        let (ev, used) = match data.len() {
            10 | 14 => (
                Event {
                    user: u16_at(data, 0).to_string(),
                    short_id: true,
                    verify: data[2],
                    state: data[3],
                    time: decode_timehex(t6(&data[4..10]))?,
                },
                data.len(),
            ),
            12 => (
                Event {
                    user: u32_at(data, 0).to_string(),
                    short_id: false,
                    verify: data[4],
                    state: data[5],
                    time: decode_timehex(t6(&data[6..12]))?,
                },
                12,
            ),
            n if n >= 32 => (
                Event {
                    user: cstr(&data[..24]),
                    short_id: false,
                    verify: data[24],
                    state: data[25],
                    time: decode_timehex(t6(&data[26..32]))?,
                },
                match n {
                    32 | 36 | 37 => n,
                    _ => 52.min(n),
                },
            ),
            n => {
                return Err(DecodeError::Short {
                    what: "realtime event",
                    len: n,
                    expected: 32,
                })
            }
        };
        out.push(ev);
        data = &data[used..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn packets_match_the_captured_vectors() {
        assert_eq!(
            encode(CMD_CONNECT, 0, 0, &[]),
            hex("5050827d08000000 e803 17fc 0000 0000")
        );
        assert_eq!(
            encode(CMD_ACK_OK, 0xfb2f, 0, &[]),
            hex("5050827d08000000 d007 fffc 2ffb 0000")
        );
        assert_eq!(
            encode(CMD_EXIT, 0xfb2f, 1, &[]),
            hex("5050827d08000000 e903 e600 2ffb 0100")
        );
    }

    #[test]
    fn checksum_folds_carries_and_adds_an_odd_byte_low() {
        // pyzk's formula (65534 - sum mod 65535, over the header with the previous reply id) equals
        // the standard checksum of the bytes sent
        for (cmd, sess, reply, data) in [
            (
                1503u16,
                0x1234u16,
                7u16,
                vec![1u8, 0x0d, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (1504, 0xffff, 0xfffe, vec![0xff; 9]),
            (11, 1, 2, b"~SerialNumber\0".to_vec()),
        ] {
            let mut sum: u64 = cmd as u64 + sess as u64 + (reply as u64 - 1);
            let mut padded = data.clone();
            if padded.len() % 2 == 1 {
                padded.push(0);
            }
            for w in padded.chunks(2) {
                sum += u16::from_le_bytes([w[0], w[1]]) as u64;
            }
            let pyzk = (65534 - (sum % 65535)) as u16;
            assert_eq!(checksum(cmd, sess, reply, &data), pyzk, "{cmd}");
        }
    }

    #[test]
    fn commkey_matches_pyzk() {
        assert_eq!(commkey(12, 0x45cf, 50).to_vec(), hex("614d323c"));
        assert_eq!(commkey(45, 0x45cf, 50).to_vec(), hex("61c9323c"));
    }

    #[test]
    fn packed_time_round_trips() {
        let t = decode_time(0x2368B36B).unwrap();
        assert_eq!(t.to_string(), "2018-06-25 17:50:35");
        assert_eq!(encode_time(t), 0x2368B36B);
        let t = NaiveDateTime::parse_from_str("2026-03-02 08:59:59", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(decode_time(encode_time(t)).unwrap(), t);
        // day 31 of a 30-day month is packable but not a date
        let bad = encode_time(
            NaiveDateTime::parse_from_str("2026-03-31 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ) + 31 * 86400;
        assert!(matches!(decode_time(bad), Err(DecodeError::Time(_))));
    }

    #[test]
    fn wrapper_rejects_garbage() {
        assert!(matches!(
            wrapper_len(b"GET / HT"),
            Err(DecodeError::Magic(_))
        ));
        let mut w = [0x50, 0x50, 0x82, 0x7d, 0, 0, 0, 0];
        assert_eq!(wrapper_len(&w), Err(DecodeError::Length(0)));
        w[4] = 8;
        assert_eq!(wrapper_len(&w), Ok(8));
        w[7] = 0xff;
        assert!(wrapper_len(&w).is_err());
        assert!(decode_body(&[1, 2, 3]).is_err());
    }

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn records_of_8_16_and_40_bytes_decode() {
        let time = t("2026-03-02 08:59:59");
        let p = encode_time(time).to_le_bytes();
        let r8 = [&[7, 0, 1][..], &p, &[0]].concat();
        let a = decode_record(&r8).unwrap();
        assert_eq!(
            (a.uid, a.user_id.as_str(), a.verify, a.time, a.state),
            (7, "", 1, time, 0)
        );

        let mut r16 = Vec::new();
        r16.extend_from_slice(&1005u32.to_le_bytes());
        r16.extend_from_slice(&p);
        r16.extend_from_slice(&[15, 1, 0, 0]);
        r16.extend_from_slice(&42u32.to_le_bytes());
        let a = decode_record(&r16).unwrap();
        assert_eq!(
            (a.user_id.as_str(), a.verify, a.state, a.workcode),
            ("1005", 15, 1, 42)
        );

        let mut r40 = vec![0u8; 40];
        r40[0] = 3;
        r40[2..6].copy_from_slice(b"A-23");
        r40[26] = 4;
        r40[27..31].copy_from_slice(&p);
        r40[31] = 255;
        let a = decode_record(&r40).unwrap();
        assert_eq!(
            (a.uid, a.user_id.as_str(), a.verify, a.state, a.time),
            (3, "A-23", 4, 255, time)
        );
        // a 24-byte user id without a NUL is taken whole
        r40[2..26].copy_from_slice(&[b'9'; 24]);
        assert_eq!(decode_record(&r40).unwrap().user_id, "9".repeat(24));

        let two = [r40.clone(), r40].concat();
        assert_eq!(decode_records(&two, 40).unwrap().len(), 2);
        assert!(decode_records(&two[..79], 40).is_err());
        assert!(decode_records(&two, 12).is_err());
        assert!(decode_record(&[0; 5]).is_err());
    }

    #[test]
    fn record_size_follows_pyzk() {
        assert_eq!(record_size("log", 80, 10), Ok(8));
        assert_eq!(record_size("log", 400, 10), Ok(40));
        assert_eq!(record_size("log", 490, 10), Ok(49));
        assert!(record_size("log", 81, 10).is_err());
        assert!(record_size("log", 80, 0).is_err());
        assert!(record_size("log", 0, 10).is_err());
    }

    #[test]
    fn users_of_28_and_72_bytes_decode() {
        let mut u28 = vec![0u8; 28];
        u28[0] = 2;
        u28[2] = 14;
        u28[8..13].copy_from_slice(b"Alice");
        u28[16..20].copy_from_slice(&777u32.to_le_bytes());
        u28[24..28].copy_from_slice(&23u32.to_le_bytes());
        let u = &decode_users(&u28, 28).unwrap()[0];
        assert_eq!(
            (
                u.uid,
                u.privilege,
                u.name.as_str(),
                u.card,
                u.user_id.as_str()
            ),
            (2, 14, "Alice", 777, "23")
        );
        let mut u72 = vec![0u8; 72];
        u72[0] = 9;
        u72[11..21].copy_from_slice("张伟 Zhang".as_bytes().get(..10).unwrap());
        u72[35..39].copy_from_slice(&5u32.to_le_bytes());
        u72[48..52].copy_from_slice(b"1005");
        let u = &decode_users(&u72, 72).unwrap()[0];
        assert_eq!((u.uid, u.user_id.as_str(), u.card), (9, "1005", 5));
        assert!(u.name.starts_with("张伟"));
        assert!(decode_users(&u72[..70], 72).is_err());
    }

    #[test]
    fn free_sizes_decode_by_index() {
        let mut b = vec![0u8; 92];
        b[16..20].copy_from_slice(&12u32.to_le_bytes());
        b[32..36].copy_from_slice(&100_000u32.to_le_bytes());
        b[64..68].copy_from_slice(&200_000u32.to_le_bytes());
        let s = decode_sizes(&b).unwrap();
        assert_eq!(
            (s.users, s.records, s.record_capacity),
            (12, 100_000, 200_000)
        );
        assert!(decode_sizes(&b[..79]).is_err());
    }

    #[test]
    fn realtime_events_decode_by_length() {
        // the captured pyzk example: user 4822257, 2018-12-07 19:09:06
        let e = decode_events(&hex("f1944900 00 00 120c07130906")).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].user, "4822257");
        assert_eq!(e[0].time, t("2018-12-07 19:09:06"));
        let mut e32 = vec![0u8; 32];
        e32[..4].copy_from_slice(b"1005");
        e32[24] = 15;
        e32[25] = 1;
        e32[26..32].copy_from_slice(&[26, 3, 2, 8, 59, 59]);
        let e = decode_events(&e32).unwrap();
        assert_eq!(
            (e[0].user.as_str(), e[0].verify, e[0].state, e[0].time),
            ("1005", 15, 1, t("2026-03-02 08:59:59"))
        );
        let mut e52 = e32.clone();
        e52.resize(52, 0);
        assert_eq!(decode_events(&e52).unwrap().len(), 1);
        let e10 = [7, 0, 1, 0, 26, 3, 2, 8, 59, 59];
        let e = decode_events(&e10).unwrap();
        assert!(e[0].short_id);
        assert_eq!(e[0].user, "7");
        assert!(decode_events(&[26, 13, 2, 8, 59, 59, 0, 0, 0, 0]).is_err());
        assert!(decode_events(&[0; 20]).is_err());
    }
}
