//! One claimed batch, from the first request to every row settled: the lane plans the requests, each
//! request waits for the pause and the limiter, its reply is classified by the lane, and the verdict
//! decides — delivered, dead letters, a split in halves, a retry with back-off, a rate-limit pause or
//! a blocked app. Every outcome is written to the queue before the batch task ends (or, on shutdown,
//! the rows are given back).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::pacing::{backoff, block, unblock};
use super::stats::retry_reason;
use super::Shared;
use crate::feishu::{lanes, Reply, Verdict};
use crate::queue::{now_ms, Claimed, ErrorInfo, QueueError};

/// Sends one claimed batch (splitting it when needed) and settles every row.
pub(super) async fn deliver(sh: &Shared, rows: Vec<Claimed>) {
    let plan = sh.lane.plan(rows);
    if !plan.unreadable.is_empty() {
        let reply = Reply {
            msg: "the stored payload cannot be read: it was changed outside clockbridge".into(),
            ..Reply::default()
        };
        dead(sh, &plan.unreadable, "bad_payload", &reply).await;
    }
    let mut work: VecDeque<Vec<Claimed>> = plan.requests.into();
    while let Some(batch) = work.pop_front() {
        if batch.is_empty() {
            continue;
        }
        sh.pause.wait(&sh.shutdown).await;
        if sh.shutdown.is_cancelled() {
            // not sent: back to pending now rather than at the next start
            let mut ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
            ids.extend(work.iter().flatten().map(|r| r.id));
            settle(sh, "requeue", || {
                sh.queue.mark_retry(ids.clone(), 0, None, true)
            })
            .await;
            return;
        }
        {
            // first come, first served: slots are taken in the order batches queue for them, so a
            // batch (and the live punch in it) never waits behind batches claimed after it
            let _turn = sh.turn.lock().await;
            loop {
                let slot = sh.pacer.reserve(Instant::now());
                tokio::time::sleep_until(slot.into()).await;
                // a rate-limit reply that came meanwhile holds this request too
                if !sh.pause.active() || sh.shutdown.is_cancelled() {
                    break;
                }
                sh.pause.wait(&sh.shutdown).await;
            }
        }
        sh.stats.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        sh.pacer.on_sent(sent);
        let mut reply = sh.lane.send(&sh.client, &batch).await;
        sh.stats.latency.observe(sent.elapsed());
        sh.stats.record_timing(reply.timed_out);
        let verdict = lanes::verdict(sh.lane, &reply);
        if let Some(detail) = sh.lane.failure_detail(&reply) {
            // e.g. 1225001's error records: kept with the dead letter
            reply = with_detail(&reply, &detail);
        }
        if !matches!(verdict, Verdict::AppBlocked(_)) {
            unblock(sh);
        }
        if !matches!(
            verdict,
            Verdict::RateLimited { .. } | Verdict::Retry | Verdict::AppBlocked(_)
        ) {
            // the platform took the request: the lane may go a little faster
            sh.pacer.on_success(Instant::now());
            sh.stats.set_pacing(&sh.pacer);
        }
        match verdict {
            Verdict::Delivered => delivered(sh, &batch).await,
            Verdict::PartialFailure { failed } => {
                let failed: HashSet<&str> = failed.iter().map(String::as_str).collect();
                let (bad, good): (Vec<_>, Vec<_>) = batch.iter().partition(|r| {
                    let uid = r.user_id.as_deref().unwrap_or("");
                    failed.contains(format!("{uid}-{uid}").as_str())
                });
                if bad.is_empty() && batch.len() > 1 {
                    // the list names no record of ours: narrow it down
                    tracing::warn!(msg = %reply.msg, log_id = %reply.log_id_text(), "feishu: per-record failure list matches no record of the batch; splitting it");
                    split(sh, batch, &mut work);
                    continue;
                }
                let bad: Vec<Claimed> = if bad.is_empty() {
                    batch.clone()
                } else {
                    bad.into_iter().cloned().collect()
                };
                let good: Vec<Claimed> = good.into_iter().cloned().collect();
                dead(sh, &bad, "rejected_record", &reply).await;
                delivered(sh, &good).await;
            }
            Verdict::ReportInvalid { members, codes } => {
                tracing::warn!(?members, ?codes, log_id = %reply.log_id_text(), "feishu: report upload applied except for the listed members and field codes");
                let settled = sh.lane.exceptions(batch, &members, &codes);
                for (rows, reason, detail) in &settled.dead {
                    dead(sh, rows, reason, &with_detail(&reply, detail)).await;
                }
                delivered(sh, &settled.delivered).await;
            }
            Verdict::AlreadyExists => {
                if batch.len() == 1 {
                    tracing::debug!(idem = %batch[0].idem, "feishu: record already there; counted as delivered");
                    delivered(sh, &batch).await;
                } else {
                    split(sh, batch, &mut work);
                }
            }
            Verdict::Invalid => {
                if batch.len() == 1 {
                    dead(sh, &batch, "rejected", &reply).await;
                } else {
                    tracing::info!(code = reply.code, msg = %reply.msg, log_id = %reply.log_id_text(), records = batch.len(), "feishu: batch refused as invalid; splitting it to find the bad records");
                    split(sh, batch, &mut work);
                }
            }
            Verdict::Retry => {
                sh.stats.record_error(&reply);
                sh.stats
                    .retries
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                sh.stats.retries_by_reason[retry_reason(&reply)]
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let attempts = batch.iter().map(|r| r.attempts).max().unwrap_or(1);
                let delay = backoff(&sh.cfg, attempts);
                tracing::warn!(code = reply.code, http = reply.http_status, msg = %reply.msg, log_id = %reply.log_id_text(), records = batch.len(), attempts, retry_in_ms = delay.as_millis() as u64, "feishu: upload failed; will retry");
                let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                let next = now_ms() + delay.as_millis() as i64;
                let info = error_info(&reply);
                settle(sh, "retry", || {
                    sh.queue
                        .mark_retry(ids.clone(), next, Some(info.clone()), false)
                })
                .await;
            }
            Verdict::RateLimited { wait } => {
                sh.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                sh.stats.record_error(&reply);
                let now = Instant::now();
                let lowered = sh.pacer.on_rate_limited(sent, now, reply.ratelimit_limit);
                sh.stats.set_pacing(&sh.pacer);
                let pause = sh.pacer.pause_for(wait);
                sh.stats.add_paused(sh.pause.extend(now + pause));
                match lowered {
                    Some(rate) => {
                        tracing::warn!(wait_ms = pause.as_millis() as u64, rate_per_sec = format!("{rate:.1}"), kind = sh.lane.kind(), log_id = %reply.log_id_text(), "feishu: rate limited; pausing uploads until the window resets, then sending slower")
                    }
                    None => {
                        tracing::warn!(wait_ms = pause.as_millis() as u64, kind = sh.lane.kind(), log_id = %reply.log_id_text(), "feishu: rate limited; pausing uploads until the window resets")
                    }
                }
                work.push_front(batch);
            }
            Verdict::AppBlocked(problem) => {
                sh.stats.app_blocked.fetch_add(1, Ordering::Relaxed);
                sh.stats.record_error(&reply);
                let pause = Duration::from_secs(sh.cfg.app_error_pause_secs);
                block(sh, problem, &reply);
                sh.stats.add_paused(sh.pause.extend(Instant::now() + pause));
                let mut ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                ids.extend(work.drain(..).flatten().map(|r| r.id));
                let next = now_ms() + pause.as_millis() as i64;
                let info = error_info(&reply);
                settle(sh, "retry", || {
                    sh.queue
                        .mark_retry(ids.clone(), next, Some(info.clone()), true)
                })
                .await;
                return;
            }
        }
    }
}

fn split(sh: &Shared, mut batch: Vec<Claimed>, work: &mut VecDeque<Vec<Claimed>>) {
    sh.stats.splits.fetch_add(1, Ordering::Relaxed);
    let second = batch.split_off(batch.len() / 2);
    work.push_front(second);
    work.push_front(batch);
}

async fn delivered(sh: &Shared, rows: &[Claimed]) {
    if rows.is_empty() {
        return;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // the platform has accepted them: counted before the queue records it, so that whoever is woken
    // by the queue change sees the figures agree
    sh.stats.count_delivered(rows.len() as u64);
    sh.stats
        .with_state(|s| s.last_success_at = Some(chrono::Utc::now().timestamp()));
    settle(sh, "delivered", || sh.queue.mark_delivered(ids.clone())).await;
    if sh.lane.logs_deliveries() {
        tracing::debug!(
            kind = sh.lane.kind(),
            rows = rows.len(),
            "feishu: delivered"
        );
    }
}

async fn dead(sh: &Shared, rows: &[Claimed], reason: &str, reply: &Reply) {
    if rows.is_empty() {
        return;
    }
    sh.stats.record_error(reply);
    for r in rows {
        tracing::error!(
            kind = sh.lane.kind(), device = %r.device_id, user = r.user_id.as_deref().unwrap_or(""), idem = %r.idem,
            code = reply.code, msg = %reply.msg, log_id = %reply.log_id_text(),
            "feishu: record rejected for good; kept as a dead letter (see `clockbridge status`)"
        );
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let info = error_info(reply);
    let reason = reason.to_string();
    sh.stats
        .dead
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    settle(sh, "dead", || {
        sh.queue
            .mark_dead(ids.clone(), reason.clone(), info.clone())
    })
    .await;
}

/// Applies an outcome to the queue, retrying while the database refuses (e.g. disk full): rows must
/// never stay in flight because a write failed once. A row that was not in flight is logged and left.
async fn settle<F, Fut>(sh: &Shared, what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(()) => {
                sh.stats.bump();
                if let Some(p) = &sh.progress {
                    p.bump();
                }
                // a retry may now be the earliest due row: let the claim loop re-plan its wait
                sh.wake.notify_one();
                return;
            }
            Err(e @ QueueError::NotClaimed { .. }) => {
                tracing::error!(error = %e, outcome = what, "sender: outcome not recorded for rows that were no longer in flight");
                return;
            }
            Err(QueueError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, outcome = what, "sender: cannot record an outcome in the queue; retrying (the rows stay in flight and are re-sent after a restart if this never succeeds)");
                if sh.shutdown.is_cancelled() {
                    // stopping: the rows stay in flight and the next start re-sends them
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn error_info(reply: &Reply) -> ErrorInfo {
    ErrorInfo {
        code: reply.code,
        message: if reply.msg.is_empty() {
            format!("HTTP {}", reply.http_status)
        } else {
            reply.msg.clone()
        },
        log_id: reply.log_id.clone(),
    }
}

/// The reply with `msg` extended: the error records of a 1225001, or the rows a report reply listed.
fn with_detail(reply: &Reply, detail: &str) -> Reply {
    let mut r = reply.clone();
    let detail: String = detail.chars().take(2000).collect();
    r.msg = if r.msg.is_empty() {
        detail
    } else {
        format!("{}: {detail}", r.msg)
    };
    r
}
