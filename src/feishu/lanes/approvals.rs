//! The approvals lane: `POST /open-apis/attendance/v1/user_approvals`, one approval item per call.
//!
//! Rows are queued by [`crate::hr::approvals`]: each payload is already a complete request body
//! (`{"user_approval": {...}}` with that one item), sent as stored. The item's `idempotent_id` makes
//! a re-send create nothing twice.

use crate::feishu::{classify, FeishuClient, Reply, Verdict};

/// Path of approval results (`user_approvals`).
pub const PATH: &str = "/open-apis/attendance/v1/user_approvals";

/// Sends one `user_approvals` request (`body`: `{"user_approval": {...}}`).
pub async fn create(client: &FeishuClient, body: String) -> Reply {
    let path = format!("{PATH}?employee_type={}", client.employee_type().as_str());
    client.send(reqwest::Method::POST, &path, body).await
}

/// Classifies a reply to `user_approvals`: 1225001 (the item failed the platform's checks; the reply
/// carries `{TripErrorRecords, OvertimeWorkErrorRecords, LeaveErrorRecords, OutErrorRecords}`) is
/// invalid; the rest as [`classify`].
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
