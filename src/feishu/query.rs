//! The read of punches back from the platform: `POST /open-apis/attendance/v1/user_flows/query`
//! ("批量查询打卡流水"), used by `clockbridge reconcile`. The page's rules (docs/feishu-user-flows-query.md):
//! at most [`MAX_USERS`] `user_ids` per call, `check_time_from` / `check_time_to` as Unix seconds in
//! strings, no paging (one reply holds every flow of those users in the range), only *valid* flows
//! returned, the scope `attendance:task:readonly`, 50 requests per second for the app.
//!
//! The reply is judged with the same tables as every write ([`super::classify`]) and goes through
//! the same client (token cache, the re-send once after a token error, timeouts, log ids).

use serde::{Deserialize, Serialize};

use super::{FeishuClient, Reply};

/// Path of the query.
pub const PATH: &str = "/open-apis/attendance/v1/user_flows/query";

/// Most `user_ids` one call may name ("长度不超过 50").
pub const MAX_USERS: usize = 50;

/// One flow the platform returned. Fields it may leave out are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFlow {
    #[serde(default)]
    pub user_id: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "de_seconds")]
    pub check_time: i64,
    #[serde(default)]
    pub record_id: String,
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub idempotent_id: String,
    /// How the flow was made (7: imported through the open platform; 0: a punch in the app...).
    #[serde(default, rename = "type")]
    pub flow_type: i64,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub location_name: String,
}

/// `"1772413199"` or `1772413199`.
fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum T {
        N(i64),
        S(String),
    }
    Ok(match T::deserialize(d)? {
        T::N(n) => n,
        T::S(s) => s.trim().parse().unwrap_or(0),
    })
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    user_flow_results: Vec<SeenFlow>,
}

/// Asks for the valid flows of `user_ids` (at most [`MAX_USERS`]) with `from <= check_time <= to`
/// (Unix seconds). `Err` is the reply when it is not a success with that list (classify it).
pub async fn query(
    client: &FeishuClient,
    user_ids: &[String],
    from: i64,
    to: i64,
) -> Result<Vec<SeenFlow>, Reply> {
    debug_assert!(user_ids.len() <= MAX_USERS);
    let body = serde_json::json!({
        "user_ids": user_ids,
        "check_time_from": from.to_string(),
        "check_time_to": to.to_string(),
    })
    .to_string();
    let path = format!(
        "{PATH}?employee_type={}&include_terminated_user=true",
        client.employee_type().as_str()
    );
    let mut reply = client.send(reqwest::Method::POST, &path, body).await;
    if reply.code != Some(0) || reply.http_status != 200 {
        return Err(reply);
    }
    match serde_json::from_value::<Data>(std::mem::take(&mut reply.data)) {
        Ok(d) => Ok(d.user_flow_results),
        Err(e) => {
            reply.code = None;
            reply.msg = format!("user_flows/query: the reply's data is not a list of flows: {e}");
            Err(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_with_its_time_as_a_string_or_a_number() {
        let d: Data = serde_json::from_value(serde_json::json!({"user_flow_results": [
            {"user_id": "u1", "check_time": "1772413199", "record_id": "67", "idempotent_id": "k",
             "external_id": "door-1/1/20260302085959", "type": 7, "photo_urls": []},
            {"user_id": "u2", "check_time": 1772413200}
        ]}))
        .unwrap();
        assert_eq!(d.user_flow_results[0].check_time, 1_772_413_199);
        assert_eq!(d.user_flow_results[0].flow_type, 7);
        assert_eq!(d.user_flow_results[1].check_time, 1_772_413_200);
        assert_eq!(d.user_flow_results[1].idempotent_id, "");
    }
}
