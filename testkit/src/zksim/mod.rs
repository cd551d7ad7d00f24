//! A simulated ZKTeco terminal speaking the ZK binary protocol over TCP (port 4370 on real devices).
//!
//! # Why it exists
//! ZKTeco terminals are polled over a binary protocol whose behaviour is documented only by public
//! clients (pyzk, node-zklib) and captures. clockbridge's client (`clockbridge::zk`) must be
//! tested on logs of every record size, comm keys, realtime events, records appearing between polls
//! and broken transfers, none of which a real terminal produces on demand. This module is the
//! device side, written independently of the client (no shared codec), and proven faithful by the
//! product's integration tests in `tests/zk_pyzk.rs`, which run the public Python client pyzk 0.9
//! against it.
//!
//! # What it speaks
//! TCP framing (`50 50 82 7d` + u32 length), the ones'-complement checksum (wrong ones are refused
//! with ACK_ERROR), session ids (CONNECT) and echoed reply ids, CMD_AUTH with the comm-key hash,
//! CMD_OPTIONS_RRQ/WRQ, CMD_GET_FREE_SIZES, CMD_GET_TIME/SET_TIME (packed time), CMD_GET_VERSION,
//! CMD_DISABLEDEVICE/ENABLEDEVICE, the buffered read (1503 → ACK_OK with the size, then per 1504:
//! PREPARE_DATA, CMD_DATA packet(s), ACK_OK, then CMD_FREE_DATA) of the attendance log (8-, 16- or
//! 40-byte records) and of the user table (28- or 72-byte users), or a direct CMD_DATA reply for
//! small datasets when configured, CMD_CLEAR_ATTLOG, CMD_CLEAR_DATA, CMD_REG_EVENT with EF_ATTLOG
//! events pushed to registered sessions, and CMD_EXIT. Anything else is answered CMD_ACK_UNKNOWN; a
//! bad argument ACK_ERROR; a command before CONNECT/AUTH, or with another session id, ACK_UNAUTH.
//! A client's ACK_OK (how pyzk acknowledges events) is never answered. Each packet goes out in its
//! own write with TCP_NODELAY (node-zklib needs it).
//!
//! # Guarantees
//! - Never panics on input: a stream that is not ZK framing (bad wrapper, absurd length) closes that
//!   connection, counted in [`SimCounters::bad_packets`]; other connections are unaffected.
//! - A chunk read returns the records stored when its read (1503) began: records added later
//!   appear at the next read, and in an event to every session registered for them.
//! - [`start`] binds `127.0.0.1:0` unless told otherwise; it has no security and belongs on a test
//!   host only. It stops on [`SimHandle::shutdown`] or when the last handle is dropped.
//!
//! # Faults and observation
//! [`SimHandle::drop_mid_chunk`] closes the connection in the middle of the N-th data chunk of a
//! log read (once or sticky), [`SimHandle::stall_mid_chunk`] leaves it open and silent there
//! instead, [`SimHandle::set_reply_delay`] slows every reply, and
//! [`SimCounters`] (awaitable with [`SimHandle::wait_counters`]) counts connections, sessions,
//! authentications, reads, chunks, clears, disable/enable and events.

mod codec;
mod config;
mod conn;
mod handle;
mod model;
mod server;
#[cfg(test)]
mod tests;

pub use codec::{comm_key_hash, decode_time, encode_time};
pub use config::{ChunkDrop, SimConfig, SimCounters, SimError};
pub use handle::SimHandle;
pub use model::{
    generate_records, generate_users, EventFormat, LayoutError, RecordSize, SimRecord, SimUser,
    UserSize,
};
pub use server::{start, MAX_REQUEST, TCP_CHUNK};
