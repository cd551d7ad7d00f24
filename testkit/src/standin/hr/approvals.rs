//! `POST /open-apis/attendance/v1/user_approvals?employee_type=…` ("写入审批结果"): the body is
//! parsed strictly (unknown fields, wrong types: 1220001) and checked field by field with the
//! product's own rules (`clockbridge::hr::approvals`; any broken rule: 400 1225001 with
//! `{TripErrorRecords, OvertimeWorkErrorRecords, LeaveErrorRecords, OutErrorRecords}`); an unknown
//! user is 1220004; items are deduplicated by type and `idempotent_id` as [`DedupMode`] says
//! (silently, or 1220600 "the object already exists"), so a re-send after a lost reply stores
//! nothing twice; inserts only.

use clockbridge::hr::approvals::{check as check_approval, CreateUserApprovalBody};
use clockbridge::hr::Check;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::StoredApproval;
use crate::standin::config::DedupMode;
use crate::standin::platform::codes;
use crate::standin::reply::{param_invalid, query_param, Reply};
use crate::standin::server::{lock, Shared};

pub(super) fn approvals(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    log_id: &str,
) -> Reply {
    if !matches!(
        query_param(parts.uri.query(), "employee_type"),
        Some("employee_id" | "employee_no" | "open_id")
    ) {
        return param_invalid("employee_type invalid");
    }
    let parsed: CreateUserApprovalBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return param_invalid(e),
    };
    let Some(ua) = parsed.user_approval else {
        return param_invalid("user_approval is required");
    };
    let mut issues = Vec::new();
    check_approval(
        &mut Check {
            line: 0,
            issues: &mut issues,
        },
        "user_approval",
        &ua,
    );
    if !issues.is_empty() {
        let mut records = json!({"TripErrorRecords": "", "OvertimeWorkErrorRecords": "",
            "LeaveErrorRecords": "", "OutErrorRecords": ""});
        for i in &issues {
            let key = if i.message.contains(".trips") {
                "TripErrorRecords"
            } else if i.message.contains(".overtime_works") {
                "OvertimeWorkErrorRecords"
            } else if i.message.contains(".outs") {
                "OutErrorRecords"
            } else {
                "LeaveErrorRecords"
            };
            let prev = records[key].as_str().unwrap_or("").to_string();
            records[key] = json!(if prev.is_empty() {
                i.message.clone()
            } else {
                format!("{prev}; {}", i.message)
            });
        }
        let mut r = Reply::err(StatusCode::BAD_REQUEST, 1_225_001, "param is invalis");
        r.body["data"] = records;
        return r;
    }
    let user = ua.user_id.clone().unwrap_or_default();
    let date = ua.date.clone().unwrap_or_default();
    let mut g = lock(&shared.inner);
    let known = g.cfg.known_users.as_ref().is_none_or(|u| u.contains(&user));
    if !known || g.cfg.invalid_users.contains(&user) {
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::USER_INVALID,
            "param is invalid: user_id is not exist or does not have permission",
        );
    }
    let items: Vec<(String, Value)> = ua
        .items()
        .into_iter()
        .map(|i| {
            let v = serde_json::to_value(ua.with_single(i.clone())).unwrap_or_default();
            let list = ["outs", "leaves", "overtime_works", "trips"]
                .iter()
                .find_map(|l| v[l].get(0).cloned())
                .unwrap_or_default();
            (i.type_name().to_string(), list)
        })
        .collect();
    let key = |t: &str, v: &Value| {
        v.get("idempotent_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|id| format!("{t}:{id}"))
    };
    let dedup = g.cfg.dedup;
    if dedup == DedupMode::Conflict
        && items
            .iter()
            .filter_map(|(t, v)| key(t, v))
            .any(|k| g.hr.approval_counts.contains_key(&k))
    {
        g.stats.records_duplicate += 1;
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::GENERIC,
            "the object already exists",
        );
    }
    for (t, v) in items {
        let k = key(&t, &v);
        if dedup == DedupMode::Silent
            && k.as_ref()
                .is_some_and(|k| g.hr.approval_counts.contains_key(k))
        {
            g.stats.records_duplicate += 1;
            continue;
        }
        if let Some(k) = k {
            *g.hr.approval_counts.entry(k).or_insert(0) += 1;
        }
        g.hr.approvals.push(StoredApproval {
            item_type: t,
            user_id: user.clone(),
            date: date.clone(),
            item: v,
            log_id: log_id.to_string(),
        });
    }
    Reply::ok(json!({"code": 0, "msg": "success", "data": {"user_approval": ua}}))
}
