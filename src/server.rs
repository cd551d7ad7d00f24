//! What the daemon's two HTTP servers (the `[http]` endpoint in `http`, the `[adms]` listener in
//! `sources::adms::listener`) share about stopping: a connection in the middle of a request is given
//! [`STOP_GRACE`] to finish it, and [`drain`] waits for them all, then aborts what is left, so a stop
//! never hangs on a slow or silent client. Neutral ground: it uses neither server.

use std::time::Duration;

use tokio::task::JoinSet;

/// How long a connection's request in flight may take to finish once the server stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

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
