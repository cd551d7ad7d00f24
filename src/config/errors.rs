//! Configuration errors that speak to an admin: every error names the key path (a device by its index
//! and its id: `devices[3] (id "door-2").timezone`), the bad value where it helps, and what to do; a
//! word that is not one of a key's choices lists them; a misspelt key suggests the nearest one; an
//! error in a value set by a `CLOCKBRIDGE__...` environment variable names the variable.
//!
//! No secret is ever part of one: values are shown only for keys that are not secrets, and the
//! secrets' own parsers never repeat what they were given. Each is one visible line: control
//! characters of a key or a value are escaped.

use std::fmt;

/// A configuration error: always names the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML.
    #[error("config {path}: {reason}")]
    File { path: String, reason: String },
    /// A key has the wrong type, is unknown, or is missing.
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
    /// A key has a value of the right type that is not acceptable.
    #[error("config key {key}: {value} {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }

    /// The error as one visible line: a key path or a value may come from a quoted TOML key or an
    /// environment variable's name, and could hold a line break or an escape sequence
    /// ([`crate::logging::visible`]).
    pub(super) fn visible(self) -> Self {
        use crate::logging::visible as v;
        match self {
            ConfigError::File { path, reason } => ConfigError::File {
                path: v(&path),
                reason: v(&reason),
            },
            ConfigError::Key { key, reason } => ConfigError::Key {
                key: v(&key),
                reason: v(&reason),
            },
            ConfigError::Invalid { key, value, reason } => ConfigError::Invalid {
                key: v(&key),
                value: v(&value),
                reason: v(&reason),
            },
        }
    }

    /// The key path this error is about (`None` for a file error).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::File { .. } => None,
            ConfigError::Key { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    /// The error with the environment variable that set its key named beside the key, when one did
    /// (`config key sender.batch_size (from CLOCKBRIDGE__SENDER__BATCH_SIZE): ...`).
    pub(super) fn naming_env<'a>(self, vars: impl IntoIterator<Item = &'a String>) -> Self {
        let Some(key) = self.key() else {
            return self;
        };
        let want = format!("clockbridge__{}", key.replace('.', "__"));
        let Some(var) = vars
            .into_iter()
            .find(|v| v.to_ascii_lowercase() == want)
            .cloned()
        else {
            return self;
        };
        let named = |key: String| format!("{key} (from {var})");
        match self {
            ConfigError::Key { key, reason } => ConfigError::Key {
                key: named(key),
                reason,
            },
            ConfigError::Invalid { key, value, reason } => ConfigError::Invalid {
                key: named(key),
                value,
                reason,
            },
            file => file,
        }
    }
}

/// The path of key `key` of device `index` (`devices[3] (id "door-2").timezone`); the id is left out
/// while it is not known.
pub fn device_key(index: usize, id: Option<&str>, key: &str) -> String {
    let mut out = format!("devices[{index}]");
    if let Some(id) = id {
        out.push_str(&format!(" (id {id:?})"));
    }
    if !key.is_empty() {
        out.push('.');
        out.push_str(key);
    }
    out
}

/// Joins a key path and a key below it.
pub fn join(path: &str, key: &str) -> String {
    match (path.is_empty() || path == ".", key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => path.to_string(),
        (false, false) => format!("{path}.{key}"),
    }
}

/// A serde error at `path` as a key path and a reason an admin can act on: an unknown key suggests
/// the nearest known one; a missing key says so.
pub fn from_serde(path: &str, message: &str) -> (String, String) {
    // the loader names the key itself at the end; the key path comes first here
    let message = match message.rfind(" for key `") {
        Some(at) if message.ends_with('`') => &message[..at],
        _ => message,
    };
    if let Some((field, expected)) = unknown_field(message) {
        let key = if path == field || path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else {
            join(path, &field)
        };
        return (key, unknown_key(&field, &expected));
    }
    // serde's words, and the config crate's for a key it was asked for and did not find
    if let Some(field) = between(message, "missing field `", "`")
        .or_else(|| between(message, "missing configuration field \"", "\""))
    {
        return (join(path, field), "missing: add it".to_string());
    }
    (
        if path.is_empty() || path == "." {
            "(top level)".to_string()
        } else {
            path.to_string()
        },
        message.to_string(),
    )
}

/// The reason for an unknown key: `unknown key: did you mean "timezone"?`, or the keys there are.
pub fn unknown_key(key: &str, known: &[impl AsRef<str>]) -> String {
    match nearest(key, known) {
        Some(k) => format!("unknown key: did you mean {k:?}?"),
        None => {
            let listed: Vec<String> = known.iter().map(|k| format!("{:?}", k.as_ref())).collect();
            format!("unknown key: the keys here are {}", listed.join(", "))
        }
    }
}

/// The known key closest to `key`, if it is close enough to be a misspelling.
pub fn nearest<'a>(key: &str, known: &'a [impl AsRef<str>]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| k.as_ref())
        .map(|k| (strsim::damerau_levenshtein(&key, k), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A TOML syntax error without the source line it quotes (`5 | app_secret = "...`), which may hold
/// a secret: `TOML parse error at line 5, column 27: invalid basic string, expected `"``, one line.
pub fn without_source_lines(message: &str) -> String {
    let snippet = |l: &str| {
        let t = l
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        t.trim_start().starts_with('|')
    };
    message
        .lines()
        .filter(|l| !l.trim().is_empty() && !snippet(l))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

/// `unknown field `x`, expected one of `a`, `b``: the field and the expected ones.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let field = between(message, "unknown field `", "`")?;
    let rest = &message[message.find("expected").unwrap_or(message.len())..];
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_gets_the_nearest_one_and_a_stranger_the_list() {
        let known = ["timezone", "location_name", "enabled"];
        assert_eq!(nearest("tiemzone", &known), Some("timezone"));
        assert_eq!(nearest("enabeld", &known), Some("enabled"));
        assert_eq!(nearest("colour", &known), None);
        assert_eq!(
            unknown_key("tiemzone", &known),
            "unknown key: did you mean \"timezone\"?"
        );
        assert_eq!(
            unknown_key("colour", &known),
            "unknown key: the keys here are \"timezone\", \"location_name\", \"enabled\""
        );
    }

    #[test]
    fn serde_messages_become_key_paths() {
        assert_eq!(
            from_serde(
                "feishu",
                "unknown field `employe_type`, expected one of `app_id`, `employee_type`"
            ),
            (
                "feishu.employe_type".to_string(),
                "unknown key: did you mean \"employee_type\"?".to_string()
            )
        );
        assert_eq!(
            from_serde("feishu", "missing field `app_id`"),
            ("feishu.app_id".to_string(), "missing: add it".to_string())
        );
        assert_eq!(
            device_key(3, Some("door-2"), "timezone"),
            "devices[3] (id \"door-2\").timezone"
        );
        assert_eq!(device_key(0, None, "id"), "devices[0].id");
    }

    #[test]
    fn a_toml_syntax_error_keeps_its_position_and_loses_the_quoted_line() {
        let message = "TOML parse error at line 5, column 27\n  |\n5 | app_secret = \"s3cr3t\n  |                           ^\ninvalid basic string, expected `\"`\n";
        assert_eq!(
            without_source_lines(message),
            "TOML parse error at line 5, column 27: invalid basic string, expected `\"`"
        );
    }
}
