//! Injected faults: one queue per endpoint (a fault is taken by one request, first in first out)
//! and one sticky fault for every write request once the queues are empty. Error faults replace
//! the reply and apply nothing; [`Fault::LoseResponseAfterApply`] applies the write and then drops
//! the connection without a reply, which is exactly a reply lost on the way back.

use std::time::Duration;

use hyper::StatusCode;

use super::platform::{codes, Api, SCOPE_TASK};
use super::reply::{rate_limited_reply, scope_missing_reply, token_invalid_reply, Reply};
use super::server::{lock, Inner, Shared};
use super::Standin;

/// A fault injected into one write request (queued) or all of them (sticky).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Handle the request normally (applying the write if it is valid), then drop the connection
    /// with no reply, whatever the reply would have been.
    LoseResponseAfterApply,
    /// Drop the connection with no reply, apply nothing.
    CloseBeforeApply,
    /// HTTP 500, code 1225000 "internal server error", nothing applied.
    ServerError,
    /// HTTP 400, code 1220600 "no row affected", nothing applied.
    NoRowAffected,
    /// HTTP 429, code 99991400, with the rate-limit headers; `reset_secs` goes in
    /// `x-ogw-ratelimit-reset`. Counted in `injected_rate_limited`, not in `rate_limited`.
    RateLimited {
        /// Value of the `x-ogw-ratelimit-reset` header.
        reset_secs: u64,
    },
    /// HTTP 400, code 99991663 (token invalid), nothing applied. The token itself stays valid.
    TokenInvalid,
    /// HTTP 400, code 99991672 (scope `attendance:task` missing), nothing applied.
    ScopeMissing,
    /// HTTP 400, code 1220005 "no permission", nothing applied.
    NoPermission,
    /// Hold the request this long, then handle it normally.
    Delay(Duration),
    /// Any reply: HTTP `status`, body code `code` and `msg`, nothing applied.
    Custom { status: u16, code: i64, msg: String },
}

impl Standin {
    /// Queues a fault for one future batch_create request (FIFO, one per request).
    pub fn push_fault(&self, f: Fault) {
        self.push_fault_on(Api::UserFlows, f);
    }

    /// Queues a fault for one future request to `api`.
    pub fn push_fault_on(&self, api: Api, f: Fault) {
        lock(&self.shared.inner)
            .faults
            .entry(api)
            .or_default()
            .push_back(f);
    }

    /// Number of queued batch_create faults not yet taken.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.inner)
            .faults
            .get(&Api::UserFlows)
            .map_or(0, |q| q.len())
    }

    /// Sets (or clears) a fault applied to every write request; queued faults go first.
    pub fn set_sticky_fault(&self, f: Option<Fault>) {
        lock(&self.shared.inner).sticky = f;
    }
}

/// The fault for the next request to `api`, if any (counted in `injected_faults`).
pub(super) fn take(g: &mut Inner, api: Api) -> Option<Fault> {
    let fault = g
        .faults
        .get_mut(&api)
        .and_then(|q| q.pop_front())
        .or_else(|| g.sticky.clone());
    if fault.is_some() {
        g.stats.injected_faults += 1;
    }
    fault
}

/// The reply an error fault gives (`None` for faults that change how a request is handled).
pub(super) fn error_reply(shared: &Shared, f: &Fault) -> Option<Reply> {
    Some(match f {
        Fault::ServerError => Reply::err(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal server error",
        ),
        Fault::NoRowAffected => {
            Reply::err(StatusCode::BAD_REQUEST, codes::GENERIC, "no row affected")
        }
        Fault::RateLimited { reset_secs } => {
            let mut g = lock(&shared.inner);
            g.stats.injected_rate_limited += 1;
            rate_limited_reply(g.cfg.rate_limit_per_sec, *reset_secs)
        }
        Fault::TokenInvalid => token_invalid_reply(),
        Fault::ScopeMissing => scope_missing_reply(&[SCOPE_TASK]),
        Fault::NoPermission => Reply::err(
            StatusCode::BAD_REQUEST,
            codes::NO_PERMISSION,
            "no permission",
        ),
        Fault::Custom { status, code, msg } => Reply::err(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            *code,
            msg.clone(),
        ),
        Fault::LoseResponseAfterApply | Fault::CloseBeforeApply | Fault::Delay(_) => return None,
    })
}
