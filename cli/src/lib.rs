//! The `skiff` command line: run tasks on a fleet, and run a single-node fleet for development.
//!
//! Layout:
//! - [`cmd`]: one module per subcommand (`run`, `dev`, `kill`, `logs`);
//! - [`client`]: dialing the leading coordinator;
//! - [`access`]: the CLI's TLS credentials and ACL token (environment, or `skiff dev`'s files);
//! - [`artifact`]: storing a module in the coordinators' artifact store (by hash, uploaded once);
//! - [`units`]: sizes, durations, CPU counts and `KEY=VALUE` (shared with the coordinator);
//! - [`jobfile`]: the job file format of `skiff job run`;
//! - [`output`]: tables and `-o json` for the commands that print the fleet's state
//!   (`status`, `agents`, `agent`, `tasks`, `task`);
//! - [`printed`]: which bytes of a task's output were printed (each once, across failovers);
//! - [`exit`]: exit codes and the CLI's error type.
#![forbid(unsafe_code)]

pub mod access;
pub mod artifact;
pub mod client;
pub mod cmd;
pub mod exit;
pub use skiff_coordinator::units;
pub mod jobfile;
pub mod output;
pub mod printed;

use clap::{Parser, Subcommand};

/// Skiff: WebAssembly-sandboxed tasks on a fleet of hosts.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one task and stream its output; exits with the task's exit code.
    Run(cmd::run::RunArgs),
    /// Run a coordinator and one agent in this process (a single-node fleet).
    Dev(cmd::dev::DevArgs),
    /// Store a Wasm module in the fleet's artifact store (uploaded only if the fleet lacks it);
    /// prints its sha256.
    Push(cmd::push::PushArgs),
    /// Copy an output file of a task (collected with `skiff run --output`) to a local file.
    Cp(cmd::cp::CpArgs),
    /// Kill a task.
    Kill(cmd::kill::KillArgs),
    /// Jobs: N instances of a task with retries and constraints, from a TOML job file.
    Job(cmd::job::JobArgs),
    /// Print a task's output (stdout and stderr), kept by the coordinator.
    Logs(cmd::logs::LogsArgs),
    /// The fleet's CA and certificates for coordinators, agents and clients.
    Tls(cmd::tls::TlsArgs),
    /// ACL tokens and policies: bootstrap, create, list, revoke.
    Acl(cmd::acl::AclArgs),
    /// The fleet at a glance: leader, replicas, agents, capacity, tasks by state.
    Status(cmd::status::ViewArgs),
    /// Every agent: state, running tasks, resources used and total.
    Agents(cmd::status::ViewArgs),
    /// One agent (`status`), or take it out of placement (`drain`).
    Agent(cmd::agent::AgentArgs),
    /// Tasks the leader holds, newest first (filters: --state, --job, --agent).
    Tasks(cmd::tasks::TasksArgs),
    /// One task: spec, placement, state history, usage.
    Task(cmd::tasks::TaskArgs),
}

pub(crate) use skiff_core::task::is_terminal;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
