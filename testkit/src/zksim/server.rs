//! The simulated device: its state behind one lock, [`start`], and the TCP listener that gives each
//! connection its own task ([`super::conn`]). Tests drive it by its handle ([`SimHandle`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::TimeDelta;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::config::{ChunkDrop, SimConfig, SimCounters, SimError};
use super::conn::Conn;
use super::handle::SimHandle;
use super::model::{EventFormat, Layout, RecordSize, SimRecord, SimUser, UserSize};

/// The chunk size both public clients ask for over TCP (0xFFC0).
pub const TCP_CHUNK: usize = 0xffc0;
/// Largest request packet accepted (header + data); a bigger announced length closes the connection.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Realtime events buffered per connection before the oldest are lost.
const EVENT_BACKLOG: usize = 65_536;
/// How long connections may take to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(super) struct State {
    pub(super) comm_key: u32,
    pub(super) record_size: RecordSize,
    pub(super) user_size: UserSize,
    pub(super) event_format: EventFormat,
    pub(super) users: Vec<SimUser>,
    pub(super) records: Vec<SimRecord>,
    pub(super) clock_offset: TimeDelta,
    pub(super) options: BTreeMap<String, String>,
    pub(super) max_chunk: usize,
    pub(super) data_packet_max: Option<usize>,
    pub(super) direct_max: usize,
    pub(super) record_capacity: u32,
    pub(super) user_capacity: u32,
    pub(super) check_checksums: bool,
    pub(super) reply_delay: Duration,
    pub(super) fault: Option<ChunkDrop>,
    pub(super) enabled: bool,
}

impl State {
    pub(super) fn layout(&self) -> Layout<'_> {
        Layout {
            records: self.record_size,
            users: self.user_size,
            events: self.event_format,
            table: &self.users,
        }
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) counters: watch::Sender<SimCounters>,
    pub(super) events: broadcast::Sender<Arc<Vec<u8>>>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut SimCounters)) {
        self.counters.send_modify(f);
    }
}

/// Owned by the handles: the last one dropped cancels `stop` (through the guard).
pub(super) struct Control {
    pub(super) addr: SocketAddr,
    pub(super) stop: CancellationToken,
    pub(super) _stop_on_drop: DropGuard,
    pub(super) task: Mutex<Option<JoinHandle<()>>>,
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
