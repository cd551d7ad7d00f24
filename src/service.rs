//! Running under systemd (`Type=notify`): readiness, status lines, stopping, and a watchdog that is
//! fed only while the health model ([`crate::health`]) finds nothing a restart would cure.
//!
//! # Notifications
//! Sent to `$NOTIFY_SOCKET` (sd-notify 0.5) from a thread of their own, `clockbridge-notify`: a
//! datagram socket that nobody reads blocks its sender once its queue is full, and that must never
//! be a runtime thread (it would freeze the daemon, SIGTERM included). While that thread is blocked,
//! at most [`NOTIFY_BACKLOG`] notifications wait; later ones are dropped, with one WARN. Outside
//! systemd (no `NOTIFY_SOCKET`) nothing is sent and no supervisor task runs.
//! - `STATUS=starting: ...` before [`crate::daemon::start`];
//! - `READY=1` with `STATUS=ready: 3 devices (1 online), queue 12 pending, ...` only after
//!   `daemon::start` returned: the queue is open and migrated, in-flight rows of a previous run are
//!   pending again, the ingest writer, the sender and every source task are running. A start that
//!   fails sends `STATUS=failed to start: <error>` and the process exits 1 (systemd then restarts it);
//! - `STATUS=running: ...` refreshed while running (every half watchdog interval, or every
//!   [`STATUS_INTERVAL`] without a watchdog); `STATUS=degraded: ...` while a condition holds that a
//!   restart would not cure (the disk is full, the queue file is damaged, the platform times out, an
//!   app-level failure, an inbox stopped), with its message; `STATUS=stuck: ...` while one holds
//!   that a restart cures;
//! - `STOPPING=1` with `STATUS=stopping: ...` as soon as SIGTERM (or SIGINT) arrives, before the
//!   orderly stop begins.
//!
//! # Watchdog
//! When systemd sets `WATCHDOG_USEC` (`WatchdogSec=` in the unit), a supervisor task wakes every half
//! interval, asks the health model for its verdict ([`Monitor::assess`]) and sends `WATCHDOG=1` only if
//! no condition that a restart cures holds ([`crate::health::Verdict::restart`]): the queue's database
//! thread answers (within [`crate::health::DB_ANSWER_LIMIT`]) and the punch sender shows activity
//! within [`crate::health::Limits::sender_idle`] (95 s with the defaults). The other conditions are
//! seen by the same judgment and shown in `STATUS=`, but keep the pings going: killing the daemon
//! would not free disk space, repair a file or speed up the platform, and could lose the punches it
//! holds in memory.
//!
//! A third check is implicit: the ping is sent by a task on the async runtime, so a starved or
//! deadlocked runtime stops the pings too.
//!
//! When a restart condition appears the task logs one ERROR naming it (and an INFO if it clears),
//! sets `STATUS=stuck: ...` and stops pinging: systemd kills the service `WatchdogSec=` after the
//! last ping and `Restart=on-failure` starts it again, within about the condition's limit +
//! `WatchdogSec=` (95 s + 60 s with the defaults and the shipped unit). Nothing committed is lost by
//! that kill: rows in flight are re-sent on start with their idempotent id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::{Monitor, Verdict};
use crate::queue::Counts;

/// Waits, at most `within`, until the notify thread has sent every notification handed to it so far:
/// before the process exits (a failed start's `STATUS=` would otherwise go with it).
pub fn flush(within: Duration) {
    if !under_service_manager() {
        return;
    }
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    let deadline = std::time::Instant::now() + within;
    let mut out = Outgoing::Flush(done);
    // the queue may be full for a moment: try until the deadline, never block past it
    loop {
        match outbox().try_send(out) {
            Ok(()) => break,
            Err(TrySendError::Full(o)) if std::time::Instant::now() < deadline => {
                out = o;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let _ = wait.recv_timeout(left);
}

/// How often `STATUS=` is refreshed when there is no watchdog.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Notifications that may wait for the notify thread; more are dropped.
pub const NOTIFY_BACKLOG: usize = 16;

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
pub fn under_service_manager() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// What the notify thread is handed: a notification, or a request to say when every one handed
/// before it was sent ([`flush`]).
enum Outgoing {
    Message(String),
    Flush(SyncSender<()>),
}

/// The queue of the notify thread (started by the first notification).
fn outbox() -> &'static SyncSender<Outgoing> {
    static OUTBOX: OnceLock<SyncSender<Outgoing>> = OnceLock::new();
    OUTBOX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Outgoing>(NOTIFY_BACKLOG);
        let spawned = std::thread::Builder::new()
            .name("clockbridge-notify".into())
            .spawn(move || {
                let mut warned = false;
                while let Ok(out) = rx.recv() {
                    let msg = match out {
                        Outgoing::Message(m) => m,
                        Outgoing::Flush(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    };
                    // blocks while the socket's queue is full: only this thread waits
                    if let Err(e) = sd_notify::notify(&[NotifyState::Custom(&msg)]) {
                        if !warned {
                            warned = true;
                            tracing::warn!(error = %e, "systemd: cannot send a notification to NOTIFY_SOCKET");
                        } else {
                            tracing::debug!(error = %e, "systemd: cannot send a notification");
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "systemd: cannot start the notify thread; notifications are not sent");
        }
        tx
    })
}

/// Hands `states` to the notify thread (never blocks); a notification dropped because that thread
/// is stuck is logged once.
pub fn notify(states: &[NotifyState]) {
    static DROPPED: AtomicBool = AtomicBool::new(false);
    if !under_service_manager() {
        return;
    }
    let msg: Vec<String> = states.iter().map(ToString::to_string).collect();
    match outbox().try_send(Outgoing::Message(msg.join("\n"))) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            if !DROPPED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    backlog = NOTIFY_BACKLOG,
                    "systemd: NOTIFY_SOCKET takes no notifications (nobody reads it?); dropping them until it does (the daemon itself is not held up)"
                );
            }
        }
        Err(TrySendError::Disconnected(_)) => {
            if !DROPPED.swap(true, Ordering::Relaxed) {
                tracing::warn!("systemd: the notify thread is gone; notifications are dropped");
            }
        }
    }
}

/// Sends `STATUS=<text>`.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// The `STATUS=` text: `<what>: 3 devices (1 online), queue 12 pending, 0 in flight, ...; <problems>`
/// (`uploads ok` when there is none).
pub fn status_line(
    what: &str,
    devices: usize,
    online: usize,
    counts: Option<&Counts>,
    problems: &str,
) -> String {
    let mut s = format!(
        "{what}: {devices} device{} ({online} online)",
        if devices == 1 { "" } else { "s" }
    );
    match counts {
        Some(c) => {
            let t = &c.total;
            s.push_str(&format!(
                ", queue {} pending, {} in flight, {} dead, {} unmapped",
                t.pending, t.in_flight, t.dead, t.unmapped
            ));
        }
        None => s.push_str(", queue not answering"),
    }
    if problems.is_empty() {
        s.push_str("; uploads ok");
    } else {
        s.push_str("; ");
        s.push_str(problems);
    }
    s
}

/// The `STATUS=` line for `verdict`: `running`, `degraded` (conditions a restart does not cure) or
/// `stuck` (conditions it does: the watchdog stops pinging).
fn verdict_line(
    monitor: &Monitor,
    what: &str,
    verdict: &Verdict,
    counts: Option<&Counts>,
) -> String {
    let devices = &monitor.parts().devices;
    let online = devices
        .values()
        .filter(|d| d.stats.snapshot().online)
        .count();
    let what = if verdict.restart() {
        "stuck"
    } else if verdict.healthy() {
        what
    } else {
        "degraded"
    };
    status_line(
        what,
        devices.len(),
        online,
        counts,
        &verdict.summary(|_| true),
    )
}

/// The systemd side of a running daemon: readiness sent, the supervisor (status and watchdog) running.
pub struct Service {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// How long a look waits for the database thread's answer (a healthy one answers in ms).
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long the queue counts of a status line may take (the line says "queue not answering" then).
const COUNTS_WAIT: Duration = Duration::from_secs(2);

/// The queue counts for a status line, unless the database thread is not answering (a question
/// for it would only wait in its queue).
async fn counts(monitor: &Monitor, verdict: &Verdict, wait: Duration) -> Option<Counts> {
    if !verdict.ready() {
        return None;
    }
    tokio::time::timeout(wait, monitor.parts().queue.counts())
        .await
        .ok()
        .and_then(Result::ok)
}

impl Service {
    /// Sends `STATUS=starting: ...` (call it before `daemon::start`).
    pub fn starting() {
        status("starting: opening the queue, starting the sender and the sources");
    }

    /// Sends `STATUS=failed to start: <error>`.
    pub fn failed(error: &dyn std::fmt::Display) {
        status(&format!("failed to start: {error:#}"));
        // the process exits next: let systemd have the reason first
        flush(Duration::from_secs(2));
    }

    /// Sends `READY=1` with a status line (call it after `daemon::start` returned), and starts the
    /// supervisor: status refreshes, and the watchdog when systemd asked for one.
    pub async fn ready(monitor: Arc<Monitor>) -> Service {
        let stop = CancellationToken::new();
        if !under_service_manager() {
            return Service { stop, task: None };
        }
        // the status line only: a slow answer must not hold READY=1 back for long
        let verdict = monitor.assess(PROBE_WAIT).await;
        let counts = counts(&monitor, &verdict, COUNTS_WAIT).await;
        let line = verdict_line(&monitor, "ready", &verdict, counts.as_ref());
        notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        let watchdog = sd_notify::watchdog_enabled().filter(|w| !w.is_zero());
        let limits = monitor.parts().limits;
        match watchdog {
            Some(every) => tracing::info!(
                watchdog_ms = every.as_millis() as u64,
                db_limit_secs = limits.db_answer.as_secs(),
                sender_limit_secs = limits.sender_idle.as_secs(),
                "systemd: ready; watchdog pinged while nothing a restart would cure is wrong"
            ),
            None => tracing::info!("systemd: ready (no watchdog)"),
        }
        let task = tokio::spawn(supervise(
            monitor,
            watchdog,
            line,
            stop.clone(),
            Arc::new(notify),
        ));
        Service {
            stop,
            task: Some(task),
        }
    }

    /// Ends the supervisor (no ping can follow), then sends `STOPPING=1` with a status line. systemd
    /// does not watch a stopping service, so the watchdog stays quiet from here on.
    pub async fn stopping(mut self, why: &str) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!(
                "stopping ({why}): committing received punches, finishing requests in flight"
            )),
        ]);
    }
}

/// Where the supervisor's notifications go ([`notify`], or a test's collector).
type Notifier = Arc<dyn Fn(&[NotifyState<'_>]) + Send + Sync>;

async fn supervise(
    monitor: Arc<Monitor>,
    watchdog: Option<Duration>,
    mut last_status: String,
    stop: CancellationToken,
    out: Notifier,
) {
    let every = watchdog.map(|w| w / 2).unwrap_or(STATUS_INTERVAL);
    let every = every.max(Duration::from_millis(10));
    // how long a look waits for the database's answer before deciding
    let wait = (every / 2).min(PROBE_WAIT);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stuck = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let verdict = tokio::select! {
            v = monitor.assess(wait) => v,
            _ = stop.cancelled() => return,
        };
        if verdict.restart() {
            if !was_stuck {
                let what = verdict.summary(|c| c.restart);
                if watchdog.is_some() {
                    tracing::error!(
                        stuck = %what,
                        "watchdog: the pipeline is stuck; no more pings, so systemd restarts clockbridge (Restart=on-failure)"
                    );
                } else {
                    tracing::error!(
                        stuck = %what,
                        "watchdog: the pipeline is stuck (no systemd watchdog configured: restart clockbridge)"
                    );
                }
                was_stuck = true;
            }
        } else {
            if was_stuck {
                tracing::info!("watchdog: the pipeline makes progress again");
                was_stuck = false;
            }
            if watchdog.is_some() {
                out(&[NotifyState::Watchdog]);
            }
        }
        let counts = counts(&monitor, &verdict, wait).await;
        let line = verdict_line(&monitor, "running", &verdict, counts.as_ref());
        if line != last_status {
            out(&[NotifyState::Status(&line)]);
            last_status = line;
        }
    }
}

#[cfg(test)]
mod tests;
