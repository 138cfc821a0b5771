//! Native tasks: a command run in a cgroup, namespaces and a filesystem view of its own.
//!
//! The cgroup is created and limited first; the child joins it between fork and exec
//! ([`crate::sys::configure_child`]), so nothing it allocates escapes the limit. The child gets its
//! own session; pid, mount, ipc, uts and (unless the job asks for the host's and the agent allows
//! it) network namespaces, with only loopback; the [`view`] of the host, its sandbox as working
//! directory; only the environment of its spec; rlimits; a uid no other running task has
//! ([`users`]), unless the agent allows root tasks; `no_new_privs` and the [`seccomp`] profile.
//!
//! Layout: [`users`] (who tasks run as), [`view`] (what they see), [`seccomp`] (what they may
//! call); this file runs a task to its end. When the task ends — on
//! its own, killed, or past its timeout — everything left in the cgroup is frozen and killed and
//! the cgroup removed: no process of a task outlives it. An OOM kill is read from the cgroup's
//! own counters, never guessed from a SIGKILL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_proto as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::cgroup::{CgroupLimits, CgroupManager, CgroupStats, TaskCgroup};
use crate::runtime::output::OutputSink;
use crate::sys::{ChildSetup, configure_child};
use crate::task::{TaskEvent, TaskExit};

/// Where commands named without a `/` are looked up (tasks get no PATH of the agent's).
const SEARCH_PATH: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"];

pub mod seccomp;
pub mod users;
pub mod view;

pub use users::{RunAs, UidRange};

#[derive(Debug, Clone)]
pub struct NativeConfig {
    pub run_as: RunAs,
    /// Mount point of the tasks' roots (a root-only directory of the agent's); `None`: tasks see
    /// the host as it is and share its namespaces (agents never do this; the launch benchmark
    /// measures it, to show what containment costs).
    pub jail_root: Option<PathBuf>,
    /// Host directories every task sees read-write at their own paths (`--task-host-dir`).
    pub host_dirs: Vec<PathBuf>,
    /// Size of each task's private `/tmp` (a tmpfs charged to the task's memory).
    pub tmp_bytes: u64,
    /// Whether a task may ask for the host's network instead of a namespace of its own.
    pub allow_host_network: bool,
    /// Default and maximum processes per task.
    pub pids_max: u64,
    pub open_files: u64,
    pub usage_interval: Duration,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            run_as: RunAs::Range(UidRange::DEFAULT),
            jail_root: None,
            host_dirs: Vec::new(),
            tmp_bytes: 64 << 20,
            allow_host_network: false,
            pids_max: 1024,
            open_files: 1024,
            usage_interval: Duration::from_secs(1),
        }
    }
}

/// Everything one native task needs.
#[derive(Debug)]
pub struct NativeTask {
    pub task_id: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    pub stdin: Vec<u8>,
    pub sandbox: PathBuf,
    /// The host's network instead of a namespace with only loopback.
    pub host_network: bool,
    pub memory_bytes: u64,
    pub cpus: f64,
    pub timeout: Option<Duration>,
    pub stdout: OutputSink,
    pub stderr: OutputSink,
    pub kill: CancellationToken,
    pub events: mpsc::UnboundedSender<TaskEvent>,
}

#[derive(Debug)]
pub struct NativeRuntime {
    cgroups: CgroupManager,
    config: NativeConfig,
    users: users::Users,
    view: Option<view::View>,
    seccomp: Arc<Vec<seccompiler::BpfProgram>>,
    /// Network namespaces made ahead of launches, each joined by one task ([`Self::replenish`]).
    networks: std::sync::Mutex<Vec<std::os::fd::OwnedFd>>,
}

/// Network namespaces kept ready.
const READY_NETWORKS: usize = 4;

/// The program to exec: `command` itself when it names a path, else the first match on [`SEARCH_PATH`].
pub fn resolve_command(command: &str) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return if path.is_file() { Ok(path) } else { Err(format!("command not found: {command}")) };
    }
    SEARCH_PATH
        .iter()
        .map(|dir| Path::new(dir).join(command))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("command not found: {command} (looked in {})", SEARCH_PATH.join(":")))
}

pub fn usage_of(stats: &CgroupStats, wall: Duration) -> pb::Usage {
    pb::Usage {
        cpu_time_us: (stats.cpu_user + stats.cpu_system).as_micros() as u64,
        wall_time_us: wall.as_micros() as u64,
        peak_memory_bytes: stats.memory_peak,
        cpu_user_us: stats.cpu_user.as_micros() as u64,
        cpu_system_us: stats.cpu_system.as_micros() as u64,
        throttled_periods: stats.throttled_periods,
        throttled_us: stats.throttled.as_micros() as u64,
        memory_current_bytes: stats.memory_current,
        pids_current: stats.pids_current,
        ..Default::default()
    }
}

async fn forward(mut from: impl AsyncRead + Unpin, to: OutputSink) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                to.push(&buf[..n]);
            }
        }
    }
}

impl NativeRuntime {
    /// Cgroups under `cgroup_root` for `agent_id`; leftovers of an earlier run are removed.
    pub fn new(cgroups: CgroupManager, config: NativeConfig) -> Result<Self, String> {
        let view = config
            .jail_root
            .clone()
            .map(|root| view::View::new(root, config.tmp_bytes, &config.host_dirs))
            .transpose()?;
        let seccomp = Arc::new(seccomp::profile()?);
        let removed = cgroups.remove_leftovers().map_err(|e| e.to_string())?;
        if removed > 0 {
            warn!(removed, "removed cgroups an earlier run of this agent left behind");
        }
        let runtime = Self {
            cgroups,
            users: users::Users::new(config.run_as),
            view,
            seccomp,
            config,
            networks: Default::default(),
        };
        if runtime.view.is_some() {
            runtime.replenish();
        }
        Ok(runtime)
    }

    /// Makes network namespaces until [`READY_NETWORKS`] are ready (blocking: call it off the
    /// launch path); a launch that finds none ready has its child make its own.
    pub fn replenish(&self) {
        let ready = || self.networks.lock().unwrap_or_else(|e| e.into_inner()).len();
        while self.view.is_some() && ready() < READY_NETWORKS {
            match crate::sys::jail::loopback_namespace() {
                Ok(fd) => self.networks.lock().unwrap_or_else(|e| e.into_inner()).push(fd),
                Err(err) => {
                    warn!(%err, "cannot make a network namespace ahead: tasks make their own");
                    return;
                }
            }
        }
    }

    /// Whether tasks may ask for the host's network.
    pub fn allows_host_network(&self) -> bool {
        self.config.allow_host_network
    }

    pub fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }

    /// Runs one task to its end; `on_running` is called once the process exists.
    pub async fn run(&self, task: NativeTask, on_running: impl FnOnce()) -> (TaskExit, pb::Usage) {
        let program = match resolve_command(&task.command) {
            Ok(p) => p,
            Err(msg) => return (TaskExit::Invalid(msg), pb::Usage::default()),
        };
        let limits = CgroupLimits {
            memory_bytes: (task.memory_bytes > 0).then_some(task.memory_bytes),
            cpus: (task.cpus > 0.0).then_some(task.cpus),
            pids_max: Some(self.config.pids_max),
        };
        let cgroups = self.cgroups.clone();
        let task_id = task.task_id.clone();
        let created = tokio::task::spawn_blocking(move || -> Result<TaskCgroup, String> {
            let cg = cgroups.create(&task_id).map_err(|e| e.to_string())?;
            if let Err(e) = cg.apply(&limits) {
                let _ = cg.delete();
                return Err(e.to_string());
            }
            Ok(cg)
        })
        .await;
        let cg = match created {
            Ok(Ok(cg)) => Arc::new(cg),
            Ok(Err(msg)) => {
                return (
                    TaskExit::LaunchFailed(format!("cannot set up the task's cgroup: {msg}")),
                    pb::Usage::default(),
                );
            }
            Err(e) => return (TaskExit::LaunchFailed(format!("cgroup setup panicked: {e}")), pb::Usage::default()),
        };
        let started = Instant::now();
        // The uid is the task's until everything of it is gone (below), then free for another.
        let identity = self.users.lease();
        let exit = match &identity {
            Ok(identity) => self.spawn_and_wait(&task, &program, &cg, identity, on_running).await,
            Err(why) => TaskExit::LaunchFailed(format!("no user to run the task as: {why}")),
        };

        // Whatever the task left behind goes with it, then its cgroup.
        let reaper = cg.clone();
        let (stats, cleanup) = tokio::task::spawn_blocking(move || {
            let killed = reaper.kill_all();
            let stats = reaper.stats();
            let deleted = reaper.delete();
            (stats, killed.and(deleted))
        })
        .await
        .unwrap_or_else(|e| {
            (
                CgroupStats::default(),
                Err(crate::cgroup::CgroupError::Op {
                    cgroup: cg.path().into(),
                    action: "clean up",
                    reason: e.to_string(),
                }),
            )
        });
        if let Err(err) = cleanup {
            warn!(task_id = %task.task_id, %err, "could not clean up the task's cgroup");
        }
        drop(identity);
        let exit = match exit {
            // The cgroup's own counter says the kernel's OOM killer acted: that is why it ended.
            TaskExit::Exited(_) | TaskExit::Signaled(_) if stats.oom_kills > 0 => TaskExit::OutOfMemory(format!(
                "killed by the OOM killer at its {} byte memory limit (peak {} bytes)",
                task.memory_bytes, stats.memory_peak
            )),
            other => other,
        };
        (exit, usage_of(&stats, started.elapsed()))
    }

    async fn spawn_and_wait(
        &self,
        task: &NativeTask,
        program: &Path,
        cg: &TaskCgroup,
        identity: &users::Identity,
        on_running: impl FnOnce(),
    ) -> TaskExit {
        let procs: Result<Vec<std::fs::File>, String> = cg
            .procs_files()
            .iter()
            .map(|p| std::fs::OpenOptions::new().write(true).open(p).map_err(|e| format!("{}: {e}", p.display())))
            .collect();
        let procs = match procs {
            Ok(p) => p,
            Err(msg) => return TaskExit::LaunchFailed(format!("cannot open the task's cgroup: {msg}")),
        };
        if let Some((uid, gid)) = identity.user
            && let Err(e) = nix::unistd::chown(&task.sandbox, Some(uid.into()), Some(gid.into()))
        {
            return TaskExit::LaunchFailed(format!("cannot give the sandbox to uid {uid}: {e}"));
        }
        let user = identity.user.map(|(uid, gid)| (uid.into(), gid.into()));
        let jail = match &self.view {
            Some(view) => match view.jail(&task.sandbox, &task.task_id, task.host_network) {
                Ok(mut jail) => {
                    if jail.own_network {
                        jail.network = self.networks.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    }
                    Some(jail)
                }
                Err(why) => return TaskExit::LaunchFailed(format!("cannot plan the task's view: {why}")),
            },
            None => None,
        };

        let mut cmd = tokio::process::Command::new(program);
        cmd.arg0(&task.command)
            .args(&task.args)
            .env_clear()
            .envs(&task.env)
            .stdin(if task.stdin.is_empty() { Stdio::null() } else { Stdio::piped() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if jail.is_none() {
            cmd.current_dir(&task.sandbox);
        }
        let seccomp = self.seccomp.clone();
        configure_child(
            &mut cmd,
            ChildSetup { cgroup_procs: procs, user, open_files: self.config.open_files, jail, seccomp },
        );
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return TaskExit::Invalid(format!("command not found: {}", task.command));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return TaskExit::Invalid(format!("cannot execute {}: permission denied", program.display()));
            }
            Err(e) => return TaskExit::LaunchFailed(format!("cannot start {}: {e}", program.display())),
        };
        on_running();
        let input = child.stdin.take().map(|mut stdin| {
            let input = task.stdin.clone();
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            })
        });
        let out = child.stdout.take().map(|s| tokio::spawn(forward(s, task.stdout.clone())));
        let err = child.stderr.take().map(|s| tokio::spawn(forward(s, task.stderr.clone())));

        let deadline = task.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.usage_interval,
            self.config.usage_interval,
        );
        let started = Instant::now();
        let outcome = loop {
            tokio::select! {
                status = child.wait() => break match status {
                    Ok(s) => {
                        use std::os::unix::process::ExitStatusExt;
                        match (s.code(), s.signal()) {
                            (Some(code), _) => TaskExit::Exited(code),
                            (None, Some(sig)) => TaskExit::Signaled(sig),
                            (None, None) => TaskExit::LaunchFailed("the task ended with no status".into()),
                        }
                    }
                    Err(e) => TaskExit::LaunchFailed(format!("cannot wait for the task: {e}")),
                },
                _ = task.kill.cancelled() => break TaskExit::Killed,
                _ = sleep_until(deadline) => break TaskExit::TimedOut,
                _ = ticker.tick() => {
                    let usage = usage_of(&cg.stats(), started.elapsed());
                    let _ = task.events.send(TaskEvent::Usage(pb::TaskUsage { task_id: task.task_id.clone(), usage: Some(usage) }));
                }
            }
        };
        if matches!(outcome, TaskExit::Killed | TaskExit::TimedOut) {
            if let Err(err) = cg.kill_all() {
                warn!(task_id = %task.task_id, %err, "could not kill the task's processes");
            }
            let _ = child.wait().await;
        }
        // Output is complete once the pipes close (every writer is gone after kill_all).
        for h in [input, out, err].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
        outcome
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_without_the_agents_path() {
        assert_eq!(resolve_command("true").unwrap().file_name().unwrap(), "true");
        assert_eq!(resolve_command("/bin/sh").unwrap(), PathBuf::from("/bin/sh"));
        let err = resolve_command("no-such-command-xyz").unwrap_err();
        assert!(err.starts_with("command not found: no-such-command-xyz"), "{err}");
        assert!(resolve_command("/nonexistent/bin/x").unwrap_err().contains("command not found"));
    }
}
