//! `standin`: serves the local stand-in of the Feishu API (`clockbridge_testkit::standin`), for
//! trying clockbridge without a tenant. Ctrl-C stops it. It has no security: keep it on loopback or
//! a test network.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clockbridge_testkit::standin::{Standin, StandinConfig};

#[derive(Parser)]
#[command(
    name = "standin",
    version,
    about = "Serve the local stand-in of the Feishu API (for trying clockbridge without a tenant)"
)]
struct Args {
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
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let cfg = StandinConfig {
        app_id: args.app_id,
        app_secret: args.app_secret,
        latency: std::time::Duration::from_millis(args.latency_ms),
        ..Default::default()
    };
    let listen = args.listen;
    let s = Standin::bind(listen, cfg)
        .await
        .with_context(|| format!("standin: cannot listen on {listen}"))?;
    eprintln!("clockbridge standin: serving {}", s.base_url());
    tokio::signal::ctrl_c().await?;
    s.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    clockbridge_testkit::run_main("info", async { serve(args).await.map(|()| String::new()) })
}
