//! TCP line clocks (`kind = "tcp"`): punches read as text lines from a TCP connection, in either
//! direction (`mode = "listen"`: the clocks dial us; `mode = "connect"`: we dial the clock). The keys
//! are in [`spec`], the task in [`source`]; a listening device's limits in [`idle`] (silence) and
//! [`figures`] (what it refused or closed, for `status` and `/metrics`).

pub mod figures;
pub mod idle;
pub mod source;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

pub use spec::{TcpMode, TcpSpec};

use super::kind::SpecError;
use super::kind::{
    Claim, Device, DeviceSpec, Gauge, Keys, Kind, Members, SourceContext, SourceTask,
};
use super::line_spec::{LineSpec, LINE_KEYS};

/// The `tcp` kind, as registered in [`super::KINDS`].
pub static KIND: TcpKind = TcpKind;

/// TCP line clocks.
pub struct TcpKind;

/// Every key of a `tcp` device besides the common ones: its own and the line keys.
static KEYS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [spec::TCP_KEYS, LINE_KEYS].concat());

impl Kind for TcpKind {
    fn name(&self) -> &'static str {
        "tcp"
    }
    fn keys(&self) -> &'static [&'static str] {
        &KEYS
    }
    fn parse(&self, device: &Device, keys: Keys) -> Result<Arc<dyn DeviceSpec>, SpecError> {
        Ok(Arc::new(TcpSpec::parse(device, keys)?))
    }
    fn render_figures(&self, figures: &Members, out: &mut String) {
        figures::render(figures, out)
    }
    fn gauges(&self) -> &'static [Gauge] {
        figures::GAUGES
    }
}

impl DeviceSpec for TcpSpec {
    fn kind(&self) -> &'static str {
        KIND.name()
    }
    fn shown(&self) -> Members {
        TcpSpec::shown(self)
    }
    fn default_poll_interval(&self) -> Duration {
        Duration::from_secs(super::DEFAULT_POLL_INTERVAL_SECS)
    }
    fn address(&self) -> Option<String> {
        Some(self.address.clone())
    }
    fn claims(&self) -> Vec<Claim> {
        TcpSpec::claims(self)
    }
    fn lines(&self) -> Option<&LineSpec> {
        Some(&self.lines)
    }
    fn start(&self, ctx: SourceContext) -> SourceTask {
        Box::pin(source::run(self.clone(), ctx))
    }
}
