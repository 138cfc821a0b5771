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
use crate::runtime::wasm::compile::CompileLimits;
use crate::runtime::wasm::{WasmConfig, WasmRuntime};
use crate::sandbox::Sandboxes;
use crate::task::TaskEvent;

/// The executor of agent `agent_id`; its events go to `events`. Building it removes the cgroups an
/// earlier executor of this agent left behind (and kills what is in them).
pub fn build(config: &Config, agent_id: &str, events: mpsc::UnboundedSender<TaskEvent>) -> Result<Executor> {
    crate::work_dir::create_private(&config.work_dir)?;
    let root = config.work_dir.join("sandboxes");
    let sandboxes =
        Sandboxes::new(&root, Some(config.default_disk_bytes)).map_err(Error::io("prepare the sandboxes in", &root))?;
    let mut wasm = WasmConfig::new(config.work_dir.join("module-cache"));
    wasm.max_module_bytes = config.max_module_bytes;
    wasm.instance_slots = config.wasm_slots;
    wasm.max_handles = config.wasm_max_handles;
    wasm.module_cache_bytes = config.module_cache_bytes;
    wasm.compile = CompileLimits {
        program: config.compiler.clone(),
        timeout: config.compile_timeout,
        memory_bytes: config.compile_memory_bytes,
    };
    let open_files = crate::sys::raise_open_files_limit();
    let per_task = (config.wasm_max_handles + crate::runtime::wasm::handles::HEADROOM) as u64;
    let worst = (config.wasm_slots as u64).saturating_mul(per_task);
    if open_files < worst {
        warn!(
            open_files,
            worst,
            "the executor's descriptor limit is below wasm slots × handles per task: guests together could reach it"
        );
    }
    let runtime = WasmRuntime::new(wasm)?;
    let native = native_runtime(config, agent_id);
    if let Err(why) = &native {
        warn!(%why, "native tasks are disabled on this agent");
    }
    let blobs = config.work_dir.join("blobs");
    let artifacts =
        Artifacts::new(blobs.clone(), config.blob_cache_bytes, config.max_module_bytes, config.coordinators.clone())
            .map(|a| a.with_tls(config.tls.clone()))
            .map_err(Error::io("prepare the blob cache in", &blobs))?;
    Ok(Executor::new(agent_id.to_owned(), runtime, native, sandboxes, config.max_output_bytes, events)?
        .with_artifacts(Arc::new(artifacts)))
}

/// The native runtime of this agent, or why it cannot have one.
fn native_runtime(config: &Config, agent_id: &str) -> std::result::Result<NativeRuntime, String> {
    if !config.native_tasks {
        return Err("native tasks are off on this agent (start it with --native-tasks)".into());
    }
    let run_as = match &config.run_tasks_as {
        _ if config.allow_root_tasks => RunAs::Agent,
        None => RunAs::Range(config.task_uids),
        Some(user) => RunAs::user(user)?,
    };
    if matches!(run_as, RunAs::User { uid: 0, .. }) {
        return Err("running native tasks as root needs --allow-root-tasks".into());
    }
    let cgroups = CgroupManager::new(&config.cgroup_root, agent_id).map_err(|e| e.to_string())?;
    let native = NativeConfig {
        run_as,
        jail_root: Some(config.work_dir.join("jail")),
        host_dirs: config.task_host_dirs.clone(),
        allow_host_network: config.allow_host_network,
        ..NativeConfig::default()
    };
    NativeRuntime::new(cgroups, native)
}
