//! The approvals lane: `POST /open-apis/attendance/v1/user_approvals`, one approval item per call.
//!
//! Rows are queued by [`crate::hr::approvals`]: each payload is already a complete request body
//! (`{"user_approval": {...}}` with that one item), sent as stored. The item's `idempotent_id` makes
//! a re-send create nothing twice.

use super::{Lane, Sending};
use crate::config::SenderConfig;
use crate::feishu::{classify, FeishuClient, Reply, Verdict};
use crate::queue::{Claimed, KindRules};

/// The queue kind of approval items (named where they are queued).
pub use crate::hr::approvals::KIND;

/// Path of approval results (`user_approvals`).
pub const PATH: &str = "/open-apis/attendance/v1/user_approvals";

/// The approvals lane (registered in [`super::ALL`]).
pub struct Approvals;

impl KindRules for Approvals {
    fn kind(&self) -> &'static str {
        KIND
    }
}

impl Lane for Approvals {
    /// One item per call.
    fn batch_limit(&self, _cfg: &SenderConfig) -> usize {
        1
    }

    fn send<'a>(&'a self, client: &'a FeishuClient, rows: &'a [Claimed]) -> Sending<'a> {
        Box::pin(create(client, rows[0].payload.clone()))
    }

    fn classify(&self, reply: &Reply) -> Verdict {
        classify_reply(reply)
    }
}

/// Sends one `user_approvals` request (`body`: `{"user_approval": {...}}`).
pub async fn create(client: &FeishuClient, body: String) -> Reply {
    let path = format!("{PATH}?employee_type={}", client.employee_type().as_str());
    client.send(reqwest::Method::POST, &path, body).await
}

/// Classifies a reply to `user_approvals`: 1225001 (the item failed the platform's checks; the reply
/// carries `{TripErrorRecords, OvertimeWorkErrorRecords, LeaveErrorRecords, OutErrorRecords}`) is
/// invalid; the rest as [`classify()`].
pub fn classify_reply(reply: &Reply) -> Verdict {
    match reply.code {
        Some(1225001) => Verdict::Invalid,
        _ => classify(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::classify::reply;

    #[test]
    fn approval_error_records_are_invalid() {
        assert_eq!(
            classify_reply(&reply(400, Some(1225001), "param is invalis")),
            Verdict::Invalid
        );
        assert_eq!(
            classify_reply(&reply(500, Some(1225000), "internal server error")),
            Verdict::Retry
        );
        assert_eq!(
            classify_reply(&reply(400, Some(1220600), "the object already exists")),
            Verdict::AlreadyExists
        );
    }
}
