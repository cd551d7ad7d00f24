//! Logging malformed lines of one connection without flooding.

use std::fmt::Display;
use std::time::Instant;

use super::MALFORMED_LOGGED;
use crate::sources::formats;
use crate::sources::reconnect::LOG_EVERY;

/// Logs malformed lines of one connection without flooding: the first [`MALFORMED_LOGGED`] one by one,
/// then a count (with the latest line) at most once a minute, and the rest of the count at the end.
#[derive(Default)]
pub(super) struct MalformedLog {
    logged: u64,
    /// Not logged since the last summary.
    suppressed: u64,
    last_summary: Option<Instant>,
}

impl MalformedLog {
    pub(super) fn report(
        &mut self,
        device: &str,
        peer: &str,
        line_no: u64,
        reason: &dyn Display,
        text: Option<&[u8]>,
    ) {
        let sample = text.map(formats::sample);
        let sample = sample
            .as_deref()
            .map(|s| format!(": \"{s}\""))
            .unwrap_or_default();
        if self.logged < MALFORMED_LOGGED {
            self.logged += 1;
            let more = if self.logged == MALFORMED_LOGGED {
                " (further malformed lines from this connection are summarised once a minute)"
            } else {
                ""
            };
            tracing::warn!(
                "device {device} ({peer}): malformed line {line_no}: {reason}{sample}{more}"
            );
            self.last_summary = Some(Instant::now());
            return;
        }
        self.suppressed += 1;
        let now = Instant::now();
        if self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                "device {device} ({peer}): {} more malformed lines in the last minute; latest: line {line_no}: {reason}{sample}",
                self.suppressed
            );
            self.suppressed = 0;
            self.last_summary = Some(now);
        }
    }

    pub(super) fn finish(&mut self, device: &str, peer: &str) {
        if self.suppressed > 0 {
            tracing::warn!(
                "device {device} ({peer}): {} more malformed lines before the connection ended",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}
