//! The app secret: held in a [`Secret`], whose `Debug`, `Display` and `Serialize` print `***`, so the
//! secret cannot reach a log, an error message or `check-config` output by accident; and where it comes
//! from (exactly one of `feishu.app_secret`, `feishu.app_secret_file` and the systemd credential).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

use super::errors::ConfigError;
use super::sections::FeishuConfig;

/// A secret string. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: only for the token request body.
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

/// Where the secret comes from: exactly one of `feishu.app_secret`, `feishu.app_secret_file` and
/// the systemd credential `app_secret` (`$CREDENTIALS_DIRECTORY/app_secret`). Two at once is an
/// error, so a forgotten inline placeholder can never shadow the real secret.
pub(super) fn resolve_secret(
    feishu: &mut FeishuConfig,
    credentials_dir: Option<&Path>,
) -> Result<(), ConfigError> {
    let credential = credentials_dir
        .map(|d| d.join("app_secret"))
        .filter(|p| p.exists());
    let inline = !feishu.app_secret.is_empty();
    let sources = [
        inline.then_some("feishu.app_secret"),
        feishu
            .app_secret_file
            .as_ref()
            .map(|_| "feishu.app_secret_file"),
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
        return Ok(());
    }
    let file = match (&feishu.app_secret_file, credential) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c,
        (None, None) => {
            return Err(ConfigError::Key {
                key: "feishu.app_secret".into(),
                reason: "missing: set feishu.app_secret, feishu.app_secret_file, or a systemd credential named app_secret".into(),
            })
        }
    };
    let s = std::fs::read_to_string(&file).map_err(|e| {
        ConfigError::invalid(
            "feishu.app_secret_file",
            file.display().to_string(),
            format!("cannot be read: {e}"),
        )
    })?;
    let s = s.trim();
    if s.is_empty() {
        return Err(ConfigError::invalid(
            "feishu.app_secret_file",
            file.display().to_string(),
            "is empty",
        ));
    }
    feishu.app_secret = Secret::new(s);
    Ok(())
}
