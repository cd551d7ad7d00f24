//! The serial line source: a clock on an RS-232/RS-485 port, usually through a USB adapter, read as text
//! lines.
//!
//! The port at `path` is opened with the configured `baud_rate`, `data_bits`, `parity`, `stop_bits` and
//! `flow_control`, with exclusive access (TIOCEXCL and an exclusive `flock`), so two programs never
//! read the same clock. The open port then runs the shared line session ([`LineDevice::serve`]): the
//! same parsing, counting, acknowledgements (`ack_template`) and polling (`poll_command`) as a TCP
//! clock.
//!
//! Guarantees:
//! - The device shows online (`connections` = 1) exactly while the port is open.
//! - A port that cannot be opened, or that fails or reports end of input while open (a USB adapter
//!   unplugged, a cable pulled), marks the device offline with a `last_error` that names the device and
//!   the path and says what to check; the port is reopened with exponential back-off with jitter
//!   (200 ms up to `reconnect_max_secs`, reset after an open port that delivered lines), so an adapter
//!   plugged back in, or a `/dev/serial/by-id/` link that reappears, is picked up on its own.
//! - Failures are logged without flooding: the first one, then at most once a minute while they go on,
//!   and once at INFO when the port is back.
//! - Nothing on the line is fatal: noise, binary garbage and over-long lines are counted as `malformed`
//!   and skipped (see [`crate::sources::session`]).
//! - Cancelling `shutdown` closes the port promptly; [`run`] returns only then.

use std::path::Path;

use tokio_serial::{SerialPortBuilder, SerialPortBuilderExt};

use super::spec::{FlowControl, Parity, PortSpec, SerialSpec};
use crate::sources::kind::SourceContext;
use crate::sources::reconnect::{Attempt, Attempts, Failure, Link, Reconnect};
use crate::sources::session::{End, LineDevice};

/// Why the port is not serving lines right now (recorded as the device's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The port could not be opened (or configured).
    #[error("device {device} ({path}): cannot open: {reason}: {hint}")]
    Open {
        device: String,
        path: String,
        reason: String,
        hint: &'static str,
    },
    /// Reading from or writing to the open port failed.
    #[error("device {device} ({path}): port lost: {source}: check the cable/adapter; reopening")]
    Lost {
        device: String,
        path: String,
        source: std::io::Error,
    },
    /// The port reported end of input (what an unplugged adapter or a closed pseudo-terminal does).
    #[error("device {device} ({path}): the port closed (adapter unplugged?): check the cable/adapter; reopening")]
    Closed { device: String, path: String },
}

/// Runs a serial line device until `ctx.shutdown` is cancelled; see the module documentation.
///
/// Never returns early: errors are recorded in the device's stats and retried; a configuration this
/// source cannot use (no `path`, unusable port settings, a bad `ack_template` or `poll_command`) is
/// logged and recorded, and the task idles until shutdown.
pub async fn run(spec: SerialSpec, ctx: SourceContext) {
    let setup = port_settings(&ctx.id, &spec.port).and_then(|port| {
        LineDevice::new(&ctx, &spec.lines)
            .map(|line| (port, line))
            .map_err(|e| e.to_string())
    });
    let (port, line) = match setup {
        Ok(setup) => setup,
        Err(msg) => {
            tracing::error!("{msg}");
            ctx.stats.set_error(msg);
            ctx.shutdown.cancelled().await;
            return;
        }
    };
    serve_port(&spec.port, ctx.reconnect_max_secs, port, &line).await;
    // Stopped because the ingest stage is gone: wait for the daemon to finish stopping.
    ctx.shutdown.cancelled().await;
}

/// The port settings of `cfg`, checked (the configuration is validated, but this source does not rely
/// on it).
fn port_settings(id: &str, cfg: &PortSpec) -> Result<SerialPortBuilder, String> {
    let bad = |key: &str, value: &dyn std::fmt::Display, want: &str| {
        format!("device {id}: {key} = {value} is not usable: {want}: fix it in the configuration")
    };
    let path = match cfg.path.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => {
            return Err(format!(
                "device {id}: a serial device needs path = \"/dev/ttyUSB0\" (or a /dev/serial/by-id/ path): add it to the configuration"
            ))
        }
    };
    let data_bits = match cfg.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        8 => tokio_serial::DataBits::Eight,
        n => return Err(bad("data_bits", &n, "use 5, 6, 7 or 8")),
    };
    let stop_bits = match cfg.stop_bits {
        1 => tokio_serial::StopBits::One,
        2 => tokio_serial::StopBits::Two,
        n => return Err(bad("stop_bits", &n, "use 1 or 2")),
    };
    if cfg.baud_rate == 0 {
        return Err(bad("baud_rate", &0, "use the clock's speed, e.g. 9600"));
    }
    let parity = match cfg.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let flow_control = match cfg.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    Ok(tokio_serial::new(path.to_string_lossy(), cfg.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow_control)
        .exclusive(true))
}

/// Opens the port, serves it, and reopens it with back-off, until stopped.
async fn serve_port(
    cfg: &PortSpec,
    reconnect_max_secs: u64,
    port: SerialPortBuilder,
    line: &LineDevice,
) {
    let path = cfg
        .path
        .as_deref()
        .unwrap_or(Path::new(""))
        .display()
        .to_string();
    let device = line.id();
    let settings = format!(
        "{} baud, {} data bits, parity {:?}, {} stop bits, flow control {:?}",
        cfg.baud_rate, cfg.data_bits, cfg.parity, cfg.stop_bits, cfg.flow_control
    )
    .to_lowercase();
    let reconnect = Reconnect::new(
        format!("device {device} ({path})"),
        line.stats().clone(),
        line.stop().clone(),
        reconnect_max_secs,
    );
    let mut opener = Opener {
        port,
        line,
        device,
        path: &path,
        settings: &settings,
    };
    reconnect.run(&mut opener).await
}

/// Opens the port and serves it (the attempt).
struct Opener<'a> {
    port: SerialPortBuilder,
    line: &'a LineDevice,
    device: &'a str,
    path: &'a str,
    settings: &'a str,
}

impl Attempts for Opener<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Attempt {
        let Opener {
            port,
            line,
            device,
            path,
            settings,
        } = self;
        let (line, device, path) = (*line, *device, path.to_string());
        let stream = match port.clone().open_native_async() {
            Ok(stream) => stream,
            Err(e) => {
                return Attempt::Retry(Failure::new(SerialError::Open {
                    device: device.to_string(),
                    path: path.clone(),
                    hint: open_hint(&e),
                    reason: e.to_string(),
                }))
            }
        };
        link.up(&format!("serial port open ({settings})"));
        let served = line.serve(stream, &path).await;
        if served.lines > 0 {
            link.progressed();
        }
        let err = match served.end {
            End::Stopped => return Attempt::Stop,
            End::SinkClosed => {
                line.sink_closed();
                return Attempt::Stop;
            }
            End::Eof => SerialError::Closed {
                device: device.to_string(),
                path: path.clone(),
            },
            End::Read(source) | End::Write(source) => SerialError::Lost {
                device: device.to_string(),
                path: path.clone(),
                source,
            },
        };
        Attempt::Retry(Failure::after_lines(err, served.lines))
    }
}

/// What to do about an open failure.
fn open_hint(e: &tokio_serial::Error) -> &'static str {
    use std::io::ErrorKind as Io;
    use tokio_serial::ErrorKind as K;
    match e.kind() {
        K::NoDevice => {
            "another program has the port open (or another device in this configuration uses the same path): stop it, or check the path"
        }
        K::Io(Io::PermissionDenied) => {
            "give the service user access to the port (usually membership of the dialout group)"
        }
        K::InvalidInput => {
            "check the path and that the adapter supports the configured baud_rate, data_bits, parity and stop_bits"
        }
        _ => "check the cable/adapter and the path (ls /dev/serial/by-id/)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestItem, IngestOutcome, PunchSink};
    use crate::sources::formats::LineFormat;
    use crate::sources::test_support::{context, Running};
    use std::path::PathBuf;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use tokio_serial::{SerialPort, SerialStream};

    /// A guard against a hung test, not a synchronisation.
    const GUARD: Duration = Duration::from_secs(20);

    /// `SerialStream::pair()` is not safe to call from several tests at once: tests that make pseudo
    /// terminals hold this lock.
    static PTY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A pseudo-terminal: the master is the clock's end; the slave is the "serial port" at `slave`.
    struct Pty {
        master: SerialStream,
        /// Kept open so the pseudo-terminal lives until the test closes the master.
        _slave: SerialStream,
        slave: PathBuf,
    }

    fn pty() -> Pty {
        let (master, slave) = SerialStream::pair().expect("cannot create a pseudo-terminal");
        let path = slave.name().expect("the slave has a name");
        Pty {
            master,
            _slave: slave,
            slave: PathBuf::from(path),
        }
    }

    /// Points the symlink `link` at `target`, atomically.
    fn point(link: &Path, target: &Path) {
        let tmp = link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, link).unwrap();
    }

    fn device(path: &Path) -> SerialSpec {
        let mut d = SerialSpec::new(path);
        d.port.baud_rate = 19200;
        d.lines.format = LineFormat::ZkAttlog;
        d.lines.max_line_length = 128;
        d
    }

    /// Starts device `clock-3` (back-off up to 1 s), polled every `poll_secs`.
    fn start_every(spec: SerialSpec, poll_secs: u64, sink: PunchSink) -> Running {
        let ctx = SourceContext {
            reconnect_max_secs: 1,
            poll_interval: Duration::from_secs(poll_secs),
            ..context("clock-3", sink)
        };
        Running::start(&spec, ctx)
    }

    fn start(spec: SerialSpec, sink: PunchSink) -> Running {
        start_every(spec, 5, sink)
    }

    fn line(pin: u32, minute: u32) -> String {
        format!("{pin:>9}\t2026-03-02 08:{minute:02}:00\t0\t1\t0\t0\t0\r\n")
    }

    async fn recv(rx: &mut mpsc::Receiver<IngestItem>) -> IngestItem {
        tokio::time::timeout(GUARD, rx.recv())
            .await
            .expect("no punch arrived")
            .expect("sink closed")
    }

    async fn read_n(master: &mut SerialStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(GUARD, master.read_exact(&mut buf))
            .await
            .expect("nothing written to the clock")
            .expect("read from the master");
        buf
    }

    /// True when nothing is waiting to be read on the master (polls the read once, after letting
    /// every other task run).
    async fn nothing_written(master: &mut SerialStream) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::ZERO, master.read(&mut buf))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn serial_clock_over_a_pty_delivers_punches_and_acknowledges_commits() {
        let _pty = PTY.lock().await;
        let mut clock = pty();
        let mut cfg = device(&clock.slave);
        cfg.lines.ack_template = Some(r"OK {user} {time}\r\n".into());
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(cfg, sink);
        dev.online(1).await;
        assert_eq!(dev.stats.last_error(), None);

        // noise first: counted, never fatal
        clock
            .master
            .write_all(b"\x00\xff\xfe garbage\r\n\x1b[2J\n")
            .await
            .unwrap();
        clock.master.write_all(line(7, 1).as_bytes()).await.unwrap();
        let first = recv(&mut rx).await;
        assert_eq!(first.punch.device_id, "clock-3");
        assert_eq!(first.punch.device_user_id, "7");
        assert_eq!(first.punch.local_time.to_string(), "2026-03-02 08:01:00");
        assert_eq!(dev.stats.malformed.load(Ordering::Relaxed), 2);
        // not committed yet: no acknowledgement
        assert!(nothing_written(&mut clock.master).await);
        first.ack.unwrap().send(IngestOutcome::Queued).unwrap();
        let want = b"OK 7 2026-03-02 08:01:00\r\n";
        assert_eq!(read_n(&mut clock.master, want.len()).await, want);

        // a failed commit is not acknowledged; the next acknowledgement is the next line's
        clock.master.write_all(line(8, 2).as_bytes()).await.unwrap();
        clock.master.write_all(line(9, 3).as_bytes()).await.unwrap();
        let second = recv(&mut rx).await;
        assert_eq!(second.punch.device_user_id, "8");
        second
            .ack
            .unwrap()
            .send(IngestOutcome::Failed("disk full".into()))
            .unwrap();
        let third = recv(&mut rx).await;
        assert_eq!(third.punch.device_user_id, "9");
        assert!(nothing_written(&mut clock.master).await);
        third.ack.unwrap().send(IngestOutcome::Queued).unwrap();
        let want = b"OK 9 2026-03-02 08:03:00\r\n";
        assert_eq!(read_n(&mut clock.master, want.len()).await, want);

        let stats = dev.stop().await;
        assert_eq!(stats.acks_written.load(Ordering::Relaxed), 2);
        assert_eq!(stats.punches_read.load(Ordering::Relaxed), 3);
        assert_eq!(stats.lines_read.load(Ordering::Relaxed), 5);
        assert_eq!(stats.connections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn unplugged_adapter_goes_offline_and_is_reopened_when_back() {
        let _pty = PTY.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("usb-clock");
        let first = pty();
        point(&link, &first.slave);
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start(device(&link), sink);
        dev.online(1).await;
        let mut master = first.master;
        master.write_all(line(1, 1).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.punch.device_user_id, "1");

        // unplug: the clock's end goes away
        drop(master);
        drop(first._slave);
        dev.until("went offline", |s| {
            s.connections.load(Ordering::Relaxed) == 0 && s.last_error().is_some()
        })
        .await;
        let e = dev.stats.last_error().unwrap();
        let prefix = format!("device clock-3 ({}): ", link.display());
        assert!(e.starts_with(&prefix), "{e}");
        assert!(e.contains("check the cable/adapter"), "{e}");
        assert!(!dev.stats.snapshot().online);

        // replug: a new port behind the same path
        let second = pty();
        point(&link, &second.slave);
        dev.online(2).await;
        assert_eq!(dev.stats.last_error(), None);
        let mut master = second.master;
        master.write_all(line(2, 2).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.punch.device_user_id, "2");
        dev.stop().await;
    }

    #[tokio::test]
    async fn poll_command_is_written_on_open_and_after_the_interval() {
        let _pty = PTY.lock().await;
        let mut clock = pty();
        let mut cfg = device(&clock.slave);
        cfg.lines.poll_command = Some(r"\x02POLL\r\n".into());
        let (sink, mut rx) = PunchSink::channel(16);
        let dev = start_every(cfg, 1, sink);
        assert_eq!(read_n(&mut clock.master, 7).await, b"\x02POLL\r\n");
        let opened = Instant::now();
        // the clock answers between polls
        clock.master.write_all(line(4, 4).as_bytes()).await.unwrap();
        assert_eq!(recv(&mut rx).await.punch.device_user_id, "4");
        assert_eq!(read_n(&mut clock.master, 7).await, b"\x02POLL\r\n");
        assert!(
            opened.elapsed() >= Duration::from_millis(800),
            "{:?}",
            opened.elapsed()
        );
        dev.stop().await;
    }

    #[tokio::test]
    async fn a_missing_port_is_reported_with_what_to_check_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ttyUSB9");
        let (sink, _rx) = PunchSink::channel(16);
        let dev = start(device(&missing), sink);
        dev.until("reported the missing port", |s| s.last_error().is_some())
            .await;
        let e = dev.stats.last_error().unwrap();
        assert_eq!(
            e,
            format!(
                "device clock-3 ({}): cannot open: No such file or directory: check the cable/adapter and the path (ls /dev/serial/by-id/)",
                missing.display()
            )
        );
        assert_eq!(dev.stats.connections.load(Ordering::Relaxed), 0);
        assert!(!dev.task.is_finished());
        dev.stop().await;
    }

    #[tokio::test]
    async fn a_serial_device_without_a_path_is_reported_and_idles() {
        let (sink, _rx) = PunchSink::channel(16);
        let mut cfg = device(Path::new("/dev/null"));
        cfg.port.path = None;
        let dev = start(cfg, sink);
        dev.until("reported the missing path", |s| s.last_error().is_some())
            .await;
        let e = dev.stats.last_error().unwrap();
        assert!(
            e.starts_with("device clock-3: a serial device needs path"),
            "{e}"
        );
        assert!(!dev.task.is_finished());
        dev.stop().await;
    }
}
