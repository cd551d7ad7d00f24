//! What a ZKTeco push terminal sends to the `[adms]` listener (`src/sources/adms/protocol.rs`): the
//! query string, then the body of an ATTLOG push, an OPERLOG push, an options body, a `devicecmd`
//! result body, or the `INFO=` of a poll.
//!
//! Input: one byte choosing what the body is; then the query string up to the first LF; the rest is
//! the body.
//!
//! Checked beyond "no panic":
//! - a body reads the same with LF and with CRLF line ends (terminals send either);
//! - every line of an ATTLOG body is a punch or an error, and a punch has a PIN without spaces or
//!   control characters;
//! - user names come with a non-empty PIN without control characters; command results all have an id;
//! - what `status` shows of `INFO` (firmware, IP) has no control character.

#![no_main]

use clockbridge::sources::adms::protocol::{self, Route};
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;

fn crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 16);
    for &b in body {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn attlog(body: &[u8]) -> Vec<Result<(String, String), String>> {
    protocol::lines(body)
        .map(|(_, l)| {
            protocol::parse_attlog_line("fuzz", l)
                .map(|p| (p.device_user_id, p.local_time.to_string()))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let what = input.choose(5);
    let rest = input.rest();
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let q = protocol::parse_query(&String::from_utf8_lossy(query));
    for m in ["GET", "POST"] {
        for p in ["/iclock/cdata", "/iclock/getrequest", "/iclock/devicecmd", "/x"] {
            let _ = protocol::route(m, p, &q);
        }
    }
    if let Some(info) = &q.info {
        let i = protocol::parse_info_param(info);
        for v in [&i.firmware, &i.ip].into_iter().flatten() {
            assert_loggable("INFO value", v);
        }
    }
    let lines = 1 + body.iter().filter(|&&b| b == b'\n').count();
    match what {
        0 => {
            let lf = attlog(body);
            assert!(lf.len() <= lines);
            if !body.contains(&b'\r') {
                assert_eq!(attlog(&crlf(body)), lf, "CRLF reads differently");
            }
            for (pin, _) in lf.iter().flatten() {
                assert!(!pin.is_empty() && !pin.chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
        1 => {
            let op = protocol::parse_operlog(body);
            assert!(op.users.len() as u64 + op.oplogs + op.templates + op.unknown <= lines as u64);
            for (pin, _) in &op.users {
                assert!(!pin.is_empty() && !pin.chars().any(char::is_control), "{pin:?}");
            }
            if !body.contains(&b'\r') {
                assert_eq!(protocol::parse_operlog(&crlf(body)), op);
            }
        }
        2 => {
            let i = protocol::parse_options(body);
            for v in [&i.firmware, &i.ip, &i.device_name].into_iter().flatten() {
                assert_loggable("options value", v);
            }
        }
        3 => {
            for r in protocol::parse_cmd_results(body) {
                assert!(!r.id.is_empty());
            }
        }
        _ => {
            // the handshake reply for whatever SN came: one option per line, never a CR
            let sn = q.sn.as_deref().unwrap_or("");
            let reply = protocol::handshake_reply(&protocol::Handshake {
                sn,
                att_stamp: q.stamp.as_deref(),
                op_stamp: None,
                error_delay_secs: 30,
                delay_secs: 10,
                utc_offset_secs: i32::from(body.first().copied().unwrap_or(0)) * 900 - 43_200,
                realtime: true,
            });
            assert!(reply.starts_with("GET OPTION FROM: "));
            let _ = Route::Handshake;
        }
    }
});
