//! The stand-in's HR endpoints, with the rules of their pages:
//!
//! - `POST /open-apis/attendance/v1/user_approvals?employee_type=…` (`001_*`): the body is parsed
//!   strictly (unknown fields, wrong types: 1220001) and checked field by field (any broken rule:
//!   400 1225001 with `{TripErrorRecords, OvertimeWorkErrorRecords, LeaveErrorRecords,
//!   OutErrorRecords}`); an unknown user is 1220004; items are deduplicated by type and
//!   `idempotent_id` as [`DedupMode`] says (silently, or 1220600 "the object already exists"), so a
//!   re-send after a lost reply stores nothing twice; inserts only.
//! - `POST /open-apis/attendance/v1/archive_rule/upload_report?employee_type=…` (`000_*`): 1 to 50
//!   rows, 1 to 200 fields each, `yyyyMM` / `yyyyMMdd`; an unknown archive rule is 1220600
//!   "archive_rule_id not exist"; unknown members and field codes are listed in `invalid_member_id`
//!   / `invalid_code` and not stored; the rest is stored as absolute values per row.
//! - `PATCH /open-apis/attendance/v1/leave_accrual_record/:leave_id?user_id_type=…` (`004_*`): the
//!   error table's checks (1220016 invalid param, 1220004 / 1220025 / 1220026 quantity, 1220027
//!   reason, 1220003 date, 1220030 id length); the granting record is looked up among those the test
//!   added (1220005 unknown, 1220006 other employee, 1220031 granted by the system); quantity and
//!   expiration date are updated.
//!
//! Each endpoint has its own fault queue ([`Standin::push_fault_on`]; the sticky fault applies too),
//! its own sliding one-second rate limit, and can record the raw request bodies.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    bearer_token, codes, lock, param_invalid, query_param, rate_limited_reply, read_body,
    token_invalid_reply, too_large_reply, BodyError, DedupMode, DropConnection, Fault, Reply,
    Shared, Standin,
};
use crate::hr::accruals::{check_quantity, PatchLeaveAccrualBody, USER_ID_TYPES};
use crate::hr::approvals::{check as check_approval, CreateUserApprovalBody};
use crate::hr::reports::{check_group, check_row, UploadReportBody, MAX_ROWS_PER_CALL};
use crate::hr::{Check, Issue};

/// The stand-in's endpoints (for faults, rate windows and recorded bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Api {
    UserFlows,
    UserApprovals,
    UploadReport,
    LeaveAccrual,
}

/// One approval item written.
#[derive(Debug, Clone)]
pub struct StoredApproval {
    /// `leave`, `out`, `overtime` or `trip`.
    pub item_type: String,
    pub user_id: String,
    pub date: String,
    pub item: Value,
    pub log_id: String,
}

impl StoredApproval {
    pub fn idempotent_id(&self) -> Option<&str> {
        self.item.get("idempotent_id").and_then(Value::as_str)
    }
}

/// A leave granting record the stand-in knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccrualRecord {
    pub id: String,
    pub employment_id: String,
    pub leave_type_id: String,
    pub quantity: String,
    pub expiration_date: String,
    /// 1 system, 2 manual, 3 external system: records granted by the system cannot be edited.
    pub granted_by: i64,
    /// PATCH requests applied to it.
    pub patches: u64,
}

/// `(archive_rule_id, month, member_id, start_time, end_time)`.
pub type ReportKey = (String, String, String, String, String);

#[derive(Default)]
pub(super) struct HrState {
    approvals: Vec<StoredApproval>,
    approval_counts: HashMap<String, usize>,
    reports: BTreeMap<ReportKey, BTreeMap<String, String>>,
    report_rows_written: u64,
    archive_rules: Option<HashSet<String>>,
    report_codes: Option<HashSet<String>>,
    accruals: HashMap<String, AccrualRecord>,
    pub(super) faults: HashMap<Api, std::collections::VecDeque<Fault>>,
    windows: HashMap<Api, std::collections::VecDeque<std::time::Instant>>,
    pub(super) bodies: Option<Vec<(Api, String)>>,
    pub(super) requests: HashMap<Api, u64>,
}

impl Standin {
    /// Queues a fault for one future request to `api`.
    pub fn push_fault_on(&self, api: Api, f: Fault) {
        if api == Api::UserFlows {
            self.push_fault(f);
        } else {
            lock(&self.shared.inner)
                .hr
                .faults
                .entry(api)
                .or_default()
                .push_back(f);
        }
    }

    /// Starts (or stops) keeping the raw body of every write request.
    pub fn set_record_bodies(&self, on: bool) {
        lock(&self.shared.inner).hr.bodies = on.then(Vec::new);
    }

    /// The raw bodies kept since [`Standin::set_record_bodies`], in arrival order.
    pub fn recorded_bodies(&self) -> Vec<(Api, String)> {
        lock(&self.shared.inner)
            .hr
            .bodies
            .clone()
            .unwrap_or_default()
    }

    /// Requests received by `api` (every one, whatever its fate).
    pub fn requests_to(&self, api: Api) -> u64 {
        if api == Api::UserFlows {
            return self.stats().batch_requests;
        }
        lock(&self.shared.inner)
            .hr
            .requests
            .get(&api)
            .copied()
            .unwrap_or(0)
    }

    /// Every approval item written, in order.
    pub fn approvals(&self) -> Vec<StoredApproval> {
        lock(&self.shared.inner).hr.approvals.clone()
    }

    /// `TYPE:IDEMPOTENT_ID` -> times an approval item with it was written.
    pub fn approval_write_counts(&self) -> HashMap<String, usize> {
        lock(&self.shared.inner).hr.approval_counts.clone()
    }

    /// The archived report values stored, per row.
    pub fn report_values(&self) -> BTreeMap<ReportKey, BTreeMap<String, String>> {
        lock(&self.shared.inner).hr.reports.clone()
    }

    /// Report rows written (a row written twice counts twice).
    pub fn report_rows_written(&self) -> u64 {
        lock(&self.shared.inner).hr.report_rows_written
    }

    /// `None`: every archive rule exists; `Some(set)`: only these.
    pub fn set_archive_rules(&self, rules: Option<HashSet<String>>) {
        lock(&self.shared.inner).hr.archive_rules = rules;
    }

    /// `None`: every field code exists; `Some(set)`: only these.
    pub fn set_report_codes(&self, codes: Option<HashSet<String>>) {
        lock(&self.shared.inner).hr.report_codes = codes;
    }

    /// Adds (or replaces) a granting record.
    pub fn add_accrual_record(&self, r: AccrualRecord) {
        lock(&self.shared.inner).hr.accruals.insert(r.id.clone(), r);
    }

    /// A granting record as it is now.
    pub fn accrual_record(&self, id: &str) -> Option<AccrualRecord> {
        lock(&self.shared.inner).hr.accruals.get(id).cloned()
    }
}

/// The reply an error fault gives (`None` for faults that change how a request is handled).
pub(super) fn fault_reply(shared: &Shared, f: &Fault) -> Option<Reply> {
    Some(match f {
        Fault::ServerError => Reply::err(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal server error",
        ),
        Fault::NoRowAffected => {
            Reply::err(StatusCode::BAD_REQUEST, codes::GENERIC, "no row affected")
        }
        Fault::RateLimited { reset_secs } => {
            let mut g = lock(&shared.inner);
            g.stats.injected_rate_limited += 1;
            rate_limited_reply(g.cfg.rate_limit_per_sec, *reset_secs)
        }
        Fault::TokenInvalid => token_invalid_reply(),
        Fault::ScopeMissing => Reply::err(
            StatusCode::BAD_REQUEST,
            codes::SCOPE_MISSING,
            "Access denied. One of the following scopes is required: [attendance:task]. \
             Please enable one of the scopes for the app.",
        ),
        Fault::NoPermission => Reply::err(
            StatusCode::BAD_REQUEST,
            codes::NO_PERMISSION,
            "no permission",
        ),
        Fault::Custom { status, code, msg } => Reply::err(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            *code,
            msg.clone(),
        ),
        Fault::LoseResponseAfterApply | Fault::CloseBeforeApply | Fault::Delay(_) => return None,
    })
}

/// Handles a request to one of the HR endpoints.
pub(super) async fn handle_hr(
    shared: &Shared,
    api: Api,
    req: Request<Incoming>,
    log_id: &str,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let fault = {
        let mut g = lock(&shared.inner);
        *g.hr.requests.entry(api).or_default() += 1;
        let fault =
            g.hr.faults
                .get_mut(&api)
                .and_then(|q| q.pop_front())
                .or_else(|| g.sticky.clone());
        if fault.is_some() {
            g.stats.injected_faults += 1;
        }
        fault
    };
    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    if let Ok(b) = &body {
        if let Some(list) = lock(&shared.inner).hr.bodies.as_mut() {
            list.push((api, String::from_utf8_lossy(b).into_owned()));
        }
    }
    let mut lose = false;
    let reply = match fault {
        Some(Fault::CloseBeforeApply) => {
            lock(&shared.inner).stats.lost_responses += 1;
            return Err(DropConnection);
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            process(shared, api, &parts, body, log_id)
        }
        Some(Fault::LoseResponseAfterApply) => {
            lose = true;
            process(shared, api, &parts, body, log_id)
        }
        Some(f) => fault_reply(shared, &f).unwrap_or_else(|| param_invalid("fault")),
        None => process(shared, api, &parts, body, log_id),
    };
    let latency = lock(&shared.inner).cfg.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if lose {
        lock(&shared.inner).stats.lost_responses += 1;
        return Err(DropConnection);
    }
    Ok(shared.finish(reply, log_id))
}

/// Token and the endpoint's own sliding one-second rate limit.
fn admit(shared: &Shared, parts: &hyper::http::request::Parts, api: Api) -> Option<Reply> {
    let Some(token) = bearer_token(parts) else {
        return Some(Reply::err(
            StatusCode::BAD_REQUEST,
            codes::TOKEN_MISSING,
            "Missing access token for authorization. Please make a request with token attached.",
        ));
    };
    let mut g = lock(&shared.inner);
    let now = std::time::Instant::now();
    if g.tokens.get(token).is_none_or(|expiry| *expiry <= now) {
        return Some(token_invalid_reply());
    }
    let limit = g.cfg.rate_limit_per_sec;
    let window = g.hr.windows.entry(api).or_default();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
    {
        window.pop_front();
    }
    if limit > 0 && window.len() >= limit as usize {
        g.stats.rate_limited += 1;
        return Some(rate_limited_reply(limit, 1));
    }
    window.push_back(now);
    None
}

fn process(
    shared: &Shared,
    api: Api,
    parts: &hyper::http::request::Parts,
    body: Result<Bytes, BodyError>,
    log_id: &str,
) -> Reply {
    if let Some(r) = admit(shared, parts, api) {
        return r;
    }
    let body = match body {
        Ok(b) => b,
        Err(_) => return too_large_reply(),
    };
    match api {
        Api::UserApprovals => approvals(shared, parts, &body, log_id),
        Api::UploadReport => report(shared, parts, &body),
        Api::LeaveAccrual | Api::UserFlows => accrual(shared, parts, &body),
    }
}

fn first_issue(issues: &[Issue]) -> String {
    issues
        .first()
        .map(|i| i.message.clone())
        .unwrap_or_default()
}

fn approvals(
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

fn report(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
    if !matches!(
        query_param(parts.uri.query(), "employee_type"),
        Some("employee_id" | "employee_no")
    ) {
        return param_invalid("employee_type invalid");
    }
    let b: UploadReportBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return param_invalid(e),
    };
    let rows = b.archive_report_datas.clone().unwrap_or_default();
    let mut issues = Vec::new();
    {
        let mut c = Check {
            line: 0,
            issues: &mut issues,
        };
        let (rule, month, op) = (
            b.archive_rule_id.clone().unwrap_or_default(),
            b.month.clone().unwrap_or_default(),
            b.operator_id.clone().unwrap_or_default(),
        );
        check_group(&mut c, &rule, &month, &op);
        if rows.is_empty() || rows.len() > MAX_ROWS_PER_CALL {
            c.fail("archive_report_datas", "must hold 1 to 50 rows");
        }
        for (i, r) in rows.iter().enumerate() {
            check_row(&mut c, &format!("archive_report_datas[{i}]"), r);
        }
    }
    if !issues.is_empty() {
        return param_invalid(first_issue(&issues));
    }
    let rule = b.archive_rule_id.unwrap_or_default();
    let month = b.month.unwrap_or_default();
    let mut g = lock(&shared.inner);
    if g.hr
        .archive_rules
        .as_ref()
        .is_some_and(|r| !r.contains(&rule))
    {
        return Reply::err(
            StatusCode::BAD_REQUEST,
            codes::GENERIC,
            "archive_rule_id not exist",
        );
    }
    let mut invalid_members: Vec<String> = Vec::new();
    let mut invalid_codes: Vec<String> = Vec::new();
    for r in rows {
        let member = r.member_id.unwrap_or_default();
        if g.cfg
            .known_users
            .as_ref()
            .is_some_and(|u| !u.contains(&member))
        {
            if !invalid_members.contains(&member) {
                invalid_members.push(member);
            }
            continue;
        }
        let key = (
            rule.clone(),
            month.clone(),
            member,
            r.start_time.unwrap_or_default(),
            r.end_time.unwrap_or_default(),
        );
        let mut fields = Vec::new();
        for f in r.field_datas.unwrap_or_default() {
            let code = f.code.unwrap_or_default();
            if g.hr
                .report_codes
                .as_ref()
                .is_some_and(|c| !c.contains(&code))
            {
                if !invalid_codes.contains(&code) {
                    invalid_codes.push(code);
                }
                continue;
            }
            fields.push((code, f.value.unwrap_or_default()));
        }
        let stored = g.hr.reports.entry(key).or_default();
        for (c, v) in fields {
            stored.insert(c, v);
        }
        g.hr.report_rows_written += 1;
    }
    Reply::ok(json!({"code": 0, "msg": "success",
        "data": {"invalid_code": invalid_codes, "invalid_member_id": invalid_members}}))
}

fn accrual_err(code: i64, msg: &str) -> Reply {
    Reply::err(StatusCode::BAD_REQUEST, code, msg.to_string())
}

fn accrual(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
    let leave_id = parts
        .uri
        .path()
        .strip_prefix(crate::feishu::LEAVE_ACCRUAL_PATH)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    let uid_type = query_param(parts.uri.query(), "user_id_type").unwrap_or("open_id");
    if leave_id.is_empty() || leave_id.contains('/') || !USER_ID_TYPES.contains(&uid_type) {
        return accrual_err(1_220_016, "Invalid param");
    }
    let b: PatchLeaveAccrualBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(_) => return accrual_err(1_220_016, "Invalid param"),
    };
    let (Some(id), Some(emp), Some(lt)) = (
        b.leave_granting_record_id.as_deref(),
        b.employment_id.as_deref(),
        b.leave_type_id.as_deref(),
    ) else {
        return accrual_err(1_220_016, "Invalid param");
    };
    if id.chars().count() > 64 {
        return accrual_err(
            1_220_030,
            "The length of the granted unique ID cannot exceed 64",
        );
    }
    if let Some(q) = &b.quantity {
        if let Err(p) = check_quantity(q) {
            return accrual_err(p.code(), p.rule());
        }
    }
    if b.reason
        .iter()
        .flatten()
        .any(|t| t.value.as_deref().unwrap_or("").chars().count() > 3000)
    {
        return accrual_err(
            1_220_027,
            "The length of the granting reason cannot exceed 3000",
        );
    }
    if let Some(d) = &b.expiration_date {
        if d.len() != 10 || chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
            return accrual_err(1_220_003, "Invalid effective date");
        }
    }
    let mut g = lock(&shared.inner);
    let Some(rec) = g.hr.accruals.get_mut(id) else {
        return accrual_err(1_220_005, "Accessed data object not found");
    };
    if rec.employment_id != emp {
        return accrual_err(1_220_006, "Employment not found");
    }
    if rec.leave_type_id != lt {
        return accrual_err(1_220_005, "Accessed data object not found");
    }
    if rec.granted_by == 1 {
        return accrual_err(
            1_220_031,
            "This granting record cannot be edited or deleted",
        );
    }
    if let Some(q) = b.quantity {
        rec.quantity = q;
    }
    if let Some(d) = b.expiration_date {
        rec.expiration_date = d;
    }
    rec.patches += 1;
    Reply::ok(json!({"code": 0, "msg": "success", "data": {"record": {
        "id": rec.id, "employment_id": rec.employment_id, "leave_type_id": rec.leave_type_id,
        "granting_quantity": rec.quantity, "granting_unit": 1, "expiration_date": rec.expiration_date,
        "granted_by": rec.granted_by, "reason": b.reason,
    }}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::{StandinConfig, TOKEN_PATH};

    async fn setup() -> (Standin, reqwest::Client, String) {
        let s = Standin::start(StandinConfig::default()).await.unwrap();
        let c = reqwest::Client::new();
        let v: Value = c
            .post(format!("{}{TOKEN_PATH}", s.base_url()))
            .json(&json!({"app_id": "cli_standin", "app_secret": "standin-secret"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = v["tenant_access_token"].as_str().unwrap().to_string();
        (s, c, t)
    }

    async fn call(
        c: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        t: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = c
            .request(method, url)
            .bearer_auth(t)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn approvals_are_checked_deduplicated_and_stored() {
        let (s, c, t) = setup().await;
        let url = format!(
            "{}{}?employee_type=employee_id",
            s.base_url(),
            crate::feishu::USER_APPROVALS_PATH
        );
        let out = json!({"uniq_id": "9496E43696967658A512969523E89870", "unit": 1, "interval": 3600,
            "start_time": "2021-01-04 09:00:00", "end_time": "2021-01-04 19:00:00",
            "i18n_names": {"ch": "外出"}, "default_locale": "ch", "reason": "r", "idempotent_id": "o1"});
        let (st, v) = call(
            &c,
            reqwest::Method::POST,
            url.clone(),
            &t,
            json!({"user_approval": {"user_id": "u", "date": "20210104", "outs": [out.clone()]}}),
        )
        .await;
        assert_eq!((st, v["code"].as_i64()), (400, Some(1_225_001)));
        assert!(v["data"]["OutErrorRecords"]
            .as_str()
            .unwrap()
            .contains("shorter than 14"));
        let mut ok = out;
        ok["uniq_id"] = json!("city");
        let body = json!({"user_approval": {"user_id": "u", "date": "20210104", "outs": [ok]}});
        for _ in 0..2 {
            let (st, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body.clone()).await;
            assert_eq!((st, v["code"].as_i64()), (200, Some(0)));
        }
        assert_eq!(s.approvals().len(), 1);
        assert_eq!(s.approval_write_counts()["out:o1"], 1);
        s.set_dedup(DedupMode::Conflict);
        let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body).await;
        assert_eq!(v["msg"], "the object already exists");
        let (_, v) = call(
            &c,
            reqwest::Method::POST,
            url,
            &t,
            json!({"user_approval": {"colour": 1}}),
        )
        .await;
        assert_eq!(v["code"], codes::PARAM_INVALID);
        assert_eq!(s.requests_to(Api::UserApprovals), 5);
    }

    #[tokio::test]
    async fn report_replies_list_unknown_members_and_codes() {
        let (s, c, t) = setup().await;
        s.set_known_users(Some(HashSet::from(["m1".to_string()])));
        s.set_report_codes(Some(HashSet::from(["a".to_string()])));
        s.set_archive_rules(Some(HashSet::from(["1".to_string()])));
        let url = format!(
            "{}{}?employee_type=employee_id",
            s.base_url(),
            crate::feishu::UPLOAD_REPORT_PATH
        );
        let row = |m: &str| {
            json!({"member_id": m, "start_time": "20240901", "end_time": "20240930",
            "field_datas": [{"code": "a", "value": "1"}, {"code": "zz", "value": "2"}]})
        };
        let body = json!({"month": "202409", "operator_id": "op", "archive_rule_id": "1",
            "archive_report_datas": [row("m1"), row("m9")]});
        let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, body.clone()).await;
        assert_eq!(v["code"], 0);
        assert_eq!(v["data"]["invalid_member_id"], json!(["m9"]));
        assert_eq!(v["data"]["invalid_code"], json!(["zz"]));
        let stored = s.report_values();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored.values().next().unwrap().len(), 1);
        let mut other = body.clone();
        other["archive_rule_id"] = json!("2");
        let (_, v) = call(&c, reqwest::Method::POST, url.clone(), &t, other).await;
        assert_eq!(v["msg"], "archive_rule_id not exist");
        let mut big = body;
        big["archive_report_datas"] = Value::Array((0..51).map(|_| row("m1")).collect());
        let (_, v) = call(&c, reqwest::Method::POST, url, &t, big).await;
        assert_eq!(v["code"], codes::PARAM_INVALID);
    }

    #[tokio::test]
    async fn accrual_patches_follow_the_error_table() {
        let (s, c, t) = setup().await;
        s.add_accrual_record(AccrualRecord {
            id: "g1".into(),
            employment_id: "e1".into(),
            leave_type_id: "lt".into(),
            quantity: "1".into(),
            granted_by: 2,
            ..AccrualRecord::default()
        });
        let url = |q: &str| {
            format!(
                "{}{}/lt?user_id_type={q}",
                s.base_url(),
                crate::feishu::LEAVE_ACCRUAL_PATH
            )
        };
        let body = |id: &str, q: &str| {
            json!({"leave_granting_record_id": id, "employment_id": "e1",
            "leave_type_id": "lt", "reason": [{"lang": "zh_CN", "value": "x"}], "quantity": q})
        };
        let cases = [
            (url("user_id"), body("g1", "12000"), 1_220_025),
            (url("user_id"), body("g1", "1.1234567"), 1_220_026),
            (url("user_id"), body("g1", "x"), 1_220_004),
            (url("user_id"), body("nope", "1"), 1_220_005),
            (url("employee_id"), body("g1", "1"), 1_220_016),
        ];
        for (u, b, code) in cases {
            let (st, v) = call(&c, reqwest::Method::PATCH, u, &t, b).await;
            assert_eq!((st, v["code"].as_i64()), (400, Some(code)), "{v}");
        }
        let (_, v) = call(
            &c,
            reqwest::Method::PATCH,
            url("user_id"),
            &t,
            body("g1", "2.5"),
        )
        .await;
        assert_eq!(v["code"], 0);
        assert_eq!(v["data"]["record"]["granting_quantity"], "2.5");
        assert_eq!(s.accrual_record("g1").unwrap().patches, 1);
    }
}
