//! The ZKTeco source (`kind = "zk"`): clockbridge dials the terminal on TCP 4370, reads the new part of
//! its attendance log every `poll_interval`, and between polls receives realtime punches.
//!
//! One task per device, with its own reconnect back-off: an offline device never holds up another.
//!
//! A poll, on one connection:
//! 1. reads the device's clock and records the skew (and sets the clock, with `sync_clock`);
//! 2. disables the device, reads the record count, and reads the log from the watermark on (the record
//!    at the watermark is read again and compared byte for byte, which proves the log is the same log);
//! 3. re-enables the device (always, even after an error: after a broken connection, the next
//!    connection re-enables it first thing);
//! 4. hands the new records to the ingest stage and waits until every one is committed;
//! 5. only then advances the watermark, in the device's state store ([`super::watermark`]);
//! 6. when the user table was read again (its user count changed) or the record size became known,
//!    keeps the users' names in the queue under the id their punches carry ([`super::users`]), for
//!    `clockbridge unmapped` and `status`.
//!
//! With `clear_device_log`, steps 4 and 5 happen before the device is re-enabled, and the log is
//! cleared only if every record on it is committed (the watermark equals the record count) and the count
//! read again just before clearing has not changed.
//!
//! Guarantees:
//! - Nothing is queued twice: records reach the queue only after a complete read, and every punch has
//!   its deterministic idempotent key, so the overlap of a retried read or of a realtime event with the
//!   next poll is recognised as a duplicate.
//! - Nothing is lost: the watermark advances only after the commit; a read broken mid-transfer is
//!   retried whole, over a new connection; a log that shrank or changed, or a new serial number at the
//!   same address, is read from the start (WARN, and `last_warning` in `status`).
//! - The comm key appears in no log line or status.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::codec::EF_ATTLOG;
use super::figures::{UnmappedUser, ZkFigures};
use super::spec::{UserIdSource, ZkSpec};
use super::users::UserTable;
use super::watermark::{self, Watermark};
use super::{AttRecord, Event, Timeouts, ZkClient, ZkError};
use crate::device_stats::DeviceStats;
use crate::ingest::{IngestOutcome, PunchSink};
use crate::punch::{resolve_local, Punch};
use crate::queue::store::{DeviceStore, StoreError};
use crate::sources::kind::SourceContext;
use crate::sources::reconnect::{Attempt, Attempts, Failure, Link, Quiet, Reconnect};

/// Most unmapped users listed in `status`.
const UNMAPPED_LISTED: usize = 50;

/// What stops a session.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Zk(#[from] ZkError),
    #[error("device {0}: the queue is closed (the daemon is stopping)")]
    SinkClosed(String),
    #[error("device {device}: {failed} of {total} punches could not be committed ({reason}); the watermark stays, the next poll reads them again")]
    NotCommitted {
        device: String,
        failed: usize,
        total: usize,
        reason: String,
    },
    #[error("device {device}: cannot store the watermark: {source}")]
    Queue { device: String, source: StoreError },
}

struct ZkDevice {
    cfg: ZkSpec,
    /// The device id.
    id: String,
    tz: chrono_tz::Tz,
    poll_interval: std::time::Duration,
    reconnect_max_secs: u64,
    address: String,
    /// `device ID (ADDRESS)`, the subject of every message.
    label: String,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    store: DeviceStore,
    timeouts: Timeouts,
    /// The watermark (loaded from the queue at the first connection).
    wm: Option<Watermark>,
    wm_loaded: bool,
    /// The device's user table, as last read.
    users: UserTable,
    /// Users already reported as unmapped.
    unmapped: HashSet<String>,
    skew_log: Quiet,
    skew_warned: bool,
    /// New records committed by the current poll (for its summary line).
    poll_new: u64,
    /// The device was disabled and the session ended before it was re-enabled: re-enable it first
    /// thing on the next connection.
    maybe_disabled: bool,
}

/// Runs one `zk` device until `ctx.shutdown` is cancelled; see the module documentation.
pub async fn run(cfg: ZkSpec, ctx: SourceContext) {
    let SourceContext {
        id,
        tz,
        poll_interval,
        reconnect_max_secs,
        sink,
        stats,
        shutdown,
        store,
    } = ctx;
    let Some(address) = cfg.zk_address() else {
        let msg = format!("device {id}: a zk device needs address = \"host\" or \"host:port\"");
        tracing::error!("{msg}");
        stats.set_error(msg);
        shutdown.cancelled().await;
        return;
    };
    let mut dev = ZkDevice {
        label: format!("device {id} ({address})"),
        id,
        tz,
        poll_interval,
        reconnect_max_secs,
        address,
        sink,
        stats,
        store,
        timeouts: Timeouts {
            packet: cfg.io_timeout(),
            chunk: cfg.io_timeout() * 3,
            ..Timeouts::default()
        },
        maybe_disabled: false,
        wm: None,
        wm_loaded: false,
        users: UserTable::default(),
        unmapped: HashSet::new(),
        skew_log: Quiet::default(),
        skew_warned: false,
        poll_new: 0,
        cfg,
    };
    dev.run(&shutdown).await;
}

/// One connection to the device (the attempt).
struct Sessions<'a>(&'a mut ZkDevice, &'a CancellationToken);

impl Attempts for Sessions<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Attempt {
        match self.0.session(self.1, link).await {
            // stopped by shutdown, or the ingest stage is gone
            Ok(()) | Err(PollError::SinkClosed(_)) => Attempt::Stop,
            Err(e) => Attempt::Retry(Failure::new(e)),
        }
    }
}

impl ZkDevice {
    async fn run(&mut self, shutdown: &CancellationToken) {
        let reconnect = Reconnect::new(
            self.label.clone(),
            self.stats.clone(),
            shutdown.clone(),
            self.reconnect_max_secs,
        );
        reconnect.run(&mut Sessions(self, shutdown)).await;
        // the ingest stage is gone: wait for the daemon to finish stopping
        shutdown.cancelled().await;
    }

    /// Changes the device's figures.
    fn figures(&self, f: impl FnOnce(&mut ZkFigures)) {
        self.stats.update_figures(f);
    }

    fn set_connected(&self, on: bool) {
        if on {
            self.stats.connections.store(1, Ordering::Relaxed);
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.connections.store(0, Ordering::Relaxed);
            self.figures(|z| z.realtime = None);
        }
        self.stats.notify_changed();
    }

    /// One connection, until an error (`Err`) or shutdown (`Ok`).
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        link: &mut Link,
    ) -> Result<(), PollError> {
        let connect = ZkClient::connect(
            &self.label,
            &self.address,
            self.cfg.comm_key.expose(),
            self.timeouts,
        );
        let mut client = tokio::select! {
            c = connect => c?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        self.set_connected(true);
        let r = self.serve(&mut client, shutdown, link).await;
        self.set_connected(false);
        match r? {
            Served::Idle => client.exit().await,
            Served::CutShort => client.abandon().await,
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        client: &mut ZkClient,
        shutdown: &CancellationToken,
        link: &mut Link,
    ) -> Result<Served, PollError> {
        if self.maybe_disabled {
            client.enable().await?;
            self.maybe_disabled = false;
            tracing::info!(
                "{}: re-enabled the device after the broken session",
                self.label
            );
        }
        self.load_watermark().await?;
        let serial = client.serial_number().await?;
        tracing::info!(
            "{}: connected (serial number {})",
            self.label,
            serial.as_deref().unwrap_or("not given")
        );
        self.check_serial(serial).await?;
        let mut subscribed = false;
        loop {
            let poll = tokio::select! {
                r = self.poll(client) => r,
                _ = shutdown.cancelled() => return Ok(Served::CutShort),
            };
            poll?;
            link.progressed();
            link.up("log read");
            if self.cfg.realtime && !subscribed {
                client.reg_event(EF_ATTLOG).await?;
                subscribed = true;
                self.figures(|z| z.realtime = Some(true));
            }
            // events met while the poll waited for replies: the poll has read them from the log
            // already, unless they came after its read; submitting them again is harmless
            let early = client.take_events();
            if !early.is_empty() {
                self.submit_events(early).await?;
            }
            let next = tokio::time::Instant::now() + self.poll_interval;
            loop {
                tokio::select! {
                    evs = client.wait_event(), if subscribed => self.submit_events(evs?).await?,
                    _ = tokio::time::sleep_until(next) => break,
                    _ = shutdown.cancelled() => return Ok(Served::Idle),
                }
            }
        }
    }

    async fn load_watermark(&mut self) -> Result<(), PollError> {
        if self.wm_loaded {
            return Ok(());
        }
        self.wm = watermark::load(&self.store)
            .await
            .map_err(|source| PollError::Queue {
                device: self.id.clone(),
                source,
            })?;
        self.wm_loaded = true;
        if let Some(w) = &self.wm {
            let records = w.records;
            self.figures(|z| z.watermark = Some(records));
        }
        Ok(())
    }

    async fn save_watermark(&mut self, w: Watermark) -> Result<(), PollError> {
        watermark::save(&self.store, &w)
            .await
            .map_err(|source| PollError::Queue {
                device: self.id.clone(),
                source,
            })?;
        let records = w.records;
        self.wm = Some(w);
        self.figures(|z| z.watermark = Some(records));
        Ok(())
    }

    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        let at = Utc::now().timestamp();
        self.figures(|z| {
            z.last_warning = Some(msg);
            z.last_warning_at = Some(at);
        });
    }

    /// A device with another serial number at this address is another device: its log starts over.
    async fn check_serial(&mut self, serial: Option<String>) -> Result<(), PollError> {
        self.figures(|z| z.serial_number = serial.clone());
        let Some(serial) = serial else {
            return Ok(());
        };
        match self.wm.clone() {
            Some(w) if w.serial.as_deref().is_some_and(|s| s != serial) => {
                self.warn(format!(
                    "{}: serial number changed from {} to {serial}: another device answers at this address (replaced, or an address changed); its whole log is read, and punches already queued are recognised as duplicates",
                    self.label,
                    w.serial.as_deref().unwrap_or("?"),
                ));
                self.users.clear();
                self.save_watermark(Watermark {
                    address: self.address.clone(),
                    serial: Some(serial),
                    ..Watermark::default()
                })
                .await
            }
            Some(w) if w.serial.is_none() || w.address != self.address => {
                self.save_watermark(Watermark {
                    address: self.address.clone(),
                    serial: Some(serial),
                    ..w
                })
                .await
            }
            Some(_) => Ok(()),
            None => {
                self.wm = Some(Watermark {
                    address: self.address.clone(),
                    serial: Some(serial),
                    ..Watermark::default()
                });
                Ok(())
            }
        }
    }

    /// Measures the device's clock against the gateway's; sets it with `sync_clock`.
    /// Returns the skew (device minus gateway, seconds) once the clock is checked (and set).
    async fn check_clock(&mut self, client: &mut ZkClient) -> Result<i64, PollError> {
        let tz = self.tz;
        let skew = measure_skew(client, tz).await?;
        let threshold = self.cfg.max_clock_skew_secs as i64;
        let mut skew_now = skew;
        if skew.abs() >= threshold.max(1) {
            if self.cfg.sync_clock {
                let now = Utc::now().with_timezone(&tz).naive_local();
                client.set_time(now).await?;
                skew_now = measure_skew(client, tz).await?;
                tracing::info!(
                    "{}: device clock was {skew:+} s off; set from the gateway's clock ({}), now {skew_now:+} s",
                    self.label,
                    self.tz
                );
                let at = Utc::now().timestamp();
                self.figures(|z| z.clock_set_at = Some(at));
            } else if self.skew_log.failed() {
                self.skew_warned = true;
                self.warn(format!(
                    "{}: device clock is {skew:+} s off the gateway's (threshold {threshold} s): punches carry the device's time; set the clock on the device, or set sync_clock = true",
                    self.label
                ));
            }
        } else if self.skew_warned {
            self.skew_warned = false;
            self.skew_log.recovered();
            tracing::info!(
                "{}: device clock is back within {threshold} s ({skew:+} s)",
                self.label
            );
        }
        let at = Utc::now().timestamp();
        self.figures(|z| {
            z.clock_skew_secs = Some(skew_now);
            z.clock_skew_measured_at = Some(at);
        });
        Ok(skew_now)
    }

    /// One poll: see the module documentation.
    async fn poll(&mut self, client: &mut ZkClient) -> Result<(), PollError> {
        let skew = self.check_clock(client).await?;
        self.poll_new = 0;
        self.maybe_disabled = true;
        client.disable().await?;
        let read = self.read_disabled(client).await;
        // always re-enabled, even when the read failed; on a broken connection this fails too, and
        // the next connection re-enables it first thing
        let enabled = client.enable().await;
        if enabled.is_ok() {
            self.maybe_disabled = false;
        }
        let fresh = read?;
        enabled?;
        if let Some(fresh) = fresh {
            self.commit(fresh).await?;
        }
        self.save_user_names().await;
        let at = Utc::now().timestamp();
        self.figures(|z| {
            z.last_poll_at = Some(at);
            z.polls = Some(z.polls.unwrap_or(0) + 1);
        });
        // the story of each poll at INFO (one line a poll interval, never one per punch)
        let wm = self.wm.as_ref().map_or(0, |w| w.records);
        tracing::info!(
            "{}: polled: {} new records committed, watermark {wm} records, clock {skew:+} s off the gateway's",
            self.label,
            self.poll_new
        );
        Ok(())
    }

    /// The part of a poll done with the device disabled. Returns the records still to commit (with
    /// `clear_device_log` they are committed here, before the clear, and `None` is returned).
    async fn read_disabled(&mut self, client: &mut ZkClient) -> Result<Option<Fresh>, PollError> {
        let sizes = client.free_sizes().await?;
        let n = sizes.records as u64;
        self.figures(|z| {
            z.device_records = Some(n);
            z.device_users = Some(sizes.users as u64);
        });
        let eight = self.wm.as_ref().is_some_and(|w| w.record_size == 8);
        let want_users = self.cfg.user_names
            || self.cfg.user_id_source == UserIdSource::UserTable
            || (eight && self.cfg.realtime);
        if want_users && self.users.needs_read(sizes.users) {
            let users = client.read_users(sizes.users as u64).await?;
            self.users.replace(users, sizes.users);
        }
        let wm = self.wm.clone().unwrap_or_else(|| Watermark {
            address: self.address.clone(),
            ..Watermark::default()
        });
        let mut first = 0;
        if n < wm.records {
            let msg = format!(
                "{}: the device's log shrank from {} to {n} records (cleared on the device?): reading it from the start; punches already queued are recognised as duplicates",
                self.label, wm.records
            );
            if wm.clearing {
                tracing::info!("{}: the log was cleared by clockbridge", self.label);
            } else {
                self.warn(msg);
            }
        } else if wm.records > 0 && wm.last_record.is_some() {
            first = wm.records - 1;
        }
        let mut log = client.read_attendance(first, n).await?;
        let mut skip = 0;
        if first > 0 {
            let same = log.record_size == wm.record_size
                && !log.records.is_empty()
                && Some(log.raw_record(0)) == wm.last_record.as_deref();
            if same {
                skip = 1;
            } else {
                self.warn(format!(
                    "{}: the device's log changed below the watermark (record {} differs: cleared and refilled, or replaced): reading it from the start; punches already queued are recognised as duplicates",
                    self.label, wm.records
                ));
                log = client.read_attendance(0, n).await?;
            }
        }
        let fresh = Fresh {
            log,
            skip,
            total: n,
            wm,
        };
        if !self.cfg.clear_device_log {
            return Ok(Some(fresh));
        }
        self.commit(fresh).await?;
        self.clear_if_all_committed(client, n).await?;
        Ok(None)
    }

    /// Clears the device's log when every record on it is committed and nothing arrived since.
    async fn clear_if_all_committed(
        &mut self,
        client: &mut ZkClient,
        n: u64,
    ) -> Result<(), PollError> {
        let Some(wm) = self.wm.clone() else {
            return Ok(());
        };
        if n == 0 || wm.records != n {
            return Ok(());
        }
        let again = client.free_sizes().await?.records as u64;
        if again != n {
            tracing::info!(
                "{}: {} records on the device now, {n} read: not clearing; the next poll reads the new ones",
                self.label,
                again
            );
            return Ok(());
        }
        self.save_watermark(Watermark {
            clearing: true,
            ..wm.clone()
        })
        .await?;
        client.clear_attlog().await?;
        self.save_watermark(Watermark {
            records: 0,
            last_record: None,
            clearing: false,
            ..wm
        })
        .await?;
        tracing::info!(
            "{}: cleared the device's log: {n} records, every one committed to the queue",
            self.label
        );
        let at = Utc::now().timestamp();
        self.figures(|z| {
            z.log_cleared_at = Some(at);
            z.records_cleared = Some(z.records_cleared.unwrap_or(0) + n);
            z.device_records = Some(0);
        });
        Ok(())
    }

    /// Commits the new records of a read, then advances the watermark.
    async fn commit(&mut self, fresh: Fresh) -> Result<(), PollError> {
        let Fresh {
            log,
            skip,
            total,
            wm,
        } = fresh;
        let new: Vec<Punch> = log.records[skip.min(log.records.len())..]
            .iter()
            .map(|r| self.punch(r))
            .collect();
        let count = new.len();
        self.poll_new += count as u64;
        if count > 0 {
            self.stats
                .lines_read
                .fetch_add(count as u64, Ordering::Relaxed);
            self.stats
                .punches_read
                .fetch_add(count as u64, Ordering::Relaxed);
            self.stats
                .last_line_at
                .store(Utc::now().timestamp(), Ordering::Relaxed);
            let users: Vec<String> = new.iter().map(|p| p.device_user_id.clone()).collect();
            let outcomes = self
                .sink
                .submit_all_committed(new)
                .await
                .map_err(|_| PollError::SinkClosed(self.id.clone()))?;
            self.check_outcomes(&users, &outcomes)?;
        }
        let end = log.first + log.records.len() as u64;
        debug_assert!(end <= total);
        let last_record = match log.records.len() {
            0 => wm.last_record.clone().filter(|_| end > 0),
            k => Some(log.raw_record(k - 1).to_vec()),
        };
        let advanced = Watermark {
            records: end,
            record_size: if log.record_size > 0 {
                log.record_size
            } else {
                wm.record_size
            },
            last_record: if end == 0 { None } else { last_record },
            clearing: false,
            ..wm
        };
        if Some(&advanced) != self.wm.as_ref() {
            self.save_watermark(advanced).await?;
        }
        if count > 0 {
            tracing::debug!(
                "{}: {count} new records committed; watermark {end}",
                self.label
            );
        }
        Ok(())
    }

    fn check_outcomes(
        &mut self,
        users: &[String],
        outcomes: &[IngestOutcome],
    ) -> Result<(), PollError> {
        let mut failed = 0;
        let mut reason = String::new();
        for (user, o) in users.iter().zip(outcomes) {
            match o {
                IngestOutcome::Failed(e) => {
                    failed += 1;
                    reason = e.clone();
                }
                IngestOutcome::Unmapped => self.note_unmapped(user),
                _ => {}
            }
        }
        if failed > 0 {
            return Err(PollError::NotCommitted {
                device: self.id.clone(),
                failed,
                total: outcomes.len(),
                reason,
            });
        }
        Ok(())
    }

    /// Keeps the names of the device's users in the queue, by the device user id their punches
    /// carry, for `clockbridge unmapped` and `status` (with `user_names`): again after each read of
    /// the user table, and once the record size (which decides that id) is known or changes. A
    /// failure is logged and tried again at the next poll: the names are no reason to stop reading
    /// punches.
    async fn save_user_names(&mut self) {
        let size = self.wm.as_ref().map_or(0, |w| w.record_size);
        let names = match self.users.names_to_keep(self.cfg.user_id_source, size) {
            Some(names) if self.cfg.user_names => names,
            _ => return,
        };
        match self.store.save_user_names(names).await {
            Ok(()) => self.users.names_kept(size),
            Err(e) => tracing::warn!(
                "{}: cannot keep the names of the device's users in the queue ({e}); `clockbridge unmapped` shows the names it had; trying again at the next poll",
                self.label
            ),
        }
    }

    fn note_unmapped(&mut self, user: &str) {
        if !self.unmapped.insert(user.to_string()) {
            return;
        }
        let name = self.users.name_of(user);
        tracing::info!(
            "{}: user {}{} has no mapping; their punches wait as unmapped until the mapping table has them (clockbridge unmapped lists them)",
            self.label,
            crate::logging::visible(user),
            name.as_deref()
                .map(|n| format!(" ({})", crate::logging::visible(n)))
                .unwrap_or_default()
        );
        self.figures(|z| {
            if z.unmapped_users.len() < UNMAPPED_LISTED {
                z.unmapped_users.push(UnmappedUser {
                    device_user_id: user.to_string(),
                    name,
                });
            }
        });
    }

    /// The device user id of a record, per `user_id_source`.
    fn user_of(&self, uid: u16, carried: &str) -> String {
        self.users.user_of(self.cfg.user_id_source, uid, carried)
    }

    /// The device user id of a realtime punch, the same as that of its record in the log (so the
    /// two have the same idempotent key). Devices with 8-byte records send the user id in events but
    /// only the internal number in the log: with `user_id_source = "record"`, the event's user id is
    /// turned into that number through the user table. `None` when that is impossible (a user not
    /// in the table yet): the punch is then left to the next poll, which reads it from the log.
    fn event_user(&self, e: &Event) -> Option<String> {
        let eight = self.wm.as_ref().is_some_and(|w| w.record_size == 8);
        match (self.cfg.user_id_source, e.short_id) {
            (UserIdSource::UserTable, true) => Some(match e.user.parse::<u16>() {
                Ok(uid) => self.user_of(uid, ""),
                Err(_) => e.user.clone(),
            }),
            (UserIdSource::Record, false) if eight => self.users.uid_of(&e.user),
            _ => Some(e.user.clone()),
        }
    }

    fn punch(&self, r: &AttRecord) -> Punch {
        Punch {
            device_id: self.id.clone(),
            device_user_id: self.user_of(r.uid, &r.user_id),
            local_time: r.time,
            state: Some(r.state as i64),
            verify: Some(r.verify as i64),
            workcode: (r.workcode != 0).then(|| r.workcode.to_string()),
            state_text: None,
        }
    }

    /// Commits realtime punches (the watermark is not moved: the next poll reads them from the log
    /// and finds them already queued).
    async fn submit_events(&mut self, evs: Vec<Event>) -> Result<(), PollError> {
        if evs.is_empty() {
            return Ok(());
        }
        let punches: Vec<Punch> = evs
            .iter()
            .filter_map(|e| {
                let Some(user) = self.event_user(e) else {
                    tracing::debug!(
                        "{}: realtime punch of user {} who is not in the user table yet; the next poll reads it",
                        self.label,
                        e.user
                    );
                    return None;
                };
                Some(Punch {
                    device_id: self.id.clone(),
                    device_user_id: user,
                    local_time: e.time,
                    state: Some(e.state as i64),
                    verify: Some(e.verify as i64),
                    workcode: None,
                    state_text: None,
                })
            })
            .collect();
        if punches.is_empty() {
            return Ok(());
        }
        let n = punches.len() as u64;
        self.stats.lines_read.fetch_add(n, Ordering::Relaxed);
        self.stats.punches_read.fetch_add(n, Ordering::Relaxed);
        self.stats
            .last_line_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        self.stats.update_figures(|z: &mut ZkFigures| {
            z.realtime_events = Some(z.realtime_events.unwrap_or(0) + n)
        });
        let users: Vec<String> = punches.iter().map(|p| p.device_user_id.clone()).collect();
        let outcomes = self
            .sink
            .submit_all_committed(punches)
            .await
            .map_err(|_| PollError::SinkClosed(self.id.clone()))?;
        // a realtime punch that failed to commit is still in the device's log: the next poll reads it
        let _ = self.check_outcomes(&users, &outcomes);
        self.stats.notify_changed();
        Ok(())
    }
}

/// What [`ZkDevice::serve`] ended with.
enum Served {
    /// Stopped between polls: the session can be closed politely.
    Idle,
    /// Stopped in the middle of a poll.
    CutShort,
}

/// A read whose new records are not yet committed.
struct Fresh {
    log: super::client::AttLog,
    /// Records of `log` already committed (the re-read watermark record).
    skip: usize,
    /// Records on the device.
    total: u64,
    /// The watermark the read started from.
    wm: Watermark,
}

/// Device clock minus gateway clock, in whole seconds.
async fn measure_skew(client: &mut ZkClient, tz: chrono_tz::Tz) -> Result<i64, ZkError> {
    let before = Utc::now();
    let device = client.get_time().await?;
    let after = Utc::now();
    let gateway = before + (after - before) / 2;
    // the device's clock is read in whole seconds (truncated): on average half a second behind
    let device = resolve_local(tz, device) + chrono::TimeDelta::milliseconds(500);
    let ms = (device - gateway).num_milliseconds();
    Ok(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) >= 500))
}
