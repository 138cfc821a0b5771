//! Wasm tasks on wasmtime with WASI preview 1.
//!
//! One [`WasmRuntime`] per agent holds the engine and the linker; each task compiles its module,
//! gets its own store (its own WASI context, memory limit and epoch deadline) and runs `_start` on
//! the calling thread, which is never a thread of the control-plane runtime (see
//! [`crate::executor`]). A ticker thread advances the engine's epoch every millisecond; the store's
//! epoch callback then checks the task's kill switch and wall-clock deadline, so a spinning guest
//! is stopped within about a millisecond of being killed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_proto as pb;
use wasmtime::{
    Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::error::{Error, Result};
use crate::runtime::output::OutputSink;
use crate::task::TaskExit;

/// How often the epoch advances: the granularity of kill and timeout.
const EPOCH_TICK: Duration = Duration::from_millis(1);

struct TaskCtx {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// Why the epoch callback stopped a guest.
#[derive(Debug, thiserror::Error)]
enum Interrupt {
    #[error("killed")]
    Killed,
    #[error("wall-clock timeout")]
    TimedOut,
}

/// Everything one Wasm task run needs.
#[derive(Debug)]
pub struct WasmTask<'a> {
    /// argv[0].
    pub name: &'a str,
    pub module: &'a [u8],
    pub args: &'a [String],
    pub env: &'a HashMap<String, String>,
    pub stdin: Vec<u8>,
    /// Host directory preopened as the guest's `/`.
    pub sandbox: &'a Path,
    /// Cap on the guest's linear memory.
    pub max_memory_bytes: Option<u64>,
    pub timeout: Option<Duration>,
    pub stdout: OutputSink,
    pub stderr: OutputSink,
    pub kill: Arc<AtomicBool>,
}

/// The engine, linker and epoch ticker shared by all Wasm tasks of an agent.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<TaskCtx>,
    max_module_bytes: u64,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("max_module_bytes", &self.max_module_bytes)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    pub fn new(max_module_bytes: u64) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t: &mut TaskCtx| &mut t.wasi)
            .map_err(|e| Error::Engine(e.to_string()))?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("skiff-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            engine,
            linker,
            max_module_bytes,
            stop,
            ticker: Some(ticker),
        })
    }

    /// Compiles and runs one task to its end on the calling thread. `on_running` is called once
    /// the instance exists, just before `_start`.
    pub fn run(&self, task: WasmTask<'_>, on_running: impl FnOnce()) -> (TaskExit, pb::Usage) {
        let started = Instant::now();
        let cpu_start = thread_cpu_time();
        let mut peak_memory = 0;
        let exit = self.run_inner(task, on_running, &mut peak_memory);
        let usage = pb::Usage {
            cpu_time_us: thread_cpu_time().saturating_sub(cpu_start).as_micros() as u64,
            wall_time_us: started.elapsed().as_micros() as u64,
            peak_memory_bytes: peak_memory,
            fuel_consumed: 0,
        };
        (exit, usage)
    }

    fn run_inner(
        &self,
        task: WasmTask<'_>,
        on_running: impl FnOnce(),
        peak_memory: &mut u64,
    ) -> TaskExit {
        if task.module.len() as u64 > self.max_module_bytes {
            return TaskExit::Invalid(format!(
                "module is {} bytes, over the agent's limit of {} bytes",
                task.module.len(),
                self.max_module_bytes
            ));
        }
        let module = match Module::from_binary(&self.engine, task.module) {
            Ok(m) => m,
            Err(err) => return TaskExit::Invalid(format!("not a valid Wasm module: {err}")),
        };
        let pre = match self.linker.instantiate_pre(&module) {
            Ok(pre) => pre,
            Err(err) => {
                return TaskExit::Invalid(format!(
                    "module cannot be linked against WASI preview 1: {err}"
                ));
            }
        };

        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[task.name]).args(task.args);
        for (k, v) in task.env {
            wasi.env(k, v);
        }
        wasi.stdin(MemoryInputPipe::new(task.stdin))
            .stdout(task.stdout)
            .stderr(task.stderr);
        if let Err(err) = wasi.preopened_dir(task.sandbox, "/", FsPerms::ReadWrite) {
            return TaskExit::LaunchFailed(format!(
                "cannot open the sandbox {}: {err}",
                task.sandbox.display()
            ));
        }
        let mut limits = StoreLimitsBuilder::new();
        if let Some(max) = task.max_memory_bytes {
            limits = limits.memory_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        let mut store = Store::new(
            &self.engine,
            TaskCtx {
                wasi: wasi.build_p1(),
                limits: limits.build(),
            },
        );
        store.limiter(|t| &mut t.limits);

        let deadline = task.timeout.map(|t| Instant::now() + t);
        let kill = task.kill.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if kill.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Interrupt::Killed));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(wasmtime::Error::new(Interrupt::TimedOut));
            }
            Ok(UpdateDeadline::Continue(1))
        });

        if task.kill.load(Ordering::Relaxed) {
            return TaskExit::Killed;
        }
        let instance = match pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(err) => return classify(err),
        };
        on_running();
        let result = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
            Ok(start) => start.call(&mut store, ()),
            Err(err) => {
                return TaskExit::Invalid(format!("module has no `_start` function: {err}"));
            }
        };
        if let Some(memory) = instance.get_memory(&mut store, "memory") {
            // Linear memory never shrinks, so its final size is its peak.
            *peak_memory = memory.data_size(&store) as u64;
        }
        match result {
            Ok(()) => TaskExit::Exited(0),
            Err(err) => classify(err),
        }
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Turns a guest's error into how the task ended.
fn classify(err: wasmtime::Error) -> TaskExit {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return TaskExit::Exited(exit.0);
    }
    if let Some(interrupt) = err.downcast_ref::<Interrupt>() {
        return match interrupt {
            Interrupt::Killed => TaskExit::Killed,
            Interrupt::TimedOut => TaskExit::TimedOut,
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => TaskExit::OutOfFuel,
            trap => TaskExit::Trapped(trap.to_string()),
        };
    }
    TaskExit::Trapped(format!("{err:#}"))
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}
