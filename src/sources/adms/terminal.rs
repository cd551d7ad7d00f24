//! One configured pushing terminal, as the listener ([`super::hub`]) sees it: what each of its
//! requests does, and its state (stamps, `INFO`, online) while the daemon runs.
//!
//! Guarantees:
//! - An ATTLOG push is answered `OK: <n>` only after every punch of it is committed to the queue
//!   (`PunchSink::submit_all_committed`); when the queue cannot take them (the daemon is stopping,
//!   the storage gate is closed, a commit failed) the answer is a 503, and the terminal keeps the
//!   records and sends them again after `ErrorDelay`.
//! - Every line of a push is either a punch or counted as malformed (and logged, rate-limited); a
//!   malformed line never stops the rest, and the push is still answered `OK` (sending it again
//!   would not make it a punch).
//! - Stamps are kept as resume markers only (saved every 30 s and at stop, never waited for): a re-push
//!   with another stamp is deduplicated by the punches' keys, like every re-read.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::commands::{self, CommandKind};
use super::figures::AdmsFigures;
use super::protocol::{self, Info, Query};
use super::spec::AdmsSpec;
use crate::device_stats::DeviceStats;
use crate::ingest::{IngestOutcome, PunchSink};
use crate::queue::store::DeviceStore;
use crate::sources::kind::SourceContext;

/// The state store's name of the stamps.
const STAMPS: &str = "adms.stamps";

/// Changed stamps are saved at most this often (and when the device's task stops): they are hints,
/// and a save is a commit on the queue's thread, which the punches' commits share.
const STAMPS_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Malformed lines logged one by one per terminal before they are only summarised.
const MALFORMED_LOGGED: u64 = 10;

/// The stamps a terminal sent with its last committed pushes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    pub attlog: Option<String>,
    pub operlog: Option<String>,
}

/// An answer: the status code and the text body.
pub type Answer = (u16, String);

/// One terminal while the daemon runs.
pub struct Terminal {
    pub id: String,
    pub sn: String,
    pub spec: AdmsSpec,
    tz: chrono_tz::Tz,
    sink: PunchSink,
    pub stats: Arc<DeviceStats>,
    store: DeviceStore,
    shutdown: CancellationToken,
    /// Unix ms of the last request (0: none yet).
    last_request_ms: AtomicI64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stamps: Stamps,
    /// The stamps changed since they were saved.
    stamps_dirty: bool,
    /// When they were last saved.
    stamps_saved: Option<Instant>,
    malformed_logged: u64,
    malformed_suppressed: u64,
    last_summary: Option<Instant>,
}

impl Terminal {
    /// The terminal of `spec`, from its device's context; its stamps read from the store.
    pub async fn new(spec: AdmsSpec, ctx: &SourceContext) -> Terminal {
        let stamps = match ctx.store.load::<Stamps>(STAMPS).await {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("device {}: {e}; the handshake gives no stamp", ctx.id);
                Stamps::default()
            }
        };
        let t = Terminal {
            id: ctx.id.clone(),
            sn: spec.sn().to_string(),
            spec,
            tz: ctx.tz,
            sink: ctx.sink.clone(),
            stats: ctx.stats.clone(),
            store: ctx.store.clone(),
            shutdown: ctx.shutdown.clone(),
            last_request_ms: AtomicI64::new(0),
            state: Mutex::new(State {
                stamps: stamps.clone(),
                ..State::default()
            }),
        };
        t.figures(|f| {
            f.serial_number = Some(t.sn.clone());
            f.last_stamp = stamps.attlog.clone();
        });
        t
    }

    fn figures(&self, f: impl FnOnce(&mut AdmsFigures)) {
        self.stats.update_figures(f);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request came from `peer`: the terminal is online.
    pub fn touch(&self, peer: &str) {
        let now = Utc::now();
        let before = self
            .last_request_ms
            .swap(now.timestamp_millis(), Ordering::Relaxed);
        let was_online = self.stats.connections.load(Ordering::Relaxed) > 0;
        if !was_online {
            self.stats.connections.store(1, Ordering::Relaxed);
            DeviceStats::incr(&self.stats.connects);
            if before == 0 {
                tracing::info!(
                    "device {} (SN {}): the terminal is online ({peer})",
                    self.id,
                    self.sn
                );
            } else {
                tracing::info!(
                    "device {} (SN {}): the terminal is back online ({peer})",
                    self.id,
                    self.sn
                );
            }
        }
        self.figures(|f| {
            f.last_request_at = Some(now.timestamp());
            if f.address.as_deref() != Some(peer) {
                f.address = Some(peer.to_string());
            }
        });
    }

    /// Called every second: online while the last request is within 3 × `delay`; saves changed
    /// stamps every [`STAMPS_SAVE_EVERY`], or now when `stopping`.
    pub async fn tick(&self, stopping: bool) {
        let last = self.last_request_ms.load(Ordering::Relaxed);
        let window = 3 * self.spec.delay_secs as i64 * 1000;
        let online = last > 0 && Utc::now().timestamp_millis() - last <= window;
        if !online && self.stats.connections.swap(0, Ordering::Relaxed) > 0 {
            tracing::warn!(
                "device {} (SN {}): no request for {} s (3 x delay): the terminal is offline",
                self.id,
                self.sn,
                3 * self.spec.delay_secs
            );
            self.stats.notify_changed();
        }
        let stamps = {
            let mut st = self.lock();
            let due = stopping
                || st
                    .stamps_saved
                    .is_none_or(|t| t.elapsed() >= STAMPS_SAVE_EVERY);
            if due && st.stamps_dirty {
                st.stamps_dirty = false;
                st.stamps_saved = Some(Instant::now());
                Some(st.stamps.clone())
            } else {
                None
            }
        };
        if let Some(s) = stamps {
            if let Err(e) = self.store.save(STAMPS, &s).await {
                tracing::debug!("device {}: cannot save the stamps: {e}", self.id);
                self.lock().stamps_dirty = true;
            }
        }
    }

    /// The handshake's options.
    pub fn handshake(&self) -> Answer {
        let st = self.lock();
        let utc_offset_secs = {
            use chrono::{Offset, TimeZone};
            self.tz
                .offset_from_utc_datetime(&Utc::now().naive_utc())
                .fix()
                .local_minus_utc()
        };
        let text = protocol::handshake_reply(&protocol::Handshake {
            sn: &self.sn,
            att_stamp: st.stamps.attlog.as_deref(),
            op_stamp: st.stamps.operlog.as_deref(),
            error_delay_secs: self.spec.error_delay_secs,
            delay_secs: self.spec.delay_secs,
            utc_offset_secs,
            realtime: self.spec.realtime,
        });
        (200, text)
    }

    /// Refuses a push the terminal must keep (counted, `status` shows it).
    pub fn refuse(&self, code: u16, why: &str) -> Answer {
        self.figures(|f| f.pushes_refused += 1);
        (code, format!("FAIL: {why}\n"))
    }

    /// A body over `adms.max_body_size`.
    pub fn too_large(&self, peer: &str, size: Option<u64>, max: u64) -> Answer {
        self.figures(|f| f.bodies_too_large += 1);
        let size = size
            .map(|s| format!("{s} bytes"))
            .unwrap_or_else(|| "more bytes".into());
        tracing::warn!(
            "device {} (SN {}, {peer}): a push of {size} is over adms.max_body_size ({max} bytes): refused with 413; the terminal keeps its records and sends them again: raise adms.max_body_size",
            self.id,
            self.sn
        );
        self.refuse(413, "body over adms.max_body_size")
    }

    /// Whether the queue can take records now (not stopping, storage open).
    fn can_take(&self) -> Result<(), Answer> {
        if self.shutdown.is_cancelled() {
            return Err(self.refuse(503, "the gateway is stopping; send again later"));
        }
        if !self.sink.storage().is_open() {
            return Err(self.refuse(
                503,
                "the gateway's queue cannot store records now; send again later",
            ));
        }
        Ok(())
    }

    /// `cdata?table=ATTLOG`: punches, answered after their commit.
    pub async fn attlog(&self, q: &Query, body: &[u8], peer: &str) -> Answer {
        if let Err(a) = self.can_take() {
            return a;
        }
        let mut punches = Vec::new();
        let mut records = 0u64;
        let mut malformed = 0u64;
        for (no, line) in protocol::lines(body) {
            records += 1;
            match protocol::parse_attlog_line(&self.id, line) {
                Ok(p) => punches.push(p),
                Err(e) => {
                    malformed += 1;
                    self.log_malformed(peer, no, &e, line);
                }
            }
        }
        let s = &self.stats;
        s.lines_read.fetch_add(records, Ordering::Relaxed);
        s.malformed.fetch_add(malformed, Ordering::Relaxed);
        s.punches_read
            .fetch_add(punches.len() as u64, Ordering::Relaxed);
        s.last_line_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        let skew = (records == 1 && self.spec.realtime)
            .then(|| punches.first())
            .flatten()
            .map(|p| {
                crate::punch::resolve_local(self.tz, p.local_time).timestamp()
                    - Utc::now().timestamp()
            })
            .filter(|s| s.abs() < 3600);
        let n = punches.len();
        let outcomes = if n == 0 {
            Vec::new()
        } else {
            match self.sink.submit_all_committed(punches).await {
                Ok(o) => o,
                Err(_) => return self.refuse(503, "the gateway is stopping; send again later"),
            }
        };
        if let Some(IngestOutcome::Failed(reason)) = outcomes
            .iter()
            .find(|o| matches!(o, IngestOutcome::Failed(_)))
        {
            tracing::warn!(
                "device {} (SN {}): a push of {n} punches could not be committed ({reason}): answered 503, the terminal sends it again",
                self.id,
                self.sn
            );
            return self.refuse(
                503,
                "the gateway's queue refused the records; send again later",
            );
        }
        let now = Utc::now().timestamp();
        {
            let mut st = self.lock();
            if q.stamp.is_some() && st.stamps.attlog != q.stamp {
                st.stamps.attlog = q.stamp.clone();
                st.stamps_dirty = true;
            }
        }
        self.figures(|f| {
            f.pushes += 1;
            f.records_pushed += records;
            f.last_push_at = Some(now);
            if q.stamp.is_some() {
                f.last_stamp = q.stamp.clone();
            }
            if skew.is_some() {
                f.clock_skew_secs = skew;
            }
        });
        (200, format!("OK: {records}\n"))
    }

    fn log_malformed(&self, peer: &str, no: u64, e: &dyn std::fmt::Display, line: &[u8]) {
        let sample = crate::sources::formats::sample(line);
        let mut st = self.lock();
        if st.malformed_logged < MALFORMED_LOGGED {
            st.malformed_logged += 1;
            tracing::warn!(
                "device {} (SN {}, {peer}): malformed ATTLOG line {no} of a push: {e}: \"{sample}\" (counted as malformed; the rest of the push is taken)",
                self.id,
                self.sn
            );
            return;
        }
        st.malformed_suppressed += 1;
        let now = Instant::now();
        if st
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            tracing::warn!(
                "device {} (SN {}): {} more malformed ATTLOG lines; latest: line {no}: {e}: \"{sample}\"",
                self.id,
                self.sn,
                st.malformed_suppressed
            );
            st.malformed_suppressed = 0;
            st.last_summary = Some(now);
        }
    }

    /// `cdata?table=OPERLOG`: user names (kept for `clockbridge unmapped`), answered after they are
    /// saved.
    pub async fn operlog(&self, q: &Query, body: &[u8]) -> Answer {
        let op = protocol::parse_operlog(body);
        if !op.users.is_empty() {
            let mut names: std::collections::BTreeMap<String, String> =
                match self.store.user_names().await {
                    Ok(n) => n.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!("device {}: cannot read the user names: {e}", self.id);
                        return self
                            .refuse(503, "the gateway cannot store users now; send again later");
                    }
                };
            for (pin, name) in &op.users {
                if name.is_empty() {
                    names.remove(pin);
                } else {
                    names.insert(pin.clone(), name.clone());
                }
            }
            if let Err(e) = self
                .store
                .save_user_names(names.into_iter().collect())
                .await
            {
                tracing::warn!("device {}: cannot save the user names: {e}", self.id);
                return self.refuse(503, "the gateway cannot store users now; send again later");
            }
        }
        if q.stamp.is_some() {
            let mut st = self.lock();
            if st.stamps.operlog != q.stamp {
                st.stamps.operlog = q.stamp.clone();
                st.stamps_dirty = true;
            }
        }
        let users = op.users.len() as u64;
        self.figures(|f| f.user_names_seen += users);
        (200, "OK\n".into())
    }

    /// What the terminal says of itself (`INFO=` of a poll, or an options body).
    pub fn info(&self, info: Info) {
        if info == Info::default() {
            return;
        }
        self.figures(|f| {
            if info.firmware.is_some() {
                f.firmware = info.firmware;
            }
            f.device_users = info.users.or(f.device_users);
            f.device_fingerprints = info.fingerprints.or(f.device_fingerprints);
            f.device_records = info.records.or(f.device_records);
            if info.ip.is_some() {
                f.device_ip = info.ip;
            }
        });
    }

    /// `getrequest`: the commands due (each marked sent before it goes out), or `OK`.
    pub async fn getrequest(&self, q: &Query) -> Answer {
        if let Some(info) = &q.info {
            self.info(protocol::parse_info_param(info));
        }
        let all = match commands::list(&self.store).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!("device {}: cannot read its commands: {e}", self.id);
                return (200, "OK\n".into());
            }
        };
        let now = Utc::now().timestamp();
        let mut out = String::new();
        for mut c in all
            .iter()
            .filter(|c| c.due(now))
            .take(commands::PER_POLL)
            .cloned()
        {
            c.sent_at = Some(now);
            c.sends += 1;
            if let Err(e) = commands::save(&self.store, &c).await {
                tracing::warn!("device {}: cannot mark command {} sent: {e}", self.id, c.id);
                continue;
            }
            tracing::info!(
                "device {} (SN {}): command {} sent: {}",
                self.id,
                self.sn,
                c.id,
                c.text()
            );
            out.push_str(&protocol::command_line(&c.id, &c.text()));
        }
        let waiting = all.iter().filter(|c| c.answered_at.is_none()).count() as u64;
        self.figures(|f| f.commands_waiting = waiting);
        if out.is_empty() {
            (200, "OK\n".into())
        } else {
            (200, out)
        }
    }

    /// `devicecmd`: the results of commands, saved before the answer.
    pub async fn devicecmd(&self, body: &[u8]) -> Answer {
        for r in protocol::parse_cmd_results(body) {
            let mut c = match commands::find(&self.store, &r.id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    tracing::debug!(
                        "device {}: a result for command {:?}, not one of ours",
                        self.id,
                        r.id
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("device {}: cannot read command {}: {e}", self.id, r.id);
                    return (503, "FAIL: send again later\n".into());
                }
            };
            c.answered_at = Some(Utc::now().timestamp());
            c.ret = r.ret;
            if c.kind == CommandKind::Verify {
                c.device_sum = r
                    .get("AttlogSum")
                    .or_else(|| r.get("AttLogSum"))
                    .and_then(|v| v.trim().parse().ok());
                if let (Some(_), Some(q)) = (c.device_sum, self.store.queue()) {
                    match super::verify::queue_count(q, &self.id, c.from, c.to).await {
                        Ok(n) => c.queue_count = Some(n),
                        Err(e) => tracing::warn!("device {}: cannot count the queue: {e}", self.id),
                    }
                }
            }
            if let Err(e) = commands::save(&self.store, &c).await {
                tracing::warn!(
                    "device {}: cannot save the result of command {}: {e}",
                    self.id,
                    c.id
                );
                return (503, "FAIL: send again later\n".into());
            }
            let text = c.describe();
            match (c.kind, c.device_sum, c.queue_count) {
                (CommandKind::Verify, Some(d), Some(q)) if d != q => {
                    tracing::warn!("device {} (SN {}): command {text}", self.id, self.sn)
                }
                _ => tracing::info!("device {} (SN {}): command {text}", self.id, self.sn),
            }
            self.figures(|f| {
                f.last_command = Some(text);
                f.commands_waiting = f.commands_waiting.saturating_sub(1);
            });
        }
        (200, "OK\n".into())
    }
}
