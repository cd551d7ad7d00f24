//! Mapping from the user id a clock knows (PIN, badge number) to the Feishu user id.
//!
//! Two modes: `passthrough` (the device user id *is* the Feishu id) and `table` (a CSV file
//! `device_user_id,user_id[,device_id]`; a row with a device id applies to that device only and wins over
//! a row without one).
//!
//! Guarantees:
//! - A punch whose user is not in the table is never dropped: ingest stores it as `unmapped`, and
//!   [`crate::queue::Queue::release_unmapped`] turns it into a pending record once the table gains the user.
//! - A reload that fails (file missing, bad line) keeps the previous table and reports the file and line;
//!   the daemon never runs with a half-read table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// `[mapping]`: device user id to Feishu user id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// `passthrough`: the device user id is the Feishu id; `table`: a CSV file.
    #[serde(default = "default_mapping_mode")]
    pub mode: MappingMode,
    /// For `table`: CSV with `device_user_id,user_id[,device_id]`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How often the table is re-read (it is also re-read on SIGHUP), in seconds.
    #[serde(default = "default_mapping_reload")]
    pub reload_interval_secs: u64,
}

crate::choice_enum! {
    /// Where a device user id's Feishu id comes from.
    pub enum MappingMode {
        Passthrough = "passthrough",
        Table = "table",
    }
}

fn default_mapping_mode() -> MappingMode {
    MappingMode::Passthrough
}
fn default_mapping_reload() -> u64 {
    60
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            mode: default_mapping_mode(),
            file: None,
            reload_interval_secs: default_mapping_reload(),
        }
    }
}

/// A mapping table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("mapping {path}: cannot read: {source}: check mapping.file")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("mapping {path}: line {line}: {reason}")]
    Line {
        path: String,
        line: u64,
        reason: String,
    },
}

/// A loaded mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Passthrough,
    Table(Table),
}

/// The rows of a mapping table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    global: HashMap<String, String>,
    per_device: HashMap<(String, String), String>,
}

impl Table {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.global.len() + self.per_device.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Mapping {
    /// The Feishu user id for a device user, if known.
    pub fn lookup(&self, device_id: &str, device_user_id: &str) -> Option<String> {
        match self {
            Mapping::Passthrough => Some(device_user_id.to_string()),
            Mapping::Table(t) => t
                .per_device
                .get(&(device_id.to_string(), device_user_id.to_string()))
                .or_else(|| t.global.get(device_user_id))
                .cloned(),
        }
    }

    /// Loads the mapping a config describes.
    pub fn load(cfg: &MappingConfig) -> Result<Mapping, MappingError> {
        match cfg.mode {
            MappingMode::Passthrough => Ok(Mapping::Passthrough),
            MappingMode::Table => {
                let path = cfg.file.clone().unwrap_or_default();
                Ok(Mapping::Table(load_table(&path)?))
            }
        }
    }
}

/// Reads a CSV mapping file. A first row whose first field is `device_user_id` is a header; blank
/// lines and lines starting with `#` are skipped. A user mapped twice to different ids is an error.
pub fn load_table(path: &Path) -> Result<Table, MappingError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| MappingError::Read {
        path: p.clone(),
        source: e,
    })?;
    parse_table(file, &p)
}

/// Reads a mapping table from `input` (named `p` in errors), as [`load_table`] reads a file.
pub fn parse_table(input: impl std::io::Read, p: &str) -> Result<Table, MappingError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut table = Table::default();
    for (i, rec) in rdr.records().enumerate() {
        let line = |rec: Option<&csv::StringRecord>| {
            rec.and_then(|r| r.position())
                .map(|pos| pos.line())
                .unwrap_or(i as u64 + 1)
        };
        let rec = rec.map_err(|e| MappingError::Line {
            path: p.to_string(),
            line: e.position().map(|pos| pos.line()).unwrap_or(i as u64 + 1),
            reason: format!("not valid CSV: {e}"),
        })?;
        let err = |reason: String| MappingError::Line {
            path: p.to_string(),
            line: line(Some(&rec)),
            reason,
        };
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        if i == 0 && rec.get(0) == Some("device_user_id") {
            continue;
        }
        if rec.len() < 2 || rec.len() > 3 {
            return Err(err(format!(
                "expected device_user_id,user_id[,device_id], found {} fields",
                rec.len()
            )));
        }
        let (du, uid) = (rec[0].to_string(), rec[1].to_string());
        if du.is_empty() || uid.is_empty() {
            return Err(err("device_user_id and user_id must not be empty".into()));
        }
        let dev = rec.get(2).filter(|d| !d.is_empty()).map(str::to_string);
        let previous = match dev {
            Some(d) => table.per_device.insert((d, du.clone()), uid.clone()),
            None => table.global.insert(du.clone(), uid.clone()),
        };
        if let Some(prev) = previous {
            if prev != uid {
                return Err(err(format!(
                    "device user {du:?} is mapped twice ({prev:?} and {uid:?})"
                )));
            }
        }
    }
    Ok(table)
}

/// A shared, swappable mapping: ingest reads it, reloads replace it.
#[derive(Clone)]
pub struct MappingHandle {
    inner: Arc<RwLock<Arc<Mapping>>>,
    config: MappingConfig,
}

impl MappingHandle {
    pub fn new(mapping: Mapping, config: MappingConfig) -> Self {
        MappingHandle {
            inner: Arc::new(RwLock::new(Arc::new(mapping))),
            config,
        }
    }

    /// The mapping in force.
    pub fn current(&self) -> Arc<Mapping> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The table file, in `table` mode.
    pub fn file(&self) -> Option<PathBuf> {
        match self.config.mode {
            MappingMode::Table => self.config.file.clone(),
            MappingMode::Passthrough => None,
        }
    }

    /// Re-reads the table. Returns `Ok(true)` when it changed. On error the previous table stays.
    pub fn reload(&self) -> Result<bool, MappingError> {
        let fresh = Mapping::load(&self.config)?;
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if **guard == fresh {
            return Ok(false);
        }
        *guard = Arc::new(fresh);
        Ok(true)
    }
}

/// Parses a mapping table from CSV text (for tests and tools).
pub fn load_table_from_str(text: &str) -> Result<Table, MappingError> {
    parse_table(text.as_bytes(), "(inline)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "device_user_id,user_id,device_id\n1,abd754f7,\n23,7f1bcd13,\n1005,a1xud,door-1\n";

    #[test]
    fn table_with_header_and_device_specific_rows() {
        let t = Mapping::Table(parse_table(SAMPLE.as_bytes(), "users.csv").unwrap());
        assert_eq!(t.lookup("door-2", "1").as_deref(), Some("abd754f7"));
        assert_eq!(t.lookup("door-1", "1005").as_deref(), Some("a1xud"));
        assert_eq!(t.lookup("door-2", "1005"), None);
        assert_eq!(t.lookup("door-1", "999"), None);
    }

    #[test]
    fn passthrough_maps_every_user_to_itself() {
        assert_eq!(
            Mapping::Passthrough.lookup("d", "0042").as_deref(),
            Some("0042")
        );
    }

    #[test]
    fn bad_line_is_reported_with_its_number() {
        let e = parse_table("1,a\n2\n".as_bytes(), "users.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("users.csv: line 2"), "{e}");
        let e = parse_table("1,a\n1,b\n".as_bytes(), "users.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapped twice"), "{e}");
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let t = parse_table("# comment\n\n7 , u7\n".as_bytes(), "x").unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(Mapping::Table(t).lookup("any", "7").as_deref(), Some("u7"));
    }

    #[test]
    fn reload_swaps_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users.csv");
        std::fs::write(&f, "1,u1\n").unwrap();
        let cfg = MappingConfig {
            mode: MappingMode::Table,
            file: Some(f.clone()),
            reload_interval_secs: 60,
        };
        let h = MappingHandle::new(Mapping::load(&cfg).unwrap(), cfg);
        assert_eq!(h.current().lookup("d", "2"), None);
        std::fs::write(&f, "1,u1\n2,u2\n").unwrap();
        assert!(h.reload().unwrap());
        assert_eq!(h.current().lookup("d", "2").as_deref(), Some("u2"));
        assert!(!h.reload().unwrap());
        std::fs::write(&f, "1,u1\nbroken\n").unwrap();
        assert!(h.reload().is_err());
        assert_eq!(h.current().lookup("d", "2").as_deref(), Some("u2"));
    }
}
