//! Logging setup: compact human lines on a terminal, journald-friendly lines (no timestamp of our own,
//! journald adds one) under systemd, or JSON. The level comes from `RUST_LOG` when set, else from
//! `log.level`. Nothing secret is ever logged: the app secret lives in a masked type and tokens are
//! never passed to a log macro.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `text` or `json`. Safe to call once per process.
pub fn init(level: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env()
        // the migration library announces every open at INFO: only its warnings matter here
        .or_else(|_| EnvFilter::try_new(format!("{level},rusqlite_migration=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else if under_journald {
        builder.without_time().with_ansi(false).compact().try_init()
    } else {
        // colours only on a terminal: a file or a pipe gets plain text
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder.with_ansi(ansi).compact().try_init()
    };
}
