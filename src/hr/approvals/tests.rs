//! Unit tests of `hr/approvals.rs` (kept apart so the production file holds one topic).

use super::*;
use serde_json::json;

fn leave() -> Value {
    json!({
        "uniq_id": "6852582717813440527", "unit": 1, "interval": 3600,
        "start_time": "2021-01-04 09:00:00", "end_time": "2021-01-04 19:00:00",
        "i18n_names": {"ch": "事假", "en": "Personal"}, "default_locale": "ch",
        "reason": "家里有事", "idempotent_id": "hr-1"
    })
}

fn body(list: &str, item: Value) -> Value {
    json!({"user_approval": {"user_id": "abd754f7", "date": "20210104", list: [item]}})
}

fn problems(v: Value) -> Vec<String> {
    match records(&[Unit::Json { line: 7, value: v }]) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(issues) => issues
            .into_iter()
            .map(|i| {
                assert_eq!(i.line, 7);
                i.message
            })
            .collect(),
    }
}

#[test]
fn the_pages_example_is_accepted_one_row_per_item() {
    let mut v = body("leaves", leave());
    let ua = v["user_approval"].as_object_mut().unwrap();
    ua.insert(
        "overtime_works".into(),
        json!([{"duration": 1.5, "unit": 1, "category": 2, "type": 1,
            "start_time": "2021-01-09 09:00:00", "end_time": "2021-01-10 13:00:00", "reason": "推进项目进度"}]),
    );
    ua.insert(
        "trips".into(),
        json!([{"start_time": "2021-01-04 09:00:00", "end_time": "2021-01-04 19:00:00", "reason": "培训",
            "approve_pass_time": "2021-01-04 12:00:00", "approve_apply_time": "2021-01-04 11:00:00",
            "departure": {"region_level": "l1", "region_id": "6863333418483058189"},
            "destinations": [{"region_level": "l3", "region_id": "1"}], "transportation": [1, 4], "trip_type": 2}]),
    );
    let r = records(&[Unit::Json { line: 1, value: v }]).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].idem, "hr-1");
    assert_eq!(r[0].ukey, "leave:hr-1");
    // the overtime had no idempotent_id: a derived one, in the payload too
    assert_eq!(r[1].idem.len(), 32);
    let p: Value = serde_json::from_str(&r[1].payload).unwrap();
    assert_eq!(
        p["user_approval"]["overtime_works"][0]["idempotent_id"],
        r[1].idem
    );
    assert_eq!(p["user_approval"]["overtime_works"][0]["type"], 1);
    assert!(p["user_approval"].get("leaves").is_none());
}

#[test]
fn derived_ids_are_stable_and_depend_on_identity() {
    let a = Item::Leave(from_json(leave(), "").unwrap());
    let mut l: UserLeave = from_json(leave(), "").unwrap();
    l.reason = Some("other words".into());
    let b = Item::Leave(l.clone());
    assert_eq!(
        derived_idempotent_id("u", "20210104", &a),
        derived_idempotent_id("u", "20210104", &b)
    );
    l.start_time = Some("2021-01-04 10:00:00".into());
    assert_ne!(
        derived_idempotent_id("u", "20210104", &a),
        derived_idempotent_id("u", "20210104", &Item::Leave(l))
    );
}

#[test]
fn formats_units_and_locales_are_checked() {
    let mut l = leave();
    l["unit"] = json!(5);
    l["start_time"] = json!("2021-01-04T09:00:00");
    l["default_locale"] = json!("fr");
    let p = problems(body("leaves", l));
    assert!(
        p.iter()
            .any(|m| m.contains("leaves[0].unit: 5 is not one of 1 (day)")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("start_time") && m.contains("yyyy-MM-dd HH:mm:ss")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("default_locale: \"fr\"")),
        "{p:?}"
    );
    let mut v = body("leaves", leave());
    v["user_approval"]["date"] = json!("2021-01-04");
    assert!(problems(v)[0].contains("yyyyMMdd"));
}

#[test]
fn outing_uniq_id_must_be_shorter_than_14() {
    let mut o = leave();
    o["uniq_id"] = json!("9496E43696967658A512969523E89870");
    let p = problems(body("outs", o.clone()));
    assert!(
        p[0].contains("outs[0].uniq_id") && p[0].contains("shorter than 14"),
        "{p:?}"
    );
    o["uniq_id"] = json!("1234567890123");
    assert!(records(&[Unit::Json {
        line: 1,
        value: body("outs", o)
    }])
    .is_ok());
}

#[test]
fn overtime_category_and_type_are_enumerations() {
    let ot = json!({"duration": 2, "unit": 2, "category": 4, "type": 3,
        "start_time": "2021-01-09 09:00:00", "end_time": "2021-01-09 08:00:00"});
    let p = problems(body("overtime_works", ot));
    assert!(p.iter().any(|m| m.contains("category: 4")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("type: 3")), "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("end_time: is before start_time")),
        "{p:?}"
    );
}

#[test]
fn trips_transport_type_and_region_levels() {
    let t = json!({"start_time": "2021-01-04 09:00:00", "end_time": "2021-01-04 19:00:00", "reason": "r",
        "approve_pass_time": "2021-01-04 12:00:00", "approve_apply_time": "2021-01-04 11:00",
        "transportation": [7], "trip_type": 3, "departure": {"region_level": "l5"}});
    let p = problems(body("trips", t));
    assert!(
        p.iter().any(|m| m.contains("transportation[0]: 7")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m.contains("trip_type: 3")), "{p:?}");
    assert!(
        p.iter().any(|m| m.contains("departure.region_level")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m.contains("approve_apply_time")), "{p:?}");
}

#[test]
fn unknown_fields_wrong_types_and_platform_ids_are_refused() {
    let mut l = leave();
    l["colour"] = json!("red");
    assert!(problems(body("leaves", l))[0].contains("unknown field `colour`"));
    let mut l = leave();
    l["unit"] = json!("1");
    assert!(problems(body("leaves", l))[0].contains("user_approval.leaves[0].unit"));
    let mut o = leave();
    o["uniq_id"] = json!("out1");
    o["process_id"] = json!(["7304865941202929196"]);
    assert!(problems(body("outs", o))[0].contains("set by the platform"));
    assert!(
        problems(json!({"user_approval": {"user_id": "u", "date": "20210104"}}))[0]
            .contains("holds no item")
    );
}

#[test]
fn flat_items_and_csv_rows_make_the_same_record() {
    let mut flat = leave();
    flat["type"] = json!("leave");
    flat["user_id"] = json!("abd754f7");
    flat["date"] = json!("20210104");
    let a = records(&[Unit::Json {
        line: 1,
        value: flat,
    }])
    .unwrap();
    let b = records(&[Unit::Json {
        line: 1,
        value: body("leaves", leave()),
    }])
    .unwrap();
    assert_eq!(a[0].payload, b[0].payload);
    let row: Vec<(String, String)> = [
        ("type", "leave"),
        ("user_id", "abd754f7"),
        ("date", "20210104"),
        ("uniq_id", "6852582717813440527"),
        ("unit", "1"),
        ("interval", "3600"),
        ("start_time", "2021-01-04 09:00:00"),
        ("end_time", "2021-01-04 19:00:00"),
        ("name_ch", "事假"),
        ("name_en", "Personal"),
        ("default_locale", "ch"),
        ("reason", "家里有事"),
        ("idempotent_id", "hr-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = records(&[Unit::Csv { line: 2, row }]).unwrap();
    assert_eq!(c[0].payload, b[0].payload);
    let bad: Vec<(String, String)> = vec![
        ("type".into(), "leave".into()),
        ("duration".into(), "2".into()),
    ];
    let e = records(&[Unit::Csv { line: 3, row: bad }]).unwrap_err();
    assert!(
        e[0].message
            .contains("column duration: does not apply to a leave"),
        "{e:?}"
    );
}

#[test]
fn a_column_named_with_control_characters_is_reported_on_one_visible_line() {
    // found by the hr_input fuzz target: a header cell "e\0...\x01end_time" reached the problem's
    // message as it was (the terminal of `submit`, the inbox's log and report)
    let row: Vec<(String, String)> = vec![
        ("type".into(), "leave".into()),
        ("e\0\u{1}end_time\n\u{1b}[2K\u{202e}".into(), "x".into()),
    ];
    let e = records(&[Unit::Csv { line: 2, row }]).unwrap_err();
    assert_eq!(
        e[0].message,
        "column e\\u{0}\\u{1}end_time\\n\\u{1b}[2K\\u{202e}: is not a column of the approvals CSV layout (see the README)"
    );
}

#[test]
fn the_same_item_twice_in_a_file_is_refused() {
    let v = body("leaves", leave());
    let e = records(&[
        Unit::Json {
            line: 1,
            value: v.clone(),
        },
        Unit::Json { line: 2, value: v },
    ])
    .unwrap_err();
    assert_eq!(e[0].line, 2);
    assert!(e[0].message.contains("first on line 1"));
}

/// The records of an approvals CSV, read as `submit` and the inbox read it.
fn csv_records(text: &str) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let units = crate::hr::input::read_units(text.as_bytes(), "a.csv", encoding_rs::UTF_8)?;
    records(&units)
}

#[test]
fn a_csv_row_of_every_approval_type_makes_the_apis_item() {
    // one row per type, each with every column of its type; the record must be what the same
    // item gives in the API's own body form
    let csv = "type,user_id,date,start_time,end_time,idempotent_id,reason,unit,interval,uniq_id,name_ch,name_en,default_locale,duration,category,overtime_type,approve_apply_time,approve_pass_time,transportation,trip_type,remarks,departure,destinations\n\
        leave,u1,20260302,2026-03-02 09:00:00,2026-03-02 18:00:00,LV-1,family,1,28800,annual,年假,Annual leave,ch,,,,,,,,,,\n\
        out,u1,20260303,2026-03-03 14:00:00,2026-03-03 16:00:00,OUT-1,client visit,2,7200,visit,外出,Outing,en,,,,,,,,,,\n\
        overtime,u1,20260307,2026-03-07 09:00:00,2026-03-07 13:00:00,OT-1,release,2,,,,,,4,2,2,,,,,,,\n\
        trip,u1,20260309,2026-03-09 09:00:00,2026-03-10 18:00:00,TR-1,training,,,,,,,,,,2026-03-01 10:00:00,2026-03-01 12:00:00,1;4,2,bring slides,l1:6863333418483058189,l3:1;l3:2\n";
    let got = csv_records(csv).unwrap_or_else(|e| panic!("{e:?}"));
    let expected = [
        body(
            "leaves",
            json!({"uniq_id": "annual", "unit": 1, "interval": 28800,
                "start_time": "2026-03-02 09:00:00", "end_time": "2026-03-02 18:00:00",
                "i18n_names": {"ch": "年假", "en": "Annual leave"}, "default_locale": "ch",
                "reason": "family", "idempotent_id": "LV-1"}),
        ),
        body(
            "outs",
            json!({"uniq_id": "visit", "unit": 2, "interval": 7200,
                "start_time": "2026-03-03 14:00:00", "end_time": "2026-03-03 16:00:00",
                "i18n_names": {"ch": "外出", "en": "Outing"}, "default_locale": "en",
                "reason": "client visit", "idempotent_id": "OUT-1"}),
        ),
        body(
            "overtime_works",
            json!({"duration": 4.0, "unit": 2, "category": 2, "type": 2,
                "start_time": "2026-03-07 09:00:00", "end_time": "2026-03-07 13:00:00",
                "reason": "release", "idempotent_id": "OT-1"}),
        ),
        body(
            "trips",
            json!({"start_time": "2026-03-09 09:00:00", "end_time": "2026-03-10 18:00:00",
                "reason": "training", "approve_apply_time": "2026-03-01 10:00:00",
                "approve_pass_time": "2026-03-01 12:00:00", "transportation": [1, 4], "trip_type": 2,
                "remarks": "bring slides",
                "departure": {"region_level": "l1", "region_id": "6863333418483058189"},
                "destinations": [{"region_level": "l3", "region_id": "1"}, {"region_level": "l3", "region_id": "2"}],
                "idempotent_id": "TR-1"}),
        ),
    ];
    assert_eq!(got.len(), 4);
    for (i, (g, mut e)) in got.iter().zip(expected).enumerate() {
        e["user_approval"]["user_id"] = json!("u1");
        e["user_approval"]["date"] = json!(["20260302", "20260303", "20260307", "20260309"][i]);
        let want = records(&[Unit::Json { line: 1, value: e }]).unwrap();
        assert_eq!(g.payload, want[0].payload, "row {}", i + 2);
        assert_eq!(g.ukey, want[0].ukey, "row {}", i + 2);
    }
    let ot: Value = serde_json::from_str(&got[2].payload).unwrap();
    assert_eq!(ot["user_approval"]["overtime_works"][0]["type"], 2);
}

#[test]
fn an_overtime_row_without_or_with_a_bad_overtime_type_names_the_column() {
    let head =
        "type,user_id,date,start_time,end_time,reason,unit,duration,category,overtime_type\n";
    let e = csv_records(&format!(
        "{head}overtime,u1,20260307,2026-03-07 09:00:00,2026-03-07 13:00:00,x,2,4,2,\n"
    ))
    .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 2);
    assert!(e[0].message.contains("overtime_type"), "{e:?}");
    let e = csv_records(&format!(
        "{head}overtime,u1,20260307,2026-03-07 09:00:00,2026-03-07 13:00:00,x,2,4,2,7\n"
    ))
    .unwrap_err();
    assert!(
        e[0].message.contains("overtime_type") && e[0].message.contains('7'),
        "{e:?}"
    );
    // the flat JSON item takes the same key
    let flat = json!({"type": "overtime", "user_id": "u1", "date": "20260307", "duration": 4,
        "unit": 2, "category": 2, "overtime_type": 1,
        "start_time": "2026-03-07 09:00:00", "end_time": "2026-03-07 13:00:00"});
    let r = records(&[Unit::Json {
        line: 1,
        value: flat,
    }])
    .unwrap();
    let p: Value = serde_json::from_str(&r[0].payload).unwrap();
    assert_eq!(p["user_approval"]["overtime_works"][0]["type"], 1);
    // and a leave may not carry it
    let e = csv_records(&format!(
        "{head}leave,u1,20260307,2026-03-07 09:00:00,2026-03-07 13:00:00,x,1,,,1\n"
    ))
    .unwrap_err();
    assert!(
        e[0].message
            .contains("column overtime_type: does not apply to a leave"),
        "{e:?}"
    );
}
