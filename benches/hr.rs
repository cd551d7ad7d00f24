//! HR files: `clockbridge submit approvals` (the real binary, as a child process, so its peak RSS is
//! its own) of an approvals CSV of 100,000 and of 1,000,000 rows, each into a fresh queue: time to
//! check and queue, and the ratio (goal: linear, 10x the rows in at most 11x the time); then a 250 MB
//! JSON Lines approvals file: peak RSS (goal: at most 64 MiB) and time.
//!
//! Each measured command runs under a child of this bench (`hr measure ...`) that reports its own
//! `getrusage(RUSAGE_CHILDREN)`, so one run's peak is not hidden by a larger earlier one.
//!
//! Run: `cargo bench --bench hr`. `CLOCKBRIDGE_BENCH_ROWS` changes the smaller size (the larger is 10x),
//! `CLOCKBRIDGE_BENCH_JSONL_MB` the JSON Lines file's size.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

fn max_rss_of_children_kib() -> i64 {
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

/// Runs `clockbridge ARGS`, then prints `RSS_KIB <n>` and the command's stdout.
fn measure(args: &[String]) -> ExitCode {
    let out = Command::new(env!("CARGO_BIN_EXE_clockbridge"))
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return ExitCode::FAILURE;
    }
    println!("RSS_KIB {}", max_rss_of_children_kib());
    print!("{}", String::from_utf8_lossy(&out.stdout));
    ExitCode::SUCCESS
}

struct Run {
    secs: f64,
    rss_mib: f64,
    queued: u64,
}

/// `submit approvals FILE --json` into a fresh queue in `dir`, measured in a child.
fn submit(dir: &Path, file: &Path, tag: &str) -> Run {
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[feishu]\napp_id = \"cli_bench\"\n[queue]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n[inbox]\nmax_file_size = \"1GiB\"\n",
            dir.join(format!("{tag}.db")).display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["measure", "submit", "approvals", "--json", "--config"])
        .arg(&config)
        .arg(file)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "FAILED: submit {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, rest) = text.split_once('\n').unwrap();
    let rss_kib: f64 = first.trim_start_matches("RSS_KIB ").parse().unwrap();
    let report: serde_json::Value = serde_json::from_str(rest).unwrap();
    for p in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{tag}.{p}")));
    }
    Run {
        secs,
        rss_mib: rss_kib / 1024.0,
        queued: report["queued"].as_u64().unwrap_or(0),
    }
}

fn csv(path: &Path, rows: usize) -> u64 {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "type,user_id,date,start_time,end_time,idempotent_id,reason,unit,interval,uniq_id,name_ch,name_en,default_locale").unwrap();
    for i in 0..rows {
        let day = 1 + i % 28;
        writeln!(
            w,
            "leave,u{},202603{day:02},2026-03-{day:02} 09:00:00,2026-03-{day:02} 18:00:00,HR-LV-{i},family,1,28800,annual,年假,Annual leave,ch",
            i % 5000
        )
        .unwrap();
    }
    w.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn jsonl(path: &Path, bytes: u64) -> (u64, usize) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let (mut written, mut n) = (0u64, 0usize);
    while written < bytes {
        let day = 1 + n % 28;
        let line = format!(
            "{{\"type\": \"leave\", \"user_id\": \"u{}\", \"date\": \"202603{day:02}\", \"start_time\": \"2026-03-{day:02} 09:00:00\", \"end_time\": \"2026-03-{day:02} 18:00:00\", \"idempotent_id\": \"HR-JL-{n}\", \"reason\": \"family\", \"unit\": 1, \"interval\": 28800, \"uniq_id\": \"annual\", \"i18n_names\": {{\"ch\": \"年假\", \"en\": \"Annual leave\"}}, \"default_locale\": \"ch\"}}\n",
            n % 5000
        );
        w.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        n += 1;
    }
    w.flush().unwrap();
    (written, n)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("measure") {
        return measure(&args[1..]);
    }
    let small: usize = std::env::var("CLOCKBRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let jsonl_mb: u64 = std::env::var("CLOCKBRIDGE_BENCH_JSONL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let dir = tempfile::tempdir().unwrap();
    let mut failed = false;

    let mut runs = Vec::new();
    for rows in [small, small * 10] {
        let file = dir.path().join(format!("approvals-{rows}.csv"));
        let bytes = csv(&file, rows);
        let r = submit(dir.path(), &file, &format!("csv{rows}"));
        let _ = std::fs::remove_file(&file);
        if r.queued != rows as u64 {
            eprintln!("FAILED: {rows} rows: {} queued", r.queued);
            failed = true;
        }
        println!(
            "approvals CSV {rows} rows ({:.1} MB): checked and queued in {:.2} s = {:.0} rows/s; peak RSS {:.1} MiB",
            bytes as f64 / 1e6,
            r.secs,
            rows as f64 / r.secs,
            r.rss_mib
        );
        runs.push(r);
    }
    let ratio = runs[1].secs / runs[0].secs;
    println!(
        "ratio: 10x the rows took {ratio:.2}x the time (goal: linear, <= 11x){}",
        if ratio <= 11.0 {
            ""
        } else {
            "  <-- above the goal"
        }
    );

    let file = dir.path().join("approvals.jsonl");
    let (bytes, n) = jsonl(&file, jsonl_mb * 1_000_000);
    let r = submit(dir.path(), &file, "jsonl");
    if r.queued != n as u64 {
        eprintln!("FAILED: JSON Lines: {} of {n} queued", r.queued);
        failed = true;
    }
    println!(
        "approvals JSON Lines {:.0} MB ({n} items): checked and queued in {:.2} s; peak RSS {:.1} MiB (goal <= 64 MiB){}",
        bytes as f64 / 1e6,
        r.secs,
        r.rss_mib,
        if r.rss_mib <= 64.0 { "" } else { "  <-- above the goal" }
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
