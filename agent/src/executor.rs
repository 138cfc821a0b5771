//! Runs tasks off the control plane: one dedicated OS thread per running Wasm task.
//!
//! The agent's tokio runtime only sends and receives messages; compilation and guest code run on
//! these threads, so a hostile or spinning guest cannot delay heartbeats. Each task reports
//! RUNNING once its instance exists, then exactly one terminal status, through the agent's event
//! channel (output chunks are sent on the same channel, so they arrive before the terminal status).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::runtime::output::OutputSink;
use crate::runtime::wasm::{WasmRuntime, WasmTask};
use crate::task::{TaskEvent, TaskExit};

#[derive(Debug)]
struct Running {
    kill: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts, kills and tracks the agent's tasks.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    agent_id: String,
    runtime: WasmRuntime,
    sandboxes: PathBuf,
    max_output_bytes: u64,
    events: mpsc::UnboundedSender<TaskEvent>,
    running: Mutex<HashMap<String, Running>>,
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
        timestamp_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        update_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Task ids name sandbox directories: only a safe alphabet is accepted.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Executor {
    pub fn new(
        agent_id: String,
        runtime: WasmRuntime,
        sandboxes: PathBuf,
        max_output_bytes: u64,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                agent_id,
                runtime,
                sandboxes,
                max_output_bytes,
                events,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        self.running().contains_key(task_id)
    }

    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// Starts a task; its statuses arrive on the event channel.
    pub fn launch(&self, spec: pb::TaskSpec) {
        let task_id = spec.task_id.clone();
        let inner = &self.inner;
        let fail = |exit: TaskExit| {
            let (state, reason, message, code) = exit.report();
            let _ = inner.events.send(TaskEvent::Status(status_update(
                &task_id,
                &inner.agent_id,
                state,
                reason,
                message,
                code,
                None,
            )));
        };
        if !valid_task_id(&task_id) {
            return fail(TaskExit::Invalid(format!("invalid task id {task_id:?}")));
        }
        if !matches!(spec.kind, Some(pb::task_spec::Kind::Wasm(_))) {
            return fail(TaskExit::LaunchFailed(
                "this agent runs Wasm tasks only; native tasks are not supported yet".into(),
            ));
        }
        let kill = Arc::new(AtomicBool::new(false));
        let mut running = self.running();
        if running.contains_key(&task_id) {
            debug!(%task_id, "duplicate launch ignored");
            return;
        }
        let this = self.clone();
        let thread_kill = kill.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("task-{task_id}"))
            .stack_size(8 * 1024 * 1024)
            .spawn(move || this.run_task(spec, thread_kill));
        match spawned {
            Ok(thread) => {
                running.insert(
                    task_id,
                    Running {
                        kill,
                        thread: Some(thread),
                    },
                );
            }
            Err(err) => {
                drop(running);
                fail(TaskExit::LaunchFailed(format!(
                    "cannot start a thread for the task: {err}"
                )));
            }
        }
    }

    /// Asks a running task to stop; it then reports KILLED. False if it is not running here.
    pub fn kill(&self, task_id: &str) -> bool {
        match self.running().get(task_id) {
            Some(r) => {
                r.kill.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Kills every task and waits (up to `grace`) for their threads to end.
    pub async fn shutdown(&self, grace: Duration) {
        let threads: Vec<JoinHandle<()>> = {
            let mut running = self.running();
            running
                .values_mut()
                .filter_map(|r| {
                    r.kill.store(true, Ordering::Relaxed);
                    r.thread.take()
                })
                .collect()
        };
        if threads.is_empty() {
            return;
        }
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(grace, join).await.is_err() {
            warn!("tasks did not stop within {grace:?}");
        }
    }

    fn run_task(&self, spec: pb::TaskSpec, kill: Arc<AtomicBool>) {
        let inner = &self.inner;
        let task_id = spec.task_id.clone();
        let send = |state, reason, message, code, usage| {
            let _ = inner.events.send(TaskEvent::Status(status_update(
                &task_id,
                &inner.agent_id,
                state,
                reason,
                message,
                code,
                usage,
            )));
        };
        let (exit, usage) = self.execute(&spec, kill, || {
            send(
                TaskState::Running,
                Reason::Unspecified,
                String::new(),
                None,
                None,
            );
        });
        let (state, reason, message, code) = exit.report();
        debug!(%task_id, ?state, %message, "task ended");
        // Unregister before the terminal status goes out, so nothing sees it both ended and running.
        self.running().remove(&task_id);
        send(state, reason, message, code, Some(usage));
    }

    fn execute(
        &self,
        spec: &pb::TaskSpec,
        kill: Arc<AtomicBool>,
        on_running: impl FnOnce(),
    ) -> (TaskExit, pb::Usage) {
        let inner = &self.inner;
        let Some(pb::task_spec::Kind::Wasm(wasm)) = &spec.kind else {
            return (
                TaskExit::LaunchFailed("not a Wasm task".into()),
                pb::Usage::default(),
            );
        };
        if !wasm.module_sha256.is_empty() {
            let digest = hex(&Sha256::digest(&wasm.module));
            if !digest.eq_ignore_ascii_case(&wasm.module_sha256) {
                let msg = format!(
                    "module sha256 is {digest}, not the {} the spec names",
                    wasm.module_sha256
                );
                return (TaskExit::Invalid(msg), pb::Usage::default());
            }
        }
        let sandbox = inner.sandboxes.join(&spec.task_id);
        if let Err(err) = std::fs::create_dir_all(&sandbox) {
            let msg = format!("cannot create the sandbox {}: {err}", sandbox.display());
            return (TaskExit::LaunchFailed(msg), pb::Usage::default());
        }
        let limits = spec.limits.unwrap_or_default();
        let cap = match limits.max_output_bytes {
            0 => inner.max_output_bytes,
            n => n.min(inner.max_output_bytes),
        };
        let name = if spec.name.is_empty() {
            spec.task_id.as_str()
        } else {
            spec.name.as_str()
        };
        let mem = spec.resources.map(|r| r.mem_bytes).filter(|&m| m > 0);
        let task = WasmTask {
            name,
            module: &wasm.module,
            args: &spec.args,
            env: &spec.env,
            stdin: spec.stdin.clone(),
            sandbox: &sandbox,
            max_memory_bytes: mem,
            timeout: (limits.timeout_ms > 0).then(|| Duration::from_millis(limits.timeout_ms)),
            stdout: OutputSink::new(
                &spec.task_id,
                pb::OutputStream::Stdout,
                cap,
                inner.events.clone(),
            ),
            stderr: OutputSink::new(
                &spec.task_id,
                pb::OutputStream::Stderr,
                cap,
                inner.events.clone(),
            ),
            kill,
        };
        inner.runtime.run(task, on_running)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for (id, ok) in [
            ("t-0123abcd", true),
            ("", false),
            ("../etc", false),
            ("a/b", false),
            ("t_1", true),
        ] {
            assert_eq!(valid_task_id(id), ok, "{id:?}");
        }
    }
}
