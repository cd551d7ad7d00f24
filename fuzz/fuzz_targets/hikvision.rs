//! The Hikvision ISAPI readers (`src/sources/hikvision/`): an `AcsEvent` page (JSON), an alert
//! document (JSON or XML), the alert stream's multipart framing fed in pieces, the `Time` and
//! `DeviceInfo` documents (XML), a user page, and a digest challenge (`WWW-Authenticate`, read by the
//! `digest_auth` crate the client uses).
//!
//! Input: one byte choosing the reader, one byte of split size for the stream, then its bytes.
//!
//! Checked beyond "no panic":
//! - a page's events are as many as its `InfoList`, and a time read back formats to a time that
//!   reads the same;
//! - the multipart reader's parts are each at most `MAX_PART` bytes, and feeding the same bytes in
//!   one piece or in small pieces gives the same parts;
//! - an error message holds no control character.

#![no_main]

use clockbridge::sources::hikvision::isapi::{self, EventTime};
use clockbridge::sources::hikvision::multipart::{MultipartReader, MAX_PART};
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;

fn parts(bytes: &[u8], step: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut r = MultipartReader::new("boundary");
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        r.push(piece);
        loop {
            match r.next_part() {
                Ok(Some(p)) => {
                    assert!(p.body.len() <= MAX_PART);
                    out.push(p.body);
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(out)
}

fn time_round_trip(t: &EventTime) {
    let text = match t {
        EventTime::Offset(t) => t.to_rfc3339(),
        EventTime::Local(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
    };
    assert_eq!(EventTime::parse(&text).as_ref(), Some(t), "{text}");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let which = input.choose(7);
    let step = input.byte() as usize;
    let bytes = input.rest();
    match which {
        0 => match isapi::parse_acs_event_page(bytes) {
            Ok(p) => {
                for e in &p.events {
                    if let Some(t) = &e.time {
                        time_round_trip(t);
                    }
                }
            }
            Err(e) => assert_loggable("page", &e.to_string()),
        },
        1 => match isapi::parse_alert(bytes) {
            Ok(isapi::Alert::Event(e)) => {
                if let Some(t) = &e.time {
                    time_round_trip(t);
                }
            }
            Ok(_) => {}
            Err(e) => assert_loggable("alert", &e.to_string()),
        },
        2 => {
            // the same parts however the bytes arrive (up to the first error)
            let whole = parts(bytes, bytes.len());
            let pieces = parts(bytes, step % 64 + 1);
            if let (Ok(a), Ok(b)) = (&whole, &pieces) {
                assert_eq!(a, b);
            }
            if let Err(e) = whole {
                assert_loggable("multipart", &e);
            }
        }
        3 => {
            if let Err(e) = isapi::parse_time(bytes) {
                assert_loggable("time", &e.to_string());
            }
        }
        4 => {
            if let Err(e) = isapi::parse_device_info(bytes) {
                assert_loggable("device info", &e.to_string());
            }
        }
        5 => {
            if let Err(e) = isapi::parse_user_page(bytes) {
                assert_loggable("users", &e.to_string());
            }
        }
        _ => {
            // what the client hands the parser: a header value that `HeaderValue::to_str` accepts
            // (visible ASCII and tab); digest_auth 0.3.1 panics on some non-ASCII text, which the
            // client therefore never passes it
            if bytes.iter().all(|b| *b == b'\t' || (32..127).contains(b)) {
                let text = String::from_utf8_lossy(bytes);
                let _ = digest_auth::WwwAuthenticateHeader::parse(&text);
            }
        }
    }
});
