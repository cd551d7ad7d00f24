//! ZKTeco terminals (`kind = "zk"`), read over their binary protocol (TCP port 4370): the packet codec
//! ([`codec`]: framing, checksum, comm key, packed times, record layouts), an async client on tokio
//! ([`client`]), the device's keys ([`spec`]), the source task ([`source`]), its watermark
//! ([`watermark`], kept in the queue's per-device state store), the user table and the names kept
//! for `clockbridge unmapped` ([`users`]) and its figures ([`figures`]).
//!
//! It exists so that clockbridge can read ZKTeco terminals directly, incrementally and fast, instead of
//! through a vendor tool. The protocol facts the code relies on are written down, with their public
//! sources, in `docs/zkteco-protocol.md`.
//!
//! Guarantees:
//! - Bad input from a device (a wrong magic, an impossible length, a truncated record, a date that does
//!   not exist) is an error value, never a panic, and never a record with an invented field.
//! - Every request and every chunk of a bulk read has a timeout ([`client::Timeouts`]).
//! - The comm key never appears in an error message, a log line or a `Debug` output.

pub mod client;
pub mod codec;
pub mod count;
pub mod figures;
pub mod source;
pub mod spec;
pub mod users;
pub mod watermark;

use std::sync::Arc;
use std::time::Duration;

pub use client::{Timeouts, ZkClient, ZkError};
pub use codec::{AttRecord, Event, FreeSizes, User};
pub use figures::{UnmappedUser, ZkFigures};
pub use spec::{zk_address, CommKey, UserIdSource, ZkSpec};

use super::kind::{self, Claim, Device, DeviceSpec, Gauge, Keys, Kind, Members, SourceContext};
use super::kind::{SourceTask, SpecError};

/// The `zk` kind, as registered in [`super::KINDS`].
pub static KIND: ZkKind = ZkKind;

/// ZKTeco terminals.
pub struct ZkKind;

impl Kind for ZkKind {
    fn name(&self) -> &'static str {
        "zk"
    }
    fn keys(&self) -> &'static [&'static str] {
        spec::ZK_KEYS
    }
    fn parse(&self, _device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError> {
        let spec: ZkSpec = kind::from_keys(keys)?;
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

impl DeviceSpec for ZkSpec {
    fn kind(&self) -> &'static str {
        KIND.name()
    }
    fn shown(&self) -> Members {
        kind::shown(self)
    }
    fn default_poll_interval(&self) -> Duration {
        Duration::from_secs(spec::DEFAULT_ZK_POLL_INTERVAL_SECS)
    }
    fn address(&self) -> Option<String> {
        self.zk_address()
    }
    fn claims(&self) -> Vec<Claim> {
        ZkSpec::claims(self)
    }
    fn start(&self, ctx: SourceContext) -> SourceTask {
        Box::pin(source::run(self.clone(), ctx))
    }
    fn clock_count(&self) -> Option<&dyn kind::ClockCount> {
        Some(self)
    }
}
