//! The wire format against examples we did not write (`tests/fixtures/adms/`, sources in its
//! README): the vendor document's handshake reply and ATTLOG layout, and a real terminal's captured
//! commands and command results.

use super::*;

const VENDOR_HANDSHAKE: &str =
    include_str!("../../../tests/fixtures/adms/vendor-handshake-reply.txt");
const COMMANDS: &str = include_str!("../../../tests/fixtures/adms/capture-getrequest-commands.txt");
const RESULT_SINGLE: &[u8] =
    include_bytes!("../../../tests/fixtures/adms/capture-devicecmd-single.txt");
const RESULT_BATCHED: &[u8] =
    include_bytes!("../../../tests/fixtures/adms/capture-devicecmd-batched.txt");
const RESULT_MULTILINE: &[u8] =
    include_bytes!("../../../tests/fixtures/adms/capture-devicecmd-multiline.txt");
const ATTLOG_CRLF: &[u8] = include_bytes!("../../../tests/fixtures/adms/layout-attlog-crlf.txt");

fn keys(reply: &str) -> Vec<String> {
    reply
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) => k.to_string(),
            None => l.split(':').next().unwrap_or("").to_string(),
        })
        .collect()
}

#[test]
fn the_handshake_reply_has_every_option_of_the_vendor_example_in_its_order() {
    let ours = handshake_reply(&Handshake {
        sn: "0316144680030",
        att_stamp: None,
        op_stamp: Some("9999"),
        error_delay_secs: 30,
        delay_secs: 10,
        utc_offset_secs: 8 * 3600,
        realtime: true,
    });
    let vendor = keys(VENDOR_HANDSHAKE);
    let mine = keys(&ours);
    // ours adds ServerVer and PushProtVer at the end, after the vendor's options in their order
    assert_eq!(&mine[..vendor.len()], &vendor[..], "{ours}");
    assert_eq!(&mine[vendor.len()..], &["ServerVer", "PushProtVer"]);
    // and the values the vendor example gives for the same settings (TransFlag asks for no photos)
    for line in VENDOR_HANDSHAKE.lines() {
        if line.starts_with("TransFlag") || line.starts_with("OPERLOGStamp") {
            continue;
        }
        assert!(ours.lines().any(|l| l == line), "{line:?} not in {ours}");
    }
    assert!(ours.contains("OPERLOGStamp=9999\n"));
    assert!(ours.ends_with('\n') && !ours.contains('\r'));
}

#[test]
fn the_time_zone_is_hours_on_the_hour_and_minutes_otherwise() {
    assert_eq!(timezone_value(8 * 3600), "8");
    assert_eq!(timezone_value(0), "0");
    assert_eq!(timezone_value(-5 * 3600), "-5");
    assert_eq!(timezone_value(5 * 3600 + 1800), "330");
    assert_eq!(timezone_value(5 * 3600 + 2700), "345");
    assert_eq!(timezone_value(-(3 * 3600 + 1800)), "-210");
}

#[test]
fn command_lines_have_the_captured_form() {
    let first = COMMANDS.lines().next().unwrap();
    assert_eq!(command_line("1", "INFO"), format!("{first}\n"));
    let third = COMMANDS.lines().nth(2).unwrap();
    assert_eq!(
        command_line(
            "3",
            "DATA UPDATE USERINFO PIN=1001\tName=John Doe\tPrivilege=0\tCard=12345678"
        ),
        format!("{third}\n")
    );
}

#[test]
fn command_results_are_read_in_the_three_captured_forms() {
    let one = parse_cmd_results(RESULT_SINGLE);
    assert_eq!(
        one,
        vec![CmdResult {
            id: "1".into(),
            ret: Some(0),
            cmd: "INFO".into(),
            fields: vec![],
        }]
    );
    let batched = parse_cmd_results(RESULT_BATCHED);
    let ids: Vec<(&str, Option<i64>, &str)> = batched
        .iter()
        .map(|r| (r.id.as_str(), r.ret, r.cmd.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("1", Some(0), "DATA"),
            ("2", Some(0), "DATA"),
            ("3", Some(0), "CHECK")
        ]
    );
    let multi = parse_cmd_results(RESULT_MULTILINE);
    assert_eq!(multi.len(), 1);
    assert_eq!((multi[0].id.as_str(), multi[0].ret), ("32", Some(0)));
    assert_eq!(multi[0].cmd, "Shell");
    assert_eq!(
        multi[0].get("content"),
        Some("Tue Mar 24 16:12:26 GMT 2026")
    );
    // a verify answer in either form
    let v = parse_cmd_results(b"ID=CB7&Return=0&CMD=VERIFY SUM&AttlogSum=120\n");
    assert_eq!(v[0].get("AttlogSum"), Some("120"));
    let v = parse_cmd_results(b"ID=CB7&Return=0&CMD=VERIFY SUM\r\nAttlogSum=121\r\n");
    assert_eq!(v[0].get("AttlogSum"), Some("121"));
    // no id: nothing to match it to
    assert!(parse_cmd_results(b"Return=0&CMD=INFO\n").is_empty());
}

#[test]
fn attlog_lines_of_the_vendor_layout_parse_with_crlf_and_extra_columns() {
    let ps: Vec<Punch> = lines(ATTLOG_CRLF)
        .map(|(_, l)| parse_attlog_line("lobby", l).unwrap())
        .collect();
    assert_eq!(ps.len(), 3);
    assert_eq!(ps[0].device_user_id, "1001");
    assert_eq!(ps[0].local_time.to_string(), "2026-11-02 08:59:12");
    assert_eq!((ps[0].state, ps[0].verify), (Some(0), Some(1)));
    assert_eq!((ps[2].state, ps[2].verify), (Some(1), Some(15)));
    // blank lines are skipped, a bad line is an error of its own
    let body = b"\r\n1\t2026-11-02 08:00:00\t0\t1\n\nnot a punch\n";
    let got: Vec<_> = lines(body)
        .map(|(n, l)| (n, parse_attlog_line("lobby", l).is_ok()))
        .collect();
    assert_eq!(got, vec![(2, true), (4, false)]);
}

#[test]
fn operlog_users_are_read_in_utf8_and_gb18030() {
    let (gb, _, _) =
        encoding_rs::GB18030.encode("USER PIN=1002\tName=王伟\tPri=0\tPasswd=\tCard=\tGrp=1");
    let mut body =
        b"OPLOG 4\t0\t2026-11-02 08:00:00\t0\t0\t0\t0\r\nUSER PIN=1001\tName=Li Lei\tPri=0\r\n"
            .to_vec();
    body.extend_from_slice(&gb);
    body.extend_from_slice(
        b"\r\nFP PIN=1001\tFID=6\tSize=1\tValid=1\tTMP=AAAA\r\nUSER Name=nobody\r\n",
    );
    let op = parse_operlog(&body);
    assert_eq!(
        op.users,
        vec![
            ("1001".to_string(), "Li Lei".to_string()),
            ("1002".to_string(), "王伟".to_string())
        ]
    );
    assert_eq!((op.oplogs, op.templates, op.unknown), (1, 1, 1));
}

#[test]
fn queries_are_decoded_and_routed() {
    let q = parse_query("SN=CQUJ230160089&options=all&pushver=2.4.1&language=69");
    assert_eq!(q.sn.as_deref(), Some("CQUJ230160089"));
    assert_eq!(route("GET", "/iclock/cdata", &q), Route::Handshake);
    let q = parse_query("SN=A1&table=ATTLOG&Stamp=9999");
    assert_eq!(q.stamp.as_deref(), Some("9999"));
    assert_eq!(route("POST", "/iclock/cdata", &q), Route::AttLog);
    assert_eq!(route("POST", "/iclock/cdata.aspx", &q), Route::AttLog);
    let q = parse_query("SN=A1&table=OPERLOG&Stamp=1");
    assert_eq!(route("POST", "/iclock/cdata", &q), Route::OperLog);
    let q = parse_query("SN=A1&table=ATTPHOTO");
    assert_eq!(
        route("POST", "/iclock/cdata", &q),
        Route::OtherTable("ATTPHOTO".into())
    );
    let q = parse_query("SN=A1&INFO=Ver%208.0.4.7-20200203,25,30,1200,10.0.3.7,10,7");
    assert_eq!(route("GET", "/iclock/getrequest", &q), Route::GetRequest);
    let info = parse_info_param(q.info.as_deref().unwrap());
    assert_eq!(info.firmware.as_deref(), Some("Ver 8.0.4.7-20200203"));
    assert_eq!(
        (info.users, info.fingerprints, info.records),
        (Some(25), Some(30), Some(1200))
    );
    assert_eq!(info.ip.as_deref(), Some("10.0.3.7"));
    assert_eq!(route("POST", "/iclock/devicecmd", &q), Route::DeviceCmd);
    assert_eq!(route("GET", "/iclock/ping", &q), Route::Ping);
    assert_eq!(route("GET", "/other", &q), Route::NotFound);
    assert_eq!(route("DELETE", "/iclock/cdata", &q), Route::NotFound);
}

#[test]
fn an_options_body_gives_the_firmware_and_counts() {
    let body = b"~DeviceName=SpeedFace-V5L-RFID[TI]\nFWVersion=ZAM180-NF-Ver1.1.17\nIPAddress=192.168.1.235\nUserCount=2,FPCount=0,TransactionCount=7\n";
    let i = parse_options(body);
    assert_eq!(i.firmware.as_deref(), Some("ZAM180-NF-Ver1.1.17"));
    assert_eq!(i.device_name.as_deref(), Some("SpeedFace-V5L-RFID[TI]"));
    assert_eq!(
        (i.users, i.fingerprints, i.records),
        (Some(2), Some(0), Some(7))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let _ = parse_operlog(&junk);
    let _ = parse_cmd_results(&junk);
    let _ = parse_options(&junk);
    for (_, l) in lines(&junk) {
        let _ = parse_attlog_line("x", l);
    }
    let _ = parse_query(&String::from_utf8_lossy(&junk));
}
