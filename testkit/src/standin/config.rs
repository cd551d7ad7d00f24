//! The stand-in's settings ([`StandinConfig`], changeable while it runs through [`Standin`]'s
//! setters), its deduplication modes and its counters ([`Standin::stats`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::platform::{SCOPE_RULE, SCOPE_TASK, SCOPE_TASK_READONLY};
use super::server::lock;
#[cfg(doc)]
use super::Fault;
use super::Standin;

/// Settings of a stand-in. Every field can also be changed while it runs (see [`Standin`]).
#[derive(Clone)]
pub struct StandinConfig {
    /// The only app_id accepted by the token endpoint.
    pub app_id: String,
    /// The only app_secret accepted by the token endpoint.
    pub app_secret: String,
    /// Lifetime of issued tokens, seconds (the platform's is 7200).
    pub token_ttl_secs: u64,
    /// Added before every batch_create reply.
    pub latency: Duration,
    /// batch_create requests admitted per sliding second; 0 disables the limit.
    pub rate_limit_per_sec: u32,
    /// `None`: every user exists. `Some(set)`: only these `user_id`s exist.
    pub known_users: Option<HashSet<String>>,
    /// What happens to a record whose `idempotent_id` is already stored.
    pub dedup: DedupMode,
    /// Users whose records make the platform refuse the *whole* batch with 1220004 ("user_id is not
    /// exist or does not have permission"), as it does for ids it rejects at validation.
    pub invalid_users: HashSet<String>,
    /// The scopes the app has been granted. An endpoint whose scopes ([`super::Api::scopes`]) are
    /// all missing answers 99991672. Default: `attendance:task`, `attendance:task:readonly` and
    /// `attendance:rule`.
    pub scopes: HashSet<String>,
    /// `None`: no IP allow-list. `Some(set)`: only callers from these addresses may call the
    /// attendance endpoints (others get 99991401); the token endpoint is not restricted.
    pub ip_allow_list: Option<HashSet<IpAddr>>,
}

impl Default for StandinConfig {
    fn default() -> Self {
        StandinConfig {
            app_id: "cli_standin".to_owned(),
            app_secret: "standin-secret".to_owned(),
            token_ttl_secs: 7200,
            latency: Duration::ZERO,
            rate_limit_per_sec: 50,
            known_users: None,
            dedup: DedupMode::Silent,
            invalid_users: HashSet::new(),
            scopes: [SCOPE_TASK, SCOPE_TASK_READONLY, SCOPE_RULE]
                .map(str::to_owned)
                .into(),
            ip_allow_list: None,
        }
    }
}

impl std::fmt::Debug for StandinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandinConfig")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("latency", &self.latency)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("known_users", &self.known_users.as_ref().map(HashSet::len))
            .field("dedup", &self.dedup)
            .field("scopes", &self.scopes)
            .field("ip_allow_list", &self.ip_allow_list)
            .finish()
    }
}

/// Handling of records whose `idempotent_id` is already stored (records without one are never
/// deduplicated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum DedupMode {
    /// The record is not stored again, counts as a duplicate and is answered like a created one.
    #[default]
    Silent,
    /// The whole batch is refused (400, 1220600 "the object already exists"), nothing applied.
    Conflict,
    /// No deduplication at all: every record is stored, so [`Standin::write_counts`] shows double
    /// deliveries. Not the platform's behaviour; for checking a client's exactly-once claim.
    Off,
}

/// Counters of a stand-in, see [`Standin::stats`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct StandinStats {
    /// Token requests received (good or bad).
    pub token_requests: u64,
    /// batch_create requests received (every one, whatever its fate).
    pub batch_requests: u64,
    /// Records written (applied).
    pub records_stored: u64,
    /// Records skipped or refused because their idempotent_id was already stored (or repeated
    /// within the batch).
    pub records_duplicate: u64,
    /// Records refused because their user does not exist.
    pub records_unknown_user: u64,
    /// Requests (any endpoint) answered with a body code other than 0.
    pub rejected_requests: u64,
    /// HTTP 429 replies caused by the client exceeding the limit (injected ones not included).
    pub rate_limited: u64,
    /// HTTP 429 replies caused by an injected [`Fault::RateLimited`].
    pub injected_rate_limited: u64,
    /// Faults taken from the queue or the sticky slot (every kind, including delays).
    pub injected_faults: u64,
    /// Requests whose connection was dropped without any reply (both
    /// [`Fault::LoseResponseAfterApply`] and [`Fault::CloseBeforeApply`]).
    pub lost_responses: u64,
    /// Highest number of batch_create requests admitted in any sliding one-second window.
    pub max_requests_in_any_second: u64,
    /// Most batch_create requests being handled at once (from arrival to reply).
    pub max_concurrent: u64,
}

impl Standin {
    /// A snapshot of the counters.
    pub fn stats(&self) -> StandinStats {
        let mut s = lock(&self.shared.inner).stats.clone();
        s.max_concurrent = self.shared.max_concurrent.load(Ordering::Relaxed);
        s
    }

    /// Replaces the set of users whose records make the whole batch invalid (1220004).
    pub fn set_invalid_users(&self, users: HashSet<String>) {
        lock(&self.shared.inner).cfg.invalid_users = users;
    }

    /// Replaces the set of existing users (`None`: every user exists).
    pub fn set_known_users(&self, users: Option<HashSet<String>>) {
        lock(&self.shared.inner).cfg.known_users = users;
    }

    /// Changes the latency added before every write reply.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.shared.inner).cfg.latency = d;
    }

    /// Changes the deduplication mode.
    pub fn set_dedup(&self, m: DedupMode) {
        lock(&self.shared.inner).cfg.dedup = m;
    }

    /// Replaces the scopes granted to the app (e.g. none, to answer 99991672 on every endpoint).
    pub fn set_scopes<S: Into<String>>(&self, scopes: impl IntoIterator<Item = S>) {
        lock(&self.shared.inner).cfg.scopes = scopes.into_iter().map(Into::into).collect();
    }

    /// Sets (or with `None` removes) the IP allow-list of the attendance endpoints.
    pub fn set_ip_allow_list(&self, ips: Option<HashSet<IpAddr>>) {
        lock(&self.shared.inner).cfg.ip_allow_list = ips;
    }

    /// Changes the rate limit (requests per sliding second and endpoint; 0 disables it).
    pub fn set_rate_limit(&self, per_sec: u32) {
        lock(&self.shared.inner).cfg.rate_limit_per_sec = per_sec;
    }
}
