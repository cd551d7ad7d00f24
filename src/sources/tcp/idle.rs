//! `idle_timeout` of a listening device: a connection whose clock sends nothing for that long is
//! closed, so a peer that is alive but silent (a vanished one is noticed by TCP keep-alive) does not
//! hold its descriptor and its place under `max_connections` for ever.
//!
//! [`Idle`] wraps the stream: a read that has waited `timeout` without a byte fails with an
//! [`IdleTimeout`] error (see [`is_idle_timeout`]). Only time spent waiting inside one read counts:
//! while the session does not read (the queue holds it back), nothing is counted against the clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error of a read that waited `idle_timeout`.
#[derive(Debug)]
pub struct IdleTimeout(pub Duration);

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nothing received for {} (idle_timeout)",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for IdleTimeout {}

/// Whether `e` is the error of [`Idle`].
pub fn is_idle_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<IdleTimeout>())
}

/// A stream whose reads fail after `timeout` without a byte.
pub struct Idle<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// A read is waiting (its deadline is set).
    waiting: bool,
}

impl<S> Idle<S> {
    pub fn new(inner: S, timeout: Duration) -> Idle<S> {
        Idle {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.waiting {
            this.deadline.as_mut().reset(Instant::now() + this.timeout);
            this.waiting = true;
        }
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.waiting = false;
            return Poll::Ready(r);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.waiting = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    IdleTimeout(this.timeout),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_read_fails_after_the_timeout_without_a_byte_and_not_before() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_secs(3600));
        let mut buf = [0u8; 8];
        // data resets the wait
        b.write_all(b"x").await.unwrap();
        assert_eq!(idle.read(&mut buf).await.unwrap(), 1);
        // silence: the read fails after exactly the timeout (the paused clock jumps to it)
        let start = Instant::now();
        let e = idle.read(&mut buf).await.unwrap_err();
        assert!(is_idle_timeout(&e), "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(3600));
        assert_eq!(e.to_string(), "nothing received for 1h (idle_timeout)");
        // time spent outside a read does not count
        tokio::time::advance(Duration::from_secs(7200)).await;
        b.write_all(b"y").await.unwrap();
        assert_eq!(idle.read(&mut buf).await.unwrap(), 1);
        assert!(!is_idle_timeout(&io::Error::other("x")));
    }
}
