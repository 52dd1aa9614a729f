//! `starling up` runs every service in one process; `starling serve <role>` runs one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use starling::{Node, Role, Settings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "starling", version, about = "Starling social timeline service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all four services in one process (embedded backends unless configured otherwise).
    Up(Common),
    /// Run one service in its own process (events over Kafka, timelines in Redis).
    Serve {
        #[arg(value_enum)]
        role: Role,
        #[command(flatten)]
        common: Common,
    },
    /// Traces for research: generate or import one, replay it against a running deployment.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
}

#[derive(Subcommand)]
enum TraceCommand {
    #[command(flatten)]
    Make(starling_trace::cli::Command),
    /// Replay a trace against a running deployment, check it against the oracle, write a report.
    Replay(starling_replay::cli::ReplayArgs),
    /// Replay one trace under push-all, pull-all and hybrid fan-out, each on a fresh
    /// server, and compare them side by side.
    Study(starling_replay::cli::StudyArgs),
}

#[derive(Args)]
struct Common {
    /// TOML settings file (see README); STARLING__SECTION__KEY variables override it.
    #[arg(long, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    /// Where data lives (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides server.bind).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
}

impl Common {
    fn settings(self) -> anyhow::Result<Settings> {
        let mut settings = Settings::load(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = self.data_dir {
            settings.server.data_dir = dir;
        }
        if let Some(addr) = self.bind {
            settings.server.bind = addr;
        }
        Ok(settings)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    let (common, roles) = match command {
        Command::Up(common) => (common, Role::ALL.to_vec()),
        Command::Serve { role, common } => (common, vec![role]),
        Command::Trace { command: TraceCommand::Make(command) } => {
            let telemetry = starling_telemetry::init("starling-trace")?;
            let made = starling_trace::cli::run(command);
            flush(telemetry).await?;
            return made;
        }
        Command::Trace { command: TraceCommand::Replay(args) } => {
            let telemetry = starling_telemetry::init("starling-replay")?;
            let replayed = args.run().await;
            flush(telemetry).await?;
            return replayed;
        }
        Command::Trace { command: TraceCommand::Study(args) } => {
            let telemetry = starling_telemetry::init("starling-replay")?;
            let studied = args.run().await;
            flush(telemetry).await?;
            return studied;
        }
    };
    let telemetry = starling_telemetry::init(starling::service_label(&roles))?;
    let node = Node::start(common.settings()?, &roles).await?;
    // Tests and scripts read the address from this line.
    println!("listening on http://{}", node.addr);
    shutdown_signal().await;
    tracing::info!("shutdown requested; draining");
    let stopped = node.stop().await;
    // Last, so the drain's own spans are exported too.
    flush(telemetry).await?;
    stopped
}

/// Exports the spans still batched (a blocking call, so off the runtime's threads).
async fn flush(telemetry: starling_telemetry::Telemetry) -> anyhow::Result<()> {
    Ok(tokio::task::spawn_blocking(move || telemetry.shutdown()).await?)
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
