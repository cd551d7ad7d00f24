//! The ZKTeco codec (`src/sources/zk/codec.rs`): the TCP wrapper and packet header, the packed times,
//! the 8-, 16- and 40-byte attendance records, the 28- and 72-byte users, realtime events and the
//! free-sizes reply.
//!
//! Input: one byte choosing the decoder, then its bytes.
//!
//! Checked beyond "no panic":
//! - a packet whose checksum is right re-encodes to the very same bytes (any other to the same bytes
//!   but the checksum), and an accepted length is within 8 and `MAX_PACKET`;
//! - a record's fields are the bytes they come from, and its time packs back to the same number
//!   (years 2000 to 2099, what a clock can hold);
//! - a record or user list covers its bytes exactly, record by record as [`decode_record`] reads them;
//! - an event's time is the 6 bytes it came from; a record size times the count is the total;
//! - an error message holds no control character.

#![no_main]

use chrono::{Datelike, NaiveDateTime, Timelike};
use clockbridge::sources::zk::codec::*;
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn error(e: DecodeError) {
    assert_loggable("decode error", &e.to_string());
}

/// A packed time: decoded, it packs back to itself (in the years a clock can hold).
fn check_time(t: u32, time: NaiveDateTime) {
    if time.year() < 2100 {
        assert_eq!(encode_time(time), t, "{time} packs to another number");
    }
}

/// A string field: no NUL, no spaces around it.
fn check_text(s: &str) {
    assert!(!s.contains('\0'), "{s:?}");
    assert_eq!(s, s.trim(), "untrimmed {s:?}");
}

fn packet(data: &[u8]) {
    let Some(wrapper) = data.first_chunk::<8>() else {
        return;
    };
    let len = match wrapper_len(wrapper) {
        Ok(len) => len,
        Err(e) => return error(e),
    };
    assert!((8..=MAX_PACKET).contains(&len), "length {len} accepted");
    let body = &data[8..];
    if body.len() != len {
        if let Err(e) = decode_body(body) {
            error(e);
        }
        return;
    }
    let (h, payload) = decode_body(body).expect("8 bytes or more make a header");
    assert_eq!(payload.len(), len - 8);
    let again = encode(h.command, h.session, h.reply, payload);
    if checksum(h.command, h.session, h.reply, payload) == h.checksum {
        assert_eq!(
            again, data,
            "a packet with a right checksum re-encodes to other bytes"
        );
    } else {
        assert_eq!(again[..10], data[..10]);
        assert_eq!(again[12..], data[12..]);
    }
}

fn record(b: &[u8]) {
    let r = match decode_record(b) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match b.len() {
        8 => {
            assert_eq!(
                (r.uid, r.verify, r.state, r.user_id.as_str(), r.workcode),
                (u16_at(b, 0), b[2], b[7], "", 0)
            );
            check_time(u32_at(b, 3), r.time);
        }
        16 => {
            assert_eq!(r.user_id, u32_at(b, 0).to_string());
            assert_eq!((r.verify, r.state, r.workcode), (b[8], b[9], u32_at(b, 12)));
            check_time(u32_at(b, 4), r.time);
        }
        n => {
            assert!(n >= 40, "a {n}-byte record decoded");
            assert_eq!((r.uid, r.verify, r.state), (u16_at(b, 0), b[26], b[31]));
            check_text(&r.user_id);
            check_time(u32_at(b, 27), r.time);
        }
    }
}

fn records(data: &[u8], size: usize) {
    match decode_records(data, size) {
        Ok(rs) => {
            assert_eq!(rs.len() * size, data.len());
            for (r, b) in rs.iter().zip(data.chunks_exact(size)) {
                assert_eq!(Ok(r), decode_record(b).as_ref());
            }
        }
        Err(e) => error(e),
    }
}

fn users(data: &[u8], size: usize) {
    match decode_users(data, size) {
        Ok(us) => {
            assert_eq!(us.len() * size, data.len());
            for (u, b) in us.iter().zip(data.chunks_exact(size)) {
                assert_eq!((u.uid, u.privilege), (u16_at(b, 0), b[2]));
                check_text(&u.name);
                if size == 28 {
                    assert_eq!(u.user_id, u32_at(b, 24).to_string());
                } else {
                    check_text(&u.user_id);
                }
            }
        }
        Err(e) => error(e),
    }
}

fn events(data: &[u8]) {
    match decode_events(data) {
        Ok(evs) => {
            assert!(evs.len() * 10 <= data.len(), "more events than bytes");
            for e in evs {
                if e.short_id {
                    assert!(e.user.parse::<u16>().is_ok(), "{:?}", e.user);
                } else {
                    check_text(&e.user);
                }
                let t = e.time;
                assert!((2000..2256).contains(&t.year()), "{t}");
                let _ = (t.month(), t.day(), t.hour(), t.minute(), t.second());
            }
        }
        Err(e) => error(e),
    }
}

fn numbers(data: &[u8]) {
    let mut b = [0u8; 18];
    let n = data.len().min(18);
    b[..n].copy_from_slice(&data[..n]);
    let t = u32_at(&b, 0);
    match decode_time(t) {
        Ok(time) => check_time(t, time),
        Err(e) => error(e),
    }
    let six = [b[4], b[5], b[6], b[7], b[8], b[9]];
    match decode_timehex(six) {
        Ok(time) => assert_eq!(
            [
                (time.year() - 2000) as u32,
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ],
            six.map(u32::from)
        ),
        Err(e) => error(e),
    }
    let total = u32_at(&b, 10) as usize;
    let count = u32_at(&b, 14) as u64;
    match record_size("fuzz", total, count) {
        Ok(rs) => assert_eq!(rs as u64 * count, total as u64),
        Err(e) => error(e),
    }
    let key = commkey(t, u16_at(&b, 4), b[6]);
    assert_eq!(key, commkey(t, u16_at(&b, 4), b[6]));
}

/// Record and user sizes: the layouts, and sizes around them.
const SIZES: [usize; 10] = [8, 16, 40, 28, 72, 0, 1, 12, 39, 80];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let what = input.choose(7);
    let size = SIZES[input.choose(SIZES.len())];
    let data = input.rest();
    match what {
        0 => packet(data),
        1 => record(data),
        2 => records(data, size),
        3 => users(data, size),
        4 => match decode_sizes(data) {
            Ok(_) => assert!(data.len() >= 80),
            Err(e) => error(e),
        },
        5 => events(data),
        _ => numbers(data),
    }
});
