//! The app secret: held in a [`Secret`] (`crate::secret`: its `Debug`, `Display` and `Serialize`
//! print `***`, so the secret cannot reach a log, an error message or `check-config` output by
//! accident); where it comes
//! from (exactly one of `feishu.app_secret`, `feishu.app_secret_file` and the systemd credential); and
//! how a secret file is read ([`read_secret_file`]: a byte-order mark and a CRLF ending are dropped,
//! anything else that cannot be part of a secret is refused with the reason, never with the content).

use std::path::{Path, PathBuf};

use super::errors::ConfigError;

pub use crate::secret::Secret;
use crate::secret::{read_secret_text, Unreadable};

/// Where the app secret came from, for the warnings of `check-config` and `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `feishu.app_secret`, written in the configuration file.
    Inline,
    /// `feishu.app_secret` set by the environment variable `CLOCKBRIDGE__FEISHU__APP_SECRET`.
    Environment,
    /// The file named by `feishu.app_secret_file`.
    File(PathBuf),
    /// The systemd credential `app_secret` (`$CREDENTIALS_DIRECTORY/app_secret`).
    Credential(PathBuf),
}

impl SecretSource {
    /// Where the secret was read, for messages (never the secret): "the file
    /// feishu.app_secret_file (/etc/clockbridge/app_secret)".
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline => "feishu.app_secret in the configuration file".to_string(),
            SecretSource::Environment => {
                "the environment variable CLOCKBRIDGE__FEISHU__APP_SECRET".to_string()
            }
            SecretSource::File(p) => format!("the file feishu.app_secret_file ({})", p.display()),
            SecretSource::Credential(p) => {
                format!("the systemd credential app_secret ({})", p.display())
            }
        }
    }
}

/// The most bytes a secret file may hold. A Feishu app secret is 32 characters: a larger file is
/// the wrong file (a log, a key store, `/dev/zero`), and it is refused without being read whole.
pub const MAX_SECRET_FILE: u64 = 4096;

/// The key an error about the systemd credential names.
const CREDENTIAL_KEY: &str = "feishu.app_secret (systemd credential app_secret)";

/// Where the secret comes from: exactly one of `feishu.app_secret`, `feishu.app_secret_file` and
/// the systemd credential `app_secret` (`$CREDENTIALS_DIRECTORY/app_secret`). Two at once is an
/// error, so a forgotten inline placeholder can never shadow the real secret. `from_env` tells that
/// an inline secret was set by `CLOCKBRIDGE__FEISHU__APP_SECRET`.
///
/// Takes `feishu.app_secret` and `feishu.app_secret_file` rather than the `[feishu]` section, so
/// that this file needs nothing from `sections.rs` (which needs [`Secret`] from here).
pub(super) fn resolve_secret(
    app_secret: &mut Secret,
    app_secret_file: Option<&Path>,
    credentials_dir: Option<&Path>,
    from_env: bool,
) -> Result<SecretSource, ConfigError> {
    let credential = credentials_dir
        .map(|d| d.join("app_secret"))
        .filter(|p| p.exists());
    let inline = !app_secret.is_empty();
    let sources = [
        inline.then_some("feishu.app_secret"),
        app_secret_file.map(|_| "feishu.app_secret_file"),
        credential
            .as_ref()
            .map(|_| "the systemd credential app_secret"),
    ];
    let given: Vec<&str> = sources.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(ConfigError::Key {
            key: "feishu.app_secret".into(),
            reason: format!(
                "given more than once ({}): keep only one source of the secret",
                given.join(" and ")
            ),
        });
    }
    if inline {
        return Ok(if from_env {
            SecretSource::Environment
        } else {
            SecretSource::Inline
        });
    }
    let (key, file, source) = match (app_secret_file, credential) {
        (Some(f), _) => (
            "feishu.app_secret_file",
            f.to_path_buf(),
            SecretSource::File(f.to_path_buf()),
        ),
        (None, Some(c)) => (CREDENTIAL_KEY, c.clone(), SecretSource::Credential(c)),
        (None, None) => {
            return Err(ConfigError::Key {
                key: "feishu.app_secret".into(),
                reason: "missing: set feishu.app_secret, feishu.app_secret_file, or a systemd credential named app_secret".into(),
            })
        }
    };
    *app_secret = read_secret_file(key, &file)?;
    Ok(source)
}

/// Reads a secret file as an editor may have saved it, or refuses it saying why (never with any of
/// its content):
///
/// - a UTF-8 byte-order mark at the start is dropped: it is never part of a Feishu app secret
///   (Windows Notepad writes one);
/// - spaces, tabs, CR and LF around the secret are dropped, so a CRLF line ending never leaves a CR
///   in the secret;
/// - refused: a file larger than [`MAX_SECRET_FILE`], UTF-16 text (Notepad's "Unicode"), text that
///   is not UTF-8, an empty file, and a secret with a line break, a space or an invisible character
///   inside (two lines, a pasted zero-width space): such a secret would be refused by the platform
///   with a message that says nothing of the file.
pub(super) fn read_secret_file(key: &str, file: &Path) -> Result<Secret, ConfigError> {
    let bad = |reason: String| ConfigError::invalid(key, file.display().to_string(), reason);
    let secret = read_secret_text(file, MAX_SECRET_FILE).map_err(|why| {
        bad(match why {
            Unreadable::Io(e) => format!("cannot be read: {e}"),
            Unreadable::TooLarge(max) => format!(
                "is larger than {max} bytes: it is not a secret file (an app secret is 32 characters); check the path"
            ),
            Unreadable::Utf16 => {
                "is UTF-16 text (saved as \"Unicode\" by Notepad?): save it as UTF-8 or plain ASCII"
                    .into()
            }
            Unreadable::NotUtf8(at) => format!(
                "is not UTF-8 text (bad byte at offset {at}): write the secret as plain text"
            ),
            Unreadable::Empty => "is empty".into(),
            Unreadable::Lines => {
                "holds more than one line: write the app secret alone on one line".into()
            }
        })
    })?;
    if let Some(at) = secret.expose().chars().position(invisible) {
        return Err(bad(format!(
            "holds a space, a control or an invisible character inside the secret (character {}): copy the app secret again, alone on one line",
            at + 1
        )));
    }
    Ok(secret)
}

/// A character that is never part of an app secret: whitespace, a control character, a zero-width
/// character or a byte-order mark.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Secret, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app_secret");
        std::fs::write(&f, bytes).unwrap();
        read_secret_file("feishu.app_secret_file", &f)
    }

    #[test]
    fn a_secret_file_saved_by_notepad_is_read_without_its_bom_and_its_cr() {
        for bytes in [
            &b"\xEF\xBB\xBFs3cr3tValue\r\n"[..],
            b"s3cr3tValue\r\n",
            b"s3cr3tValue\r\n\r\n",
            b"s3cr3tValue\r",
            b"s3cr3tValue",
            b"  s3cr3tValue \t\n",
            b"\xEF\xBB\xBF\r\ns3cr3tValue\n",
        ] {
            let s = read(bytes).unwrap_or_else(|e| panic!("{bytes:?}: {e}"));
            assert_eq!(s.expose(), "s3cr3tValue", "{bytes:?}");
        }
    }

    #[test]
    fn a_secret_file_that_cannot_hold_a_secret_is_refused_with_the_reason_only() {
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("s3cr3tValue\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let big = vec![b'a'; MAX_SECRET_FILE as usize + 1];
        for (bytes, reason) in [
            (&utf16[..], "is UTF-16 text (saved as \"Unicode\" by Notepad?): save it as UTF-8"),
            (b"s3cr3tValue\r\nother\r\n", "holds more than one line: write the app secret alone on one line"),
            (b"s3cr3t\rValue", "holds more than one line"),
            (b"s3cr3t Value\n", "holds a space, a control or an invisible character inside the secret (character 7)"),
            ("s3cr3t\u{200b}Value".as_bytes(), "(character 7)"),
            (b"s3cr3t\x00Value", "(character 7)"),
            (b"s3cr3t\xffValue", "is not UTF-8 text (bad byte at offset 6)"),
            (b"", "is empty"),
            (b"\xEF\xBB\xBF\r\n", "is empty"),
            (&big[..], "is larger than 4096 bytes: it is not a secret file"),
        ] {
            let e = read(bytes).unwrap_err().to_string();
            assert!(e.starts_with("config key feishu.app_secret_file: \""), "{e}");
            assert!(e.contains(reason), "{bytes:?}: {e}");
            assert!(!e.contains("s3cr3t") && !e.contains("Value") && !e.contains("aaaa"), "{e}");
        }
    }
}
