//! `POST /open-apis/attendance/v1/user_flows/batch_create?employee_type=…`, after the fault, the
//! token and the rate limit ([`super::admit`]), checked in order: `employee_type` is `employee_id`
//! or `employee_no` (1220001); 1..=50 records (1220600 "operate too much flow" above 50, 1220001 for
//! none); the five required non-empty strings per record and `check_time` as Unix seconds not before
//! 2022-01-01 +08:00 (1220001, the whole batch refused); users the platform refuses at validation
//! (1220004, the whole batch); deduplication by `idempotent_id` ([`DedupMode`]); unknown users
//! listed in `msg` as `[userid-creatorid, …]` while the others are stored. A batch is applied
//! atomically (one lock).
//!
//! `GET /open-apis/attendance/v1/user_flows/:user_flow_id?employee_type=…` ("查询打卡流水", the read
//! of one record; `clockbridge check-config --online` makes it): after the same admission (token,
//! IP allow-list, one of `attendance:task` / `attendance:task:readonly`, rate limit), `employee_type`
//! is checked (1220001), then the record is looked for. The stand-in gives its records no ids, so
//! no id names one: the answer is the integration guide's "record not found" (HTTP 400, 1220600,
//! "rule does not exist", i.e. 访问记录不存在).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::config::DedupMode;
use super::platform::{codes, MAX_RECORDS_PER_BATCH, MIN_CHECK_TIME, USER_FLOWS_PATH};
use super::reply::{param_invalid, query_param, too_large_reply, Reply};
use super::server::{lock, BodyError, Shared};
use super::Standin;

/// Required non-empty string fields of a `user_flow`, in the order they are checked.
const REQUIRED_FIELDS: [&str; 5] = [
    "user_id",
    "creator_id",
    "location_name",
    "check_time",
    "comment",
];

/// One record written by batch_create.
#[derive(Clone, Debug)]
pub struct StoredFlow {
    /// The record as the client sent it.
    pub record: Value,
    /// When it was written.
    pub stored_at: SystemTime,
    /// `X-Tt-Logid` of the request that wrote it.
    pub log_id: String,
    /// The request's `employee_type` (`employee_id` or `employee_no`).
    pub employee_type: String,
    /// Whether the platform counts it: `user_flows/query` returns valid flows only (a test makes
    /// one invalid with [`Standin::invalidate_flow`]).
    pub valid: bool,
    /// This flow as `user_flows/query` returns it, written once (at the first query, or when
    /// seeded) instead of at every query: the record is never changed once stored.
    pub(crate) query_text: Option<Box<str>>,
}

impl StoredFlow {
    /// The record's `idempotent_id`, if it has a non-empty one.
    pub fn idempotent_id(&self) -> Option<&str> {
        idempotent_id_of(&self.record)
    }
}

impl Standin {
    /// Every record written, in order of writing.
    pub fn stored(&self) -> Vec<StoredFlow> {
        lock(&self.shared.inner).flows.clone()
    }

    /// Number of records written so far.
    pub fn stored_len(&self) -> usize {
        lock(&self.shared.inner).flows.len()
    }

    /// idempotent_id -> number of times a record with it was written (records without one are
    /// not in it).
    pub fn write_counts(&self) -> HashMap<String, usize> {
        lock(&self.shared.inner).counts.clone()
    }

    /// idempotent_id -> when a record with it was first written (records without one are not in
    /// it). Cheaper than [`Standin::stored`] for large runs: no record is cloned.
    pub fn store_times(&self) -> HashMap<String, SystemTime> {
        let g = lock(&self.shared.inner);
        let mut times = HashMap::with_capacity(g.counts.len());
        for f in &g.flows {
            if let Some(id) = f.idempotent_id() {
                times.entry(id.to_owned()).or_insert(f.stored_at);
            }
        }
        times
    }

    /// Resolves once at least `n` records are stored.
    pub async fn wait_stored(&self, n: usize) {
        let mut rx = self.shared.stored_tx.subscribe();
        // The sender lives in `self.shared`, so this cannot fail while `self` is borrowed.
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Resolves once at least `n` batch_create requests have been received.
    pub async fn wait_requests(&self, n: u64) {
        let mut rx = self.shared.requests_tx.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

fn idempotent_id_of(record: &Value) -> Option<&str> {
    record
        .get("idempotent_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks one record; `Err` is the detail after `flow_records[i].`.
fn check_record(record: &Value) -> Result<(), String> {
    let Some(obj) = record.as_object() else {
        return Err(" must be an object".to_owned());
    };
    for field in REQUIRED_FIELDS {
        match obj.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => return Err(format!(".{field} is empty")),
            Some(_) => return Err(format!(".{field} must be a string")),
            None => return Err(format!(".{field} is required")),
        }
    }
    let check_time = obj.get("check_time").and_then(Value::as_str).unwrap_or("");
    let valid_digits = !check_time.is_empty() && check_time.bytes().all(|b| b.is_ascii_digit());
    match check_time.parse::<u64>() {
        Ok(t) if valid_digits && t >= MIN_CHECK_TIME => {}
        Ok(_) if valid_digits => {
            return Err(format!(
                ".check_time is before 2022-01-01 +08:00 ({MIN_CHECK_TIME}): only later punches can be imported"
            ))
        }
        _ => return Err(".check_time must be Unix seconds as a decimal string".to_owned()),
    }
    match obj.get("idempotent_id") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(".idempotent_id must be a string".to_owned()),
    }
}

/// Steps d to i of the batch_create rules (the fault, the token and the rate limit come first).
pub(super) fn apply(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Result<Bytes, BodyError>,
    log_id: &str,
) -> Reply {
    // d. employee_type
    let employee_type = match query_param(parts.uri.query(), "employee_type") {
        Some(t @ ("employee_id" | "employee_no")) => t.to_owned(),
        _ => return param_invalid("employee_type invalid"),
    };

    // e. body
    let body = match body {
        Ok(b) => b,
        Err(_) => return too_large_reply(),
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return param_invalid("request body is not valid JSON"),
    };
    let Some(records) = parsed.get("flow_records").and_then(Value::as_array) else {
        return param_invalid("flow_records is required and must be an array");
    };
    if records.is_empty() {
        return param_invalid("flow_records is empty");
    }
    if records.len() > MAX_RECORDS_PER_BATCH {
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::GENERIC,
            "operate too much flow",
        );
    }

    // f. every record valid, or nothing applied
    for (i, record) in records.iter().enumerate() {
        if let Err(detail) = check_record(record) {
            return param_invalid(format!("flow_records[{i}]{detail}"));
        }
    }
    {
        let g = lock(&shared.inner);
        for (i, record) in records.iter().enumerate() {
            let user = record.get("user_id").and_then(Value::as_str).unwrap_or("");
            if g.cfg.invalid_users.contains(user) {
                return Reply::err(
                    StatusCode::BAD_REQUEST,
                    codes::USER_INVALID,
                    format!("param is invalid: flow_records[{i}].user_id is not exist or does not have permission"),
                );
            }
        }
    }

    // g, h, i under one lock
    let stored_total;
    let reply = {
        let mut g = lock(&shared.inner);
        let dedup = g.cfg.dedup;
        if dedup == DedupMode::Conflict {
            let mut seen = HashSet::new();
            let conflicts = records
                .iter()
                .filter_map(idempotent_id_of)
                .filter(|id| !seen.insert(*id) || g.counts.contains_key(*id))
                .count();
            if conflicts > 0 {
                g.stats.records_duplicate += conflicts as u64;
                return Reply::err(
                    StatusCode::BAD_REQUEST,
                    codes::GENERIC,
                    "the object already exists",
                );
            }
        }
        let stored_at = SystemTime::now();
        let mut answered = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        for record in records {
            let id = idempotent_id_of(record);
            // a re-send of a flow the platform judged invalid replaces it (what a re-import does)
            if let Some(id) = id {
                if g.invalid.remove(id) {
                    g.flows.retain(|f| f.idempotent_id() != Some(id));
                    g.by_user = None;
                    g.counts.remove(id);
                }
            }
            if dedup == DedupMode::Silent && id.is_some_and(|id| g.counts.contains_key(id)) {
                g.stats.records_duplicate += 1;
                answered.push(record.clone());
                continue;
            }
            let user = record.get("user_id").and_then(Value::as_str).unwrap_or("");
            let known = match &g.cfg.known_users {
                None => true,
                Some(users) => users.contains(user),
            };
            if !known {
                let creator = record
                    .get("creator_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                failed.push(format!("{user}-{creator}"));
                g.stats.records_unknown_user += 1;
                continue;
            }
            if let Some(id) = id {
                *g.counts.entry(id.to_owned()).or_insert(0) += 1;
            }
            g.flows.push(StoredFlow {
                record: record.clone(),
                stored_at,
                log_id: log_id.to_owned(),
                employee_type: employee_type.clone(),
                valid: true,
                query_text: None,
            });
            g.stats.records_stored += 1;
            answered.push(record.clone());
        }
        stored_total = g.flows.len();
        let msg = if failed.is_empty() {
            "success".to_owned()
        } else {
            format!("[{}]", failed.join(", "))
        };
        Reply::ok(json!({
            "code": 0,
            "msg": msg,
            "data": { "flow_records": answered },
        }))
    };
    shared.stored_tx.send_replace(stored_total);
    reply
}

/// The `:user_flow_id` of a `GET user_flows/:user_flow_id` path: digits (the platform's ids are
/// decimal numbers), so that no other path under `user_flows/` (such as `batch_create`) is taken
/// for one.
pub(super) fn record_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix(USER_FLOWS_PATH)?.strip_prefix('/')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// `GET user_flows/:user_flow_id`, once admitted: `employee_type`, then the record, which the
/// stand-in never has (see the module doc).
pub(super) fn get(parts: &hyper::http::request::Parts) -> Reply {
    match query_param(parts.uri.query(), "employee_type") {
        Some("employee_id" | "employee_no") => {}
        _ => return param_invalid("employee_type invalid"),
    }
    Reply::err(
        StatusCode::BAD_REQUEST,
        codes::GENERIC,
        "rule does not exist",
    )
}
