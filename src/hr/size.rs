//! Sizes in the configuration and on the command line: a number of bytes (`268435456`) or a number
//! with a unit (`"256MiB"`, `"100 MB"`, `"1GiB"`; `kB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB`
//! of 1024, case does not matter).

/// The default largest HR file taken (`[inbox] max_file_size`): 256 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 20;

/// Parses a size; the error says what is accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size: write bytes (268435456) or a number with a unit (\"256MiB\", \"100MB\", \"1GiB\")")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write bytes (268435456) or a number with a unit (\"256MiB\", \"100MB\", \"1GiB\")"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

/// Reads a size written as an integer of bytes or as a string (see [`parse_size`]).
pub fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match <Size as serde::Deserialize>::deserialize(d)? {
        Size::N(0) => Err(serde::de::Error::custom(
            "0 is not a size of at least one byte",
        )),
        Size::N(n) => Ok(n),
        Size::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_with_and_without_units() {
        assert_eq!(parse_size("268435456"), Ok(268_435_456));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size(" 100 mb "), Ok(100_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        for bad in ["", "MiB", "12 parsecs", "0", "-1MB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inbox_max_file_size_is_read_from_the_file_and_the_environment() {
        use crate::config::Config;
        let base =
            "[feishu]\napp_id = \"cli_x\"\napp_secret = \"s\"\n[queue]\npath = \"/tmp/q.db\"\n";
        let load = |extra: &str, env: &[(&str, &str)]| {
            Config::from_toml_with_env(
                &format!("{base}{extra}"),
                "test",
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        assert_eq!(
            load("", &[]).unwrap().inbox.max_file_size,
            DEFAULT_MAX_FILE_SIZE
        );
        let c = load("[inbox]\nmax_file_size = \"100MB\"\n", &[]).unwrap();
        assert_eq!(c.inbox.max_file_size, 100_000_000);
        let c = load("[inbox]\nmax_file_size = 4096\n", &[]).unwrap();
        assert_eq!(c.inbox.max_file_size, 4096);
        let c = load("", &[("CLOCKBRIDGE__INBOX__MAX_FILE_SIZE", "1GiB")]).unwrap();
        assert_eq!(c.inbox.max_file_size, 1 << 30);
        let e = load("[inbox]\nmax_file_size = \"lots\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_file_size") && e.contains("lots"), "{e}");
    }
}
