//! The claim loop of one lane: claims due rows in batches of the lane's limit (full batches straight
//! away with a backlog; otherwise it lingers up to `sender.linger_ms` for a fuller one), hands each
//! batch to its own task (at most `sender.max_in_flight` at once), and on shutdown lets them finish
//! within the grace period and gives back what is left.
//!
//! Each claim takes live punches first ([`crate::queue::live_cap`]: at most half the batch while
//! backlog rows are due). How long a live punch waits, once committed, is bounded by how far ahead
//! the loop claims: a claim happens as soon as one of the `max_in_flight` request slots is free,
//! and the claimed batches leave in claim order, one every `1 / max_requests_per_second` s
//! (`deliver`), so a live punch claimed into the next batch waits at most
//! `max_in_flight / max_requests_per_second` for its request (16 / 49 s = 0.33 s with the
//! defaults), plus that request's own time. Without a backlog it waits at most `linger_ms` more.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliver::deliver;
use super::{Sender, Shared};
use crate::queue::{live_cap, now_ms, QueueError};

/// Longest wait of an idle sender before it looks at the queue again (so its heartbeat is at most
/// this old while it runs, busy or idle).
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);

impl Sender {
    /// Runs until shutdown; then drains or returns in-flight work, within `grace`.
    pub async fn run(self, grace: Duration) {
        let sh = self.shared.clone();
        let permits = Arc::new(Semaphore::new(sh.cfg.max_in_flight));
        let mut tasks = JoinSet::new();
        let batch = sh.lane.batch_limit(&sh.cfg);
        let kind = sh.lane.kind();
        let ordered = sh.lane.ordered();
        let linger = Duration::from_millis(sh.cfg.linger_ms);
        let mut linger_since: Option<Instant> = None;
        let mut backlog = true;
        let mut db_failures = 0u32;
        sh.stats.heartbeat.store(now_ms(), Ordering::Relaxed);
        sh.stats.started.notify_one();
        let progress = {
            let sh = sh.clone();
            tokio::spawn(async move { super::progress::report(&sh).await })
        };
        // the claim's sequence number: with one row per batch, every other claim keeps its row
        // for the backlog (`live_cap`)
        let mut turn = 0u64;
        loop {
            sh.stats.heartbeat.store(now_ms(), Ordering::Relaxed);
            while let Some(res) = tasks.try_join_next() {
                if let Err(e) = res {
                    tracing::error!(error = %e, "sender: a batch task failed; its rows are re-sent after a restart");
                }
            }
            if sh.shutdown.is_cancelled() {
                break;
            }
            sh.pause.wait(&sh.shutdown).await;
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = sh.shutdown.cancelled() => break,
            };
            // Without a backlog, look before claiming: fill the batch for up to `linger`.
            if !backlog {
                let ready = match sh.queue.ready_count(kind, batch).await {
                    Ok(n) => n,
                    Err(e) => {
                        db_failure(&sh, &e, &mut db_failures).await;
                        continue;
                    }
                };
                if ready == 0 {
                    linger_since = None;
                    let wait = match sh.queue.next_due(kind).await {
                        Ok(Some(due)) => Duration::from_millis(
                            (due - now_ms()).clamp(1, IDLE_RECHECK.as_millis() as i64) as u64,
                        ),
                        // nothing pending: re-check now and then, for rows another process (e.g.
                        // `dlq retry`) made pending
                        Ok(None) => IDLE_RECHECK,
                        Err(e) => {
                            db_failure(&sh, &e, &mut db_failures).await;
                            continue;
                        }
                    };
                    drop(permit);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = sh.shutdown.cancelled() => break,
                    }
                    continue;
                }
                if ready < batch {
                    let since = *linger_since.get_or_insert_with(Instant::now);
                    let deadline = since + linger;
                    if Instant::now() < deadline {
                        drop(permit);
                        tokio::select! {
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep_until(deadline.into()) => {}
                            _ = sh.shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            let claimed = if ordered {
                sh.queue.claim_latest(kind, batch).await
            } else {
                turn = turn.wrapping_add(1);
                sh.queue
                    .claim_capped(kind, batch, live_cap(batch, turn))
                    .await
            };
            let rows = match claimed {
                Ok(r) => r,
                Err(e) => {
                    db_failure(&sh, &e, &mut db_failures).await;
                    continue;
                }
            };
            db_failures = 0;
            linger_since = None;
            backlog = rows.len() == batch;
            if rows.is_empty() {
                // due rows that cannot go yet (an older value of the same target is in flight), or
                // a race: wait for an outcome or a little while instead of spinning
                drop(permit);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(linger.max(Duration::from_millis(20))) => {}
                    _ = sh.shutdown.cancelled() => break,
                }
                continue;
            }
            let sh2 = sh.clone();
            tasks.spawn(async move {
                deliver(&sh2, rows).await;
                drop(permit);
            });
        }
        // shutdown: let requests in flight finish, within the grace period
        let drained = tokio::time::timeout(grace, async {
            while let Some(res) = tasks.join_next().await {
                if let Err(e) = res {
                    tracing::error!(error = %e, "sender: a batch task failed during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        progress.abort();
        match sh.queue.requeue_in_flight_of(kind).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                "sender: returned unfinished rows to the queue; they are sent on the next start"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "sender: could not return in-flight rows to pending; the next start does it")
            }
        }
    }
}

async fn db_failure(sh: &Shared, e: &QueueError, failures: &mut u32) {
    *failures += 1;
    if *failures == 1 || failures.is_power_of_two() {
        tracing::error!(error = %e, "sender: cannot read the queue; retrying");
    }
    let wait = Duration::from_millis(200u64 << (*failures).min(7));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = sh.shutdown.cancelled() => {}
    }
}
