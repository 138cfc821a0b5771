//! `skiff-coordinator`: runs one coordinator until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use skiff_coordinator::{Config, Coordinator, MemoryRegistry};
use tokio_util::sync::CancellationToken;

/// Skiff coordinator: tracks agents and tasks and places tasks through resource offers.
#[derive(Debug, Parser)]
#[command(name = "skiff-coordinator", version)]
struct Args {
    /// Address to serve gRPC on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = skiff_coordinator::config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address clients are told to dial for this coordinator (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
}

/// Exit code for bad configuration (as firecracker and sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("skiff-coordinator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skiff-coordinator: {err:#}");
            if err
                .downcast_ref::<skiff_coordinator::Error>()
                .is_some_and(|e| matches!(e, skiff_coordinator::Error::InvalidArgument(_)))
            {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config { listen: args.listen, advertise: args.advertise, ..Config::default() };
    let coordinator = Coordinator::bind(config, Arc::new(MemoryRegistry::new())).await?;
    // Tests and scripts read this line to learn the port.
    println!("skiff-coordinator listening on {}", coordinator.local_addr());

    let shutdown = CancellationToken::new();
    let serve = tokio::spawn(coordinator.run(shutdown.clone()));
    shutdown_signal().await.context("installing signal handlers")?;
    tracing::info!("shutting down");
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), serve).await {
        Ok(joined) => Ok(joined.context("coordinator task panicked")??),
        Err(_) => anyhow::bail!("did not stop within 10 s"),
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
