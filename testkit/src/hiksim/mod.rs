//! A simulated Hikvision access-control / face terminal speaking ISAPI over HTTP.
//!
//! # Why it exists
//! clockbridge's `hikvision` source must be tested on logs of 100,000 events, nonces that expire,
//! wrong passwords and locked accounts, alert streams that drop silently, clocks that are off and
//! serial numbers that start over, none of which a real terminal produces on demand. This module is
//! the device side, written independently of the product's client (its own digest check, its own
//! documents), and proven by a second, independent client: `tests/hikvision_python.rs` reads it with
//! Python `requests` and `HTTPDigestAuth`.
//!
//! # What it speaks
//! HTTP Digest (MD5, `qop=auth`; a nonce expires after [`HikSimConfig::nonce_ttl`] and is then
//! answered with a fresh challenge; [`HikSimConfig::lock_after`] wrong responses in a row lock the
//! account for [`HikSimConfig::lock_for`], as terminals do); `GET /ISAPI/System/deviceInfo` and
//! `GET|PUT /ISAPI/System/time` (XML, the device's clock with a skew and an offset);
//! `POST /ISAPI/AccessControl/AcsEvent?format=json` (search by major, minor and time range, paged by
//! `searchResultPosition`, `maxResults` capped at [`HikSimConfig::max_results_cap`], results kept by
//! `searchID`); `POST /ISAPI/AccessControl/UserInfo/Search?format=json`; and
//! `GET /ISAPI/Event/notification/alertStream` (`multipart/mixed`, JSON or XML parts, heartbeats,
//! optionally dropped, closed or silent, after a configured time). Errors are `ResponseStatus`
//! documents. With [`HikSimConfig::tls`], all of it over HTTPS with a self-signed certificate made at
//! start, as terminals ship.
//!
//! # Faults
//! [`HikSimConfig::reply_delay`] / [`HikSimConfig::page_delay`] (slow replies),
//! [`HikSimHandle::auth_storm`] (the next N correct requests get a 401),
//! [`HikSimHandle::factory_reset`] (the log emptied, serial numbers from 1 again),
//! [`HikSimHandle::swap_device`] (another serial number), [`HikSimHandle::set_password`].
//! It has no security: loopback or a test network only. It stops on [`HikSimHandle::shutdown`].

mod model;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{FixedOffset, NaiveDateTime, TimeDelta};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use model::{generate_events, generate_users, is_punch, HikEvent, HikUser, PASS_MINORS};
pub use server::{digest_params, BOUNDARY};

/// What the simulated terminal is and does.
#[derive(Debug, Clone)]
pub struct HikSimConfig {
    pub listen: SocketAddr,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub model: String,
    pub serial_number: String,
    /// How long a nonce is accepted.
    pub nonce_ttl: Duration,
    /// Whether an expired nonce's 401 says `stale=TRUE` (many firmwares do not).
    pub stale_flag: bool,
    /// Wrong responses in a row that lock the account, and for how long.
    pub lock_after: u32,
    pub lock_for: Duration,
    /// The most events (and users) one page holds, whatever `maxResults` asks.
    pub max_results_cap: u32,
    /// Added to every reply.
    pub reply_delay: Duration,
    /// The time an `AcsEvent` page takes inside the terminal, from the request's arrival (after
    /// `reply_delay`) to its reply, kept to within a tenth of a millisecond (see `acs_busy`).
    pub page_delay: Duration,
    /// The device's offset, and whether its times carry it.
    pub offset: FixedOffset,
    pub times_with_offset: bool,
    /// Device clock minus the host's.
    pub clock_skew: TimeDelta,
    pub users: Vec<HikUser>,
    pub events: Vec<HikEvent>,
    /// Alert stream parts in XML (older firmware) instead of JSON.
    pub stream_xml: bool,
    pub heartbeat_every: Option<Duration>,
    /// The stream stops after this long: closed, or (with `stream_drop_silent`) left open and silent.
    pub stream_drop_after: Option<Duration>,
    pub stream_drop_silent: bool,
    /// HTTPS with a self-signed certificate for 127.0.0.1 and localhost, made at start (as a
    /// terminal's own certificate, which no gateway trusts).
    pub tls: bool,
}

impl Default for HikSimConfig {
    fn default() -> Self {
        HikSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "admin".into(),
            password: "Passw0rd!".into(),
            realm: "DS-K1T341AMF".into(),
            model: "DS-K1T341AMF".into(),
            serial_number: "DS-K1T341AMF20260101V031000ENK00000001".into(),
            nonce_ttl: Duration::from_secs(30),
            stale_flag: false,
            lock_after: 5,
            lock_for: Duration::from_secs(1800),
            max_results_cap: 30,
            reply_delay: Duration::ZERO,
            page_delay: Duration::ZERO,
            offset: FixedOffset::east_opt(8 * 3600).expect("valid offset"),
            times_with_offset: true,
            clock_skew: TimeDelta::zero(),
            users: generate_users(20),
            events: Vec::new(),
            stream_xml: false,
            heartbeat_every: Some(Duration::from_secs(5)),
            stream_drop_after: None,
            stream_drop_silent: false,
            tls: false,
        }
    }
}

/// What the terminal has seen (awaitable with [`HikSimHandle::wait_counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HikCounters {
    pub requests: u64,
    /// 401s to requests without authorization.
    pub challenges: u64,
    pub auth_ok: u64,
    /// Wrong user or response (failed logins).
    pub auth_failures: u64,
    /// Requests with an expired or unknown nonce (answered with a fresh challenge).
    pub stale_nonces: u64,
    /// Requests refused while the account is locked.
    pub locked_refusals: u64,
    /// Correct requests refused by a 401 storm.
    pub storm_refusals: u64,
    pub device_info_reads: u64,
    pub time_sets: u64,
    pub acs_pages: u64,
    pub acs_events_served: u64,
    /// The largest page served.
    pub max_page: u64,
    pub user_pages: u64,
    pub stream_opens: u64,
    pub streams_open: u64,
    /// Streams the terminal dropped (closed or left silent).
    pub stream_drops: u64,
    /// The time the `AcsEvent` pages took inside the terminal (from the request's arrival to the
    /// reply), summed: what a reader's time is measured against.
    pub acs_busy: Duration,
    /// When the first `AcsEvent` page request arrived, and when the last page was answered.
    pub first_acs_at: Option<std::time::Instant>,
    pub last_acs_at: Option<std::time::Instant>,
}

/// A running simulated terminal.
#[derive(Clone)]
pub struct HikSimHandle {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    https: bool,
    counters_rx: watch::Receiver<HikCounters>,
}

/// Starts a terminal.
pub async fn start(cfg: HikSimConfig) -> std::io::Result<HikSimHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let tls = if cfg.tls {
        Some(server::self_signed()?)
    } else {
        None
    };
    let (counters_tx, counters_rx) = watch::channel(HikCounters::default());
    let (events_tx, _) = broadcast::channel(4096);
    let (drop_tx, _) = broadcast::channel(4);
    let shared = Arc::new(server::Shared {
        state: Mutex::new(server::State::new(cfg)),
        counters_tx,
        events_tx,
        drop_tx,
        stop: CancellationToken::new(),
    });
    let https = tls.is_some();
    tokio::spawn(server::serve(listener, shared.clone(), tls));
    Ok(HikSimHandle {
        shared,
        addr,
        https,
        counters_rx,
    })
}

impl HikSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with `tls`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    pub fn counters(&self) -> HikCounters {
        self.counters_rx.borrow().clone()
    }

    /// Waits until the counters satisfy `cond`.
    pub async fn wait_counters(&self, mut cond: impl FnMut(&HikCounters) -> bool) -> HikCounters {
        let mut rx = self.counters_rx.clone();
        let c = rx
            .wait_for(|c| cond(c))
            .await
            .expect("the simulator is gone");
        c.clone()
    }

    /// Every event of the log.
    pub fn events(&self) -> Vec<HikEvent> {
        self.shared.lock().events.clone()
    }

    pub fn users(&self) -> Vec<HikUser> {
        self.shared.lock().cfg.users.clone()
    }

    /// The device's wall-clock time now.
    pub fn device_now(&self) -> NaiveDateTime {
        self.shared.lock().device_now().naive_local()
    }

    pub fn clock_skew(&self) -> TimeDelta {
        self.shared.lock().cfg.clock_skew
    }

    /// Appends events (serial numbers given in order from the next one; `serial` is overwritten)
    /// and pushes each to the open alert streams. Returns them as stored.
    pub fn add_events(&self, events: impl IntoIterator<Item = HikEvent>) -> Vec<HikEvent> {
        // made before the lock is taken (the caller's iterator may read the device's clock)
        let events: Vec<HikEvent> = events.into_iter().collect();
        let added: Vec<HikEvent> = {
            let mut st = self.shared.lock();
            let mut added = Vec::new();
            for mut e in events {
                e.serial = st.next_serial;
                st.next_serial += 1;
                st.events.push(e.clone());
                added.push(e);
            }
            added
        };
        for e in &added {
            let _ = self.shared.events_tx.send(e.clone());
        }
        added
    }

    /// A punch of `employee` with `minor` (major 5) at the device's time now, `offset_secs` later.
    pub fn punch(&self, employee: &str, minor: u32, offset_secs: i64) -> HikEvent {
        let t = self.device_now() + TimeDelta::seconds(offset_secs);
        let e = HikEvent {
            serial: 0,
            major: 5,
            minor,
            time: t,
            employee: Some(employee.to_string()),
            name: Some(format!("员工{employee}")),
            attendance_status: Some("checkIn"),
        };
        self.add_events([e]).remove(0)
    }

    /// The next `n` correct requests get a 401 with a fresh challenge.
    pub fn auth_storm(&self, n: u32) {
        self.shared.lock().storm = n;
    }

    pub fn set_password(&self, pw: &str) {
        self.shared.lock().cfg.password = pw.to_string();
    }

    /// Empties the log; serial numbers start from 1 again (a factory reset).
    pub fn factory_reset(&self) {
        let mut st = self.shared.lock();
        st.events.clear();
        st.next_serial = 1;
    }

    /// Another serial number answers (a replaced terminal).
    pub fn swap_device(&self, serial_number: &str) {
        self.shared.lock().cfg.serial_number = serial_number.to_string();
    }

    /// Forgets when pages were first and last served (to time one reader after another).
    pub fn reset_page_times(&self) {
        self.shared.count(|c| {
            c.first_acs_at = None;
            c.last_acs_at = None;
        });
    }

    pub fn set_page_delay(&self, d: Duration) {
        self.shared.lock().cfg.page_delay = d;
    }

    /// Drops every open alert stream now: closed, or (`silent`) left open and silent.
    pub fn drop_streams(&self, silent: bool) {
        let _ = self.shared.drop_tx.send(silent);
    }

    pub fn set_stream_drop(&self, after: Option<Duration>, silent: bool) {
        let mut st = self.shared.lock();
        st.cfg.stream_drop_after = after;
        st.cfg.stream_drop_silent = silent;
    }
}
