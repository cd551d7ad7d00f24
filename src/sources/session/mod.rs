//! The conversation with one line clock over one open stream (a TCP connection, a serial port), shared
//! by every line source so that a clock behaves the same however it is wired.
//!
//! A [`LineDevice`] is built once per device from its configuration; [`LineDevice::serve`] then runs
//! one connection: it reads lines with a [`LineReader`] (bounded by `max_line_length`), parses them with
//! a per-connection [`LineSession`] (so a CSV header is per connection), counts everything in the
//! device's [`DeviceStats`], and hands punches to the ingest stage.
//!
//! Guarantees:
//! - Nothing a clock sends is fatal: bad, over-long or binary lines are counted as `malformed` and
//!   logged with a short escaped sample (at most [`MALFORMED_LOGGED`] lines per connection, then a
//!   summary once a minute, and a final count when the connection ends); the next line is read as
//!   usual.
//! - Without `ack_template`, punches are handed over with [`PunchSink::submit`] and no commit is
//!   awaited per line (the fast path: the TCP source reads well over 50,000 lines/s).
//! - While the queue commits nothing (disk full, I/O error: the ingest stage's storage gate,
//!   [`PunchSink::ready`]), no further line is taken from the stream: the clock is held back by flow
//!   control (TCP, the serial line's buffer), and what a stop then cannot keep is at most what was
//!   already handed over, the read buffer and what the kernel buffers. A punch read but not handed
//!   over when the daemon stops is counted as not kept ([`PunchSink::not_kept`]), never claimed to
//!   be still in the clock.
//! - With `ack_template`, each punch is handed over with [`PunchSink::submit_committed`] and its
//!   acknowledgement is written back on the same stream only once the queue has committed it
//!   ([`crate::ingest::IngestOutcome::is_committed`]); when the queue could not store it, nothing
//!   is written (the clock keeps the record and sends it again) and the failure is logged. Lines are
//!   handled one at a time, so acknowledgements leave in the order the lines came in.
//! - With `poll_command`, the command is written when the connection opens and then every
//!   `poll_interval`; a write that fails (or is held back for [`WRITE_TIMEOUT`]) ends the
//!   connection, and the source reconnects.
//! - Templates and commands are checked when the device starts ([`LineDevice::new`]): an invalid
//!   escape or an unknown placeholder is a startup error naming the device and the key, never a
//!   surprise on the wire.
//! - The stream counts as a connection in `stats.connections` exactly while [`LineDevice::serve`]
//!   runs, however it ends; cancelling shutdown ends it promptly (a punch already read gets
//!   [`SHUTDOWN_GRACE`] to be handed over, and to be acknowledged if it is committed in that time).
//!
//! Reconnecting is not done here: each source wraps its connections in [`super::reconnect`].

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use encoding_rs::Encoding;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

mod ack;
mod malformed;

use ack::unescape_in;
pub use ack::{unescape, AckTemplate};
use malformed::MalformedLog;

use super::formats::{LineParser, LineSession};
use super::kind::SourceContext;
use super::line_spec::LineSpec;
use super::lines::{LineReader, LineRef};
use super::reconnect::Quiet;
use super::{DeviceStats, PunchSink, SourceError};
use crate::punch::Punch;

/// Malformed lines logged one by one per connection, before they are only summarised.
pub const MALFORMED_LOGGED: u64 = 10;
/// How long a punch already read may wait for the ingest stage once shutdown has begun.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Longest time one write (an acknowledgement, a poll command) may take before the connection is
/// given up (a peer that stopped reading, flow control holding the line).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// While lines keep arriving, the stop signal is also checked every this many lines.
const STOP_CHECK_EVERY: u64 = 1024;

/// A device configuration this module cannot use: names the device and the key, says what to do.
#[derive(Debug, thiserror::Error)]
#[error("device {device}: {key}: {reason}: fix it in the configuration")]
pub struct SetupError {
    pub device: String,
    pub key: &'static str,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------------
// the device

/// A poll command and how often to write it.
#[derive(Debug, Clone)]
struct Poll {
    command: Vec<u8>,
    every: Duration,
}

/// Everything the connections of one line device share; see the module documentation.
pub struct LineDevice {
    id: String,
    max_line: usize,
    parser: LineParser,
    ack: Option<AckTemplate>,
    poll: Option<Poll>,
    sink: PunchSink,
    stats: Arc<DeviceStats>,
    /// The daemon's shutdown.
    shutdown: CancellationToken,
    /// Cancelled on shutdown, or when the ingest stage is gone (nothing can be delivered any more).
    stop: CancellationToken,
}

impl LineDevice {
    /// Builds the device's line handling: its format, its acknowledgement template and poll command
    /// (escapes and placeholders checked here, so a bad one stops the device at start with a message
    /// naming the key).
    pub fn new(ctx: &SourceContext, cfg: &LineSpec) -> Result<LineDevice, SetupError> {
        let setup = |key: &'static str, reason: String| SetupError {
            device: ctx.id.clone(),
            key,
            reason,
        };
        let parser = LineParser::new(&ctx.id, ctx.tz, cfg).map_err(|e| setup(e.key, e.reason))?;
        let encoding = match cfg.encoding.as_deref().map(str::trim) {
            None | Some("") => encoding_rs::UTF_8,
            Some(label) => Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                setup(
                    "encoding",
                    format!(
                        "\"{label}\" is not a known encoding (use e.g. \"utf-8\" or \"gb18030\")"
                    ),
                )
            })?,
        };
        let ack = match cfg.ack_template.as_deref() {
            None => None,
            Some(t) => {
                Some(AckTemplate::parse_in(t, encoding).map_err(|e| setup("ack_template", e))?)
            }
        };
        let poll = match cfg.poll_command.as_deref() {
            None => None,
            Some(c) => {
                let command = unescape_in(c, encoding, 0).map_err(|e| setup("poll_command", e))?;
                if command.is_empty() {
                    return Err(setup(
                        "poll_command",
                        "is empty: remove the key, or give the command the clock expects".into(),
                    ));
                }
                if ctx.poll_interval.is_zero() {
                    return Err(setup(
                        "poll_interval",
                        "is 0: give the seconds between two polls (at least 1)".into(),
                    ));
                }
                Some(Poll {
                    command,
                    every: ctx.poll_interval,
                })
            }
        };
        Ok(LineDevice {
            id: ctx.id.clone(),
            max_line: cfg.max_line_length,
            parser,
            ack,
            poll,
            sink: ctx.sink.clone(),
            stats: ctx.stats.clone(),
            stop: ctx.shutdown.child_token(),
            shutdown: ctx.shutdown.clone(),
        })
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device's counters.
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.stats
    }

    /// Cancelled when the device should stop: on shutdown, or once the ingest stage is gone.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The daemon's shutdown.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Sleeps `d`, or less if stopped; false when stopped.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The ingest stage is gone: record it and stop the device (its task idles until shutdown).
    pub fn sink_closed(&self) {
        let err = SourceError::SinkClosed {
            device: self.id.clone(),
        };
        if !self.shutdown.is_cancelled() {
            tracing::warn!("{err}: no more punches are read from this device");
        }
        self.stats.set_error(&err);
        self.stop.cancel();
    }

    /// Runs one connection over `stream` until it ends (end of input, an I/O error, the ingest stage
    /// gone, or stop). `peer` names the other end in logs (an address, a port path).
    ///
    /// The connection counts in `stats.connections` (and `connects`) while this runs.
    pub async fn serve<S>(&self, stream: S, peer: &str) -> Served
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _open = OpenConnection::new(&self.stats);
        let (reader, writer) = tokio::io::split(stream);
        let mut reader = LineReader::new(reader, self.max_line);
        let mut conn = Connection {
            dev: self,
            peer,
            writer,
            session: self.parser.session(),
            malformed: MalformedLog::default(),
            lines: 0,
            ack_failures: Quiet::default(),
        };
        let mut poll = self.poll.as_ref().map(|p| {
            let first = tokio::time::Instant::now() + p.every;
            let mut every = tokio::time::interval_at(first, p.every);
            every.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (every, p.command.as_slice())
        });
        let end = 'connection: {
            // the poll command goes out as soon as the stream is open, before anything is read
            if let Some(&(_, command)) = poll.as_ref() {
                if let Err(end) = conn.write(command, "poll command", true).await {
                    break 'connection end;
                }
            }
            loop {
                // Reading comes before the stop signal in the select below, so a busy connection
                // would never look at it: check it now and then.
                if conn.lines % STOP_CHECK_EVERY == STOP_CHECK_EVERY - 1 && self.stop.is_cancelled()
                {
                    break End::Stopped;
                }
                // The storage gate: while the queue commits nothing, nothing more is read, so the
                // clock is held back by flow control instead of its punches piling up in memory.
                if !self.sink.storage().is_open() {
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => break End::Stopped,
                        _ = self.sink.ready() => {}
                    }
                }
                let event = tokio::select! {
                    biased;
                    command = tick(&mut poll) => Event::Poll(command),
                    r = reader.next_line_ref() => Event::Line(r),
                    _ = self.stop.cancelled() => break End::Stopped,
                };
                let handled = match event {
                    Event::Poll(command) => conn.write(command, "poll command", true).await,
                    Event::Line(Ok(Some(line))) => conn.line(line).await,
                    Event::Line(Ok(None)) => Err(End::Eof),
                    Event::Line(Err(e)) => Err(End::Read(e)),
                };
                if let Err(end) = handled {
                    break end;
                }
            }
        };
        conn.malformed.finish(&self.id, peer);
        Served {
            end,
            lines: conn.lines,
        }
    }
}

/// The next poll tick: the command to write. Never completes without a poll command.
async fn tick<'a>(poll: &mut Option<(Interval, &'a [u8])>) -> &'a [u8] {
    match poll {
        Some((every, command)) => {
            every.tick().await;
            command
        }
        None => std::future::pending().await,
    }
}

enum Event<'a, 'c> {
    Poll(&'c [u8]),
    Line(io::Result<Option<LineRef<'a>>>),
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// The peer closed the stream (or the port reported end of input).
    Eof,
    /// Reading failed.
    Read(io::Error),
    /// Writing an acknowledgement or a poll command failed (or took longer than [`WRITE_TIMEOUT`]).
    Write(io::Error),
    /// The ingest stage is gone: the caller should call [`LineDevice::sink_closed`].
    SinkClosed,
    /// The device was stopped.
    Stopped,
}

/// How a connection went.
#[derive(Debug)]
pub struct Served {
    pub end: End,
    /// Lines read (good or bad).
    pub lines: u64,
}

/// Counts a connection as open for as long as it lives (whatever way it ends).
struct OpenConnection<'a>(&'a DeviceStats);

impl<'a> OpenConnection<'a> {
    fn new(stats: &'a DeviceStats) -> Self {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        DeviceStats::incr(&stats.connects);
        stats.notify_changed();
        OpenConnection(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.notify_changed();
    }
}

/// The state of one connection.
struct Connection<'d, S> {
    dev: &'d LineDevice,
    peer: &'d str,
    writer: WriteHalf<S>,
    session: LineSession,
    malformed: MalformedLog,
    /// Lines read so far (good or bad); the number of the current line.
    lines: u64,
    /// Punches the queue could not store (and that were not acknowledged).
    ack_failures: Quiet,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    /// Counts, parses and hands over one line. An error ends the connection.
    async fn line(&mut self, line: LineRef<'_>) -> Result<(), End> {
        let dev = self.dev;
        self.lines += 1;
        DeviceStats::incr(&dev.stats.lines_read);
        dev.stats.last_line_at.store(unix_now(), Ordering::Relaxed);
        let text = match line {
            LineRef::Text(text) => text,
            LineRef::TooLong { len_seen } => {
                DeviceStats::incr(&dev.stats.malformed);
                let reason = format!(
                    "line is too long: {len_seen} bytes, more than max_line_length = {}",
                    dev.max_line
                );
                self.malformed
                    .report(&dev.id, self.peer, self.lines, &reason, None);
                return Ok(());
            }
        };
        let punch = match self.session.parse(text) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()), // a header row
            Err(e) => {
                DeviceStats::incr(&dev.stats.malformed);
                self.malformed
                    .report(&dev.id, self.peer, self.lines, &e, Some(text));
                return Ok(());
            }
        };
        DeviceStats::incr(&dev.stats.punches_read);
        match &dev.ack {
            None => self.submit(punch).await,
            Some(template) => {
                let ack = template.render(&punch, || dev.parser.decode(text));
                self.submit_acknowledged(punch, ack).await
            }
        }
    }

    /// The fast path: hands the punch over without waiting for its commit.
    async fn submit(&mut self, punch: Punch) -> Result<(), End> {
        let dev = self.dev;
        let submit = dev.sink.submit(punch);
        tokio::pin!(submit);
        tokio::select! {
            biased;
            r = &mut submit => r.map_err(|_| End::SinkClosed),
            _ = dev.stop.cancelled() => {
                // The punch is read but not handed over: give the ingest stage a moment to take it.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut submit).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) if !dev.shutdown.is_cancelled() => return Err(End::SinkClosed),
                    _ => {
                        // without ack_template the clock has already let it go: it is lost, and
                        // counted in the stop's report of what could not be kept
                        dev.sink.not_kept(&dev.id, false, 1);
                        tracing::warn!(
                            "device {} ({}): stopping: the punch of line {} could not be handed to the queue in time and is not kept",
                            dev.id, self.peer, self.lines
                        );
                    }
                }
                Err(End::Stopped)
            }
        }
    }

    /// Hands the punch over, waits for its commit, then writes `ack` (nothing when it failed).
    async fn submit_acknowledged(&mut self, punch: Punch, ack: Vec<u8>) -> Result<(), End> {
        let dev = self.dev;
        let commit = dev.sink.submit_committed(punch);
        tokio::pin!(commit);
        let (outcome, stopping) = tokio::select! {
            biased;
            r = &mut commit => (r, false),
            _ = dev.stop.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut commit).await {
                Ok(r) => (r, true),
                Err(_) => {
                    tracing::warn!(
                        "device {} ({}): stopping: the punch of line {} was not committed in time; it is not acknowledged, so the clock keeps it",
                        dev.id, self.peer, self.lines
                    );
                    return Err(End::Stopped);
                }
            },
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) if stopping && dev.shutdown.is_cancelled() => {
                tracing::warn!(
                    "device {} ({}): stopping: the punch of line {} could not be handed to the queue; it is not acknowledged, so the clock keeps it",
                    dev.id, self.peer, self.lines
                );
                return Err(End::Stopped);
            }
            Err(_) => return Err(End::SinkClosed),
        };
        let after = if stopping { Err(End::Stopped) } else { Ok(()) };
        if !outcome.is_committed() {
            if self.ack_failures.failed() {
                tracing::warn!(
                    "device {} ({}): line {}: the queue could not store the punch ({outcome:?}); no acknowledgement was written, so the clock keeps it and should send it again (repeats are logged at most once a minute)",
                    dev.id, self.peer, self.lines
                );
            }
            return after;
        }
        if let Some(n) = self.ack_failures.recovered() {
            tracing::info!(
                "device {} ({}): punches are acknowledged again (after {n} that the queue could not store)",
                dev.id,
                self.peer
            );
        }
        if stopping {
            // the punch is committed: acknowledge it if the clock takes it within the grace period
            // (otherwise the clock only sends it again, and the queue counts a duplicate)
            let written =
                tokio::time::timeout(SHUTDOWN_GRACE, self.write(&ack, "acknowledgement", false))
                    .await;
            if let Ok(Ok(())) = written {
                DeviceStats::incr(&dev.stats.acks_written);
            }
            return after;
        }
        self.write(&ack, "acknowledgement", true).await?;
        DeviceStats::incr(&dev.stats.acks_written);
        after
    }

    /// Writes `bytes` to the peer, within [`WRITE_TIMEOUT`]; `stoppable`: give up when stopped.
    async fn write(&mut self, bytes: &[u8], what: &str, stoppable: bool) -> Result<(), End> {
        let writer = &mut self.writer;
        let write = tokio::time::timeout(WRITE_TIMEOUT, async move {
            writer.write_all(bytes).await?;
            writer.flush().await
        });
        let written = tokio::select! {
            biased;
            _ = self.dev.stop.cancelled(), if stoppable => return Err(End::Stopped),
            r = write => r,
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Write(io::Error::new(
                e.kind(),
                format!("cannot write the {what}: {e}"),
            ))),
            Err(_) => Err(End::Write(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "cannot write the {what}: not accepted within {} s (the clock stopped reading, or flow control holds the line)",
                    WRITE_TIMEOUT.as_secs()
                ),
            ))),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
