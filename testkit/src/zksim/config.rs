//! The simulated device's settings, the faults it can inject, its counters and its start error.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::TimeDelta;
use serde::Serialize;

use super::model::{EventFormat, LayoutError, RecordSize, SimRecord, SimUser, UserSize};
use super::server::TCP_CHUNK;
#[cfg(doc)]
use super::SimHandle;

/// Settings of a simulated device. Most can be changed while it runs, see [`SimHandle`].
#[derive(Clone)]
pub struct SimConfig {
    /// Address to listen on; `127.0.0.1:0` (a free loopback port) by default.
    pub listen: SocketAddr,
    /// Comm key (password); 0 = none. When set, CONNECT is answered with ACK_UNAUTH and every
    /// command but CONNECT and AUTH is refused until CMD_AUTH carries the right hash.
    pub comm_key: u32,
    /// Layout of attendance records.
    pub record_size: RecordSize,
    /// Layout of users.
    pub user_size: UserSize,
    /// Layout of realtime events; `None`: [`EventFormat::for_records`].
    pub event_format: Option<EventFormat>,
    /// The user table.
    pub users: Vec<SimUser>,
    /// The attendance log at start (no events are sent for these).
    pub records: Vec<SimRecord>,
    /// `~SerialNumber`.
    pub serial_number: String,
    /// Device clock minus UTC: the device shows `UTC now + clock_offset` (so `+8h` is a correct
    /// clock in Shanghai, `+8h 30s` one that is 30 s fast there).
    pub clock_offset: TimeDelta,
    /// Most bytes served per chunk request (1504): a client asking for more gets this many, as the
    /// PREPARE_DATA reply announces. pyzk ignores the announcement, so keep ≥ [`TCP_CHUNK`] for it.
    pub max_chunk: usize,
    /// Largest CMD_DATA packet within a chunk; `None`: a chunk goes in one CMD_DATA packet. Real
    /// devices have been seen sending 1008-byte packets. pyzk 0.9 over TCP hangs on a chunk split
    /// into many packets that arrive at once (tried: 1008-byte packets of a 65,472-byte chunk; its
    /// receive recursion waits for bytes it has already consumed), so this is for other clients.
    pub data_packet_max: Option<usize>,
    /// Datasets of at most this many bytes (including the 4-byte size prefix) are answered
    /// directly with one CMD_DATA packet instead of the buffered exchange; 0 = always buffered.
    pub direct_max: usize,
    /// Record capacity in GET_FREE_SIZES.
    pub record_capacity: u32,
    /// User capacity in GET_FREE_SIZES.
    pub user_capacity: u32,
    /// Refuse packets whose checksum is wrong (with ACK_ERROR); on by default.
    pub check_checksums: bool,
    /// Delay before every reply to a request (not before events).
    pub reply_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            comm_key: 0,
            record_size: RecordSize::B40,
            user_size: UserSize::B72,
            event_format: None,
            users: Vec::new(),
            records: Vec::new(),
            serial_number: "CBSIM0000001".to_owned(),
            clock_offset: TimeDelta::zero(),
            max_chunk: TCP_CHUNK,
            data_packet_max: None,
            direct_max: 0,
            record_capacity: 200_000,
            user_capacity: 10_000,
            check_checksums: true,
            reply_delay: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("comm_key", &if self.comm_key == 0 { "none" } else { "***" })
            .field("record_size", &self.record_size)
            .field("user_size", &self.user_size)
            .field("users", &self.users.len())
            .field("records", &self.records.len())
            .field("serial_number", &self.serial_number)
            .field("max_chunk", &self.max_chunk)
            .finish_non_exhaustive()
    }
}

/// A transfer broken in the middle of a data chunk of an attendance log read (see
/// [`SimHandle::drop_mid_chunk`] and [`SimHandle::stall_mid_chunk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkDrop {
    /// Which chunk of a read (1 = the first; a direct CMD_DATA reply is chunk 1): the simulator
    /// sends PREPARE_DATA and half of the chunk's first CMD_DATA packet, then breaks off.
    pub chunk: u32,
    /// `false`: only the next read that reaches this chunk; `true`: every such read until cleared.
    pub sticky: bool,
    /// `false`: close the connection; `true`: keep it open and send nothing more (the client's
    /// chunk timeout must fire), until the client closes it or the simulator stops.
    pub stall: bool,
}

/// What the simulator has done, for assertions. Read with [`SimHandle::counters`], await with
/// [`SimHandle::wait_counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimCounters {
    /// TCP connections accepted (pyzk's probe connection included).
    pub connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// CMD_CONNECT requests (sessions opened).
    pub sessions: u64,
    /// CMD_AUTH requests accepted.
    pub auths: u64,
    /// CMD_AUTH requests refused (wrong comm key).
    pub auth_failures: u64,
    /// Buffered (or direct) reads of the attendance log started.
    pub attendance_reads: u64,
    /// Buffered (or direct) reads of the user table started.
    pub user_reads: u64,
    /// Data chunks served completely (replies to 1504, and direct CMD_DATA replies).
    pub chunks: u64,
    /// CMD_FREE_DATA requests.
    pub frees: u64,
    /// Log clears (CMD_CLEAR_ATTLOG and CMD_CLEAR_DATA requests, and [`SimHandle::clear_records`]).
    pub clears: u64,
    /// CMD_DISABLEDEVICE requests.
    pub disables: u64,
    /// CMD_ENABLEDEVICE requests.
    pub enables: u64,
    /// CMD_SET_TIME requests accepted.
    pub set_times: u64,
    /// CMD_EXIT requests.
    pub exits: u64,
    /// Realtime events written to registered sessions.
    pub events_sent: u64,
    /// Sessions registered for EF_ATTLOG events now.
    pub event_sessions: u64,
    /// Requests answered ACK_UNKNOWN (not supported).
    pub unsupported: u64,
    /// Requests refused with ACK_ERROR or ACK_UNAUTH (bad arguments, no buffer, not connected or
    /// not authenticated, wrong session id).
    pub refused: u64,
    /// Packets with a bad wrapper, length or checksum.
    pub bad_packets: u64,
    /// Connections dropped by a [`ChunkDrop`] fault.
    pub injected_drops: u64,
}

/// Failure to start a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address cannot be bound.
    #[error("zk simulator: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A user or record does not fit the configured layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}
