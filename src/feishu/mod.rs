//! The Feishu / Lark open platform: the HTTP client, the tenant token, the classification of every
//! reply, and one lane per attendance write endpoint.
//!
//! - [`client`]: a small client over `reqwest` (rustls): timeouts, `X-Tt-Logid`, the token added to
//!   every call and a request re-sent once after a token error.
//! - [`token`]: the tenant token cache, refreshed ahead of expiry.
//! - [`mod@classify`]: the shared tables that map a reply to a [`Verdict`] (retry, delivered, per-record
//!   failure, invalid batch, rate limited, or an application-level failure no retry can fix).
//! - [`net`]: why no answer came (DNS, refused, timeout, TLS, proxy, a page that is not the
//!   platform's), from the error's kind.
//! - [`lanes`]: one file per endpoint (`user_flows/batch_create`, `user_approvals`,
//!   `archive_rule/upload_report`, `leave_accrual_record`): its path, body, batch limit, grouping and
//!   its own reading of the error table.
//! - [`query`]: the read of punches back (`user_flows/query`), for `clockbridge reconcile`.
//!
//! The app secret and tokens never appear in an error, a log line or `Debug` output.

pub mod classify;
pub mod client;
pub mod lanes;
pub mod net;
pub mod query;
pub mod token;

pub use classify::{classify, parse_failed_list, AppProblem, Verdict};
pub use client::{FeishuClient, FeishuError, Reply};
pub use net::Network;
