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
