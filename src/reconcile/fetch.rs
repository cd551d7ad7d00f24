//! Asking the platform, within its budget: the users split into calls of at most 50, each call
//! over the whole range (the page defines no paging: one reply holds every flow of its users), so
//! the number of requests is the least the limits allow, `ceil(users / 50)`.
//!
//! The query has its own budget of 50 requests per second per app, apart from the writes', so a
//! reconcile never takes from the daemon's uploads. The platform counts requests in a one-second
//! window (its 429 says in `x-ogw-ratelimit-reset` when the window frees), so the budget is a
//! window too ([`Budget`]): `reconcile.max_requests_per_second` slots, a request taking one before
//! it is sent and giving it back one second after its reply (the platform counted the request
//! somewhere between the two), so no one-second window ever holds more than that many requests,
//! however late a request arrives. Up to [`IN_FLIGHT`] requests await their replies at once; a
//! month of 2,000 users (40 requests) is asked in one window, not paced over 0.8 s.
//!
//! Two reconciles at once (the daemon's scheduled check and a CLI run) share the budget: each
//! holds an exclusive lock on `QUEUE.reconcile.lock` while it asks *and until every slot it took
//! is free again*, so the next one starts with a whole window. A rate-limit reply waits what the
//! platform asks (`x-ogw-ratelimit-reset`) and is counted; a transient failure is retried
//! [`ATTEMPTS`] times with back-off; a refusal of the app stops the reconcile with what to fix.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::ReconcileError;
use crate::feishu::query::{self, SeenFlow, MAX_USERS};
use crate::feishu::{classify, AppProblem, FeishuClient, Reply, Verdict};

/// Requests awaiting their replies at once: a month of 2,000 users (40 requests) in two rounds.
/// The replies are parsed on the blocking pool while the next ones come in.
pub const IN_FLIGHT: usize = 20;

/// The platform's rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Tries of one call that fails for a transient reason (rate limits are waited out, not counted).
pub const ATTEMPTS: u32 = 5;

/// What asking cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cost {
    /// Requests made, retries included.
    pub requests: u64,
    /// The least the limits allow: one per 50 users.
    pub minimum_requests: u64,
    /// Replies that said the rate limit was exceeded.
    pub rate_limited: u64,
    /// Seconds spent waiting for another reconcile's turn to end.
    pub waited_for_turn_secs: f64,
    /// Seconds from the first request to the last reply.
    pub query_secs: f64,
}

/// The turn of one reconcile at the query budget: an `flock` on `QUEUE.reconcile.lock`, released
/// when dropped (or when the process ends, however it ends).
pub struct Turn {
    _file: File,
}

impl Turn {
    /// Waits for the turn (blocking; run it off the runtime).
    pub fn take(queue: &Path) -> Result<Turn, ReconcileError> {
        let path = crate::queue::side_file(queue, ".reconcile.lock");
        // read-only is enough for flock(2): a file an administrator's run created is still usable
        // by the daemon's user, and the other way round
        let file = OpenOptions::new()
            .read(true)
            .open(&path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path),
                _ => Err(e),
            })
            .map_err(|e| ReconcileError::Turn {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        file.lock().map_err(|e| ReconcileError::Turn {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Turn { _file: file })
    }
}

/// The query budget of one turn: `rps` slots, each taken before a request is sent and given back
/// [`WINDOW`] after its reply.
pub struct Budget {
    slots: Arc<Semaphore>,
    size: u32,
}

impl Budget {
    /// At most `rps` requests (clamped to 1..=50) in any one-second window.
    pub fn new(rps: u32) -> Budget {
        let size = rps.clamp(1, 50);
        Budget {
            slots: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// Waits until every slot is free again: the window holds nothing of this turn's.
    pub async fn drained(&self) {
        // the semaphore is never closed
        let _all = self.slots.acquire_many(self.size).await;
    }
}

/// The valid flows of `users` with `from <= check_time <= to`, asked `ceil(users / 50)` times
/// within `budget`.
pub async fn flows(
    client: Arc<FeishuClient>,
    users: Vec<String>,
    from: i64,
    to: i64,
    budget: &Budget,
    cost: &mut Cost,
) -> Result<Vec<SeenFlow>, ReconcileError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for chunk in users.chunks(MAX_USERS) {
        let _ = tx.send(chunk.to_vec());
    }
    drop(tx);
    flows_of(client, None, rx, from, to, budget, cost).await
}

/// The valid flows of the users of `first` and of each chunk `chunks` brings (at most 50 users
/// each; the caller makes every chunk but the last full), one request a chunk, each sent as soon
/// as it comes and the budget allows: the queries start while the caller still reads the queue.
/// Returns once `chunks` is closed and every reply is in.
pub async fn flows_of(
    client: Arc<FeishuClient>,
    first: Option<Vec<String>>,
    mut chunks: mpsc::UnboundedReceiver<Vec<String>>,
    from: i64,
    to: i64,
    budget: &Budget,
    cost: &mut Cost,
) -> Result<Vec<SeenFlow>, ReconcileError> {
    let requests = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let mut started = None;
    let mut tasks = JoinSet::new();
    let mut queued: std::collections::VecDeque<Vec<String>> = first.into_iter().collect();
    let mut open = true;
    let mut out = Vec::new();
    let mut failure = None;
    loop {
        while failure.is_none() && tasks.len() < IN_FLIGHT {
            let Some(chunk) = queued.pop_front() else {
                break;
            };
            cost.minimum_requests += 1;
            started.get_or_insert_with(Instant::now);
            let (client, slots) = (client.clone(), budget.slots.clone());
            let (requests, limited) = (requests.clone(), limited.clone());
            tasks.spawn(async move {
                let mut attempt = 0;
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return Err(ReconcileError::Platform("the query budget closed".into()));
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    let result = query::query(&client, &chunk, from, to).await;
                    // the platform counted the request between its sending and this reply: its
                    // slot frees a window after the reply
                    tokio::spawn(async move {
                        tokio::time::sleep(WINDOW).await;
                        drop(slot);
                    });
                    let reply = match result {
                        Ok(flows) => return Ok(flows),
                        Err(reply) => reply,
                    };
                    match classify(&reply) {
                        Verdict::RateLimited { wait } => {
                            limited.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(wait).await;
                        }
                        Verdict::Retry if attempt + 1 < ATTEMPTS => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                        }
                        verdict => return Err(refusal(&reply, verdict)),
                    }
                }
            });
        }
        if tasks.is_empty() && (failure.is_some() || (!open && queued.is_empty())) {
            break;
        }
        tokio::select! {
            chunk = chunks.recv(), if open => match chunk {
                Some(chunk) if !chunk.is_empty() => queued.push_back(chunk),
                Some(_) => {}
                None => open = false,
            },
            done = tasks.join_next(), if !tasks.is_empty() => match done {
                None => {}
                Some(Ok(Ok(flows))) => out.extend(flows),
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failure.get_or_insert(ReconcileError::Platform(format!(
                        "a query task failed: {e}"
                    )));
                }
            },
        }
    }
    cost.requests += requests.load(Ordering::Relaxed);
    cost.rate_limited += limited.load(Ordering::Relaxed);
    cost.query_secs += started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The users to ask, learnt as the queue's rows come in: each new user once, handed out in calls
/// of [`MAX_USERS`] as soon as a call is full, the last (partial) call when the rows are all read.
/// So the calls are `ceil(users / 50)`, the least, and the first go out while the rest is read.
#[derive(Debug, Default)]
pub struct UserChunks {
    seen: std::collections::HashSet<String>,
    next: Vec<String>,
}

impl UserChunks {
    /// Notes `user`; returns a full call when this user completes one.
    pub fn add(&mut self, user: &str) -> Option<Vec<String>> {
        if self.seen.contains(user) {
            return None;
        }
        self.seen.insert(user.to_string());
        self.next.push(user.to_string());
        (self.next.len() == MAX_USERS).then(|| std::mem::take(&mut self.next))
    }

    /// The last call (None when every user is in a full one), and how many users there are.
    pub fn finish(self) -> (Option<Vec<String>>, u64) {
        let n = self.seen.len() as u64;
        ((!self.next.is_empty()).then_some(self.next), n)
    }
}

/// The error for a reply no retry fixes, saying what to do.
fn refusal(reply: &Reply, verdict: Verdict) -> ReconcileError {
    let what = match verdict {
        // the query's own scope, not the write's
        Verdict::AppBlocked(AppProblem::ScopeMissing) => "the app lacks the permission attendance:task:readonly (export attendance data), which user_flows/query needs: enable it under Permissions & Scopes and publish a new version".to_string(),
        Verdict::AppBlocked(p) => p.fix().to_string(),
        Verdict::Retry => format!("the platform kept failing after {ATTEMPTS} tries: try again later"),
        _ => "the platform refused the query: report this with the log id".to_string(),
    };
    ReconcileError::Platform(format!(
        "user_flows/query: {what} (HTTP {}, code {}, {:?}, log id {})",
        reply.http_status,
        reply
            .code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into()),
        reply.msg,
        reply.log_id_text()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget's window: `rps` slots at once, a slot free again a window after it is given
    /// back, and `drained` only once every slot is.
    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_its_slots_at_once_and_frees_each_a_window_later() {
        let budget = Budget::new(3);
        let t0 = tokio::time::Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(budget.slots.clone().acquire_owned().await.unwrap());
        }
        // all three at once, none waited
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(budget.slots.clone().try_acquire_owned().is_err());
        // a reply after 100 ms: its slot is back one window later, not before
        tokio::time::sleep(Duration::from_millis(100)).await;
        let slot = held.pop().unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW).await;
            drop(slot);
        });
        let fourth = budget.slots.clone().acquire_owned().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(1100));
        drop(fourth);
        drop(held);
        budget.drained().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1100));
        assert_eq!(Budget::new(0).size, 1);
        assert_eq!(Budget::new(80).size, 50);
    }

    #[test]
    fn users_are_handed_out_once_each_in_full_calls_then_the_rest() {
        let mut chunks = UserChunks::default();
        let mut calls = Vec::new();
        // 120 distinct users, each seen three times, interleaved
        for _ in 0..3 {
            for u in 0..120 {
                calls.extend(chunks.add(&format!("u{u}")));
            }
        }
        assert_eq!(calls.len(), 2, "two full calls while reading");
        assert!(calls.iter().all(|c| c.len() == MAX_USERS));
        let (last, users) = chunks.finish();
        assert_eq!(users, 120);
        let last = last.unwrap();
        assert_eq!(last.len(), 20);
        let mut all: Vec<String> = calls.into_iter().flatten().chain(last).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 120, "every user exactly once");
        let mut exact = UserChunks::default();
        let full: Vec<_> = (0..50)
            .filter_map(|u| exact.add(&format!("v{u}")))
            .collect();
        assert_eq!(full.len(), 1);
        assert_eq!(exact.finish(), (None, 50));
    }

    #[test]
    fn two_reconciles_of_one_queue_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue.db");
        let first = Turn::take(&queue).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let q = queue.clone();
        let second = std::thread::spawn(move || {
            let turn = Turn::take(&q).unwrap();
            tx.send(()).unwrap();
            drop(turn);
        });
        // the second waits while the first holds the turn...
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(first);
        // ...and gets it once the first is done
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        second.join().unwrap();
    }
}
