//! Runs tasks off the control plane, on the agent's Wasm executor: a tokio runtime of its own
//! (one worker thread per core) on which every Wasm guest is a future.
//!
//! Layout: this module is the executor itself; [`process`] runs it as the agent's executor
//! process (outliving the agent), [`attach`] finds or starts that process, [`remote`] is the
//! agent's side of it, [`tasks`] is either executor as the agent sees it; [`journal`] numbers the
//! process's events until acknowledged, [`wire`] frames the conversation, [`setup`] builds an
//! executor from the agent's configuration.
//!
//! The agent's control-plane runtime only sends and receives messages; compilation (on the Wasm
//! executor's blocking pool) and guest code run here, so a hostile or spinning guest cannot delay
//! heartbeats. Each task reports RUNNING once its instance exists, its usage every
//! `usage_interval` while it runs, then exactly one terminal status, all through the agent's event
//! channel (output chunks travel the same channel, so they arrive before the terminal status).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::artifacts::Artifacts;
use crate::error::{Error, Result};
use crate::files::{self, TaskIo};
use crate::runtime::native::{NativeRuntime, NativeTask};
use crate::runtime::output::OutputSink;
use crate::runtime::wasm::cache::sha256_hex;
use crate::runtime::wasm::limits::Meter;
use crate::runtime::wasm::{ModuleSource, WasmRuntime, WasmTask};
use crate::sandbox::{Ended, Sandboxes};
use crate::task::{TaskEvent, TaskExit};
use crate::updates::UpdateLog;

pub mod attach;
pub mod journal;
pub mod process;
pub mod remote;
pub mod setup;
pub mod tasks;
pub mod wire;

/// A task ready to run.
#[derive(Debug)]
enum Prepared {
    Wasm(WasmTask),
    Native(NativeTask),
}

impl Prepared {
    fn sandbox(&self) -> PathBuf {
        match self {
            Prepared::Wasm(t) => t.sandbox.clone(),
            Prepared::Native(t) => t.sandbox.clone(),
        }
    }
}

/// Starts, kills and tracks the agent's tasks.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    agent_id: String,
    wasm: Arc<WasmRuntime>,
    /// The native runtime, or why this agent has none (no usable cgroups, not root).
    native: std::result::Result<NativeRuntime, String>,
    sandboxes: Sandboxes,
    max_output_bytes: u64,
    usage_interval: Duration,
    events: mpsc::UnboundedSender<TaskEvent>,
    running: Mutex<HashMap<String, CancellationToken>>,
    tracker: TaskTracker,
    /// Dropped (shut down in the background) with the executor.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    /// Where modules named by hash come from (`None`: inline modules only).
    artifacts: Option<Arc<Artifacts>>,
    /// Where every status update is written before it is handed on (`None`: memory only).
    updates: Option<Arc<Mutex<UpdateLog>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

/// A status update with a fresh update id and timestamp.
pub fn status_update(
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    reason: Reason,
    message: String,
    exit_code: Option<i32>,
    usage: Option<pb::Usage>,
) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task_id.to_owned(),
        state: state as i32,
        reason: reason as i32,
        message,
        exit_code,
        usage,
        agent_id: agent_id.to_owned(),
        timestamp_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        update_id: next_update_id(),
        outputs: Vec::new(),
    }
}

/// The STAGING status of a task handed to an executor (kept, not sent: a checkpoint).
pub fn staging(task_id: &str, agent_id: &str) -> pb::TaskStatus {
    status_update(task_id, agent_id, TaskState::Staging, Reason::Unspecified, String::new(), None, None)
}

/// A unique update id: a random prefix drawn once per process, then a sequence number (cheaper
/// than a fresh UUID per update, and just as unique across restarts).
fn next_update_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", *PREFIX, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Task ids name sandbox directories: only the domain model's alphabet is accepted.
fn valid_task_id(id: &str) -> bool {
    skiff_core::id::check_task_id(id).is_ok()
}

impl Executor {
    pub fn new(
        agent_id: String,
        wasm: WasmRuntime,
        native: std::result::Result<NativeRuntime, String>,
        sandboxes: Sandboxes,
        max_output_bytes: u64,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("skiff-wasm")
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("cannot start the Wasm executor: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Self {
            inner: Arc::new(Inner {
                agent_id,
                wasm: Arc::new(wasm),
                native,
                sandboxes,
                max_output_bytes,
                usage_interval: Duration::from_secs(1),
                events,
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                runtime: Mutex::new(Some(runtime)),
                handle,
                artifacts: None,
                updates: None,
            }),
        })
    }

    /// Writes every status update to `log` before it is handed on (so it survives a restart).
    pub fn with_update_log(mut self, log: Arc<Mutex<UpdateLog>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.updates = Some(log);
        }
        self
    }

    /// Hands a status on, after writing it to the update log.
    fn emit(&self, status: pb::TaskStatus) {
        if let Some(log) = &self.inner.updates {
            crate::updates::store(log, &status);
        }
        let _ = self.inner.events.send(TaskEvent::Status(status));
    }

    /// Lets tasks name their module by hash, fetched through `artifacts`.
    pub fn with_artifacts(mut self, artifacts: Arc<Artifacts>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.artifacts = Some(artifacts);
        }
        self
    }

    /// Where modules named by hash and input files come from.
    pub fn artifacts(&self) -> Option<&Arc<Artifacts>> {
        self.inner.artifacts.as_ref()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn wasm(&self) -> &WasmRuntime {
        &self.inner.wasm
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        self.running().contains_key(task_id)
    }

    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    fn send_status(&self, task_id: &str, exit: &TaskExit, usage: Option<pb::Usage>) {
        self.send_terminal(task_id, exit, usage, Vec::new());
    }

    fn send_terminal(&self, task_id: &str, exit: &TaskExit, usage: Option<pb::Usage>, outputs: Vec<pb::OutputFile>) {
        let (state, reason, message, code) = exit.report();
        let mut status = status_update(task_id, &self.inner.agent_id, state, reason, message, code, usage);
        status.outputs = outputs;
        self.emit(status);
    }

    /// Starts a task; its statuses arrive on the event channel.
    pub fn launch(&self, mut spec: pb::TaskSpec) {
        let io = TaskIo::take(&mut spec);
        let task_id = spec.task_id.clone();
        if !valid_task_id(&task_id) {
            return self.send_status(&task_id, &TaskExit::Invalid(format!("invalid task id {task_id:?}")), None);
        }
        let kill = CancellationToken::new();
        {
            let mut running = self.running();
            if running.contains_key(&task_id) {
                debug!(%task_id, "duplicate launch ignored");
                return;
            }
            running.insert(task_id.clone(), kill.clone());
        }
        let disk = self.inner.sandboxes.size(spec.resources.as_ref().map_or(0, |r| r.disk_bytes));
        let task = match self.prepare(spec, kill) {
            Ok(task) => task,
            Err(exit) => {
                self.running().remove(&task_id);
                return self.send_status(&task_id, &exit, None);
            }
        };
        let this = self.clone();
        self.inner.tracker.spawn_on(async move { this.run_task(task_id, task, io, disk).await }, &self.inner.handle);
    }

    /// Asks a running task to stop; it then reports KILLED. False if it is not running here.
    /// Kills every running task; returns their ids.
    pub fn kill_all(&self) -> Vec<String> {
        let running = self.running();
        for kill in running.values() {
            kill.cancel();
        }
        let mut ids: Vec<String> = running.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn kill(&self, task_id: &str) -> bool {
        match self.running().get(task_id) {
            Some(kill) => {
                kill.cancel();
                true
            }
            None => false,
        }
    }

    /// Kills every task and waits (up to `grace`) for them to report.
    pub async fn shutdown(&self, grace: Duration) {
        for kill in self.running().values() {
            kill.cancel();
        }
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_err() {
            warn!("tasks did not stop within {grace:?}");
        }
    }

    fn prepare(&self, spec: pb::TaskSpec, kill: CancellationToken) -> Result<Prepared, TaskExit> {
        let inner = &self.inner;
        // Files were taken out by `launch` (TaskIo).
        let pb::TaskSpec { task_id, name, resources, limits, args, mut env, stdin, kind, .. } = spec;
        // Every task knows its own id (as Mesos' MESOS_TASK_ID, Nomad's NOMAD_ALLOC_ID).
        env.insert("SKIFF_TASK_ID".into(), task_id.clone());
        let limits = limits.unwrap_or_default();
        let resources = resources.unwrap_or_default();
        let cap = match limits.max_output_bytes {
            0 => inner.max_output_bytes,
            n => n.min(inner.max_output_bytes),
        };
        let timeout = (limits.timeout_ms > 0).then(|| Duration::from_millis(limits.timeout_ms));
        let stdout = OutputSink::new(&task_id, pb::OutputStream::Stdout, cap, inner.events.clone());
        let stderr = OutputSink::new(&task_id, pb::OutputStream::Stderr, cap, inner.events.clone());
        let sandbox = || {
            inner.sandboxes.acquire(resources.disk_bytes).map_err(|err| {
                TaskExit::LaunchFailed(format!(
                    "cannot create a sandbox in {}: {err}",
                    inner.sandboxes.root().display()
                ))
            })
        };
        let wasm = match kind {
            Some(pb::task_spec::Kind::Wasm(w)) => w,
            Some(pb::task_spec::Kind::Native(native)) => {
                match &inner.native {
                    Err(why) => {
                        return Err(TaskExit::LaunchFailed(format!("this agent cannot run native tasks: {why}")));
                    }
                    Ok(runtime) if native.host_network && !runtime.allows_host_network() => {
                        return Err(TaskExit::Invalid(
                            "the task asks for the host's network and this agent does not allow it \
                             (--allow-host-network)"
                                .into(),
                        ));
                    }
                    Ok(_) => {}
                }
                return Ok(Prepared::Native(NativeTask {
                    task_id,
                    command: native.command,
                    args,
                    env,
                    stdin,
                    sandbox: sandbox()?,
                    host_network: native.host_network,
                    memory_bytes: resources.mem_bytes,
                    cpus: resources.cpus,
                    timeout,
                    stdout,
                    stderr,
                    kill,
                    events: inner.events.clone(),
                }));
            }
            None => return Err(TaskExit::Invalid("the task has neither a Wasm module nor a command".into())),
        };
        let (module, digest) = if wasm.module.is_empty() {
            // By hash: fetched only if the module is not compiled on this agent already.
            let Some(artifacts) = inner.artifacts.clone() else {
                return Err(TaskExit::Invalid(
                    "the task names its module by hash and this agent has no artifact source".into(),
                ));
            };
            if wasm.module_sha256.len() != 64 || !wasm.module_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TaskExit::Invalid(format!("{:?} is not a module sha256", wasm.module_sha256)));
            }
            let sha = wasm.module_sha256.to_ascii_lowercase();
            (ModuleSource::Store { artifacts, size: wasm.module_size }, sha)
        } else {
            let digest = sha256_hex(&wasm.module);
            if !wasm.module_sha256.is_empty() && !digest.eq_ignore_ascii_case(&wasm.module_sha256) {
                return Err(TaskExit::Invalid(format!(
                    "module sha256 is {digest}, not the {} the spec names",
                    wasm.module_sha256
                )));
            }
            (ModuleSource::Inline(Arc::new(wasm.module)), digest)
        };
        let memory_limit_bytes = match resources.mem_bytes {
            0 => inner.wasm.config().max_memory_bytes,
            n => n,
        };
        Ok(Prepared::Wasm(WasmTask {
            name: if name.is_empty() { task_id } else { name },
            module,
            module_sha256: digest,
            args,
            env,
            stdin,
            sandbox: sandbox()?,
            preopens: Vec::new(),
            memory_limit_bytes,
            cpus: resources.cpus,
            timeout,
            fuel: (limits.fuel > 0).then_some(limits.fuel),
            stdout,
            stderr,
            kill,
            meter: Arc::new(Meter::default()),
        }))
    }

    /// Puts the task's input files into place (Wasm: returns its read-only preopens).
    async fn place_inputs(&self, task_id: &str, io: &TaskIo, task: &mut Prepared) -> Result<(), TaskExit> {
        if !io.has_inputs() {
            return Ok(());
        }
        let Some(artifacts) = &self.inner.artifacts else {
            return Err(TaskExit::LaunchFailed(
                "the task has input files and this agent has no artifact source".into(),
            ));
        };
        let (sandbox, wasm) = (task.sandbox(), matches!(task, Prepared::Wasm(_)));
        let inputs_root = self.inputs_root(task_id);
        let preopens = files::place(artifacts, io, &sandbox, &inputs_root, wasm)
            .await
            .map_err(|why| TaskExit::LaunchFailed(format!("input files: {why}")))?;
        if let Prepared::Wasm(t) = task {
            t.preopens = preopens;
        }
        Ok(())
    }

    fn inputs_root(&self, task_id: &str) -> PathBuf {
        self.inner.sandboxes.root().with_file_name("inputs").join(task_id)
    }

    async fn run_task(&self, task_id: String, mut task: Prepared, io: TaskIo, disk: Option<u64>) {
        let inner = &self.inner;
        if let Err(exit) = self.place_inputs(&task_id, &io, &mut task).await {
            let sandbox = task.sandbox();
            let _ = std::fs::remove_dir_all(self.inputs_root(&task_id));
            return self.end(&task_id, sandbox, || self.send_status(&task_id, &exit, None));
        }
        let sandbox = task.sandbox();
        let native = matches!(task, Prepared::Native(_));
        let (exit, usage) = match task {
            Prepared::Wasm(task) => self.run_wasm(&task_id, task).await,
            Prepared::Native(task) => {
                let on_running = || self.send_running(&task_id);
                match &inner.native {
                    Ok(native) => native.run(task, on_running).await,
                    Err(why) => (TaskExit::LaunchFailed(why.clone()), pb::Usage::default()),
                }
            }
        };
        let exit = match disk {
            Some(bytes) => crate::sandbox::disk::verdict(exit, bytes, || crate::sandbox::disk::is_full(&sandbox)),
            None => exit,
        };
        debug!(%task_id, ?exit, "task ended");
        let outputs = match &inner.artifacts {
            Some(artifacts) if !io.outputs.is_empty() => files::collect(artifacts, &io.outputs, &sandbox).await,
            _ => Vec::new(),
        };
        if io.has_inputs() {
            let _ = std::fs::remove_dir_all(self.inputs_root(&task_id));
        }
        self.end(&task_id, sandbox, || self.send_terminal(&task_id, &exit, Some(usage), outputs));
        if native && let Ok(runtime) = &inner.native {
            // Off the task's path (its end is reported): one namespace, about a millisecond.
            runtime.replenish();
        }
    }

    /// A task's end: its sandbox kept if it left files, the task unregistered, its end reported
    /// (`report`), and only then an empty sandbox removed (off the task's path).
    fn end(&self, task_id: &str, sandbox: PathBuf, report: impl FnOnce()) {
        let ended = self.inner.sandboxes.end(sandbox, task_id);
        if let Ended::Kept(kept) = &ended {
            debug!(%task_id, sandbox = %kept.display(), "sandbox kept: the task left files in it");
        }
        // Unregister before the end goes out, so nothing sees it both ended and running.
        self.running().remove(task_id);
        report();
        self.inner.sandboxes.tidy(ended);
    }

    fn send_running(&self, task_id: &str) {
        let status = status_update(
            task_id,
            &self.inner.agent_id,
            TaskState::Running,
            Reason::Unspecified,
            String::new(),
            None,
            None,
        );
        self.emit(status);
    }

    async fn run_wasm(&self, task_id: &str, task: WasmTask) -> (TaskExit, pb::Usage) {
        let inner = &self.inner;
        let meter = task.meter.clone();
        let started = std::time::Instant::now();
        let run = inner.wasm.run(task, || self.send_running(task_id));
        tokio::pin!(run);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + inner.usage_interval, inner.usage_interval);
        loop {
            tokio::select! {
                done = &mut run => break done,
                _ = ticker.tick() => {
                    let usage = pb::Usage {
                        cpu_time_us: meter.cpu_time().as_micros() as u64,
                        wall_time_us: started.elapsed().as_micros() as u64,
                        peak_memory_bytes: meter.peak_memory(),
                        ..Default::default()
                    };
                    let _ = inner.events.send(TaskEvent::Usage(pb::TaskUsage { task_id: task_id.to_owned(), usage: Some(usage) }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for (id, ok) in [("t-0123abcd", true), ("", false), ("../etc", false), ("a/b", false), ("t_1", true)] {
            assert_eq!(valid_task_id(id), ok, "{id:?}");
        }
    }
}
