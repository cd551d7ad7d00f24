//! The leave accrual lane: `PATCH /open-apis/attendance/v1/leave_accrual_record/:leave_id`, one
//! update per call.
//!
//! Rows are queued by [`crate::hr::accruals`] (payload: [`QueuedAccrual`]: the leave id, the user id
//! type and the body). An update sets absolute values, so the queue keeps the updates of one granting
//! record in order (an ordered kind). The page gives its own meaning to codes the other endpoints use
//! differently; [`classify_reply`] follows its table.

use super::{Lane, Plan, Sending};
use crate::config::SenderConfig;
use crate::feishu::{classify, AppProblem, FeishuClient, Reply, Verdict};
use crate::hr::accruals::QueuedAccrual;
use crate::queue::{Claimed, KindRules};

/// The queue kind of accrual updates (named where they are queued).
pub use crate::hr::accruals::KIND;

/// Path prefix of leave accrual record updates (`/:leave_id` follows).
pub const PATH: &str = "/open-apis/attendance/v1/leave_accrual_record";

/// The leave accrual lane (registered in [`super::ALL`]).
pub struct Accruals;

impl KindRules for Accruals {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Yes: the updates of one granting record go out one at a time, oldest first.
    fn ordered(&self) -> bool {
        true
    }
}

impl Lane for Accruals {
    /// One update per call.
    fn batch_limit(&self, _cfg: &SenderConfig) -> usize {
        1
    }

    fn plan(&self, rows: Vec<Claimed>) -> Plan {
        Plan::readable(rows, |p| serde_json::from_str::<QueuedAccrual>(p).is_ok())
    }

    fn send<'a>(&'a self, client: &'a FeishuClient, rows: &'a [Claimed]) -> Sending<'a> {
        Box::pin(async move {
            let q: QueuedAccrual =
                serde_json::from_str(&rows[0].payload).unwrap_or(QueuedAccrual {
                    leave_id: String::new(),
                    user_id_type: String::new(),
                    body: Default::default(),
                });
            let body = serde_json::to_string(&q.body).unwrap_or_default();
            patch(client, &q.leave_id, &q.user_id_type, body).await
        })
    }

    fn classify(&self, reply: &Reply) -> Verdict {
        classify_reply(reply)
    }
}

/// Sends one `leave_accrual_record/:leave_id` PATCH (`leave_id` and `user_id_type` are checked
/// to be plain ids before they are queued).
pub async fn patch(
    client: &FeishuClient,
    leave_id: &str,
    user_id_type: &str,
    body: String,
) -> Reply {
    let path = format!("{PATH}/{leave_id}?user_id_type={user_id_type}");
    client.send(reqwest::Method::PATCH, &path, body).await
}

/// Codes of the leave accrual page that refuse the update for good (HTTP 400 in its table).
pub const PERMANENT: [i64; 22] = [
    1220016, 1220003, 1220006, 1220002, 1220004, 1220005, 1220007, 1220008, 1220009, 1220024,
    1220025, 1220026, 1220027, 1220029, 1220030, 1220017, 1220020, 1220021, 1220022, 1220031,
    1220032, 1220600,
];

/// Classifies a reply to the leave accrual PATCH. Its page gives its own meaning to codes the other
/// APIs use differently (1220001 "no tenant ID", 1220002 "invalid granting unit", 1220005 "data
/// object not found"): 1220010 "granting record already exists" counts as delivered; 1220001 blocks
/// the app; the 400 codes of its table are permanent; its 500 codes are retried. Rate limits,
/// tokens and credentials as [`classify()`]; a missing scope is `attendance:rule`.
pub fn classify_reply(reply: &Reply) -> Verdict {
    if reply.http_status == 429 || matches!(reply.code, None | Some(0) | Some(99991400)) {
        return classify(reply);
    }
    if reply
        .msg
        .to_ascii_lowercase()
        .contains("feishu people enterprise edition")
    {
        return Verdict::AppBlocked(AppProblem::EditionRequired);
    }
    let code = reply.code.unwrap_or_default();
    match code {
        1220010 => Verdict::AlreadyExists,
        1220001 => Verdict::AppBlocked(AppProblem::TenantMissing),
        99991672 | 99991679 => Verdict::AppBlocked(AppProblem::RuleScopeMissing),
        c if PERMANENT.contains(&c) => Verdict::Invalid,
        1220011..=1220015 | 1220018 | 1220019 | 1220028 | 1229999 => Verdict::Retry,
        _ => classify(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::classify::reply;

    #[test]
    fn accrual_codes_follow_their_own_table() {
        assert_eq!(
            classify_reply(&reply(400, Some(1220010), "Granting record already exists")),
            Verdict::AlreadyExists
        );
        for c in [1220025, 1220026, 1220027, 1220005, 1220002, 1220031] {
            assert_eq!(
                classify_reply(&reply(400, Some(c), "x")),
                Verdict::Invalid,
                "{c}"
            );
        }
        for c in [1220012, 1220015, 1229999] {
            assert_eq!(
                classify_reply(&reply(500, Some(c), "x")),
                Verdict::Retry,
                "{c}"
            );
        }
        assert_eq!(
            classify_reply(&reply(400, Some(1220001), "No tenant ID")),
            Verdict::AppBlocked(AppProblem::TenantMissing)
        );
        assert_eq!(
            classify_reply(&reply(400, Some(99991672), "scope")),
            Verdict::AppBlocked(AppProblem::RuleScopeMissing)
        );
        assert!(matches!(
            classify_reply(&reply(429, Some(99991400), "limit")),
            Verdict::RateLimited { .. }
        ));
        assert_eq!(
            classify_reply(&reply(400, Some(99991663), "token")),
            Verdict::Retry
        );
    }
}
