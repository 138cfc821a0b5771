//! A fleet of real Skiff processes for end-to-end tests: the `skiff-coordinator` and `skiff-agent`
//! binaries on free loopback ports, and the `skiff` CLI, with the example guests.

#![allow(dead_code)]

pub mod etcd;
pub mod framework;
pub mod pki;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Directory of the workspace binaries: `$SKIFF_BIN_DIR`, else where cargo built them for this test
/// run, else (the benchmark harness, a binary itself) the directory of the running executable.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_BIN_DIR") {
        return dir.into();
    }
    match option_env!("CARGO_BIN_EXE_skiff") {
        Some(skiff) => Path::new(skiff).parent().expect("binary has a directory").to_path_buf(),
        None => std::env::current_exe().expect("own path").parent().expect("binary has a directory").to_path_buf(),
    }
}

/// Path of a workspace binary; they are all built by `cargo build --workspace` (scripts/test does it).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Path of an example guest built by scripts/build-guests.
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("SKIFF_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guests/target/wasm32-wasi/release"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {} is missing: run scripts/build-guests first", path.display());
    path
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not exit within {within:?} of SIGTERM", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` and waits until its stdout prints a line containing `marker`; returns the process
/// and that line.
pub fn spawn_until(cmd: Command, name: &str, marker: &str, within: Duration) -> (Proc, String) {
    spawn_logging_until(cmd, Stdio::inherit(), name, marker, within)
}

/// [`spawn_until`] with the process's stderr (its log) going to `stderr`.
pub fn spawn_logging_until(
    mut cmd: Command,
    stderr: Stdio,
    name: &str,
    marker: &str,
    within: Duration,
) -> (Proc, String) {
    cmd.stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null());
    // Daemon logs go to the test's stderr; keep them to what matters unless asked for more.
    if std::env::var_os("RUST_LOG").is_none() && !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let marker = marker.to_owned();
    // The reader thread ends when the child's stdout closes.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(line);
            }
        }
    });
    let proc = Proc { child, name: name.to_owned() };
    let line =
        rx.recv_timeout(within).unwrap_or_else(|_| panic!("{name} did not print its ready line within {within:?}"));
    (proc, line)
}

/// Whether a test fleet runs as production fleets do (TLS on every hop, ACLs on, a management
/// token bootstrapped), or plaintext (the benchmarks' baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Tls,
    Plaintext,
}

/// Starts a coordinator on `listen` (port 0: a free one) with `args`; returns it and its address.
fn spawn_coordinator(security: Security, listen: &str, data_dir: &Path, args: &[&str], name: &str) -> (Proc, String) {
    let mut cmd = Command::new(bin("skiff-coordinator"));
    cmd.args(["--listen", listen, "--data-dir"]).arg(data_dir).args(args);
    if security == Security::Tls {
        pki::tls_args(&mut cmd, &pki::pki().coordinator());
    }
    let (coordinator, line) = spawn_until(cmd, name, "listening on", Duration::from_secs(10));
    let addr = line.rsplit(' ').next().expect("address at the end of the line").to_owned();
    (coordinator, addr)
}

/// Secures the fleet at `addrs` (bootstraps its ACLs) or records it as plaintext; returns the
/// management token of a secured one.
fn secure(security: Security, addrs: &[String]) -> Option<String> {
    let token = match security {
        Security::Tls => Some(pki::bootstrap(&addrs.join(","))),
        Security::Plaintext => None,
    };
    pki::register(addrs, token.clone());
    token
}

/// Gives an agent command its certificate (as agent `name`) when the fleet is secured.
fn agent_tls(cmd: &mut Command, security: Security, name: &str) {
    if security == Security::Tls {
        pki::tls_args(cmd, &pki::pki().agent(name));
    }
}

/// One coordinator and one agent, as separate processes.
pub struct Fleet {
    pub coordinator: Proc,
    pub agent: Proc,
    pub addr: String,
    pub work_dir: tempfile::TempDir,
    pub data_dir: tempfile::TempDir,
    agent_args: Vec<String>,
    pub security: Security,
    /// The management token (secured fleets).
    pub token: Option<String>,
    agent_name: String,
}

impl Fleet {
    pub fn start() -> Fleet {
        Self::start_with(&[])
    }

    /// A fleet whose coordinator gets `coordinator_args` too.
    pub fn start_with(coordinator_args: &[&str]) -> Fleet {
        Self::start_configured(coordinator_args, &[])
    }

    /// A fleet whose agent gets `agent_args` too.
    #[allow(dead_code)]
    pub fn start_with_agent(agent_args: &[&str]) -> Fleet {
        Self::start_configured(&[], agent_args)
    }

    fn start_configured(coordinator_args: &[&str], agent_args: &[&str]) -> Fleet {
        Self::start_secured(Security::Tls, coordinator_args, agent_args)
    }

    /// A fleet secured or not, its coordinator and agent given these arguments too.
    pub fn start_secured(security: Security, coordinator_args: &[&str], agent_args: &[&str]) -> Fleet {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (coordinator, addr) =
            spawn_coordinator(security, "127.0.0.1:0", data_dir.path(), coordinator_args, "skiff-coordinator");
        let token = secure(security, std::slice::from_ref(&addr));

        let work_dir = tempfile::tempdir().expect("temp dir");
        let agent_args: Vec<String> = agent_args.iter().map(|a| a.to_string()).collect();
        let agent_name = pki::agent_name();
        let agent = start_agent(&addr, work_dir.path(), &agent_args, security, &agent_name);
        Fleet { coordinator, agent, addr, work_dir, data_dir, agent_args, security, token, agent_name }
    }

    /// Stops the agent (SIGTERM) and starts it again on the same work directory.
    pub fn restart_agent(&mut self) {
        self.agent.terminate(Duration::from_secs(10));
        self.agent = start_agent(&self.addr, self.work_dir.path(), &self.agent_args, self.security, &self.agent_name);
    }

    /// `skiff <args>` (any subcommand) against this fleet's coordinator.
    pub fn skiff(&self, args: &[&str]) -> Output {
        let mut cmd = skiff_cmd(&self.addr);
        cmd.args(args).env("SKIFF_COORDINATORS", &self.addr);
        run_bounded(cmd, None, Duration::from_secs(60))
    }

    /// `skiff run --coordinators ADDR <args>` with empty stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        skiff_run(&self.addr, args, stdin)
    }
}

fn start_agent(coordinators: &str, work_dir: &Path, args: &[String], security: Security, name: &str) -> Proc {
    let mut cmd = Command::new(bin("skiff-agent"));
    cmd.args(["--native-tasks", "--coordinators", coordinators, "--work-dir"]).arg(work_dir).args(args);
    agent_tls(&mut cmd, security, name);
    spawn_until(cmd, "skiff-agent", "started", Duration::from_secs(10)).0
}

/// The `skiff` binary with the credentials of the fleet at `addrs` (comma-separated).
pub fn skiff_cmd(addrs: &str) -> Command {
    let mut cmd = Command::new(bin("skiff"));
    pki::client_env(&mut cmd, addrs);
    cmd
}

/// `skiff run --coordinators ADDR <args>`, bounded in time.
pub fn skiff_run(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = skiff_cmd(addr);
    cmd.arg("run").args(["--coordinators", addr]).args(args);
    run_bounded(cmd, stdin, Duration::from_secs(60))
}

/// Runs a command to completion with a deadline, collecting its output.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, within: Duration) -> Output {
    use std::io::Write;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {within:?}");
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asks the coordinator at `addr` who leads: `Some((is_leader, leader_address, epoch))`, `None` when
/// it does not answer within a second.
pub fn get_leader(addr: &str) -> Option<(bool, String, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let channel = tokio::time::timeout(Duration::from_secs(1), pki::channel(addr)).await.ok()?.ok()?;
        let mut client = skiff_proto::operator_service_client::OperatorServiceClient::new(channel);
        let r = tokio::time::timeout(Duration::from_secs(1), client.get_leader(skiff_proto::GetLeaderRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some((r.is_leader, r.leader_address, r.epoch))
    })
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// etcd members that want TLS and client certificates of the test CA.
pub fn secure_etcd(members: usize) -> etcd::Etcd {
    let files = pki::pki().etcd();
    etcd::Etcd::start_with(members, Some(etcd::EtcdTls { ca: files.ca, cert: files.cert, key: files.key }))
}

/// A client of the etcd member at `url` (TLS with the coordinators' certificate for `https://`).
pub async fn etcd_client(url: &str) -> etcd_client::Client {
    let options = url.starts_with("https://").then(|| {
        let files = pki::pki().coordinator();
        let read = |p: &Path| std::fs::read(p).expect("read TLS file");
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca)))
            .identity(etcd_client::Identity::from_pem(read(&files.cert), read(&files.key)));
        etcd_client::ConnectOptions::new().with_tls(tls)
    });
    etcd_client::Client::connect([url], options).await.expect("etcd")
}

/// Replicated coordinators on a real etcd, and agents that know every coordinator.
pub struct HaFleet {
    pub etcd: etcd::Etcd,
    /// `None` while a coordinator is stopped.
    pub coordinators: Vec<Option<Proc>>,
    pub addrs: Vec<String>,
    /// The etcd URLs each coordinator is given.
    pub etcd_urls: Vec<String>,
    pub agents: Vec<Proc>,
    pub work_dirs: Vec<tempfile::TempDir>,
    /// Each coordinator's data directory (kept across its restarts).
    pub data_dirs: Vec<tempfile::TempDir>,
    /// With [`HaFleet::start_proxied`]: a proxy in front of each coordinator, which advertises it;
    /// agents know the coordinators by their proxies.
    pub proxies: Vec<proxy::Proxy>,
    /// A directory every native task of the fleet sees and may write (`--task-host-dir`, 1777).
    pub shared: tempfile::TempDir,
    pub security: Security,
    /// The management token (secured fleets).
    pub token: Option<String>,
    agent_names: Vec<String>,
    /// Given to every coordinator, after the fleet's own flags.
    coordinator_args: Vec<String>,
}

impl HaFleet {
    /// `etcd_members` etcd members, `coordinators` coordinators (each on all members), `agents` agents.
    pub fn start(etcd_members: usize, coordinators: usize, agents: usize) -> HaFleet {
        Self::start_with(etcd_members, coordinators, agents, &[])
    }

    /// Like [`HaFleet::start`], every coordinator given `coordinator_args` too.
    pub fn start_with(etcd_members: usize, coordinators: usize, agents: usize, coordinator_args: &[&str]) -> HaFleet {
        Self::start_with_etcd(etcd_members, coordinators, agents, coordinator_args, &[])
    }

    /// Like [`HaFleet::start_with`], every etcd member given `etcd_args` too.
    pub fn start_with_etcd(
        etcd_members: usize,
        coordinators: usize,
        agents: usize,
        coordinator_args: &[&str],
        etcd_args: &[&str],
    ) -> HaFleet {
        let files = pki::pki().etcd();
        let tls = etcd::EtcdTls { ca: files.ca, cert: files.cert, key: files.key };
        let etcd = etcd::Etcd::start_args(etcd_members, Some(tls), etcd_args);
        let urls = etcd.urls();
        let args = coordinator_args.iter().map(|a| a.to_string()).collect();
        Self::build(etcd, vec![urls; coordinators], agents, false, args)
    }

    /// Like [`HaFleet::start`], with agents reaching the coordinators through proxies that
    /// [`proxy::Proxy::drop_connections`] can cut.
    pub fn start_proxied(etcd_members: usize, coordinators: usize, agents: usize) -> HaFleet {
        let etcd = secure_etcd(etcd_members);
        let urls = etcd.urls();
        Self::build(etcd, vec![urls; coordinators], agents, true, Vec::new())
    }

    /// Like [`HaFleet::start`] with the etcd URLs of each coordinator given.
    pub fn start_on(etcd: etcd::Etcd, etcd_urls: Vec<String>, agents: usize) -> HaFleet {
        Self::build(etcd, etcd_urls, agents, false, Vec::new())
    }

    fn build(
        etcd: etcd::Etcd,
        etcd_urls: Vec<String>,
        agents: usize,
        proxied: bool,
        coordinator_args: Vec<String>,
    ) -> HaFleet {
        let security = if etcd.secure { Security::Tls } else { Security::Plaintext };
        let addrs: Vec<String> = etcd_urls.iter().map(|_| format!("127.0.0.1:{}", etcd::free_port())).collect();
        let proxies = match proxied {
            true => addrs.iter().map(|a| proxy::Proxy::start(a)).collect(),
            false => Vec::new(),
        };
        let mut fleet = HaFleet {
            etcd,
            coordinators: Vec::new(),
            addrs,
            etcd_urls,
            agents: Vec::new(),
            work_dirs: Vec::new(),
            data_dirs: Vec::new(),
            proxies,
            shared: shared_dir(),
            // etcd with client certificates means the coordinators are secured too.
            security,
            token: None,
            agent_names: Vec::new(),
            coordinator_args,
        };
        for i in 0..fleet.addrs.len() {
            fleet.coordinators.push(None);
            fleet.data_dirs.push(tempfile::tempdir().expect("temp dir"));
            fleet.start_coordinator(i);
        }
        let mut known = fleet.addrs.clone();
        known.extend(fleet.proxies.iter().map(|p| p.addr.clone()));
        fleet.token = secure(fleet.security, &fleet.addrs);
        pki::register(&known, fleet.token.clone());
        for _ in 0..agents {
            fleet.add_agent();
        }
        fleet
    }

    pub fn start_coordinator(&mut self, i: usize) {
        let mut args = vec!["--etcd", &self.etcd_urls[i], "--lease-ttl", "2s"];
        if let Some(proxy) = self.proxies.get(i) {
            args.extend(["--advertise", &proxy.addr]);
        }
        args.extend(self.coordinator_args.iter().map(String::as_str));
        let name = format!("skiff-coordinator {i}");
        let (proc, _) = spawn_coordinator(self.security, &self.addrs[i], self.data_dirs[i].path(), &args, &name);
        self.coordinators[i] = Some(proc);
    }

    /// SIGKILLs agent `i` (its work directory stays).
    pub fn kill_agent(&mut self, i: usize) {
        let _ = self.agents[i].child.kill();
        let _ = self.agents[i].child.wait();
    }

    pub fn add_agent(&mut self) {
        let work_dir = tempfile::tempdir().expect("temp dir");
        self.agent_names.push(pki::agent_name());
        let agent = self.spawn_agent(self.agents.len(), work_dir.path());
        self.agents.push(agent);
        self.work_dirs.push(work_dir);
    }

    /// Starts agent `i` again (after [`HaFleet::kill_agent`]) on its work directory.
    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i] = self.spawn_agent(i, self.work_dirs[i].path());
    }

    fn spawn_agent(&self, i: usize, work_dir: &Path) -> Proc {
        let coordinators = match self.proxies.is_empty() {
            true => self.addrs.join(","),
            false => self.proxies.iter().map(|p| p.addr.as_str()).collect::<Vec<_>>().join(","),
        };
        let mut cmd = Command::new(bin("skiff-agent"));
        cmd.args(["--native-tasks", "--coordinators", &coordinators, "--work-dir"]).arg(work_dir);
        cmd.arg("--task-host-dir").arg(self.shared.path());
        agent_tls(&mut cmd, self.security, &self.agent_names[i]);
        if std::env::var_os("RUST_LOG").is_none() {
            // What checkers read: the commands the agent acted on, with their epochs.
            cmd.env("RUST_LOG", "warn,skiff_agent::agent=info");
        }
        // Kept for checkers (`agent.log` in the work directory; the executor's is `executor.log`).
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(work_dir.join("agent.log")).expect("agent log");
        spawn_logging_until(cmd, log.into(), "skiff-agent", "started", Duration::from_secs(10)).0
    }

    /// Every coordinator address, comma-separated (for `--coordinators`).
    pub fn coordinators_arg(&self) -> String {
        self.addrs.join(",")
    }

    /// The index of the one coordinator that says it leads, once every running coordinator agrees
    /// on it; panics if none does within `within`.
    pub fn leader(&self, within: Duration) -> usize {
        eventually(within, "one agreed leader", || {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for (i, addr) in self.addrs.iter().enumerate() {
                if self.coordinators[i].is_none() {
                    continue;
                }
                let (is_leader, address, _) = get_leader(addr)?;
                if is_leader {
                    leaders.push(i);
                }
                named.push(address);
            }
            let [leader] = leaders[..] else { return None };
            // Coordinators behind proxies advertise the proxies' addresses.
            let advertised = self.proxies.get(leader).map_or(&self.addrs[leader], |p| &p.addr);
            named.iter().all(|a| a == advertised).then_some(leader)
        })
    }

    /// SIGKILLs coordinator `i`.
    pub fn kill_coordinator(&mut self, i: usize) {
        if let Some(mut proc) = self.coordinators[i].take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    pub fn signal_coordinator(&self, i: usize, signal: nix::sys::signal::Signal) {
        let proc = self.coordinators[i].as_ref().expect("coordinator running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(proc.child.id() as i32), signal).expect("signal");
    }

    /// `skiff run --coordinators <all> <args>`.
    pub fn run(&self, args: &[&str]) -> Output {
        skiff_run(&self.coordinators_arg(), args, None)
    }
}

/// Starts `skiff run` on a guest and waits until it reports the task RUNNING.
pub fn running(coordinators: &str, args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let (proc, rx, _) = running_task(coordinators, args);
    (proc, rx)
}

/// Like [`running`], answering the task's id too.
pub fn running_task(coordinators: &str, args: &[&str]) -> (Proc, mpsc::Receiver<String>, String) {
    let mut cmd = skiff_cmd(coordinators);
    cmd.arg("run").args(["--coordinators", coordinators]).args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn skiff run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc { child, name: "skiff run".into() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut task_id = String::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("task reports RUNNING");
        if let Some(rest) = line.strip_prefix("[skiff] task ")
            && rest.ends_with(" submitted")
        {
            task_id = rest.trim_end_matches(" submitted").to_owned();
        }
        if line.contains("RUNNING") {
            return (proc, rx, task_id);
        }
    }
}

pub fn wait_exit(proc: &mut Proc, within: Duration) -> (i32, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            let mut out = String::new();
            if let Some(mut stdout) = proc.child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            return (status.code().unwrap_or(-1), out);
        }
        assert!(Instant::now() < deadline, "{} did not exit within {within:?}", proc.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Among a [`Cluster`] agent's arguments: start it without `--native-tasks` (which agents of test
/// fleets otherwise get).
pub const NATIVE_OFF: &str = "<native tasks off>";

/// A world-writable (1777) temporary directory, for agents' `--task-host-dir`.
pub fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

/// One coordinator (embedded registry) and several agents, each with its own arguments.
pub struct Cluster {
    pub coordinator: Proc,
    pub agents: Vec<Proc>,
    agent_args: Vec<Vec<String>>,
    pub addr: String,
    pub work_dirs: Vec<tempfile::TempDir>,
    pub data_dir: tempfile::TempDir,
    pub security: Security,
    pub token: Option<String>,
    agent_names: Vec<String>,
}

impl Cluster {
    /// Agent `i` gets `agent_args[i]` and the attribute `idx=i`.
    pub fn start(coordinator_args: &[&str], agent_args: &[&[&str]]) -> Cluster {
        Self::start_secured(Security::Tls, coordinator_args, agent_args)
    }

    pub fn start_secured(security: Security, coordinator_args: &[&str], agent_args: &[&[&str]]) -> Cluster {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (coordinator, addr) =
            spawn_coordinator(security, "127.0.0.1:0", data_dir.path(), coordinator_args, "skiff-coordinator");
        let token = secure(security, std::slice::from_ref(&addr));
        let mut cluster = Cluster {
            coordinator,
            agents: Vec::new(),
            agent_args: Vec::new(),
            addr,
            work_dirs: Vec::new(),
            data_dir,
            security,
            token,
            agent_names: Vec::new(),
        };
        for args in agent_args {
            cluster.add_agent(args);
        }
        cluster
    }

    /// Starts one more agent (attribute `idx=N`) and waits until it has registered.
    pub fn add_agent(&mut self, args: &[&str]) {
        let i = self.agents.len();
        self.work_dirs.push(tempfile::tempdir().expect("temp dir"));
        self.agent_names.push(pki::agent_name());
        self.agent_args.push(args.iter().map(|a| a.to_string()).collect());
        let agent = self.spawn_agent(i);
        self.agents.push(agent);
        eventually(Duration::from_secs(10), "the agent registered", || {
            (connected_agents(&self.addr).len() == i + 1).then_some(())
        });
    }

    fn spawn_agent(&self, i: usize) -> Proc {
        let mut cmd = Command::new(bin("skiff-agent"));
        cmd.args(["--coordinators", &self.addr, "--work-dir"]).arg(self.work_dirs[i].path());
        // Native tasks on, unless the test starts this agent with them off.
        if !self.agent_args[i].iter().any(|a| a == NATIVE_OFF) {
            cmd.arg("--native-tasks");
        }
        cmd.arg("--attribute").arg(format!("idx={i}")).args(self.agent_args[i].iter().filter(|a| *a != NATIVE_OFF));
        agent_tls(&mut cmd, self.security, &self.agent_names[i]);
        spawn_until(cmd, &format!("skiff-agent {i}"), "started", Duration::from_secs(10)).0
    }

    /// Starts agent `i` again (after [`Cluster::kill_agent`]) on the same work directory.
    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i] = self.spawn_agent(i);
    }

    /// SIGKILLs agent `i`.
    pub fn kill_agent(&mut self, i: usize) {
        let _ = self.agents[i].child.kill();
        let _ = self.agents[i].child.wait();
    }

    /// `skiff <args>` against this cluster.
    pub fn skiff(&self, args: &[&str]) -> Output {
        let mut cmd = skiff_cmd(&self.addr);
        cmd.args(args).env("SKIFF_COORDINATORS", &self.addr);
        run_bounded(cmd, None, Duration::from_secs(90))
    }
}

/// The connected agents of a coordinator (ListAgents), with their attributes.
pub fn connected_agents(addr: &str) -> Vec<skiff_proto::AgentInfo> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let Ok(channel) = pki::channel(addr).await else { return Vec::new() };
        let mut client = skiff_proto::operator_service_client::OperatorServiceClient::new(channel);
        match client.list_agents(skiff_proto::ListAgentsRequest {}).await {
            Ok(r) => r.into_inner().agents.into_iter().filter(|a| a.connected).collect(),
            Err(_) => Vec::new(),
        }
    })
}

/// A job's status from the leader at `addr` (GetJob), if it answers.
pub fn job_status(addr: &str, job_id: &str) -> Option<skiff_proto::JobStatus> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let channel = pki::channel(addr).await.ok()?;
        let mut client = skiff_proto::operator_service_client::OperatorServiceClient::new(channel);
        client.get_job(skiff_proto::GetJobRequest { job_id: job_id.into() }).await.ok()?.into_inner().job
    })
}

/// Whether a process with exactly this command line (NUL-separated) runs (a zombie has none).
pub fn runs(cmdline: &str) -> bool {
    pid_of(cmdline).is_some()
}

/// The host pid of a process whose command line is `cmdline` (arguments each ended by a NUL).
pub fn pid_of(cmdline: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()))
        .find_map(|e| e.file_name().to_str()?.parse().ok())
}
