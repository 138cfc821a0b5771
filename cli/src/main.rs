//! `skiff`: see `skiff --help`.

use std::process::ExitCode;

use clap::Parser;
use skiff_cli::{Cli, Command, cmd, exit};

fn main() -> ExitCode {
    // This binary is also `skiff dev`'s bounded compiler of Wasm modules.
    if let Some(code) = skiff_agent::runtime::wasm::compile::child_main() {
        return ExitCode::from(code as u8);
    }
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
    // `skiff dev` runs its tasks in this process: its sandbox mounts are its own (made before any
    // thread), and vanish with it.
    if matches!(cli.command, Command::Dev(_))
        && let Err(err) = skiff_agent::sys::own_mount_namespace()
    {
        eprintln!("skiff dev: cannot make a mount namespace of its own: {err}");
        return ExitCode::FAILURE;
    }
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
            Command::Tls(args) => cmd::tls::run(args),
            Command::Acl(args) => cmd::acl::run(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Agents(args) => cmd::agent::list(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Tasks(args) => cmd::tasks::list(args).await,
            Command::Task(args) => cmd::tasks::run(args).await,
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
