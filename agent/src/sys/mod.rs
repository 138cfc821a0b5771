//! The agent's only contact with platform specifics and its only `unsafe` code.

pub mod jail;

use std::path::Path;
use std::time::Duration;

/// Raises this process's soft limit of open files to its hard limit (guests' handles are host
/// descriptors of the executor's); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Moves this process into a mount namespace of its own: call it before any thread is started. The
/// host's mounts still appear in it (as slaves), but what the process mounts (its tasks'
/// sandboxes) never reaches the host and goes away with the process, SIGKILL included.
pub fn own_mount_namespace() -> std::io::Result<()> {
    use nix::mount::{MsFlags, mount};
    match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        // Not permitted (not root): sandboxes are not mounted either (they are plain directories).
        Err(nix::errno::Errno::EPERM) => return Ok(()),
        other => other?,
    }
    match mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>) {
        // Chrooted into a directory that is no mount point: the sandboxes' root is made a private
        // mount of its own anyway (`sandbox::disk::private_root`).
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Loads a compiled module from bytes the agent itself serialized into its own cache.
///
/// The caller must have checked that `bytes` are exactly what this agent's
/// [`crate::runtime::wasm::cache`] wrote (it verifies a sha256 recorded at write time, in a
/// directory only the agent writes to), never bytes from anywhere else.
pub fn deserialize_own_artifact(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    origin: &Path,
) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: `Module::deserialize` trusts its input to be a module serialized by a compatible
    // wasmtime. These bytes were produced by `Module::serialize` of an engine with the same
    // compatibility hash (the cache directory is keyed by it; wasmtime also checks its header),
    // and their sha256 matches the one recorded when the agent wrote them to `origin`.
    let module = unsafe { wasmtime::Module::deserialize(engine, bytes) };
    module.map_err(|e| e.context(format!("deserializing {}", origin.display())))
}

/// Loads a module compiled by this agent's compiler child (`runtime::wasm::compile`).
///
/// The caller must pass exactly the bytes the child wrote to its stdout: the child is this same
/// binary, which serialized the module with an engine built from the same settings as `engine`.
pub fn deserialize_compiled(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: `Module::deserialize` trusts its input to be a module serialized by a compatible
    // wasmtime. These bytes come straight from a pipe to a child process running this binary
    // (the same wasmtime), which serialized a module it compiled from the guest's bytes with an
    // engine of the same settings (wasmtime also checks its header and compatibility). Nothing
    // else writes to that pipe: the guest's bytes only go in, on the child's stdin.
    unsafe { wasmtime::Module::deserialize(engine, bytes) }
}

/// What the compiler child does before exec: its data segment (heap, anonymous mappings) capped
/// at `memory_bytes`, niced (tasks win the CPU over compiles), SIGKILL when the executor dies.
pub fn bound_compiler(cmd: &mut std::process::Command, memory_bytes: u64) {
    use std::os::unix::process::CommandExt;
    let child = move || -> std::io::Result<()> {
        use nix::sys::resource::{Resource, setrlimit};
        setrlimit(Resource::RLIMIT_DATA, memory_bytes, memory_bytes)?;
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        // SAFETY: a plain system call on this (the child's) process.
        if unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 10) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and makes only direct system
    // calls (setrlimit, setpriority, prctl) on values copied in; it allocates nothing.
    unsafe {
        cmd.pre_exec(child);
    }
}

/// What a native task's child process does between fork and exec, in this order: a session of
/// its own (out of the agent's process group), join its cgroup (so every byte it allocates is
/// charged there), rlimits, its [`jail::Jail`] (namespaces, filesystem view, a second fork: the
/// task is pid 1 of its pid namespace, its parent waits for it), drop to the task's user, SIGKILL
/// on its parent's death, `no_new_privs`, the seccomp filters last.
///
/// The death signal is tied to the thread that forked: tasks are spawned from the executor's
/// runtime worker threads, which live as long as the executor (never from a blocking-pool thread,
/// which exits when idle and would take the task with it).
#[derive(Debug)]
pub struct ChildSetup {
    /// `cgroup.procs` files of the task's cgroup, opened by the parent.
    pub cgroup_procs: Vec<std::fs::File>,
    /// uid and gid to run as; `None` keeps the agent's (root, when allowed).
    pub user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Namespaces and filesystem view; `None`: the host's (only the launch benchmark's baseline).
    pub jail: Option<jail::Jail>,
    /// Installed in order just before exec.
    pub seccomp: std::sync::Arc<Vec<seccompiler::BpfProgram>>,
}

/// Installs `setup` to run in the child before exec.
pub fn configure_child(cmd: &mut tokio::process::Command, setup: ChildSetup) {
    use nix::sys::resource::{Resource, setrlimit};
    let ChildSetup { cgroup_procs, user, open_files, jail, seccomp } = setup;
    let parent = nix::unistd::getpid();
    let child = move || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        for procs in &cgroup_procs {
            // "0" moves the writing process itself.
            nix::unistd::write(procs, b"0")?;
        }
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        setrlimit(Resource::RLIMIT_NOFILE, open_files, open_files)?;
        // From here on, in a jail, this is the task: pid 1 of its namespace, its parent the waiter.
        let waiter = match &jail {
            Some(jail) => {
                let waiter = jail::enter(jail)?;
                jail::pivot(jail)?;
                Some(waiter)
            }
            None => None,
        };
        if let Some((uid, gid)) = user {
            nix::unistd::setgroups(&[gid])?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
        }
        // The task's process does not outlive the process that started it: SIGKILL when that
        // dies, however it dies. Set after setuid, which clears it; then make sure the parent did
        // not die before it was set. Processes the task forks do not inherit it: in a jail they die
        // with the task's pid namespace; outside one the next executor clears the cgroups.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        let parent_alive = match waiter {
            Some(pipe) => jail::waiter_alive(pipe),
            None => nix::unistd::getppid() == parent,
        };
        if !parent_alive {
            return Err(nix::errno::Errno::ESRCH.into());
        }
        nix::sys::prctl::set_no_new_privs()?;
        for filter in seccomp.iter() {
            seccompiler::apply_filter(filter).map_err(|_| std::io::Error::last_os_error())?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only direct system calls (setsid, write, setrlimit, the jail's
    // unshare, mount, fork, waitpid, then setgroups, setgid, setuid, prctl, getppid, poll,
    // seccomp) on data prepared by the parent; it does not allocate, lock or touch the parent's
    // threads' state. Errors become the spawn's error.
    unsafe {
        cmd.pre_exec(child);
    }
}

/// A process named so that a reused pid is not mistaken for it: the kernel's boot id, the pid and
/// the process's start time (clock ticks after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessId {
    pub boot_id: String,
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// The process `pid` as it is now (`None`: no such process).
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self { boot_id: boot_id()?, pid, start_time: start_time(pid)? })
    }

    /// Whether this very process is still alive (same boot, same pid, same start time, and not a
    /// zombie waiting to be reaped).
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_some_and(|now| now == *self) && stat_field(self.pid, 3).is_some_and(|s| s != "Z")
    }

    /// `boot_id pid start_time`, as kept in a pid file.
    pub fn to_line(&self) -> String {
        format!("{} {} {}", self.boot_id, self.pid, self.start_time)
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split_whitespace();
        let (boot_id, pid, start_time) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        parts.next().is_none().then(|| Self { boot_id: boot_id.to_owned(), pid, start_time })
    }
}

/// The kernel's boot id (changes at every boot).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned())
}

/// Start time of process `pid` in clock ticks after boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Field `n` (from 3, the state) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ids() {
        let me = ProcessId::of(std::process::id()).expect("this process");
        assert!(me.is_alive());
        assert_eq!(ProcessId::parse(&me.to_line()), Some(me.clone()));
        // Same pid, another start time or boot: another process.
        assert!(!ProcessId { start_time: me.start_time + 1, ..me.clone() }.is_alive());
        assert!(!ProcessId { boot_id: "not-this-boot".into(), ..me }.is_alive());
        // A child that exited and is not reaped yet is a zombie: not alive.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let id = ProcessId::of(child.id()).expect("just spawned");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stat_field(child.id(), 3).as_deref() != Some("Z") {
            assert!(std::time::Instant::now() < deadline, "the child did not exit");
            std::thread::yield_now();
        }
        assert!(!id.is_alive());
        child.wait().unwrap();
        for bad in ["", "boot 12", "boot x 3", "boot 1 2 3"] {
            assert_eq!(ProcessId::parse(bad), None, "{bad:?}");
        }
    }
}
