//! Writes the ZKTeco seeds of the fuzz targets `zk_client` and `zk_codec` (fuzz/seeds/README.md):
//! what the simulator sends during the session the `zk_client` target runs, over a loopback
//! connection that records it, for each record layout (8, 16, 40 bytes), each user layout (28, 72),
//! with and without a comm key, buffered and direct reads, and realtime events; then each packet,
//! record list, user table, event payload and free-sizes reply of those sessions on its own.
//!
//! Run from the workspace root: `cargo run -p clockbridge-testkit --example fuzz_seeds [DIR]`
//! (DIR: fuzz/seeds). The simulator picks a random session id, so the files differ from one run to
//! the next in those two bytes (and the checksums).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use clockbridge::sources::zk::codec::{
    decode_body, wrapper_len, CMD_ACK_OK, CMD_REG_EVENT, CMD_USERTEMP_RRQ, EF_ATTLOG,
};
use clockbridge::sources::zk::{Timeouts, ZkClient};
use clockbridge_testkit::zksim::{
    self, generate_records, generate_users, RecordSize, SimConfig, UserSize,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One simulated clock.
struct Case {
    name: &'static str,
    records: RecordSize,
    users: UserSize,
    comm_key: u32,
    /// Answer datasets up to this size with one CMD_DATA packet (0: always buffered).
    direct_max: usize,
    /// Split a chunk into CMD_DATA packets of at most this size.
    data_packet_max: Option<usize>,
}

const CASES: [Case; 3] = [
    Case {
        name: "b40-u72",
        records: RecordSize::B40,
        users: UserSize::B72,
        comm_key: 0,
        direct_max: 0,
        data_packet_max: None,
    },
    Case {
        name: "b16-u28-commkey",
        records: RecordSize::B16,
        users: UserSize::B28,
        comm_key: 123_456,
        direct_max: 0,
        data_packet_max: Some(64),
    },
    Case {
        name: "b8-u28-direct",
        records: RecordSize::B8,
        users: UserSize::B28,
        comm_key: 0,
        direct_max: 1 << 16,
        data_packet_max: None,
    },
];

const DEVICE: &str = "device seeds (127.0.0.1)";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        packet: Duration::from_secs(5),
        chunk: Duration::from_secs(5),
    }
}

/// A loopback relay to `to` that keeps every byte the clock sends.
async fn recorder(to: std::net::SocketAddr) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address").to_string();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let kept = sent.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("the client");
        let clock = TcpStream::connect(to).await.expect("the simulator");
        let (mut cr, mut cw) = client.into_split();
        let (mut kr, mut kw) = clock.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut kw).await;
            let _ = kw.shutdown().await;
        });
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = kr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.lock().unwrap().extend_from_slice(&buf[..n]);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    });
    (addr, sent)
}

/// The packets of a recorded stream.
fn packets(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(w) = stream.first_chunk::<8>() {
        let Ok(len) = wrapper_len(w) else { break };
        if stream.len() < 8 + len {
            break;
        }
        out.push(&stream[..8 + len]);
        stream = &stream[8 + len..];
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("the seeds directory");
    std::fs::write(dir.join(name), bytes).expect("a seed");
}

/// The index of `size` in the `zk_codec` target's list of sizes.
fn size_choice(size: usize) -> u8 {
    [8, 16, 40, 28, 72]
        .iter()
        .position(|&s| s == size)
        .expect("a layout") as u8
}

async fn case(c: &Case, seeds: &Path) {
    let users = generate_users(4);
    let start = NaiveDate::from_ymd_opt(2026, 3, 2)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("a time");
    let sim = zksim::start(SimConfig {
        comm_key: c.comm_key,
        record_size: c.records,
        user_size: c.users,
        users: users.clone(),
        records: generate_records(5, &users, start),
        direct_max: c.direct_max,
        data_packet_max: c.data_packet_max,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator");
    sim.set_device_time(start);

    // the zk_client target's session, recorded
    let (addr, sent) = recorder(sim.addr()).await;
    let mut client = ZkClient::connect(DEVICE, &addr, c.comm_key, timeouts())
        .await
        .expect("a session");
    let sizes = client.free_sizes().await.expect("free sizes");
    client.get_time().await.expect("the time");
    client.serial_number().await.expect("the serial number");
    client
        .read_users(sizes.users as u64)
        .await
        .expect("the users");
    let log = client
        .read_attendance(0, sizes.records as u64)
        .await
        .expect("the log");
    client.reg_event(EF_ATTLOG).await.expect("events");
    let later = start + chrono::TimeDelta::minutes(5);
    sim.add_records(generate_records(2, &users, later))
        .expect("records");
    let mut events = 0;
    while events < 2 {
        events += client.wait_event().await.expect("an event").len();
    }
    client.exit().await;
    sim.shutdown().await;
    let stream = sent.lock().unwrap().clone();

    let key = c.comm_key.to_le_bytes();
    let mut seed = vec![key[0], key[1], key[2], 0];
    seed.extend_from_slice(&stream);
    write(
        &seeds.join("zk_client"),
        &format!("sim-{}.bin", c.name),
        &seed,
    );

    // the codec's pieces
    let codec = seeds.join("zk_codec");
    for (i, p) in packets(&stream).iter().enumerate() {
        let mut s = vec![0, 0];
        s.extend_from_slice(p);
        write(&codec, &format!("packet-{}-{i:02}.bin", c.name), &s);
        let Ok((h, payload)) = decode_body(&p[8..]) else {
            continue;
        };
        if h.command == CMD_REG_EVENT {
            let mut s = vec![5, 0];
            s.extend_from_slice(payload);
            write(&codec, &format!("events-{}-{i:02}.bin", c.name), &s);
        }
        if i == 2 + usize::from(c.comm_key != 0) && h.command == CMD_ACK_OK {
            // CONNECT, (AUTH,) then GET_FREE_SIZES
            let mut s = vec![4, 0];
            s.extend_from_slice(payload);
            write(&codec, &format!("sizes-{}.bin", c.name), &s);
        }
    }
    let rs = log.record_size;
    let mut s = vec![2, size_choice(rs)];
    s.extend_from_slice(&log.raw);
    write(&codec, &format!("records-{}.bin", c.name), &s);
    let mut s = vec![1, 0];
    s.extend_from_slice(log.raw_record(0));
    write(&codec, &format!("record-{}.bin", c.name), &s);

    // the user table as the clock stores it
    let sim = zksim::start(SimConfig {
        user_size: c.users,
        users,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator");
    let mut client = ZkClient::connect(DEVICE, &sim.addr().to_string(), 0, timeouts())
        .await
        .expect("a session");
    let table = client
        .read_buffer(CMD_USERTEMP_RRQ, 5, 0, |_| 0)
        .await
        .expect("the user table");
    client.exit().await;
    sim.shutdown().await;
    let us = match c.users {
        UserSize::B28 => 28,
        UserSize::B72 => 72,
    };
    let mut s = vec![3, size_choice(us)];
    s.extend_from_slice(&table.data[4..]);
    write(&codec, &format!("users-{}.bin", c.name), &s);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let seeds = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/seeds"));
    for c in &CASES {
        case(c, &seeds).await;
        println!("{}: written", c.name);
    }
}
