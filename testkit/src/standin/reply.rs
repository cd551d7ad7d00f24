//! Replies as the platform shapes them: a JSON body with `code` and `msg` (and, on errors,
//! `error.log_id`, filled in by the server), plus the platform's common error replies.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::platform::{codes, MAX_BODY_BYTES};

/// A reply being built.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
    pub(super) headers: Vec<(&'static str, String)>,
    /// The body as sent, when it is written as text rather than from `body` (a large read: `body`
    /// then holds only its `code` and `msg`).
    pub(super) raw: Option<Vec<u8>>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
            raw: None,
        }
    }

    /// An error reply; `error.log_id` is filled in when the reply is sent.
    pub(super) fn err(status: StatusCode, code: i64, msg: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "code": code, "msg": msg.into() }),
            headers: Vec::new(),
            raw: None,
        }
    }

    pub(super) fn code(&self) -> i64 {
        self.body.get("code").and_then(Value::as_i64).unwrap_or(-1)
    }
}

pub(super) fn param_invalid(detail: impl std::fmt::Display) -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::PARAM_INVALID,
        format!("param is invalid: {detail}"),
    )
}

pub(super) fn rate_limited_reply(limit: u32, reset_secs: u64) -> Reply {
    let mut r = Reply::err(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        "request trigger frequency limit",
    );
    r.headers.push(("x-ogw-ratelimit-limit", limit.to_string()));
    r.headers
        .push(("x-ogw-ratelimit-reset", reset_secs.to_string()));
    r
}

pub(super) fn token_missing_reply() -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::TOKEN_MISSING,
        "Missing access token for authorization. Please make a request with token attached.",
    )
}

pub(super) fn token_invalid_reply() -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::TOKEN_INVALID,
        "Invalid access token for authorization. Please make a request with token attached.",
    )
}

/// 99991672, listing the scopes of which the endpoint needs one (as the platform's message does).
pub(super) fn scope_missing_reply(scopes: &[&str]) -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::SCOPE_MISSING,
        format!(
            "Access denied. One of the following scopes is required: [{}]. Please enable one of the scopes for the app.",
            scopes.join(", ")
        ),
    )
}

/// 99991401: the caller's address is not in the app's IP allow-list.
pub(super) fn ip_not_allowed_reply(peer: std::net::IpAddr) -> Reply {
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::IP_NOT_ALLOWED,
        format!("ip {peer} is not in the app's IP whitelist: add it under Security Settings"),
    )
}

pub(super) fn too_large_reply() -> Reply {
    param_invalid(format!("request body larger than {MAX_BODY_BYTES} bytes"))
}

/// The value of the query parameter `name` (as sent, not percent-decoded).
pub(super) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
