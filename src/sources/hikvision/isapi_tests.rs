//! Unit tests of the ISAPI documents, on the shapes of the public captures (see
//! `docs/hikvision-protocol.md`).

use super::*;

#[test]
fn an_acs_event_page_reads_as_the_documented_example() {
    let body = r#"{"AcsEvent": {"searchID": "abc", "responseStatusStrg": "MORE", "numOfMatches": 30, "totalMatches": 1234,
      "InfoList": [{"major": 5, "minor": 75, "time": "2026-12-01T08:59:01+08:00", "employeeNoString": "1001",
                    "name": "张三", "cardReaderNo": 1, "doorNo": 1, "serialNo": 4711,
                    "currentVerifyMode": "face", "attendanceStatus": "checkIn", "mask": "no"},
                   {"major": 5, "minor": 22, "time": "2026-12-01T09:00:00", "serialNo": "4712"},
                   {"major": "x", "time": 7}]}}"#;
    let p = parse_acs_event_page(body.as_bytes()).unwrap();
    assert_eq!(p.status, SearchStatus::More);
    assert_eq!((p.num_of_matches, p.total_matches), (30, Some(1234)));
    let e = &p.events[0];
    assert_eq!((e.major, e.minor, e.serial), (5, 75, Some(4711)));
    assert_eq!(e.employee.as_deref(), Some("1001"));
    assert_eq!(e.name.as_deref(), Some("张三"));
    assert_eq!(e.attendance_status.as_deref(), Some("checkIn"));
    assert!(matches!(e.time, Some(EventTime::Offset(_))));
    // no offset: local; a serial number as a string
    assert!(matches!(p.events[1].time, Some(EventTime::Local(_))));
    assert_eq!(p.events[1].serial, Some(4712));
    // a member of the wrong type spoils that event only
    assert_eq!((p.events[2].major, p.events[2].time), (0, None));
    for bad in [&b"not json"[..], b"{}", b"{\"AcsEvent\":{}}"] {
        assert!(parse_acs_event_page(bad).is_err());
    }
    let ok =
        parse_acs_event_page(br#"{"AcsEvent":{"responseStatusStrg":"NO MATCH","numOfMatches":0}}"#)
            .unwrap();
    assert_eq!((ok.status, ok.events.len()), (SearchStatus::NoMatch, 0));
}

#[test]
fn alerts_read_from_json_and_xml_and_heartbeats_are_told_apart() {
    let json = r#"{"ipAddress":"10.0.3.20","dateTime":"2026-12-01T08:59:01+08:00","eventType":"AccessControllerEvent",
        "eventState":"active","AccessControllerEvent":{"majorEventType":5,"subEventType":75,"employeeNoString":"1001",
        "serialNo":4711,"attendanceStatus":"checkIn"}}"#;
    let Alert::Event(e) = parse_alert(json.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!((e.major, e.minor, e.serial), (5, 75, Some(4711)));
    // the alert's dateTime stands for the event's time
    assert!(e.time.is_some());
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<ipAddress>10.0.3.20</ipAddress><dateTime>2026-12-01T08:59:01+08:00</dateTime>
<eventType>AccessControllerEvent</eventType><eventState>active</eventState>
<AccessControllerEvent><majorEventType>5</majorEventType><subEventType>38</subEventType>
<employeeNoString>A&amp;1</employeeNoString><serialNo>12</serialNo></AccessControllerEvent>
</EventNotificationAlert>"#;
    let Alert::Event(e) = parse_alert(xml.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!((e.minor, e.serial), (38, Some(12)));
    assert_eq!(e.employee.as_deref(), Some("A&1"));
    assert_eq!(
        parse_alert(br#"{"eventType":"heartBeat","dateTime":"2026-12-01T08:59:01+08:00"}"#),
        Ok(Alert::Heartbeat)
    );
    assert_eq!(
        parse_alert(b"<EventNotificationAlert><eventType>videoloss</eventType><eventState>inactive</eventState></EventNotificationAlert>"),
        Ok(Alert::Heartbeat)
    );
    assert!(parse_alert(b"<a><b>").is_err());
    assert!(parse_alert(b"{\"x\":1}").is_err());
}

#[test]
fn time_and_device_info_read_from_their_xml() {
    let t = parse_time(
        br#"<?xml version="1.0" encoding="UTF-8"?><Time version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<timeMode>manual</timeMode><localTime>2026-12-01T08:59:01+08:00</localTime><timeZone>CST-8:00:00</timeZone></Time>"#,
    )
    .unwrap();
    assert_eq!(t.time_zone.as_deref(), Some("CST-8:00:00"));
    assert_eq!(
        t.local_time.local_in(chrono_tz::UTC).to_string(),
        "2026-12-01 00:59:01"
    );
    let d = parse_device_info(
        b"<DeviceInfo><deviceName>Door</deviceName><model>DS-K1T341AMF</model><serialNumber>DS-K1T341AMF20210101V0</serialNumber><firmwareVersion>V3.2.30</firmwareVersion></DeviceInfo>",
    )
    .unwrap();
    assert_eq!(d.model.as_deref(), Some("DS-K1T341AMF"));
    assert_eq!(d.serial_number.as_deref(), Some("DS-K1T341AMF20210101V0"));
    let users = parse_user_page(
        r#"{"UserInfoSearch":{"searchID":"1","responseStatusStrg":"OK","numOfMatches":2,"totalMatches":2,
        "UserInfo":[{"employeeNo":"1001","name":"张三"},{"employeeNo":"1002"}]}}"#
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(users.users, vec![("1001".to_string(), "张三".to_string())]);
    assert_eq!(
        response_status(b"<ResponseStatus><statusCode>4</statusCode><statusString>Invalid Operation</statusString><subStatusCode>notSupport</subStatusCode></ResponseStatus>")
            .as_deref(),
        Some("notSupport")
    );
}
