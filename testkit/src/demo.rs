//! The demo (the testkit's `demo` binary): the real pipeline (TCP sources, the ZKTeco, ADMS and
//! Hikvision sources, ingest, SQLite queue, senders, Feishu client, the HR inbox) against two
//! built-in simulated text clocks, a simulated ZKTeco terminal, a simulated pushing ZKTeco terminal, a
//! simulated Hikvision terminal and the local stand-in of the platform, in a temporary directory. It
//! shows in seconds what the daemon does with the cases that matter: a connection that drops and a
//! clock that re-sends, a malformed line, a punch before 2022, a user the platform does not know, a
//! user missing from the mapping until the table gains it, a ZKTeco terminal read incrementally with
//! a comm key, its clock skew measured and a realtime punch, a ZKTeco terminal that pushes over HTTP
//! (a catch-up, a realtime punch, user names in GB18030), a Hikvision terminal read over ISAPI (its
//! failed verifications and door events never sent, a punch from its alert stream), and HR approval
//! files dropped in an inbox (one good, one bad). It checks its own figures: [`run`] fails when one
//! is not what the pipeline must give.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::hiksim::{self, HikSimConfig};
use crate::standin::{Standin, StandinConfig};
use crate::zksim::{self, RecordSize, SimConfig, SimRecord, SimUser, UserSize};
use clockbridge::config::Config;
use clockbridge::daemon::{self, RunOptions};
use clockbridge::hr::approvals::KIND as KIND_USER_APPROVAL;
use clockbridge::sources::hikvision::HikFigures;
use clockbridge::sources::zk::ZkFigures;

/// The user missing from the mapping table until the demo adds it.
const LATE_USER: &str = "9999";
/// A user mapped to an id the platform does not know.
const GHOST_USER: &str = "4444";
/// The simulated ZKTeco terminal: its id, comm key, and how far its clock is ahead of the gateway's.
const ZK_DEVICE: &str = "lobby-zk";
const ZK_COMM_KEY: u32 = 20260;
const ZK_SKEW_SECS: i64 = 42;
/// Users on the terminal (user ids 1001.., each with a name) and records in its log at the start.
const ZK_USERS: usize = 10;
const ZK_RECORDS: usize = 100;
/// The simulated terminal that pushes (ADMS / iclock): its id, serial number, and the records it
/// pushes at once (a catch-up), its users 2001.. with names in GB18030.
const ADMS_DEVICE: &str = "gate-face";
const ADMS_SN: &str = "DEMOADMS0001";
const ADMS_RECORDS: usize = 50;

/// The simulated Hikvision terminal: its id, its user's password, its events (of which the
/// successful verifications are punches) and how far its clock is behind the gateway's.
const HIK_DEVICE: &str = "gate-hik";
const HIK_PASSWORD: &str = "Demo-Passw0rd";
const HIK_EVENTS: usize = 80;
const HIK_SKEW_SECS: i64 = -17;

fn zk_user_id(i: usize) -> String {
    (1001 + i).to_string()
}

/// A good approvals file (two leaves) and a bad one (its second leave has an unknown unit) for the
/// inbox.
fn approval_files() -> (String, String) {
    let leave = |user: &str, id: &str, day: u32| {
        serde_json::json!({"type": "leave", "user_id": user, "date": format!("202603{day:02}"),
            "uniq_id": "annual", "unit": 1, "interval": 28800,
            "start_time": format!("2026-03-{day:02} 09:00:00"),
            "end_time": format!("2026-03-{day:02} 18:00:00"),
            "i18n_names": {"ch": "年假", "en": "Annual leave"}, "default_locale": "ch",
            "reason": "family", "idempotent_id": id})
    };
    let good = format!(
        "{}\n{}\n",
        leave("fs-1", "HR-LV-1001", 3),
        leave("fs-2", "HR-LV-1002", 4)
    );
    let bad = format!("{}\n{}\n", leave("fs-3", "HR-LV-1003", 5), {
        let mut l = leave("fs-4", "HR-LV-1004", 6);
        l["unit"] = 9.into();
        l
    });
    (good, bad)
}

fn line(pin: &str, t: &str, state: u8) -> String {
    format!("{pin:>9}\t{t}\t{state}\t1\t0\t0\t0\n")
}

/// Lines of one simulated clock: `n` punches of users 1..=50 on 2026-03-02, spread over the day.
fn clock_lines(n: usize, offset_secs: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let secs = 8 * 3600 + offset_secs + i * 37;
            let t = format!(
                "2026-03-02 {:02}:{:02}:{:02}",
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60
            );
            line(&(1 + i % 50).to_string(), &t, (i % 2) as u8)
        })
        .collect()
}

/// Runs the demo and returns its summary.
pub async fn run(punches: usize, keep: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("clockbridge-demo-")
        .tempdir()?;
    let users: HashSet<String> = (1..=50)
        .map(|u| format!("fs-{u}"))
        .chain([format!("fs-{LATE_USER}")])
        .chain((0..ZK_USERS).map(|i| format!("fs-{}", zk_user_id(i))))
        .chain((0..ADMS_RECORDS).map(|i| format!("fs-{}", 2001 + i)))
        .chain((1001..1006).map(|u| format!("fs-hik-{u}")))
        .collect();
    let standin = Standin::start(StandinConfig {
        latency: Duration::from_millis(20),
        known_users: Some(users),
        ..StandinConfig::default()
    })
    .await?;

    // mapping: users 1..=50 and the ghost; LATE_USER is added later
    let mapping = dir.path().join("users.csv");
    let mut csv = String::from("device_user_id,user_id,device_id\n");
    for u in 1..=50 {
        writeln!(csv, "{u},fs-{u},")?;
    }
    writeln!(csv, "{GHOST_USER},fs-ghost,")?;
    for i in 0..ZK_USERS {
        writeln!(csv, "{0},fs-{0},{ZK_DEVICE}", zk_user_id(i))?;
    }
    for i in 0..ADMS_RECORDS {
        writeln!(csv, "{0},fs-{0},{ADMS_DEVICE}", 2001 + i)?;
    }
    for u in 1001..1006 {
        writeln!(csv, "{u},fs-hik-{u},{HIK_DEVICE}")?;
    }
    std::fs::write(&mapping, &csv)?;

    // a ZKTeco terminal (the simulator speaks the binary protocol of TCP 4370): a comm key, 40-byte
    // records, 72-byte users with names, and a clock 42 s fast (in Shanghai time)
    let zk_users: Vec<SimUser> = (0..ZK_USERS)
        .map(|i| SimUser::new(i as u16 + 1, &zk_user_id(i), &format!("Staff {}", i + 1)))
        .collect();
    let zk_start = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .and_then(|d| d.and_hms_opt(7, 30, 0))
        .ok_or_else(|| anyhow::anyhow!("demo: bad start time"))?;
    let zk = zksim::start(SimConfig {
        comm_key: ZK_COMM_KEY,
        record_size: RecordSize::B40,
        user_size: UserSize::B72,
        records: zksim::generate_records(ZK_RECORDS, &zk_users, zk_start),
        users: zk_users,
        clock_offset: chrono::TimeDelta::hours(8) + chrono::TimeDelta::seconds(ZK_SKEW_SECS),
        serial_number: "DEMO0000000001".into(),
        ..SimConfig::default()
    })
    .await?;
    // a Hikvision face terminal (the simulator speaks ISAPI with digest authentication): failed
    // verifications, door events and alarms among its events, and a clock 17 s slow
    let hik_users = hiksim::generate_users(5);
    let hik_events = hiksim::generate_events(HIK_EVENTS, &hik_users, zk_start);
    let minors = clockbridge::sources::hikvision::spec::DEFAULT_EVENT_MINORS;
    let hik_punches = hik_events
        .iter()
        .filter(|e| hiksim::is_punch(e, minors))
        .count();
    let hik = hiksim::start(HikSimConfig {
        password: HIK_PASSWORD.into(),
        users: hik_users,
        events: hik_events,
        clock_skew: chrono::TimeDelta::seconds(HIK_SKEW_SECS),
        heartbeat_every: Some(Duration::from_secs(1)),
        ..HikSimConfig::default()
    })
    .await?;
    let inbox = dir.path().join("inbox").join("approvals");

    // clock A: we dial it (connect mode); it drops the connection halfway and re-sends on reconnect
    let clock_a = TcpListener::bind("127.0.0.1:0").await?;
    let a_addr = clock_a.local_addr()?;
    let mut a_lines = clock_lines(punches, 0);
    a_lines.push("this is not a punch\n".into());
    a_lines.push(line(LATE_USER, "2026-03-02 09:30:00", 0));
    a_lines.push(line("77", "2021-12-31 09:00:00", 0)); // before 2022: dead on arrival
    let half = a_lines.len() / 2;
    let a_first: String = a_lines[..half].concat();
    // on reconnect the clock re-sends its last 10 lines (fewer if it has fewer) before the rest:
    // duplicates
    let resent = half.min(10);
    let a_second: String = a_lines[half - resent..].concat();
    let a_expected_lines = a_lines.len() + resent;

    // clock B: it dials us (listen mode)
    let mut b_lines = clock_lines(punches, 17);
    b_lines.push(line(GHOST_USER, "2026-03-02 10:00:00", 0));
    let b_text: String = b_lines.concat();
    let b_expected_lines = b_lines.len();

    let listen_probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b_addr = listen_probe.local_addr()?;
    drop(listen_probe);

    let toml = format!(
        r#"
[feishu]
base_url = "{base}"
app_id = "cli_standin"
app_secret = "standin-secret"
employee_type = "employee_id"

[queue]
path = "{queue}"

[mapping]
mode = "table"
file = "{mapping}"

[sender]
linger_ms = 50

[inbox]
approvals = "{inbox}"
poll_interval = 1

[[devices]]
id = "door-1"
kind = "tcp"
mode = "connect"
address = "{a_addr}"
timezone = "Asia/Shanghai"
location_name = "HQ 1F door"
reconnect_max_secs = 1

[[devices]]
id = "door-2"
kind = "tcp"
mode = "listen"
address = "{b_addr}"
timezone = "Asia/Shanghai"
location_name = "HQ 2F door"

[[devices]]
id = "{ZK_DEVICE}"
kind = "zk"
address = "{zk_addr}"
comm_key = {ZK_COMM_KEY}
timezone = "Asia/Shanghai"
location_name = "HQ lobby"

[adms]
listen = "127.0.0.1:0"

[[devices]]
id = "{ADMS_DEVICE}"
kind = "adms"
serial_number = "{ADMS_SN}"
timezone = "Asia/Shanghai"
location_name = "HQ gate"
delay = 1

[[devices]]
id = "{HIK_DEVICE}"
kind = "hikvision"
address = "{hik_url}"
username = "admin"
password = "{HIK_PASSWORD}"
timezone = "Asia/Shanghai"
location_name = "HQ side gate"
"#,
        base = standin.base_url(),
        queue = dir.path().join("queue.db").display(),
        mapping = mapping.display(),
        inbox = inbox.display(),
        zk_addr = zk.addr(),
        hik_url = hik.url(),
    );
    std::fs::write(dir.path().join("clockbridge.toml"), &toml)?;
    let cfg = Config::from_toml_with_env(&toml, "demo", std::iter::empty())?;
    let running = daemon::start(
        cfg,
        RunOptions {
            snapshot_interval: Duration::from_millis(500),
            grace: Duration::from_secs(5),
            prune_interval: Duration::from_secs(3600),
        },
    )
    .await?;

    // a terminal that pushes: it dials the [adms] listener with a day's log (a catch-up), its users'
    // names in GB18030, and then one punch as it happens
    let adms_addr = running
        .adms_addr()
        .ok_or_else(|| anyhow::anyhow!("demo: the adms listener is not running"))?;
    let mut adms_cfg = crate::admssim::SimConfig::new(ADMS_SN, adms_addr);
    adms_cfg.gb18030_names = true;
    // no shortened ErrorDelay: the daemon attaches its pushing terminals before the listener
    // accepts, so the first request is answered (a 503 here would cost the default 30 s)
    adms_cfg.users = vec![crate::admssim::SimUser {
        pin: "2001".into(),
        name: "王伟".into(),
    }];
    let adms_day = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .ok_or_else(|| anyhow::anyhow!("demo: bad date"))?;
    let adms = crate::admssim::SimTerminal::start(
        adms_cfg,
        crate::admssim::generate_records(adms_day, ADMS_RECORDS, 2001),
    );
    let mut adms_realtime = false;

    // clock A serves two connections
    let a_task = tokio::spawn(async move {
        for chunk in [a_first, a_second] {
            let (mut s, _) = clock_a.accept().await?;
            s.write_all(chunk.as_bytes()).await?;
            s.shutdown().await?;
        }
        anyhow::Ok(())
    });
    // clock B dials the daemon's listening port once it is bound
    let b_stats = running.devices["door-2"].stats.clone();
    let b_task = tokio::spawn(async move {
        let addr = b_stats.wait_listening().await;
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b_text.as_bytes()).await?;
        s.shutdown().await?;
        anyhow::Ok(())
    });

    // the HR system drops two approval files into the inbox: written under a temporary name, then
    // renamed in, as the inbox expects
    let (good, bad) = approval_files();
    for (name, text) in [("leaves.jsonl", &good), ("more-leaves.jsonl", &bad)] {
        let part = inbox.join(format!("{name}.part"));
        std::fs::create_dir_all(&inbox)?;
        std::fs::write(&part, text)?;
        std::fs::rename(&part, inbox.join(name))?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let zk_stats = running.devices[ZK_DEVICE].stats.clone();
    let mut realtime_punch = None;
    let hik_stats = running.devices[HIK_DEVICE].stats.clone();
    let mut hik_realtime = None;
    let a_stats = running.devices["door-1"].stats.clone();
    let b_stats = running.devices["door-2"].stats.clone();
    let lines_seen = |s: &clockbridge::sources::DeviceStats| {
        s.lines_read.load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    // wait for both clocks' lines to be read and the queue to settle
    let mut released_late = false;
    loop {
        let counts = running.queue.counts().await?;
        let zk_now: ZkFigures = zk_stats.snapshot().figures();
        // once the terminal's log is read and events are subscribed, someone punches: the event
        // reaches the daemon at once, without waiting for the next poll
        if realtime_punch.is_none()
            && zk_now.watermark == Some(ZK_RECORDS as u64)
            && zk_now.realtime == Some(true)
        {
            let t = chrono::Timelike::with_nanosecond(&zk.device_time(), 0).unwrap_or(zk_start);
            let r = SimRecord::new(&zk_user_id(0), t);
            zk.add_records([r.clone()])?;
            realtime_punch = Some(r);
        }
        let zk_done = realtime_punch.is_some() && zk_now.realtime_events.unwrap_or(0) >= 1;
        let adms_acked = adms.counters().acked;
        if !adms_realtime && adms_acked == ADMS_RECORDS {
            let t = adms_day.and_hms_opt(18, 0, 0).unwrap_or_default();
            adms.punch("2001", t);
            adms_realtime = true;
        }
        let adms_done = adms_acked == ADMS_RECORDS + 1;
        let hik_now: HikFigures = hik_stats.snapshot().figures();
        if hik_realtime.is_none()
            && hik_now.serial_watermark == Some(HIK_EVENTS as u64)
            && hik_now.realtime == Some(true)
        {
            hik_realtime = Some(hik.punch("1003", 75, 0));
        }
        let hik_done = hik_realtime.is_some() && hik_now.realtime_events.unwrap_or(0) >= 1;
        let inbox_done = {
            let st = running
                .inbox_stats
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            st.get("approvals")
                .is_some_and(|i| i.files_done + i.files_rejected >= 2)
        };
        let all_read = lines_seen(&a_stats) >= a_expected_lines
            && lines_seen(&b_stats) >= b_expected_lines
            && zk_done
            && adms_done
            && hik_done
            && inbox_done;
        if all_read && counts.total.outstanding() == 0 {
            if !released_late && counts.total.unmapped > 0 {
                // the operator adds the missing user: the daemon releases the waiting punch
                std::fs::write(&mapping, format!("{csv}{LATE_USER},fs-{LATE_USER},\n"))?;
                running.reload_mapping();
                released_late = true;
            } else if counts.total.unmapped == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("demo: the pipeline did not settle within 60 s: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a_task.await??;
    b_task.await??;
    let counts = running.queue.counts().await?;
    let dead = running.queue.dead_letters(10).await?;
    let sender = running.sender_stats.snapshot();
    let devs: Vec<_> = ["door-1", "door-2"]
        .iter()
        .map(|id| (id.to_string(), running.devices[*id].stats.snapshot()))
        .collect();
    let zk_dev = zk_stats.snapshot();
    let adms_dev = running.devices[ADMS_DEVICE].stats.snapshot();
    let adms_names =
        clockbridge::queue::store::DeviceStore::new(running.queue.clone(), ADMS_DEVICE)
            .user_names()
            .await?;
    let hik_dev = hik_stats.snapshot();
    let approvals = counts
        .by_kind
        .get(KIND_USER_APPROVAL)
        .cloned()
        .unwrap_or_default();
    let hr_sent = running
        .lane_stats
        .get(KIND_USER_APPROVAL)
        .map(|s| s.snapshot().requests)
        .unwrap_or(0);
    // the pushing terminal stops first: stopped after the daemon, its next poll would fail and it
    // would wait out its ErrorDelay (30 s) before seeing the stop
    let adms_counters = adms.stop().await;
    running.stop().await;
    let zk_counters = zk.counters();
    zk.shutdown().await;
    let hik_counters = hik.counters();
    hik.shutdown();
    let rejected_report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        inbox.join("rejected").join("more-leaves.jsonl.report.json"),
    )?)?;
    let first_error = rejected_report["errors"]
        .get(0)
        .map(|e| {
            format!(
                "line {}: {}",
                e["line"],
                e["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default();
    let st = standin.stats();
    let writes = standin.write_counts();
    let written_twice = writes.values().filter(|n| **n > 1).count();
    let approvals_stored = standin.approvals().len();
    // the demo checks what it shows: CI runs it, so a regression fails there too
    // door-1: its punches, user 9999's and the 2021 one (dead); door-2: its punches and the ghost's
    // (dead); the terminal: its log and the realtime punch
    let expected_flows =
        (punches + 2) + (punches + 1) + (ZK_RECORDS + 1) + (ADMS_RECORDS + 1) + (hik_punches + 1);
    let mut wrong = Vec::new();
    if written_twice > 0 {
        wrong.push(format!("{written_twice} records written more than once"));
    }
    if counts.total.delivered as usize + counts.total.dead as usize != expected_flows + 2 {
        wrong.push(format!(
            "{} delivered + {} dead records, expected {}",
            counts.total.delivered,
            counts.total.dead,
            expected_flows + 2
        ));
    }
    if approvals_stored != 2 || approvals.delivered != 2 {
        wrong.push(format!(
            "{approvals_stored} approval items stored, {} delivered, expected 2",
            approvals.delivered
        ));
    }
    if zk_dev.queued != ZK_RECORDS as u64 + 1 {
        wrong.push(format!(
            "{ZK_DEVICE}: {} punches queued, expected {}",
            zk_dev.queued,
            ZK_RECORDS + 1
        ));
    }
    if adms_dev.queued != ADMS_RECORDS as u64 + 1 {
        wrong.push(format!(
            "{ADMS_DEVICE}: {} punches queued, expected {}",
            adms_dev.queued,
            ADMS_RECORDS + 1
        ));
    }
    if hik_dev.queued != hik_punches as u64 + 1 {
        wrong.push(format!(
            "{HIK_DEVICE}: {} punches queued, expected {}",
            hik_dev.queued,
            hik_punches + 1
        ));
    }
    if !wrong.is_empty() {
        anyhow::bail!(
            "demo: the pipeline did not do what it should: {}",
            wrong.join("; ")
        );
    }

    let mut o = String::new();
    writeln!(
        o,
        "clockbridge demo: 2 simulated text clocks, 2 simulated ZKTeco terminals (one polled, one pushing), 1 simulated Hikvision terminal and an HR inbox -> clockbridge -> local Feishu stand-in ({})",
        standin.base_url()
    )?;
    for (id, d) in &devs {
        writeln!(
            o,
            "  {id}: {} lines read, {} punches, {} newly queued, {} duplicates ignored, {} malformed, {} connection(s)",
            d.lines_read, d.punches_read, d.queued, d.duplicates, d.malformed, d.connects
        )?;
    }
    let z = &zk_dev.figures::<ZkFigures>();
    writeln!(
        o,
        "  {ZK_DEVICE} (ZKTeco, TCP 4370 protocol, comm key): {} punches, {} newly queued, {} poll(s) reading {} records, then {} realtime punch; clock {:+} s off the gateway's (measured each poll); {} connection(s)",
        zk_dev.punches_read,
        zk_dev.queued,
        z.polls.unwrap_or(0),
        ZK_RECORDS,
        z.realtime_events.unwrap_or(0),
        z.clock_skew_secs.unwrap_or(0),
        zk_counters.connections,
    )?;
    let h = &hik_dev.figures::<HikFigures>();
    writeln!(
        o,
        "  {HIK_DEVICE} (Hikvision, ISAPI with digest authentication): {} punches, {} newly queued, {} non-punch events skipped (failed verifications, door events), serial watermark {}, {} realtime punch from the alert stream; clock {:+} s off the gateway's; {} ISAPI requests",
        hik_dev.punches_read,
        hik_dev.queued,
        h.events_skipped.unwrap_or(0),
        h.serial_watermark.unwrap_or(0),
        h.realtime_events.unwrap_or(0),
        h.clock_skew_secs.unwrap_or(0),
        hik_counters.requests,
    )?;
    if let Some(r) = &realtime_punch {
        writeln!(
            o,
            "  {ZK_DEVICE}: user {} punched at {} (device time) while the daemon ran: its realtime event queued it, without waiting for a poll",
            r.user_id, r.time,
        )?;
    }
    let a = adms_dev.figures::<clockbridge::sources::adms::AdmsFigures>();
    writeln!(
        o,
        "  {ADMS_DEVICE} (ZKTeco terminal that pushes, ADMS/iclock, SN {ADMS_SN}): {} punches in {} pushes ({ADMS_RECORDS} in a catch-up, then 1 as it happened), each push answered OK only after its commit; {} getrequest poll(s); user names from its OPERLOG in GB18030: {}",
        adms_dev.queued,
        a.pushes,
        adms_counters.getrequests_ok,
        adms_names
            .iter()
            .map(|(pin, name)| format!("{pin} {name}"))
            .collect::<Vec<_>>()
            .join(", "),
    )?;
    writeln!(
        o,
        "  inbox approvals: leaves.jsonl -> done/ ({} leave items delivered in {} request(s)); more-leaves.jsonl -> rejected/, nothing of it queued ({first_error})",
        approvals.delivered, hr_sent
    )?;
    writeln!(
        o,
        "  queue (punches and HR records): {} delivered, {} dead, {} unmapped, {} pending",
        counts.total.delivered,
        counts.total.dead,
        counts.total.unmapped,
        counts.total.outstanding()
    )?;
    writeln!(
        o,
        "  user {LATE_USER} was unmapped until the mapping gained it; its punch was then delivered"
    )?;
    for d in &dead {
        writeln!(
            o,
            "  dead letter: {} user {}: {} (code {}, {:?}, log id {})",
            d.device_id,
            d.device_user_id,
            d.reason.as_deref().unwrap_or("-"),
            d.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            d.message.as_deref().unwrap_or(""),
            d.log_id.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(
        o,
        "  sender: {} requests, {} records delivered, {} rate-limited",
        sender.requests, sender.delivered, sender.rate_limited
    )?;
    writeln!(
        o,
        "  stand-in: {} records stored, {} written more than once, {} duplicate sends absorbed",
        st.records_stored, written_twice, st.records_duplicate
    )?;
    writeln!(o, "  finished in {:.2} s", started.elapsed().as_secs_f64())?;
    if keep {
        let kept = dir.keep();
        writeln!(o, "  kept {} (clockbridge.toml and queue.db): try `clockbridge --config {}/clockbridge.toml status`", kept.display(), kept.display())?;
    }
    standin.shutdown().await;
    Ok(o)
}
