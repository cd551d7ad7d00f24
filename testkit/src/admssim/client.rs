//! The terminal's HTTP: one request per connection (`Connection: close`), written by hand as small
//! firmware does, so that the simulator shares no HTTP code with the server it tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `200` with a body starting `OK`: what the firmware takes as accepted.
    pub fn is_ok(&self) -> bool {
        self.status == 200 && self.body.starts_with(b"OK")
    }
}

/// What went wrong on the way (no reply at all: the terminal treats it like a refusal).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect/read/write: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("not an HTTP reply: {0}")]
    Bad(String),
}

/// Sends one request and reads the reply (`timeout` for the whole exchange); returns the reply and
/// how long it took.
pub async fn request(
    server: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(Reply, Duration), HttpError> {
    let started = Instant::now();
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        s.set_nodelay(true)?;
        let mut req = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: iClock Proxy/1.09\r\nAccept: */*\r\nConnection: close\r\n"
        );
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        s.write_all(&bytes).await?;
        let mut out = Vec::new();
        // the server may close early (a refused body): what it answered is still read
        let _ = s.read_to_end(&mut out).await;
        parse_reply(&out)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map(|r| (r, started.elapsed())),
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

fn parse_reply(raw: &[u8]) -> Result<Reply, HttpError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Bad(format!("{} bytes without a head", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| HttpError::Bad(head.lines().next().unwrap_or("").to_string()))?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let mut body = raw[end + 4..].to_vec();
    if let Some(n) = length {
        body.truncate(n);
    }
    Ok(Reply { status, body })
}
