//! An async client of one ZKTeco device over TCP: one connection, one request at a time.
//!
//! Guarantees:
//! - Every request waits at most [`Timeouts::packet`] for its reply, and every chunk of a buffered
//!   read at most [`Timeouts::chunk`]. A timeout, a reply to another request, or a broken stream ends
//!   the connection with an error: the caller reconnects, so a late reply can never be taken for the
//!   answer to a later request.
//! - Realtime events that arrive while a request waits for its reply are kept ([`ZkClient::take_events`])
//!   and acknowledged as pyzk does; they never disturb the request.
//! - [`ZkClient::wait_event`] is cancel safe: dropping it (to poll instead) loses no bytes.
//! - The comm key is used only to compute the 4 AUTH bytes; it is in no error, log line or `Debug`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::codec::{self, *};

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// One reply to one request.
    pub packet: Duration,
    /// One chunk (64 KiB) of a buffered read, from the request to its last packet.
    pub chunk: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            packet: Duration::from_secs(10),
            chunk: Duration::from_secs(30),
        }
    }
}

/// A failure talking to a device. Each message starts with `device ID (ADDRESS)` and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("{device}: cannot connect: {source}: check that the clock is on, reachable, and that the port is right (ZKTeco default 4370)")]
    Connect { device: String, source: io::Error },
    #[error("{device}: authentication refused: check comm_key")]
    AuthRefused { device: String },
    #[error("{device}: connection lost: {source}")]
    Io { device: String, source: io::Error },
    #[error("{device}: no reply to {command} within {secs} s: check the network and the clock; reconnecting")]
    Timeout {
        device: String,
        command: &'static str,
        secs: u64,
    },
    #[error("{device}: bad data from the clock: {source}")]
    Decode { device: String, source: DecodeError },
    #[error("{device}: the clock refused {command} (reply code {code})")]
    Refused {
        device: String,
        command: &'static str,
        code: u16,
    },
    #[error("{device}: protocol error: {what}")]
    Protocol { device: String, what: String },
}

/// The data of a buffered read (CMD_PREPARE_BUFFER / CMD_READ_BUFFER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// Size of the whole dataset, including its 4-byte size prefix.
    pub size: usize,
    /// Offset in the dataset of `data[0]`.
    pub from: usize,
    pub data: Vec<u8>,
}

/// Part of a device's attendance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttLog {
    /// Bytes per record (8, 16, 40...).
    pub record_size: usize,
    /// Index in the log of `records[0]`.
    pub first: u64,
    pub records: Vec<AttRecord>,
    /// The raw bytes of each record (for the watermark's fingerprint).
    pub raw: Vec<u8>,
}

impl AttLog {
    /// The raw bytes of record `i` of `records`.
    pub fn raw_record(&self, i: usize) -> &[u8] {
        &self.raw[i * self.record_size..(i + 1) * self.record_size]
    }
}

/// The largest dataset a buffered read accepts, in bytes: 128 MiB, over three million 40-byte
/// records, more than a terminal's log holds. A larger announcement is a corrupt reply.
pub const MAX_DATASET: usize = 128 << 20;

/// A connected, authenticated session with one device.
pub struct ZkClient {
    stream: BufReader<TcpStream>,
    device: String,
    session: u16,
    reply: u16,
    timeouts: Timeouts,
    events: VecDeque<Event>,
    /// Event payloads that could not be decoded (counted for the caller to log).
    pub bad_events: u64,
}

impl fmt::Debug for ZkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkClient")
            .field("device", &self.device)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn command_name(c: u16) -> &'static str {
    match c {
        CMD_CONNECT => "CONNECT",
        CMD_EXIT => "EXIT",
        CMD_ENABLEDEVICE => "ENABLEDEVICE",
        CMD_DISABLEDEVICE => "DISABLEDEVICE",
        CMD_AUTH => "AUTH",
        CMD_GET_FREE_SIZES => "GET_FREE_SIZES",
        CMD_GET_TIME => "GET_TIME",
        CMD_SET_TIME => "SET_TIME",
        CMD_REG_EVENT => "REG_EVENT",
        CMD_FREE_DATA => "FREE_DATA",
        CMD_PREPARE_BUFFER => "PREPARE_BUFFER",
        CMD_READ_BUFFER => "READ_BUFFER",
        CMD_CLEAR_ATTLOG => "CLEAR_ATTLOG",
        CMD_OPTIONS_RRQ => "OPTIONS_RRQ",
        _ => "a command",
    }
}

impl ZkClient {
    /// Connects to `address` and logs in with `comm_key` (0: none). `device` names the device in
    /// errors, e.g. `device door-1 (10.0.0.5:4370)`.
    pub async fn connect(
        device: &str,
        address: &str,
        comm_key: u32,
        timeouts: Timeouts,
    ) -> Result<ZkClient, ZkError> {
        let connect_err = |source| ZkError::Connect {
            device: device.to_string(),
            source,
        };
        let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(address)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_err(e)),
            Err(_) => {
                return Err(connect_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", timeouts.connect.as_secs()),
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let mut c = ZkClient {
            stream: BufReader::with_capacity(1 << 16, stream),
            device: device.to_string(),
            session: 0,
            // the first request goes out with reply id 0, as pyzk's does
            reply: u16::MAX,
            timeouts,
            events: VecDeque::new(),
            bad_events: 0,
        };
        let (h, _) = c.request(CMD_CONNECT, &[]).await?;
        c.session = h.session;
        match h.command {
            CMD_ACK_OK => Ok(c),
            CMD_ACK_UNAUTH => {
                let key = commkey(comm_key, c.session, 50);
                match c.request(CMD_AUTH, &key).await {
                    Ok((h, _)) if h.command == CMD_ACK_OK => Ok(c),
                    // a refusal, or a device that hangs up on a wrong key
                    Ok(_) | Err(ZkError::Io { .. }) => Err(ZkError::AuthRefused {
                        device: device.to_string(),
                    }),
                    Err(e) => Err(e),
                }
            }
            code => Err(ZkError::Refused {
                device: device.to_string(),
                command: "CONNECT",
                code,
            }),
        }
    }

    /// The name used in errors.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn io(&self, source: io::Error) -> ZkError {
        ZkError::Io {
            device: self.device.clone(),
            source,
        }
    }

    fn decode(&self, source: DecodeError) -> ZkError {
        ZkError::Decode {
            device: self.device.clone(),
            source,
        }
    }

    fn protocol(&self, what: String) -> ZkError {
        ZkError::Protocol {
            device: self.device.clone(),
            what,
        }
    }

    async fn write(&mut self, command: u16, reply: u16, data: &[u8]) -> Result<(), ZkError> {
        let pkt = codec::encode(command, self.session, reply, data);
        let r =
            tokio::time::timeout(self.timeouts.packet, self.stream.get_mut().write_all(&pkt)).await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io(e)),
            Err(_) => Err(ZkError::Timeout {
                device: self.device.clone(),
                command: command_name(command),
                secs: self.timeouts.packet.as_secs(),
            }),
        }
    }

    /// Reads one whole packet (no timeout: callers bound it).
    async fn read_packet(&mut self) -> Result<(Header, Vec<u8>), ZkError> {
        let mut w = [0u8; 8];
        self.stream
            .read_exact(&mut w)
            .await
            .map_err(|e| self.io(e))?;
        let len = wrapper_len(&w).map_err(|e| self.decode(e))?;
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        let (h, _) = decode_body(&body).map_err(|e| self.decode(e))?;
        body.drain(..8);
        Ok((h, body))
    }

    /// Reads the next packet that is not a realtime event, by `deadline`. Events met on the way are
    /// decoded, acknowledged and kept.
    async fn next_packet(
        &mut self,
        deadline: Instant,
        command: u16,
    ) -> Result<(Header, Vec<u8>), ZkError> {
        loop {
            let (h, data) = match tokio::time::timeout_at(deadline, self.read_packet()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ZkError::Timeout {
                        device: self.device.clone(),
                        command: command_name(command),
                        secs: self.timeouts.packet.as_secs(),
                    })
                }
            };
            if h.command == CMD_REG_EVENT {
                self.on_event(h, &data).await?;
                continue;
            }
            return Ok((h, data));
        }
    }

    async fn on_event(&mut self, h: Header, data: &[u8]) -> Result<(), ZkError> {
        // pyzk acknowledges every event with ACK_OK, reply id 0
        self.write(CMD_ACK_OK, 0, &[]).await?;
        if h.session as u32 != EF_ATTLOG {
            return Ok(());
        }
        match decode_events(data) {
            Ok(evs) => self.events.extend(evs),
            Err(e) => {
                self.bad_events += 1;
                tracing::warn!(device = %self.device, error = %e, "zk: realtime event not understood; the next poll reads the punch from the log");
            }
        }
        Ok(())
    }

    /// Sends a request and returns the reply, which must echo the request's reply id.
    async fn request(&mut self, command: u16, data: &[u8]) -> Result<(Header, Vec<u8>), ZkError> {
        self.reply = self.reply.wrapping_add(1);
        let reply = self.reply;
        self.write(command, reply, data).await?;
        let deadline = Instant::now() + self.timeouts.packet;
        let (h, d) = self.next_packet(deadline, command).await?;
        if h.reply != reply {
            return Err(self.protocol(format!(
                "reply id {} to {} (reply id {reply}): the stream is out of step; reconnecting",
                h.reply,
                command_name(command)
            )));
        }
        Ok((h, d))
    }

    /// A request whose reply must be ACK_OK; returns its data.
    async fn ok(&mut self, command: u16, data: &[u8]) -> Result<Vec<u8>, ZkError> {
        let (h, d) = self.request(command, data).await?;
        if h.command != CMD_ACK_OK {
            return Err(ZkError::Refused {
                device: self.device.clone(),
                command: command_name(command),
                code: h.command,
            });
        }
        Ok(d)
    }

    /// CMD_GET_FREE_SIZES: users, records...
    pub async fn free_sizes(&mut self) -> Result<FreeSizes, ZkError> {
        let d = self.ok(CMD_GET_FREE_SIZES, &[]).await?;
        decode_sizes(&d).map_err(|e| self.decode(e))
    }

    /// The device's clock (its local wall-clock time).
    pub async fn get_time(&mut self) -> Result<NaiveDateTime, ZkError> {
        let d = self.ok(CMD_GET_TIME, &[]).await?;
        if d.len() < 4 {
            return Err(self.decode(DecodeError::Short {
                what: "time reply",
                len: d.len(),
                expected: 4,
            }));
        }
        decode_time(u32::from_le_bytes([d[0], d[1], d[2], d[3]])).map_err(|e| self.decode(e))
    }

    /// Sets the device's clock (local wall-clock time).
    pub async fn set_time(&mut self, t: NaiveDateTime) -> Result<(), ZkError> {
        self.ok(CMD_SET_TIME, &encode_time(t).to_le_bytes())
            .await
            .map(drop)
    }

    /// Stops the device from taking punches (while its log is read).
    pub async fn disable(&mut self) -> Result<(), ZkError> {
        self.ok(CMD_DISABLEDEVICE, &[]).await.map(drop)
    }

    /// Lets the device take punches again.
    pub async fn enable(&mut self) -> Result<(), ZkError> {
        self.ok(CMD_ENABLEDEVICE, &[]).await.map(drop)
    }

    /// The serial number (`~SerialNumber` option), or `None` if the device does not say.
    pub async fn serial_number(&mut self) -> Result<Option<String>, ZkError> {
        let (h, d) = self.request(CMD_OPTIONS_RRQ, b"~SerialNumber\0").await?;
        if h.command != CMD_ACK_OK {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&d);
        let text = text.trim_end_matches('\0');
        Ok(text
            .split_once('=')
            .map(|(_, v)| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
            .filter(|v| !v.is_empty())
            .map(str::to_string))
    }

    /// Deletes every attendance record on the device.
    pub async fn clear_attlog(&mut self) -> Result<(), ZkError> {
        self.ok(CMD_CLEAR_ATTLOG, &[]).await.map(drop)
    }

    /// Subscribes to realtime events (`EF_ATTLOG`), or unsubscribes with 0.
    pub async fn reg_event(&mut self, flags: u32) -> Result<(), ZkError> {
        self.ok(CMD_REG_EVENT, &flags.to_le_bytes()).await.map(drop)
    }

    /// Ends the session politely (errors ignored: the connection is closed anyway).
    pub async fn exit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.request(CMD_EXIT, &[])).await;
    }

    /// Leaves a session whose stream may be mid-packet (a read cut short by shutdown): re-enables the
    /// device and says goodbye without waiting for the replies.
    pub async fn abandon(mut self) {
        for cmd in [CMD_ENABLEDEVICE, CMD_EXIT] {
            self.reply = self.reply.wrapping_add(1);
            let pkt = codec::encode(cmd, self.session, self.reply, &[]);
            let w = self.stream.get_mut().write_all(&pkt);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(1), w).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    /// Realtime punches received so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Waits for realtime punches. Cancel safe: it only waits for bytes until they arrive, then
    /// reads the whole packet under the packet timeout.
    pub async fn wait_event(&mut self) -> Result<Vec<Event>, ZkError> {
        loop {
            if !self.events.is_empty() {
                return Ok(self.take_events());
            }
            let empty = match self.stream.fill_buf().await {
                Ok(buf) => buf.is_empty(),
                Err(e) => return Err(self.io(e)),
            };
            if empty {
                return Err(self.io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the clock closed the connection",
                )));
            }
            let deadline = Instant::now() + self.timeouts.packet;
            let (h, data) = match tokio::time::timeout_at(deadline, self.read_packet()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ZkError::Timeout {
                        device: self.device.clone(),
                        command: "a realtime event",
                        secs: self.timeouts.packet.as_secs(),
                    })
                }
            };
            if h.command == CMD_REG_EVENT {
                self.on_event(h, &data).await?;
            } else {
                return Err(self.protocol(format!(
                    "unexpected packet {} while waiting for events",
                    h.command
                )));
            }
        }
    }

    /// A buffered read of dataset `cmd` (`fct`, `ext` as pyzk sends them), from byte `from(size)` of
    /// the dataset (a function of its size, known only once the device has prepared it).
    pub async fn read_buffer(
        &mut self,
        cmd: u16,
        fct: i32,
        ext: i32,
        from: impl FnOnce(usize) -> usize,
    ) -> Result<Buffer, ZkError> {
        let mut req = Vec::with_capacity(11);
        req.push(1u8);
        req.extend_from_slice(&(cmd as i16).to_le_bytes());
        req.extend_from_slice(&fct.to_le_bytes());
        req.extend_from_slice(&ext.to_le_bytes());
        let (h, d) = self.request(CMD_PREPARE_BUFFER, &req).await?;
        match h.command {
            CMD_DATA => {
                return Ok(Buffer {
                    size: d.len(),
                    from: 0,
                    data: d,
                })
            }
            CMD_ACK_OK if d.len() >= 5 => {}
            code => {
                return Err(ZkError::Refused {
                    device: self.device.clone(),
                    command: "PREPARE_BUFFER",
                    code,
                })
            }
        }
        let size = u32::from_le_bytes([d[1], d[2], d[3], d[4]]) as usize;
        if !(4..=MAX_DATASET).contains(&size) {
            // a table starts with its own 4-byte size
            return Err(self.protocol(format!(
                "the clock announces a dataset of {size} bytes (a table takes 4 to {MAX_DATASET}): its reply is corrupt; reconnecting"
            )));
        }
        let start = from(size).min(size);
        // memory grows with what arrives, never with what the clock announces
        let mut data = Vec::with_capacity((size - start).min(CHUNK as usize));
        let mut at = start;
        while at < size {
            let len = (size - at).min(CHUNK as usize);
            // a device may serve less than asked (as its PREPARE_DATA says): ask again from there
            at += self.read_chunk(at, len, &mut data).await?;
        }
        // releasing the buffer is a courtesy: the data is complete either way
        if let Err(e) = self.ok(CMD_FREE_DATA, &[]).await {
            if !matches!(e, ZkError::Refused { .. }) {
                return Err(e);
            }
        }
        Ok(Buffer {
            size,
            from: start,
            data,
        })
    }

    /// The next packet of a chunk, by the chunk's deadline.
    async fn chunk_packet(&mut self, deadline: Instant) -> Result<(Header, Vec<u8>), ZkError> {
        match self.next_packet(deadline, CMD_READ_BUFFER).await {
            Err(ZkError::Timeout { .. }) => Err(ZkError::Timeout {
                device: self.device.clone(),
                command: "READ_BUFFER (one chunk)",
                secs: self.timeouts.chunk.as_secs(),
            }),
            r => r,
        }
    }

    /// Reads `len` bytes at `start` of the prepared buffer into `out`.
    async fn read_chunk(
        &mut self,
        start: usize,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, ZkError> {
        let mut req = [0u8; 8];
        req[..4].copy_from_slice(&(start as i32).to_le_bytes());
        req[4..].copy_from_slice(&(len as i32).to_le_bytes());
        self.reply = self.reply.wrapping_add(1);
        self.write(CMD_READ_BUFFER, self.reply, &req).await?;
        let deadline = Instant::now() + self.timeouts.chunk;
        let before = out.len();
        let (h, d) = self.chunk_packet(deadline).await?;
        match h.command {
            // the whole chunk in one packet, without an ACK (as pyzk accepts)
            CMD_DATA => out.extend_from_slice(&d),
            CMD_PREPARE_DATA if d.len() >= 4 => {
                let expected = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
                while out.len() - before < expected {
                    let (h, d) = self.chunk_packet(deadline).await?;
                    if h.command != CMD_DATA {
                        return Err(self.protocol(format!(
                            "packet {} in the middle of a chunk ({} of {expected} bytes)",
                            h.command,
                            out.len() - before
                        )));
                    }
                    out.extend_from_slice(&d);
                }
                let (h, _) = self.chunk_packet(deadline).await?;
                if h.command != CMD_ACK_OK {
                    return Err(self.protocol(format!("chunk ended with packet {}", h.command)));
                }
            }
            code => {
                return Err(ZkError::Refused {
                    device: self.device.clone(),
                    command: "READ_BUFFER",
                    code,
                })
            }
        }
        let got = out.len() - before;
        if got == 0 || got > len {
            return Err(self.protocol(format!("chunk at {start}: {got} bytes, asked for {len}")));
        }
        Ok(got)
    }

    /// Reads the attendance log from record `first` on (0: all of it). `records` is the device's
    /// record count (from [`ZkClient::free_sizes`], read with the device disabled): with it the size
    /// of a record is known (pyzk's rule), and only the tail from `first` is transferred.
    pub async fn read_attendance(&mut self, first: u64, records: u64) -> Result<AttLog, ZkError> {
        if records == 0 {
            return Ok(AttLog {
                record_size: 0,
                first: 0,
                records: Vec::new(),
                raw: Vec::new(),
            });
        }
        let first = first.min(records);
        let buf = self
            .read_buffer(CMD_ATTLOG_RRQ, 0, 0, |size| {
                match record_size("attendance log", size.saturating_sub(4), records) {
                    Ok(rs) => 4 + first as usize * rs,
                    Err(_) => 0,
                }
            })
            .await?;
        let (total, body) = if buf.from == 0 {
            if buf.data.len() < 4 {
                return Err(self.decode(DecodeError::Short {
                    what: "attendance log",
                    len: buf.data.len(),
                    expected: 4,
                }));
            }
            let prefix = u32::from_le_bytes([buf.data[0], buf.data[1], buf.data[2], buf.data[3]]);
            (prefix as usize, &buf.data[4..])
        } else {
            (buf.size - 4, &buf.data[..])
        };
        if total != buf.size - 4 {
            return Err(self.protocol(format!(
                "the attendance log says it holds {total} bytes but {} were sent",
                buf.size - 4
            )));
        }
        let rs = record_size("attendance log", total, records).map_err(|e| self.decode(e))?;
        let skip = if buf.from == 0 {
            first as usize * rs
        } else {
            0
        };
        let raw = body[skip.min(body.len())..].to_vec();
        let decoded = decode_records(&raw, rs).map_err(|e| self.decode(e))?;
        Ok(AttLog {
            record_size: rs,
            first,
            records: decoded,
            raw,
        })
    }

    /// Reads the user table. `users` is the device's user count (from [`ZkClient::free_sizes`]).
    pub async fn read_users(&mut self, users: u64) -> Result<Vec<User>, ZkError> {
        if users == 0 {
            return Ok(Vec::new());
        }
        let buf = self.read_buffer(CMD_USERTEMP_RRQ, 5, 0, |_| 0).await?;
        if buf.data.len() < 4 {
            return Err(self.decode(DecodeError::Short {
                what: "user table",
                len: buf.data.len(),
                expected: 4,
            }));
        }
        let body = &buf.data[4..];
        let size = record_size("user table", body.len(), users).map_err(|e| self.decode(e))?;
        decode_users(body, size).map_err(|e| self.decode(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A clock that writes `script` as soon as the client connects, closes its side, then reads
    /// what the client sends until the client hangs up (the shape of the `zk_client` fuzz target).
    async fn scripted_clock(script: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&script).await.unwrap();
            s.shutdown().await.unwrap();
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        addr
    }

    #[tokio::test]
    async fn a_clock_announcing_a_4_gib_user_table_is_refused_before_anything_is_reserved() {
        // found by the zk_client fuzz target: a PREPARE_BUFFER answer of 0xffffffff bytes made the
        // client reserve 4 GiB at once (an out-of-memory abort on a small gateway)
        let mut sizes = vec![0u8; 80];
        sizes[16..20].copy_from_slice(&3u32.to_le_bytes()); // 3 users
        let script = [
            encode(CMD_ACK_OK, 7, 0, &[]),
            encode(CMD_ACK_OK, 7, 1, &sizes),
            encode(CMD_ACK_OK, 7, 2, &[0, 0xff, 0xff, 0xff, 0xff]),
        ]
        .concat();
        let addr = scripted_clock(script).await;
        let mut c = ZkClient::connect("device t (clock)", &addr, 0, Timeouts::default())
            .await
            .unwrap();
        assert_eq!(c.free_sizes().await.unwrap().users, 3);
        let e = c.read_users(3).await.unwrap_err();
        assert!(matches!(e, ZkError::Protocol { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "device t (clock): protocol error: the clock announces a dataset of 4294967295 bytes (a table takes 4 to 134217728): its reply is corrupt; reconnecting"
        );
    }

    #[tokio::test]
    async fn a_clock_announcing_a_log_shorter_than_its_size_field_gets_a_clear_error() {
        // found by the zk_client fuzz target: an attendance log announced as 2 bytes (less than its
        // own u32 size) made `read_attendance` subtract 4 from 2 (a panic with overflow checks, a
        // wrapped size without)
        let mut sizes = vec![0u8; 80];
        sizes[32..36].copy_from_slice(&5u32.to_le_bytes()); // 5 records
        let script = [
            encode(CMD_ACK_OK, 7, 0, &[]),
            encode(CMD_ACK_OK, 7, 1, &sizes),
            encode(CMD_ACK_OK, 7, 2, &[0, 2, 0, 0, 0]),
            encode(CMD_ACK_OK, 7, 3, &[]), // FREE_DATA
        ]
        .concat();
        let addr = scripted_clock(script).await;
        let mut c = ZkClient::connect("device t (clock)", &addr, 0, Timeouts::default())
            .await
            .unwrap();
        let records = c.free_sizes().await.unwrap().records;
        assert_eq!(records, 5);
        let e = c.read_attendance(3, records as u64).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "device t (clock): protocol error: the clock announces a dataset of 2 bytes (a table takes 4 to 134217728): its reply is corrupt; reconnecting"
        );
    }
}
