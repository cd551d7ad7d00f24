//! `PATCH /open-apis/attendance/v1/leave_accrual_record/:leave_id?user_id_type=…` ("修改发放记录"):
//! the error table's checks (1220016 invalid param, 1220004 / 1220025 / 1220026 quantity, 1220027
//! reason, 1220003 date, 1220030 id length); the granting record is looked up among those the test
//! added (1220005 unknown, 1220006 other employee, 1220031 granted by the system); quantity and
//! expiration date are updated.

use clockbridge::hr::accruals::{check_quantity, PatchLeaveAccrualBody, USER_ID_TYPES};
use hyper::StatusCode;
use serde_json::json;

use crate::standin::platform::LEAVE_ACCRUAL_PATH;
use crate::standin::reply::{query_param, Reply};
use crate::standin::server::{lock, Shared};

fn accrual_err(code: i64, msg: &str) -> Reply {
    Reply::err(StatusCode::BAD_REQUEST, code, msg.to_string())
}

pub(super) fn accrual(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
    let leave_id = parts
        .uri
        .path()
        .strip_prefix(LEAVE_ACCRUAL_PATH)
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
