//! `POST /open-apis/attendance/v1/archive_rule/upload_report?employee_type=…` ("写入归档报表结果"):
//! 1 to 50 rows, 1 to 200 fields each, `yyyyMM` / `yyyyMMdd` (the product's own rules,
//! `clockbridge::hr::reports`); an unknown archive rule is 1220600 "archive_rule_id not exist";
//! unknown members and field codes are listed in `invalid_member_id` / `invalid_code` and not
//! stored; the rest is stored as absolute values per row.

use clockbridge::hr::reports::{check_group, check_row, UploadReportBody, MAX_ROWS_PER_CALL};
use clockbridge::hr::{Check, Issue};
use hyper::StatusCode;
use serde_json::json;

use crate::standin::platform::codes;
use crate::standin::reply::{param_invalid, query_param, Reply};
use crate::standin::server::{lock, Shared};

fn first_issue(issues: &[Issue]) -> String {
    issues
        .first()
        .map(|i| i.message.clone())
        .unwrap_or_default()
}

pub(super) fn report(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
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
