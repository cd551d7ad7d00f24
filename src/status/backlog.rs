//! The `backlog` member of `clockbridge status`: how far behind the punches are (what is left to send,
//! its oldest punch as an administrator reads it, and the time to drain it at the running daemon's
//! delivery rate), and its `backlog:` line.

use serde::Serialize;

use crate::config::Config;
use crate::queue::{BacklogReading, StateCounts};

/// How far behind the punches are: what is left to send, its oldest punch, and how long sending
/// it takes at the current rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BacklogStatus {
    /// Punches pending or in flight.
    pub outstanding: u64,
    /// Of them, live punches pending: claimed before the others.
    pub live_pending: u64,
    /// The event time (Unix seconds) of the oldest punch pending or in flight.
    pub oldest_pending_event_time: Option<i64>,
    /// The same time as an administrator reads it: in its device's time zone (the gateway's for a
    /// device no longer configured), with the offset, `2026-03-02 08:00:00 +08:00`.
    pub oldest_pending_event_local: Option<String>,
    /// The device of that punch.
    pub oldest_pending_device_id: Option<String>,
    /// How old that punch is (seconds).
    pub oldest_pending_age_secs: Option<i64>,
    /// Punches delivered per second by the running daemon over the last 10 s (`None`: not
    /// running, or nothing delivered in that time).
    pub delivery_rate_per_sec: Option<f64>,
    /// `outstanding` / `delivery_rate_per_sec`, rounded up: 0 when nothing is outstanding, `None`
    /// when there is no rate to go by.
    pub drain_eta_secs: Option<i64>,
}

impl BacklogStatus {
    /// From the queue's reading, the punch lane's counts, the running daemon's rate and the
    /// configuration (for the devices' zones); `now` in Unix ms.
    pub(super) fn new(
        cfg: &Config,
        reading: BacklogReading,
        counts: StateCounts,
        rate: Option<f64>,
        now: i64,
    ) -> BacklogStatus {
        let outstanding = counts.outstanding();
        let (time, device) = reading.oldest.clone().unzip();
        let local = reading.oldest.as_ref().and_then(|(t, dev)| {
            let at = chrono::DateTime::from_timestamp(*t, 0)?;
            let tz = cfg.devices.iter().find(|d| &d.id == dev).map(|d| d.tz());
            Some(match tz {
                Some(tz) => at.with_timezone(&tz).format(LOCAL_FORMAT).to_string(),
                None => at
                    .with_timezone(&chrono::Local)
                    .format(LOCAL_FORMAT)
                    .to_string(),
            })
        });
        let rate = rate.filter(|r| *r > 0.0);
        BacklogStatus {
            outstanding,
            live_pending: reading.live_pending,
            oldest_pending_event_time: time,
            oldest_pending_event_local: local,
            oldest_pending_device_id: device,
            oldest_pending_age_secs: time.map(|t| (now / 1000 - t).max(0)),
            delivery_rate_per_sec: rate,
            drain_eta_secs: match (outstanding, rate) {
                (0, _) => Some(0),
                (n, Some(r)) => Some((n as f64 / r).ceil() as i64),
                (_, None) => None,
            },
        }
    }
}

/// How `status` writes a time for an administrator: local, with the offset.
const LOCAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S %:z";

/// A duration for a person: `41 s`, `12 min`, `3 h 5 min`, `30 d`.
fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s => format!("{} d", s / 86_400),
    }
}

/// The `backlog:` line.
pub(super) fn render_backlog(b: &BacklogStatus, running: bool) -> String {
    if b.outstanding == 0 {
        return "backlog:   none (no punch waiting to be sent)\n".to_string();
    }
    let mut o = format!(
        "backlog:   {} punch{} to send ({} live)",
        b.outstanding,
        if b.outstanding == 1 { "" } else { "es" },
        b.live_pending
    );
    if let (Some(local), Some(dev), Some(age)) = (
        &b.oldest_pending_event_local,
        &b.oldest_pending_device_id,
        b.oldest_pending_age_secs,
    ) {
        o.push_str(&format!(
            "; oldest {local} ({dev}, {} old)",
            human_secs(age)
        ));
    }
    match (b.drain_eta_secs, b.delivery_rate_per_sec) {
        (Some(eta), Some(rate)) => o.push_str(&format!(
            "; about {} to drain at {rate:.0} punches/s",
            human_secs(eta)
        )),
        _ if !running => o.push_str("; time to drain unknown (the daemon is not running)"),
        _ => o.push_str("; time to drain unknown (nothing delivered in the last 10 s)"),
    }
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_with_env(
            r#"
[feishu]
app_id = "cli_test"
app_secret = "s"
[queue]
path = "/tmp/q.db"
[[devices]]
id = "door-1"
kind = "tcp"
mode = "listen"
address = "127.0.0.1:0"
timezone = "Asia/Shanghai"
"#,
            "test.toml",
            std::iter::empty(),
        )
        .unwrap()
    }

    #[test]
    fn the_backlog_says_its_oldest_punch_in_its_clocks_zone_and_the_time_to_drain_it() {
        let cfg = config();
        // 2026-03-02 00:00:00 UTC, 30 days before `now`
        let (t, now) = (1_772_409_600, (1_772_409_600 + 30 * 86_400) * 1000);
        let reading = BacklogReading {
            oldest: Some((t, "door-1".into())),
            live_pending: 1,
        };
        let counts = StateCounts {
            pending: 97_000,
            in_flight: 500,
            ..StateCounts::default()
        };
        let b = BacklogStatus::new(&cfg, reading.clone(), counts, Some(2_437.5), now);
        assert_eq!(b.outstanding, 97_500);
        assert_eq!(b.oldest_pending_event_time, Some(t));
        assert_eq!(
            b.oldest_pending_event_local.as_deref(),
            Some("2026-03-02 08:00:00 +08:00")
        );
        assert_eq!(b.oldest_pending_age_secs, Some(30 * 86_400));
        assert_eq!(b.drain_eta_secs, Some(40));
        assert_eq!(
            render_backlog(&b, true),
            "backlog:   97500 punches to send (1 live); oldest 2026-03-02 08:00:00 +08:00 (door-1, 30 d old); about 40 s to drain at 2438 punches/s\n"
        );
        // no rate: unknown, and why
        let b = BacklogStatus::new(&cfg, reading.clone(), counts, None, now);
        assert_eq!(b.drain_eta_secs, None);
        assert!(render_backlog(&b, true)
            .ends_with("; time to drain unknown (nothing delivered in the last 10 s)\n"));
        assert!(render_backlog(&b, false)
            .ends_with("; time to drain unknown (the daemon is not running)\n"));
        // a device no longer configured: the gateway's zone, still with its offset
        let gone = BacklogReading {
            oldest: Some((t, "door-9".into())),
            live_pending: 0,
        };
        let b = BacklogStatus::new(&cfg, gone, counts, None, now);
        let local = b.oldest_pending_event_local.unwrap();
        assert!(
            chrono::DateTime::parse_from_str(&local, "%Y-%m-%d %H:%M:%S %:z")
                .is_ok_and(|d| d.timestamp() == t),
            "{local}"
        );
        // nothing outstanding: drained
        let b = BacklogStatus::new(
            &cfg,
            BacklogReading::default(),
            StateCounts::default(),
            None,
            now,
        );
        assert_eq!(
            (b.drain_eta_secs, b.oldest_pending_event_time),
            (Some(0), None)
        );
        assert_eq!(
            render_backlog(&b, true),
            "backlog:   none (no punch waiting to be sent)\n"
        );
        assert_eq!(
            [59, 120, 7_199, 7_260, 200_000].map(human_secs),
            ["59 s", "2 min", "119 min", "2 h 1 min", "2 d"]
        );
    }
}
