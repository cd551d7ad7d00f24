//! The mapping table (`[mapping] mode = "table"`, `src/mapping.rs`): a CSV file
//! `device_user_id,user_id[,device_id]` exported from an HR system, read at start, on SIGHUP and
//! every `reload_interval_secs` ([`parse_table`], what [`clockbridge::mapping::load_table`] runs on
//! the file).
//!
//! Input: one byte choosing the size of each read; the rest is the file.
//!
//! Checked beyond "no panic":
//! - the table (or the error) is the same whatever the size of the reads;
//! - an error names the file and a line within it, and holds no control character (it is logged at
//!   every failed reload);
//! - an accepted table has no more rows than the file has lines, and the user ids it gives are
//!   never empty nor padded with spaces.

#![no_main]

use std::io::Read;

use clockbridge::mapping::{parse_table, Mapping, MappingError, Table};
use clockbridge_fuzz::{assert_loggable, Input};
use libfuzzer_sys::fuzz_target;

/// A reader that hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

const NAME: &str = "users.csv";

fn read(data: &[u8], step: usize) -> Result<Table, String> {
    parse_table(Trickle { data, step }, NAME).map_err(|e| {
        let message = e.to_string();
        match e {
            MappingError::Line { path, line, .. } => {
                assert_eq!(path, NAME);
                let lines = 1 + data.iter().filter(|&&b| b == b'\n').count() as u64;
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of {lines}: {message}"
                );
            }
            MappingError::Read { .. } => panic!("a slice cannot fail to read: {message}"),
        }
        message
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let step = 1 + input.choose(64);
    let data = input.rest();

    let whole = read(data, usize::MAX);
    assert_eq!(
        read(data, step),
        whole,
        "the table depends on the read size"
    );
    match whole {
        Err(message) => {
            assert!(
                message.starts_with(&format!("mapping {NAME}: line ")),
                "{message}"
            );
            assert_loggable("mapping error", &message);
        }
        Ok(table) => {
            let lines = 1 + data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
            assert!(
                table.len() <= lines,
                "{} rows from {lines} lines",
                table.len()
            );
            // a user id sent to the platform is never empty and has no spaces around it
            let m = Mapping::Table(table);
            for field in data.split(|&b| matches!(b, b',' | b'\n' | b'\r')).take(16) {
                let field = String::from_utf8_lossy(field);
                if let Some(id) = m.lookup("door-1", field.trim()) {
                    assert!(!id.is_empty() && id.trim() == id, "user id {id:?}");
                }
            }
        }
    }
});
