//! `skiff dev`: a coordinator (embedded registry) and one agent in one process, for one machine,
//! with TLS and ACLs on unless told otherwise ([`secure`]).

mod secure;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skiff_agent::Agent;
use skiff_coordinator::Coordinator;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Address the coordinator listens on.
    #[arg(long, default_value = skiff_coordinator::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Work directory of the agent (default: a temporary directory removed on exit).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Run native tasks too (contained in namespaces, a cgroup and seccomp; off by default).
    #[arg(long)]
    pub native_tasks: bool,
    /// Without TLS and ACLs: anyone who reaches the port may do anything (loopback only).
    #[arg(long)]
    pub insecure_plaintext: bool,
}

pub async fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    let temp;
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::Builder::new()
                .prefix("skiff-dev-")
                .tempdir()
                .map_err(|e| CliError::Other(format!("cannot create a work directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| CliError::BadInput(format!("cannot create {}: {e}", work_dir.display())))?;

    // Port 0 is resolved first: the certificates and the CLI's files are for the bound address.
    let listen = match args.listen.port() {
        0 => std::net::TcpListener::bind(args.listen)
            .and_then(|l| l.local_addr())
            .map_err(|e| CliError::BadInput(format!("cannot listen on {}: {e}", args.listen)))?,
        _ => args.listen,
    };
    let agent_name = existing_agent_id(&work_dir)
        .unwrap_or_else(|| format!("dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let pki = match args.insecure_plaintext {
        true => None,
        false => Some(secure::DevPki::create(&listen.to_string(), &agent_name)?),
    };
    let config = skiff_coordinator::Config {
        listen,
        data_dir: work_dir.join("coordinator"),
        tls: pki.as_ref().map(|p| p.coordinator.clone()),
        ..Default::default()
    };
    let coordinator = Coordinator::bind(config).await.map_err(|e| CliError::BadInput(e.to_string()))?;
    let addr = coordinator.local_addr();
    let mut agent_config = skiff_agent::Config::new(vec![addr.to_string()], work_dir.clone());
    agent_config.tls = pki.as_ref().map(|p| p.agent.clone());
    agent_config.native_tasks = args.native_tasks;
    agent_config.compiler = Some(skiff_agent::runtime::wasm::compile::OWN_BINARY.into());
    let agent = Agent::new(agent_config).map_err(|e| CliError::Other(format!("cannot start the agent: {e}")))?;

    let agent_id = agent.agent_id().to_owned();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let coordinator_token = shutdown.child_token();
    let failed = CancellationToken::new();
    {
        let (token, failed) = (coordinator_token.clone(), failed.clone());
        tracker.spawn(async move {
            if let Err(err) = coordinator.run(token).await {
                eprintln!("skiff dev: coordinator failed: {err}");
                failed.cancel();
            }
        });
    }
    {
        let (token, failed) = (shutdown.clone(), failed.clone());
        tracker.spawn(async move {
            if let Err(err) = agent.run(token).await {
                eprintln!("skiff dev: agent failed: {err}");
                failed.cancel();
            }
        });
    }
    tracker.close();
    match &pki {
        Some(pki) => {
            pki.bootstrap(&addr.to_string()).await?;
            println!(
                "skiff dev: TLS and ACLs on; `skiff` finds a client certificate and a management token in {}",
                pki.client_dir.display()
            );
            println!("skiff dev: for other tools: {}", pki.exports());
        }
        None => println!("skiff dev: TLS and ACLs OFF (--insecure-plaintext): anyone reaching {addr} owns this fleet"),
    }
    // The ready line comes last: once it is printed, the CLI finds everything it needs.
    println!("skiff dev: coordinator listening on {addr}; agent {} working in {}", agent_id, work_dir.display());
    println!("skiff dev: run tasks with `skiff run --coordinators {addr} FILE.wasm`; Ctrl-C stops");

    tokio::select! {
        r = crate::shutdown_signal() => r.map_err(|e| CliError::Other(format!("cannot install signal handlers: {e}")))?,
        _ = failed.cancelled() => {}
    }
    eprintln!("skiff dev: stopping");
    // Cancels the agent (it kills its tasks) and, through its child token, the coordinator.
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    match (stopped, failed.is_cancelled()) {
        (Err(_), _) => Err(CliError::Other("did not stop within 10 s".into())),
        (Ok(()), true) => Ok(ExitCode::FAILURE),
        (Ok(()), false) => Ok(ExitCode::SUCCESS),
    }
}

/// The id an agent kept in `work_dir` before, if any (it keeps its name across runs).
fn existing_agent_id(work_dir: &std::path::Path) -> Option<String> {
    let id = std::fs::read_to_string(work_dir.join("agent-id")).ok()?;
    let id = id.trim();
    skiff_tls::identity::check_name(id).ok().map(|()| id.to_owned())
}
