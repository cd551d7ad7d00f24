//! The token endpoint (`POST /open-apis/auth/v3/tenant_access_token/internal`): the right `app_id` /
//! `app_secret` gives a flat `{"code":0,"msg":"ok","tenant_access_token":"t-…","expire":…}`; asking
//! again while the current token has at least 30 minutes left returns that same token with its
//! remaining lifetime, otherwise a new one (the old stays valid until it expires). Wrong credentials
//! give HTTP 400 code 99991543; the reply never echoes the request, so the secret never appears in it.

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use rand::Rng;
use serde_json::json;
use tracing::debug;

use super::platform::{codes, TOKEN_REUSE_MIN_LEFT};
use super::reply::{too_large_reply, Reply};
use super::server::{lock, read_body, BodyError, DropConnection, Shared};
use super::Standin;

impl Standin {
    /// Changes the lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, secs: u64) {
        lock(&self.shared.inner).cfg.token_ttl_secs = secs;
    }

    /// Changes the accepted app secret (a rotated secret); issued tokens stay valid.
    pub fn set_app_secret(&self, s: &str) {
        lock(&self.shared.inner).cfg.app_secret = s.to_owned();
    }

    /// Invalidates every issued token: their next use gets 99991663.
    pub fn revoke_tokens(&self) {
        let mut g = lock(&self.shared.inner);
        g.tokens.clear();
        g.current_token = None;
    }
}

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer_token(parts: &hyper::http::request::Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(super) async fn handle_token(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Reply, DropConnection> {
    lock(&shared.inner).stats.token_requests += 1;
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Ok(too_large_reply()),
        Err(BodyError::Broken) => return Err(DropConnection),
    };
    #[derive(serde::Deserialize)]
    struct Creds {
        app_id: String,
        app_secret: String,
    }
    let Ok(creds) = serde_json::from_slice::<Creds>(&body) else {
        return Ok(Reply::err(
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAM,
            "invalid param: body must be {\"app_id\":...,\"app_secret\":...}",
        ));
    };
    let mut g = lock(&shared.inner);
    if creds.app_id != g.cfg.app_id || creds.app_secret != g.cfg.app_secret {
        return Ok(Reply::err(
            StatusCode::BAD_REQUEST,
            codes::BAD_CREDENTIALS,
            "app_id or app_secret is invalid",
        ));
    }
    let now = Instant::now();
    g.tokens.retain(|_, expiry| *expiry > now);
    if let Some(current) = g.current_token.clone() {
        if let Some(expiry) = g.tokens.get(&current) {
            let left = expiry.saturating_duration_since(now);
            if left >= TOKEN_REUSE_MIN_LEFT {
                return Ok(Reply::ok(json!({
                    "code": 0,
                    "msg": "ok",
                    "tenant_access_token": current,
                    "expire": left.as_secs(),
                })));
            }
        }
    }
    let ttl = g.cfg.token_ttl_secs;
    let token = format!("t-standin-{:032x}", rand::rng().random::<u128>());
    let expiry = now
        .checked_add(Duration::from_secs(ttl))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
    g.tokens.insert(token.clone(), expiry);
    g.current_token = Some(token.clone());
    debug!("stand-in: token issued");
    Ok(Reply::ok(json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": token,
        "expire": ttl,
    })))
}
