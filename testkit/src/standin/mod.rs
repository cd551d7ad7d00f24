//! A local stand-in for the Feishu / Lark open platform.
//!
//! # Why it exists
//! The bridge must deliver every punch exactly once to `user_flows/batch_create`, through token
//! expiry, rate limits, lost replies and refusals. Those paths cannot be exercised against the real
//! platform on demand, so integration tests, the delivery benchmark and the demo talk to this
//! stand-in instead. It is a real HTTP/1.1 server (hyper 1, keep-alive) that answers like the
//! platform does, records every write, and lets the caller inject faults.
//!
//! # Rules it enforces
//! As the platform's public pages document them (open.feishu.cn: "导入打卡流水" for
//! `user_flows/batch_create`, "查询打卡流水" for the read of one record, the attendance development
//! guide for the common error codes, and the tenant token page), one file per topic:
//! - [`platform`]: the endpoint paths, limits and error codes;
//! - `token`: the token endpoint (the same token again while 30 minutes are left, 99991543 for
//!   wrong credentials);
//! - `admit`: every attendance request's bearer token (99991661, 99991663), the app's IP
//!   allow-list (99991401, [`StandinConfig::ip_allow_list`]), its scopes (99991672, one of the
//!   endpoint's [`Api::scopes`] must be in [`StandinConfig::scopes`]) and its endpoint's sliding
//!   one-second rate limit (HTTP 429, code 99991400, headers `x-ogw-ratelimit-limit` /
//!   `x-ogw-ratelimit-reset`);
//! - `user_flows`: batch_create's body rules, deduplication by `idempotent_id` ([`DedupMode`]),
//!   unknown users listed in `msg` while the others are stored; and the read of one record by id
//!   (`GET user_flows/:user_flow_id`, what `clockbridge check-config --online` asks), which finds
//!   none;
//! - `query`: `user_flows/query` ("批量查询打卡流水"): at most 50 `user_ids`, Unix-second strings
//!   for the range, no paging (one reply holds every flow of those users in the range), only valid
//!   flows returned; and the controls a test needs to make the platform disagree with the bridge:
//!   a stored flow made invalid ([`Standin::invalidate_flow`]) or lost ([`Standin::lose_flow`]),
//!   flows from another source ([`Standin::add_foreign_flow`]), and flows seeded in bulk
//!   ([`Standin::seed_flows`]);
//! - `hr`: `user_approvals`, `archive_rule/upload_report` and `leave_accrual_record` PATCH, each
//!   with its page's rules (checked with the product's validators, `clockbridge::hr`);
//! - `faults`: injected faults ([`Fault`]), per endpoint or sticky;
//! - `server`: the listener, routing, `X-Tt-Logid` on every reply (and `error.log_id` in error
//!   bodies), bodies above 4 MiB refused without being buffered, and the one path every write
//!   request takes. Error replies never echo the request body, so the app secret never appears
//!   in them.
//!
//! A write is applied atomically (one lock), then the configured latency is slept, then the reply
//! is sent. [`Fault::LoseResponseAfterApply`] makes the service future fail after the write: hyper
//! then closes the connection without a reply, which is exactly a reply lost on the way back.
//!
//! # Safety of use
//! [`Standin::start`] and the tests only ever bind loopback (`127.0.0.1`). [`Standin::bind`] binds
//! whatever address it is given (for the `standin` binary); the stand-in has no real security and
//! must not be exposed beyond a test host.
//!
//! The server runs until [`Standin::shutdown`] is called or the last [`Standin`] handle is dropped.
//! It logs at `debug` level only and never panics on bad input.

mod admit;
mod config;
mod faults;
mod hr;
pub mod platform;
mod query;
mod reply;
mod server;
mod token;
mod user_flows;

#[cfg(test)]
mod tests;

pub use config::{DedupMode, StandinConfig, StandinStats};
pub use faults::Fault;
pub use hr::{AccrualRecord, ReportKey, StoredApproval};
pub use platform::{
    codes, Api, BATCH_CREATE_PATH, LEAVE_ACCRUAL_PATH, MAX_BODY_BYTES, MAX_RECORDS_PER_BATCH,
    MAX_USERS_PER_QUERY, MIN_CHECK_TIME, QUERY_PATH, SCOPE_RULE, SCOPE_TASK, SCOPE_TASK_READONLY,
    TOKEN_PATH, UPLOAD_REPORT_PATH, USER_APPROVALS_PATH, USER_FLOWS_PATH,
};
pub use server::Standin;
pub use user_flows::StoredFlow;
