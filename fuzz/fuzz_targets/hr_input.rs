//! HR files (`submit` and the inbox): JSON, JSON Lines and CSV read as a stream by
//! `src/hr/input.rs`, each unit then checked by the rules of its kind (approvals, archive reports,
//! leave accruals) and turned into queue records.
//!
//! Input: one byte choosing the kind, one the file name (its extension decides the format, or the
//! first character does), one the encoding (UTF-8 or GB18030) and one the size of each read; the rest
//! is the file.
//!
//! Checked beyond "no panic":
//! - the units and problems are the same whatever the size of the reads (the streaming reader sees
//!   every boundary), and every unit's and problem's line is within the file;
//! - a problem's message holds no control character (it goes to logs and to the rejected report);
//! - a unit's records have the kind's queue kind, an idempotent key, and a JSON payload, and the same
//!   unit gives the same records again (the keys are derived, never random).

#![no_main]

use std::io::Read;

use clockbridge::hr::input::{Problem, Unit, Units};
use clockbridge::hr::{accruals, approvals, reports, HrKind, Issue, ReportArgs};
use clockbridge::queue::NewRecord;
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

/// A unit as a comparable value.
fn shown(u: &Unit) -> (u64, serde_json::Value) {
    match u {
        Unit::Json { line, value } => (*line, value.clone()),
        Unit::Csv { line, row } => (*line, serde_json::json!(row)),
    }
}

fn streamed(
    data: &[u8],
    step: usize,
    name: &str,
    enc: &'static encoding_rs::Encoding,
) -> (Vec<Unit>, Vec<Issue>) {
    let (mut units, mut issues) = (Vec::new(), Vec::new());
    for u in Units::new(Trickle { data, step }, name, enc) {
        match u {
            Ok(u) => units.push(u),
            Err(Problem::Issue(i)) => issues.push(i),
            Err(Problem::Io(e)) => panic!("a slice cannot fail to read: {e}"),
        }
    }
    (units, issues)
}

fn records(kind: HrKind, unit: &Unit, args: &ReportArgs) -> Result<Vec<NewRecord>, Vec<Issue>> {
    let one = std::slice::from_ref(unit);
    match kind {
        HrKind::Approvals => approvals::records(one),
        HrKind::ArchiveReport => reports::records(one, args),
        HrKind::LeaveAccruals => accruals::records(one),
    }
}

const NAMES: [&str; 5] = ["hr.json", "hr.jsonl", "hr.csv", "hr.ndjson", "hr"];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = HrKind::ALL[input.choose(HrKind::ALL.len())];
    let name = NAMES[input.choose(NAMES.len())];
    let enc = [encoding_rs::UTF_8, encoding_rs::GB18030][input.choose(2)];
    let step = 1 + input.choose(97);
    let args = if input.byte() & 1 == 0 {
        ReportArgs::default()
    } else {
        ReportArgs {
            archive_rule_id: Some("rule-1".into()),
            month: Some("202603".into()),
            operator_id: Some("op-1".into()),
        }
    };
    let data = input.rest();
    let last_line = 1 + data.iter().filter(|&&b| b == b'\n').count() as u64;

    let (units, issues) = streamed(data, step, name, enc);
    let whole = streamed(data, usize::MAX, name, enc);
    assert_eq!(
        units.iter().map(shown).collect::<Vec<_>>(),
        whole.0.iter().map(shown).collect::<Vec<_>>(),
        "the units depend on the read size"
    );
    assert_eq!(issues, whole.1, "the problems depend on the read size");
    for i in &issues {
        assert!(
            (1..=last_line).contains(&i.line),
            "problem line {}: {i}",
            i.line
        );
        assert_loggable("input problem", &i.message);
    }
    for u in &units {
        assert!(
            (1..=last_line).contains(&u.line()),
            "unit line {}",
            u.line()
        );
        match records(kind, u, &args) {
            Ok(recs) => {
                let again = records(kind, u, &args).expect("the same unit passes again");
                assert_eq!(recs.len(), again.len());
                for (r, a) in recs.iter().zip(&again) {
                    assert_eq!(r.kind, kind.queue_kind());
                    assert!(!r.idem.is_empty() && !r.ukey.is_empty());
                    assert_eq!(
                        (&r.idem, &r.ukey, &r.payload),
                        (&a.idem, &a.ukey, &a.payload)
                    );
                    serde_json::from_str::<serde_json::Value>(&r.payload)
                        .unwrap_or_else(|e| panic!("payload {:?}: {e}", r.payload));
                }
            }
            Err(problems) => {
                assert!(!problems.is_empty());
                for p in problems {
                    assert_eq!(p.line, u.line(), "{p}");
                    assert_loggable("rule problem", &p.message);
                }
            }
        }
    }
});
