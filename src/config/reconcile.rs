//! `[reconcile]`: the daemon's scheduled reconcile (off by default) and the pace of every
//! reconcile's queries.

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[reconcile]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// `"daily HH:MM"` (the gateway's local time): the daemon reconciles "yesterday" of each
    /// device (in the device's zone) then. Absent: no scheduled check.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Queries per second to `user_flows/query` (its own budget of 50 per app, apart from the
    /// writes'); one reconcile queries at a time per queue.
    #[serde(default = "default_rps")]
    pub max_requests_per_second: u32,
}

fn default_rps() -> u32 {
    49
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            schedule: None,
            max_requests_per_second: default_rps(),
        }
    }
}

impl ReconcileConfig {
    /// The time of day of the scheduled check, if there is one (checked at load).
    pub fn daily_at(&self) -> Option<NaiveTime> {
        self.schedule
            .as_deref()
            .and_then(|s| parse_schedule(s).ok())
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.schedule {
            parse_schedule(s)
                .map_err(|reason| ConfigError::invalid("reconcile.schedule", s, reason))?;
        }
        if self.max_requests_per_second == 0 || self.max_requests_per_second > 50 {
            return Err(ConfigError::invalid(
                "reconcile.max_requests_per_second",
                self.max_requests_per_second,
                "must be between 1 and 50 (the platform's limit for user_flows/query)",
            ));
        }
        Ok(())
    }
}

/// `daily HH:MM` -> the time of day.
pub fn parse_schedule(text: &str) -> Result<NaiveTime, String> {
    let bad = || {
        "is not a schedule: write \"daily HH:MM\" (e.g. \"daily 02:30\"), in the gateway's local time".to_string()
    };
    let rest = text.trim().strip_prefix("daily").ok_or_else(bad)?;
    if !rest.starts_with(char::is_whitespace) {
        return Err(bad());
    }
    NaiveTime::parse_from_str(rest.trim(), "%H:%M").map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_daily_at_a_time_of_day() {
        assert_eq!(
            parse_schedule("daily 02:30").unwrap(),
            NaiveTime::from_hms_opt(2, 30, 0).unwrap()
        );
        for bad in [
            "daily",
            "daily 25:00",
            "weekly 02:30",
            "02:30",
            "daily02:30",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
