//! Hikvision access-control and face terminals (`kind = "hikvision"`, the DS-K1T / DS-K1A series),
//! read over ISAPI (HTTP with digest authentication): the documents ([`isapi`]), the alert stream's
//! framing ([`multipart`]), the HTTP client with digest authentication ([`client`]), the device's
//! keys ([`spec`]), the event log's pull and watermark ([`pull`]), the source task ([`source`]) and
//! its figures ([`figures`]).
//!
//! It exists so that clockbridge reads these terminals directly: their log from a watermark, their
//! punches within a second through the alert stream, and their users' names. The protocol facts
//! the code relies on are written down, with their public sources, in `docs/hikvision-protocol.md`.
//!
//! Guarantees:
//! - Bad input from a terminal (a document that is not JSON or XML, a stream that is not multipart,
//!   a time that does not exist) is an error value or a counted, skipped event, never a panic.
//! - Only successful verifications (major 5, a minor of `event_minors`) of a known user become
//!   punches: failures, door events, alarms and strangers are never sent.
//! - The password appears in no log line, error message, status or `check-config` output.

pub mod client;
pub mod count;
pub mod figures;
pub mod isapi;
pub mod multipart;
pub mod pull;
pub mod source;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

pub use client::{HikClient, HikError};
pub use figures::HikFigures;
pub use spec::{HikSpec, Password};

use super::kind::{self, Claim, Device, DeviceSpec, Gauge, Keys, Kind, Members, SourceContext};
use super::kind::{SourceTask, SpecError};

/// The `hikvision` kind, as registered in [`super::KINDS`].
pub static KIND: HikKind = HikKind;

/// Hikvision terminals.
pub struct HikKind;

impl Kind for HikKind {
    fn name(&self) -> &'static str {
        "hikvision"
    }
    fn keys(&self) -> &'static [&'static str] {
        spec::HIK_KEYS
    }
    fn parse(&self, _device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError> {
        let mut spec: HikSpec = kind::from_keys(keys)?;
        spec.resolve()?;
        Ok(Arc::new(spec))
    }
    fn render_figures(&self, figures: &Members, out: &mut String) {
        figures::render(figures, out)
    }
    fn gauges(&self) -> &'static [Gauge] {
        figures::GAUGES
    }
}

impl DeviceSpec for HikSpec {
    fn kind(&self) -> &'static str {
        KIND.name()
    }
    fn shown(&self) -> Members {
        kind::shown(self)
    }
    fn default_poll_interval(&self) -> Duration {
        Duration::from_secs(spec::DEFAULT_HIK_POLL_INTERVAL_SECS)
    }
    fn address(&self) -> Option<String> {
        self.base_url()
    }
    fn claims(&self) -> Vec<Claim> {
        HikSpec::claims(self)
    }
    fn warnings(&self) -> Vec<SpecError> {
        HikSpec::warnings(self)
    }
    fn clock_count(&self) -> Option<&dyn kind::ClockCount> {
        Some(self)
    }
    fn secret_files(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        self.password_file
            .iter()
            .map(|f| ("password_file", f.clone()))
            .collect()
    }
    fn start(&self, ctx: SourceContext) -> SourceTask {
        Box::pin(source::run(self.clone(), ctx))
    }
}
