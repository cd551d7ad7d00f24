//! `POST /open-apis/attendance/v1/user_flows/query?employee_type=…` ("批量查询打卡流水"), after the
//! fault, the token, the scope (`attendance:task:readonly` only, as its page says) and its own
//! sliding one-second rate limit ([`super::admit`]), checked in order: `employee_type` is
//! `employee_id` or `employee_no` (1220001); the body is JSON with `user_ids` a list of 1 to 50
//! strings (1220001 otherwise: "长度不超过 50"); `check_time_from` and `check_time_to` are Unix seconds
//! as decimal strings, from not after to (1220001). The reply is every *valid* flow of those users
//! with `check_time` in `[from, to]` (both ends included), in `data.user_flow_results`: the page
//! defines no paging, so one reply holds them all. Each result is the stored record (with its
//! `external_id` and `idempotent_id`) plus a `record_id` and the record `type` (7 for imports).
//!
//! The controls on [`Standin`] let a test make the platform disagree with the bridge: a flow
//! made invalid (stored, never returned: what the platform does with a punch it judged invalid), a
//! flow lost (gone, its idempotent id forgotten), flows from another source (the mobile app, another
//! gateway), and flows seeded in bulk for a benchmark without 240 000 uploads.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::platform::MAX_USERS_PER_QUERY;
use super::reply::{param_invalid, query_param, Reply};
use super::server::{lock, Shared};
use super::user_flows::StoredFlow;
use super::Standin;

impl Standin {
    /// Makes the stored flows with this `idempotent_id` invalid: `user_flows/query` no longer
    /// returns them, while batch_create still knows the id. A re-send with the same id replaces
    /// them (as a re-import does). Returns how many flows changed.
    pub fn invalidate_flow(&self, idempotent_id: &str) -> usize {
        let mut g = lock(&self.shared.inner);
        let mut n = 0;
        for f in g.flows.iter_mut() {
            if f.idempotent_id() == Some(idempotent_id) && f.valid {
                f.valid = false;
                n += 1;
            }
        }
        if n > 0 {
            g.invalid.insert(idempotent_id.to_owned());
        }
        n
    }

    /// Loses the stored flows with this `idempotent_id`: gone, and the id forgotten (a re-send
    /// is stored anew). Returns how many flows were removed.
    pub fn lose_flow(&self, idempotent_id: &str) -> usize {
        let mut g = lock(&self.shared.inner);
        let before = g.flows.len();
        g.flows.retain(|f| f.idempotent_id() != Some(idempotent_id));
        g.by_user = None;
        g.counts.remove(idempotent_id);
        g.invalid.remove(idempotent_id);
        before - g.flows.len()
    }

    /// Adds a flow that came from another source (the mobile app, another gateway): `record` needs
    /// `user_id` and `check_time` (Unix seconds as a string); `type` defaults to 0 (a punch in the
    /// app). It is not counted by [`Standin::write_counts`] unless it has an `idempotent_id`.
    pub fn add_foreign_flow(&self, mut record: Value) {
        if let Some(obj) = record.as_object_mut() {
            obj.entry("type").or_insert(json!(0));
            if !obj.contains_key("creator_id") {
                let user = obj.get("user_id").cloned().unwrap_or(Value::Null);
                obj.insert("creator_id".to_owned(), user);
            }
        }
        self.seed_flows(vec![record]);
    }

    /// Stores records as if batch_create had accepted them, without a request (a benchmark's
    /// month of punches). Records with an `idempotent_id` are counted by it.
    pub fn seed_flows(&self, records: Vec<Value>) {
        let mut g = lock(&self.shared.inner);
        let now = SystemTime::now();
        g.flows.reserve(records.len());
        for record in records {
            if let Some(id) = record.get("idempotent_id").and_then(Value::as_str) {
                if !id.is_empty() {
                    *g.counts.entry(id.to_owned()).or_insert(0) += 1;
                }
            }
            let mut flow = StoredFlow {
                record,
                stored_at: now,
                log_id: "seeded".to_owned(),
                employee_type: "employee_id".to_owned(),
                valid: true,
                query_text: None,
            };
            // written now, not in the first query: a benchmark's queries then cost what serving
            // stored flows costs
            flow.query_text = Some(query_text(&flow));
            g.flows.push(flow);
        }
    }
}

/// Unix seconds as a decimal string, or `None`.
fn seconds(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A stable record id for a stored flow (the stand-in keeps none): a decimal number, like the
/// platform's, from the flow's user, time and ids.
fn record_id(f: &StoredFlow) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for key in [
        "user_id",
        "check_time",
        "idempotent_id",
        "external_id",
        "comment",
    ] {
        f.record.get(key).and_then(Value::as_str).hash(&mut h);
    }
    (h.finish() >> 1).to_string()
}

/// A stored flow as the query returns it: the record with a `record_id` and its `type` (the
/// platform stores 7, an open-platform import, for an import that named none).
fn query_text(f: &StoredFlow) -> Box<str> {
    let text = serde_json::to_string(&f.record).unwrap_or_default();
    let rest = text.strip_prefix('{').unwrap_or("}");
    let mut out = format!("{{\"record_id\":\"{}\",", record_id(f));
    if f.record.get("type").is_none() {
        out.push_str("\"type\":7,");
    }
    if rest == "}" {
        // an empty object: drop the trailing comma written above
        out.pop();
    }
    out.push_str(rest);
    out.into_boxed_str()
}

/// The request, once admitted.
pub(super) fn query(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
    match query_param(parts.uri.query(), "employee_type") {
        Some("employee_id" | "employee_no") => {}
        _ => return param_invalid("employee_type invalid"),
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return param_invalid("request body is not valid JSON");
    };
    let Some(list) = parsed.get("user_ids").and_then(Value::as_array) else {
        return param_invalid("user_ids is required and must be an array");
    };
    if list.is_empty() || list.len() > MAX_USERS_PER_QUERY {
        return param_invalid(format!(
            "user_ids must name 1 to {MAX_USERS_PER_QUERY} users, not {}",
            list.len()
        ));
    }
    let mut users = HashSet::new();
    for u in list {
        match u.as_str() {
            Some(s) if !s.is_empty() => {
                users.insert(s);
            }
            _ => return param_invalid("user_ids must be non-empty strings"),
        }
    }
    let (Some(from), Some(to)) = (
        seconds(parsed.get("check_time_from")),
        seconds(parsed.get("check_time_to")),
    ) else {
        return param_invalid("check_time_from and check_time_to must be Unix seconds as strings");
    };
    if from > to {
        return param_invalid("check_time_from is after check_time_to");
    }
    let mut g = lock(&shared.inner);
    let g = &mut *g;
    // the flows of these users, in the order they were stored
    let index = index(&g.flows, &mut g.by_user);
    let mut positions: Vec<usize> = users
        .iter()
        .filter_map(|u| index.get(*u))
        .flatten()
        .copied()
        .collect();
    positions.sort_unstable();
    // written as text: a month of 50 users is thousands of flows, each written once
    let mut out = br#"{"code":0,"msg":"success","data":{"user_flow_results":["#.to_vec();
    let mut first = true;
    for i in positions {
        let Some(f) = g.flows.get_mut(i) else {
            continue;
        };
        let in_range = seconds(f.record.get("check_time")).is_some_and(|t| t >= from && t <= to);
        if !f.valid || !in_range {
            continue;
        }
        if f.query_text.is_none() {
            f.query_text = Some(query_text(f));
        }
        let text = f.query_text.as_deref().unwrap_or("{}");
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"]}}");
    let mut reply = Reply::ok(json!({"code": 0, "msg": "success"}));
    reply.raw = Some(out);
    reply
}

/// The index of `flows` by user id, brought up to date (built anew after a removal).
fn index<'a>(
    flows: &[StoredFlow],
    by_user: &'a mut Option<(usize, HashMap<String, Vec<usize>>)>,
) -> &'a HashMap<String, Vec<usize>> {
    let (done, map) = by_user.get_or_insert_with(|| (0, HashMap::new()));
    for (i, f) in flows.iter().enumerate().skip(*done) {
        if let Some(user) = f.record.get("user_id").and_then(Value::as_str) {
            map.entry(user.to_owned()).or_default().push(i);
        }
    }
    *done = flows.len();
    map
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::platform::{codes, QUERY_PATH, SCOPE_TASK, TOKEN_PATH};
    use super::super::{Standin, StandinConfig};

    async fn ask(s: &Standin, body: Value) -> (u16, Value) {
        let c = reqwest::Client::new();
        let t: Value = c
            .post(format!("{}{TOKEN_PATH}", s.base_url()))
            .json(&json!({"app_id": "cli_standin", "app_secret": "standin-secret"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = c
            .post(format!(
                "{}{QUERY_PATH}?employee_type=employee_id",
                s.base_url()
            ))
            .bearer_auth(t["tenant_access_token"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn flow(user: &str, t: i64, id: &str) -> Value {
        json!({"user_id": user, "creator_id": user, "location_name": "HQ", "comment": "c",
               "check_time": t.to_string(), "idempotent_id": id, "external_id": format!("d/{id}")})
    }

    #[tokio::test]
    async fn the_query_returns_the_valid_flows_of_at_most_50_users_in_a_range() {
        let s = Standin::start(StandinConfig::default()).await.unwrap();
        s.seed_flows(vec![
            flow("u1", 100, "a"),
            flow("u1", 200, "b"),
            flow("u2", 150, "c"),
            flow("u3", 150, "d"),
        ]);
        let range = |users: Value, from: &str, to: &str| json!({"user_ids": users, "check_time_from": from, "check_time_to": to});
        let (status, v) = ask(&s, range(json!(["u1", "u2"]), "100", "150")).await;
        assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
        let ids: Vec<&str> = v["data"]["user_flow_results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["idempotent_id"].as_str().unwrap())
            .collect();
        // both ends of the range included, other users left out
        assert_eq!(ids, ["a", "c"]);
        let first = &v["data"]["user_flow_results"][0];
        assert!(first["record_id"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit()));
        assert_eq!(first["external_id"], "d/a");

        // an invalid flow is not returned; a lost one is gone; another source's is
        assert_eq!(s.invalidate_flow("a"), 1);
        assert_eq!(s.lose_flow("c"), 1);
        s.add_foreign_flow(json!({"user_id": "u2", "check_time": "120", "comment": "app"}));
        let (_, v) = ask(&s, range(json!(["u1", "u2"]), "0", "1000")).await;
        let got: Vec<(String, i64)> = v["data"]["user_flow_results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["comment"].as_str().unwrap().to_owned(),
                    f["type"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("c".to_owned(), 7), ("app".to_owned(), 0)]);

        // the page's limits: at most 50 users, times as Unix-second strings, from <= to
        let many: Vec<String> = (0..51).map(|i| format!("u{i}")).collect();
        for body in [
            range(json!(many), "0", "1"),
            range(json!([]), "0", "1"),
            range(json!(["u1"]), "2", "1"),
            json!({"user_ids": ["u1"], "check_time_from": 0, "check_time_to": "1"}),
        ] {
            let (status, v) = ask(&s, body).await;
            assert_eq!(
                (status, v["code"].as_i64()),
                (400, Some(codes::PARAM_INVALID)),
                "{v}"
            );
        }
        let fifty: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        assert_eq!(ask(&s, range(json!(fifty), "0", "1")).await.0, 200);

        // the write scope alone does not let an app read
        s.set_scopes([SCOPE_TASK]);
        let (_, v) = ask(&s, range(json!(["u1"]), "0", "1")).await;
        assert_eq!(v["code"].as_i64(), Some(codes::SCOPE_MISSING), "{v}");
    }
}
