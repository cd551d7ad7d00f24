//! The archived report lane: `POST /open-apis/attendance/v1/archive_rule/upload_report`, up to 50
//! report rows of one archive rule, month and operator per call.
//!
//! Rows are queued one per report row by [`crate::hr::reports`] (payload: [`QueuedRow`], the row
//! with its group). An upload sets absolute values, so the queue keeps the values of one report row
//! in order (an ordered kind) and a re-send is harmless. The reply may list members and field codes
//! it did not take (`invalid_member_id`, `invalid_code`): exactly those rows become dead letters.

use super::{Exceptions, Lane, Plan, Sending};
use crate::config::SenderConfig;
use crate::feishu::{classify, FeishuClient, Reply, Verdict};
use crate::hr::reports::{QueuedRow, UploadReportBody, MAX_ROWS_PER_CALL};
use crate::queue::{Claimed, KindRules};

/// The queue kind of report rows (named where they are queued).
pub use crate::hr::reports::KIND;

/// Path of archived report uploads.
pub const PATH: &str = "/open-apis/attendance/v1/archive_rule/upload_report";

/// The archived report lane (registered in [`super::ALL`]).
pub struct Reports;

impl KindRules for Reports {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Yes: the values of one report row go out one at a time, oldest first.
    fn ordered(&self) -> bool {
        true
    }
}

impl Lane for Reports {
    fn batch_limit(&self, _cfg: &SenderConfig) -> usize {
        MAX_ROWS_PER_CALL
    }

    /// One request per archive rule, month and operator, in the order the groups first appear.
    fn plan(&self, rows: Vec<Claimed>) -> Plan {
        let mut plan = Plan::default();
        let mut groups: Vec<((String, String, String), Vec<Claimed>)> = Vec::new();
        for r in rows {
            let Ok(q) = serde_json::from_str::<QueuedRow>(&r.payload) else {
                plan.unreadable.push(r);
                continue;
            };
            let (a, b, c) = group(&q);
            let key = (a.to_string(), b.to_string(), c.to_string());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(r),
                None => groups.push((key, vec![r])),
            }
        }
        plan.requests = groups.into_iter().map(|(_, v)| v).collect();
        plan
    }

    fn send<'a>(&'a self, client: &'a FeishuClient, rows: &'a [Claimed]) -> Sending<'a> {
        Box::pin(async move {
            let rows: Vec<QueuedRow> = rows
                .iter()
                .filter_map(|r| serde_json::from_str(&r.payload).ok())
                .collect();
            let body = serde_json::to_string(&body(&rows)).unwrap_or_default();
            upload(client, body).await
        })
    }

    fn classify(&self, reply: &Reply) -> Verdict {
        classify_reply(reply)
    }

    /// The rows of a listed member (`invalid_member_id`), then the rows with a listed field code
    /// (`invalid_code`; the row's other fields were applied) are dead letters; the rest delivered.
    fn exceptions(&self, rows: Vec<Claimed>, members: &[String], codes: &[String]) -> Exceptions {
        let (mut bad_member, mut bad_code, mut good) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            let q: Option<QueuedRow> = serde_json::from_str(&r.payload).ok();
            let member = q.as_ref().and_then(|q| q.row.member_id.clone());
            let row_codes: Vec<String> = q
                .iter()
                .flat_map(|q| q.row.field_datas.iter().flatten())
                .filter_map(|f| f.code.clone())
                .collect();
            if member.is_some_and(|m| members.contains(&m)) {
                bad_member.push(r);
            } else if row_codes.iter().any(|c| codes.contains(c)) {
                bad_code.push(r);
            } else {
                good.push(r);
            }
        }
        Exceptions {
            dead: vec![
                (
                    bad_member,
                    "invalid_member_id",
                    format!("invalid_member_id {members:?}: the platform does not know this member"),
                ),
                (
                    bad_code,
                    "invalid_code",
                    format!("invalid_code {codes:?}: not a field of this archive rule; the row's other fields were sent"),
                ),
            ],
            delivered: good,
        }
    }
}

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
/// `invalid_code` is [`Verdict::ReportInvalid`]; the rest as [`classify()`].
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
