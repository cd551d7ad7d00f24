//! How a reconcile reads: the text for the operator and HR (per device, per day, the zone named),
//! and the CSV for HR, one row per punch that is not confirmed, with where it is stuck and what to
//! do. `--json` is the [`Reconciliation`] itself (Unix seconds, dates as `YYYY-MM-DD`).

use std::fmt::Write as _;
use std::path::Path;

use chrono_tz::Tz;

use super::report::{Outcome, Unconfirmed};
use super::{Reconciliation, EXIT_MATCHED, EXIT_MISMATCH, EXIT_UNDELIVERED};
use crate::device_time::DeviceTimes;

/// The zone times outside a device are shown in: the devices' zone when they share one, else UTC.
fn report_zone(rec: &Reconciliation) -> Tz {
    let mut zones = rec.zones.iter().map(|(_, z)| z.as_str());
    match zones.next() {
        Some(first) if zones.all(|z| z == first) => first.parse().unwrap_or(Tz::UTC),
        _ => Tz::UTC,
    }
}

/// The text report.
pub fn text(rec: &Reconciliation, times: &DeviceTimes) -> String {
    let mut o = String::new();
    let zones: Vec<String> = rec.zones.iter().map(|(d, z)| format!("{d} {z}")).collect();
    let _ = writeln!(
        o,
        "reconcile {} to {} ({} day{}; each device's days in its own zone: {})",
        rec.from,
        rec.to,
        (rec.to - rec.from).num_days() + 1,
        if rec.to > rec.from { "s" } else { "" },
        if zones.is_empty() {
            "no punches".to_string()
        } else {
            zones.join(", ")
        }
    );
    let c = &rec.cost;
    let _ = writeln!(
        o,
        "asked Feishu (user_flows/query) for {} users: {} request{} (the least its limits allow: {}), {} rate-limited, {:.1} s",
        rec.users_asked,
        c.requests,
        if c.requests == 1 { "" } else { "s" },
        c.minimum_requests,
        c.rate_limited,
        c.query_secs
    );
    for d in &rec.matched.devices {
        let _ = writeln!(
            o,
            "\ndevice {} ({}{})",
            d.device,
            d.timezone,
            if d.configured {
                ""
            } else {
                ": not in the configuration, UTC days"
            }
        );
        let _ = writeln!(
            o,
            "  {:<10}  {:>9}  {:>11}  {:>7}  {:>5}  {:>8}",
            "date", "confirmed", "not visible", "pending", "dead", "unmapped"
        );
        let rows = d.days.iter().map(|(k, v)| (k.to_string(), v));
        for (date, v) in rows.chain(std::iter::once(("total".to_string(), &d.total))) {
            let _ = writeln!(
                o,
                "  {:<10}  {:>9}  {:>11}  {:>7}  {:>5}  {:>8}",
                date, v.confirmed, v.not_visible, v.pending, v.dead, v.unmapped
            );
        }
    }
    let t = &rec.matched.total;
    let _ = writeln!(
        o,
        "\nall devices: {} punches: {} confirmed in Feishu, {} delivered but not visible, {} not delivered yet ({} pending, {} dead, {} unmapped)",
        t.total(), t.confirmed, t.not_visible, t.undelivered(), t.pending, t.dead, t.unmapped
    );
    if rec.matched.matched_by_external_id > 0 {
        let _ = writeln!(
            o,
            "  ({} confirmed by external_id: the platform returned them without their idempotent_id)",
            rec.matched.matched_by_external_id
        );
    }
    let zone = report_zone(rec);
    let show = |t: i64| crate::device_time::show_in(zone, t);
    let other = &rec.matched.other_sources;
    let _ = writeln!(
        o,
        "\nother sources: {} flows in Feishu for these users and days that clockbridge did not send (the app, another gateway): listed apart, never re-sent",
        other.len()
    );
    for f in other.iter().take(20) {
        let _ = writeln!(
            o,
            "  {} user {} record {} type {} {:?}",
            show(f.check_time),
            f.user_id,
            f.record_id,
            f.flow_type,
            f.comment
        );
    }
    if other.len() > 20 {
        let _ = writeln!(
            o,
            "  ... and {} more (--json lists them all)",
            other.len() - 20
        );
    }
    let pruned = &rec.matched.pruned_from_queue;
    if !pruned.is_empty() {
        let _ = writeln!(
            o,
            "sent by clockbridge, no longer in the queue (pruned after queue.retention_days): {} flows, confirmed in Feishu",
            pruned.len()
        );
    }
    if !rec.clocks.is_empty() {
        let _ = writeln!(o, "\nclocks:");
    }
    for c in &rec.clocks {
        let mut line = format!("  {} ({}): ", c.device, c.kind);
        if let Some(n) = c.counted.device_records {
            let _ = write!(line, "{n} records on the clock, ");
        }
        if let Some(w) = c.counted.watermark {
            let _ = write!(line, "watermark {w}, ");
        }
        if let Some(r) = c.counted.range_records {
            let _ = write!(
                line,
                "{r} in the range (queue: {}), ",
                c.queue_rows_in_range
            );
        }
        let _ = write!(line, "{} rows in the queue", c.queue_rows);
        if let Some(note) = &c.note {
            let _ = write!(line, ": {note}");
        } else if c.missing_from_queue > 0 {
            let _ = write!(line, ": {} records the clock holds are NOT in the queue (the watermark moved past them?): export the clock's log and run clockbridge import --device {} on it (punches already queued are recognised as duplicates)", c.missing_from_queue, c.device);
        } else if c.not_read_yet > 0 {
            let _ = write!(
                line,
                ": {} records not read yet (the daemon reads them at its next poll)",
                c.not_read_yet
            );
        } else {
            line.push_str(": agrees");
        }
        let _ = writeln!(o, "{line}");
    }
    if let Some(r) = &rec.requeue {
        let _ = writeln!(
            o,
            "\nrequeue: {} delivered-but-not-visible punches put back to pending. This is safe: each is the same record with the same idempotent_id, and the platform deduplicates by idempotent_id, so none can be counted twice.",
            r.requeued
        );
        if !r.daemon_running {
            let _ = writeln!(o, "  no daemon is running: they are sent when it starts; run reconcile again afterwards to see the change");
        } else {
            let _ = writeln!(
                o,
                "  re-sent: {} delivered again; now visible in Feishu: {}; still not visible: {}",
                r.delivered_again, r.now_visible, r.still_not_visible
            );
        }
    }
    let unknown = rec.matched.unconfirmed.iter().map(|u| u.device.as_str());
    if let Some(note) = times.note(unknown) {
        let _ = writeln!(o, "({note})");
    }
    let asked = rec.clocks.iter().any(|c| c.note.is_none());
    let matched = if asked {
        "every punch of the range is in Feishu, and the clocks that can be asked agree with the queue"
    } else {
        "every punch of the range is in Feishu (no clock could be asked what it holds)"
    };
    let verdict = match rec.exit_code() {
        EXIT_MATCHED => matched,
        EXIT_MISMATCH => "MISMATCH: punches are missing from Feishu or from the queue (see above; --csv lists each one)",
        EXIT_UNDELIVERED => "nothing is missing, but some punches are not delivered yet (see above; --csv lists each one)",
        _ => "",
    };
    let _ = writeln!(o, "\nresult: {verdict} (exit {})", rec.exit_code());
    o
}

/// Where a punch is stuck and what to do, for HR.
fn advice(u: &Unconfirmed, requeued: bool) -> (&'static str, String, String) {
    match u.outcome {
        Outcome::NotVisible if requeued => (
            "requeued",
            "re-sent by clockbridge (same idempotent_id)".into(),
            "nothing: run reconcile again to confirm it".into(),
        ),
        Outcome::NotVisible => (
            "delivered, not visible in Feishu",
            "Feishu: accepted, then judged invalid or lost".into(),
            "run clockbridge reconcile --requeue (safe: the platform deduplicates by idempotent_id)".into(),
        ),
        Outcome::Pending => (
            "pending",
            "clockbridge queue: waiting to be sent".into(),
            "nothing: the daemon sends it; if it stays, see clockbridge status".into(),
        ),
        Outcome::Dead => (
            "dead letter",
            format!(
                "clockbridge dead letters: {}",
                u.detail.as_deref().unwrap_or("refused")
            ),
            format!("fix the cause, then clockbridge dlq retry {}", u.row_id),
        ),
        Outcome::Unmapped => (
            "unmapped",
            format!("clockbridge queue: device user {} has no Feishu user", u.device_user),
            "add the user to the mapping (clockbridge unmapped lists them)".into(),
        ),
        Outcome::Confirmed => ("confirmed", String::new(), String::new()),
    }
}

/// Writes the CSV for HR: one row per punch not confirmed.
pub fn csv(rec: &Reconciliation, times: &DeviceTimes, path: &Path) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "device",
        "device_user",
        "user_id",
        "local_time",
        "state",
        "where_stuck",
        "what_to_do",
        "idempotent_id",
    ])?;
    let requeued = rec.requeue.as_ref().is_some_and(|r| r.requeued > 0);
    for u in &rec.matched.unconfirmed {
        let (state, stuck, todo) = advice(u, requeued);
        w.write_record([
            u.device.as_str(),
            u.device_user.as_str(),
            u.user_id.as_deref().unwrap_or(""),
            times.show(&u.device, u.event_time).as_str(),
            state,
            stuck.as_str(),
            todo.as_str(),
            u.idempotent_id.as_str(),
        ])?;
    }
    w.flush()
}
