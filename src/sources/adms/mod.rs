//! ZKTeco terminals that push over HTTP (`kind = "adms"`): the "Attendance PUSH" protocol, also
//! called ADMS, iclock or "Cloud Server". The terminal dials clockbridge; clockbridge is the server.
//! The wire format ([`protocol`]), the devices' keys and the `[adms]` listener's ([`spec`]), the
//! listener ([`listener`]) and its routing by serial number ([`hub`]), one terminal's requests
//! ([`terminal`]), the operator's commands kept until answered ([`commands`]), the comparison of
//! a terminal's count with the queue's ([`verify`]), the command-line side ([`cli`]) and the figures
//! ([`figures`]).
//!
//! It exists because most ZKTeco terminals sold today push and cannot be polled on TCP 4370. The
//! protocol facts the code relies on are written down, with their public sources, in
//! `docs/adms-protocol.md`.
//!
//! How it runs: the daemon binds the one `[adms]` listener when an enabled device is of this kind
//! and hands each such device to the [`hub::Hub`] ([`AdmsSpec::start`] without a hub only says so);
//! the device's task lives as long as the daemon, keeping its online state and stamps.
//!
//! Guarantees:
//! - `OK` only after COMMIT: a push is answered `OK: <n>` once every punch of it is in the queue; a
//!   push the queue cannot take gets a non-200, and the terminal sends it again.
//! - Unknown serial numbers are refused (403), never answered `OK`; they are logged and shown.
//! - Bad input (a malformed line, a body over the cap, bytes that are not text) is counted and
//!   logged, never a panic; a malformed line never stops the rest of its push.

pub mod cli;
pub mod commands;
mod count;
pub mod figures;
pub mod hub;
pub mod listener;
pub mod protocol;
pub mod spec;
pub mod terminal;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use figures::AdmsFigures;
pub use hub::Hub;
pub use listener::AdmsServer;
pub use spec::{AdmsConfig, AdmsSpec};

use super::kind::{self, Claim, Device, DeviceSpec, Gauge, Keys, Kind, Members, SourceContext};
use super::kind::{SourceTask, SpecError};

/// The `adms` kind, as registered in [`super::KINDS`].
pub static KIND: AdmsKind = AdmsKind;

/// ZKTeco terminals that push.
pub struct AdmsKind;

impl Kind for AdmsKind {
    fn name(&self) -> &'static str {
        "adms"
    }
    fn keys(&self) -> &'static [&'static str] {
        spec::ADMS_KEYS
    }
    fn parse(&self, _device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError> {
        let spec: AdmsSpec = kind::from_keys(keys)?;
        spec.check()?;
        Ok(Arc::new(spec))
    }
    fn render_figures(&self, figures: &Members, out: &mut String) {
        figures::render(figures, out)
    }
    fn gauges(&self) -> &'static [Gauge] {
        figures::GAUGES
    }
}

impl DeviceSpec for AdmsSpec {
    fn kind(&self) -> &'static str {
        KIND.name()
    }
    fn shown(&self) -> Members {
        kind::shown(self)
    }
    fn default_poll_interval(&self) -> Duration {
        Duration::from_secs(self.delay_secs)
    }
    fn address(&self) -> Option<String> {
        Some(format!("SN {}", self.sn()))
    }
    fn claims(&self) -> Vec<Claim> {
        AdmsSpec::claims(self)
    }
    fn clock_count(&self) -> Option<&dyn kind::ClockCount> {
        Some(self)
    }
    fn start(&self, ctx: SourceContext) -> SourceTask {
        // the daemon hands adms devices to the listener's hub (`Hub::register`, then `Hub::serve`); a device started
        // alone has no listener to be reached through
        Box::pin(async move {
            let e = "kind = \"adms\" is served by the [adms] listener, which is not running";
            ctx.stats.set_error(e);
            ctx.shutdown.cancelled().await;
        })
    }
}
