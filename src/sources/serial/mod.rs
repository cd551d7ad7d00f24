//! Serial line clocks (`kind = "serial"`): a clock on an RS-232/RS-485 port, usually through a USB
//! adapter, read as text lines. The keys are in [`spec`], the task in [`source`].

pub mod source;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

pub use spec::{FlowControl, Parity, SerialSpec};

use super::kind::{
    Claim, Device, DeviceSpec, Keys, Kind, Members, SourceContext, SourceTask, SpecError,
};
use super::line_spec::{LineSpec, LINE_KEYS};

/// The `serial` kind, as registered in [`super::KINDS`].
pub static KIND: SerialKind = SerialKind;

/// Serial line clocks.
pub struct SerialKind;

/// Every key of a `serial` device besides the common ones: its own and the line keys.
static KEYS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [spec::SERIAL_KEYS, LINE_KEYS].concat());

impl Kind for SerialKind {
    fn name(&self) -> &'static str {
        "serial"
    }
    fn keys(&self) -> &'static [&'static str] {
        &KEYS
    }
    fn parse(&self, device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError> {
        Ok(Arc::new(SerialSpec::parse(device, keys)?))
    }
}

impl DeviceSpec for SerialSpec {
    fn kind(&self) -> &'static str {
        KIND.name()
    }
    fn shown(&self) -> Members {
        SerialSpec::shown(self)
    }
    fn default_poll_interval(&self) -> Duration {
        Duration::from_secs(super::DEFAULT_POLL_INTERVAL_SECS)
    }
    /// The port and its speed (`/dev/ttyUSB0 9600`).
    fn address(&self) -> Option<String> {
        self.port
            .path
            .as_ref()
            .map(|p| format!("{} {}", p.display(), self.port.baud_rate))
    }
    fn claims(&self) -> Vec<Claim> {
        SerialSpec::claims(self)
    }
    fn warnings(&self) -> Vec<SpecError> {
        SerialSpec::warnings(self)
    }
    fn lines(&self) -> Option<&LineSpec> {
        Some(&self.lines)
    }
    fn start(&self, ctx: SourceContext) -> SourceTask {
        Box::pin(source::run(self.clone(), ctx))
    }
}
