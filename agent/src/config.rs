//! Agent configuration: built once by `main` (flags) or by `skiff dev`, passed by value.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::runtime::native::UidRange;

#[derive(Debug, Clone)]
pub struct Config {
    /// Coordinator addresses (`host:port`), tried in turn; a follower redirects to the leader.
    pub coordinators: Vec<String>,
    /// TLS to the coordinators with this agent's certificate, which names the agent (its id);
    /// `None`: plaintext.
    pub tls: Option<skiff_tls::Credentials>,
    /// Where the agent keeps its id and the tasks' sandboxes.
    pub work_dir: PathBuf,
    /// Attributes offered with this agent's resources (e.g. `zone=a`).
    pub attributes: HashMap<String, String>,
    /// CPUs and memory offered (`None`: what the host has).
    pub cpus: Option<f64>,
    pub mem_bytes: Option<u64>,
    /// Concurrent Wasm instances offered (and pooling-allocator slots reserved).
    pub wasm_slots: u32,
    /// Handles (files, directories, streams) one Wasm task may hold open at once.
    pub wasm_max_handles: usize,
    /// Size of a task's sandbox when it asks for none (its `disk`).
    pub default_disk_bytes: u64,
    /// Bytes of stdout and of stderr kept per task unless the task asks for less.
    pub max_output_bytes: u64,
    /// Tasks whose output is kept on disk (the most recent), to send again to a new leader.
    pub task_logs_kept: usize,
    /// Largest Wasm module accepted.
    pub max_module_bytes: u64,
    /// The binary Wasm modules are compiled in, run with `--skiff-compile-module` (this agent's
    /// own; `None`: compiled in-process, unbounded).
    pub compiler: Option<PathBuf>,
    /// Bounds of one compile: wall-clock time and data segment.
    pub compile_timeout: Duration,
    pub compile_memory_bytes: u64,
    /// Bound of each compiled-module cache, in memory and on disk.
    pub module_cache_bytes: u64,
    /// Bound of the on-disk cache of fetched modules (least recently used go first).
    pub blob_cache_bytes: u64,
    /// Root of the cgroup filesystem (native tasks).
    pub cgroup_root: PathBuf,
    /// Whether this agent runs native tasks at all (off by default, as Nomad's `raw_exec`).
    pub native_tasks: bool,
    /// uids native tasks run as, one of its own for each running task.
    pub task_uids: UidRange,
    /// One user for every native task instead (the fallback when no uid range can be set aside).
    pub run_tasks_as: Option<String>,
    /// Whether native tasks run as the agent's user (root); overrides the two above.
    pub allow_root_tasks: bool,
    /// Host directories every native task sees read-write at their own paths (as Nomad's host
    /// volumes: the operator's choice, for data tasks share).
    pub task_host_dirs: Vec<PathBuf>,
    /// Whether a native task may ask for the host's network (otherwise: loopback only).
    pub allow_host_network: bool,
    /// Without a registered session for this long, the agent kills its tasks (reported LOST) so
    /// that a copy the coordinators start elsewhere never runs beside them. Keep it below the
    /// coordinators' `--agent-lost-after`.
    pub partition_timeout: Duration,
    /// Reconnect backoff bounds.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Where tasks run.
    pub executor: ExecutorMode,
    /// An executor process no agent has attached to for this long kills its tasks and exits
    /// (nobody would report them); an agent restarted within it finds its tasks running.
    pub recovery_timeout: Duration,
    /// Where the agent counts what happens (served by `--metrics-listen`).
    pub metrics: crate::metrics::Metrics,
}

/// Where an agent's tasks run.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorMode {
    /// In the agent's own process (`skiff dev`, tests): tasks end when the agent does.
    InProcess,
    /// In an executor process that outlives the agent (`skiff-agent`): `program` run with `args`
    /// and `--executor` (the agent's own binary and flags), re-attached after an agent restart.
    Process { program: PathBuf, args: Vec<OsString> },
}

impl Config {
    pub fn new(coordinators: Vec<String>, work_dir: PathBuf) -> Self {
        Self {
            coordinators,
            tls: None,
            work_dir,
            attributes: HashMap::new(),
            cpus: None,
            mem_bytes: None,
            wasm_slots: 1000,
            wasm_max_handles: 256,
            default_disk_bytes: crate::sandbox::disk::DEFAULT_BYTES,
            max_output_bytes: 1024 * 1024,
            task_logs_kept: 256,
            max_module_bytes: 64 * 1024 * 1024,
            blob_cache_bytes: 1024 * 1024 * 1024,
            compiler: None,
            compile_timeout: Duration::from_secs(60),
            compile_memory_bytes: 2 << 30,
            module_cache_bytes: 1 << 30,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            native_tasks: false,
            task_uids: UidRange::DEFAULT,
            run_tasks_as: None,
            allow_root_tasks: false,
            allow_host_network: false,
            task_host_dirs: Vec::new(),
            partition_timeout: Duration::from_secs(20),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            executor: ExecutorMode::InProcess,
            recovery_timeout: Duration::from_secs(15 * 60),
            metrics: Default::default(),
        }
    }
}
