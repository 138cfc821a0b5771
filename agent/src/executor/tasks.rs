//! Where an agent's tasks run, as the agent sees it: in its own process, or in its executor
//! process (which outlives it).

use std::time::Duration;

use skiff_proto as pb;

use super::Executor;
use super::remote::Remote;

#[derive(Debug)]
pub enum Tasks {
    InProcess(Executor),
    Process(Remote),
}

impl Tasks {
    /// Starts a task; its statuses arrive on the agent's event channel, written to its update log.
    pub fn launch(&self, spec: pb::TaskSpec) {
        match self {
            Tasks::InProcess(e) => e.launch(spec),
            Tasks::Process(r) => r.launch(spec),
        }
    }

    /// Asks a running task to stop; false if it is not running here.
    pub fn kill(&self, task_id: &str) -> bool {
        match self {
            Tasks::InProcess(e) => e.kill(task_id),
            Tasks::Process(r) => r.kill(task_id),
        }
    }

    /// Kills every running task; returns their ids.
    pub fn kill_all(&self) -> Vec<String> {
        match self {
            Tasks::InProcess(e) => e.kill_all(),
            Tasks::Process(r) => r.kill_all(),
        }
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        match self {
            Tasks::InProcess(e) => e.is_running(task_id),
            Tasks::Process(r) => r.is_running(task_id),
        }
    }

    /// sha256 of the modules compiled and ready.
    pub fn cached_modules(&self) -> Vec<String> {
        match self {
            Tasks::InProcess(e) => e.wasm().cached_modules(),
            Tasks::Process(r) => r.cached_modules(),
        }
    }

    /// The coordinator modules and input files are fetched from first.
    pub fn set_coordinator(&self, address: &str) {
        match self {
            Tasks::InProcess(e) => {
                if let Some(artifacts) = e.artifacts() {
                    artifacts.set_current(address);
                }
            }
            Tasks::Process(r) => r.set_coordinator(address),
        }
    }

    /// Kills every task and waits (up to `grace`) for them to report; stops the executor process.
    pub async fn shutdown(&self, grace: Duration) {
        match self {
            Tasks::InProcess(e) => e.shutdown(grace).await,
            Tasks::Process(r) => r.shutdown(grace).await,
        }
    }
}
