//! The ZKTeco client (`src/sources/zk/client.rs`) against a hostile clock: everything a clock can
//! send during a session (framing, reply ids, buffered reads in chunks, the log's size prefix, the
//! record and user layouts, realtime events met on the way), over a real loopback connection.
//!
//! Input: three bytes of comm key and one of the first record to read; the rest is what the "clock"
//! writes on the connection, at once, before it closes its side. The client runs the source's
//! session: connect (and authenticate), free sizes, time, serial number, users, the attendance log,
//! then realtime events until the stream ends.
//!
//! Checked beyond "no panic" and bounded memory (libFuzzer's malloc limit):
//! - an attendance log read covers its raw bytes exactly, each record as the codec decodes those
//!   bytes, from the record asked for;
//! - every error message names the device and holds no control character.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clockbridge::sources::zk::codec::{decode_record, EF_ATTLOG};
use clockbridge::sources::zk::{Timeouts, ZkClient, ZkError};
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

struct Clock {
    rt: Runtime,
    listener: Arc<TcpListener>,
    addr: SocketAddr,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        Clock {
            rt,
            listener: Arc::new(listener),
            addr,
        }
    })
}

const DEVICE: &str = "device fuzz (127.0.0.1)";

fn check(e: &ZkError) {
    let message = e.to_string();
    assert!(message.starts_with(DEVICE), "{message}");
    assert_loggable("zk error", &message);
}

/// The source's session, up to the first failure (a refusal is not one).
async fn session(addr: &str, comm_key: u32, first: u64) -> Result<(), ZkError> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        packet: Duration::from_secs(5),
        chunk: Duration::from_secs(5),
    };
    let mut c = ZkClient::connect(DEVICE, addr, comm_key, timeouts).await?;
    let refused = |r: Result<(), ZkError>| match r {
        Err(ZkError::Refused { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    };
    let sizes = match c.free_sizes().await {
        Ok(s) => s,
        Err(e @ ZkError::Refused { .. }) => {
            check(&e);
            Default::default()
        }
        Err(e) => return Err(e),
    };
    refused(c.get_time().await.map(drop))?;
    refused(c.serial_number().await.map(drop))?;
    refused(c.read_users(sizes.users as u64).await.map(drop))?;
    match c.read_attendance(first, sizes.records as u64).await {
        Ok(log) => {
            assert_eq!(log.raw.len(), log.records.len() * log.record_size);
            assert!(log.first <= sizes.records as u64);
            for (i, r) in log.records.iter().enumerate() {
                assert_eq!(decode_record(log.raw_record(i)).as_ref(), Ok(r));
            }
        }
        Err(e @ ZkError::Refused { .. }) => check(&e),
        Err(e) => return Err(e),
    }
    refused(c.reg_event(EF_ATTLOG).await)?;
    for _ in 0..4 {
        let events = c.wait_event().await?;
        assert!(!events.is_empty(), "wait_event returned no event");
    }
    c.exit().await;
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let comm_key = u32::from_le_bytes([input.byte(), input.byte(), input.byte(), 0]) % 1_000_000;
    let first = input.byte() as u64;
    let sent = input.rest().to_vec();
    let clock = clock();
    clock.rt.block_on(async {
        let listener = clock.listener.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("the client connects");
            let _ = s.write_all(&sent).await;
            let _ = s.shutdown().await;
            let mut sink = [0u8; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        if let Err(e) = session(&clock.addr.to_string(), comm_key, first).await {
            check(&e);
        }
        server.await.expect("the clock's task");
    });
});
