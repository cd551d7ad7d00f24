//! What the daemon's two HTTP servers (the `[http]` endpoint in `http`, the `[adms]` listener in
//! `sources::adms::listener`) share about accepting and stopping: [`accept`] never spins on a failed
//! accept (too many open files) and gives up as soon as the server stops; a connection in the middle
//! of a request is given [`STOP_GRACE`] to finish it, and [`drain`] waits for them all, then aborts
//! what is left, so a stop never hangs on a slow or silent client. Neutral ground: it uses neither
//! server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a connection's request in flight may take to finish once the server stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a failed accept waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The next connection, or `None` once `stop` is cancelled. A failed accept (too many open files...)
/// is logged at debug level as `<what>: accept failed` and tried again after [`ACCEPT_RETRY`]
/// instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::debug!(error = %e, "{what}: accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_RETRY) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            },
            _ = stop.cancelled() => return None,
        }
    }
}

/// Waits for the connection tasks of a server that stopped accepting: each had [`STOP_GRACE`] to
/// finish (half a second more is given for the tasks to end), then the rest are aborted.
pub async fn drain(mut conns: JoinSet<()>) {
    let drained = tokio::time::timeout(STOP_GRACE + Duration::from_millis(500), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_ends_is_aborted_after_the_grace() {
        let mut conns = JoinSet::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        conns.spawn(async move {
            // holds `tx` until aborted: its drop tells the test
            let _tx = tx;
            std::future::pending::<()>().await
        });
        conns.spawn(async {});
        let started = tokio::time::Instant::now();
        drain(conns).await;
        assert!(rx.await.is_err(), "the endless task was aborted");
        assert_eq!(started.elapsed(), STOP_GRACE + Duration::from_millis(500));
    }
}
