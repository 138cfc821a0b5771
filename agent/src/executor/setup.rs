//! Builds an agent's executor from its configuration: the Wasm runtime, the native runtime (or why
//! there is none), the sandboxes and the artifact source.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use super::Executor;
use crate::artifacts::Artifacts;
use crate::cgroup::CgroupManager;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::runtime::native::{NativeConfig, NativeRuntime, RunAs};
use crate::runtime::wasm::{WasmConfig, WasmRuntime};
use crate::task::TaskEvent;

/// The executor of agent `agent_id`; its events go to `events`. Building it removes the cgroups an
/// earlier executor of this agent left behind (and kills what is in them).
pub fn build(config: &Config, agent_id: &str, events: mpsc::UnboundedSender<TaskEvent>) -> Result<Executor> {
    crate::work_dir::create_private(&config.work_dir)?;
    let sandboxes = config.work_dir.join("sandboxes");
    let mut wasm = WasmConfig::new(config.work_dir.join("module-cache"));
    wasm.max_module_bytes = config.max_module_bytes;
    wasm.instance_slots = config.wasm_slots;
    let runtime = WasmRuntime::new(wasm)?;
    let native = native_runtime(config, agent_id);
    if let Err(why) = &native {
        warn!(%why, "native tasks are disabled on this agent");
    }
    let blobs = config.work_dir.join("blobs");
    let artifacts =
        Artifacts::new(blobs.clone(), config.blob_cache_bytes, config.max_module_bytes, config.coordinators.clone())
            .map_err(Error::io("prepare the blob cache in", &blobs))?;
    Ok(Executor::new(agent_id.to_owned(), runtime, native, sandboxes, config.max_output_bytes, events)?
        .with_artifacts(Arc::new(artifacts)))
}

/// The native runtime of this agent, or why it cannot have one.
fn native_runtime(config: &Config, agent_id: &str) -> std::result::Result<NativeRuntime, String> {
    let run_as = match &config.run_tasks_as {
        None if config.allow_root_tasks => RunAs::Agent,
        None => return Err("no user to run native tasks as (and root tasks are not allowed)".into()),
        Some(user) => RunAs::user(user)?,
    };
    let as_root = match run_as {
        RunAs::Agent => nix::unistd::geteuid().is_root(),
        RunAs::User { uid, .. } => uid == 0,
    };
    if as_root && !config.allow_root_tasks {
        return Err("running native tasks as root needs --allow-root-tasks".into());
    }
    let cgroups = CgroupManager::new(&config.cgroup_root, agent_id).map_err(|e| e.to_string())?;
    NativeRuntime::new(cgroups, NativeConfig { run_as, ..NativeConfig::default() }).map_err(|e| e.to_string())
}
