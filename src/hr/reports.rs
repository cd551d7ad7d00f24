//! Archived report results for `POST /open-apis/attendance/v1/archive_rule/upload_report`
//! (the open platform page "Write archived report results"; the rules are written out in README.md, "Archived reports"): the typed body, its rules, and one queue record per report row.
//!
//! Rows are queued one per row and sent 50 to a call, grouped by archive rule, month and operator
//! (the queue's `device_id` is `report/RULE/MONTH/OPERATOR`). An upload sets absolute values, so a
//! re-send is harmless; the queue's ordering key is `RULE/MONTH/MEMBER/START/END` (the row it
//! overwrites), so a newer value for that row is never sent before an older one.
//!
//! Accepted input: the request body (`month`, `operator_id`, `archive_rule_id`,
//! `archive_report_datas`; more than 50 rows are fine, they are sent in calls of 50), or JSON Lines of
//! rows (`member_id`, `start_time`, `end_time`, `field_datas`, optionally with `archive_rule_id`,
//! `month`, `operator_id`), or CSV `member_id,start_time,end_time,<field code>...`. The rule, month
//! and operator come from the file or from `--rule`, `--month`, `--operator`; both must agree.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::input::Unit;
use super::{all_or_issues, derive_key, from_json, hr_record, Check, Issue, ReportArgs};
use crate::queue::NewRecord;

/// The queue kind of report rows (one row each), sent by `crate::feishu::lanes::reports`.
pub const KIND: &str = "archive_report";
/// Rows per call (the page: `archive_report_datas`, 1 to 50).
pub const MAX_ROWS_PER_CALL: usize = 50;
/// Fields per row (the page: `field_datas`, 1 to 200).
pub const MAX_FIELDS_PER_ROW: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadReportBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_report_datas: Option<Vec<ReportRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_rule_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_datas: Option<Vec<FieldData>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What one queue row holds: the group it is sent with and the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRow {
    pub archive_rule_id: String,
    pub month: String,
    pub operator_id: String,
    pub row: ReportRow,
}

/// Checks one row (prefix `p`).
pub fn check_row(c: &mut Check<'_>, p: &str, r: &ReportRow) {
    c.required(&format!("{p}.member_id"), &r.member_id);
    let s = c
        .required(&format!("{p}.start_time"), &r.start_time)
        .and_then(|v| c.ymd(&format!("{p}.start_time"), v));
    let e = c
        .required(&format!("{p}.end_time"), &r.end_time)
        .and_then(|v| c.ymd(&format!("{p}.end_time"), v));
    if let (Some(s), Some(e)) = (s, e) {
        if e < s {
            c.fail(&format!("{p}.end_time"), "is before start_time");
        }
    }
    let fields = r.field_datas.as_deref().unwrap_or(&[]);
    if fields.is_empty() {
        c.fail(
            &format!("{p}.field_datas"),
            "needs at least 1 field (1 to 200)",
        );
    }
    if fields.len() > MAX_FIELDS_PER_ROW {
        c.fail(
            &format!("{p}.field_datas"),
            format!("has {} fields: at most 200 per row", fields.len()),
        );
    }
    let mut codes = std::collections::HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        if let Some(code) = c.required(&format!("{p}.field_datas[{i}].code"), &f.code) {
            if !codes.insert(code) {
                c.fail(
                    &format!("{p}.field_datas[{i}].code"),
                    format!("{code:?} appears twice in the row"),
                );
            }
        }
    }
}

/// Checks the group values.
pub fn check_group(c: &mut Check<'_>, rule: &str, month: &str, operator: &str) {
    if rule.trim().is_empty() {
        c.fail("archive_rule_id", "is required (or --rule)");
    }
    if month.is_empty() {
        c.fail("month", "is required (or --month)");
    } else {
        c.month("month", month);
    }
    if operator.trim().is_empty() {
        c.fail("operator_id", "is required (or --operator)");
    }
}

/// The group value: from the record, the file, or the command line; they must agree.
fn pick(
    c: &mut Check<'_>,
    name: &str,
    flag: &str,
    record: Option<String>,
    arg: &Option<String>,
) -> String {
    match (record, arg) {
        (Some(r), Some(a)) if r != *a => {
            c.fail(
                name,
                format!("{r:?} in the file differs from {flag} {a:?}: give one, or the same"),
            );
            r
        }
        (Some(r), _) => r,
        (None, Some(a)) => a.clone(),
        (None, None) => String::new(),
    }
}

fn take_str(obj: &mut Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match obj.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{k}: {v} must be a string")),
    }
}

/// Rows of one unit, each with its group values as found in the unit.
type UnitRows = Vec<(
    Option<String>,
    Option<String>,
    Option<String>,
    ReportRow,
    String,
)>;

fn unit_rows(unit: &Unit) -> Result<UnitRows, String> {
    let mut obj = match unit {
        Unit::Json {
            value: Value::Object(o),
            ..
        } => o.clone(),
        Unit::Json { .. } => return Err("record: must be a JSON object".into()),
        Unit::Csv { row, .. } => {
            let mut o = Map::new();
            let mut fields = Vec::new();
            for (k, v) in row {
                match k.as_str() {
                    "member_id" | "start_time" | "end_time" | "archive_rule_id" | "month"
                    | "operator_id" => {
                        o.insert(k.clone(), Value::String(v.clone()));
                    }
                    code => fields.push(serde_json::json!({"code": code, "value": v})),
                }
            }
            o.insert("field_datas".into(), Value::Array(fields));
            o
        }
    };
    if obj.contains_key("archive_report_datas") {
        let body: UploadReportBody = from_json(Value::Object(obj), "")?;
        return Ok(body
            .archive_report_datas
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    body.archive_rule_id.clone(),
                    body.month.clone(),
                    body.operator_id.clone(),
                    r,
                    format!("archive_report_datas[{i}]"),
                )
            })
            .collect());
    }
    let rule = take_str(&mut obj, "archive_rule_id")?;
    let month = take_str(&mut obj, "month")?;
    let op = take_str(&mut obj, "operator_id")?;
    let row: ReportRow = from_json(Value::Object(obj), "")?;
    Ok(vec![(rule, month, op, row, "row".into())])
}

/// Validates every unit and builds one queue record per report row: all, or every problem.
pub fn records(units: &[Unit], args: &ReportArgs) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    for unit in units {
        let mut c = Check {
            line: unit.line(),
            issues: &mut issues,
        };
        let rows = match unit_rows(unit) {
            Ok(r) => r,
            Err(e) => {
                c.issues.push(Issue::new(c.line, e));
                continue;
            }
        };
        if rows.is_empty() {
            c.fail(
                "archive_report_datas",
                "holds no row (1 to 50 per call; a file may hold more)",
            );
        }
        for (rule, month, op, row, p) in rows {
            let before = c.issues.len();
            let rule = pick(
                &mut c,
                "archive_rule_id",
                "--rule",
                rule,
                &args.archive_rule_id,
            );
            let month = pick(&mut c, "month", "--month", month, &args.month);
            let op = pick(&mut c, "operator_id", "--operator", op, &args.operator_id);
            check_group(&mut c, &rule, &month, &op);
            check_row(&mut c, &p, &row);
            if c.issues.len() > before {
                continue;
            }
            let member = row.member_id.clone().unwrap_or_default();
            let start = row.start_time.clone().unwrap_or_default();
            let end = row.end_time.clone().unwrap_or_default();
            let q = QueuedRow {
                archive_rule_id: rule.clone(),
                month: month.clone(),
                operator_id: op.clone(),
                row,
            };
            let payload = serde_json::to_string(&q).unwrap_or_default();
            let event_time = chrono::NaiveDate::parse_from_str(&start, "%Y%m%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp())
                .unwrap_or(0);
            out.push(hr_record(
                KIND,
                derive_key(&["clockbridge-report-v1", &payload]),
                // the ordering key: the report row this value overwrites
                format!("{rule}/{month}/{member}/{start}/{end}"),
                format!("report/{rule}/{month}/{op}"),
                &member,
                event_time,
                payload,
            ));
        }
    }
    all_or_issues(out, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> ReportArgs {
        ReportArgs {
            archive_rule_id: Some("1".into()),
            month: Some("202409".into()),
            operator_id: Some("ax11d".into()),
        }
    }

    fn row(member: &str) -> Value {
        json!({"member_id": member, "start_time": "20240901", "end_time": "20240930",
            "field_datas": [{"code": "abd754f7", "value": "1"}]})
    }

    fn err(units: Vec<Unit>, a: &ReportArgs) -> Vec<String> {
        records(&units, a)
            .unwrap_err()
            .into_iter()
            .map(|i| format!("line {}: {}", i.line, i.message))
            .collect()
    }

    #[test]
    fn the_pages_body_and_rows_with_flags_agree() {
        let body = json!({"month": "202409", "operator_id": "ax11d", "archive_rule_id": "1",
            "archive_report_datas": [row("m1"), row("m2")]});
        let a = records(
            &[Unit::Json {
                line: 1,
                value: body,
            }],
            &ReportArgs::default(),
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].device_id, "report/1/202409/ax11d");
        assert_eq!(a[0].ukey, "1/202409/m1/20240901/20240930");
        let b = records(
            &[Unit::Json {
                line: 1,
                value: row("m1"),
            }],
            &args(),
        )
        .unwrap();
        assert_eq!(a[0].payload, b[0].payload);
        assert_eq!(a[0].idem, b[0].idem);
        let csv = vec![
            ("member_id".to_string(), "m1".to_string()),
            ("start_time".into(), "20240901".into()),
            ("end_time".into(), "20240930".into()),
            ("abd754f7".into(), "1".into()),
        ];
        let c = records(&[Unit::Csv { line: 2, row: csv }], &args()).unwrap();
        assert_eq!(c[0].payload, a[0].payload);
    }

    #[test]
    fn group_values_are_required_and_must_agree() {
        let e = err(
            vec![Unit::Json {
                line: 3,
                value: row("m1"),
            }],
            &ReportArgs::default(),
        );
        assert!(
            e.iter()
                .any(|m| m.contains("line 3: archive_rule_id: is required")),
            "{e:?}"
        );
        let mut a = args();
        a.month = Some("2024-09".into());
        let e = err(
            vec![Unit::Json {
                line: 1,
                value: row("m1"),
            }],
            &a,
        );
        assert!(e[0].contains("yyyyMM"), "{e:?}");
        let mut r = row("m1");
        r["month"] = json!("202410");
        let e = err(vec![Unit::Json { line: 1, value: r }], &args());
        assert!(e[0].contains("differs from --month"), "{e:?}");
    }

    #[test]
    fn at_most_200_fields_and_at_least_one() {
        let mut r = row("m1");
        r["field_datas"] = Value::Array(
            (0..201)
                .map(|i| json!({"code": format!("c{i}"), "value": "1"}))
                .collect(),
        );
        let e = err(vec![Unit::Json { line: 1, value: r }], &args());
        assert!(e[0].contains("at most 200 per row"), "{e:?}");
        let mut r = row("m1");
        r["field_datas"] = json!([]);
        assert!(err(vec![Unit::Json { line: 1, value: r }], &args())[0].contains("at least 1"));
        let mut r = row("m1");
        r["start_time"] = json!("2024-09-01");
        assert!(err(vec![Unit::Json { line: 1, value: r }], &args())[0].contains("yyyyMMdd"));
    }

    #[test]
    fn a_new_value_shares_the_ordering_key_but_not_the_hash() {
        let a = records(
            &[Unit::Json {
                line: 1,
                value: row("m1"),
            }],
            &args(),
        )
        .unwrap();
        let mut r = row("m1");
        r["field_datas"][0]["value"] = json!("2");
        let b = records(&[Unit::Json { line: 1, value: r }], &args()).unwrap();
        assert_eq!(a[0].ukey, b[0].ukey);
        assert_ne!(a[0].idem, b[0].idem);
    }
}
