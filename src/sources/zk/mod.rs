//! ZKTeco terminals (`kind = "zk"`), read over their binary protocol (TCP port 4370): the packet codec
//! ([`codec`]: framing, checksum, comm key, packed times, record layouts), an async client on tokio
//! ([`client`]) and the source task ([`source`]).
//!
//! It exists so that clockbridge can read ZKTeco terminals directly, incrementally and fast, instead of
//! through a vendor tool. The protocol facts the code relies on are written down, with their public
//! sources, in `docs/zkteco-protocol.md`.
//!
//! Guarantees:
//! - Bad input from a device (a wrong magic, an impossible length, a truncated record, a date that does
//!   not exist) is an error value, never a panic, and never a record with an invented field.
//! - Every request and every chunk of a bulk read has a timeout ([`client::Timeouts`]).
//! - The comm key never appears in an error message, a log line or a `Debug` output.

pub mod client;
pub mod codec;
pub mod source;

pub use client::{Timeouts, ZkClient, ZkError};
pub use codec::{AttRecord, Event, FreeSizes, User};
pub use source::*;
