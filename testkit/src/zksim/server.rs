//! The simulated device: a TCP listener, one task per connection, and the handle tests drive it by.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chrono::{NaiveDateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::codec::{self, cmd, Packet, Top};
use super::model::{EventFormat, Layout, LayoutError, RecordSize, SimRecord, SimUser, UserSize};

/// The chunk size both public clients ask for over TCP (0xFFC0).
pub const TCP_CHUNK: usize = 0xffc0;
/// Largest request packet accepted (header + data); a bigger announced length closes the connection.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Realtime events buffered per connection before the oldest are lost.
const EVENT_BACKLOG: usize = 65_536;
/// How long connections may take to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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

struct State {
    comm_key: u32,
    record_size: RecordSize,
    user_size: UserSize,
    event_format: EventFormat,
    users: Vec<SimUser>,
    records: Vec<SimRecord>,
    clock_offset: TimeDelta,
    options: BTreeMap<String, String>,
    max_chunk: usize,
    data_packet_max: Option<usize>,
    direct_max: usize,
    record_capacity: u32,
    user_capacity: u32,
    check_checksums: bool,
    reply_delay: Duration,
    fault: Option<ChunkDrop>,
    enabled: bool,
}

impl State {
    fn layout(&self) -> Layout<'_> {
        Layout {
            records: self.record_size,
            users: self.user_size,
            events: self.event_format,
            table: &self.users,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    counters: watch::Sender<SimCounters>,
    events: broadcast::Sender<Arc<Vec<u8>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut SimCounters)) {
        self.counters.send_modify(f);
    }
}

/// Owned by the handles: the last one dropped cancels `stop` (through the guard).
struct Control {
    addr: SocketAddr,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to a running simulated device. Cheap to clone; the device stops on
/// [`SimHandle::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    ctl: Arc<Control>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.ctl.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a simulated device listening on `cfg.listen` (loopback, free port by default).
pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
    let event_format = cfg
        .event_format
        .unwrap_or_else(|| EventFormat::for_records(cfg.record_size));
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let state = State {
        comm_key: cfg.comm_key,
        record_size: cfg.record_size,
        user_size: cfg.user_size,
        event_format,
        users: cfg.users,
        records: cfg.records,
        clock_offset: cfg.clock_offset,
        options: default_options(&cfg.serial_number, addr),
        max_chunk: cfg.max_chunk.max(1),
        data_packet_max: cfg.data_packet_max.map(|n| n.max(1)),
        direct_max: cfg.direct_max,
        record_capacity: cfg.record_capacity,
        user_capacity: cfg.user_capacity,
        check_checksums: cfg.check_checksums,
        reply_delay: cfg.reply_delay,
        fault: None,
        enabled: true,
    };
    state.layout().validate(&state.records)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        counters: watch::Sender::new(SimCounters::default()),
        events: broadcast::Sender::new(EVENT_BACKLOG),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
    debug!(%addr, "zk simulator listening");
    Ok(SimHandle {
        shared,
        ctl: Arc::new(Control {
            addr,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            task: Mutex::new(Some(task)),
        }),
    })
}

fn default_options(serial: &str, addr: SocketAddr) -> BTreeMap<String, String> {
    [
        ("~SerialNumber", serial),
        ("~Platform", "ZMM220_TFT"),
        ("~ZKFPVersion", "10"),
        ("~DeviceName", "clockbridge-zksim"),
        ("~OEMVendor", "clockbridge"),
        ("~ProductTime", "2024-01-01 00:00:00"),
        ("~ExtendFmt", "0"),
        ("~UserExtFmt", "0"),
        ("~PIN2Width", "9"),
        ("~IsOnlyRFMachine", "0"),
        ("MAC", "00:17:61:c0:ff:ee"),
        ("FaceFunOn", "0"),
        ("ZKFaceVersion", "0"),
        ("CompatOldFirmware", "0"),
        ("NetMask", "255.255.255.0"),
        ("GATEIPAddress", "0.0.0.0"),
        ("WorkCode", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("IPAddress".to_owned(), addr.ip().to_string())])
    .collect()
}

impl SimHandle {
    /// The address the device listens on.
    pub fn addr(&self) -> SocketAddr {
        self.ctl.addr
    }

    /// Stops accepting, closes every connection and waits (briefly) for their tasks to end.
    pub async fn shutdown(self) {
        self.ctl.stop.cancel();
        let task = self
            .ctl
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Appends records to the log: the next read returns them, and every session registered for
    /// EF_ATTLOG receives one realtime event per record, in order. Nothing is added if any record
    /// does not fit the layout.
    pub fn add_records(
        &self,
        records: impl IntoIterator<Item = SimRecord>,
    ) -> Result<(), LayoutError> {
        let records: Vec<SimRecord> = records.into_iter().collect();
        let events = {
            let mut st = self.shared.lock();
            let layout = st.layout();
            layout.validate(&records)?;
            let events = records
                .iter()
                .map(|r| layout.encode_event(r))
                .collect::<Result<Vec<_>, _>>()?;
            st.records.extend(records);
            events
        };
        for e in events {
            // no receiver (no connection): nothing to deliver
            let _ = self.shared.events.send(Arc::new(e));
        }
        Ok(())
    }

    /// The attendance log as stored now.
    pub fn records(&self) -> Vec<SimRecord> {
        self.shared.lock().records.clone()
    }

    /// Number of records in the log.
    pub fn record_count(&self) -> usize {
        self.shared.lock().records.len()
    }

    /// Empties the attendance log (as if cleared on the device's keypad); counted in `clears`.
    pub fn clear_records(&self) {
        self.shared.lock().records.clear();
        self.shared.count(|c| c.clears += 1);
    }

    /// Replaces the user table. Refused (nothing changed) if a user, or a stored record, no longer
    /// fits the layout (8-byte records resolve their uid through the table).
    pub fn set_users(&self, users: Vec<SimUser>) -> Result<(), LayoutError> {
        let mut st = self.shared.lock();
        let layout = Layout {
            table: &users,
            ..st.layout()
        };
        layout.validate(&st.records)?;
        st.users = users;
        Ok(())
    }

    /// The user table.
    pub fn users(&self) -> Vec<SimUser> {
        self.shared.lock().users.clone()
    }

    /// Sets the device clock to `UTC now + offset` (see [`SimConfig::clock_offset`]).
    pub fn set_clock_offset(&self, offset: TimeDelta) {
        self.shared.lock().clock_offset = offset;
    }

    /// Sets the device clock so that it shows `t` now (and runs on from there).
    pub fn set_device_time(&self, t: NaiveDateTime) {
        self.shared.lock().clock_offset = t - Utc::now().naive_utc();
    }

    /// The time the device's clock shows now.
    pub fn device_time(&self) -> NaiveDateTime {
        Utc::now().naive_utc() + self.shared.lock().clock_offset
    }

    /// Changes `~SerialNumber` (as if another device took this address).
    pub fn set_serial_number(&self, serial: &str) {
        self.set_option("~SerialNumber", serial);
    }

    /// Sets an option returned by CMD_OPTIONS_RRQ (`key` as the client sends it, e.g. `~Platform`).
    pub fn set_option(&self, key: &str, value: &str) {
        self.shared
            .lock()
            .options
            .insert(key.to_owned(), value.to_owned());
    }

    /// An option's value.
    pub fn option(&self, key: &str) -> Option<String> {
        self.shared.lock().options.get(key).cloned()
    }

    /// Changes the comm key for sessions opened from now on (0 = none).
    pub fn set_comm_key(&self, key: u32) {
        self.shared.lock().comm_key = key;
    }

    /// Drops the connection in the middle of the `chunk`-th data chunk of attendance log reads:
    /// of the next one only, or of every one while `sticky`. Replaces any previous fault.
    pub fn drop_mid_chunk(&self, chunk: u32, sticky: bool) {
        self.shared.lock().fault = Some(ChunkDrop {
            chunk,
            sticky,
            stall: false,
        });
    }

    /// Like [`SimHandle::drop_mid_chunk`], but the connection stays open and silent after half a
    /// packet (to exercise a client's per-chunk timeout). Counted in `injected_drops` too.
    pub fn stall_mid_chunk(&self, chunk: u32, sticky: bool) {
        self.shared.lock().fault = Some(ChunkDrop {
            chunk,
            sticky,
            stall: true,
        });
    }

    /// Removes the chunk fault (drop or stall).
    pub fn clear_faults(&self) {
        self.shared.lock().fault = None;
    }

    /// Delays every reply to a request by `delay` (0 = none); events are not delayed.
    pub fn set_reply_delay(&self, delay: Duration) {
        self.shared.lock().reply_delay = delay;
    }

    /// Sets the most bytes served per chunk request (see [`SimConfig::max_chunk`]).
    pub fn set_max_chunk(&self, bytes: usize) {
        self.shared.lock().max_chunk = bytes.max(1);
    }

    /// Whether the device is enabled (not locked by CMD_DISABLEDEVICE).
    pub fn is_enabled(&self) -> bool {
        self.shared.lock().enabled
    }

    /// The counters now.
    pub fn counters(&self) -> SimCounters {
        self.shared.counters.borrow().clone()
    }

    /// Waits until `pred` holds for the counters; `Ok` with them, or `Err` with the last ones seen
    /// after `timeout`.
    pub async fn wait_counters(
        &self,
        timeout: Duration,
        pred: impl FnMut(&SimCounters) -> bool,
    ) -> Result<SimCounters, SimCounters> {
        let mut rx = self.shared.counters.subscribe();
        let seen = match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
            Ok(Ok(c)) => Some(c.clone()),
            _ => None,
        };
        seen.ok_or_else(|| self.counters())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.count(|c| {
                        c.connections += 1;
                        c.open_connections += 1;
                    });
                    let conn = Conn::new(stream, shared.clone(), stop.clone());
                    conns.spawn(async move {
                        conn.run().await;
                        debug!(%peer, "zk simulator: connection closed");
                    });
                }
                Err(e) => {
                    debug!(error = %e, "zk simulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

/// Which table a buffer holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Attendance,
    Users,
    Templates,
}

struct Buffer {
    table: Table,
    data: Vec<u8>,
    /// Chunk requests served from it so far.
    chunks: u32,
}

enum Next {
    Continue,
    Close,
}

struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    stop: CancellationToken,
    events: broadcast::Receiver<Arc<Vec<u8>>>,
    session: u16,
    connected: bool,
    authed: bool,
    registered: bool,
    buffer: Option<Buffer>,
}

impl Conn {
    fn new(stream: TcpStream, shared: Arc<Shared>, stop: CancellationToken) -> Conn {
        let events = shared.events.subscribe();
        Conn {
            stream,
            shared,
            stop,
            events,
            session: 0,
            connected: false,
            authed: false,
            registered: false,
            buffer: None,
        }
    }

    async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(4096);
        let stop = self.stop.clone();
        'conn: loop {
            loop {
                match take_frame(&mut buf) {
                    Ok(Some(p)) => match self.handle(p).await {
                        Ok(Next::Continue) => {}
                        Ok(Next::Close) | Err(_) => break 'conn,
                    },
                    Ok(None) => break,
                    Err(why) => {
                        debug!(why, "zk simulator: bad packet, closing the connection");
                        self.shared.count(|c| c.bad_packets += 1);
                        break 'conn;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                r = self.stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                ev = self.events.recv() => match ev {
                    Ok(payload) if self.registered => {
                        let p = codec::encode_packet(cmd::REG_EVENT, codec::EF_ATTLOG as u16, 0, &payload);
                        if self.stream.write_all(&p).await.is_err() {
                            break;
                        }
                        self.shared.count(|c| c.events_sent += 1);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let registered = self.registered;
        self.shared.count(|c| {
            c.open_connections -= 1;
            if registered {
                c.event_sessions -= 1;
            }
        });
    }

    async fn send(&mut self, command: u16, reply: u16, data: &[u8]) -> std::io::Result<()> {
        let p = codec::encode_packet(command, self.session, reply, data);
        self.stream.write_all(&p).await
    }

    async fn refuse(&mut self, code: u16, reply: u16) -> std::io::Result<Next> {
        self.shared.count(|c| c.refused += 1);
        self.send(code, reply, &[]).await?;
        Ok(Next::Continue)
    }

    async fn ok(&mut self, reply: u16, data: &[u8]) -> std::io::Result<Next> {
        self.send(cmd::ACK_OK, reply, data).await?;
        Ok(Next::Continue)
    }

    fn set_registered(&mut self, on: bool) {
        if on != self.registered {
            self.registered = on;
            self.shared.count(|c| {
                if on {
                    c.event_sessions += 1
                } else {
                    c.event_sessions -= 1
                }
            });
        }
    }

    async fn handle(&mut self, p: Packet) -> std::io::Result<Next> {
        // a client's ACK_OK acknowledges an event: never answered (a reply would shift its ids)
        if p.command == cmd::ACK_OK {
            return Ok(Next::Continue);
        }
        let (delay, check) = {
            let st = self.shared.lock();
            (st.reply_delay, st.check_checksums)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let r = p.reply;
        if check && !p.checksum_ok() {
            self.shared.count(|c| c.bad_packets += 1);
            self.send(cmd::ACK_ERROR, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if p.command == cmd::CONNECT {
            self.session = loop {
                let s: u16 = rand::random();
                if s != 0 {
                    break s;
                }
            };
            self.connected = true;
            self.authed = self.shared.lock().comm_key == 0;
            self.buffer = None;
            self.set_registered(false);
            self.shared.count(|c| c.sessions += 1);
            let code = if self.authed {
                cmd::ACK_OK
            } else {
                cmd::ACK_UNAUTH
            };
            self.send(code, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if !self.connected || p.session != self.session {
            return self.refuse(cmd::ACK_UNAUTH, r).await;
        }
        if p.command == cmd::AUTH {
            let key = self.shared.lock().comm_key;
            if key == 0 || codec::comm_key_matches(key, self.session, &p.data) {
                self.authed = true;
                self.shared.count(|c| c.auths += 1);
                return self.ok(r, &[]).await;
            }
            self.shared.count(|c| c.auth_failures += 1);
            self.send(cmd::ACK_UNAUTH, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if !self.authed {
            return self.refuse(cmd::ACK_UNAUTH, r).await;
        }
        match p.command {
            cmd::EXIT => {
                self.shared.count(|c| c.exits += 1);
                self.send(cmd::ACK_OK, r, &[]).await?;
                let _ = self.stream.shutdown().await;
                Ok(Next::Close)
            }
            cmd::ENABLEDEVICE | cmd::DISABLEDEVICE => {
                let on = p.command == cmd::ENABLEDEVICE;
                self.shared.lock().enabled = on;
                self.shared
                    .count(|c| if on { c.enables += 1 } else { c.disables += 1 });
                self.ok(r, &[]).await
            }
            cmd::GET_FREE_SIZES => {
                let data = {
                    let st = self.shared.lock();
                    codec::free_sizes(&codec::FreeSizes {
                        users: st.users.len() as u32,
                        records: st.records.len() as u32,
                        user_capacity: st.user_capacity,
                        record_capacity: st.record_capacity,
                        finger_capacity: 3000,
                    })
                };
                self.ok(r, &data).await
            }
            cmd::OPTIONS_RRQ => {
                let key_bytes = p.data.split(|b| *b == 0).next().unwrap_or(&[]);
                let key = String::from_utf8_lossy(key_bytes).into_owned();
                let value = self.shared.lock().options.get(&key).cloned();
                match value {
                    Some(v) => self.ok(r, format!("{key}={v}\0").as_bytes()).await,
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::OPTIONS_WRQ => {
                let text = p.data.split(|b| *b == 0).next().unwrap_or(&[]);
                let text = String::from_utf8_lossy(text);
                match text.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        self.shared
                            .lock()
                            .options
                            .insert(k.to_owned(), v.to_owned());
                        self.ok(r, &[]).await
                    }
                    _ => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::GET_VERSION => self.ok(r, b"Ver 6.60 Apr 28 2017\0").await,
            cmd::GET_PINWIDTH => self.ok(r, &[9]).await,
            cmd::GET_TIME => {
                let now = Utc::now().naive_utc() + self.shared.lock().clock_offset;
                match codec::encode_time(now) {
                    Some(t) => self.ok(r, &t.to_le_bytes()).await,
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::SET_TIME => {
                let t = p
                    .data
                    .get(..4)
                    .and_then(|b| codec::decode_time(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .filter(|t| codec::encode_time(*t).is_some());
                match t {
                    Some(t) => {
                        self.shared.lock().clock_offset = t - Utc::now().naive_utc();
                        self.shared.count(|c| c.set_times += 1);
                        self.ok(r, &[]).await
                    }
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::REG_EVENT => {
                let mut flags = [0u8; 4];
                let n = p.data.len().min(4);
                flags[..n].copy_from_slice(&p.data[..n]);
                self.set_registered(u32::from_le_bytes(flags) & codec::EF_ATTLOG != 0);
                self.ok(r, &[]).await
            }
            cmd::STARTVERIFY | cmd::CANCELCAPTURE | cmd::REFRESHDATA => self.ok(r, &[]).await,
            cmd::CLEAR_ATTLOG | cmd::CLEAR_DATA => {
                {
                    let mut st = self.shared.lock();
                    st.records.clear();
                    if p.command == cmd::CLEAR_DATA {
                        st.users.clear();
                    }
                }
                self.shared.count(|c| c.clears += 1);
                self.ok(r, &[]).await
            }
            cmd::PREPARE_BUFFER => self.prepare_buffer(&p).await,
            cmd::READ_BUFFER => self.read_buffer(&p).await,
            cmd::FREE_DATA => {
                self.buffer = None;
                self.shared.count(|c| c.frees += 1);
                self.ok(r, &[]).await
            }
            _ => {
                self.shared.count(|c| c.unsupported += 1);
                self.send(cmd::ACK_UNKNOWN, r, &[]).await?;
                Ok(Next::Continue)
            }
        }
    }

    async fn prepare_buffer(&mut self, p: &Packet) -> std::io::Result<Next> {
        let r = p.reply;
        let Some((what, _fct, _ext)) = codec::parse_buffer_request(&p.data) else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        let table = match what {
            cmd::ATTLOG_RRQ => Table::Attendance,
            cmd::USERTEMP_RRQ => Table::Users,
            cmd::DB_RRQ => Table::Templates,
            _ => return self.refuse(cmd::ACK_ERROR, r).await,
        };
        let (data, direct_max) = {
            let st = self.shared.lock();
            let layout = st.layout();
            let data = match table {
                // stored records and users were validated when they were added
                Table::Attendance => layout.attendance_dataset(&st.records),
                Table::Users => layout.user_dataset(),
                Table::Templates => Ok(vec![0; 4]),
            };
            (data, st.direct_max)
        };
        let Ok(data) = data else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        self.shared.count(|c| match table {
            Table::Attendance => c.attendance_reads += 1,
            Table::Users => c.user_reads += 1,
            Table::Templates => {}
        });
        if data.len() <= direct_max {
            if let Some(f) = self.take_fault_for(table, 1) {
                let p = codec::encode_packet(cmd::DATA, self.session, r, &data);
                return self.drop_mid(&p, f).await;
            }
            self.send(cmd::DATA, r, &data).await?;
            self.shared.count(|c| c.chunks += 1);
            return Ok(Next::Continue);
        }
        let ready = codec::buffer_ready(data.len());
        self.buffer = Some(Buffer {
            table,
            data,
            chunks: 0,
        });
        self.ok(r, &ready).await
    }

    fn take_fault_for(&self, table: Table, n: u32) -> Option<ChunkDrop> {
        (table == Table::Attendance)
            .then(|| self.take_fault(n))
            .flatten()
    }

    /// The chunk fault that fires for chunk `n` of an attendance read, if any (consumed unless
    /// sticky).
    fn take_fault(&self, n: u32) -> Option<ChunkDrop> {
        let mut st = self.shared.lock();
        match st.fault {
            Some(f) if f.chunk == n => {
                if !f.sticky {
                    st.fault = None;
                }
                Some(f)
            }
            _ => None,
        }
    }

    /// Writes half of `packet`, then closes the connection, or (stall) waits for the client to
    /// close it, discarding what it sends.
    async fn drop_mid(&mut self, packet: &[u8], fault: ChunkDrop) -> std::io::Result<Next> {
        self.shared.count(|c| c.injected_drops += 1);
        let half = packet.len() / 2;
        self.stream.write_all(&packet[..half]).await?;
        self.stream.flush().await?;
        if fault.stall {
            let stop = self.stop.clone();
            let mut sink = [0u8; 4096];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = self.stream.read(&mut sink) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
        Ok(Next::Close)
    }

    async fn read_buffer(&mut self, p: &Packet) -> std::io::Result<Next> {
        let r = p.reply;
        let Some((start, len)) = codec::parse_chunk_request(&p.data) else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        let (max_chunk, packet_max) = {
            let st = self.shared.lock();
            (st.max_chunk, st.data_packet_max)
        };
        let Some(buf) = self.buffer.as_mut() else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        if len == 0 || start >= buf.data.len() {
            return self.refuse(cmd::ACK_ERROR, r).await;
        }
        buf.chunks += 1;
        let n = len.min(max_chunk).min(buf.data.len() - start);
        let packet_len = packet_max.unwrap_or(n).min(n);
        let (chunk_no, table) = (buf.chunks, buf.table);
        // the chunk is copied so the buffer is not borrowed across the writes
        let chunk = buf.data[start..start + n].to_vec();
        let mut prepare = Vec::with_capacity(8);
        prepare.extend_from_slice(&(n as u32).to_le_bytes());
        prepare.extend_from_slice(&(packet_len as u32).to_le_bytes());
        self.send(cmd::PREPARE_DATA, r, &prepare).await?;
        if let Some(f) = self.take_fault_for(table, chunk_no) {
            let first = codec::encode_packet(cmd::DATA, self.session, r, &chunk[..packet_len]);
            return self.drop_mid(&first, f).await;
        }
        for piece in chunk.chunks(packet_len) {
            self.send(cmd::DATA, r, piece).await?;
        }
        self.send(cmd::ACK_OK, r, &[]).await?;
        self.shared.count(|c| c.chunks += 1);
        Ok(Next::Continue)
    }
}

/// Takes one complete packet from the front of `buf`: `Ok(None)` if incomplete, `Err` if the stream
/// is not the ZK TCP framing (cannot be resynchronised).
fn take_frame(buf: &mut BytesMut) -> Result<Option<Packet>, &'static str> {
    if buf.len() < codec::TCP_TOP_LEN {
        return Ok(None);
    }
    let top: [u8; codec::TCP_TOP_LEN] = buf[..codec::TCP_TOP_LEN]
        .try_into()
        .map_err(|_| "short wrapper")?;
    let len = match codec::parse_top(&top) {
        Top::BadMagic => return Err("no 50 50 82 7d wrapper"),
        Top::Len(n) if n < codec::HEADER_LEN => return Err("announced length below a header"),
        Top::Len(n) if n > MAX_REQUEST => return Err("announced length too large"),
        Top::Len(n) => n,
    };
    if buf.len() < codec::TCP_TOP_LEN + len {
        return Ok(None);
    }
    buf.advance(codec::TCP_TOP_LEN);
    let body = buf.split_to(len);
    Ok(Packet::parse(&body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zksim::model::{generate_records, generate_users};
    use tokio::io::AsyncReadExt;

    const PATIENCE: Duration = Duration::from_secs(30);

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// A minimal client speaking the framing, for what pyzk cannot show.
    struct Raw {
        s: TcpStream,
        session: u16,
        reply: u16,
    }

    impl Raw {
        async fn open(sim: &SimHandle) -> Raw {
            let s = TcpStream::connect(sim.addr()).await.unwrap();
            Raw {
                s,
                session: 0,
                reply: 0,
            }
        }

        async fn send(&mut self, command: u16, data: &[u8]) {
            self.reply = self.reply.wrapping_add(1);
            let p = codec::encode_packet(command, self.session, self.reply, data);
            self.s.write_all(&p).await.unwrap();
        }

        /// The next packet, or `None` at end of stream (a partial packet counts as the end).
        async fn recv(&mut self) -> Option<Packet> {
            let mut top = [0u8; 8];
            tokio::time::timeout(PATIENCE, self.s.read_exact(&mut top))
                .await
                .unwrap()
                .ok()?;
            let Top::Len(n) = codec::parse_top(&top) else {
                panic!("bad wrapper {top:02x?}")
            };
            let mut body = vec![0u8; n];
            self.s.read_exact(&mut body).await.ok()?;
            let p = Packet::parse(&body).unwrap();
            assert!(p.checksum_ok(), "reply checksum");
            Some(p)
        }

        async fn call(&mut self, command: u16, data: &[u8]) -> Packet {
            self.send(command, data).await;
            let p = self.recv().await.expect("a reply");
            assert_eq!(p.reply, self.reply, "reply id echoed");
            p
        }

        async fn connect(sim: &SimHandle, key: u32) -> Raw {
            let mut c = Raw::open(sim).await;
            let p = c.call(cmd::CONNECT, &[]).await;
            c.session = p.session;
            if p.command == cmd::ACK_UNAUTH {
                let h = codec::comm_key_hash(key, c.session, 50);
                assert_eq!(c.call(cmd::AUTH, &h).await.command, cmd::ACK_OK);
            } else {
                assert_eq!(p.command, cmd::ACK_OK);
            }
            c
        }

        /// A whole buffered read of `what` in chunks of `chunk` bytes.
        async fn read(&mut self, what: u16, chunk: usize) -> Option<Vec<u8>> {
            let mut req = vec![1u8];
            req.extend_from_slice(&what.to_le_bytes());
            req.extend_from_slice(&[0; 8]);
            let p = self.call(cmd::PREPARE_BUFFER, &req).await;
            if p.command == cmd::DATA {
                return Some(p.data);
            }
            assert_eq!(p.command, cmd::ACK_OK);
            let size = u32::from_le_bytes(p.data[1..5].try_into().unwrap()) as usize;
            let mut out = Vec::new();
            while out.len() < size {
                let mut q = Vec::new();
                q.extend_from_slice(&(out.len() as i32).to_le_bytes());
                q.extend_from_slice(&(chunk.min(size - out.len()) as i32).to_le_bytes());
                let prep = self.call(cmd::READ_BUFFER, &q).await;
                assert_eq!(prep.command, cmd::PREPARE_DATA);
                let n = u32::from_le_bytes(prep.data[0..4].try_into().unwrap()) as usize;
                let mut got = 0;
                while got < n {
                    let d = self.recv().await?;
                    assert_eq!((d.command, d.reply), (cmd::DATA, self.reply));
                    got += d.data.len();
                    out.extend_from_slice(&d.data);
                }
                let ack = self.recv().await?;
                assert_eq!((ack.command, ack.reply), (cmd::ACK_OK, self.reply));
            }
            assert_eq!(self.call(cmd::FREE_DATA, &[]).await.command, cmd::ACK_OK);
            Some(out)
        }
    }

    async fn sim_with(records: usize, cfg: SimConfig) -> SimHandle {
        let users = generate_users(5);
        start(SimConfig {
            records: generate_records(records, &users, at("2026-03-02 06:00:00")),
            users,
            ..cfg
        })
        .await
        .unwrap()
    }

    async fn closed(c: &mut Raw) -> bool {
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(PATIENCE, c.s.read(&mut b))
                .await
                .unwrap()
            {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }

    #[tokio::test]
    async fn garbage_bad_checksums_and_unknown_commands_never_stop_the_device() {
        let sim = sim_with(3, SimConfig::default()).await;
        // not the ZK wrapper: that connection is closed
        let mut c = Raw::open(&sim).await;
        c.s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(closed(&mut c).await);
        // an absurd length: closed too
        let mut c = Raw::open(&sim).await;
        c.s.write_all(&[0x50, 0x50, 0x82, 0x7d, 0xff, 0xff, 0xff, 0x7f])
            .await
            .unwrap();
        assert!(closed(&mut c).await);
        // a length below a header
        let mut c = Raw::open(&sim).await;
        c.s.write_all(&[0x50, 0x50, 0x82, 0x7d, 3, 0, 0, 0, 1, 2, 3])
            .await
            .unwrap();
        assert!(closed(&mut c).await);
        // half a packet, then the client goes away
        let mut c = Raw::open(&sim).await;
        c.s.write_all(&codec::encode_packet(cmd::CONNECT, 0, 0, &[])[..11])
            .await
            .unwrap();
        drop(c);
        // a good session still works, and gets clear replies to what it cannot do
        let mut c = Raw::connect(&sim, 0).await;
        let mut bad = codec::encode_packet(cmd::GET_TIME, c.session, 77, &[]);
        bad[10] ^= 0xff;
        c.s.write_all(&bad).await.unwrap();
        let p = c.recv().await.unwrap();
        assert_eq!((p.command, p.reply), (cmd::ACK_ERROR, 77));
        assert_eq!(c.call(4242, b"x").await.command, cmd::ACK_UNKNOWN);
        assert_eq!(c.call(cmd::ACK_ERROR, &[]).await.command, cmd::ACK_UNKNOWN);
        assert_eq!(
            c.call(cmd::READ_BUFFER, &[0; 8]).await.command,
            cmd::ACK_ERROR,
            "no buffer prepared"
        );
        assert_eq!(
            c.call(cmd::PREPARE_BUFFER, &[1, 2]).await.command,
            cmd::ACK_ERROR
        );
        assert_eq!(
            c.call(cmd::OPTIONS_RRQ, b"NoSuchOption\0").await.command,
            cmd::ACK_ERROR
        );
        assert_eq!(c.call(cmd::SET_TIME, &[1, 2]).await.command, cmd::ACK_ERROR);
        assert_eq!(
            c.call(cmd::SET_TIME, &[0xff; 4]).await.command,
            cmd::ACK_ERROR,
            "year 2133"
        );
        let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
        assert_eq!(data.len(), 4 + 3 * 40);
        let counters = sim.counters();
        assert_eq!(counters.bad_packets, 4, "{counters:?}");
        assert_eq!(counters.unsupported, 2, "{counters:?}");
        assert_eq!(c.call(cmd::EXIT, &[]).await.command, cmd::ACK_OK);
        assert!(closed(&mut c).await);
        sim.wait_counters(PATIENCE, |c| c.open_connections == 0 && c.exits == 1)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn commands_need_a_session_and_the_comm_key() {
        let sim = sim_with(
            1,
            SimConfig {
                comm_key: 123_456,
                ..Default::default()
            },
        )
        .await;
        let mut c = Raw::open(&sim).await;
        assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
        let p = c.call(cmd::CONNECT, &[]).await;
        assert_eq!(p.command, cmd::ACK_UNAUTH);
        assert_ne!(p.session, 0);
        c.session = p.session;
        assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
        let wrong = codec::comm_key_hash(123_457, c.session, 50);
        assert_eq!(c.call(cmd::AUTH, &wrong).await.command, cmd::ACK_UNAUTH);
        let right = codec::comm_key_hash(123_456, c.session, 50);
        assert_eq!(c.call(cmd::AUTH, &right).await.command, cmd::ACK_OK);
        assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
        c.session ^= 0x5555;
        assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
        let k = sim.counters();
        assert_eq!(
            (k.sessions, k.auths, k.auth_failures, k.refused),
            (1, 1, 1, 3)
        );
        // the key can change for new sessions
        sim.set_comm_key(0);
        let mut c = Raw::open(&sim).await;
        assert_eq!(c.call(cmd::CONNECT, &[]).await.command, cmd::ACK_OK);
    }

    #[tokio::test]
    async fn chunks_are_capped_split_into_packets_and_echo_the_reply_id() {
        let sim = sim_with(
            100,
            SimConfig {
                max_chunk: 1000,
                data_packet_max: Some(100),
                ..Default::default()
            },
        )
        .await;
        let mut c = Raw::connect(&sim, 0).await;
        let mut req = vec![1u8];
        req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
        req.extend_from_slice(&[0; 8]);
        let p = c.call(cmd::PREPARE_BUFFER, &req).await;
        assert_eq!(p.data, codec::buffer_ready(4 + 100 * 40));
        let mut q = 0i32.to_le_bytes().to_vec();
        q.extend_from_slice(&(TCP_CHUNK as i32).to_le_bytes());
        let prep = c.call(cmd::READ_BUFFER, &q).await;
        assert_eq!(prep.command, cmd::PREPARE_DATA);
        assert_eq!(prep.data.len(), 8);
        assert_eq!(&prep.data[..4], &1000u32.to_le_bytes());
        for _ in 0..10 {
            let d = c.recv().await.unwrap();
            assert_eq!(
                (d.command, d.reply, d.data.len()),
                (cmd::DATA, c.reply, 100)
            );
        }
        let ack = c.recv().await.unwrap();
        assert_eq!((ack.command, ack.reply), (cmd::ACK_OK, c.reply));
        assert_eq!(c.call(cmd::FREE_DATA, &[]).await.command, cmd::ACK_OK);
        // the whole log through the helper, in 1000-byte chunks
        let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
        assert_eq!(data.len(), 4004);
        assert_eq!(&data[..4], &4000u32.to_le_bytes());
        assert_eq!(sim.counters().chunks, 1 + 5);
    }

    #[tokio::test]
    async fn a_chunk_is_cut_in_the_middle_once_or_every_time() {
        let sim = sim_with(100, SimConfig::default()).await;
        sim.drop_mid_chunk(2, false);
        let mut c = Raw::connect(&sim, 0).await;
        assert!(c.read(cmd::ATTLOG_RRQ, 1000).await.is_none(), "cut");
        assert!(closed(&mut c).await);
        // once: the next read is whole, and so is a user read
        let mut c = Raw::connect(&sim, 0).await;
        assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
        assert!(c.read(cmd::USERTEMP_RRQ, 100).await.is_some());
        // sticky: every read, until cleared
        sim.drop_mid_chunk(1, true);
        for _ in 0..2 {
            let mut c = Raw::connect(&sim, 0).await;
            assert!(c.read(cmd::ATTLOG_RRQ, 1000).await.is_none());
        }
        sim.clear_faults();
        let mut c = Raw::connect(&sim, 0).await;
        assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
        assert_eq!(sim.counters().injected_drops, 3);
        // a direct reply is chunk 1
        let sim = sim_with(
            10,
            SimConfig {
                direct_max: 1 << 20,
                ..Default::default()
            },
        )
        .await;
        sim.drop_mid_chunk(1, false);
        let mut c = Raw::connect(&sim, 0).await;
        let mut req = vec![1u8];
        req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
        req.extend_from_slice(&[0; 8]);
        c.send(cmd::PREPARE_BUFFER, &req).await;
        assert!(c.recv().await.is_none());
        let mut c = Raw::connect(&sim, 0).await;
        assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 404);
    }

    #[tokio::test]
    async fn a_stalled_chunk_keeps_the_connection_open_and_silent() {
        let sim = sim_with(100, SimConfig::default()).await;
        sim.stall_mid_chunk(2, false);
        let mut c = Raw::connect(&sim, 0).await;
        let mut req = vec![1u8];
        req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
        req.extend_from_slice(&[0; 8]);
        assert_eq!(c.call(cmd::PREPARE_BUFFER, &req).await.command, cmd::ACK_OK);
        let mut q = 0i32.to_le_bytes().to_vec();
        q.extend_from_slice(&1000i32.to_le_bytes());
        c.call(cmd::READ_BUFFER, &q).await;
        for _ in 0..2 {
            c.recv().await.unwrap();
        }
        q[..4].copy_from_slice(&1000i32.to_le_bytes());
        assert_eq!(
            c.call(cmd::READ_BUFFER, &q).await.command,
            cmd::PREPARE_DATA
        );
        // half of the 1016-byte DATA packet, then nothing
        let mut head = [0u8; 508];
        c.s.read_exact(&mut head).await.unwrap();
        let mut more = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_millis(300), c.s.read(&mut more)).await;
        assert!(
            silent.is_err(),
            "the stalled connection stays silent and open"
        );
        sim.wait_counters(PATIENCE, |k| {
            k.injected_drops == 1 && k.open_connections == 1
        })
        .await
        .unwrap();
        drop(c);
        sim.wait_counters(PATIENCE, |k| k.open_connections == 0)
            .await
            .unwrap();
        let mut c = Raw::connect(&sim, 0).await;
        assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
    }

    #[tokio::test]
    async fn events_reach_registered_sessions_only_and_acks_are_not_answered() {
        let sim = sim_with(0, SimConfig::default()).await;
        let mut listener = Raw::connect(&sim, 0).await;
        let mut other = Raw::connect(&sim, 0).await;
        assert_eq!(
            listener
                .call(cmd::REG_EVENT, &1u32.to_le_bytes())
                .await
                .command,
            cmd::ACK_OK
        );
        sim.wait_counters(PATIENCE, |c| c.event_sessions == 1)
            .await
            .unwrap();
        let mut r = SimRecord::new("A-17", at("2026-03-02 08:59:58"));
        r.verify = 15;
        r.state = 1;
        sim.add_records([r]).unwrap();
        let e = listener.recv().await.unwrap();
        assert_eq!((e.command, e.session, e.reply), (cmd::REG_EVENT, 1, 0));
        assert_eq!(e.data.len(), 52);
        assert_eq!(&e.data[..5], b"A-17\0");
        assert_eq!(&e.data[24..32], &[15, 1, 26, 3, 2, 8, 59, 58]);
        // the client's ACK_OK gets no reply: the next packet answers the next request
        listener.send(cmd::ACK_OK, &[]).await;
        let p = listener.call(cmd::GET_FREE_SIZES, &[]).await;
        assert_eq!(&p.data[32..36], &1i32.to_le_bytes());
        // the unregistered session got nothing: its next packet is its own reply
        assert_eq!(other.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
        // unsubscribing stops events
        assert_eq!(
            listener.call(cmd::REG_EVENT, &[0; 4]).await.command,
            cmd::ACK_OK
        );
        sim.add_records([SimRecord::new("9", at("2026-03-02 09:00:00"))])
            .unwrap();
        assert_eq!(listener.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
        let k = sim.counters();
        assert_eq!((k.events_sent, k.event_sessions), (1, 0));
    }

    #[tokio::test]
    async fn replies_wait_for_the_configured_delay() {
        let sim = sim_with(0, SimConfig::default()).await;
        let mut c = Raw::connect(&sim, 0).await;
        sim.set_reply_delay(Duration::from_millis(150));
        let t0 = std::time::Instant::now();
        assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
        assert!(t0.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_100k_record_log_is_served_whole_in_chunks() {
        let sim = sim_with(100_000, SimConfig::default()).await;
        let mut c = Raw::connect(&sim, 0).await;
        let t0 = std::time::Instant::now();
        let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
        let took = t0.elapsed();
        assert_eq!(data.len(), 4 + 100_000 * 40);
        let want = Layout {
            records: RecordSize::B40,
            users: UserSize::B72,
            events: EventFormat::Id52,
            table: &sim.users(),
        }
        .attendance_dataset(&sim.records())
        .unwrap();
        assert!(data == want, "served bytes differ from the log");
        let chunks = sim.counters().chunks;
        assert_eq!(chunks as usize, data.len().div_ceil(TCP_CHUNK));
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!("served 100,000 40-byte records in {chunks} chunks in {took:?} ({build} build)");
    }

    #[tokio::test]
    async fn clock_options_and_users_follow_the_handle() {
        let sim = sim_with(2, SimConfig::default()).await;
        let mut c = Raw::connect(&sim, 0).await;
        sim.set_device_time(at("2030-07-08 09:10:11"));
        let p = c.call(cmd::GET_TIME, &[]).await;
        let t = codec::decode_time(u32::from_le_bytes(p.data[..4].try_into().unwrap())).unwrap();
        assert!(
            (t - at("2030-07-08 09:10:11")).num_seconds().abs() <= 2,
            "{t}"
        );
        let set = codec::encode_time(at("2029-01-02 03:04:05")).unwrap();
        assert_eq!(
            c.call(cmd::SET_TIME, &set.to_le_bytes()).await.command,
            cmd::ACK_OK
        );
        assert!(
            (sim.device_time() - at("2029-01-02 03:04:05"))
                .num_seconds()
                .abs()
                <= 2
        );
        sim.set_serial_number("OTHER-1");
        let p = c.call(cmd::OPTIONS_RRQ, b"~SerialNumber\0").await;
        assert_eq!(p.data, b"~SerialNumber=OTHER-1\0");
        assert_eq!(
            c.call(cmd::OPTIONS_WRQ, b"Door1Delay=5\0").await.command,
            cmd::ACK_OK
        );
        assert_eq!(sim.option("Door1Delay").as_deref(), Some("5"));
        // 8-byte records need their user: a table without it is refused
        let sim8 = start(SimConfig {
            record_size: RecordSize::B8,
            users: vec![SimUser::new(1, "70000", "Ann")],
            records: vec![SimRecord::new("70000", at("2026-03-02 09:00:00")); 3],
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(sim8.set_users(vec![]).is_err());
        assert_eq!(sim8.users().len(), 1);
        assert!(sim8
            .add_records([SimRecord::new("X-1", at("2026-03-02 09:00:00"))])
            .is_err());
        assert_eq!(sim8.record_count(), 3);
        assert_eq!(c.call(cmd::DISABLEDEVICE, &[]).await.command, cmd::ACK_OK);
        assert!(!sim.is_enabled());
        assert_eq!(c.call(cmd::CLEAR_ATTLOG, &[]).await.command, cmd::ACK_OK);
        assert_eq!(sim.record_count(), 0);
        let k = sim.counters();
        assert_eq!((k.disables, k.clears, k.set_times), (1, 1, 1));
    }
}
