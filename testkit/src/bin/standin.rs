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
    /// The scopes granted to the app, comma-separated (default: attendance:task,attendance:rule);
    /// an endpoint none of whose scopes is granted answers 99991672.
    #[arg(long, value_delimiter = ',', value_name = "SCOPES")]
    scopes: Option<Vec<String>>,
    /// The app's IP allow-list: only callers from these addresses may call the attendance
    /// endpoints, the others get 99991401 (repeatable; default: no allow-list).
    #[arg(long = "allow-ip", value_name = "IP")]
    allow_ip: Vec<std::net::IpAddr>,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let defaults = StandinConfig::default();
    let cfg = StandinConfig {
        app_id: args.app_id,
        app_secret: args.app_secret,
        latency: std::time::Duration::from_millis(args.latency_ms),
        scopes: match args.scopes {
            Some(list) => list
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => defaults.scopes.clone(),
        },
        ip_allow_list: (!args.allow_ip.is_empty()).then(|| args.allow_ip.into_iter().collect()),
        ..defaults
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
