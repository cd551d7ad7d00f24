//! `demo`: the real clockbridge pipeline against built-in simulated clocks (two text clocks and a
//! ZKTeco terminal), an HR inbox and the local stand-in of the platform, in a temporary directory.
//! Prints what happened and exits 1 when a figure is not what the pipeline must give (see
//! `clockbridge_testkit::demo`). Run it with `cargo run --release -p clockbridge-testkit --bin demo`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "demo",
    version,
    about = "Run the real clockbridge pipeline against built-in simulated clocks and a local stand-in of the platform"
)]
struct Args {
    /// Punches each simulated clock sends.
    #[arg(long, default_value_t = 200)]
    punches: usize,
    /// Keep the demo's working directory (queue, config) and print its path.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    clockbridge_testkit::run_main(
        "warn",
        clockbridge_testkit::demo::run(args.punches, args.keep),
    )
}
