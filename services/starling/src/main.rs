//! `starling up`: run Starling standalone.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use starling::{Settings, Standalone};

#[derive(Parser)]
#[command(name = "starling", version, about = "Starling social timeline service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all services in one process on embedded backends.
    Up {
        /// TOML settings file (see README); STARLING__SECTION__KEY variables override it.
        #[arg(long, env = "STARLING_CONFIG")]
        config: Option<PathBuf>,
        /// Where data lives (overrides server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080 (overrides server.bind).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Logs to stderr; stdout carries only the "listening on" line scripts read.
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Up { config, data_dir, bind } => {
            let mut settings = Settings::load(config.as_deref(), std::env::vars())?;
            if let Some(dir) = data_dir {
                settings.server.data_dir = dir;
            }
            if let Some(addr) = bind {
                settings.server.bind = addr;
            }
            let server = Standalone::start(settings).await?;
            // Tests and scripts read the address from this line.
            println!("listening on http://{}", server.addr);
            shutdown_signal().await;
            tracing::info!("shutdown requested; draining");
            server.stop().await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
