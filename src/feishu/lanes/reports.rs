//! The archived report lane: `POST /open-apis/attendance/v1/archive_rule/upload_report`, up to 50
//! report rows of one archive rule, month and operator per call.
//!
//! Rows are queued one per report row by [`crate::hr::reports`] (payload: [`QueuedRow`], the row
//! with its group). An upload sets absolute values, so the queue keeps the values of one report row
//! in order (an ordered kind) and a re-send is harmless. The reply may list members and field codes
//! it did not take (`invalid_member_id`, `invalid_code`): exactly those rows become dead letters.

use crate::feishu::{classify, FeishuClient, Reply, Verdict};
use crate::hr::reports::{QueuedRow, UploadReportBody};

/// Path of archived report uploads.
pub const PATH: &str = "/open-apis/attendance/v1/archive_rule/upload_report";

/// The request body for rows of one group (`None` without rows).
pub fn body(rows: &[QueuedRow]) -> Option<UploadReportBody> {
    let first = rows.first()?;
    Some(UploadReportBody {
        month: Some(first.month.clone()),
        operator_id: Some(first.operator_id.clone()),
        archive_rule_id: Some(first.archive_rule_id.clone()),
        archive_report_datas: Some(rows.iter().map(|r| r.row.clone()).collect()),
    })
}

/// The group rows are sent with: archive rule, month and operator.
pub fn group(q: &QueuedRow) -> (&str, &str, &str) {
    (&q.archive_rule_id, &q.month, &q.operator_id)
}

/// Sends one `archive_rule/upload_report` request.
pub async fn upload(client: &FeishuClient, body: String) -> Reply {
    let path = format!("{PATH}?employee_type={}", client.employee_type().as_str());
    client.send(reqwest::Method::POST, &path, body).await
}

fn string_list(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Classifies a reply to `archive_rule/upload_report`: code 0 with `invalid_member_id` or
/// `invalid_code` is [`Verdict::ReportInvalid`]; the rest as [`classify`].
pub fn classify_reply(reply: &Reply) -> Verdict {
    if reply.code == Some(0) {
        let members = string_list(&reply.data["invalid_member_id"]);
        let codes = string_list(&reply.data["invalid_code"]);
        if !members.is_empty() || !codes.is_empty() {
            return Verdict::ReportInvalid { members, codes };
        }
        return Verdict::Delivered;
    }
    classify(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feishu::classify::reply;

    #[test]
    fn report_replies_list_invalid_members_and_codes() {
        let mut r = reply(200, Some(0), "success");
        assert_eq!(classify_reply(&r), Verdict::Delivered);
        r.data = serde_json::json!({"invalid_code": ["c9"], "invalid_member_id": ["m2"]});
        assert_eq!(
            classify_reply(&r),
            Verdict::ReportInvalid {
                members: vec!["m2".into()],
                codes: vec!["c9".into()]
            }
        );
        assert_eq!(
            classify_reply(&reply(400, Some(1220600), "archive_rule_id not exist")),
            Verdict::Invalid
        );
    }
}
