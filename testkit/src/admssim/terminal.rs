//! The terminal's behaviour: handshake, pushes of its log from the last record answered `OK`,
//! heartbeats that fetch commands, and the commands themselves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::client::{request, Reply};

/// One record of the terminal's attendance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRecord {
    pub pin: String,
    pub time: NaiveDateTime,
    pub status: u8,
    pub verify: u8,
}

impl SimRecord {
    /// The ATTLOG line (without its end): the vendor layout, two reserved columns.
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t0\t0\t0",
            self.pin,
            self.time.format("%Y-%m-%d %H:%M:%S"),
            self.status,
            self.verify
        )
    }
}

/// A user the terminal knows (sent in its OPERLOG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    pub pin: String,
    pub name: String,
}

/// How the simulated terminal behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub sn: String,
    pub server: SocketAddr,
    pub users: Vec<SimUser>,
    /// Names in GB18030 (Chinese firmware) instead of UTF-8.
    pub gb18030_names: bool,
    /// Records per ATTLOG push at most (halved after a 413, down to 1).
    pub max_batch: usize,
    /// Overrides the handshake's `ErrorDelay` / `Delay` (tests shorten them).
    pub error_delay: Option<Duration>,
    pub delay: Option<Duration>,
    /// End lines with CRLF (most firmware) instead of LF.
    pub crlf: bool,
    /// One exchange's limit (no reply within it: a failure, sent again after `ErrorDelay`).
    pub request_timeout: Duration,
    pub firmware: String,
    /// Records of the log already pushed (to another server) before this one: never pushed unless
    /// a command asks for them.
    pub already_pushed: usize,
}

impl SimConfig {
    /// A terminal `sn` pushing to `server`, with every other setting at its default.
    pub fn new(sn: &str, server: SocketAddr) -> SimConfig {
        SimConfig {
            sn: sn.into(),
            server,
            users: Vec::new(),
            gb18030_names: false,
            max_batch: 1000,
            error_delay: None,
            delay: None,
            crlf: true,
            request_timeout: Duration::from_secs(30),
            firmware: "Ver 8.0.4.7-20231215".into(),
            already_pushed: 0,
        }
    }
}

/// What the terminal did, for tests to wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCounters {
    pub handshakes: u64,
    pub pushes_ok: u64,
    /// Pushes not answered `OK` (a non-200, no reply, a dropped connection): kept and sent again.
    pub pushes_failed: u64,
    pub refused_too_large: u64,
    /// Records of the log answered `OK` (the log's prefix).
    pub acked: usize,
    pub getrequests: u64,
    pub getrequests_ok: u64,
    pub commands_done: u64,
    pub users_sent: bool,
    /// The handshake's options as last received (`TimeZone`, `Delay`...).
    pub options: Vec<(String, String)>,
    /// The last status a request got from a server that refused it.
    pub last_refusal: Option<u16>,
}

pub(super) struct Model {
    pub(super) log: Vec<SimRecord>,
    pub(super) stamp_base: u64,
    pub(super) batch: usize,
    pub(super) resend_from: Option<usize>,
}

/// The running terminal.
pub struct SimTerminal {
    cfg: SimConfig,
    model: Arc<Mutex<Model>>,
    wake: Arc<Notify>,
    counters: watch::Sender<SimCounters>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimTerminal {
    /// Starts the terminal with `log` already in its memory (pushed from the first record: a
    /// catch-up after an outage).
    pub fn start(cfg: SimConfig, log: Vec<SimRecord>) -> SimTerminal {
        let model = Arc::new(Mutex::new(Model {
            log,
            stamp_base: 9000,
            batch: cfg.max_batch.max(1),
            resend_from: None,
        }));
        let wake = Arc::new(Notify::new());
        let (counters, _) = watch::channel(SimCounters {
            acked: cfg.already_pushed,
            ..SimCounters::default()
        });
        let stop = CancellationToken::new();
        let runner = Runner {
            cfg: cfg.clone(),
            model: model.clone(),
            wake: wake.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
        };
        let task = Some(tokio::spawn(runner.run()));
        SimTerminal {
            cfg,
            model,
            wake,
            counters,
            stop,
            task,
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A punch on the terminal now: pushed at once (realtime).
    pub fn punch(&self, pin: &str, time: NaiveDateTime) {
        self.add(vec![SimRecord {
            pin: pin.into(),
            time,
            status: 0,
            verify: 15,
        }]);
    }

    /// Records added to the log (pushed at once).
    pub fn add(&self, records: Vec<SimRecord>) {
        self.model().log.extend(records);
        self.wake.notify_one();
    }

    /// Records in the log.
    pub fn log_len(&self) -> usize {
        self.model().log.len()
    }

    /// Sends the whole log again from record `from`, with stamps from `stamp_base` on (what a
    /// terminal does after its clock or its stamps were reset).
    pub fn resend_from(&self, from: usize, stamp_base: u64) {
        let mut m = self.model();
        m.resend_from = Some(from);
        m.stamp_base = stamp_base;
        drop(m);
        self.wake.notify_one();
    }

    /// What it did so far.
    pub fn counters(&self) -> SimCounters {
        self.counters.borrow().clone()
    }

    /// Waits until `pred` holds (re-checked after every exchange), at most `limit`.
    pub async fn wait(
        &self,
        limit: Duration,
        mut pred: impl FnMut(&SimCounters) -> bool,
    ) -> Result<SimCounters, String> {
        let mut rx = self.counters.subscribe();
        let work = async {
            loop {
                let c = rx.borrow_and_update().clone();
                if pred(&c) {
                    return c;
                }
                if rx.changed().await.is_err() {
                    return c;
                }
            }
        };
        tokio::time::timeout(limit, work).await.map_err(|_| {
            format!(
                "terminal {}: not within {limit:?}: {:?}",
                self.cfg.sn,
                self.counters()
            )
        })
    }

    /// Stops the terminal (its log stays as it is).
    pub async fn stop(mut self) -> SimCounters {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.counters()
    }
}

impl Drop for SimTerminal {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Runner {
    cfg: SimConfig,
    model: Arc<Mutex<Model>>,
    wake: Arc<Notify>,
    counters: watch::Sender<SimCounters>,
    stop: CancellationToken,
}

impl Runner {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut SimCounters)) {
        self.counters.send_modify(f);
    }

    fn end(&self) -> &'static str {
        if self.cfg.crlf {
            "\r\n"
        } else {
            "\n"
        }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        let target = format!(
            "{path}{}SN={}",
            if path.contains('?') { "&" } else { "?" },
            self.cfg.sn
        );
        match request(
            self.cfg.server,
            method,
            &target,
            body,
            self.cfg.request_timeout,
        )
        .await
        {
            Ok((r, _)) => Some(r),
            Err(_) => None,
        }
    }

    fn option_secs(&self, key: &str, default: u64) -> u64 {
        self.counters
            .borrow()
            .options
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(default)
    }

    fn error_delay(&self) -> Duration {
        self.cfg
            .error_delay
            .unwrap_or_else(|| Duration::from_secs(self.option_secs("ErrorDelay", 30)))
    }

    fn delay(&self) -> Duration {
        self.cfg
            .delay
            .unwrap_or_else(|| Duration::from_secs(self.option_secs("Delay", 10)))
    }

    /// Sleeps `d` unless stopped; false when stopped.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    async fn run(self) {
        let mut registered = false;
        let mut next_poll = tokio::time::Instant::now();
        while !self.stop.is_cancelled() {
            if !registered {
                let path = "/iclock/cdata?options=all&pushver=2.4.1&language=69";
                match self.call("GET", path, b"").await {
                    Some(r) if r.status == 200 && r.text().starts_with("GET OPTION FROM") => {
                        let options = r
                            .text()
                            .lines()
                            .filter_map(|l| l.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        self.count(|c| {
                            c.handshakes += 1;
                            c.options = options;
                        });
                        registered = true;
                    }
                    other => {
                        self.count(|c| c.last_refusal = other.map(|r| r.status));
                        if !self.pause(self.error_delay()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            if !self.counters.borrow().users_sent && !self.cfg.users.is_empty() {
                match self
                    .call(
                        "POST",
                        "/iclock/cdata?table=OPERLOG&Stamp=1",
                        &self.operlog(),
                    )
                    .await
                {
                    Some(r) if r.is_ok() => self.count(|c| c.users_sent = true),
                    _ => {
                        if !self.pause(self.error_delay()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            if let Some(ok) = self.push_next().await {
                if !ok {
                    registered = false;
                    if !self.pause(self.error_delay()).await {
                        return;
                    }
                }
                continue;
            }
            if tokio::time::Instant::now() >= next_poll {
                self.poll().await;
                next_poll = tokio::time::Instant::now() + self.delay();
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_poll) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    fn operlog(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for u in &self.cfg.users {
            let line = format!(
                "USER PIN={}\tName={}\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0000000000000000\tVerify=0",
                u.pin, u.name
            );
            if self.cfg.gb18030_names {
                body.extend_from_slice(&encoding_rs::GB18030.encode(&line).0);
            } else {
                body.extend_from_slice(line.as_bytes());
            }
            body.extend_from_slice(self.end().as_bytes());
        }
        body
    }

    fn attlog_body(&self, records: &[SimRecord]) -> Vec<u8> {
        let end = self.end();
        let mut body = String::with_capacity(records.len() * 40);
        for r in records {
            body.push_str(&r.line());
            body.push_str(end);
        }
        body.into_bytes()
    }

    /// Pushes the next batch of records not answered `OK` yet: `None` when there is none,
    /// `Some(true)` when it was accepted, `Some(false)` when it must be sent again.
    async fn push_next(&self) -> Option<bool> {
        let (start, records, stamp) = {
            let mut m = self.model();
            let acked = self.counters.borrow().acked;
            let start = m.resend_from.take().unwrap_or(acked).min(acked);
            if start >= m.log.len() {
                return None;
            }
            let end = (start + m.batch).min(m.log.len());
            (start, m.log[start..end].to_vec(), m.stamp_base + end as u64)
        };
        let path = format!("/iclock/cdata?table=ATTLOG&Stamp={stamp}");
        let reply = self.call("POST", &path, &self.attlog_body(&records)).await;
        let end = start + records.len();
        match reply {
            Some(r) if r.is_ok() => {
                self.count(|c| {
                    c.pushes_ok += 1;
                    c.acked = c.acked.max(end);
                });
                if end < self.counters.borrow().acked {
                    // a re-send in progress: go on from where it got to
                    self.model().resend_from = Some(end);
                }
                Some(true)
            }
            other => {
                let status = other.as_ref().map(|r| r.status);
                if status == Some(413) {
                    let mut m = self.model();
                    m.batch = (m.batch / 2).max(1);
                }
                if start < self.counters.borrow().acked {
                    self.model().resend_from = Some(start);
                }
                self.count(|c| {
                    c.pushes_failed += 1;
                    c.last_refusal = status;
                    if status == Some(413) {
                        c.refused_too_large += 1;
                    }
                });
                Some(false)
            }
        }
    }

    async fn poll(&self) {
        let (users, records) = (self.cfg.users.len(), self.model().log.len());
        let info = format!(
            "{},{users},0,{records},127.0.0.1,10,7,12,2,111",
            self.cfg.firmware
        );
        let path = format!("/iclock/getrequest?INFO={}", info.replace(' ', "%20"));
        self.count(|c| c.getrequests += 1);
        let Some(r) = self.call("GET", &path, b"").await else {
            return;
        };
        if r.status != 200 {
            self.count(|c| c.last_refusal = Some(r.status));
            return;
        }
        self.count(|c| c.getrequests_ok += 1);
        let mut results = String::new();
        for line in r.text().lines() {
            let Some(rest) = line.strip_prefix("C:") else {
                continue;
            };
            let Some((id, cmd)) = rest.split_once(':') else {
                continue;
            };
            results.push_str(&self.execute(id, cmd).await);
        }
        if !results.is_empty() {
            let mut sent = false;
            while !sent && !self.stop.is_cancelled() {
                match self
                    .call("POST", "/iclock/devicecmd", results.as_bytes())
                    .await
                {
                    Some(r) if r.is_ok() => sent = true,
                    _ => {
                        if !self.pause(self.error_delay()).await {
                            return;
                        }
                    }
                }
            }
            let n = results.lines().filter(|l| l.starts_with("ID=")).count() as u64;
            self.count(|c| c.commands_done += n);
        }
    }

    /// Runs one command; its result line.
    async fn execute(&self, id: &str, cmd: &str) -> String {
        let range = |cmd: &str| -> Option<(NaiveDateTime, NaiveDateTime)> {
            let field = |k: &str| {
                cmd.split(['\t', ' '])
                    .collect::<Vec<_>>()
                    .windows(2)
                    .find_map(|w| w[0].strip_prefix(k).map(|d| format!("{d} {}", w[1])))
                    .and_then(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S").ok())
            };
            Some((field("StartTime=")?, field("EndTime=")?))
        };
        if let Some(rest) = cmd.strip_prefix("DATA QUERY ATTLOG") {
            let Some((from, to)) = range(rest) else {
                return format!("ID={id}&Return=-1002&CMD=DATA\n");
            };
            let found: Vec<SimRecord> = self
                .model()
                .log
                .iter()
                .filter(|r| r.time >= from && r.time <= to)
                .cloned()
                .collect();
            if found.is_empty() {
                return format!("ID={id}&Return=-1&CMD=DATA\n");
            }
            let batch = self.model().batch;
            for chunk in found.chunks(batch) {
                loop {
                    let body = self.attlog_body(chunk);
                    match self
                        .call("POST", "/iclock/cdata?table=ATTLOG&Stamp=0", &body)
                        .await
                    {
                        Some(r) if r.is_ok() => break,
                        _ => {
                            if !self.pause(self.error_delay()).await {
                                return String::new();
                            }
                        }
                    }
                }
            }
            return format!("ID={id}&Return=0&CMD=DATA\n");
        }
        if let Some(rest) = cmd.strip_prefix("VERIFY SUM ATTLOG") {
            let Some((from, to)) = range(rest) else {
                return format!("ID={id}&Return=-1002&CMD=VERIFY\n");
            };
            let n = self
                .model()
                .log
                .iter()
                .filter(|r| r.time >= from && r.time <= to)
                .count();
            return format!("ID={id}&Return=0&CMD=VERIFY SUM&AttlogSum={n}\n");
        }
        if cmd == "INFO" {
            let body = format!(
                "~DeviceName=SimFace\nFWVersion={}\nUserCount={}\nTransactionCount={}\n",
                self.cfg.firmware,
                self.cfg.users.len(),
                self.model().log.len()
            );
            let _ = self
                .call("POST", "/iclock/cdata?table=options", body.as_bytes())
                .await;
            return format!("ID={id}&Return=0&CMD=INFO\n");
        }
        if cmd == "CHECK" {
            return format!("ID={id}&Return=0&CMD=CHECK\n");
        }
        format!(
            "ID={id}&Return=-1002&CMD={}\n",
            cmd.split(' ').next().unwrap_or("")
        )
    }
}
