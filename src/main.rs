//! The `clockbridge` command: parses arguments, loads the configuration, sets up logging and runs the
//! chosen command. Errors are printed with their whole chain; the exit code is 1 on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use clockbridge::config::{Config, DEFAULT_CONFIG_PATH};
use clockbridge::daemon::{self, RunOptions};

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
    CheckConfig,
    /// Show the queue, the devices and the sender (safe while the daemon runs).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
    /// Run the real pipeline against built-in simulated clocks and a local stand-in of the platform.
    Demo {
        /// Punches each simulated clock sends.
        #[arg(long, default_value_t = 200)]
        punches: usize,
        /// Keep the demo's working directory (queue, config) and print its path.
        #[arg(long)]
        keep: bool,
    },
    /// Serve the local stand-in of the Feishu API (for trying clockbridge without a tenant).
    #[command(hide = true)]
    Standin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "cli_standin")]
        app_id: String,
        #[arg(long, default_value = "standin-secret")]
        app_secret: String,
        /// Milliseconds added to every write reply.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clockbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::CheckConfig => {
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
            eprintln!(
                "clockbridge: {}: configuration is valid",
                cli.config.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            // status reads the queue only: it needs no secret
            let cfg = Config::load_without_secret(&cli.config)?;
            let st = clockbridge::status::read(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", clockbridge::status::render_text(&st));
            }
            Ok(ExitCode::SUCCESS)
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
            let progress = if quiet || json {
                clockbridge::import::Progress::Quiet
            } else {
                clockbridge::import::Progress::Auto
            };
            let reports = runtime()?
                .block_on(clockbridge::import::import(&cfg, &device, &files, progress))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    print!("{}", r.render());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let cfg = Config::load(&cli.config)?;
            clockbridge::logging::init(&cfg.log.level, &cfg.log.format);
            runtime()?.block_on(run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { punches, keep } => {
            clockbridge::logging::init("warn", "text");
            let summary = runtime()?.block_on(clockbridge::demo::run(punches, keep))?;
            print!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Standin {
            listen,
            app_id,
            app_secret,
            latency_ms,
        } => {
            clockbridge::logging::init("info", "text");
            runtime()?.block_on(async move {
                let cfg = clockbridge::standin::StandinConfig {
                    app_id,
                    app_secret,
                    latency: std::time::Duration::from_millis(latency_ms),
                    ..Default::default()
                };
                let s = clockbridge::standin::Standin::bind(listen, cfg)
                    .await
                    .with_context(|| format!("standin: cannot listen on {listen}"))?;
                eprintln!("clockbridge standin: serving {}", s.base_url());
                tokio::signal::ctrl_c().await?;
                s.shutdown().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let opts = RunOptions::for_config(&cfg);
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let running = daemon::start(cfg, opts).await?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); break; }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading the mapping"); running.reload_mapping(); }
        }
    }
    running.stop().await;
    Ok(())
}
