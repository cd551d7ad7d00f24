//! The Hikvision source (`kind = "hikvision"`): clockbridge reads the terminal's event log over ISAPI
//! (a pull, [`super::pull`]) when it starts and every `poll_interval`, and between pulls reads the
//! alert stream (`realtime`), whose punches arrive within a second.
//!
//! One task per device, with its own reconnect back-off: an offline terminal never holds up another.
//!
//! A session (one [`Reconnect`] attempt):
//! 1. reads `deviceInfo`: a serial number other than the watermark's is another terminal (replaced,
//!    factory reset with a new board): reported, and its log read from the start;
//! 2. with `realtime`, opens the alert stream first, then
//! 3. measures the clock skew (and sets the clock, with `sync_clock`), and pulls the log from the
//!    watermark: everything written before the stream opened is in the log, everything after comes on
//!    the stream, so no gap is left;
//! 4. reads the user list (at the first session, then hourly) and keeps the names for
//!    `clockbridge unmapped`;
//! 5. reads the stream until the next pull is due. A stream that ends, breaks or stays silent for
//!    `stream_timeout` (no event, no heartbeat) is counted as a drop, opened again after a back-off,
//!    and followed by a pull (steps 2 and 3).
//!
//! A refused login ([`HikError::Auth`]: "check the device user and password") holds the device for
//! [`AUTH_HOLD_MIN`], doubling up to [`AUTH_HOLD_MAX`], before the next try: terminals lock an account
//! after a few failed logins. The refusals are counted (`auth_failures` in `status` and `/metrics`).
//!
//! Guarantees: a punch is counted as taken only once committed; the watermark advances only after
//! the commit of every punch below it; realtime punches are committed at once and found again by
//! the next pull as duplicates (same idempotent key); events that are not punches are never sent.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{HikClient, HikError};
use super::figures::HikFigures;
use super::isapi::{self, Alert};
use super::multipart::MultipartReader;
use super::pull::{self, HikWatermark, Progress, Verdict};
use super::spec::HikSpec;
use crate::device_stats::DeviceStats;
use crate::ingest::{IngestOutcome, PunchSink};
use crate::queue::store::{DeviceStore, StoreError};
use crate::sources::kind::SourceContext;
use crate::sources::reconnect::{Attempt, Attempts, Backoff, Failure, Link, Quiet, Reconnect};

/// The shortest wait after a refused login.
pub const AUTH_HOLD_MIN: Duration = Duration::from_secs(60);
/// The longest wait after refused logins (terminals unlock an account after about 30 minutes).
pub const AUTH_HOLD_MAX: Duration = Duration::from_secs(30 * 60);
/// How often the user list is read again.
const USERS_EVERY: Duration = Duration::from_secs(3600);

/// What stops a session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Hik(#[from] HikError),
    #[error("device {0}: the queue is closed (the daemon is stopping)")]
    SinkClosed(String),
    #[error("device {device}: a punch could not be committed ({reason}); the watermark stays, the next pull reads it again")]
    NotCommitted { device: String, reason: String },
    #[error("device {device}: cannot store the watermark: {source}")]
    Store { device: String, source: StoreError },
    #[error("{0}: the event log search did not advance (numOfMatches 0 with MORE): the terminal's search is stuck; trying again later")]
    Stuck(String),
}

struct HikDevice {
    cfg: HikSpec,
    id: String,
    tz: chrono_tz::Tz,
    poll_interval: Duration,
    reconnect_max_secs: u64,
    address: String,
    label: String,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    store: DeviceStore,
    client: Option<HikClient>,
    wm: Option<HikWatermark>,
    /// The skew at the previous pull (a clock set back widens the next pull's window).
    last_skew: Option<i64>,
    users_read_at: Option<Instant>,
    unmapped: HashSet<String>,
    skew_log: Quiet,
    auth_failures: u64,
    /// Consecutive refused logins (the hold doubles with each), and when the hold ends.
    auth_streak: u32,
    auth_hold_until: Option<Instant>,
}

/// Runs one `hikvision` device until `ctx.shutdown` is cancelled; see the module documentation.
pub async fn run(cfg: HikSpec, ctx: SourceContext) {
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
    let address = cfg.base_url().unwrap_or_default();
    let mut dev = HikDevice {
        label: format!("device {id} ({address})"),
        id,
        tz,
        poll_interval,
        reconnect_max_secs,
        address,
        sink,
        stats,
        store,
        client: None,
        wm: None,
        last_skew: None,
        users_read_at: None,
        unmapped: HashSet::new(),
        skew_log: Quiet::default(),
        auth_failures: 0,
        auth_streak: 0,
        auth_hold_until: None,
        cfg,
    };
    let reconnect = Reconnect::new(
        dev.label.clone(),
        dev.stats.clone(),
        shutdown.clone(),
        dev.reconnect_max_secs,
    );
    reconnect.run(&mut Sessions(&mut dev, &shutdown)).await;
    shutdown.cancelled().await;
}

struct Sessions<'a>(&'a mut HikDevice, &'a CancellationToken);

impl Attempts for Sessions<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Attempt {
        let dev = &mut *self.0;
        // after a refused login, no request before the hold is over (the reconnect back-off alone
        // is much shorter)
        if let Some(until) = dev.auth_hold_until {
            tokio::select! {
                _ = self.1.cancelled() => return Attempt::Stop,
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        let r = dev.session(self.1, link).await;
        dev.set_connected(false);
        match r {
            Ok(()) | Err(SessionError::SinkClosed(_)) => Attempt::Stop,
            Err(SessionError::Hik(e)) if e.is_auth() => {
                let hold = dev.auth_refused();
                Attempt::Retry(
                    Failure::new(format!("{e} (next try in {} s)", hold.as_secs())).serious(),
                )
            }
            Err(e) => Attempt::Retry(Failure::new(e)),
        }
    }
}

/// How the wait between pulls ended.
enum Waited {
    PollDue,
    /// The stream dropped (or a reset was seen on it): pull now, and open it again.
    StreamEnded,
    Shutdown,
}

impl HikDevice {
    fn figures(&self, f: impl FnOnce(&mut HikFigures)) {
        self.stats.update_figures(f);
    }

    fn set_connected(&self, on: bool) {
        let was = self
            .stats
            .connections
            .swap(i64::from(on), Ordering::Relaxed);
        if on && was == 0 {
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
        }
        if !on {
            self.figures(|h| h.realtime = None);
        }
        self.stats.notify_changed();
    }

    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        let at = Utc::now().timestamp();
        self.figures(|h| {
            h.last_warning = Some(msg);
            h.last_warning_at = Some(at);
        });
    }

    /// Notes a refused login; returns how long to wait before the next.
    fn auth_refused(&mut self) -> Duration {
        let hold = AUTH_HOLD_MIN
            .saturating_mul(1 << self.auth_streak.min(5))
            .min(AUTH_HOLD_MAX);
        self.auth_streak += 1;
        self.auth_hold_until = Some(Instant::now() + hold);
        let failures = self.auth_failures;
        let at = Utc::now().timestamp() + hold.as_secs() as i64;
        self.figures(|h| {
            h.auth_failures = failures;
            h.auth_retry_at = Some(at);
        });
        hold
    }

    fn sync_client_counts(&mut self) {
        let Some(c) = &self.client else { return };
        let (fails, re) = (c.auth_failures, c.rechallenges);
        if fails != self.auth_failures {
            self.auth_failures = fails;
        }
        let total = self.auth_failures;
        self.figures(|h| {
            h.auth_failures = total;
            h.rechallenges = (re > 0).then_some(re);
        });
    }

    /// Runs a call of the client, keeping the refused-login counts in the figures.
    async fn with_client<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut HikClient) -> Result<T, HikError>,
    ) -> Result<T, SessionError> {
        if self.client.is_none() {
            self.client = Some(HikClient::new(&self.cfg, &self.label)?);
        }
        let c = self.client.as_mut().expect("made above");
        let r = f(c).await;
        self.sync_client_counts();
        Ok(r?)
    }

    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        link: &mut Link,
    ) -> Result<(), SessionError> {
        let info = tokio::select! {
            r = self.with_client(async |c| c.device_info().await) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        if self.auth_streak > 0 {
            tracing::info!(
                "{}: the terminal accepts the user and password again",
                self.label
            );
            self.auth_streak = 0;
            self.auth_hold_until = None;
            self.figures(|h| h.auth_retry_at = None);
        }
        self.set_connected(true);
        link.up("connected");
        self.check_device(info).await?;
        let mut stream: Option<Stream> = None;
        let mut stream_backoff = Backoff::new(self.reconnect_max_secs.max(1));
        let mut reopen_at: Option<Instant> = None;
        loop {
            if self.cfg.realtime
                && stream.is_none()
                && reopen_at.is_none_or(|t| t <= Instant::now())
            {
                stream = tokio::select! {
                    s = self.open_stream() => s?,
                    _ = shutdown.cancelled() => return Ok(()),
                };
                reopen_at = None;
            }
            tokio::select! {
                r = self.pull_all() => r?,
                _ = shutdown.cancelled() => return Ok(()),
            }
            link.progressed();
            let next = Instant::now() + self.poll_interval;
            let until = reopen_at.map_or(next, |t| t.min(next));
            match self.wait(&mut stream, until, shutdown).await? {
                Waited::Shutdown => return Ok(()),
                Waited::PollDue => {}
                Waited::StreamEnded => {
                    let delay = stream_backoff.next_delay();
                    reopen_at = Some(Instant::now() + delay);
                    // the pull right away closes the gap; the stream reopens after the back-off
                }
            }
            if stream.as_ref().is_some_and(|s| s.parts > 0) {
                stream_backoff.reset();
            }
        }
    }

    /// Reads `deviceInfo` into the figures; another serial number than the watermark's restarts it.
    async fn check_device(&mut self, info: isapi::DeviceInfo) -> Result<(), SessionError> {
        let (model, sn, fw) = (
            info.model.clone(),
            info.serial_number.clone(),
            info.firmware_version.clone(),
        );
        self.figures(|h| {
            h.model = model;
            h.serial_number = sn;
            h.firmware_version = fw;
        });
        if self.wm.is_none() {
            let wm: Option<HikWatermark> = self
                .store
                .load(pull::NAME)
                .await
                .map_err(|source| self.store_err(source))?;
            let wm = wm.unwrap_or_else(|| HikWatermark {
                address: self.address.clone(),
                ..HikWatermark::default()
            });
            let s = wm.serial;
            self.figures(|h| h.serial_watermark = (s > 0).then_some(s));
            self.wm = Some(wm);
        }
        let mut wm = self.wm.clone().unwrap_or_default();
        match (&wm.device_serial, &info.serial_number) {
            (Some(old), Some(new)) if old != new => {
                self.warn(format!(
                    "{}: the terminal's serial number changed from {} to {}: another terminal answers at this address (replaced?); its whole log is read, and punches already queued are recognised as duplicates",
                    self.label,
                    crate::logging::visible(old),
                    crate::logging::visible(new)
                ));
                self.figures(|h| h.serial_resets = Some(h.serial_resets.unwrap_or(0) + 1));
                wm = HikWatermark {
                    address: self.address.clone(),
                    device_serial: Some(new.clone()),
                    ..HikWatermark::default()
                };
                self.save_watermark(wm).await
            }
            (None, Some(new)) => {
                wm.device_serial = Some(new.clone());
                wm.address = self.address.clone();
                self.wm = Some(wm);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn store_err(&self, source: StoreError) -> SessionError {
        SessionError::Store {
            device: self.id.clone(),
            source,
        }
    }

    async fn save_watermark(&mut self, wm: HikWatermark) -> Result<(), SessionError> {
        self.store
            .save(pull::NAME, &wm)
            .await
            .map_err(|source| self.store_err(source))?;
        let s = wm.serial;
        self.figures(|h| h.serial_watermark = (s > 0).then_some(s));
        self.wm = Some(wm);
        Ok(())
    }

    /// Measures the terminal's clock (device minus gateway, whole seconds); sets it with
    /// `sync_clock`. Returns the skew.
    async fn check_clock(&mut self) -> Result<i64, SessionError> {
        let tz = self.tz;
        let skew = self.measure_skew().await?;
        let threshold = self.cfg.max_clock_skew_secs as i64;
        let mut now_skew = skew;
        if skew.abs() >= threshold.max(1) {
            if self.cfg.sync_clock {
                let zone = self.with_client(async |c| c.time().await).await?.time_zone;
                let now = Utc::now().with_timezone(&tz).fixed_offset();
                let doc = isapi::time_request(&now, zone.as_deref());
                self.with_client(async |c| c.set_time(doc).await).await?;
                now_skew = self.measure_skew().await?;
                tracing::info!(
                    "{}: terminal clock was {skew:+} s off; set from the gateway's clock ({tz}), now {now_skew:+} s",
                    self.label
                );
                let at = Utc::now().timestamp();
                self.figures(|h| h.clock_set_at = Some(at));
            } else if self.skew_log.failed() {
                self.warn(format!(
                    "{}: terminal clock is {skew:+} s off the gateway's (threshold {threshold} s): punches carry the terminal's time; set the clock on the terminal, or set sync_clock = true",
                    self.label
                ));
            }
        } else {
            self.skew_log.recovered();
        }
        let at = Utc::now().timestamp();
        self.figures(|h| {
            h.clock_skew_secs = Some(now_skew);
            h.clock_skew_measured_at = Some(at);
        });
        Ok(now_skew)
    }

    async fn measure_skew(&mut self) -> Result<i64, SessionError> {
        let before = Utc::now();
        let t = self.with_client(async |c| c.time().await).await?;
        let after = Utc::now();
        let gateway = before + (after - before) / 2;
        // read in whole seconds (truncated): on average half a second behind
        let device = pull::instant(&t.local_time, self.tz) + chrono::TimeDelta::milliseconds(500);
        let ms = (device - gateway).num_milliseconds();
        Ok(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) >= 500))
    }

    /// The clock check, one pull, and the user names when due.
    async fn pull_all(&mut self) -> Result<(), SessionError> {
        let skew = self.check_clock().await?;
        let lookback = match self.last_skew {
            None => pull::RESTART_LOOKBACK_SECS,
            // a clock set back since the last pull writes events older than the watermark's time
            Some(prev) => pull::LOOKBACK_SECS + (prev - skew).max(0),
        };
        self.pull(lookback).await?;
        self.last_skew = Some(skew);
        if self.cfg.user_names
            && self
                .users_read_at
                .is_none_or(|t| t.elapsed() >= USERS_EVERY)
        {
            self.read_users().await?;
            self.users_read_at = Some(Instant::now());
        }
        Ok(())
    }

    /// One pull of the event log: see [`super::pull`].
    async fn pull(&mut self, lookback: i64) -> Result<(), SessionError> {
        let wm = self.wm.clone().unwrap_or_default();
        let start = pull::start_time(wm.last_at, lookback, self.tz);
        let search_id = pull::search_id(&self.id);
        let mut p = Progress::new(wm);
        let mut position = 0u64;
        loop {
            let body = isapi::acs_event_request(&search_id, position, pull::MAX_RESULTS, &start);
            let page = self.with_client(async |c| c.acs_events(body).await).await?;
            let mut punches = Vec::new();
            let mut last = None;
            for e in &page.events {
                let (new, reset) = p.is_new(e, self.tz);
                if reset {
                    self.serial_reset(e, &p.wm);
                }
                if let (Some(s), Some(t)) = (e.serial, e.time) {
                    last = Some((s, Some(pull::instant(&t, self.tz).timestamp())));
                } else if let Some(s) = e.serial {
                    last = Some((s, None));
                }
                if let Some(t) = e.time {
                    let at = pull::instant(&t, self.tz).timestamp();
                    p.newest_at = Some(p.newest_at.map_or(at, |n| n.max(at)));
                }
                if !new {
                    continue;
                }
                match pull::verdict(e, &self.cfg.event_minors, &self.id, self.tz) {
                    Verdict::Punch(punch) => punches.push(punch),
                    Verdict::Skip => p.skipped += 1,
                    Verdict::Unreadable(why) => p.unreadable.push(why),
                }
            }
            let n = punches.len() as u64;
            p.new_punches += n;
            p.since_save += page.events.len() as u64;
            self.count_read(n);
            let acks = pull::hand_over(&self.sink, punches)
                .await
                .ok_or_else(|| SessionError::SinkClosed(self.id.clone()))?;
            p.page(last, acks);
            if p.since_save >= pull::SAVE_EVERY {
                if let Some(allowed) = p.settle(false).await {
                    self.advance(&p, allowed).await?;
                    p.since_save = 0;
                }
            }
            position += page.num_of_matches;
            if page.status != isapi::SearchStatus::More {
                break;
            }
            if page.num_of_matches == 0 {
                return Err(SessionError::Stuck(self.label.clone()));
            }
        }
        let allowed = p.settle(true).await;
        self.note_outcomes(&p);
        if let Some(reason) = p.failed.clone() {
            if let Some(a) = allowed {
                self.advance(&p, a).await?;
            }
            return Err(SessionError::NotCommitted {
                device: self.id.clone(),
                reason,
            });
        }
        if let Some(a) = allowed {
            self.advance(&p, a).await?;
        }
        let (skipped, newest) = (p.skipped, p.newest_at);
        let at = Utc::now().timestamp();
        self.figures(|h| {
            h.pulls = Some(h.pulls.unwrap_or(0) + 1);
            h.last_pull_at = Some(at);
            if skipped > 0 {
                h.events_skipped = Some(h.events_skipped.unwrap_or(0) + skipped);
            }
            if newest.is_some() && newest > h.last_event_at {
                h.last_event_at = newest;
            }
        });
        let wm = self.wm.as_ref().map_or(0, |w| w.serial);
        tracing::info!(
            "{}: pulled: {} new punches committed, {skipped} other events skipped, serial watermark {wm}",
            self.label,
            p.new_punches
        );
        Ok(())
    }

    fn serial_reset(&self, e: &isapi::AcsEvent, wm: &HikWatermark) {
        self.warn(format!(
            "{}: the terminal's serial numbers went back (event serialNo {} is newer than the watermark's {}): its log was reset; every punch from there on is read again, and those already queued are recognised as duplicates",
            self.label,
            e.serial.unwrap_or(0),
            wm.serial
        ));
        self.figures(|h| h.serial_resets = Some(h.serial_resets.unwrap_or(0) + 1));
    }

    async fn advance(
        &mut self,
        p: &Progress,
        (serial, at): (u64, Option<i64>),
    ) -> Result<(), SessionError> {
        let mut wm = self.wm.clone().unwrap_or_default();
        if wm.serial == serial && wm.last_at == at && !p.reset {
            return Ok(());
        }
        wm.serial = serial;
        wm.last_at = at.or(wm.last_at);
        self.save_watermark(wm).await
    }

    fn count_read(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.stats.lines_read.fetch_add(n, Ordering::Relaxed);
        self.stats.punches_read.fetch_add(n, Ordering::Relaxed);
        self.stats
            .last_line_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
    }

    fn note_outcomes(&mut self, p: &Progress) {
        for why in &p.unreadable {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            self.warn(format!("{}: {why}: skipped", self.label));
        }
        for user in &p.unmapped {
            self.note_unmapped(user);
        }
    }

    fn note_unmapped(&mut self, user: &str) {
        if self.unmapped.insert(user.to_string()) {
            tracing::info!(
                "{}: user {} has no mapping; their punches wait as unmapped until the mapping table has them (clockbridge unmapped lists them)",
                self.label,
                crate::logging::visible(user)
            );
        }
    }

    /// Reads the user list and keeps the names (a failure is logged, never fatal).
    async fn read_users(&mut self) -> Result<(), SessionError> {
        let search_id = pull::search_id(&self.id);
        let mut names = Vec::new();
        let mut position = 0u64;
        loop {
            let body = isapi::user_search_request(&search_id, position, pull::MAX_RESULTS);
            let page = match self.with_client(async |c| c.users(body).await).await {
                Ok(p) => p,
                Err(SessionError::Hik(e)) if !e.is_auth() => {
                    tracing::warn!("{e}: the names of the terminal's users are not read this time");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            names.extend(page.users);
            position += page.num_of_matches;
            if page.status != isapi::SearchStatus::More || page.num_of_matches == 0 {
                break;
            }
        }
        let n = names.len();
        if let Err(e) = self.store.save_user_names(names).await {
            tracing::warn!(
                "{}: cannot keep the names of the terminal's users in the queue ({e}); trying again at the next read",
                self.label
            );
        } else {
            tracing::debug!("{}: {n} user names kept", self.label);
        }
        Ok(())
    }

    /// Opens the alert stream; `None` (counted as a drop, logged) when the terminal refuses it for
    /// another reason than the login.
    async fn open_stream(&mut self) -> Result<Option<Stream>, SessionError> {
        match self.with_client(async |c| c.alert_stream().await).await {
            Ok((resp, boundary)) => {
                self.figures(|h| h.realtime = Some(true));
                Ok(Some(Stream {
                    resp,
                    reader: MultipartReader::new(&boundary),
                    parts: 0,
                }))
            }
            Err(SessionError::Hik(e)) if !e.is_auth() => {
                self.warn(format!(
                    "{e}: reading the log every poll_interval only, until it opens"
                ));
                self.figures(|h| {
                    h.realtime = Some(false);
                    h.stream_drops = Some(h.stream_drops.unwrap_or(0) + 1);
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the stream (when open) until `until`.
    async fn wait(
        &mut self,
        stream: &mut Option<Stream>,
        until: Instant,
        shutdown: &CancellationToken,
    ) -> Result<Waited, SessionError> {
        let silence = Duration::from_secs(self.cfg.stream_timeout_secs);
        loop {
            let Some(s) = stream.as_mut() else {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => return Ok(Waited::PollDue),
                    _ = shutdown.cancelled() => return Ok(Waited::Shutdown),
                }
            };
            let read = tokio::select! {
                r = tokio::time::timeout(silence, s.resp.chunk()) => r,
                _ = tokio::time::sleep_until(until) => return Ok(Waited::PollDue),
                _ = shutdown.cancelled() => return Ok(Waited::Shutdown),
            };
            let why = match read {
                Ok(Ok(Some(bytes))) => {
                    s.reader.push(&bytes);
                    match self.stream_parts(stream).await {
                        Ok(true) => continue,
                        Ok(false) => "it reported a serial reset".to_string(),
                        Err(e) => return Err(e),
                    }
                }
                Ok(Ok(None)) => "the terminal closed it".to_string(),
                Ok(Err(e)) => format!("it broke ({e})"),
                Err(_) => format!(
                    "silent for {} s (no event, no heartbeat)",
                    silence.as_secs()
                ),
            };
            *stream = None;
            self.figures(|h| {
                h.realtime = Some(false);
                h.stream_drops = Some(h.stream_drops.unwrap_or(0) + 1);
            });
            tracing::info!(
                "{}: the alert stream ended: {why}; pulling the log from the watermark to close the gap, and opening the stream again",
                self.label
            );
            return Ok(Waited::StreamEnded);
        }
    }

    /// Handles the complete parts of the stream's buffer. `Ok(false)` when the stream must be
    /// dropped for a pull (an error in its framing, or a serial reset seen in an event).
    async fn stream_parts(&mut self, stream: &mut Option<Stream>) -> Result<bool, SessionError> {
        loop {
            let Some(s) = stream.as_mut() else {
                return Ok(false);
            };
            let part = match s.reader.next_part() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(!s.reader.ended()),
                Err(e) => {
                    self.warn(format!("{}: {e}", self.label));
                    return Ok(false);
                }
            };
            s.parts += 1;
            let is_doc = part
                .content_type
                .as_deref()
                .is_none_or(|t| t.contains("json") || t.contains("xml") || t.starts_with("text"));
            if !is_doc {
                continue;
            }
            match isapi::parse_alert(&part.body) {
                Ok(Alert::Event(e)) => {
                    if !self.realtime_event(e).await? {
                        return Ok(false);
                    }
                }
                Ok(Alert::Heartbeat) | Ok(Alert::Other(_)) => {}
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("{}: an alert stream part cannot be read: {e}", self.label);
                }
            }
        }
    }

    /// Commits the punch of a realtime event. `Ok(false)` when the event shows a serial reset (the
    /// pull that follows reads it). The watermark moves when the event is the next one after it.
    async fn realtime_event(&mut self, e: isapi::AcsEvent) -> Result<bool, SessionError> {
        let wm = self.wm.clone().unwrap_or_default();
        let mut probe = Progress::new(wm.clone());
        let (_, reset) = probe.is_new(&e, self.tz);
        if reset {
            return Ok(false);
        }
        if let Some(t) = e.time {
            let at = pull::instant(&t, self.tz).timestamp();
            self.figures(|h| {
                if Some(at) > h.last_event_at {
                    h.last_event_at = Some(at);
                }
            });
        }
        match pull::verdict(&e, &self.cfg.event_minors, &self.id, self.tz) {
            Verdict::Punch(punch) => {
                let user = punch.device_user_id.clone();
                self.count_read(1);
                self.figures(|h| h.realtime_events = Some(h.realtime_events.unwrap_or(0) + 1));
                let outcome = self
                    .sink
                    .submit_committed(punch)
                    .await
                    .map_err(|_| SessionError::SinkClosed(self.id.clone()))?;
                match outcome {
                    // still in the terminal's log: the next pull reads it again
                    IngestOutcome::Failed(_) => return Ok(true),
                    IngestOutcome::Unmapped => self.note_unmapped(&user),
                    _ => {}
                }
            }
            Verdict::Skip => {
                self.figures(|h| h.events_skipped = Some(h.events_skipped.unwrap_or(0) + 1))
            }
            Verdict::Unreadable(why) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{}: realtime {why}; the next pull reads it", self.label);
                return Ok(true);
            }
        }
        if let Some(s) = e.serial.filter(|s| *s == wm.serial + 1 && wm.serial > 0) {
            let at = e.time.map(|t| pull::instant(&t, self.tz).timestamp());
            let mut next = wm;
            next.serial = s;
            next.last_at = at.or(next.last_at);
            self.save_watermark(next).await?;
        }
        self.stats.notify_changed();
        Ok(true)
    }
}

/// An open alert stream.
struct Stream {
    resp: reqwest::Response,
    reader: MultipartReader,
    /// Parts read so far.
    parts: u64,
}
