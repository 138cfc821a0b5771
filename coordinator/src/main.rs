//! `skiff-coordinator`: runs one coordinator until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use skiff_coordinator::{Config, Coordinator, EtcdConfig, config, units};
use tokio_util::sync::CancellationToken;

/// Skiff coordinator: tracks agents and tasks and places tasks through resource offers.
#[derive(Debug, Parser)]
#[command(name = "skiff-coordinator", version)]
struct Args {
    /// Address to serve gRPC on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address clients are told to dial for this coordinator (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
    /// Replicate through etcd: comma-separated client URLs (default: the embedded single-machine registry).
    #[arg(long, value_delimiter = ',', value_name = "URL[,URL...]")]
    etcd: Vec<String>,
    /// Key prefix of this fleet's state in etcd.
    #[arg(long, default_value = "/skiff/", requires = "etcd")]
    etcd_prefix: String,
    /// Leader lease TTL in whole seconds (etcd's minimum is 2 s): a dead leader is replaced within about one TTL.
    #[arg(long, default_value = "2s", value_parser = parse_ttl, requires = "etcd")]
    lease_ttl: Duration,
    /// Where this replica keeps its artifacts (Wasm modules by sha256).
    #[arg(long, default_value = "/var/lib/skiff/coordinator")]
    data_dir: std::path::PathBuf,
    /// Largest artifact accepted, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    max_artifact_mib: u64,
    /// Total size of this replica's artifact store, in MiB; uploads beyond it are refused.
    #[arg(long, default_value_t = 10 * 1024, value_name = "MIB")]
    artifact_quota_mib: u64,
    /// Artifacts that no live task refers to are removed after this long unused.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    artifact_grace: Duration,
    /// How often unused artifacts and finished jobs and tasks are looked for.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// Finished jobs and tasks are collected this long after they ended (Nomad's job_gc_threshold);
    /// `skiff job status` and `skiff logs` then say when they were collected.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    gc_after: Duration,
    /// At most this many finished tasks are kept: past it the oldest are collected sooner.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_finished_tasks: u64,
    /// Output of one task the leader keeps for `skiff logs` and watchers (past it: truncated).
    #[arg(long, default_value_t = 4, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_task_output_mib: u64,
    /// Events a `skiff logs -f` or `skiff run` watcher may fall behind before it is cut off (it
    /// resumes where it was).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    watch_buffer: u64,
    /// Messages queued for one agent or framework that reads none of them before it is
    /// disconnected with a reason (it registers or subscribes again, and is reconciled).
    #[arg(long, default_value_t = skiff_core::limits::PEER_BUFFER as u64, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    peer_buffer: u64,
    /// Live (not yet done) jobs one submitter (token, or `anonymous`) may have at once.
    #[arg(long, default_value_t = skiff_core::limits::MAX_LIVE_JOBS_PER_SUBMITTER as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_live_jobs: u64,
    /// After a takeover, how long agents have to re-register before their tasks are reported LOST.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    reregister_timeout: Duration,
    /// An agent silent this long is unreachable: its offers are rescinded, its tasks UNREACHABLE.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    agent_timeout: Duration,
    /// An agent silent this long has its UNREACHABLE tasks reported LOST, so jobs retry them elsewhere;
    /// keep it above the agents' --partition-kill-after (20s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    agent_lost_after: Duration,
    /// Offers are made at least this often (and after every batch of requests).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    offer_interval: Duration,
    /// An offer a framework has not answered within this time is rescinded.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    offer_timeout: Duration,
    /// How long a disconnected framework's tasks survive when it names no failover timeout.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    framework_failover_timeout: Duration,
    /// Weight of a role in DRF: ROLE=WEIGHT (repeatable; unlisted roles weigh 1).
    #[arg(long = "role-weight", value_name = "ROLE=WEIGHT", value_parser = units::parse_key_value)]
    role_weights: Vec<(String, String)>,
    /// Quota guarantee of a role, served before fair shares: ROLE=cpus:2,mem:4G (repeatable).
    #[arg(long = "role-guarantee", value_name = "ROLE=RESOURCES", value_parser = units::parse_key_value)]
    role_guarantees: Vec<(String, String)>,
    /// Quota limit of a role, never exceeded: ROLE=cpus:8,mem:16G (repeatable).
    #[arg(long = "role-limit", value_name = "ROLE=RESOURCES", value_parser = units::parse_key_value)]
    role_limits: Vec<(String, String)>,
    /// Role of the built-in job scheduler (the tasks of `skiff run` and `skiff job run`).
    #[arg(long, default_value = "default")]
    jobs_role: String,
    /// Order the job scheduler serves its queue in: fifo, priority, sjf, srtf.
    #[arg(long, default_value = "fifo")]
    queue_order: skiff_coordinator::jobs::QueueOrder,
    /// How the job scheduler places queued tasks into offers: greedy (first fit) or mcf (min-cost flow).
    #[arg(long, default_value = "greedy")]
    placement: skiff_coordinator::jobs::Placement,
    /// The fleet's CA certificate (PEM): with --cert and --key, every connection is TLS, every
    /// caller needs a certificate from this CA, and ACLs are on (see `skiff tls`, `skiff acl`).
    #[arg(long, env = "SKIFF_CA_CERT", value_name = "PEM")]
    ca_cert: Option<std::path::PathBuf>,
    /// This coordinator's certificate (`skiff tls cert create --coordinator`).
    #[arg(long, env = "SKIFF_COORDINATOR_CERT", value_name = "PEM")]
    cert: Option<std::path::PathBuf>,
    /// This coordinator's private key.
    #[arg(long, env = "SKIFF_COORDINATOR_KEY", value_name = "PEM")]
    key: Option<std::path::PathBuf>,
    /// Serve plaintext, unauthenticated, on a non-loopback address (anyone reaching the port
    /// owns the fleet: only on a network you trust completely).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Serve Prometheus metrics (`GET /metrics`) on this address; a loopback one unless
    /// --insecure-plaintext (the listener has no TLS).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = skiff_telemetry::LogFormat::Text)]
    log_format: skiff_telemetry::LogFormat,
    /// CA certificate etcd's members are verified with (default: --ca-cert); `https://` etcd URLs.
    #[arg(long, value_name = "PEM", requires = "etcd")]
    etcd_ca_cert: Option<std::path::PathBuf>,
    /// Client certificate shown to etcd (`--client-cert-auth`) (default: --cert).
    #[arg(long, value_name = "PEM", requires = "etcd")]
    etcd_cert: Option<std::path::PathBuf>,
    /// Key of --etcd-cert (default: --key).
    #[arg(long, value_name = "PEM", requires = "etcd")]
    etcd_key: Option<std::path::PathBuf>,
    /// Under `--queue-order priority`, a waiting task's priority rises by one per this long (0s: never).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    priority_aging: Duration,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
        return Err(format!("{text}: etcd leases take whole seconds, at least 2 s"));
    }
    Ok(ttl)
}

/// An etcd URL: `https://HOST:PORT` with TLS, `http://HOST:PORT` or `HOST:PORT` without.
fn etcd_endpoint(url: &str, tls: bool) -> Result<String, String> {
    let url = url.trim();
    let (scheme, addr) = match url.split_once("://") {
        Some(("https", addr)) => ("https", addr),
        Some(("http", addr)) => ("http", addr),
        Some((other, _)) => return Err(format!("{url}: unknown scheme {other:?}; use https:// or http://")),
        None => (if tls { "https" } else { "http" }, url),
    };
    if tls != (scheme == "https") {
        return Err(match tls {
            true => format!("{url}: TLS to etcd is on (--etcd-ca-cert or --ca-cert): use an https:// URL"),
            false => format!("{url}: an https:// URL needs TLS credentials (--ca-cert, --cert, --key)"),
        });
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{url}: expected {scheme}://HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{url}: expected {scheme}://HOST:PORT"));
    }
    Ok(format!("{scheme}://{addr}"))
}

/// Exit code for bad configuration (as firecracker and sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    skiff_telemetry::logs::init(args.log_format, "info");
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
    let bad = skiff_coordinator::Error::InvalidArgument;
    let files = skiff_tls::TlsFiles::from_parts(
        args.ca_cert.clone(),
        args.cert.clone(),
        args.key.clone(),
        ["--ca-cert", "--cert", "--key"],
    )
    .map_err(|e| bad(e.to_string()))?;
    let tls = match &files {
        Some(files) => Some(files.load(skiff_tls::Role::Coordinator).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let etcd = if args.etcd.is_empty() {
        None
    } else {
        // etcd's own CA and client certificate if given, else the coordinator's.
        let etcd_files = match (&files, args.etcd_ca_cert, args.etcd_cert, args.etcd_key) {
            (_, Some(ca), cert, key) => Some(skiff_tls::TlsFiles {
                ca,
                cert: cert
                    .or(args.cert.clone())
                    .ok_or_else(|| bad("--etcd-ca-cert needs --etcd-cert or --cert".into()))?,
                key: key.or(args.key.clone()).ok_or_else(|| bad("--etcd-ca-cert needs --etcd-key or --key".into()))?,
            }),
            (Some(files), None, cert, key) => Some(skiff_tls::TlsFiles {
                ca: files.ca.clone(),
                cert: cert.unwrap_or_else(|| files.cert.clone()),
                key: key.unwrap_or_else(|| files.key.clone()),
            }),
            (None, None, None, None) => None,
            (None, None, _, _) => {
                return Err(bad("--etcd-cert and --etcd-key need --etcd-ca-cert or --ca-cert".into()).into());
            }
        };
        // etcd checks the client certificate against its own CA: any role is accepted here.
        let etcd_tls = match etcd_files {
            Some(f) => Some(f.load_any().map_err(|e| bad(format!("etcd TLS: {e}")))?),
            None => None,
        };
        let endpoints = args
            .etcd
            .iter()
            .map(|u| etcd_endpoint(u, etcd_tls.is_some()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("--etcd {e}")))?;
        Some(EtcdConfig {
            prefix: args.etcd_prefix,
            lease_ttl: args.lease_ttl,
            tls: etcd_tls,
            ..EtcdConfig::new(endpoints)
        })
    };
    let artifacts = skiff_coordinator::artifacts::StoreLimits {
        max_blob_bytes: args.max_artifact_mib << 20,
        quota_bytes: args.artifact_quota_mib << 20,
    };
    let mut config = Config {
        listen: args.listen,
        advertise: args.advertise,
        etcd,
        data_dir: args.data_dir,
        artifacts,
        tls,
        insecure_plaintext: args.insecure_plaintext,
        metrics_listen: args.metrics_listen,
        ..Config::default()
    };
    config.leader.reregister_timeout = args.reregister_timeout;
    config.leader.artifact_grace = args.artifact_grace;
    config.leader.gc_interval = args.gc_interval;
    config.leader.gc_after = args.gc_after;
    config.leader.max_finished_tasks = args.max_finished_tasks as usize;
    config.leader.max_task_output_bytes = args.max_task_output_mib << 20;
    config.leader.watch_buffer = args.watch_buffer as usize;
    config.leader.peer_buffer = args.peer_buffer as usize;
    config.leader.max_live_jobs_per_submitter = args.max_live_jobs as usize;
    config.leader.agent_timeout = args.agent_timeout;
    config.leader.agent_lost_after = args.agent_lost_after;
    config.leader.offer_interval = args.offer_interval;
    config.leader.offer_timeout = args.offer_timeout;
    config.leader.framework_failover_timeout = args.framework_failover_timeout;
    config.leader.jobs_role = args.jobs_role;
    config.leader.jobs_policy = skiff_coordinator::jobs::Policy {
        order: args.queue_order,
        placement: args.placement,
        aging: args.priority_aging,
    };
    config.leader.roles = config::roles(&args.role_weights, &args.role_guarantees, &args.role_limits)
        .map_err(skiff_coordinator::Error::InvalidArgument)?;
    let coordinator = Coordinator::bind(config).await?;
    // Tests and scripts read this line to learn the port.
    println!("skiff-coordinator listening on {}", coordinator.local_addr());
    if let Some(addr) = coordinator.metrics_addr() {
        println!("skiff-coordinator metrics on http://{addr}/metrics");
    }

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
