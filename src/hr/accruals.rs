//! Leave accrual updates for `PATCH /open-apis/attendance/v1/leave_accrual_record/:leave_id`
//! (the open platform page "Modify leave accrual record"; the rules are written out in README.md, "Leave accruals"): the typed body, its rules (the page's error table: quantity within
//! ±9999 with at most 6 decimals, reason at most 3000 characters, granting record id at most 64...),
//! and one queue record per update.
//!
//! A PATCH sets absolute values (quantity, expiration date), so a re-send is harmless. The queue's
//! ordering key is `LEAVE_ID/GRANTING_RECORD_ID`: a newer update of a granting record is never sent
//! before an older one.
//!
//! Accepted input: the request body plus `leave_id` (the path parameter; default: `leave_type_id`)
//! and `user_id_type` (the query parameter; default `open_id`, as on the page), as JSON or JSON Lines;
//! or CSV with the columns `leave_granting_record_id, employment_id, leave_type_id, quantity,
//! expiration_date, reason, reason_lang, time_offset, leave_id, user_id_type`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::input::Unit;
use super::{all_or_issues, cell_int, derive_key, from_json, hr_record, Check, Issue};
use crate::queue::NewRecord;

/// The queue kind of accrual updates (one PATCH each), sent by `crate::feishu::lanes::accruals`.
pub const KIND: &str = "leave_accrual";
/// The queue's `device_id` of accrual rows.
pub const SOURCE: &str = "hr-accruals";
/// `user_id_type` values the page lists.
pub const USER_ID_TYPES: [&str; 4] = ["open_id", "union_id", "user_id", "people_corehr_id"];
/// Longest granting reason (1220027).
pub const MAX_REASON_CHARS: usize = 3000;
/// Longest granting record id (1220030).
pub const MAX_RECORD_ID_CHARS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchLeaveAccrualBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_granting_record_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_type_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Vec<LangText>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What one queue row holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedAccrual {
    pub leave_id: String,
    pub user_id_type: String,
    pub body: PatchLeaveAccrualBody,
}

/// Why a quantity is refused, with the platform's code for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityProblem {
    /// 1220004: not a decimal number.
    NotANumber,
    /// 1220025: outside -9999..=9999.
    Range,
    /// 1220026: more than 6 decimals.
    Decimals,
}

impl QuantityProblem {
    pub fn code(self) -> i64 {
        match self {
            QuantityProblem::NotANumber => 1_220_004,
            QuantityProblem::Range => 1_220_025,
            QuantityProblem::Decimals => 1_220_026,
        }
    }
    pub fn rule(self) -> &'static str {
        match self {
            QuantityProblem::NotANumber => "must be a decimal number such as \"2.5\" (1220004)",
            QuantityProblem::Range => "must be within -9999 to 9999 (1220025)",
            QuantityProblem::Decimals => "may have at most 6 decimal places (1220026)",
        }
    }
}

/// Checks a granting quantity.
pub fn check_quantity(q: &str) -> Result<(), QuantityProblem> {
    let digits = q.strip_prefix('-').unwrap_or(q);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !plain(int) || !plain(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err(QuantityProblem::NotANumber);
    }
    if frac.len() > 6 {
        return Err(QuantityProblem::Decimals);
    }
    let v: f64 = q.parse().map_err(|_| QuantityProblem::NotANumber)?;
    if v.abs() > 9999.0 {
        return Err(QuantityProblem::Range);
    }
    Ok(())
}

/// An id used in the request's path or query: letters, digits, `_` and `-` only.
fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks one update.
pub fn check(c: &mut Check<'_>, q: &QueuedAccrual) {
    let b = &q.body;
    if let Some(id) = c.required("leave_granting_record_id", &b.leave_granting_record_id) {
        if id.chars().count() > MAX_RECORD_ID_CHARS {
            c.fail(
                "leave_granting_record_id",
                "is longer than 64 characters (1220030)",
            );
        }
    }
    c.required("employment_id", &b.employment_id);
    c.required("leave_type_id", &b.leave_type_id);
    if !path_safe(&q.leave_id) {
        c.fail(
            "leave_id",
            format!(
                "{:?} must be a leave type id (letters, digits, _ and -)",
                q.leave_id
            ),
        );
    }
    if !USER_ID_TYPES.contains(&q.user_id_type.as_str()) {
        c.fail(
            "user_id_type",
            format!(
                "{:?} is not one of open_id, union_id, user_id, people_corehr_id",
                q.user_id_type
            ),
        );
    }
    match b.reason.as_deref() {
        None | Some([]) => c.fail("reason", "is required: at least one {lang, value}"),
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                c.required(&format!("reason[{i}].lang"), &t.lang);
                if let Some(v) = c.required(&format!("reason[{i}].value"), &t.value) {
                    if v.chars().count() > MAX_REASON_CHARS {
                        c.fail(
                            &format!("reason[{i}].value"),
                            "is longer than 3000 characters (1220027)",
                        );
                    }
                }
            }
        }
    }
    if let Some(t) = b.time_offset {
        if !(-720..=840).contains(&t) {
            c.fail(
                "time_offset",
                format!("{t} is not a UTC offset in minutes (-720 to 840; UTC+8 is 480)"),
            );
        }
    }
    if let Some(d) = &b.expiration_date {
        c.iso_date("expiration_date", d);
    }
    if let Some(q) = &b.quantity {
        if let Err(p) = check_quantity(q) {
            c.fail("quantity", format!("{q:?} {}", p.rule()));
        }
    }
    if b.quantity.is_none() && b.expiration_date.is_none() {
        c.fail(
            "quantity",
            "nothing to change: give quantity, expiration_date or both (only these can be updated)",
        );
    }
}

fn unit_value(unit: &Unit, c: &mut Check<'_>) -> Option<Map<String, Value>> {
    match unit {
        Unit::Json {
            value: Value::Object(o),
            ..
        } => Some(o.clone()),
        Unit::Json { .. } => {
            c.fail("record", "must be a JSON object");
            None
        }
        Unit::Csv { row, .. } => {
            let mut o = Map::new();
            let mut reason = None;
            let mut lang = "zh_CN".to_string();
            let before = c.issues.len();
            for (k, v) in row {
                match k.as_str() {
                    "leave_granting_record_id"
                    | "employment_id"
                    | "leave_type_id"
                    | "quantity"
                    | "expiration_date"
                    | "leave_id"
                    | "user_id_type" => {
                        o.insert(k.clone(), Value::String(v.clone()));
                    }
                    "time_offset" => {
                        if let Some(n) = cell_int(c, k, v) {
                            o.insert(k.clone(), n);
                        }
                    }
                    "reason" => reason = Some(v.clone()),
                    "reason_lang" => lang = v.clone(),
                    _ => c.fail(
                        &format!("column {k}"),
                        "is not a column of the leave-accruals CSV layout (see the README)",
                    ),
                }
            }
            if let Some(r) = reason {
                o.insert(
                    "reason".into(),
                    serde_json::json!([{"lang": lang, "value": r}]),
                );
            }
            (c.issues.len() == before).then_some(o)
        }
    }
}

/// Validates every unit and builds one queue record per update: all, or every problem.
pub fn records(units: &[Unit]) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    for unit in units {
        let mut c = Check {
            line: unit.line(),
            issues: &mut issues,
        };
        let Some(mut obj) = unit_value(unit, &mut c) else {
            continue;
        };
        let mut take = |k: &str| match obj.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("{k}: {v} must be a string")),
        };
        let (leave_id, user_id_type) = match (take("leave_id"), take("user_id_type")) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                c.issues.push(Issue::new(c.line, e));
                continue;
            }
        };
        // a number is accepted for quantity and sent as the string the page asks for
        if let Some(Value::Number(n)) = obj.get("quantity") {
            let s = n.to_string();
            obj.insert("quantity".into(), Value::String(s));
        }
        let body: PatchLeaveAccrualBody = match from_json(Value::Object(obj), "") {
            Ok(b) => b,
            Err(e) => {
                c.issues.push(Issue::new(c.line, e));
                continue;
            }
        };
        let q = QueuedAccrual {
            leave_id: leave_id
                .or_else(|| body.leave_type_id.clone())
                .unwrap_or_default(),
            user_id_type: user_id_type.unwrap_or_else(|| "open_id".into()),
            body,
        };
        let before = c.issues.len();
        check(&mut c, &q);
        if c.issues.len() > before {
            continue;
        }
        let payload = serde_json::to_string(&q).unwrap_or_default();
        let record = q.body.leave_granting_record_id.clone().unwrap_or_default();
        let employment = q.body.employment_id.clone().unwrap_or_default();
        out.push(hr_record(
            KIND,
            derive_key(&["clockbridge-accrual-v1", &payload]),
            // the ordering key: the granting record this update overwrites
            format!("{}/{record}", q.leave_id),
            SOURCE.to_string(),
            &employment,
            chrono::Utc::now().timestamp(),
            payload,
        ));
    }
    all_or_issues(out, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upd() -> Value {
        json!({"leave_granting_record_id": "6893014062142064135", "employment_id": "6982509313466189342",
            "leave_type_id": "7111688079785723436", "reason": [{"lang": "zh_CN", "value": "test"}],
            "time_offset": 480, "expiration_date": "2020-01-01", "quantity": "1"})
    }

    fn problems(v: Value) -> Vec<String> {
        records(&[Unit::Json { line: 4, value: v }])
            .unwrap_err()
            .into_iter()
            .map(|i| i.message)
            .collect()
    }

    #[test]
    fn the_pages_example_is_accepted() {
        let r = records(&[Unit::Json {
            line: 1,
            value: upd(),
        }])
        .unwrap();
        let q: QueuedAccrual = serde_json::from_str(&r[0].payload).unwrap();
        assert_eq!(q.leave_id, "7111688079785723436");
        assert_eq!(q.user_id_type, "open_id");
        assert_eq!(r[0].ukey, "7111688079785723436/6893014062142064135");
    }

    #[test]
    fn quantity_rules_follow_the_error_table() {
        assert_eq!(check_quantity("2.5"), Ok(()));
        assert_eq!(check_quantity("-9999"), Ok(()));
        assert_eq!(check_quantity("0.123456"), Ok(()));
        assert_eq!(check_quantity("10000"), Err(QuantityProblem::Range));
        assert_eq!(check_quantity("-9999.5"), Err(QuantityProblem::Range));
        assert_eq!(check_quantity("0.1234567"), Err(QuantityProblem::Decimals));
        for bad in ["", "abc", "1e3", "1.", ".5", "+1", "1,5"] {
            assert_eq!(
                check_quantity(bad),
                Err(QuantityProblem::NotANumber),
                "{bad}"
            );
        }
        let mut v = upd();
        v["quantity"] = json!("12000");
        assert!(problems(v)[0].contains("-9999 to 9999"));
        let mut v = upd();
        v["quantity"] = json!(2.5);
        assert!(records(&[Unit::Json { line: 1, value: v }]).is_ok());
    }

    #[test]
    fn reason_date_ids_and_something_to_change() {
        let mut v = upd();
        v["reason"][0]["value"] = json!("x".repeat(3001));
        v["expiration_date"] = json!("2020/01/01");
        v["user_id_type"] = json!("employee_id");
        let p = problems(v);
        assert!(p.iter().any(|m| m.contains("3000")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("YYYY-MM-DD")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("user_id_type")), "{p:?}");
        let mut v = upd();
        v.as_object_mut().unwrap().remove("quantity");
        v.as_object_mut().unwrap().remove("expiration_date");
        assert!(problems(v)[0].contains("nothing to change"));
        let mut v = upd();
        v["leave_granting_record_id"] = json!("9".repeat(65));
        assert!(problems(v)[0].contains("64"));
        let mut v = upd();
        v["leave_id"] = json!("../x");
        assert!(problems(v)[0].contains("leave_id"));
    }

    #[test]
    fn csv_rows_make_the_same_body() {
        let row: Vec<(String, String)> = [
            ("leave_granting_record_id", "6893014062142064135"),
            ("employment_id", "6982509313466189342"),
            ("leave_type_id", "7111688079785723436"),
            ("reason", "test"),
            ("time_offset", "480"),
            ("expiration_date", "2020-01-01"),
            ("quantity", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = records(&[Unit::Csv { line: 2, row }]).unwrap();
        let b = records(&[Unit::Json {
            line: 1,
            value: upd(),
        }])
        .unwrap();
        assert_eq!(a[0].payload, b[0].payload);
    }
}
