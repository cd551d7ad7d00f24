//! A simulated ZKTeco terminal that pushes over HTTP (the "Attendance PUSH" / ADMS / iclock
//! protocol), the client side of `clockbridge::sources::adms`.
//!
//! # Why it exists
//! Push terminals dial the server; their behaviour (when they re-send, how they back off, what a
//! command does) is documented only by the vendor's protocol document and the traffic others
//! captured. The product's tests need a terminal that pushes a day's log after an outage, re-sends
//! what got no `OK`, answers commands and sends user names in GB18030, none of which a real terminal
//! does on demand. It is written independently of the server: its HTTP is its own, hand-written
//! like small firmware's ([`client`]), and what it sends and accepts is checked against the same
//! examples from the vendor document and from a real terminal's captured traffic as the server's
//! parsing is (`tests/fixtures/adms/`, in this module's tests).
//!
//! # What it does ([`SimTerminal`])
//! - Handshake: `GET /iclock/cdata?SN=..&options=all&pushver=2.4.1&language=69`; its reply must
//!   start `GET OPTION FROM`; `Delay` and `ErrorDelay` are taken from it (unless overridden).
//! - OPERLOG: its users as `USER PIN=..\tName=..` lines, in UTF-8 or GB18030.
//! - ATTLOG: the log from the first record not answered `OK`, in batches of `max_batch` lines
//!   (CRLF by default), `Stamp=` rising with the log; a punch added is pushed at once (realtime).
//!   A push that gets no `OK` (non-200, no reply, a dropped connection) is kept and sent again
//!   after `ErrorDelay`, after a new handshake; a 413 halves the batch.
//! - `getrequest` every `Delay` with `INFO=firmware,users,0,records,ip,...`; commands
//!   `C:<id>:<cmd>` run and their results posted to `devicecmd` in one body, one per line:
//!   `DATA QUERY ATTLOG` (the range's records pushed again from its log, Return=-1 when none),
//!   `VERIFY SUM ATTLOG` (`AttlogSum=`), `INFO` (an options body), `CHECK`; anything else -1002.
//!
//! # Guarantees
//! It talks only to the address it is given (tests use loopback), stops on [`SimTerminal::stop`]
//! or when dropped, and never panics on a reply.

pub mod client;
mod terminal;
#[cfg(test)]
mod tests;

pub use client::{request, HttpError, Reply};
pub use terminal::{SimConfig, SimCounters, SimRecord, SimTerminal, SimUser};

/// `n` records spread over a day from `day` 07:00 on, users `pin_base..pin_base+97`, one every
/// second (distinct punches).
pub fn generate_records(day: chrono::NaiveDate, n: usize, pin_base: u32) -> Vec<SimRecord> {
    let start = day.and_hms_opt(7, 0, 0).unwrap_or_default();
    (0..n)
        .map(|i| SimRecord {
            pin: (pin_base + (i % 97) as u32).to_string(),
            time: start + chrono::Duration::seconds(i as i64),
            status: (i % 2) as u8,
            verify: 15,
        })
        .collect()
}
