//! The `clockbridge` command: parses arguments, loads the configuration, sets up logging and runs the
//! chosen command. Errors are printed with their whole chain; the exit code is 1 on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use clockbridge::config::{Config, DEFAULT_CONFIG_PATH};
use clockbridge::daemon::{self, RunOptions};
use clockbridge::device_time::DeviceTimes;

#[derive(Parser)]
#[command(
    name = "clockbridge",
    version,
    about = "Bridges office time clocks to Feishu / Lark attendance, durably and exactly once"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, env = "CLOCKBRIDGE_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: read the clocks, queue every punch, upload to the platform.
    Run,
    /// Check the configuration and print it with secrets masked; exit 1 on an error.
    ///
    /// With --online, then ask the platform whether it accepts the app: exit 4 if it refuses it,
    /// 5 if it cannot be reached.
    CheckConfig {
        /// Then ask the platform: fetch a tenant token and make one harmless read of the
        /// attendance API; exit 4 if the platform refuses the app (credentials, scope, IP
        /// allow-list), 5 if it cannot be reached (DNS, connection, timeout, TLS, proxy).
        #[arg(long)]
        online: bool,
    },
    /// Show the queue, the devices and the sender (safe while the daemon runs).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the device users whose punches wait for a mapping, and what to do (safe while the
    /// daemon runs).
    Unmapped {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: records the platform rejected for good (or that it cannot import).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Backfill punches from exported log files (attlog.dat, CSV...) read with a device's format.
    Import {
        /// The configured device the files come from (its format, encoding, time zone and id apply).
        #[arg(long)]
        device: String,
        /// The files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Print the summary as JSON (one object per file).
        #[arg(long)]
        json: bool,
    },
    /// Queue HR data from a file (JSON, JSON Lines or CSV): every record, or none if one breaks a rule.
    Submit {
        /// The file's text encoding, for files not saved as UTF-8: `gb18030` (also reads GBK and
        /// GB2312), `big5`, or any WHATWG label.
        #[arg(long, global = true, value_name = "LABEL")]
        encoding: Option<String>,
        /// Refuse a file larger than this (bytes, or "256MiB", "1GiB"; default: `[inbox]
        /// max_file_size`, 256 MiB).
        #[arg(long, global = true, value_name = "SIZE", value_parser = clockbridge::hr::size::parse_size)]
        max_file_size: Option<u64>,
        #[command(subcommand)]
        command: SubmitCommand,
    },
    /// Prove that every punch is in Feishu: the queue's punches of a range against what the
    /// platform shows, per device and day, and the clocks that can be asked; repair with --requeue.
    ///
    /// Dates are calendar days on each device's own clock (its `timezone`; UTC for a device no
    /// longer configured), both included. Exit 0: every punch confirmed and the clocks agree; 2: a
    /// delivered punch is not visible in Feishu, or a clock holds records the queue lacks; 3:
    /// nothing missing, but some punches are not delivered yet; 1: the reconcile could not be made.
    Reconcile {
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last day (included), YYYY-MM-DD.
        #[arg(long)]
        to: String,
        /// Only this device (repeatable).
        #[arg(long = "device", value_name = "ID")]
        devices: Vec<String>,
        /// Only this user: a Feishu user id or a device user id (repeatable).
        #[arg(long = "user", value_name = "ID")]
        users: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Put punches delivered but not visible in Feishu back to pending (safe: the platform
        /// deduplicates by idempotent_id), wait for the running daemon to re-send them, and count
        /// what the re-send changed.
        #[arg(long)]
        requeue: bool,
        /// How long --requeue waits for the re-send (seconds).
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        wait: u64,
        /// Write one CSV row per punch not confirmed (device, user, local time, state, where it is
        /// stuck, what to do), for HR.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Do not ask the clocks.
        #[arg(long)]
        no_clocks: bool,
    },
    /// Commands for ZKTeco terminals that push (kind = "adms"), sent at their next poll.
    Adms {
        #[command(subcommand)]
        command: AdmsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand)]
enum AdmsCommand {
    /// Ask the terminal to push its records of a range again (DATA QUERY ATTLOG); duplicates are
    /// recognised, missing punches queued.
    Backfill {
        #[command(flatten)]
        range: AdmsRange,
    },
    /// Ask the terminal for its count of records in a range (VERIFY SUM ATTLOG) and compare it with
    /// the queue's count of that device's punches in the range.
    Verify {
        #[command(flatten)]
        range: AdmsRange,
        /// Seconds to wait for the terminal's answer (0: queue the command and return).
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// List a terminal's commands and what became of them.
    Commands {
        /// The configured device (kind = "adms").
        #[arg(long)]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct AdmsRange {
    /// The configured device (kind = "adms").
    #[arg(long)]
    device: String,
    /// The range's start in the terminal's local time: 2026-11-01 or "2026-11-01 08:00:00".
    #[arg(long)]
    from: String,
    /// The range's end (included): 2026-11-30 (its last second) or "2026-11-30 18:00:00".
    #[arg(long)]
    to: String,
}

async fn adms(cfg: &Config, command: AdmsCommand) -> anyhow::Result<ExitCode> {
    use clockbridge::queue::Queue;
    use clockbridge::sources::adms::{cli, commands::CommandKind, verify, AdmsSpec};
    let device = match &command {
        AdmsCommand::Backfill { range } | AdmsCommand::Verify { range, .. } => &range.device,
        AdmsCommand::Commands { device, .. } => device,
    };
    let delay = cfg
        .device(device)
        .and_then(|d| d.spec_as::<AdmsSpec>())
        .map(|s| s.delay_secs)
        .ok_or_else(|| cli::AdmsCliError::NotAdms(device.clone()))?;
    let path = cfg.queue.path.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open_beside_daemon(&path)).await??;
    let (kind, range, wait) = match command {
        AdmsCommand::Commands { device, json } => {
            let list = cli::list(&queue, &device).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("adms: device {device} has no commands");
            } else {
                for c in &list {
                    println!("{} ({} sent {} time(s))", c.describe(), c.state(), c.sends);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        AdmsCommand::Backfill { range } => (CommandKind::Backfill, range, 0),
        AdmsCommand::Verify { range, wait } => (CommandKind::Verify, range, wait),
    };
    let from = cli::parse_bound("from", &range.from)?;
    let to = cli::parse_bound("to", &range.to)?;
    let cmd = cli::queue_command(&queue, &range.device, kind, from, to).await?;
    print!("{}", cli::queued_text(&range.device, delay, &cmd));
    if kind != CommandKind::Verify || wait == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let wait = std::time::Duration::from_secs(wait);
    match cli::wait_answer(&queue, &range.device, &cmd.id, wait).await? {
        Some(c) => match c.device_sum {
            Some(sum) if c.ret == Some(0) => {
                let report = verify::compare(&queue, &range.device, from, to, sum).await?;
                println!("{}", report.render());
                Ok(if report.verdict == "match" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                })
            }
            _ => {
                println!("adms: {}", c.describe());
                Ok(ExitCode::from(2))
            }
        },
        None => {
            println!(
                "adms: no answer within {} s: the command stays queued; `clockbridge adms commands --device {}` shows its answer later",
                wait.as_secs(),
                range.device
            );
            Ok(ExitCode::from(2))
        }
    }
}

#[derive(Subcommand)]
enum SubmitCommand {
    /// Approval results (leaves, outings, overtime, trips) for user_approvals.
    Approvals {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Archived report results for archive_rule/upload_report (sent 50 rows per call).
    ArchiveReport {
        /// The archive rule id (unless the file names it).
        #[arg(long)]
        rule: Option<String>,
        /// The month, yyyyMM (unless the file names it).
        #[arg(long)]
        month: Option<String>,
        /// The operator's id, of the kind feishu.employee_type (unless the file names it).
        #[arg(long)]
        operator: Option<String>,
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leave accrual updates (quantity, expiration date) for leave_accrual_record.
    LeaveAccruals {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn submit(
    cfg: &Config,
    encoding: Option<String>,
    max_file_size: u64,
    command: SubmitCommand,
) -> anyhow::Result<ExitCode> {
    use clockbridge::hr::{submit_file_with, HrKind, ReportArgs, SubmitOptions};
    use clockbridge::queue::Queue;
    let encoding = match encoding.as_deref() {
        None => encoding_rs::UTF_8,
        Some(label) => encoding_rs::Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
            anyhow::anyhow!(
                "submit: --encoding {label:?} is not a known encoding: use utf-8, gb18030, big5 or another WHATWG label"
            )
        })?,
    };
    let (kind, file, json, args) = match command {
        SubmitCommand::Approvals { file, json } => {
            (HrKind::Approvals, file, json, ReportArgs::default())
        }
        SubmitCommand::ArchiveReport {
            rule,
            month,
            operator,
            file,
            json,
        } => (
            HrKind::ArchiveReport,
            file,
            json,
            ReportArgs {
                archive_rule_id: rule,
                month,
                operator_id: operator,
            },
        ),
        SubmitCommand::LeaveAccruals { file, json } => {
            (HrKind::LeaveAccruals, file, json, ReportArgs::default())
        }
    };
    let path = cfg.queue.path.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open_beside_daemon(&path)).await??;
    let opts = SubmitOptions {
        args,
        encoding,
        max_file_size: Some(max_file_size),
        ..SubmitOptions::default()
    };
    let report = submit_file_with(&queue, kind, &file, &opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (oldest first) with the platform's code, message and log id.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters again (after fixing the cause); punches take their user from the mapping again.
    Retry {
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Remove dead letters from the queue for good (a copy is kept in the queue's `dropped` table).
    Drop {
        #[command(flatten)]
        filter: DlqFilter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
struct DlqFilter {
    /// Dead letter ids (as `dlq list` and `status` show them).
    ids: Vec<i64>,
    /// Every dead letter (that matches --kind / --reason).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Only records of this kind (user_flow...).
    #[arg(long)]
    kind: Option<String>,
    /// Only this platform code (e.g. 1220001) or reason (before_2022, far_future, rejected, rejected_record).
    #[arg(long)]
    reason: Option<String>,
}

impl DlqFilter {
    fn selection(&self, need_target: bool) -> anyhow::Result<clockbridge::queue::DeadSelection> {
        if need_target && self.ids.is_empty() && !self.all {
            anyhow::bail!(
                "dlq: name the dead letters (ids from `clockbridge dlq list`), or give --all"
            );
        }
        Ok(clockbridge::queue::DeadSelection {
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
            kind: self.kind.clone(),
            reason: self.reason.clone(),
        })
    }
}

/// The dead letters, one a line, every time in the device's zone with the offset (`times`).
fn print_dead(list: &[clockbridge::queue::DeadLetter], times: &DeviceTimes) {
    for d in list {
        println!(
            "#{} {} {} user {} at {}: {} code {} {:?} log id {} (attempts {}, first {}, last {})",
            d.id,
            d.kind,
            d.device_id,
            d.device_user_id,
            times.show(&d.device_id, d.event_time),
            d.reason.as_deref().unwrap_or("-"),
            d.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            d.message.as_deref().unwrap_or(""),
            d.log_id.as_deref().unwrap_or("-"),
            d.attempts,
            times.show_opt(&d.device_id, d.first_attempt_at),
            times.show_opt(&d.device_id, d.last_attempt_at),
        );
    }
    if let Some(note) = times.note(list.iter().map(|d| d.device_id.as_str())) {
        println!("({note})");
    }
}

async fn dlq(cfg: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    use clockbridge::queue::Queue;
    let path = cfg.queue.path.clone();
    // dead letters are only where a queue is: never create one here
    let queue =
        tokio::task::spawn_blocking(move || Queue::open_existing_beside_daemon(&path)).await??;
    let times = DeviceTimes::of(cfg);
    match command {
        DlqCommand::List { filter, json } => {
            let list = queue.list_dead(filter.selection(false)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no dead letters");
            } else {
                print_dead(&list, &times);
            }
        }
        DlqCommand::Retry { filter } => {
            let mapping = std::sync::Arc::new(clockbridge::mapping::Mapping::load(&cfg.mapping)?);
            let latest = chrono::Utc::now().timestamp() + cfg.queue.max_future_secs;
            let r = queue
                .retry_dead_selected(
                    clockbridge::feishu::lanes::rules,
                    filter.selection(true)?,
                    Some(mapping),
                    latest,
                )
                .await?;
            println!(
                "dlq: {} pending again (the daemon sends them within seconds), {} waiting for a user mapping, {} left dead (punch time still before 2022 or in the future, or a newer value of the same report row or accrual record is queued)",
                r.pending, r.unmapped, r.kept
            );
        }
        DlqCommand::Drop { filter, yes } => {
            let sel = filter.selection(true)?;
            let list = queue.list_dead(sel.clone()).await?;
            if list.is_empty() {
                println!("dlq: nothing to drop");
                return Ok(ExitCode::SUCCESS);
            }
            print_dead(&list, &times);
            if !yes {
                if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    anyhow::bail!(
                        "dlq drop: {} dead letters would be dropped for good: confirm with --yes",
                        list.len()
                    );
                }
                eprint!(
                    "drop these {} dead letters for good? type yes: ",
                    list.len()
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    eprintln!("dlq: nothing dropped");
                    return Ok(ExitCode::FAILURE);
                }
            }
            let dropped = queue.drop_dead(sel).await?;
            let ids: Vec<String> = dropped.iter().map(|d| d.id.to_string()).collect();
            tracing::warn!(count = dropped.len(), ids = %ids.join(","), "dlq: dead letters dropped by the operator (copies kept in the dropped table)");
            println!(
                "dlq: dropped {} dead letters (copies kept in the queue's dropped table)",
                dropped.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clockbridge: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause only once: many errors already say their cause
/// ("import x: cannot read: No such file"), which anyhow's `{:#}` would repeat after them.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { online } => {
            let cfg = match Config::load(&cli.config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("clockbridge: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            // the mapping table is read at start: a broken one must fail here, not in a restart loop
            match clockbridge::mapping::Mapping::load(&cfg.mapping) {
                Ok(clockbridge::mapping::Mapping::Table(t)) => {
                    eprintln!("clockbridge: mapping table: {} users", t.len())
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("clockbridge: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            print!("{}", cfg.to_masked_toml());
            // not errors: a serial adapter may be plugged in later, a host may have its reasons
            for w in cfg.warnings() {
                eprintln!("clockbridge: warning: {w}");
            }
            eprintln!(
                "clockbridge: {}: configuration is valid",
                cli.config.display()
            );
            if !online {
                return Ok(ExitCode::SUCCESS);
            }
            // the platform's answers, one line per step (clockbridge::online): never the secret
            // or the token
            let report = runtime()?.block_on(clockbridge::online::check(&cfg));
            for line in report.lines() {
                eprintln!("clockbridge: online: {line}");
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Status { json } => {
            // status reads the queue only: it needs no secret
            let cfg = Config::load_without_secret(&cli.config)?;
            sigbus(&cfg);
            let st = clockbridge::status::read(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", clockbridge::status::render_text(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Unmapped { json } => {
            // like status: the queue read-only, no secret, never a new queue
            let cfg = Config::load_without_secret(&cli.config)?;
            sigbus(&cfg);
            let u = clockbridge::unmapped::read(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                print!(
                    "{}",
                    clockbridge::unmapped::render_text(
                        &u,
                        &DeviceTimes::of(&cfg),
                        cfg.feishu.employee_type.as_str()
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "clockbridge", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            // the commands from the CLI itself, the configuration reference from the README
            let cmd = <Cli as clap::CommandFactory>::command();
            print!(
                "{}",
                clockbridge::manpage::render(&cmd, include_str!("../README.md"))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            // the dead letters live in the queue: no secret needed
            let cfg = Config::load_without_secret(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            sigbus(&cfg);
            runtime()?.block_on(dlq(&cfg, command))
        }
        Command::Adms { command } => {
            // the commands wait in the queue file: no secret needed
            let cfg = Config::load_without_secret(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            sigbus(&cfg);
            runtime()?.block_on(adms(&cfg, command))
        }
        Command::Submit {
            encoding,
            max_file_size,
            command,
        } => {
            // submit writes to the queue only: it needs no secret
            let cfg = Config::load_without_secret(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            sigbus(&cfg);
            let max = max_file_size.unwrap_or(cfg.inbox.max_file_size);
            runtime()?.block_on(submit(&cfg, encoding, max, command))
        }
        Command::Import {
            device,
            files,
            quiet,
            json,
        } => {
            // import writes to the queue only: it needs no secret
            let cfg = Config::load_without_secret(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            sigbus(&cfg);
            let progress = if quiet || json {
                clockbridge::import::Progress::Quiet
            } else {
                clockbridge::import::Progress::Auto
            };
            let reports = runtime()?
                .block_on(clockbridge::import::import(&cfg, &device, &files, progress))?;
            // --json: one object per file, one per line (JSON Lines)
            for r in &reports {
                if json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    print!("{}", r.render());
                }
            }
            let empty: Vec<&str> = reports
                .iter()
                .filter(|r| r.nothing_read())
                .map(|r| r.path.as_str())
                .collect();
            if empty.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "clockbridge: import: no line of {} was a punch of device {device}: check --device and the device's format keys (the rejected lines above say why)",
                    empty.join(", ")
                );
                Ok(ExitCode::from(clockbridge::import::EXIT_NOTHING_READ))
            }
        }
        Command::Reconcile {
            from,
            to,
            devices,
            users,
            json,
            requeue,
            wait,
            csv,
            no_clocks,
        } => {
            use clockbridge::reconcile::{self, range::parse_date, Options};
            let cfg = Config::load(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            sigbus(&cfg);
            let opts = Options {
                from: parse_date("--from", &from).map_err(anyhow::Error::msg)?,
                to: parse_date("--to", &to).map_err(anyhow::Error::msg)?,
                devices,
                users,
                requeue,
                wait: std::time::Duration::from_secs(wait),
                clocks: !no_clocks,
            };
            let code =
                runtime()?.block_on(reconcile::command(&cfg, &opts, json, csv.as_deref()))?;
            Ok(ExitCode::from(code))
        }
        Command::Run => {
            let cfg = Config::load(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            cfg.warnings().iter().for_each(|w| tracing::warn!("{w}"));
            sigbus(&cfg);
            limit_files(&cfg);
            runtime()?.block_on(run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A bus error on the queue's mapped `-shm` file says why before the process dies
/// (`clockbridge::sigbus`): for every command that opens the queue.
fn sigbus(cfg: &Config) {
    if let Err(e) = clockbridge::sigbus::install(&cfg.queue.path) {
        tracing::debug!("sigbus: cannot install the handler: {e}");
    }
}

/// Raises the soft limit of open files to the hard limit and caps clock connections within it, with
/// a reserve for uploads, the queue and `/healthz` (`clockbridge::limits`).
fn limit_files(cfg: &Config) {
    use clockbridge::limits;
    let n = limits::raise_nofile();
    let budget = limits::set_clock_connections(cfg.limits.max_clock_connections, n.soft);
    let raised = if n.soft > n.before {
        format!(" (raised from {})", n.before)
    } else {
        String::new()
    };
    tracing::info!(
        "open files: soft limit {}{raised}, hard limit {}; clock connections: at most {} on all listening devices together (limits.max_clock_connections = {}, {} descriptors kept for uploads, the queue and /healthz)",
        n.soft,
        n.hard,
        budget.cap(),
        cfg.limits.max_clock_connections,
        limits::reserve(n.soft),
    );
    if let Some(e) = n.error {
        tracing::warn!(
            "open files: cannot raise the soft limit from {} to the hard limit {}: {e}: set LimitNOFILE= in the unit (the shipped one has LimitNOFILE=65536)",
            n.before,
            n.hard
        );
    }
    if budget.cap() < cfg.limits.max_clock_connections {
        tracing::warn!(
            "open files: the soft limit of {} leaves room for {} clock connections, fewer than limits.max_clock_connections = {}: raise LimitNOFILE= (or ulimit -n) to allow more",
            n.soft,
            budget.cap(),
            cfg.limits.max_clock_connections
        );
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    use clockbridge::service::Service;
    use tokio::signal::unix::{signal, SignalKind};
    let opts = RunOptions::for_config(&cfg);
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Service::starting();
    let running = daemon::start(cfg, opts)
        .await
        .inspect_err(|e| Service::failed(e))?;
    // READY=1 only now: the queue is open and migrated, the sender and the sources run
    let service = Service::ready(running.health()).await;
    let why = loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break "SIGTERM"; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); break "SIGINT"; }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading the mapping"); running.reload_mapping(); }
        }
    };
    service.stopping(why).await;
    running.stop().await;
    // the last notifications before the process ends
    clockbridge::service::flush(std::time::Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("import x.dat: cannot read: {source}")]
    struct Says {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_error_already_says_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(Says { source: io() });
        assert_eq!(
            error_text(&e),
            "import x.dat: cannot read: No such file or directory"
        );
        // a cause not said yet is added once
        let e = anyhow::Error::new(io()).context("mapping users.csv: cannot load");
        assert_eq!(
            error_text(&e),
            "mapping users.csv: cannot load: No such file or directory"
        );
    }
}
