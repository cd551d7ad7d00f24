//! Admission of a request to an attendance endpoint, before its body is looked at, in the order the
//! platform's gateway would: its bearer token must be one the stand-in issued and still valid
//! (99991661 missing, 99991663 unknown / expired / revoked); the caller's address must be in the
//! app's IP allow-list, if it has one (99991401); the app must have one of the endpoint's scopes
//! ([`Api::scopes`], 99991672); then the endpoint's sliding one-second rate limit must have room
//! (HTTP 429, code 99991400, with the `x-ogw-ratelimit-*` headers). Each endpoint has its own
//! window, shared by every caller: the stand-in serves one app, and the platform counts per API,
//! per app and tenant, so several gateways (processes, each with its own token request) uploading
//! with the same app id share one window, as they do at the platform. Every request that reaches
//! the window is logged with its time and fate ([`super::Standin::rate_log`]).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::platform::Api;
use super::reply::{
    ip_not_allowed_reply, rate_limited_reply, scope_missing_reply, token_invalid_reply,
    token_missing_reply, Reply,
};
use super::server::{lock, Shared};
use super::token::bearer_token;

/// Admission times of an endpoint's requests within the last second.
#[derive(Default)]
pub(super) struct Window(VecDeque<Instant>);

impl Window {
    /// Admits a request at `now` unless `limit` requests (0: no limit) were admitted within the last
    /// second: `Ok(requests admitted in the window, this one included)`, or `Err(seconds until a slot
    /// frees, at least 1)`.
    fn admit(&mut self, now: Instant, limit: u32) -> Result<u64, u64> {
        let window = Duration::from_secs(1);
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.0.pop_front();
        }
        if limit > 0 && self.0.len() >= limit as usize {
            let oldest = self.0.front().copied().unwrap_or(now);
            let frees_in = (oldest + window).saturating_duration_since(now);
            let reset = frees_in.as_secs() + u64::from(frees_in.subsec_nanos() > 0);
            return Err(reset.max(1));
        }
        self.0.push_back(now);
        Ok(self.0.len() as u64)
    }
}

/// `None` if the request may go on to `api`'s rules, else the refusal to send.
pub(super) fn admit(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    api: Api,
    peer: IpAddr,
) -> Option<Reply> {
    let Some(token) = bearer_token(parts) else {
        return Some(token_missing_reply());
    };
    let mut g = lock(&shared.inner);
    let now = Instant::now();
    if g.tokens.get(token).is_none_or(|expiry| *expiry <= now) {
        return Some(token_invalid_reply());
    }
    if g.cfg
        .ip_allow_list
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(&peer))
    {
        return Some(ip_not_allowed_reply(peer));
    }
    if !api.scopes().iter().any(|s| g.cfg.scopes.contains(*s)) {
        return Some(scope_missing_reply(api.scopes()));
    }
    let limit = g.cfg.rate_limit_per_sec;
    let verdict = g.windows.entry(api).or_default().admit(now, limit);
    g.rate_log
        .entry(api)
        .or_default()
        .push((now, verdict.is_ok()));
    match verdict {
        Err(reset) => {
            g.stats.rate_limited += 1;
            Some(rate_limited_reply(limit, reset))
        }
        Ok(admitted) => {
            if api == Api::UserFlows && admitted > g.stats.max_requests_in_any_second {
                g.stats.max_requests_in_any_second = admitted;
            }
            None
        }
    }
}
