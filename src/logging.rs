//! Logging setup: compact human lines on a terminal, journald-friendly lines (no timestamp of our own,
//! journald adds one) under systemd, or JSON. The level comes from `RUST_LOG` when set, else from
//! `log.level`. Nothing secret is ever logged: the app secret lives in a masked type and tokens are
//! never passed to a log macro.
//!
//! [`visible`] makes a message that quotes outside text (a column of an HR file, a key of the
//! configuration) one visible line, so that it cannot forge a log line or drive a terminal.

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

/// `s` as one visible line, for a message that quotes outside text: control and invisible
/// formatting characters are written as `\n`, `\u{1b}`..., everything else is kept (a `\` too, so a
/// value quoted with `{:?}` reads the same). Two texts may come out the same: it is for messages,
/// not for names (see [`crate::hr::names::escape`]).
pub fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that print as nothing or reorder what follows (zero-width, line and paragraph
/// separators, bidirectional controls, the byte-order mark).
pub fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_visible_line_with_their_backslashes_kept() {
        assert_eq!(visible("plain 年假 \"a\\\"b\""), "plain 年假 \"a\\\"b\"");
        assert_eq!(
            visible("a\nb\u{1b}[2K\u{0}\u{202e}"),
            "a\\nb\\u{1b}[2K\\u{0}\\u{202e}"
        );
    }
}
