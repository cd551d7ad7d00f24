//! The tenant access token: one cached value, refreshed ahead of expiry (5 minutes, or a tenth of its
//! lifetime when that is shorter), fetched by one caller at a time while the others wait for it, and
//! dropped when the platform refuses it. The token itself is never logged or shown.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Path of the tenant token call.
pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Whether a reply's code says the tenant token was refused (invalid, expired, missing, revoked):
/// a fresh token fixes it.
pub(crate) fn is_token_error(code: Option<i64>) -> bool {
    matches!(code, Some(99991661 | 99991663 | 99991664 | 99991671))
}

struct Cached {
    value: String,
    refresh_at: Instant,
}

/// The cache. Its lock is held while a token is fetched, so concurrent requests wait for one fetch.
#[derive(Default)]
pub(super) struct TokenCache {
    slot: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl TokenCache {
    /// The cached token while it is fresh; otherwise the one `fetch` returns (value, lifetime in
    /// seconds), cached. A failed fetch caches nothing.
    pub(super) async fn get<E, F, Fut>(&self, fetch: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, u64), E>>,
    {
        let mut guard = self.slot.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (value, expire) = fetch().await?;
        let ttl = Duration::from_secs(expire.max(1));
        let early = Duration::from_secs(300).min(ttl / 10);
        *guard = Some(Cached {
            value: value.clone(),
            refresh_at: Instant::now() + ttl - early,
        });
        Ok(value)
    }

    /// Drops the cached token if it is still `bad` (another task may have refreshed it already).
    pub(super) async fn drop_if(&self, bad: &str) {
        let mut guard = self.slot.lock().await;
        if guard.as_ref().map(|t| t.value == bad).unwrap_or(false) {
            *guard = None;
        }
    }

    /// How many times a token was fetched.
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}
