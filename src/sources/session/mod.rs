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

use std::borrow::Cow;
use std::fmt::Display;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use encoding_rs::Encoding;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::formats::{self, LineParser, LineSession};
use super::kind::SourceContext;
use super::line_spec::LineSpec;
use super::lines::{LineReader, LineRef};
use super::reconnect::{Quiet, LOG_EVERY};
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
// escapes and the acknowledgement template

/// Turns the escapes of `poll_command` and `ack_template` into bytes: `\r`, `\n`, `\t`, `\\` and
/// `\xNN` (exactly two hex digits, any byte). Other text is kept as UTF-8.
///
/// Any other backslash sequence (`\q`, `\x4`, a lone `\` at the end) is an error that names it and its
/// position (in characters, from 0), e.g.
/// `escape "\q" at character 3 is not one of \r, \n, \t, \\, \xNN (write \\ for a backslash)`.
/// Configuration validation should call this for `poll_command` and `ack_template`.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    unescape_in(s, encoding_rs::UTF_8, 0)
}

/// [`unescape`], with the plain text encoded in `enc`; `first_char` is the position of `s` in a longer
/// text, for error messages.
fn unescape_in(s: &str, enc: &'static Encoding, first_char: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut text = String::new();
    let mut chars = s.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        let at = first_char + i;
        let byte = match chars.next().map(|(_, c)| c) {
            Some('r') => b'\r',
            Some('n') => b'\n',
            Some('t') => b'\t',
            Some('\\') => b'\\',
            Some('x') => {
                let hi = chars.next().map(|(_, c)| c);
                let lo = chars.next().map(|(_, c)| c);
                match (hi.and_then(|c| c.to_digit(16)), lo.and_then(|c| c.to_digit(16))) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => {
                        let seen: String = [hi, lo].into_iter().flatten().collect();
                        return Err(format!(
                            "escape \"\\x{seen}\" at character {at} is not \\x and two hex digits (e.g. \\x0d)"
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "escape \"\\{other}\" at character {at} is not one of \\r, \\n, \\t, \\\\, \\xNN (write \\\\ for a backslash)"
                ))
            }
            None => {
                return Err(format!(
                    "backslash at character {at} ends the text: write \\\\ for a backslash"
                ))
            }
        };
        encode_into(&mut out, &text, enc)?;
        text.clear();
        out.push(byte);
    }
    encode_into(&mut out, &text, enc)?;
    Ok(out)
}

fn encode_into(out: &mut Vec<u8>, text: &str, enc: &'static Encoding) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let (bytes, _, unmappable) = enc.encode(text);
    if unmappable {
        return Err(format!(
            "text \"{}\" cannot be written in the clock's encoding {}: use \\xNN escapes",
            formats::sample(text.as_bytes()),
            enc.name()
        ));
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

/// One piece of an acknowledgement template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    User,
    Time,
    State,
    Line,
}

/// A parsed `ack_template`: literal bytes (escapes resolved) and the placeholders `{user}` (the device
/// user id), `{time}` (the punch's local time as `%Y-%m-%d %H:%M:%S`), `{state}` (the state code, or
/// the state word when the clock sent one the `state_map` does not know; empty when absent) and
/// `{line}` (the line as decoded). Values are written in the clock's encoding.
#[derive(Debug, Clone)]
pub struct AckTemplate {
    pieces: Vec<Piece>,
    encoding: &'static Encoding,
    uses_line: bool,
}

impl AckTemplate {
    /// Parses a template for a UTF-8 clock. Configuration validation should call this for
    /// `ack_template`. A `{` must open one of the four placeholders (`\x7b` writes a literal `{`).
    pub fn parse(template: &str) -> Result<AckTemplate, String> {
        Self::parse_in(template, encoding_rs::UTF_8)
    }

    /// Parses a template for a clock whose text is in `encoding`.
    pub fn parse_in(template: &str, encoding: &'static Encoding) -> Result<AckTemplate, String> {
        let mut pieces = Vec::new();
        let mut literal_start = 0; // byte offset
        let mut chars_before = 0; // characters before `literal_start`
        let mut rest = template;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            let at = offset + open;
            let after = &template[at + 1..];
            let name_end = after.find('}');
            let piece = name_end.and_then(|e| match &after[..e] {
                "user" => Some(Piece::User),
                "time" => Some(Piece::Time),
                "state" => Some(Piece::State),
                "line" => Some(Piece::Line),
                _ => None,
            });
            let Some(piece) = piece else {
                let at_char = template[..at].chars().count();
                if name_end.is_none() {
                    return Err(format!(
                        "\"{{\" at character {at_char} opens no placeholder (no closing \"}}\"): use {{user}}, {{time}}, {{state}} or {{line}}, or \\x7b for a literal \"{{\""
                    ));
                }
                let shown: String = after.chars().take_while(|&c| c != '}').take(20).collect();
                return Err(format!(
                    "placeholder \"{{{shown}}}\" at character {at_char} is not one of {{user}}, {{time}}, {{state}}, {{line}} (write \\x7b for a literal \"{{\")"
                ));
            };
            let literal = &template[literal_start..at];
            if !literal.is_empty() {
                pieces.push(Piece::Bytes(unescape_in(literal, encoding, chars_before)?));
            }
            pieces.push(piece);
            let end = at + 1 + name_end.unwrap_or(0) + 1;
            chars_before += template[literal_start..end].chars().count();
            literal_start = end;
            offset = end;
            rest = &template[end..];
        }
        let literal = &template[literal_start..];
        if !literal.is_empty() {
            pieces.push(Piece::Bytes(unescape_in(literal, encoding, chars_before)?));
        }
        let uses_line = pieces.contains(&Piece::Line);
        Ok(AckTemplate {
            pieces,
            encoding,
            uses_line,
        })
    }

    /// The acknowledgement of `punch`, read from the line `line` (called only when the template uses
    /// `{line}`).
    pub fn render<'a>(&self, punch: &Punch, line: impl FnOnce() -> Cow<'a, str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut line = Some(line);
        let mut line_text: Option<Cow<'a, str>> = None;
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::User => self.put(&mut out, &punch.device_user_id),
                Piece::Time => {
                    let t = punch.local_time.format("%Y-%m-%d %H:%M:%S").to_string();
                    self.put(&mut out, &t)
                }
                Piece::State => match (punch.state, &punch.state_text) {
                    (Some(code), _) => self.put(&mut out, &code.to_string()),
                    (None, Some(text)) => self.put(&mut out, text),
                    (None, None) => {}
                },
                Piece::Line => {
                    if let Some(f) = line.take() {
                        line_text = Some(f());
                    }
                    self.put(&mut out, line_text.as_deref().unwrap_or(""));
                }
            }
        }
        out
    }

    /// True when the template uses `{line}`.
    pub fn uses_line(&self) -> bool {
        self.uses_line
    }

    fn put(&self, out: &mut Vec<u8>, text: &str) {
        // a value the encoding cannot hold is written as an HTML numeric reference: never refused
        let (bytes, _, _) = self.encoding.encode(text);
        out.extend_from_slice(&bytes);
    }
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
                    _ => tracing::warn!(
                        "device {} ({}): stopping: the punch of line {} could not be handed to the queue in time; it is still in the clock's log",
                        dev.id, self.peer, self.lines
                    ),
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

// ---------------------------------------------------------------------------------------------------
// logging malformed lines without flooding

/// Logs malformed lines of one connection without flooding: the first [`MALFORMED_LOGGED`] one by one,
/// then a count (with the latest line) at most once a minute, and the rest of the count at the end.
#[derive(Default)]
struct MalformedLog {
    logged: u64,
    /// Not logged since the last summary.
    suppressed: u64,
    last_summary: Option<Instant>,
}

impl MalformedLog {
    fn report(
        &mut self,
        device: &str,
        peer: &str,
        line_no: u64,
        reason: &dyn Display,
        text: Option<&[u8]>,
    ) {
        let sample = text.map(formats::sample);
        let sample = sample
            .as_deref()
            .map(|s| format!(": \"{s}\""))
            .unwrap_or_default();
        if self.logged < MALFORMED_LOGGED {
            self.logged += 1;
            let more = if self.logged == MALFORMED_LOGGED {
                " (further malformed lines from this connection are summarised once a minute)"
            } else {
                ""
            };
            tracing::warn!(
                "device {device} ({peer}): malformed line {line_no}: {reason}{sample}{more}"
            );
            self.last_summary = Some(Instant::now());
            return;
        }
        self.suppressed += 1;
        let now = Instant::now();
        if self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                "device {device} ({peer}): {} more malformed lines in the last minute; latest: line {line_no}: {reason}{sample}",
                self.suppressed
            );
            self.suppressed = 0;
            self.last_summary = Some(now);
        }
    }

    fn finish(&mut self, device: &str, peer: &str) {
        if self.suppressed > 0 {
            tracing::warn!(
                "device {device} ({peer}): {} more malformed lines before the connection ended",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestItem, IngestOutcome};
    use crate::sources::formats::LineFormat;
    use crate::sources::test_support::context;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::mpsc;

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    fn config() -> LineSpec {
        LineSpec {
            format: LineFormat::ZkAttlog,
            max_line_length: 64,
            ..LineSpec::default()
        }
    }

    /// Device `clock-1` with the line keys `cfg`, polled every `poll_secs`.
    fn device(cfg: &LineSpec, poll_secs: u64, sink: PunchSink) -> Result<LineDevice, SetupError> {
        let ctx = SourceContext {
            poll_interval: Duration::from_secs(poll_secs),
            ..context("clock-1", sink)
        };
        LineDevice::new(&ctx, cfg)
    }

    fn line(pin: u32, minute: u32) -> String {
        format!("{pin:>9}\t2026-03-02 08:{minute:02}:00\t1\t1\t0\t0\t0\r\n")
    }

    async fn recv(rx: &mut mpsc::Receiver<IngestItem>) -> IngestItem {
        tokio::time::timeout(GUARD, rx.recv())
            .await
            .expect("no punch arrived")
            .expect("sink closed")
    }

    /// Reads exactly `n` bytes from the clock's end.
    async fn read_n(clock: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(GUARD, clock.read_exact(&mut buf))
            .await
            .expect("nothing written to the clock")
            .expect("read from the clock's end");
        buf
    }

    /// True when nothing is waiting to be read at the clock's end (polls the read once).
    async fn nothing_written(clock: &mut DuplexStream) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::ZERO, clock.read(&mut buf))
            .await
            .is_err()
    }

    struct Served {
        stats: Arc<DeviceStats>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<super::Served>,
    }

    fn serve(cfg: LineSpec) -> (Served, DuplexStream, mpsc::Receiver<IngestItem>) {
        serve_every(cfg, 5)
    }

    fn serve_every(
        cfg: LineSpec,
        poll_secs: u64,
    ) -> (Served, DuplexStream, mpsc::Receiver<IngestItem>) {
        let (sink, rx) = PunchSink::channel(16);
        let dev = device(&cfg, poll_secs, sink).unwrap();
        let (stats, shutdown) = (dev.stats.clone(), dev.shutdown.clone());
        let (ours, clock) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { dev.serve(ours, "test").await });
        (
            Served {
                stats,
                shutdown,
                task,
            },
            clock,
            rx,
        )
    }

    impl Served {
        async fn stop(self) -> super::Served {
            self.shutdown.cancel();
            tokio::time::timeout(GUARD, self.task)
                .await
                .expect("serve did not stop")
                .expect("serve panicked")
        }
    }

    #[test]
    fn unescape_resolves_every_escape() {
        assert_eq!(unescape("plain").unwrap(), b"plain");
        assert_eq!(unescape("").unwrap(), b"");
        assert_eq!(unescape(r"a\r\n\t\\b").unwrap(), b"a\r\n\t\\b".as_slice());
        assert_eq!(
            unescape(r"\x00\x7f\xFF\x0d").unwrap(),
            [0, 0x7f, 0xff, 0x0d]
        );
        assert_eq!(unescape(r"\\x41").unwrap(), br"\x41".as_slice());
        assert_eq!(unescape("上班\\n").unwrap(), "上班\n".as_bytes());
    }

    #[test]
    fn unescape_rejects_invalid_escapes_naming_them() {
        let e = unescape(r"ab\q").unwrap_err();
        assert!(e.starts_with("escape \"\\q\" at character 2"), "{e}");
        assert!(e.contains(r"\r, \n, \t, \\, \xNN"), "{e}");
        let e = unescape(r"\x4").unwrap_err();
        assert!(e.contains("\\x4") && e.contains("two hex digits"), "{e}");
        let e = unescape(r"\xZZ").unwrap_err();
        assert!(e.contains("\\xZZ") && e.contains("two hex digits"), "{e}");
        let e = unescape(r"\x").unwrap_err();
        assert!(e.contains("two hex digits"), "{e}");
        let e = unescape("end\\").unwrap_err();
        assert!(e.starts_with("backslash at character 3"), "{e}");
        assert!(unescape(r"\0").is_err());
        assert!(unescape(r"\u{41}").is_err());
    }

    #[test]
    fn unescape_in_an_encoding() {
        let gbk = Encoding::for_label(b"gb18030").unwrap();
        assert_eq!(unescape_in("上\\r", gbk, 0).unwrap(), [0xc9, 0xcf, b'\r']);
        let latin = Encoding::for_label(b"iso-8859-2").unwrap();
        let e = unescape_in("上", latin, 0).unwrap_err();
        assert!(e.contains("cannot be written"), "{e}");
    }

    fn punch(state: Option<i64>, state_text: Option<&str>) -> Punch {
        Punch {
            device_id: "clock-1".into(),
            device_user_id: "42".into(),
            local_time: "2026-03-02T08:01:00".parse().unwrap(),
            state,
            verify: None,
            workcode: None,
            state_text: state_text.map(String::from),
        }
    }

    #[test]
    fn ack_template_placeholders_and_escapes() {
        let t = AckTemplate::parse(r"ACK {user} {time} [{state}] {line}\r\n").unwrap();
        assert!(t.uses_line());
        let got = t.render(&punch(Some(1), None), || "the line".into());
        assert_eq!(got, b"ACK 42 2026-03-02 08:01:00 [1] the line\r\n");
        let got = t.render(&punch(None, Some("上班")), || "x".into());
        assert_eq!(got, "ACK 42 2026-03-02 08:01:00 [上班] x\r\n".as_bytes());
        let got = t.render(&punch(None, None), || "x".into());
        assert_eq!(got, b"ACK 42 2026-03-02 08:01:00 [] x\r\n");

        // {line} is decoded only when used; a literal brace by escape
        let t = AckTemplate::parse(r"\x7bok\x7d{user}\x06").unwrap();
        assert!(!t.uses_line());
        let got = t.render(&punch(None, None), || panic!("not used"));
        assert_eq!(got, b"{ok}42\x06");

        // values in the clock's encoding
        let gbk = Encoding::for_label(b"gbk").unwrap();
        let t = AckTemplate::parse_in("{state}", gbk).unwrap();
        assert_eq!(
            t.render(&punch(None, Some("上")), || "".into()),
            [0xc9, 0xcf]
        );
    }

    #[test]
    fn ack_template_errors_name_the_problem() {
        let e = AckTemplate::parse("OK {usr}").unwrap_err();
        assert!(e.starts_with("placeholder \"{usr}\" at character 3"), "{e}");
        assert!(e.contains("{user}, {time}, {state}, {line}"), "{e}");
        let e = AckTemplate::parse("ok {user").unwrap_err();
        assert!(
            e.starts_with("\"{\" at character 3 opens no placeholder"),
            "{e}"
        );
        let e = AckTemplate::parse(r"{user}\q").unwrap_err();
        assert!(e.starts_with("escape \"\\q\" at character 6"), "{e}");
        assert!(AckTemplate::parse("a } b").is_ok());
    }

    #[test]
    fn bad_templates_stop_the_device_at_start_naming_the_key() {
        let (sink, _rx) = PunchSink::channel(1);
        let cfg = LineSpec {
            poll_command: Some(r"POLL\q".into()),
            ..config()
        };
        let e = device(&cfg, 5, sink.clone()).err().unwrap().to_string();
        assert!(e.starts_with("device clock-1: poll_command: escape"), "{e}");
        assert!(e.ends_with("fix it in the configuration"), "{e}");
        let cfg = LineSpec {
            ack_template: Some("{when}".into()),
            ..config()
        };
        let e = device(&cfg, 5, sink).err().unwrap().to_string();
        assert!(
            e.starts_with("device clock-1: ack_template: placeholder"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn ack_is_written_only_after_the_commit_and_never_for_a_failure() {
        let cfg = LineSpec {
            ack_template: Some(r"OK {user} {time}\r\n".into()),
            ..config()
        };
        let (served, mut clock, mut rx) = serve(cfg);
        clock.write_all(line(7, 1).as_bytes()).await.unwrap();
        clock.write_all(line(8, 2).as_bytes()).await.unwrap();

        // the first punch arrives; until it is answered, nothing goes back to the clock
        let first = recv(&mut rx).await;
        assert_eq!(first.punch.device_user_id, "7");
        assert!(nothing_written(&mut clock).await);
        first
            .ack
            .expect("an acknowledged punch waits for its commit")
            .send(IngestOutcome::Failed("disk full".into()))
            .unwrap();

        let second = recv(&mut rx).await;
        assert_eq!(second.punch.device_user_id, "8");
        // no acknowledgement for the failed one
        assert!(nothing_written(&mut clock).await);
        second.ack.unwrap().send(IngestOutcome::Queued).unwrap();
        let want = b"OK 8 2026-03-02 08:02:00\r\n";
        assert_eq!(read_n(&mut clock, want.len()).await, want);

        // a duplicate is committed too: acknowledged
        clock.write_all(line(8, 2).as_bytes()).await.unwrap();
        recv(&mut rx)
            .await
            .ack
            .unwrap()
            .send(IngestOutcome::Duplicate)
            .unwrap();
        assert_eq!(read_n(&mut clock, want.len()).await, want);

        assert!(nothing_written(&mut clock).await);
        assert_eq!(served.stats.acks_written.load(Ordering::Relaxed), 2);
        assert_eq!(served.stats.punches_read.load(Ordering::Relaxed), 3);
        let end = served.stop().await;
        assert!(matches!(end.end, End::Stopped), "{:?}", end.end);
        assert_eq!(end.lines, 3);
    }

    #[tokio::test]
    async fn without_a_template_punches_are_not_held_for_their_commit() {
        let (served, mut clock, mut rx) = serve(config());
        for m in 0..3 {
            clock.write_all(line(1, m).as_bytes()).await.unwrap();
        }
        for _ in 0..3 {
            assert!(recv(&mut rx).await.ack.is_none());
        }
        assert!(nothing_written(&mut clock).await);
        served.stop().await;
    }

    #[tokio::test]
    async fn lines_are_counted_and_garbage_is_skipped() {
        let (served, mut clock, mut rx) = serve(config());
        clock.write_all(b"garbage\n").await.unwrap();
        clock.write_all(&[b'x'; 200]).await.unwrap();
        clock.write_all(b"\n\xff\xfe\x00\n").await.unwrap();
        clock.write_all(line(3, 3).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.punch.device_user_id, "3");
        let s = &served.stats;
        assert_eq!(s.lines_read.load(Ordering::Relaxed), 4);
        assert_eq!(s.malformed.load(Ordering::Relaxed), 3);
        assert_eq!(s.punches_read.load(Ordering::Relaxed), 1);
        assert!(s.last_line_at.load(Ordering::Relaxed) > 0);
        assert_eq!(s.connections.load(Ordering::Relaxed), 1);
        drop(clock);
        let end = tokio::time::timeout(GUARD, served.task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end.end, End::Eof), "{:?}", end.end);
        assert_eq!(served.stats.connections.load(Ordering::Relaxed), 0);
        assert_eq!(served.stats.connects.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn poll_command_on_open_and_every_interval() {
        let cfg = LineSpec {
            poll_command: Some(r"GET\x20LOG\r\n".into()),
            ..config()
        };
        let (served, mut clock, mut rx) = serve_every(cfg, 1);
        let start = Instant::now();
        assert_eq!(read_n(&mut clock, 9).await, b"GET LOG\r\n");
        // lines are read between polls
        clock.write_all(line(4, 4).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.punch.device_user_id, "4");
        assert_eq!(read_n(&mut clock, 9).await, b"GET LOG\r\n");
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
        served.stop().await;
    }

    #[tokio::test]
    async fn a_failing_poll_write_ends_the_connection() {
        let cfg = LineSpec {
            poll_command: Some("POLL\r".into()),
            ..config()
        };
        let (sink, _rx) = PunchSink::channel(1);
        let dev = device(&cfg, 5, sink).unwrap();
        // a stream whose write side is closed: every write fails
        let (ours, clock) = tokio::io::duplex(64);
        drop(clock);
        let served = tokio::time::timeout(GUARD, dev.serve(ours, "test"))
            .await
            .unwrap();
        // the poll is written on open, before anything is read: the write fails before EOF is seen
        match served.end {
            End::Write(e) => assert!(
                e.to_string().starts_with("cannot write the poll command"),
                "{e}"
            ),
            other => panic!("unexpected end {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_sink_ends_the_connection() {
        let (sink, rx) = PunchSink::channel(1);
        drop(rx);
        let dev = device(&config(), 5, sink).unwrap();
        let (ours, mut clock) = tokio::io::duplex(4096);
        clock.write_all(line(1, 1).as_bytes()).await.unwrap();
        let served = tokio::time::timeout(GUARD, dev.serve(ours, "test"))
            .await
            .unwrap();
        assert!(matches!(served.end, End::SinkClosed), "{:?}", served.end);
        dev.sink_closed();
        assert!(dev.stop().is_cancelled());
        assert!(dev
            .stats()
            .last_error()
            .unwrap()
            .contains("queue is closed"));
    }
}
