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

/// `"1772413199"` or `1772413199`, read without buffering (an untagged enum would copy every
/// value into serde's `Content` first: a third of the parse of a month of flows).
fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("Unix seconds as a number or a string")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(0))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i64, E> {
            Ok(v.trim().parse().unwrap_or(0))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(Seconds)
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
    // typed (no `serde_json::Value` between), and off the runtime when large: a reply for 50 users
    // over a month is about 2 MB
    let (mut reply, data) = client
        .send_typed::<Data>(reqwest::Method::POST, &path, body)
        .await;
    if reply.code != Some(0) || reply.http_status != 200 {
        return Err(reply);
    }
    match data {
        Some(d) => Ok(d.user_flow_results),
        None => {
            reply.code = None;
            reply.msg = "user_flows/query: the reply's data is not a list of flows".to_string();
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
