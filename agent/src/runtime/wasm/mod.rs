//! Wasm tasks on wasmtime, WASI preview 1, async.
//!
//! Guests run as futures on the agent's Wasm executor (a tokio runtime of its own, never the one
//! serving the control plane), so thousands of tasks share a few threads and an idle guest costs
//! a future, not a thread. Each task gets its own store: its own WASI context (args, env and stdin
//! from its spec only, its sandbox directory preopened as `/`, nothing else of the host), a
//! memory limiter and an epoch deadline. A ticker thread advances the epoch every millisecond; on
//! every tick the guest yields to the executor, pausing first if it is over its CPU share
//! ([`limits::CpuBudget`]). Kill and timeout race the guest's future and drop it when they win, so
//! they stop a spinning guest and one blocked on input alike.
//!
//! Two engines: one plain, one with fuel metering (only tasks given `--fuel` pay for it). Both use
//! the pooling instance allocator, and each has its [`cache::ModuleCache`] of compiled modules.
//!
//! Layout:
//! - [`cache`]: compiled modules by content, in memory and on disk, both bounded (LRU);
//! - [`compile`]: compiles bounded in time and memory, in a child process;
//! - [`handles`]: the per-task handle cap, answered with ENFILE;
//! - [`limits`]: memory limiter, CPU share, meters.

pub mod cache;
pub mod compile;
pub mod handles;
pub mod limits;

pub use cache::ModuleSource;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_proto as pb;
use tokio_util::sync::CancellationToken;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use tokio::sync::Semaphore;

use self::cache::{CacheOutcome, CacheStats, ModuleCache};
use self::compile::{CompileLimits, Compiler};
use self::limits::{CpuBudget, MemoryLimitExceeded, Meter, Metered, TaskLimiter};
use crate::error::{Error, Result};
use crate::runtime::output::OutputSink;
use crate::task::TaskExit;

/// How often the epoch advances: the granularity of CPU shares and of yielding.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Settings of the Wasm runtime.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where compiled modules are cached.
    pub cache_dir: PathBuf,
    /// Largest module accepted, in bytes.
    pub max_module_bytes: u64,
    /// Concurrent instances (pooling allocator slots).
    pub instance_slots: u32,
    /// Largest linear memory one task may have.
    pub max_memory_bytes: u64,
    /// CPU time a throttled task may run ahead of its share.
    pub cpu_burst: Duration,
    /// Handles (open files, directories, streams) one task may hold at once, its preopens and
    /// stdio included; past it the call that would open one more fails.
    pub max_handles: usize,
    /// Bounds of a compile (time, memory, in a child process).
    pub compile: CompileLimits,
    /// Bound of each compiled-module cache, in memory and on disk (least recently used go first).
    pub module_cache_bytes: u64,
}

impl WasmConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            max_module_bytes: 64 << 20,
            instance_slots: 1000,
            max_memory_bytes: 4 << 30,
            cpu_burst: Duration::from_millis(20),
            max_handles: 256,
            compile: CompileLimits::default(),
            module_cache_bytes: 1 << 30,
        }
    }
}

/// What an engine is built from. A compiler child builds its engine from the same spec, so that
/// what it compiles loads in the executor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSpec {
    /// Fuel metering.
    pub fuel: bool,
    /// Largest linear memory (the memory reservation).
    pub max_memory_bytes: u64,
}

impl EngineSpec {
    /// The engine's settings; `pool`: its instance allocator (none in a compiler child, which
    /// instantiates nothing).
    pub fn config(&self, pool: Option<PoolingAllocationConfig>) -> Config {
        let mut c = Config::new();
        // One thread per compile: with wasmtime's parallel compilation all compiles share one rayon
        // pool, and a huge (hostile) module queued first would hold up every other compile.
        c.parallel_compilation(false);
        c.epoch_interruption(true)
            .consume_fuel(self.fuel)
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20)
            .memory_reservation(self.max_memory_bytes)
            .memory_guard_size(32 << 20);
        if let Some(pool) = pool {
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        c
    }

    fn to_arg(self) -> String {
        format!("fuel={},memory={}", u8::from(self.fuel), self.max_memory_bytes)
    }

    fn from_arg(arg: &str) -> Option<Self> {
        let (fuel, memory) = arg.split_once(',')?;
        let fuel = match fuel.strip_prefix("fuel=")? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        Some(Self { fuel, max_memory_bytes: memory.strip_prefix("memory=")?.parse().ok()? })
    }
}

/// What a task's store holds.
pub struct TaskCtx {
    wasi: WasiP1Ctx,
    limiter: TaskLimiter,
    /// Handles the task may hold ([`handles`]).
    max_handles: usize,
}

impl std::fmt::Debug for TaskCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCtx").field("limiter", &self.limiter).finish_non_exhaustive()
    }
}

/// Why the runtime stopped a guest from the outside.
#[derive(Debug, thiserror::Error)]
enum Interrupt {
    #[error("killed")]
    Killed,
}

/// Everything one Wasm task needs.
#[derive(Debug)]
pub struct WasmTask {
    /// argv[0].
    pub name: String,
    /// Where the module's bytes come from if it is not compiled yet.
    pub module: ModuleSource,
    /// sha256 of the module (of inline bytes: checked by the caller; fetched bytes: checked on fetch).
    pub module_sha256: String,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    pub stdin: Vec<u8>,
    /// Host directory preopened as the guest's `/`.
    pub sandbox: PathBuf,
    /// Host directories preopened read-only at guest paths (input files).
    pub preopens: Vec<(PathBuf, String)>,
    pub memory_limit_bytes: u64,
    /// Share of one core (≥ 1: unthrottled).
    pub cpus: f64,
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub stdout: OutputSink,
    pub stderr: OutputSink,
    pub kill: CancellationToken,
    /// Live meters, shared with whoever reports usage while the task runs.
    pub meter: Arc<Meter>,
}

struct EngineSet {
    engine: Engine,
    linker: Arc<Linker<TaskCtx>>,
    cache: Arc<ModuleCache<TaskCtx>>,
}

impl EngineSet {
    fn new(config: &WasmConfig, fuel: bool, turns: Arc<Semaphore>) -> Result<Self> {
        let engine_err = |e: wasmtime::Error| Error::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.instance_slots)
            .total_memories(config.instance_slots)
            .total_tables(config.instance_slots)
            .total_stacks(config.instance_slots)
            .max_memory_size(config.max_memory_bytes as usize)
            // Keep a little of each slot resident for fast reuse; the rest is returned to the OS.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10)
            .max_unused_warm_slots(64);
        let spec = EngineSpec { fuel, max_memory_bytes: config.max_memory_bytes };
        let engine = Engine::new(&spec.config(Some(pool))).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |t: &mut TaskCtx| &mut t.wasi).map_err(engine_err)?;
        handles::add_to_linker(&mut linker).map_err(engine_err)?;
        let compiler = Compiler::new(config.compile.clone(), spec, turns);
        let cache = ModuleCache::new(engine.clone(), &config.cache_dir, compiler, config.module_cache_bytes)
            .map_err(|e| Error::Io { action: "create the module cache", path: config.cache_dir.clone(), source: e })?;
        Ok(Self { engine, linker: Arc::new(linker), cache: Arc::new(cache) })
    }
}

/// The engines, linkers, module caches and epoch ticker shared by all Wasm tasks of an agent.
pub struct WasmRuntime {
    config: WasmConfig,
    plain: EngineSet,
    metered: EngineSet,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl WasmRuntime {
    pub fn new(config: WasmConfig) -> Result<Self> {
        // Compiles of both engines take turns together.
        let turns = Arc::new(Semaphore::new(Compiler::concurrent()));
        let plain = EngineSet::new(&config, false, turns.clone())?;
        let metered = EngineSet::new(&config, true, turns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engines = [plain.engine.clone(), metered.engine.clone()];
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("skiff-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self { config, plain, metered, stop, ticker: Some(ticker) })
    }

    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// Compile-cache counters of both engines, added up.
    pub fn cache_stats(&self) -> CacheStats {
        let (a, b) = (self.plain.cache.stats(), self.metered.cache.stats());
        CacheStats {
            compiled: a.compiled + b.compiled,
            memory_hits: a.memory_hits + b.memory_hits,
            disk_hits: a.disk_hits + b.disk_hits,
            memory_evictions: a.memory_evictions + b.memory_evictions,
            disk_evictions: a.disk_evictions + b.disk_evictions,
        }
    }

    /// sha256 of the modules compiled and ready on this agent.
    pub fn cached_modules(&self) -> Vec<String> {
        let mut v = self.plain.cache.cached_modules();
        v.extend(self.metered.cache.cached_modules());
        v.sort();
        v.dedup();
        v
    }

    /// Runs one task to its end. `on_running` is called once the instance exists, before `_start`.
    pub async fn run(&self, task: WasmTask, on_running: impl FnOnce()) -> (TaskExit, pb::Usage) {
        let meter = task.meter.clone();
        let mut fuel_consumed = 0;
        let mut cache = None;
        let mut started = None;
        let exit = self.run_inner(task, on_running, &mut fuel_consumed, &mut cache, &mut started).await;
        let usage = pb::Usage {
            cpu_time_us: meter.cpu_time().as_micros() as u64,
            wall_time_us: started.map_or(0, |s: Instant| s.elapsed().as_micros() as u64),
            peak_memory_bytes: meter.peak_memory(),
            fuel_consumed,
            module_cache: cache.map(|c: CacheOutcome| c.as_str().to_owned()).unwrap_or_default(),
            ..Default::default()
        };
        (exit, usage)
    }

    async fn run_inner(
        &self,
        task: WasmTask,
        on_running: impl FnOnce(),
        fuel_consumed: &mut u64,
        cache: &mut Option<CacheOutcome>,
        started: &mut Option<Instant>,
    ) -> TaskExit {
        if let Some(exit) = self.check(&task) {
            return exit;
        }
        let set = if task.fuel.is_some() { &self.metered } else { &self.plain };
        let (pre, outcome) = match set.cache.get(&set.linker, &task.module_sha256, task.module.clone()).await {
            Ok(found) => found,
            Err(exit) => return exit,
        };
        *cache = Some(outcome);

        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[&task.name]).args(&task.args);
        for (k, v) in &task.env {
            wasi.env(k, v);
        }
        wasi.stdin(MemoryInputPipe::new(task.stdin)).stdout(task.stdout).stderr(task.stderr);
        if let Err(err) = wasi.preopened_dir(&task.sandbox, "/", FsPerms::ReadWrite) {
            return TaskExit::LaunchFailed(format!("cannot open the sandbox {}: {err}", task.sandbox.display()));
        }
        for (host, guest) in &task.preopens {
            if let Err(err) = wasi.preopened_dir(host, guest, FsPerms::ReadOnly) {
                return TaskExit::LaunchFailed(format!("cannot open input directory {}: {err}", host.display()));
            }
        }
        let limiter = TaskLimiter {
            memory_limit: usize::try_from(task.memory_limit_bytes).unwrap_or(usize::MAX),
            table_elements_limit: 100_000,
            meter: task.meter.clone(),
        };
        let mut wasi = wasi.build_p1();
        let max_handles = self.config.max_handles;
        wasmtime_wasi::WasiView::ctx(&mut wasi).table.set_max_capacity(max_handles + handles::HEADROOM);
        let mut store = Store::new(&set.engine, TaskCtx { wasi, limiter, max_handles });
        store.limiter(|t| &mut t.limiter);
        if let Some(fuel) = task.fuel
            && let Err(err) = store.set_fuel(fuel)
        {
            return TaskExit::LaunchFailed(format!("cannot set fuel: {err}"));
        }

        // Wall time, the CPU share and the timeout all count from here: compiling is the agent's time.
        let now = Instant::now();
        *started = Some(now);
        let budget = CpuBudget { cpus: task.cpus, burst: self.config.cpu_burst, started: now };
        let meter = task.meter.clone();
        let kill = task.kill.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if kill.is_cancelled() {
                return Err(wasmtime::Error::new(Interrupt::Killed));
            }
            Ok(match budget.throttle(meter.cpu_time(), Instant::now()) {
                Some(pause) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(pause))),
                None => UpdateDeadline::Yield(1),
            })
        });

        let guest = async {
            let instance = pre.instantiate_async(&mut store).await?;
            on_running();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| wasmtime::Error::new(NoStart(format!("{e:#}"))))?;
            start.call_async(&mut store, ()).await
        };
        let deadline = task.timeout.map(|t| tokio::time::Instant::now() + t);
        let result = tokio::select! {
            r = Metered::new(guest, task.meter.clone()) => r,
            _ = task.kill.cancelled() => return TaskExit::Killed,
            _ = sleep_until(deadline) => return TaskExit::TimedOut,
        };
        if let Some(fuel) = task.fuel {
            *fuel_consumed = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        }
        match result {
            Ok(()) => TaskExit::Exited(0),
            Err(err) => classify(&err, self.config.max_handles + handles::HEADROOM),
        }
    }

    /// Checks done before anything is compiled.
    fn check(&self, task: &WasmTask) -> Option<TaskExit> {
        let (len, bytes) = match &task.module {
            ModuleSource::Inline(bytes) => (bytes.len() as u64, Some(bytes)),
            // Fetched bytes are checked against their hash; the compiler validates them.
            ModuleSource::Store { size, .. } => (*size, None),
        };
        if len > self.config.max_module_bytes {
            return Some(TaskExit::Invalid(format!(
                "module is {len} bytes, over this agent's limit of {} bytes",
                self.config.max_module_bytes
            )));
        }
        if let Some(module) = bytes {
            if module.len() < 8 || &module[..4] != b"\0asm" {
                return Some(TaskExit::Invalid("not a Wasm module: it does not start with the \\0asm magic".into()));
            }
            if module[4..8] != [1, 0, 0, 0] {
                return Some(TaskExit::Invalid(
                    "not a core Wasm module (a component, or an unknown version); Skiff runs WASI preview 1 modules"
                        .into(),
                ));
            }
        }
        self.check_memory(task)
    }

    fn check_memory(&self, task: &WasmTask) -> Option<TaskExit> {
        if task.memory_limit_bytes > self.config.max_memory_bytes {
            return Some(TaskExit::LaunchFailed(format!(
                "the task asks for {} bytes of memory, over this agent's per-task maximum of {} bytes",
                task.memory_limit_bytes, self.config.max_memory_bytes
            )));
        }
        None
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

#[derive(Debug, thiserror::Error)]
#[error("module has no `_start` function: {0}")]
struct NoStart(String);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A short name for a trap, as users search for it.
fn trap_name(trap: Trap) -> &'static str {
    match trap {
        Trap::StackOverflow => "stack overflow",
        Trap::MemoryOutOfBounds => "out-of-bounds memory access",
        Trap::HeapMisaligned => "misaligned memory access",
        Trap::TableOutOfBounds => "out-of-bounds table access",
        Trap::IndirectCallToNull => "indirect call to null",
        Trap::BadSignature => "indirect call signature mismatch",
        Trap::IntegerOverflow => "integer overflow",
        Trap::IntegerDivisionByZero => "integer divide by zero",
        Trap::BadConversionToInteger => "invalid conversion to integer",
        Trap::UnreachableCodeReached => "unreachable",
        Trap::Interrupt => "interrupt",
        Trap::OutOfFuel => "out of fuel",
        _ => "trap",
    }
}

/// Turns a guest's error into how the task ended.
fn classify(err: &wasmtime::Error, max_handles: usize) -> TaskExit {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return TaskExit::Exited(exit.0);
    }
    if let Some(limit) = err.downcast_ref::<MemoryLimitExceeded>() {
        return TaskExit::MemoryLimit(limit.to_string());
    }
    if err.downcast_ref::<Interrupt>().is_some() {
        return TaskExit::Killed;
    }
    if let Some(no_start) = err.downcast_ref::<NoStart>() {
        return TaskExit::Invalid(no_start.to_string());
    }
    if let Some(wasmtime::component::ResourceTableError::Full) = err.downcast_ref() {
        return TaskExit::Trapped(format!(
            "handle limit: the task tried to hold more than {max_handles} open files, directories and streams at once"
        ));
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => TaskExit::OutOfFuel,
            trap => TaskExit::Trapped(format!("{}: {trap}", trap_name(*trap))),
        };
    }
    TaskExit::Trapped(format!("{err:#}"))
}
