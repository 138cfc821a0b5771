//! `skiff`: see `skiff --help`.

use std::process::ExitCode;

use clap::Parser;
use skiff_cli::{Cli, Command, cmd, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(exit::BAD_INPUT),
            };
        }
    };
    let filter = if matches!(cli.command, Command::Dev(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("skiff: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args).await,
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Push(args) => cmd::push::run(args).await,
            Command::Cp(args) => cmd::cp::run(args).await,
            Command::Kill(args) => cmd::kill::run(args).await,
            Command::Job(args) => cmd::job::run(args).await,
            Command::Logs(args) => cmd::logs::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("skiff: {err}");
            err.code()
        }
    }
}
