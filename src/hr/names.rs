//! File names as they reach logs, reports and directories. A name in an inbox is chosen by whoever
//! writes there, so it is never written raw: [`escape`] makes any name one visible line (no newline,
//! escape sequence or direction override can forge or hide a log line), and [`fit`] keeps a name that
//! gains a suffix (`.1`, `.report.json`) within the file system's limit of 255 bytes, shortening it
//! the same way every time.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

use crate::logging::invisible;

/// The longest file name most Linux file systems take, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// A name or path as one printable line: `\` is doubled, control and invisible formatting characters
/// are written as `\n`, `\u{1b}`..., and bytes that are not UTF-8 as `\xff`. Printable text, in any
/// script, is kept as it is.
pub fn escape(s: &OsStr) -> String {
    let mut out = String::with_capacity(s.len());
    for chunk in s.as_bytes().utf8_chunks() {
        escape_into(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// [`escape`] for a path.
pub fn escape_path(p: &std::path::Path) -> String {
    escape(p.as_os_str())
}

/// [`escape`] for text that may carry a file's content (a problem's message).
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// `name` + `suffix` if that fits in `room` bytes; otherwise the start of `name` (cut on a character
/// boundary), `~`, 16 hex digits of SHA-256 over the whole name, then `suffix`: the same name always
/// gives the same result, and two names that differ give different ones.
pub fn fit(name: &OsStr, suffix: &str, room: usize) -> std::ffi::OsString {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(room);
    if bytes.len() + suffix.len() <= room {
        out.extend_from_slice(bytes);
    } else {
        let digest = Sha256::digest(bytes);
        let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let keep = room.saturating_sub(suffix.len() + 1 + tag.len());
        let mut cut = keep.min(bytes.len());
        // not inside a UTF-8 sequence
        while cut > 0 && cut < bytes.len() && (bytes[cut] & 0xc0) == 0x80 {
            cut -= 1;
        }
        out.extend_from_slice(&bytes[..cut]);
        out.push(b'~');
        out.extend_from_slice(tag.as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    std::ffi::OsString::from_vec(out)
}

use std::os::unix::ffi::OsStringExt;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn names_that_would_forge_a_log_line_are_escaped() {
        let raw = OsString::from_vec(
            b"a\nINFO clockbridge started\x1b[2K \\ \xff \xe5\xb9\xb4\xe5\x81\x87.csv".to_vec(),
        );
        let e = escape(&raw);
        assert_eq!(
            e,
            "a\\nINFO clockbridge started\\u{1b}[2K \\\\ \\xff 年假.csv"
        );
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(escape_text("x\u{202e}y\r"), "x\\u{202e}y\\r");
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_distinctly() {
        let a = OsString::from("é".repeat(127)); // 254 bytes
        let b = OsString::from(format!("{}x", "é".repeat(126)));
        let fa = fit(&a, ".report.json", NAME_MAX);
        assert!(fa.len() <= NAME_MAX, "{}", fa.len());
        assert!(std::str::from_utf8(fa.as_bytes()).is_ok());
        assert!(fa.to_str().unwrap().ends_with(".report.json"));
        assert_eq!(fa, fit(&a, ".report.json", NAME_MAX));
        assert_ne!(fa, fit(&b, ".report.json", NAME_MAX));
        assert_eq!(
            fit(OsStr::new("a.csv"), ".1", NAME_MAX),
            OsString::from("a.csv.1")
        );
    }
}
