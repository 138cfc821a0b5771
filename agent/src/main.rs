//! `skiff-agent`: runs one agent until SIGINT or SIGTERM (its tasks are then killed). Tasks run in
//! an executor process the agent starts (this binary with `--executor`); when the agent crashes or
//! is SIGKILLed they keep running, and the agent started next on the same work directory
//! re-attaches to them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use skiff_agent::executor::process::ExecutorProcess;
use skiff_agent::{Agent, Config, ExecutorMode};
use tokio_util::sync::CancellationToken;

/// Skiff agent: offers this host's resources to the coordinators and runs their tasks.
#[derive(Debug, Parser)]
#[command(name = "skiff-agent", version)]
struct Args {
    /// Coordinator addresses, comma-separated; any of them will do (followers redirect to the leader).
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    coordinators: Vec<String>,
    /// The fleet's CA certificate (PEM): with --cert and --key, the agent dials the coordinators
    /// over TLS, accepts only a coordinator of this CA, and is the agent its certificate names.
    #[arg(long, env = "SKIFF_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// This agent's certificate (`skiff tls cert create --agent NAME`).
    #[arg(long, env = "SKIFF_AGENT_CERT", value_name = "PEM")]
    cert: Option<PathBuf>,
    /// This agent's private key.
    #[arg(long, env = "SKIFF_AGENT_KEY", value_name = "PEM")]
    key: Option<PathBuf>,
    /// Directory for the agent's id and its tasks' sandboxes.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    work_dir: PathBuf,
    /// Run native tasks (commands on the host, contained in namespaces, a cgroup and seccomp); off
    /// by default: such an agent refuses them and says so in its offers.
    #[arg(long)]
    native_tasks: bool,
    /// uids native tasks run as (gid = uid), one of its own for each running task; keep the range
    /// free of the host's users.
    #[arg(long, default_value_t = skiff_agent::config::UidRange::DEFAULT, value_name = "FIRST-LAST")]
    task_uids: skiff_agent::config::UidRange,
    /// Run every native task as this one user instead (a fallback: running tasks then share a uid).
    #[arg(long, value_name = "USER", conflicts_with = "allow_root_tasks")]
    run_tasks_as: Option<String>,
    /// Run native tasks as the agent's own user (root) instead.
    #[arg(long)]
    allow_root_tasks: bool,
    /// A host directory every native task sees read-write at the same path (repeatable).
    #[arg(long = "task-host-dir", value_name = "DIR")]
    task_host_dirs: Vec<PathBuf>,
    /// Let native tasks that ask for it use the host's network (otherwise each has only loopback).
    #[arg(long)]
    allow_host_network: bool,
    /// Root of the cgroup filesystem.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Bound of the on-disk cache of fetched modules and files, in MiB (least recently used go first).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    blob_cache_mib: u64,
    /// CPUs to offer (default: the CPUs this process may use).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// Memory to offer, in MiB (default: the host's total memory).
    #[arg(long, value_name = "MIB")]
    mem_mib: Option<u64>,
    /// Wasm tasks this agent runs at once (instance slots reserved up front).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    wasm_slots: u32,
    /// Disk of a task that asks for none, in MiB: its sandbox is a filesystem of this size.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    default_disk_mib: u64,
    /// Wall-clock bound of compiling one Wasm module; a task whose module takes longer fails with
    /// COMPILE_LIMIT.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    compile_timeout: Duration,
    /// Memory bound of compiling one Wasm module, in MiB (COMPILE_LIMIT past it).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(64..=1 << 20))]
    compile_memory_mib: u64,
    /// Bound of the compiled-module cache of each engine (plain, fuel-metered), in memory and on
    /// disk alike, in MiB (least recently used go first).
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    module_cache_mib: u64,
    /// Handles (open files, directories, streams) one Wasm task may hold at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(8..=65_536))]
    wasm_handles: u64,
    /// Kill this agent's tasks (reported LOST) after this long without a coordinator; keep it below
    /// the coordinators' --agent-lost-after (30s).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    partition_kill_after: Duration,
    /// An attribute offered with this agent's resources, as KEY=VALUE (repeatable).
    #[arg(long = "attribute", value_parser = parse_key_value)]
    attributes: Vec<(String, String)>,
    /// The executor process, left without an agent this long (a crash, a SIGKILL), kills its tasks
    /// and exits; an agent restarted sooner re-attaches to them.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
    /// Run as this agent's executor process (the agent starts it; not for operators).
    #[arg(long, hide = true)]
    executor: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (a loopback one unless
    /// --insecure-metrics: the listener has no TLS).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve metrics on a non-loopback address, without TLS (only on a network you trust).
    #[arg(long, requires = "metrics_listen")]
    insecure_metrics: bool,
    /// Also report each running task's CPU and memory (one series per task).
    #[arg(long, requires = "metrics_listen")]
    metrics_per_task: bool,
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = skiff_telemetry::LogFormat::Text)]
    log_format: skiff_telemetry::LogFormat,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number of CPUs like 0.5 or 4, got {s:?}")),
    }
}

/// Exit code for bad configuration.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // This binary is also the agent's bounded compiler of Wasm modules.
    if let Some(code) = skiff_agent::runtime::wasm::compile::child_main() {
        return ExitCode::from(code as u8);
    }
    let args = Args::parse();
    // Before any thread: the executor's sandbox mounts are its own, and vanish with it.
    if args.executor
        && let Err(err) = skiff_agent::sys::own_mount_namespace()
    {
        eprintln!("skiff-agent executor: cannot make a mount namespace of its own: {err}");
        return ExitCode::FAILURE;
    }
    skiff_telemetry::logs::init(args.log_format, "info");
    let mut config = Config::new(args.coordinators, args.work_dir);
    let files = skiff_tls::TlsFiles::from_parts(args.ca_cert, args.cert, args.key, ["--ca-cert", "--cert", "--key"]);
    config.tls = match files.and_then(|files| files.map(|f| f.load(skiff_tls::Role::Agent)).transpose()) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("skiff-agent: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    config.attributes = args.attributes.into_iter().collect();
    config.cpus = args.cpus;
    config.wasm_slots = args.wasm_slots;
    config.wasm_max_handles = args.wasm_handles as usize;
    config.default_disk_bytes = args.default_disk_mib << 20;
    config.compile_timeout = args.compile_timeout;
    config.compile_memory_bytes = args.compile_memory_mib << 20;
    config.module_cache_bytes = args.module_cache_mib << 20;
    config.compiler = Some(skiff_agent::runtime::wasm::compile::OWN_BINARY.into());
    config.partition_timeout = args.partition_kill_after;
    config.mem_bytes = args.mem_mib.map(|m| m << 20);
    config.cgroup_root = args.cgroup_root;
    config.blob_cache_bytes = args.blob_cache_mib << 20;
    config.native_tasks = args.native_tasks;
    config.task_uids = args.task_uids;
    config.run_tasks_as = args.run_tasks_as;
    config.allow_root_tasks = args.allow_root_tasks;
    config.allow_host_network = args.allow_host_network;
    config.task_host_dirs = args.task_host_dirs;
    config.recovery_timeout = args.recovery_timeout;
    config.metrics = skiff_agent::metrics::Metrics::new(args.metrics_per_task);
    if let Err(err) = std::fs::create_dir_all(&config.work_dir) {
        eprintln!("skiff-agent: cannot create the work directory {}: {err}", config.work_dir.display());
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("skiff-agent: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.executor {
        return match runtime.block_on(run_executor(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("skiff-agent executor: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    config.executor = match std::env::current_exe() {
        Ok(program) => ExecutorMode::Process { program, args: std::env::args_os().skip(1).collect() },
        Err(err) => {
            eprintln!("skiff-agent: cannot find its own binary to start the executor process: {err}");
            return ExitCode::FAILURE;
        }
    };
    let agent_metrics = config.metrics.clone();
    let agent = match runtime.block_on(async { Agent::new(config) }) {
        Ok(agent) => agent,
        Err(err) => {
            eprintln!("skiff-agent: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let metrics = match args.metrics_listen {
        None => None,
        Some(addr) => {
            let registry = agent_metrics.registry();
            match runtime.block_on(skiff_telemetry::MetricsEndpoint::bind(addr, args.insecure_metrics, registry)) {
                Ok(endpoint) => Some(endpoint),
                Err(err) => {
                    eprintln!("skiff-agent: {err}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            }
        }
    };
    match runtime.block_on(run(agent, metrics)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skiff-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(agent: Agent, metrics: Option<skiff_telemetry::MetricsEndpoint>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let metrics = metrics.map(|endpoint| {
        println!("skiff-agent metrics on http://{}/metrics", endpoint.local_addr());
        tokio::spawn(endpoint.run(shutdown.clone()))
    });
    println!("skiff-agent {} started", agent.agent_id());
    let task = tokio::spawn(agent.run(shutdown.clone()));
    shutdown_signal().await.context("installing signal handlers")?;
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(joined) => Ok(joined.context("agent task panicked")??),
        Err(_) => anyhow::bail!("did not stop within 10 s"),
    }
}

/// The executor process: until the agent stops it, or SIGINT/SIGTERM (which kill its tasks).
async fn run_executor(config: Config) -> anyhow::Result<()> {
    let executor = ExecutorProcess::new(config)?;
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(executor.run(shutdown.clone()));
    tokio::select! {
        joined = &mut task => return Ok(joined.context("executor task panicked")??),
        signal = shutdown_signal() => signal.context("installing signal handlers")?,
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(joined) => Ok(joined.context("executor task panicked")??),
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
