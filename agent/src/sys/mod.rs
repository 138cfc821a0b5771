//! The agent's only contact with platform specifics and its only `unsafe` code.

use std::path::Path;
use std::time::Duration;

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

/// What a native task's child process does between fork and exec, in this order: a session of
/// its own (out of the agent's process group), join its cgroup (so every byte it allocates is
/// charged there), rlimits, drop to the task's user, `no_new_privs`.
#[derive(Debug)]
pub struct ChildSetup {
    /// `cgroup.procs` files of the task's cgroup, opened by the parent.
    pub cgroup_procs: Vec<std::fs::File>,
    /// uid and gid to run as; `None` keeps the agent's (root, when allowed).
    pub user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

/// Installs `setup` to run in the child before exec.
pub fn configure_child(cmd: &mut tokio::process::Command, setup: ChildSetup) {
    use nix::sys::resource::{Resource, setrlimit};
    let ChildSetup { cgroup_procs, user, open_files } = setup;
    let child = move || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        for procs in &cgroup_procs {
            // "0" moves the writing process itself.
            nix::unistd::write(procs, b"0")?;
        }
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        setrlimit(Resource::RLIMIT_NOFILE, open_files, open_files)?;
        if let Some((uid, gid)) = user {
            nix::unistd::setgroups(&[gid])?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
        }
        nix::sys::prctl::set_no_new_privs()?;
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only direct system calls (setsid, write, setrlimit, setgroups,
    // setgid, setuid, prctl) through nix, on data prepared by the parent; it does not allocate,
    // lock or touch the parent's threads' state. Errors become the spawn's error.
    unsafe {
        cmd.pre_exec(child);
    }
}
