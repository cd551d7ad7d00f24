//! One client connection: ZK TCP framing in, one reply per request out, the buffered reads of the
//! attendance log and the user table (with their injected faults), and realtime events.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::codec::{self, cmd, Packet, Top};
use super::config::ChunkDrop;
use super::server::{Shared, MAX_REQUEST};

/// Which table a buffer holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Attendance,
    Users,
    Templates,
}

struct Buffer {
    table: Table,
    data: Vec<u8>,
    /// Chunk requests served from it so far.
    chunks: u32,
}

enum Next {
    Continue,
    Close,
}

pub(super) struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    stop: CancellationToken,
    events: broadcast::Receiver<Arc<Vec<u8>>>,
    session: u16,
    connected: bool,
    authed: bool,
    registered: bool,
    buffer: Option<Buffer>,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, shared: Arc<Shared>, stop: CancellationToken) -> Conn {
        let events = shared.events.subscribe();
        Conn {
            stream,
            shared,
            stop,
            events,
            session: 0,
            connected: false,
            authed: false,
            registered: false,
            buffer: None,
        }
    }

    pub(super) async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(4096);
        let stop = self.stop.clone();
        'conn: loop {
            loop {
                match take_frame(&mut buf) {
                    Ok(Some(p)) => match self.handle(p).await {
                        Ok(Next::Continue) => {}
                        Ok(Next::Close) | Err(_) => break 'conn,
                    },
                    Ok(None) => break,
                    Err(why) => {
                        debug!(why, "zk simulator: bad packet, closing the connection");
                        self.shared.count(|c| c.bad_packets += 1);
                        break 'conn;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                r = self.stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                ev = self.events.recv() => match ev {
                    Ok(payload) if self.registered => {
                        let p = codec::encode_packet(cmd::REG_EVENT, codec::EF_ATTLOG as u16, 0, &payload);
                        if self.stream.write_all(&p).await.is_err() {
                            break;
                        }
                        self.shared.count(|c| c.events_sent += 1);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let registered = self.registered;
        self.shared.count(|c| {
            c.open_connections -= 1;
            if registered {
                c.event_sessions -= 1;
            }
        });
    }

    async fn send(&mut self, command: u16, reply: u16, data: &[u8]) -> std::io::Result<()> {
        let p = codec::encode_packet(command, self.session, reply, data);
        self.stream.write_all(&p).await
    }

    async fn refuse(&mut self, code: u16, reply: u16) -> std::io::Result<Next> {
        self.shared.count(|c| c.refused += 1);
        self.send(code, reply, &[]).await?;
        Ok(Next::Continue)
    }

    async fn ok(&mut self, reply: u16, data: &[u8]) -> std::io::Result<Next> {
        self.send(cmd::ACK_OK, reply, data).await?;
        Ok(Next::Continue)
    }

    fn set_registered(&mut self, on: bool) {
        if on != self.registered {
            self.registered = on;
            self.shared.count(|c| {
                if on {
                    c.event_sessions += 1
                } else {
                    c.event_sessions -= 1
                }
            });
        }
    }

    async fn handle(&mut self, p: Packet) -> std::io::Result<Next> {
        // a client's ACK_OK acknowledges an event: never answered (a reply would shift its ids)
        if p.command == cmd::ACK_OK {
            return Ok(Next::Continue);
        }
        let (delay, check) = {
            let st = self.shared.lock();
            (st.reply_delay, st.check_checksums)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let r = p.reply;
        if check && !p.checksum_ok() {
            self.shared.count(|c| c.bad_packets += 1);
            self.send(cmd::ACK_ERROR, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if p.command == cmd::CONNECT {
            self.session = loop {
                let s: u16 = rand::random();
                if s != 0 {
                    break s;
                }
            };
            self.connected = true;
            self.authed = self.shared.lock().comm_key == 0;
            self.buffer = None;
            self.set_registered(false);
            self.shared.count(|c| c.sessions += 1);
            let code = if self.authed {
                cmd::ACK_OK
            } else {
                cmd::ACK_UNAUTH
            };
            self.send(code, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if !self.connected || p.session != self.session {
            return self.refuse(cmd::ACK_UNAUTH, r).await;
        }
        if p.command == cmd::AUTH {
            let key = self.shared.lock().comm_key;
            if key == 0 || codec::comm_key_matches(key, self.session, &p.data) {
                self.authed = true;
                self.shared.count(|c| c.auths += 1);
                return self.ok(r, &[]).await;
            }
            self.shared.count(|c| c.auth_failures += 1);
            self.send(cmd::ACK_UNAUTH, r, &[]).await?;
            return Ok(Next::Continue);
        }
        if !self.authed {
            return self.refuse(cmd::ACK_UNAUTH, r).await;
        }
        match p.command {
            cmd::EXIT => {
                self.shared.count(|c| c.exits += 1);
                self.send(cmd::ACK_OK, r, &[]).await?;
                let _ = self.stream.shutdown().await;
                Ok(Next::Close)
            }
            cmd::ENABLEDEVICE | cmd::DISABLEDEVICE => {
                let on = p.command == cmd::ENABLEDEVICE;
                self.shared.lock().enabled = on;
                self.shared
                    .count(|c| if on { c.enables += 1 } else { c.disables += 1 });
                self.ok(r, &[]).await
            }
            cmd::GET_FREE_SIZES => {
                let data = {
                    let st = self.shared.lock();
                    codec::free_sizes(&codec::FreeSizes {
                        users: st.users.len() as u32,
                        records: st.records.len() as u32,
                        user_capacity: st.user_capacity,
                        record_capacity: st.record_capacity,
                        finger_capacity: 3000,
                    })
                };
                self.ok(r, &data).await
            }
            cmd::OPTIONS_RRQ => {
                let key_bytes = p.data.split(|b| *b == 0).next().unwrap_or(&[]);
                let key = String::from_utf8_lossy(key_bytes).into_owned();
                let value = self.shared.lock().options.get(&key).cloned();
                match value {
                    Some(v) => self.ok(r, format!("{key}={v}\0").as_bytes()).await,
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::OPTIONS_WRQ => {
                let text = p.data.split(|b| *b == 0).next().unwrap_or(&[]);
                let text = String::from_utf8_lossy(text);
                match text.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        self.shared
                            .lock()
                            .options
                            .insert(k.to_owned(), v.to_owned());
                        self.ok(r, &[]).await
                    }
                    _ => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::GET_VERSION => self.ok(r, b"Ver 6.60 Apr 28 2017\0").await,
            cmd::GET_PINWIDTH => self.ok(r, &[9]).await,
            cmd::GET_TIME => {
                let now = Utc::now().naive_utc() + self.shared.lock().clock_offset;
                match codec::encode_time(now) {
                    Some(t) => self.ok(r, &t.to_le_bytes()).await,
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::SET_TIME => {
                let t = p
                    .data
                    .get(..4)
                    .and_then(|b| codec::decode_time(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .filter(|t| codec::encode_time(*t).is_some());
                match t {
                    Some(t) => {
                        self.shared.lock().clock_offset = t - Utc::now().naive_utc();
                        self.shared.count(|c| c.set_times += 1);
                        self.ok(r, &[]).await
                    }
                    None => self.refuse(cmd::ACK_ERROR, r).await,
                }
            }
            cmd::REG_EVENT => {
                let mut flags = [0u8; 4];
                let n = p.data.len().min(4);
                flags[..n].copy_from_slice(&p.data[..n]);
                self.set_registered(u32::from_le_bytes(flags) & codec::EF_ATTLOG != 0);
                self.ok(r, &[]).await
            }
            cmd::STARTVERIFY | cmd::CANCELCAPTURE | cmd::REFRESHDATA => self.ok(r, &[]).await,
            cmd::CLEAR_ATTLOG | cmd::CLEAR_DATA => {
                {
                    let mut st = self.shared.lock();
                    st.records.clear();
                    if p.command == cmd::CLEAR_DATA {
                        st.users.clear();
                    }
                }
                self.shared.count(|c| c.clears += 1);
                self.ok(r, &[]).await
            }
            cmd::PREPARE_BUFFER => self.prepare_buffer(&p).await,
            cmd::READ_BUFFER => self.read_buffer(&p).await,
            cmd::FREE_DATA => {
                self.buffer = None;
                self.shared.count(|c| c.frees += 1);
                self.ok(r, &[]).await
            }
            _ => {
                self.shared.count(|c| c.unsupported += 1);
                self.send(cmd::ACK_UNKNOWN, r, &[]).await?;
                Ok(Next::Continue)
            }
        }
    }

    async fn prepare_buffer(&mut self, p: &Packet) -> std::io::Result<Next> {
        let r = p.reply;
        let Some((what, _fct, _ext)) = codec::parse_buffer_request(&p.data) else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        let table = match what {
            cmd::ATTLOG_RRQ => Table::Attendance,
            cmd::USERTEMP_RRQ => Table::Users,
            cmd::DB_RRQ => Table::Templates,
            _ => return self.refuse(cmd::ACK_ERROR, r).await,
        };
        let (data, direct_max) = {
            let st = self.shared.lock();
            let layout = st.layout();
            let data = match table {
                // stored records and users were validated when they were added
                Table::Attendance => layout.attendance_dataset(&st.records),
                Table::Users => layout.user_dataset(),
                Table::Templates => Ok(vec![0; 4]),
            };
            (data, st.direct_max)
        };
        let Ok(data) = data else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        self.shared.count(|c| match table {
            Table::Attendance => c.attendance_reads += 1,
            Table::Users => c.user_reads += 1,
            Table::Templates => {}
        });
        if data.len() <= direct_max {
            if let Some(f) = self.take_fault_for(table, 1) {
                let p = codec::encode_packet(cmd::DATA, self.session, r, &data);
                return self.drop_mid(&p, f).await;
            }
            self.send(cmd::DATA, r, &data).await?;
            self.shared.count(|c| c.chunks += 1);
            return Ok(Next::Continue);
        }
        let ready = codec::buffer_ready(data.len());
        self.buffer = Some(Buffer {
            table,
            data,
            chunks: 0,
        });
        self.ok(r, &ready).await
    }

    fn take_fault_for(&self, table: Table, n: u32) -> Option<ChunkDrop> {
        (table == Table::Attendance)
            .then(|| self.take_fault(n))
            .flatten()
    }

    /// The chunk fault that fires for chunk `n` of an attendance read, if any (consumed unless
    /// sticky).
    fn take_fault(&self, n: u32) -> Option<ChunkDrop> {
        let mut st = self.shared.lock();
        match st.fault {
            Some(f) if f.chunk == n => {
                if !f.sticky {
                    st.fault = None;
                }
                Some(f)
            }
            _ => None,
        }
    }

    /// Writes half of `packet`, then closes the connection, or (stall) waits for the client to
    /// close it, discarding what it sends.
    async fn drop_mid(&mut self, packet: &[u8], fault: ChunkDrop) -> std::io::Result<Next> {
        self.shared.count(|c| c.injected_drops += 1);
        let half = packet.len() / 2;
        self.stream.write_all(&packet[..half]).await?;
        self.stream.flush().await?;
        if fault.stall {
            let stop = self.stop.clone();
            let mut sink = [0u8; 4096];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = self.stream.read(&mut sink) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
        Ok(Next::Close)
    }

    async fn read_buffer(&mut self, p: &Packet) -> std::io::Result<Next> {
        let r = p.reply;
        let Some((start, len)) = codec::parse_chunk_request(&p.data) else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        let (max_chunk, packet_max) = {
            let st = self.shared.lock();
            (st.max_chunk, st.data_packet_max)
        };
        let Some(buf) = self.buffer.as_mut() else {
            return self.refuse(cmd::ACK_ERROR, r).await;
        };
        if len == 0 || start >= buf.data.len() {
            return self.refuse(cmd::ACK_ERROR, r).await;
        }
        buf.chunks += 1;
        let n = len.min(max_chunk).min(buf.data.len() - start);
        let packet_len = packet_max.unwrap_or(n).min(n);
        let (chunk_no, table) = (buf.chunks, buf.table);
        // the chunk is copied so the buffer is not borrowed across the writes
        let chunk = buf.data[start..start + n].to_vec();
        let mut prepare = Vec::with_capacity(8);
        prepare.extend_from_slice(&(n as u32).to_le_bytes());
        prepare.extend_from_slice(&(packet_len as u32).to_le_bytes());
        self.send(cmd::PREPARE_DATA, r, &prepare).await?;
        if let Some(f) = self.take_fault_for(table, chunk_no) {
            let first = codec::encode_packet(cmd::DATA, self.session, r, &chunk[..packet_len]);
            return self.drop_mid(&first, f).await;
        }
        for piece in chunk.chunks(packet_len) {
            self.send(cmd::DATA, r, piece).await?;
        }
        self.send(cmd::ACK_OK, r, &[]).await?;
        self.shared.count(|c| c.chunks += 1);
        Ok(Next::Continue)
    }
}

/// Takes one complete packet from the front of `buf`: `Ok(None)` if incomplete, `Err` if the stream
/// is not the ZK TCP framing (cannot be resynchronised).
fn take_frame(buf: &mut BytesMut) -> Result<Option<Packet>, &'static str> {
    if buf.len() < codec::TCP_TOP_LEN {
        return Ok(None);
    }
    let top: [u8; codec::TCP_TOP_LEN] = buf[..codec::TCP_TOP_LEN]
        .try_into()
        .map_err(|_| "short wrapper")?;
    let len = match codec::parse_top(&top) {
        Top::BadMagic => return Err("no 50 50 82 7d wrapper"),
        Top::Len(n) if n < codec::HEADER_LEN => return Err("announced length below a header"),
        Top::Len(n) if n > MAX_REQUEST => return Err("announced length too large"),
        Top::Len(n) => n,
    };
    if buf.len() < codec::TCP_TOP_LEN + len {
        return Ok(None);
    }
    buf.advance(codec::TCP_TOP_LEN);
    let body = buf.split_to(len);
    Ok(Packet::parse(&body))
}
