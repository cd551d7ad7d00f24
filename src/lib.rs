//! clockbridge: bridges office time clocks to the Feishu / Lark attendance platform.
//!
//! The flow, one module per step: clock → [`sources`] (lines parsed by [`formats`]) → [`ingest`]
//! (normalised by [`punch`], users resolved by [`mapping`]) → [`queue`] (SQLite outbox) → [`sender`] →
//! [`feishu`] → platform. [`daemon`] wires them; [`status`] and [`unmapped`] (the device users
//! waiting for a mapping) read the queue, showing punch times in their device's zone
//! ([`device_time`]); [`import`] backfills
//! exported log files into the same queue; [`inbox`] takes HR files ([`hr`]) from directories;
//! [`health`] judges what is wrong with the running daemon, for [`service`] (systemd's notify
//! protocol: readiness, status lines, watchdog), [`http`] (`/healthz`; with [`metrics`], `/metrics`
//! and `/status`) and the [`snapshot`] that [`status`] reads; [`limits`] keeps file descriptors for
//! them (clock connections capped), and [`sigbus`] says why a bus error kills the process.
//! [`online`] is `check-config --online`: a token and one harmless read, to test the app's setup
//! before go-live. [`reconcile`] proves to HR that every punch is in Feishu, per device and day.
//! [`secret`] holds every credential (the app secret, a terminal's password): never printed.
//! The test doubles (the platform stand-in, the ZKTeco simulator, the demo) are not part of this
//! crate: they live in the workspace crate `clockbridge-testkit` (`testkit/`), which the product never
//! ships. See `docs/architecture.md` for the delivery guarantees.

pub mod config;
pub mod daemon;
pub mod device_stats;
pub mod device_time;
pub mod feishu;
pub mod health;
pub mod hr;
pub mod http;
pub mod import;
pub mod inbox;
pub mod ingest;
pub mod limits;
pub mod logging;
pub mod manpage;
pub mod mapping;
pub mod metrics;
pub mod online;
pub mod punch;
pub mod queue;
pub mod reconcile;
pub mod secret;
pub mod sender;
pub mod server;
pub mod service;
pub mod sigbus;
pub mod snapshot;
pub mod sources;
pub mod status;
pub mod unmapped;
