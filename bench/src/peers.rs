//! Peers: what a user might run instead of Skiff on this machine, measured in the same run.
//!
//! * [`fork_exec`]: `std::process::Command` spawning `/bin/true` and waiting for it (glibc's
//!   `posix_spawn`: clone(CLONE_VFORK) + exec + wait), the floor any launcher pays.
//! * [`runc`]: one `runc run` (create + start + wait + delete) of a busybox-static rootfs per task.
//! * [`slurm`]: a single-node Slurm (munged, slurmctld, slurmd on 127.0.0.1) with the tuned
//!   scheduler of `shared/peers/PEERS.md`, its state fresh under the given directory.
//!
//! Throughput keeps as many tasks in flight as the machine has cores (`available_parallelism`,
//! 2 here), except Slurm, which is handed the whole array at once. Every wait has a deadline; an
//! error names what did not happen, with the tail of the relevant log. The Slurm daemons are
//! stopped by PID whatever happens (the guard [`Slurm`]'s `Drop`).

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::{fs::PermissionsExt, fs::chown, fs::symlink, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{atomic::AtomicUsize, atomic::Ordering, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fs, thread};

/// What one peer measured. `latency`: wall time of each of `n` trivial jobs run one after another
/// (submit → finished, as the peer's user sees it). `throughput_secs`: wall time to run `n` trivial
/// jobs submitted together (the peer's own batch/parallel way), from first submit to last finished.
#[derive(Debug)]
pub struct PeerResult {
    /// "fork+exec", "runc" or "slurm".
    pub name: &'static str,
    /// One line saying what exactly was run (and how many latency samples, if capped).
    pub how: String,
    pub latency: Vec<Duration>,
    pub throughput_n: usize,
    pub throughput_secs: f64,
}

/// Longest one task (a `/bin/true`, a `runc run`, an `srun`) may take before it is killed.
const TASK_LIMIT: Duration = Duration::from_secs(30);
/// Longest a setup command or a Slurm query (`sinfo`, `squeue`, `scancel`) may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(10);
/// How long the Slurm node has to come up idle, and each daemon to exit after SIGTERM.
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// `srun` samples stop at `SRUN_MIN` when all `n` would take longer than `SRUN_BUDGET`.
const SRUN_MIN: usize = 300;
const SRUN_BUDGET: Duration = Duration::from_secs(50);
const MISSING: &str = "install slurm-wlm and munge (scripts/bench does)";
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

unsafe extern "C" {
    /// kill(2) takes two integers and touches none of our memory.
    safe fn kill(pid: i32, sig: i32) -> i32;
}

/// Runs `cmd` with stdin closed and output captured, killing it after `limit`. Returns its output
/// and its wall time (spawn → exit); fails if it cannot start, times out or exits non-zero.
fn run(cmd: &mut Command, limit: Duration) -> Result<(Output, Duration)> {
    let what = format!("{cmd:?}");
    let (tx, rx) = mpsc::channel::<u32>();
    // The watchdog exists before the clock starts, so what is timed is spawn + wait alone.
    let dog = thread::spawn(move || {
        let Ok(pid) = rx.recv() else { return false };
        let late = matches!(rx.recv_timeout(limit), Err(mpsc::RecvTimeoutError::Timeout));
        if late {
            kill(pid as i32, SIGKILL);
        }
        late
    });
    let start = Instant::now();
    let cmd = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
    let _ = tx.send(child.id());
    let out = child.wait_with_output();
    let took = start.elapsed();
    drop(tx);
    let late = dog.join().unwrap_or(false);
    let out = out.with_context(|| format!("waiting for {what}"))?;
    ensure!(!late, "{what} did not finish within {limit:?} (killed)");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{what} failed ({}): {}", out.status, err.trim());
    Ok((out, took))
}

/// Calls `ready` every `every` until it says true (→ true) or `limit` passes (→ false).
fn poll(limit: Duration, every: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(every);
    }
}

/// Times `task(0..n)` one after another (latency), then `task(n..2n)` on one thread per core, each
/// taking the next index when done with one (throughput; the first error stops all and is returned).
fn measure(
    name: &'static str,
    n: usize,
    how: &str,
    task: impl Fn(usize) -> Result<Duration> + Sync,
) -> Result<PeerResult> {
    ensure!(n > 0, "{name}: n must be at least 1");
    let latency = (0..n).map(&task).collect::<Result<Vec<_>>>()?;
    let k = thread::available_parallelism().map_or(2, |k| k.get());
    let (next, task) = (&AtomicUsize::new(n), &task);
    let work = move || -> Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= 2 * n {
                return Ok(());
            }
            task(i).inspect_err(|_| next.store(2 * n, Ordering::Relaxed))?;
        }
    };
    let start = Instant::now();
    thread::scope(|s| {
        let workers: Vec<_> = (0..k).map(|_| s.spawn(work)).collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow!("a worker panicked"))?)
    })?;
    let throughput_secs = start.elapsed().as_secs_f64();
    let how = format!("{how}, {n} one after another; throughput: {n} with {k} in flight (one per core)");
    Ok(PeerResult { name, how, latency, throughput_n: n, throughput_secs })
}

/// A new directory `dir/PEER-NANOS`, failing if it already exists: every run starts fresh.
fn fresh_dir(dir: &Path, peer: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{peer}-{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()));
    fs::create_dir_all(dir)
        .and_then(|()| fs::create_dir(&path))
        .with_context(|| format!("{peer}: cannot create {}", path.display()))?;
    Ok(path)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.map(|d| d.join(name)).find(|p| p.is_file())
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else { return format!("{}: unreadable", path.display()) };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    format!("{} ends:\n    {}", path.display(), lines[lines.len().saturating_sub(12)..].join("\n    "))
}

pub fn fork_exec(n: usize) -> Result<PeerResult> {
    let how = "std::process::Command spawn+wait of /bin/true (posix_spawn: vfork+exec)";
    measure("fork+exec", n, how, |_| run(&mut Command::new("/bin/true"), TASK_LIMIT).map(|(_, t)| t))
}

pub fn runc(dir: &Path, n: usize) -> Result<PeerResult> {
    let runc = which("runc").context("runc: not installed (apt-get install runc)")?;
    let busybox = Path::new("/bin/busybox");
    ensure!(busybox.is_file(), "runc: /bin/busybox not found (apt-get install busybox-static)");
    let root = fresh_dir(dir, "runc")?;
    let (bundle, state) = (root.join("bundle"), root.join("state"));
    let build = || -> Result<()> {
        for sub in ["bin", "proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(bundle.join("rootfs").join(sub))?;
        }
        fs::create_dir(&state)?;
        fs::copy(busybox, bundle.join("rootfs/bin/busybox"))?;
        symlink("busybox", bundle.join("rootfs/bin/true"))?;
        run(Command::new(&runc).arg("spec").current_dir(&bundle), CLIENT_LIMIT)?;
        let config = bundle.join("config.json");
        Ok(fs::write(&config, patch_spec(&fs::read_to_string(&config)?)?)?)
    };
    build().with_context(|| format!("runc: building the bundle in {}", bundle.display()))?;

    let one = |i: usize| -> Result<Duration> {
        let id = format!("peer-{}-{i}", std::process::id());
        let runc_cmd = |args: &[&str]| {
            let mut cmd = Command::new(&runc);
            cmd.arg("--root").arg(&state).args(args);
            cmd
        };
        run(runc_cmd(&["run", "--bundle"]).arg(&bundle).arg(&id), TASK_LIMIT).map(|(_, t)| t).map_err(|e| {
            let _ = run(&mut runc_cmd(&["delete", "-f", &id]), CLIENT_LIMIT);
            anyhow!(
                "runc: container {id}: {e:#} (a dynamically linked /bin/busybox fails: apt-get install busybox-static)"
            )
        })
    };
    let how = "`runc run` of a busybox-static rootfs running /bin/true (`runc spec` defaults)";
    measure("runc", n, how, one)
}

/// `runc spec`'s config with `process.args = ["/bin/true"]` and no terminal.
fn patch_spec(config: &str) -> Result<String> {
    let config = config.replacen("\"terminal\": true", "\"terminal\": false", 1);
    ensure!(config.contains("\"terminal\": false"), "runc: no process.terminal in `runc spec` output");
    let start = config.find("\"args\": [").context("runc: no process.args in `runc spec` output")?;
    let end = start + config[start..].find(']').context("runc: unterminated process.args")? + 1;
    Ok(format!("{}\"args\": [\"/bin/true\"]{}", &config[..start], &config[end..]))
}

/// A running single-node Slurm: the guard. Dropping it cancels any job left (an srun caught by a
/// stopped cluster hangs), stops slurmd, slurmctld and munged by PID (SIGTERM, SIGKILL after
/// `STOP_LIMIT`) and removes the empty slurm cgroups.
struct Slurm {
    conf: PathBuf,
    jobs: PathBuf,
    ctld: SocketAddr,
    bins: HashMap<&'static str, PathBuf>,
    daemons: Vec<Daemon>,
}

struct Daemon {
    name: &'static str,
    child: Child,
    logs: [PathBuf; 2],
}

impl Slurm {
    /// Checks the prerequisites, writes a fresh munge key and slurm.conf under `dir`, starts
    /// munged, slurmctld and slurmd, and waits until the node is idle.
    fn up(dir: &Path, n: usize) -> Result<(Self, String)> {
        let mut bins = HashMap::new();
        for bin in ["munged", "slurmctld", "slurmd", "srun", "sbatch", "squeue", "sinfo", "scancel"] {
            bins.insert(bin, which(bin).with_context(|| format!("slurm: `{bin}` not found; {MISSING}"))?);
        }
        let host = fs::read_to_string("/proc/sys/kernel/hostname")?;
        let host = host.trim().split('.').next().unwrap_or_default().to_owned();
        let addrs: Vec<_> = (host.as_str(), 0).to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        ensure!(
            addrs.iter().any(|a| a.ip() == Ipv4Addr::LOCALHOST),
            "slurm: `hostname -s` ({host}) does not resolve to 127.0.0.1 (it gives {addrs:?}); \
             this single-node Slurm needs a line `127.0.0.1 {host}` in /etc/hosts"
        );
        let (uid, gid) = munge_ids()?;
        let (node, cpus) = node_line(&bins["slurmd"])?;

        let root = fresh_dir(dir, "slurm")?;
        let munge = root.join("munge");
        let socket = munge.join("run/munge.socket.2");
        ensure!(socket.as_os_str().len() < 100, "slurm: socket path {} is too long", socket.display());
        let (key, conf) = (munge.join("etc/munge.key"), root.join("slurm.conf"));
        let free_port = || TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let (ctld_port, slurmd_port) = (free_port()?, free_port()?);
        let write = || -> Result<()> {
            for sub in ["munge/etc", "munge/lib", "munge/log", "munge/run", "state", "spool", "run", "log", "jobs"] {
                fs::create_dir_all(root.join(sub))?;
            }
            let mut secret = [0u8; 1024];
            fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
            fs::write(&key, secret)?;
            // As PEERS.md: all of munge/ owned by munge, its etc, lib and log 0700, the key 0400.
            for (sub, mode) in
                [("", 0o755), ("etc", 0o700), ("lib", 0o700), ("log", 0o700), ("run", 0o755), ("etc/munge.key", 0o400)]
            {
                let path = munge.join(sub);
                chown(&path, Some(uid), Some(gid)).with_context(|| format!("chown {} (needs root)", path.display()))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            Ok(fs::write(&conf, slurm_conf(&root, &host, &node, [ctld_port, slurmd_port], n))?)
        };
        write().with_context(|| format!("slurm: writing the munge key and slurm.conf under {}", root.display()))?;

        let ctld = (Ipv4Addr::LOCALHOST, ctld_port).into();
        let mut s = Slurm { conf: conf.clone(), jobs: root.join("jobs"), ctld, bins, daemons: Vec::new() };
        let mut munged = Command::new(&s.bins["munged"]);
        munged.uid(uid).gid(gid).arg("-F").arg(format!("--key-file={}", key.display()));
        munged.arg(format!("--socket={}", socket.display()));
        for (flag, file) in [("pid", "run/munged.pid"), ("log", "log/munged.log"), ("seed", "lib/munged.seed")] {
            munged.arg(format!("--{flag}-file={}", munge.join(file).display()));
        }
        s.start("munged", &mut munged, munge.join("log/munged.log"))?;
        if !poll(CLIENT_LIMIT, POLL, || s.alive().map(|()| socket.exists()))? {
            return Err(s.failed(format!("munged made no socket {} within {CLIENT_LIMIT:?}", socket.display())));
        }
        let mut ctld = s.cmd("slurmctld");
        s.start("slurmctld", ctld.args(["-D", "-c", "-f"]).arg(&conf), root.join("log/slurmctld.log"))?;
        let mut slurmd = s.cmd("slurmd");
        s.start("slurmd", slurmd.args(["-D", "-f"]).arg(&conf), root.join("log/slurmd.log"))?;
        let mut last = String::new();
        let idle = poll(START_LIMIT, Duration::from_millis(50), || {
            s.alive()?;
            last = if s.listening() {
                s.query("sinfo", &["-h", "-o", "%t"]).unwrap_or_else(|e| format!("{e:#}"))
            } else {
                format!("slurmctld not listening on port {ctld_port}")
            };
            Ok(last == "idle")
        })?;
        if !idle {
            return Err(s.failed(format!("node {host} not idle within {START_LIMIT:?} (last: {last})")));
        }
        Ok((s, cpus))
    }

    /// A Slurm command talking to this cluster, run in its job directory.
    fn cmd(&self, bin: &str) -> Command {
        let mut cmd = Command::new(&self.bins[bin]);
        cmd.env("SLURM_CONF", &self.conf).current_dir(&self.jobs);
        cmd
    }

    /// Starts a daemon in the foreground, its stdout and stderr going to `log` with extension `.out`.
    fn start(&mut self, name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<()> {
        let out_path = log.with_extension("out");
        let out = fs::File::create(&out_path)?;
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn();
        let child = child.with_context(|| format!("slurm: cannot start {name}"))?;
        self.daemons.push(Daemon { name, child, logs: [log, out_path] });
        Ok(())
    }

    /// Fails, quoting its logs, if a daemon has exited.
    fn alive(&mut self) -> Result<()> {
        for d in &mut self.daemons {
            if let Some(status) = d.child.try_wait()? {
                bail!("slurm: {} exited ({status}); {}", d.name, d.tails());
            }
        }
        Ok(())
    }

    /// An error saying `what`, with the tails of all the daemons' logs.
    fn failed(&self, what: impl std::fmt::Display) -> anyhow::Error {
        let logs: Vec<String> = self.daemons.iter().map(Daemon::tails).collect();
        anyhow!("slurm: {what}\n{}", logs.join("\n"))
    }

    /// Whether slurmctld accepts connections (a Slurm client hangs for ~30 s when it does not).
    fn listening(&self) -> bool {
        TcpStream::connect_timeout(&self.ctld, POLL).is_ok()
    }

    fn query(&self, bin: &str, args: &[&str]) -> Result<String> {
        let (out, _) = run(self.cmd(bin).args(args), CLIENT_LIMIT)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Daemon {
    fn tails(&self) -> String {
        let logs: Vec<String> = self.logs.iter().filter(|l| l.exists()).map(|l| tail(l)).collect();
        format!("{} (pid {}): {}", self.name, self.child.id(), logs.join("\n"))
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill(self.child.id() as i32, SIGTERM);
            let gone = poll(STOP_LIMIT, Duration::from_millis(10), || Ok(self.child.try_wait()?.is_some()));
            if !gone.unwrap_or(false) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let empty = |s: &Self| s.query("squeue", &["-h"]).map_or(true, |q| q.is_empty());
        let all_started = self.daemons.len() == 3;
        if all_started && self.listening() && !empty(self) {
            let _ = self.query("scancel", &["-u", "root"]);
            let _ = poll(STOP_LIMIT, POLL, || Ok(empty(self)));
        }
        self.daemons.iter_mut().rev().for_each(Daemon::stop);
        remove_slurm_cgroups();
    }
}

/// rmdir of the `slurm*` directories under `/sys/fs/cgroup/*`, deepest first. rmdir removes only
/// empty ones: a cgroup still holding a task or a child cgroup fails (EBUSY) and stays.
fn remove_slurm_cgroups() {
    fn rmdir_tree(dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for controller in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for entry in fs::read_dir(controller.path()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("slurm") && entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
    }
}

pub fn slurm(dir: &Path, n: usize) -> Result<PeerResult> {
    ensure!(n > 0, "slurm: n must be at least 1");
    let (s, cpus) = Slurm::up(dir, n)?;
    let mut latency = Vec::with_capacity(n);
    let start = Instant::now();
    while latency.len() < n {
        if latency.len() == SRUN_MIN && start.elapsed().mul_f64(n as f64 / SRUN_MIN as f64) > SRUN_BUDGET {
            break;
        }
        let (_, took) = run(s.cmd("srun").arg("/bin/true"), TASK_LIMIT).map_err(|e| s.failed(format!("{e:#}")))?;
        latency.push(took);
    }
    let m = latency.len();
    let capped =
        if m < n { format!(" (capped at {m}: all {n} would take over {SRUN_BUDGET:?})") } else { String::new() };

    let start = Instant::now();
    let sbatch = run(s.cmd("sbatch").arg(format!("--array=1-{n}")).arg("--wrap=/bin/true"), CLIENT_LIMIT);
    sbatch.map_err(|e| s.failed(format!("{e:#}")))?;
    let limit = Duration::from_secs(30) + Duration::from_millis(50) * u32::try_from(n).unwrap_or(u32::MAX);
    let mut left = String::new();
    let done = poll(limit, POLL, || {
        left = s.query("squeue", &["-h"])?;
        Ok(left.is_empty())
    });
    let throughput_secs = start.elapsed().as_secs_f64();
    if !done.map_err(|e| s.failed(format!("{e:#}")))? {
        let left = left.lines().count();
        return Err(s.failed(format!("array of {n} not done within {limit:?} ({left} squeue lines left)")));
    }
    drop(s);
    let how = format!(
        "Slurm, 1 node × {cpus} CPUs, tuned scheduler (PEERS.md): srun /bin/true ×{m}{capped}; \
         throughput: sbatch --array=1-{n} --wrap=/bin/true until squeue -h is empty (polled every 20 ms)"
    );
    Ok(PeerResult { name: "slurm", how, latency, throughput_n: n, throughput_secs })
}

fn munge_ids() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let ids = passwd.lines().find_map(|line| {
        let mut fields = line.strip_prefix("munge:")?.split(':').skip(1);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    });
    ids.with_context(|| format!("slurm: user `munge` not found; {MISSING}"))
}

/// The node line for slurm.conf: what `slurmd -C` prints, without UpTime, at 127.0.0.1; and its CPUs.
fn node_line(slurmd: &Path) -> Result<(String, String)> {
    let (out, _) = run(Command::new(slurmd).arg("-C"), CLIENT_LIMIT).context("slurm: `slurmd -C`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("NodeName="));
    let line = line.with_context(|| format!("slurm: no NodeName= line in `slurmd -C` output: {text}"))?;
    let fields: Vec<&str> = line.split_whitespace().filter(|f| !f.starts_with("UpTime=")).collect();
    let cpus = fields.iter().find_map(|f| f.strip_prefix("CPUs="));
    let cpus = cpus.with_context(|| format!("slurm: no CPUs= in `slurmd -C` output: {line}"))?.to_owned();
    Ok((format!("{} NodeAddr=127.0.0.1 {}", fields[0], fields[1..].join(" ")), cpus))
}

fn slurm_conf(root: &Path, host: &str, node: &str, [ctld_port, slurmd_port]: [u16; 2], n: usize) -> String {
    let (r, max_jobs, max_array) = (root.display(), (2 * n).max(100_000), (n + 1).max(1001));
    format!(
        "ClusterName=peers\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\n\
         SlurmUser=root\nSlurmdUser=root\nCommunicationParameters=NoInAddrAny,NoCtldInAddrAny\n\
         AuthType=auth/munge\nAuthInfo=socket={r}/munge/run/munge.socket.2\nCredType=cred/munge\n\
         StateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool\n\
         SlurmctldPidFile={r}/run/slurmctld.pid\nSlurmdPidFile={r}/run/slurmd.pid\n\
         SlurmctldLogFile={r}/log/slurmctld.log\nSlurmdLogFile={r}/log/slurmd.log\n\
         SlurmctldDebug=error\nSlurmdDebug=error\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         MpiDefault=none\nJobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
         SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n{node}\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:128\n\
         SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=2000,\
         partition_job_depth=0,sched_max_job_start=0\n\
         MinJobAge=2\nMaxJobCount={max_jobs}\nMaxArraySize={max_array}\nMessageTimeout=30\n"
    )
}
