//! The configuration loader (`src/config/`): TOML text and `CLOCKBRIDGE__SECTION__KEY` overrides,
//! through the very path `check-config` and `run` take ([`Config::from_toml_with_env`]: the file's
//! syntax, every section, each device's kind and keys, the line formats, templates and patterns, the
//! secret's source and file), then what `check-config` prints (the masked TOML and the warnings).
//!
//! Input: one byte choosing the app secret (one of four) and where it comes from (written where the
//! text says `@SECRET@`, `CLOCKBRIDGE__FEISHU__APP_SECRET`, a systemd credential, or a secret file
//! whose path replaces `@SECRET_FILE@`), and how that file is saved (with a BOM and CRLF or not); the
//! rest is the TOML text, where `@COMMKEY@` becomes a ZKTeco comm key, and where a line
//! `#env NAME=VALUE` (a TOML comment) sets an environment variable.
//!
//! Checked beyond "no panic":
//! - the secret and the comm key never appear in an error message, the masked TOML, a warning or the
//!   configuration's `Debug`, not even 8 characters of the secret, unless the input also put them
//!   where a value is shown (another key, a key name, another variable): where exactly is read from
//!   the text with the `toml` crate;
//! - an error names a key path or the file, and holds no control character (one log line);
//! - the same input gives the same result (no order of a hash map reaches a message);
//! - an accepted configuration's masked TOML is TOML (check-config never prints a broken file).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use clockbridge::config::{Config, ConfigError};
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;

/// App secrets: as the developer console shows one, one with TOML's special characters, one in
/// another script, one with a space and a tab (refused in a file, accepted inline).
const SECRETS: [&str; 4] = [
    "Zq8tPpW3rKx5vN2mL7cB9dF4hJ6sT1yA",
    "Qv7\"kLm\\9xT#Rw=[",
    "密钥Xk7Qp9Wr钥匙",
    "Wm4 Rt8\tYb3!Hs",
];
/// A comm key, six digits as a clock's menu takes them.
const COMM_KEY: &str = "917253";

/// Windows of this many characters of the secret must not appear either.
const WINDOW: usize = 8;

/// Where the secret comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Written in the text where it says `@SECRET@`.
    Text,
    /// `CLOCKBRIDGE__FEISHU__APP_SECRET`.
    Env,
    /// `$CREDENTIALS_DIRECTORY/app_secret`.
    Credential,
    /// The file whose path replaces `@SECRET_FILE@`.
    File,
}

/// The secret files, made once per process: for secret `i` and style `s` (plain, or BOM and CRLF),
/// a directory holding `app_secret`.
fn secret_dir(i: usize, bom: bool) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("clockbridge-fuzz-config-{}", std::process::id()));
        for (i, s) in SECRETS.iter().enumerate() {
            for bom in [false, true] {
                let dir = root.join(format!("{i}-{}", u8::from(bom)));
                std::fs::create_dir_all(&dir).expect("a temporary directory");
                let text = if bom {
                    format!("\u{feff}{s}\r\n")
                } else {
                    format!("{s}\n")
                };
                std::fs::write(dir.join("app_secret"), text).expect("a secret file");
            }
        }
        root
    });
    root.join(format!("{i}-{}", u8::from(bom)))
}

/// Whether `hay` holds `secret` or a window of it.
fn leaks(hay: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= WINDOW {
        return hay.contains(secret);
    }
    chars
        .windows(WINDOW)
        .any(|w| hay.contains(&w.iter().collect::<String>()))
}

/// Whether a value at `path` (keys from the top) is where a secret belongs.
fn secret_place(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(p.as_slice(), ["feishu", "app_secret", ..])
        || matches!(p.as_slice(), ["devices", _, "comm_key", ..])
}

/// Every key and every value outside a secret's place, as text.
fn shown_values(v: &toml::Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    if secret_place(path) {
        return;
    }
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                out.push(k.clone());
                path.push(k.clone());
                shown_values(v, path, out);
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(i.to_string());
                shown_values(v, path, out);
                path.pop();
            }
        }
        toml::Value::String(s) => out.push(s.clone()),
        other => out.push(other.to_string()),
    }
}

/// What a message may show of the input: `None` when the text is not TOML (then an error shows
/// nothing of it).
fn shown(text: &str, env: &[(String, String)]) -> Option<Vec<String>> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let mut out = Vec::new();
    shown_values(&toml::Value::Table(table), &mut Vec::new(), &mut out);
    for (k, v) in env {
        out.push(k.clone());
        let secret_var = k.eq_ignore_ascii_case("CLOCKBRIDGE__FEISHU__APP_SECRET");
        if !secret_var {
            out.push(v.clone());
        }
    }
    Some(out)
}

/// The result as text, for comparing two runs: the error, or what check-config prints.
fn outcome(r: &Result<Config, ConfigError>) -> Vec<String> {
    match r {
        Err(e) => vec![e.to_string()],
        Ok(c) => {
            let mut out = vec![c.to_masked_toml(), format!("{c:?}")];
            out.extend(c.warnings());
            out
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let choice = input.byte();
    let Ok(text) = std::str::from_utf8(input.rest()) else {
        // the loader reads the file as UTF-8 text: anything else never reaches the parser
        return;
    };
    let which = (choice & 0x03) as usize;
    let secret = SECRETS[which];
    let source = [Source::Text, Source::Env, Source::Credential, Source::File]
        [(choice >> 2 & 0x03) as usize];
    let bom = choice & 0x10 != 0;
    let dir = secret_dir(which, bom);

    let in_text = if source == Source::Text { secret } else { "" };
    let text = text
        .replace("@SECRET@", in_text)
        .replace(
            "@SECRET_FILE@",
            &dir.join("app_secret").display().to_string(),
        )
        .replace("@COMMKEY@", COMM_KEY);
    let mut env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#env "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match source {
        Source::Env => env.push(("CLOCKBRIDGE__FEISHU__APP_SECRET".into(), secret.into())),
        Source::Credential => env.push(("CREDENTIALS_DIRECTORY".into(), dir.display().to_string())),
        Source::Text | Source::File => {}
    }

    let result = Config::from_toml_with_env(&text, "fuzz.toml", env.clone());
    let seen = outcome(&result);
    assert_eq!(
        seen,
        outcome(&Config::from_toml_with_env(&text, "fuzz.toml", env.clone())),
        "the same input gave another result"
    );

    match &result {
        Err(e) => {
            let message = e.to_string();
            assert_loggable("config error", &message);
            match e {
                ConfigError::File { path, .. } => assert_eq!(path, "fuzz.toml"),
                ConfigError::Key { key, .. } | ConfigError::Invalid { key, .. } => {
                    assert!(!key.is_empty(), "{message}")
                }
            }
        }
        Ok(c) => {
            let masked = c.to_masked_toml();
            if let Err(e) = toml::from_str::<toml::Table>(&masked) {
                panic!("check-config would print broken TOML ({e}):\n{masked}");
            }
            for w in c.warnings() {
                assert_loggable("config warning", &w);
            }
        }
    }

    // the secrets: only where the input itself shows them
    let Some(shown) = shown(&text, &env) else {
        // not TOML: the loader refuses it, and says so without quoting it (a variable's value may
        // be shown, but those hold no secret here)
        let env_shows = env.iter().any(|(k, v)| {
            !k.eq_ignore_ascii_case("CLOCKBRIDGE__FEISHU__APP_SECRET")
                && (leaks(k, secret)
                    || leaks(v, secret)
                    || v.contains(COMM_KEY)
                    || k.contains(COMM_KEY))
        });
        if result.is_ok() || env_shows {
            return;
        }
        for s in &seen {
            assert!(!leaks(s, secret), "the secret shows in {s:?}");
            assert!(!s.contains(COMM_KEY), "the comm key shows in {s:?}");
        }
        return;
    };
    let secret_shown = shown.iter().any(|v| leaks(v, secret));
    let key_shown = shown.iter().any(|v| v.contains(COMM_KEY));
    for s in &seen {
        if !secret_shown {
            assert!(!leaks(s, secret), "the secret shows in {s:?}");
        }
        if !key_shown {
            assert!(!s.contains(COMM_KEY), "the comm key shows in {s:?}");
        }
    }
});
