//! File backfill: `clockbridge import` of a 1,000,000-line attlog file (the real binary, as a child
//! process, so its peak RSS is its own), against the `sqlite3` command-line tool's `.import` of the
//! same file into a plain table, measured in the same run. Two more `.import`s of the same file, into
//! a table with a UNIQUE key and into one that also has two secondary indexes, show how much of the
//! gap is what any deduplicating, claimable queue pays per row (index maintenance), not clockbridge.
//!
//! Run: `cargo bench --bench import` (needs the `sqlite3` tool for the reference: `apt-get install
//! sqlite3`). `CLOCKBRIDGE_BENCH_LINES` changes the size.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

/// Peak RSS (KiB) of the children waited for so far.
fn children_max_rss_kib() -> i64 {
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

fn main() {
    let lines: usize = std::env::var("CLOCKBRIDGE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("attlog.dat");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..lines {
            let s = i % 86_400;
            writeln!(
                w,
                "{:>9}\t2026-{:02}-{:02} {:02}:{:02}:{:02}\t{}\t1\t0\t0\t0",
                i % 5000,
                1 + (i / 86_400) / 28 % 12,
                1 + (i / 86_400) % 28,
                s / 3600,
                (s / 60) % 60,
                s % 60,
                i % 2
            )
            .unwrap();
        }
    }
    let bytes = std::fs::metadata(&file).unwrap().len();
    let config = dir.path().join("clockbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[feishu]\napp_id = \"cli_bench\"\n[queue]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n\n[[devices]]\nid = \"door-1\"\nkind = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ntimezone = \"Asia/Shanghai\"\n",
            dir.path().join("queue.db").display()
        ),
    )
    .unwrap();

    let rss_before = children_max_rss_kib();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--json", "--config"])
        .arg(&config)
        .arg(&file)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let rss = children_max_rss_kib();
    if !out.status.success() {
        eprintln!("FAILED: import: {}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // --json: one object per file, one per line; one file here
    let queued = report["queued"].as_u64().unwrap_or(0);
    if queued != lines as u64 {
        eprintln!("FAILED: import queued {queued} of {lines}: {report}");
        std::process::exit(1);
    }
    let rate = lines as f64 / secs;
    println!(
        "import: {lines} lines ({:.1} MB) in {secs:.2} s = {rate:.0} punches/s (goal >= 100000/s); peak RSS {:.1} MiB{}",
        bytes as f64 / 1e6,
        rss as f64 / 1024.0,
        if rss_before > rss / 2 { " (upper bound: an earlier child was larger)" } else { "" }
    );

    // same file again: nothing new
    let t = Instant::now();
    let again = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(["import", "--device", "door-1", "--json", "--config"])
        .arg(&config)
        .arg(&file)
        .output()
        .unwrap();
    let r2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    println!(
        "import: the same file again in {:.2} s: {} queued, {} duplicates",
        t.elapsed().as_secs_f64(),
        r2["queued"],
        r2["duplicates"]
    );

    // reference: sqlite3 .import of the same rows into a plain table (the reference), and,
    // to show where the time goes, into tables that pay what a deduplicating queue must: a unique key
    // (re-reads are no-ops), then also two secondary indexes (what makes rows claimable)
    let shapes = [
        ("a plain table (the reference)", "", ""),
        ("a table with a UNIQUE key", ", UNIQUE (time, pin)", ""),
        (
            "a table with a UNIQUE key and two secondary indexes",
            ", UNIQUE (time, pin)",
            "CREATE INDEX t_a ON t (r1, state, verify); CREATE INDEX t_b ON t (workcode) WHERE r2 = '0';",
        ),
    ];
    for (i, (what, key, indexes)) in shapes.iter().enumerate() {
        let reference = dir.path().join(format!("reference-{i}.db"));
        let create = Command::new("sqlite3")
            .arg(&reference)
            .arg(format!(
                "CREATE TABLE t(pin, time, state, verify, workcode, r1, r2{key}); {indexes}"
            ))
            .status();
        if !matches!(create, Ok(s) if s.success()) {
            println!("import: reference skipped: the sqlite3 tool is not installed (apt-get install sqlite3)");
            break;
        }
        let t = Instant::now();
        let st = Command::new("sqlite3")
            .arg(&reference)
            .args(["-cmd", ".mode tabs"])
            .arg(format!(".import {} t", file.display()))
            .status()
            .unwrap();
        let ref_secs = t.elapsed().as_secs_f64();
        assert!(st.success());
        let ref_rate = lines as f64 / ref_secs;
        if i == 0 {
            println!(
                "import: reference sqlite3 .import into {what}: {ref_secs:.2} s = {ref_rate:.0} rows/s; ratio = {:.2} (goal >= 0.5)",
                rate / ref_rate
            );
        } else {
            println!(
                "import: sqlite3 .import into {what}: {ref_secs:.2} s = {ref_rate:.0} rows/s; clockbridge's ratio to it = {:.2}",
                rate / ref_rate
            );
        }
    }
}
