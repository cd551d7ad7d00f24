//! The simulated device through raw ZK packets: framing and garbage, sessions and the comm key,
//! chunked reads and their faults, events, delays, a large log, and the handle's settings.

use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, cmd, Packet, Top};
use super::model::{
    generate_records, generate_users, EventFormat, Layout, RecordSize, SimRecord, SimUser, UserSize,
};
use super::{start, SimConfig, SimHandle, TCP_CHUNK};

const PATIENCE: Duration = Duration::from_secs(30);

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A minimal client speaking the framing, for what pyzk cannot show.
struct Raw {
    s: TcpStream,
    session: u16,
    reply: u16,
}

impl Raw {
    async fn open(sim: &SimHandle) -> Raw {
        let s = TcpStream::connect(sim.addr()).await.unwrap();
        Raw {
            s,
            session: 0,
            reply: 0,
        }
    }

    async fn send(&mut self, command: u16, data: &[u8]) {
        self.reply = self.reply.wrapping_add(1);
        let p = codec::encode_packet(command, self.session, self.reply, data);
        self.s.write_all(&p).await.unwrap();
    }

    /// The next packet, or `None` at end of stream (a partial packet counts as the end).
    async fn recv(&mut self) -> Option<Packet> {
        let mut top = [0u8; 8];
        tokio::time::timeout(PATIENCE, self.s.read_exact(&mut top))
            .await
            .unwrap()
            .ok()?;
        let Top::Len(n) = codec::parse_top(&top) else {
            panic!("bad wrapper {top:02x?}")
        };
        let mut body = vec![0u8; n];
        self.s.read_exact(&mut body).await.ok()?;
        let p = Packet::parse(&body).unwrap();
        assert!(p.checksum_ok(), "reply checksum");
        Some(p)
    }

    async fn call(&mut self, command: u16, data: &[u8]) -> Packet {
        self.send(command, data).await;
        let p = self.recv().await.expect("a reply");
        assert_eq!(p.reply, self.reply, "reply id echoed");
        p
    }

    async fn connect(sim: &SimHandle, key: u32) -> Raw {
        let mut c = Raw::open(sim).await;
        let p = c.call(cmd::CONNECT, &[]).await;
        c.session = p.session;
        if p.command == cmd::ACK_UNAUTH {
            let h = codec::comm_key_hash(key, c.session, 50);
            assert_eq!(c.call(cmd::AUTH, &h).await.command, cmd::ACK_OK);
        } else {
            assert_eq!(p.command, cmd::ACK_OK);
        }
        c
    }

    /// A whole buffered read of `what` in chunks of `chunk` bytes.
    async fn read(&mut self, what: u16, chunk: usize) -> Option<Vec<u8>> {
        let mut req = vec![1u8];
        req.extend_from_slice(&what.to_le_bytes());
        req.extend_from_slice(&[0; 8]);
        let p = self.call(cmd::PREPARE_BUFFER, &req).await;
        if p.command == cmd::DATA {
            return Some(p.data);
        }
        assert_eq!(p.command, cmd::ACK_OK);
        let size = u32::from_le_bytes(p.data[1..5].try_into().unwrap()) as usize;
        let mut out = Vec::new();
        while out.len() < size {
            let mut q = Vec::new();
            q.extend_from_slice(&(out.len() as i32).to_le_bytes());
            q.extend_from_slice(&(chunk.min(size - out.len()) as i32).to_le_bytes());
            let prep = self.call(cmd::READ_BUFFER, &q).await;
            assert_eq!(prep.command, cmd::PREPARE_DATA);
            let n = u32::from_le_bytes(prep.data[0..4].try_into().unwrap()) as usize;
            let mut got = 0;
            while got < n {
                let d = self.recv().await?;
                assert_eq!((d.command, d.reply), (cmd::DATA, self.reply));
                got += d.data.len();
                out.extend_from_slice(&d.data);
            }
            let ack = self.recv().await?;
            assert_eq!((ack.command, ack.reply), (cmd::ACK_OK, self.reply));
        }
        assert_eq!(self.call(cmd::FREE_DATA, &[]).await.command, cmd::ACK_OK);
        Some(out)
    }
}

async fn sim_with(records: usize, cfg: SimConfig) -> SimHandle {
    let users = generate_users(5);
    start(SimConfig {
        records: generate_records(records, &users, at("2026-03-02 06:00:00")),
        users,
        ..cfg
    })
    .await
    .unwrap()
}

async fn closed(c: &mut Raw) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(PATIENCE, c.s.read(&mut b))
            .await
            .unwrap()
        {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn garbage_bad_checksums_and_unknown_commands_never_stop_the_device() {
    let sim = sim_with(3, SimConfig::default()).await;
    // not the ZK wrapper: that connection is closed
    let mut c = Raw::open(&sim).await;
    c.s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed(&mut c).await);
    // an absurd length: closed too
    let mut c = Raw::open(&sim).await;
    c.s.write_all(&[0x50, 0x50, 0x82, 0x7d, 0xff, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    assert!(closed(&mut c).await);
    // a length below a header
    let mut c = Raw::open(&sim).await;
    c.s.write_all(&[0x50, 0x50, 0x82, 0x7d, 3, 0, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    assert!(closed(&mut c).await);
    // half a packet, then the client goes away
    let mut c = Raw::open(&sim).await;
    c.s.write_all(&codec::encode_packet(cmd::CONNECT, 0, 0, &[])[..11])
        .await
        .unwrap();
    drop(c);
    // a good session still works, and gets clear replies to what it cannot do
    let mut c = Raw::connect(&sim, 0).await;
    let mut bad = codec::encode_packet(cmd::GET_TIME, c.session, 77, &[]);
    bad[10] ^= 0xff;
    c.s.write_all(&bad).await.unwrap();
    let p = c.recv().await.unwrap();
    assert_eq!((p.command, p.reply), (cmd::ACK_ERROR, 77));
    assert_eq!(c.call(4242, b"x").await.command, cmd::ACK_UNKNOWN);
    assert_eq!(c.call(cmd::ACK_ERROR, &[]).await.command, cmd::ACK_UNKNOWN);
    assert_eq!(
        c.call(cmd::READ_BUFFER, &[0; 8]).await.command,
        cmd::ACK_ERROR,
        "no buffer prepared"
    );
    assert_eq!(
        c.call(cmd::PREPARE_BUFFER, &[1, 2]).await.command,
        cmd::ACK_ERROR
    );
    assert_eq!(
        c.call(cmd::OPTIONS_RRQ, b"NoSuchOption\0").await.command,
        cmd::ACK_ERROR
    );
    assert_eq!(c.call(cmd::SET_TIME, &[1, 2]).await.command, cmd::ACK_ERROR);
    assert_eq!(
        c.call(cmd::SET_TIME, &[0xff; 4]).await.command,
        cmd::ACK_ERROR,
        "year 2133"
    );
    let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
    assert_eq!(data.len(), 4 + 3 * 40);
    let counters = sim.counters();
    assert_eq!(counters.bad_packets, 4, "{counters:?}");
    assert_eq!(counters.unsupported, 2, "{counters:?}");
    assert_eq!(c.call(cmd::EXIT, &[]).await.command, cmd::ACK_OK);
    assert!(closed(&mut c).await);
    sim.wait_counters(PATIENCE, |c| c.open_connections == 0 && c.exits == 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn commands_need_a_session_and_the_comm_key() {
    let sim = sim_with(
        1,
        SimConfig {
            comm_key: 123_456,
            ..Default::default()
        },
    )
    .await;
    let mut c = Raw::open(&sim).await;
    assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
    let p = c.call(cmd::CONNECT, &[]).await;
    assert_eq!(p.command, cmd::ACK_UNAUTH);
    assert_ne!(p.session, 0);
    c.session = p.session;
    assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
    let wrong = codec::comm_key_hash(123_457, c.session, 50);
    assert_eq!(c.call(cmd::AUTH, &wrong).await.command, cmd::ACK_UNAUTH);
    let right = codec::comm_key_hash(123_456, c.session, 50);
    assert_eq!(c.call(cmd::AUTH, &right).await.command, cmd::ACK_OK);
    assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
    c.session ^= 0x5555;
    assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_UNAUTH);
    let k = sim.counters();
    assert_eq!(
        (k.sessions, k.auths, k.auth_failures, k.refused),
        (1, 1, 1, 3)
    );
    // the key can change for new sessions
    sim.set_comm_key(0);
    let mut c = Raw::open(&sim).await;
    assert_eq!(c.call(cmd::CONNECT, &[]).await.command, cmd::ACK_OK);
}

#[tokio::test]
async fn chunks_are_capped_split_into_packets_and_echo_the_reply_id() {
    let sim = sim_with(
        100,
        SimConfig {
            max_chunk: 1000,
            data_packet_max: Some(100),
            ..Default::default()
        },
    )
    .await;
    let mut c = Raw::connect(&sim, 0).await;
    let mut req = vec![1u8];
    req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
    req.extend_from_slice(&[0; 8]);
    let p = c.call(cmd::PREPARE_BUFFER, &req).await;
    assert_eq!(p.data, codec::buffer_ready(4 + 100 * 40));
    let mut q = 0i32.to_le_bytes().to_vec();
    q.extend_from_slice(&(TCP_CHUNK as i32).to_le_bytes());
    let prep = c.call(cmd::READ_BUFFER, &q).await;
    assert_eq!(prep.command, cmd::PREPARE_DATA);
    assert_eq!(prep.data.len(), 8);
    assert_eq!(&prep.data[..4], &1000u32.to_le_bytes());
    for _ in 0..10 {
        let d = c.recv().await.unwrap();
        assert_eq!(
            (d.command, d.reply, d.data.len()),
            (cmd::DATA, c.reply, 100)
        );
    }
    let ack = c.recv().await.unwrap();
    assert_eq!((ack.command, ack.reply), (cmd::ACK_OK, c.reply));
    assert_eq!(c.call(cmd::FREE_DATA, &[]).await.command, cmd::ACK_OK);
    // the whole log through the helper, in 1000-byte chunks
    let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
    assert_eq!(data.len(), 4004);
    assert_eq!(&data[..4], &4000u32.to_le_bytes());
    assert_eq!(sim.counters().chunks, 1 + 5);
}

#[tokio::test]
async fn a_chunk_is_cut_in_the_middle_once_or_every_time() {
    let sim = sim_with(100, SimConfig::default()).await;
    sim.drop_mid_chunk(2, false);
    let mut c = Raw::connect(&sim, 0).await;
    assert!(c.read(cmd::ATTLOG_RRQ, 1000).await.is_none(), "cut");
    assert!(closed(&mut c).await);
    // once: the next read is whole, and so is a user read
    let mut c = Raw::connect(&sim, 0).await;
    assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
    assert!(c.read(cmd::USERTEMP_RRQ, 100).await.is_some());
    // sticky: every read, until cleared
    sim.drop_mid_chunk(1, true);
    for _ in 0..2 {
        let mut c = Raw::connect(&sim, 0).await;
        assert!(c.read(cmd::ATTLOG_RRQ, 1000).await.is_none());
    }
    sim.clear_faults();
    let mut c = Raw::connect(&sim, 0).await;
    assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
    assert_eq!(sim.counters().injected_drops, 3);
    // a direct reply is chunk 1
    let sim = sim_with(
        10,
        SimConfig {
            direct_max: 1 << 20,
            ..Default::default()
        },
    )
    .await;
    sim.drop_mid_chunk(1, false);
    let mut c = Raw::connect(&sim, 0).await;
    let mut req = vec![1u8];
    req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
    req.extend_from_slice(&[0; 8]);
    c.send(cmd::PREPARE_BUFFER, &req).await;
    assert!(c.recv().await.is_none());
    let mut c = Raw::connect(&sim, 0).await;
    assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 404);
}

#[tokio::test]
async fn a_stalled_chunk_keeps_the_connection_open_and_silent() {
    let sim = sim_with(100, SimConfig::default()).await;
    sim.stall_mid_chunk(2, false);
    let mut c = Raw::connect(&sim, 0).await;
    let mut req = vec![1u8];
    req.extend_from_slice(&cmd::ATTLOG_RRQ.to_le_bytes());
    req.extend_from_slice(&[0; 8]);
    assert_eq!(c.call(cmd::PREPARE_BUFFER, &req).await.command, cmd::ACK_OK);
    let mut q = 0i32.to_le_bytes().to_vec();
    q.extend_from_slice(&1000i32.to_le_bytes());
    c.call(cmd::READ_BUFFER, &q).await;
    for _ in 0..2 {
        c.recv().await.unwrap();
    }
    q[..4].copy_from_slice(&1000i32.to_le_bytes());
    assert_eq!(
        c.call(cmd::READ_BUFFER, &q).await.command,
        cmd::PREPARE_DATA
    );
    // half of the 1016-byte DATA packet, then nothing
    let mut head = [0u8; 508];
    c.s.read_exact(&mut head).await.unwrap();
    let mut more = [0u8; 1];
    let silent = tokio::time::timeout(Duration::from_millis(300), c.s.read(&mut more)).await;
    assert!(
        silent.is_err(),
        "the stalled connection stays silent and open"
    );
    sim.wait_counters(PATIENCE, |k| {
        k.injected_drops == 1 && k.open_connections == 1
    })
    .await
    .unwrap();
    drop(c);
    sim.wait_counters(PATIENCE, |k| k.open_connections == 0)
        .await
        .unwrap();
    let mut c = Raw::connect(&sim, 0).await;
    assert_eq!(c.read(cmd::ATTLOG_RRQ, 1000).await.unwrap().len(), 4004);
}

#[tokio::test]
async fn events_reach_registered_sessions_only_and_acks_are_not_answered() {
    let sim = sim_with(0, SimConfig::default()).await;
    let mut listener = Raw::connect(&sim, 0).await;
    let mut other = Raw::connect(&sim, 0).await;
    assert_eq!(
        listener
            .call(cmd::REG_EVENT, &1u32.to_le_bytes())
            .await
            .command,
        cmd::ACK_OK
    );
    sim.wait_counters(PATIENCE, |c| c.event_sessions == 1)
        .await
        .unwrap();
    let mut r = SimRecord::new("A-17", at("2026-03-02 08:59:58"));
    r.verify = 15;
    r.state = 1;
    sim.add_records([r]).unwrap();
    let e = listener.recv().await.unwrap();
    assert_eq!((e.command, e.session, e.reply), (cmd::REG_EVENT, 1, 0));
    assert_eq!(e.data.len(), 52);
    assert_eq!(&e.data[..5], b"A-17\0");
    assert_eq!(&e.data[24..32], &[15, 1, 26, 3, 2, 8, 59, 58]);
    // the client's ACK_OK gets no reply: the next packet answers the next request
    listener.send(cmd::ACK_OK, &[]).await;
    let p = listener.call(cmd::GET_FREE_SIZES, &[]).await;
    assert_eq!(&p.data[32..36], &1i32.to_le_bytes());
    // the unregistered session got nothing: its next packet is its own reply
    assert_eq!(other.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
    // unsubscribing stops events
    assert_eq!(
        listener.call(cmd::REG_EVENT, &[0; 4]).await.command,
        cmd::ACK_OK
    );
    sim.add_records([SimRecord::new("9", at("2026-03-02 09:00:00"))])
        .unwrap();
    assert_eq!(listener.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
    let k = sim.counters();
    assert_eq!((k.events_sent, k.event_sessions), (1, 0));
}

#[tokio::test]
async fn replies_wait_for_the_configured_delay() {
    let sim = sim_with(0, SimConfig::default()).await;
    let mut c = Raw::connect(&sim, 0).await;
    sim.set_reply_delay(Duration::from_millis(150));
    let t0 = std::time::Instant::now();
    assert_eq!(c.call(cmd::GET_TIME, &[]).await.command, cmd::ACK_OK);
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn a_100k_record_log_is_served_whole_in_chunks() {
    let sim = sim_with(100_000, SimConfig::default()).await;
    let mut c = Raw::connect(&sim, 0).await;
    let t0 = std::time::Instant::now();
    let data = c.read(cmd::ATTLOG_RRQ, TCP_CHUNK).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(data.len(), 4 + 100_000 * 40);
    let want = Layout {
        records: RecordSize::B40,
        users: UserSize::B72,
        events: EventFormat::Id52,
        table: &sim.users(),
    }
    .attendance_dataset(&sim.records())
    .unwrap();
    assert!(data == want, "served bytes differ from the log");
    let chunks = sim.counters().chunks;
    assert_eq!(chunks as usize, data.len().div_ceil(TCP_CHUNK));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!("served 100,000 40-byte records in {chunks} chunks in {took:?} ({build} build)");
}

#[tokio::test]
async fn clock_options_and_users_follow_the_handle() {
    let sim = sim_with(2, SimConfig::default()).await;
    let mut c = Raw::connect(&sim, 0).await;
    sim.set_device_time(at("2030-07-08 09:10:11"));
    let p = c.call(cmd::GET_TIME, &[]).await;
    let t = codec::decode_time(u32::from_le_bytes(p.data[..4].try_into().unwrap())).unwrap();
    assert!(
        (t - at("2030-07-08 09:10:11")).num_seconds().abs() <= 2,
        "{t}"
    );
    let set = codec::encode_time(at("2029-01-02 03:04:05")).unwrap();
    assert_eq!(
        c.call(cmd::SET_TIME, &set.to_le_bytes()).await.command,
        cmd::ACK_OK
    );
    assert!(
        (sim.device_time() - at("2029-01-02 03:04:05"))
            .num_seconds()
            .abs()
            <= 2
    );
    sim.set_serial_number("OTHER-1");
    let p = c.call(cmd::OPTIONS_RRQ, b"~SerialNumber\0").await;
    assert_eq!(p.data, b"~SerialNumber=OTHER-1\0");
    assert_eq!(
        c.call(cmd::OPTIONS_WRQ, b"Door1Delay=5\0").await.command,
        cmd::ACK_OK
    );
    assert_eq!(sim.option("Door1Delay").as_deref(), Some("5"));
    // 8-byte records need their user: a table without it is refused
    let sim8 = start(SimConfig {
        record_size: RecordSize::B8,
        users: vec![SimUser::new(1, "70000", "Ann")],
        records: vec![SimRecord::new("70000", at("2026-03-02 09:00:00")); 3],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(sim8.set_users(vec![]).is_err());
    assert_eq!(sim8.users().len(), 1);
    assert!(sim8
        .add_records([SimRecord::new("X-1", at("2026-03-02 09:00:00"))])
        .is_err());
    assert_eq!(sim8.record_count(), 3);
    assert_eq!(c.call(cmd::DISABLEDEVICE, &[]).await.command, cmd::ACK_OK);
    assert!(!sim.is_enabled());
    assert_eq!(c.call(cmd::CLEAR_ATTLOG, &[]).await.command, cmd::ACK_OK);
    assert_eq!(sim.record_count(), 0);
    let k = sim.counters();
    assert_eq!((k.disables, k.clears, k.set_times), (1, 1, 1));
}
