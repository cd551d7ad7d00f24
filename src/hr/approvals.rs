//! Approval results for `POST /open-apis/attendance/v1/user_approvals` (the open platform page "Notify approval results"; the rules are written out in README.md, "Approvals"): the
//! typed request body, its rules field by field, and the queue records (one per item).
//!
//! Each leave, outing, overtime and trip item becomes its own queue row and its own request (a
//! `user_approval` with that one item), so a refusal names exactly one item. The item's
//! `idempotent_id` is the source system's id when given, otherwise derived from the item
//! ([`derived_idempotent_id`]); the queue's unique key is `TYPE:IDEMPOTENT_ID`.
//!
//! Accepted input units: a request body `{"user_approval": {...}}`, a bare `user_approval` object, or
//! a flat item `{"type": "leave", "user_id": ..., "date": ..., <the item's fields>}` (an overtime's
//! own `type` is then written `overtime_type`); and CSV rows
//! with the flat item's columns (see the README).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::input::Unit;
use super::{all_or_issues, cell_int, derive_key, from_json, hr_record, Check, Issue};
use crate::queue::NewRecord;

/// The queue kind of approval items (one leave, outing, overtime or trip each), sent by
/// `crate::feishu::lanes::approvals`.
pub const KIND: &str = "user_approval";
/// The queue's `device_id` of approval rows.
pub const SOURCE: &str = "hr-approvals";

const UNITS: [(i64, &str); 4] = [(1, "day"), (2, "hour"), (3, "half day"), (4, "half hour")];
const LOCALES: [&str; 3] = ["ch", "en", "ja"];
/// Outing type ids must be shorter than this (the page: "长度小于 14").
pub const UNIQ_ID_MAX_EXCLUSIVE: usize = 14;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserApprovalBody {
    #[serde(default)]
    pub user_approval: Option<UserApproval>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserApproval {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outs: Option<Vec<UserOut>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<Vec<UserLeave>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overtime_works: Option<Vec<UserOvertimeWork>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trips: Option<Vec<UserTrip>>,
    /// No longer used by the platform (the attendance group's zone applies); passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I18nNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniq_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i18n_names: Option<I18nNames>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLeave {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniq_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i18n_names: Option<I18nNames>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOvertimeWork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<i64>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub overtime_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPlace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTrip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_pass_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_apply_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departure: Option<RegionPlace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<RegionPlace>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transportation: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// One item of an approval, with its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Out(UserOut),
    Leave(UserLeave),
    Overtime(UserOvertimeWork),
    Trip(UserTrip),
}

impl Item {
    /// `out`, `leave`, `overtime` or `trip`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Item::Out(_) => "out",
            Item::Leave(_) => "leave",
            Item::Overtime(_) => "overtime",
            Item::Trip(_) => "trip",
        }
    }
    fn list_name(&self) -> &'static str {
        match self {
            Item::Out(_) => "outs",
            Item::Leave(_) => "leaves",
            Item::Overtime(_) => "overtime_works",
            Item::Trip(_) => "trips",
        }
    }
    fn times(&self) -> (Option<&str>, Option<&str>) {
        let (s, e) = match self {
            Item::Out(i) => (&i.start_time, &i.end_time),
            Item::Leave(i) => (&i.start_time, &i.end_time),
            Item::Overtime(i) => (&i.start_time, &i.end_time),
            Item::Trip(i) => (&i.start_time, &i.end_time),
        };
        (s.as_deref(), e.as_deref())
    }
    fn idempotent_id(&self) -> Option<&str> {
        match self {
            Item::Out(i) => i.idempotent_id.as_deref(),
            Item::Leave(i) => i.idempotent_id.as_deref(),
            Item::Overtime(i) => i.idempotent_id.as_deref(),
            Item::Trip(i) => i.idempotent_id.as_deref(),
        }
        .filter(|s| !s.trim().is_empty())
    }
    fn set_idempotent_id(&mut self, id: String) {
        let slot = match self {
            Item::Out(i) => &mut i.idempotent_id,
            Item::Leave(i) => &mut i.idempotent_id,
            Item::Overtime(i) => &mut i.idempotent_id,
            Item::Trip(i) => &mut i.idempotent_id,
        };
        *slot = Some(id);
    }
    fn uniq_id(&self) -> &str {
        match self {
            Item::Out(i) => i.uniq_id.as_deref(),
            Item::Leave(i) => i.uniq_id.as_deref(),
            _ => None,
        }
        .unwrap_or("")
    }
}

impl UserApproval {
    /// Every item, in the order outs, leaves, overtime works, trips.
    pub fn items(&self) -> Vec<Item> {
        let mut v: Vec<Item> = Vec::new();
        v.extend(self.outs.iter().flatten().cloned().map(Item::Out));
        v.extend(self.leaves.iter().flatten().cloned().map(Item::Leave));
        v.extend(
            self.overtime_works
                .iter()
                .flatten()
                .cloned()
                .map(Item::Overtime),
        );
        v.extend(self.trips.iter().flatten().cloned().map(Item::Trip));
        v
    }

    /// A copy holding only `item`.
    pub fn with_single(&self, item: Item) -> UserApproval {
        let mut a = UserApproval {
            user_id: self.user_id.clone(),
            date: self.date.clone(),
            time_zone: self.time_zone.clone(),
            ..UserApproval::default()
        };
        match item {
            Item::Out(i) => a.outs = Some(vec![i]),
            Item::Leave(i) => a.leaves = Some(vec![i]),
            Item::Overtime(i) => a.overtime_works = Some(vec![i]),
            Item::Trip(i) => a.trips = Some(vec![i]),
        }
        a
    }
}

/// The idempotent id of an item the source gave none: a hash of what identifies the item on the
/// platform (type, user, date, start, end and, for leaves and outings, the type id).
pub fn derived_idempotent_id(user_id: &str, date: &str, item: &Item) -> String {
    let (s, e) = item.times();
    derive_key(&[
        "clockbridge-approval-v1",
        item.type_name(),
        user_id,
        date,
        s.unwrap_or(""),
        e.unwrap_or(""),
        item.uniq_id(),
    ])
}

fn check_names(c: &mut Check<'_>, p: &str, names: &Option<I18nNames>, locale: &Option<String>) {
    let loc = c
        .required(&format!("{p}.default_locale"), locale)
        .map(str::to_string);
    if let Some(l) = &loc {
        if !LOCALES.contains(&l.as_str()) {
            c.fail(
                &format!("{p}.default_locale"),
                format!("{l:?} is not one of \"ch\", \"en\", \"ja\""),
            );
        }
    }
    match names {
        None => c.fail(
            &format!("{p}.i18n_names"),
            "is required (the names shown for ch, en, ja)",
        ),
        Some(n) => {
            let get = |k: &str| match k {
                "ch" => n.ch.as_deref(),
                "en" => n.en.as_deref(),
                _ => n.ja.as_deref(),
            };
            if LOCALES
                .iter()
                .all(|k| get(k).is_none_or(|s| s.trim().is_empty()))
            {
                c.fail(
                    &format!("{p}.i18n_names"),
                    "needs at least one name (ch, en or ja)",
                );
            } else if let Some(l) = loc.filter(|l| LOCALES.contains(&l.as_str())) {
                if get(&l).is_none_or(|s| s.trim().is_empty()) {
                    c.fail(
                        &format!("{p}.i18n_names.{l}"),
                        "is required: it is the default_locale's name",
                    );
                }
            }
        }
    }
}

fn check_span(c: &mut Check<'_>, p: &str, start: &Option<String>, end: &Option<String>) {
    let s = c
        .required(&format!("{p}.start_time"), start)
        .and_then(|v| c_datetime(c, &format!("{p}.start_time"), v));
    let e = c
        .required(&format!("{p}.end_time"), end)
        .and_then(|v| c_datetime(c, &format!("{p}.end_time"), v));
    if let (Some(s), Some(e)) = (s, e) {
        if e < s {
            c.fail(&format!("{p}.end_time"), "is before start_time");
        }
    }
}

fn c_datetime(c: &mut Check<'_>, p: &str, v: &str) -> Option<chrono::NaiveDateTime> {
    c.datetime(p, v)
}

fn no_process_ids(c: &mut Check<'_>, p: &str, ids: [&Option<Vec<String>>; 3]) {
    for (name, v) in ["correct_process_id", "cancel_process_id", "process_id"]
        .iter()
        .zip(ids)
    {
        if v.as_ref().is_some_and(|v| !v.is_empty()) {
            c.fail(
                &format!("{p}.{name}"),
                "is set by the platform and must not be sent: remove it",
            );
        }
    }
}

fn check_interval(c: &mut Check<'_>, p: &str, v: Option<i64>) {
    match v {
        None => c.fail(
            p,
            "is required (the duration in seconds, whatever the unit)",
        ),
        Some(n) if n < 0 => c.fail(p, format!("{n} is negative")),
        Some(_) => {}
    }
}

/// Checks one item against its page's rules.
pub fn check_item(c: &mut Check<'_>, p: &str, item: &Item) {
    match item {
        Item::Out(o) => {
            if let Some(u) = c.required(&format!("{p}.uniq_id"), &o.uniq_id) {
                if u.chars().count() >= UNIQ_ID_MAX_EXCLUSIVE {
                    c.fail(
                        &format!("{p}.uniq_id"),
                        format!("{u:?} must be shorter than 14 characters"),
                    );
                }
            }
            c.one_of(&format!("{p}.unit"), o.unit, &UNITS);
            check_interval(c, &format!("{p}.interval"), o.interval);
            check_span(c, p, &o.start_time, &o.end_time);
            check_names(c, p, &o.i18n_names, &o.default_locale);
            c.required(&format!("{p}.reason"), &o.reason);
            no_process_ids(
                c,
                p,
                [&o.correct_process_id, &o.cancel_process_id, &o.process_id],
            );
        }
        Item::Leave(l) => {
            // a leave's uniq_id is optional and has no length rule in the request table (the page's
            // own example is 19 characters); only an outing's must be shorter than 14
            c.one_of(&format!("{p}.unit"), l.unit, &UNITS);
            check_interval(c, &format!("{p}.interval"), l.interval);
            check_span(c, p, &l.start_time, &l.end_time);
            check_names(c, p, &l.i18n_names, &l.default_locale);
            c.required(&format!("{p}.reason"), &l.reason);
        }
        Item::Overtime(o) => {
            match o.duration {
                None => c.fail(&format!("{p}.duration"), "is required"),
                Some(d) if !d.is_finite() || d <= 0.0 => {
                    c.fail(&format!("{p}.duration"), format!("{d} must be more than 0"))
                }
                Some(_) => {}
            }
            c.one_of(&format!("{p}.unit"), o.unit, &UNITS);
            c.one_of(
                &format!("{p}.category"),
                o.category,
                &[(1, "working day"), (2, "rest day"), (3, "public holiday")],
            );
            // a flat item (a CSV row) writes it overtime_type: name the key the input used
            let key = if p.starts_with("item.") {
                "overtime_type"
            } else {
                "type"
            };
            c.one_of(
                &format!("{p}.{key}"),
                o.overtime_type,
                &[
                    (0, "record only"),
                    (1, "time off in lieu"),
                    (2, "overtime pay"),
                ],
            );
            check_span(c, p, &o.start_time, &o.end_time);
            no_process_ids(
                c,
                p,
                [&o.correct_process_id, &o.cancel_process_id, &o.process_id],
            );
        }
        Item::Trip(t) => {
            check_span(c, p, &t.start_time, &t.end_time);
            c.required(&format!("{p}.reason"), &t.reason);
            for (name, v) in [
                ("approve_pass_time", &t.approve_pass_time),
                ("approve_apply_time", &t.approve_apply_time),
            ] {
                let path = format!("{p}.{name}");
                if let Some(v) = c.required(&path, v) {
                    c.datetime(&path, v);
                }
            }
            let places = t
                .departure
                .iter()
                .map(|d| ("departure".to_string(), d))
                .chain(
                    t.destinations
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, d)| (format!("destinations[{i}]"), d)),
                );
            for (name, place) in places {
                if let Some(l) = place.region_level.as_deref() {
                    if !matches!(l, "l1" | "l2" | "l3" | "l4") {
                        c.fail(
                            &format!("{p}.{name}.region_level"),
                            format!("{l:?} is not one of l1 (country), l2 (province), l3 (city), l4 (district)"),
                        );
                    }
                }
            }
            for (i, m) in t.transportation.iter().flatten().enumerate() {
                if !(1..=6).contains(m) {
                    c.fail(
                        &format!("{p}.transportation[{i}]"),
                        format!("{m} is not one of 1 (plane), 2 (train), 3 (car), 4 (high-speed train), 5 (ship), 6 (other)"),
                    );
                }
            }
            if t.trip_type.is_some() {
                c.one_of(
                    &format!("{p}.trip_type"),
                    t.trip_type,
                    &[(1, "one way"), (2, "round trip")],
                );
            }
            no_process_ids(
                c,
                p,
                [&t.correct_process_id, &t.cancel_process_id, &t.process_id],
            );
        }
    }
}

/// Checks a whole `user_approval` (prefix `p`, e.g. `user_approval`).
pub fn check(c: &mut Check<'_>, p: &str, a: &UserApproval) {
    c.required(&format!("{p}.user_id"), &a.user_id);
    if let Some(d) = c.required(&format!("{p}.date"), &a.date) {
        c.ymd(&format!("{p}.date"), d);
    }
    let items = a.items();
    if items.is_empty() {
        c.fail(
            p,
            "holds no item: give at least one of outs, leaves, overtime_works, trips",
        );
    }
    let mut index = std::collections::HashMap::<&str, usize>::new();
    for item in &items {
        let i = index.entry(item.list_name()).or_default();
        check_item(c, &format!("{p}.{}[{i}]", item.list_name()), item);
        *i += 1;
    }
}

/// Turns one input unit into a `user_approval` (with the path prefix its errors use).
fn unit_approval(unit: &Unit, c: &mut Check<'_>) -> Option<(UserApproval, &'static str)> {
    let value = match unit {
        Unit::Json { value, .. } => value.clone(),
        Unit::Csv { row, .. } => csv_item(row, c)?,
    };
    let Value::Object(mut obj) = value else {
        c.fail("record", "must be a JSON object");
        return None;
    };
    let parsed = if obj.contains_key("user_approval") {
        from_json::<CreateUserApprovalBody>(Value::Object(obj), "")
            .map(|b| (b.user_approval.unwrap_or_default(), "user_approval"))
    } else if let Some(t) = obj.remove("type") {
        flat_item(obj, t).map(|a| (a, "item"))
    } else {
        from_json::<UserApproval>(Value::Object(obj), "").map(|a| (a, "user_approval"))
    };
    match parsed {
        Ok(x) => Some(x),
        Err(e) => {
            c.issues.push(Issue::new(c.line, e));
            None
        }
    }
}

fn flat_item(mut obj: Map<String, Value>, t: Value) -> Result<UserApproval, String> {
    let take = |obj: &mut Map<String, Value>, k: &str| -> Result<Option<String>, String> {
        match obj.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("{k}: {v} must be a string")),
        }
    };
    let user_id = take(&mut obj, "user_id")?;
    let date = take(&mut obj, "date")?;
    let time_zone = take(&mut obj, "time_zone")?;
    if t.as_str() == Some("overtime") {
        // the flat item's "type" is the kind of item, so the overtime's own "type" (record only,
        // time off in lieu, overtime pay) is written "overtime_type" (the CSV column's name)
        if let Some(v) = obj.remove("overtime_type") {
            obj.insert("type".into(), v);
        }
    }
    let rest = Value::Object(obj);
    let item = match t.as_str() {
        Some("leave") => Item::Leave(from_json(rest, "")?),
        Some("out") => Item::Out(from_json(rest, "")?),
        Some("overtime") => Item::Overtime(from_json(rest, "")?),
        Some("trip") => Item::Trip(from_json(rest, "")?),
        _ => {
            return Err(format!(
                "type: {t} is not one of \"leave\", \"out\", \"overtime\", \"trip\""
            ))
        }
    };
    Ok(UserApproval {
        user_id,
        date,
        time_zone,
        ..UserApproval::default()
    }
    .with_single(item))
}

/// CSV columns and the types they apply to (`*`: all).
const CSV_COLUMNS: [(&str, &str); 24] = [
    ("type", "*"),
    ("user_id", "*"),
    ("date", "*"),
    ("start_time", "*"),
    ("end_time", "*"),
    ("idempotent_id", "*"),
    ("reason", "*"),
    ("unit", "leave out overtime"),
    ("interval", "leave out"),
    ("uniq_id", "leave out"),
    ("name_ch", "leave out"),
    ("name_en", "leave out"),
    ("name_ja", "leave out"),
    ("default_locale", "leave out"),
    ("duration", "overtime"),
    ("category", "overtime"),
    ("overtime_type", "overtime"),
    ("approve_apply_time", "trip"),
    ("approve_pass_time", "trip"),
    ("transportation", "trip"),
    ("trip_type", "trip"),
    ("remarks", "trip"),
    ("departure", "trip"),
    ("destinations", "trip"),
];

fn region(s: &str) -> Value {
    match s.split_once(':') {
        Some((l, id)) => serde_json::json!({"region_level": l.trim(), "region_id": id.trim()}),
        None => serde_json::json!({ "region_id": s.trim() }),
    }
}

/// A CSV row as a flat item object.
fn csv_item(row: &[(String, String)], c: &mut Check<'_>) -> Option<Value> {
    let t = row
        .iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !matches!(t, "leave" | "out" | "overtime" | "trip") {
        c.fail(
            "column type",
            format!("{t:?} is not one of leave, out, overtime, trip"),
        );
        return None;
    }
    let mut obj = Map::new();
    let mut names = Map::new();
    let before = c.issues.len();
    for (k, v) in row {
        let Some((_, applies)) = CSV_COLUMNS.iter().find(|(n, _)| n == k) else {
            c.fail(
                &format!("column {k}"),
                "is not a column of the approvals CSV layout (see the README)",
            );
            continue;
        };
        if *applies != "*" && !applies.split(' ').any(|a| a == t) {
            c.fail(&format!("column {k}"), format!("does not apply to a {t}"));
            continue;
        }
        let value = match k.as_str() {
            "unit" | "interval" | "category" | "overtime_type" | "trip_type" => cell_int(c, k, v),
            "duration" => match v.parse::<f64>() {
                Ok(d) => serde_json::Number::from_f64(d).map(Value::Number),
                Err(_) => {
                    c.fail("column duration", format!("{v:?} is not a number"));
                    None
                }
            },
            "transportation" => v
                .split(';')
                .map(|p| cell_int(c, k, p.trim()))
                .collect::<Option<Vec<Value>>>()
                .map(Value::Array),
            "departure" => Some(region(v)),
            "destinations" => Some(Value::Array(v.split(';').map(region).collect())),
            _ => Some(Value::String(v.clone())),
        };
        let Some(value) = value else { continue };
        match k.as_str() {
            "name_ch" | "name_en" | "name_ja" => {
                names.insert(k[5..].to_string(), value);
            }
            "type" => {}
            _ => {
                obj.insert(k.clone(), value);
            }
        }
    }
    if !names.is_empty() {
        obj.insert("i18n_names".into(), Value::Object(names));
    }
    if c.issues.len() > before {
        return None;
    }
    // the flat item form: "type" is read from the JSON key, so put it back
    let mut out = Map::new();
    out.insert("type".into(), Value::String(t.to_string()));
    out.extend(obj);
    Some(Value::Object(out))
}

/// Validates every unit and builds one queue record per item: all, or every problem.
pub fn records(units: &[Unit]) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for unit in units {
        let mut c = Check {
            line: unit.line(),
            issues: &mut issues,
        };
        let Some((approval, prefix)) = unit_approval(unit, &mut c) else {
            continue;
        };
        let before = c.issues.len();
        check(&mut c, prefix, &approval);
        if c.issues.len() > before {
            continue;
        }
        let user = approval.user_id.clone().unwrap_or_default();
        let date = approval.date.clone().unwrap_or_default();
        for mut item in approval.items() {
            let idem = match item.idempotent_id() {
                Some(id) => id.to_string(),
                None => derived_idempotent_id(&user, &date, &item),
            };
            item.set_idempotent_id(idem.clone());
            let ukey = format!("{}:{idem}", item.type_name());
            if let Some(first) = seen.insert(ukey.clone(), unit.line()) {
                issues.push(Issue::new(
                    unit.line(),
                    format!(
                        "{} with idempotent_id {idem:?} appears twice in the file (first on line {first}): each item needs its own id",
                        item.type_name()
                    ),
                ));
                continue;
            }
            let start = item
                .times()
                .0
                .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
                .map(|t| t.and_utc().timestamp())
                .unwrap_or(0);
            let body = CreateUserApprovalBody {
                user_approval: Some(approval.with_single(item)),
            };
            out.push(hr_record(
                KIND,
                idem,
                ukey,
                SOURCE.to_string(),
                &user,
                start,
                serde_json::to_string(&body).unwrap_or_default(),
            ));
        }
    }
    all_or_issues(out, issues)
}

#[cfg(test)]
mod tests;
