//! Task runtimes: how a task's code is executed on this host.
//!
//! - [`wasm`]: wasmtime with WASI preview 1, limits, meters and the compiled-module cache;
//! - [`native`]: commands in a cgroup of their own;
//! - [`output`]: bounded, streamed stdout/stderr of a task.

pub mod native;
pub mod output;
pub mod wasm;
