//! A secret held in memory and read from a file: the one type for every credential clockbridge
//! holds (the Feishu app secret, a terminal's password), and the one reader of the small files they
//! are kept in. Neutral ground: `config` and `sources` both use it, and it uses neither.
//!
//! Guarantees: a [`Secret`]'s `Debug`, `Display` and `Serialize` print `***`, so it cannot reach a
//! log, an error message or `check-config` output by accident; [`read_secret_text`] says why a file
//! cannot hold a secret ([`Unreadable`]) and never quotes what the file holds.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

/// A secret string. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: only where it is used (a token request body, a digest response).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Why a file cannot hold a secret. The callers word it for their key; none carries the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// It cannot be opened or read (the system's reason).
    Io(String),
    /// It is larger than the most a secret file of its kind may hold.
    TooLarge(u64),
    /// UTF-16 text (Notepad's "Unicode").
    Utf16,
    /// Not UTF-8: the offset of the first bad byte.
    NotUtf8(usize),
    Empty,
    /// More than one line.
    Lines,
}

/// Reads the secret in `file` as an editor may have saved it: at most `max` bytes (a larger file is
/// the wrong file, refused without being read whole), a UTF-8 byte-order mark dropped, and spaces,
/// tabs, CR and LF around the secret dropped (so a CRLF ending never leaves a CR in it). UTF-16, text
/// that is not UTF-8, an empty file and more than one line are refused.
pub fn read_secret_text(file: &Path, max: u64) -> Result<Secret, Unreadable> {
    let opened = std::fs::File::open(file).map_err(|e| Unreadable::Io(e.to_string()))?;
    let mut bytes = Vec::new();
    opened
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unreadable::Io(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(Unreadable::TooLarge(max));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Unreadable::Utf16);
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| Unreadable::NotUtf8(e.valid_up_to()))?;
    let secret = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if secret.is_empty() {
        return Err(Unreadable::Empty);
    }
    if secret.contains(['\n', '\r']) {
        return Err(Unreadable::Lines);
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Secret, Unreadable> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, bytes).unwrap();
        read_secret_text(&f, 64)
    }

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** \"***\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
    }

    #[test]
    fn a_file_is_read_as_an_editor_saved_it_or_refused_saying_why() {
        assert_eq!(read(b"\xEF\xBB\xBFs3cret\r\n").unwrap().expose(), "s3cret");
        assert_eq!(read(b"  pass word \n").unwrap().expose(), "pass word");
        assert_eq!(read(&[b'x'; 65]), Err(Unreadable::TooLarge(64)));
        assert_eq!(read(b"\xFF\xFEs\x00"), Err(Unreadable::Utf16));
        assert_eq!(read(b"ab\xC3"), Err(Unreadable::NotUtf8(2)));
        assert_eq!(read(b" \r\n"), Err(Unreadable::Empty));
        assert_eq!(read(b"one\ntwo\n"), Err(Unreadable::Lines));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_secret_text(&dir.path().join("missing"), 64),
            Err(Unreadable::Io(_))
        ));
    }
}
