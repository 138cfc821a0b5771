//! Compiling modules, bounded: a module that takes long to compile (or much memory to) cannot
//! starve the agent.
//!
//! Cranelift cannot be stopped halfway through a function, and its memory is the process's, so a
//! compile is bounded by running it in a child process: this same binary, entered at
//! [`child_main`] (`--skiff-compile-module`), given the module on stdin and answering with the
//! serialized artifact on stdout. The child runs niced (cached launches win the CPU), with its
//! data segment capped (`RLIMIT_DATA`), dies with the executor and is killed at the deadline; at
//! most [`Compiler::concurrent`] compile at once (each in its own process, so at most that many
//! times the memory bound). A compile past a bound fails the task with
//! COMPILE_LIMIT, naming the bound. Launches of compiled modules never wait for a compile: each
//! module has its own slot in the cache, and compiles run outside the executor's threads.
//!
//! Where no such binary is known (the executor embedded in a library's tests), modules are
//! compiled in-process, unbounded.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use wasmtime::{Engine, Module};

use super::EngineSpec;
use crate::task::TaskExit;

/// The binary an agent compiles with: its own, as it runs (the kernel's link to the running
/// executable's inode, so an executor that outlived an upgrade of the binary on disk still
/// compiles with its own wasmtime, whose artifacts it can load).
pub const OWN_BINARY: &str = "/proc/self/exe";
/// The first argument that makes a binary the compiler child.
pub const CHILD_FLAG: &str = "--skiff-compile-module";
/// The child's exit code for a module that is not valid Wasm (its message on stderr).
const INVALID: i32 = 65;

/// Bounds of one compile.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// The binary to run as the compiler child (`None`: compile in-process, unbounded).
    pub program: Option<PathBuf>,
    /// Wall-clock bound of one compile (its wait for a turn not counted).
    pub timeout: Duration,
    /// Bound of the compiler's data segment (heap and anonymous mappings).
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self { program: None, timeout: Duration::from_secs(60), memory_bytes: 2 << 30 }
    }
}

/// Compiles modules for one engine within [`CompileLimits`].
#[derive(Debug)]
pub struct Compiler {
    limits: CompileLimits,
    spec: EngineSpec,
    turns: Arc<Semaphore>,
}

impl Compiler {
    /// Compiles at once, at most: one per CPU, and at least two, so that one slow module does not
    /// hold up the next. Compiles beyond that wait their turn (their wait is not counted in their
    /// time bound): a flood of slow modules delays other new modules by up to the bound, never the
    /// launches of compiled ones.
    pub fn concurrent() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
    }

    /// A compiler for the engine built from `spec`; `turns` is shared by the agent's engines.
    pub fn new(limits: CompileLimits, spec: EngineSpec, turns: Arc<Semaphore>) -> Self {
        Self { limits, spec, turns }
    }

    /// `bytes` validated and compiled for `engine` (built from this compiler's spec): the module
    /// and its serialized artifact.
    pub async fn compile(&self, engine: &Engine, bytes: Arc<Vec<u8>>) -> Result<(Module, Vec<u8>), TaskExit> {
        let _turn = self.turns.acquire().await.map_err(|_| TaskExit::LaunchFailed("the agent is stopping".into()))?;
        let engine = engine.clone();
        let artifact = match &self.limits.program {
            Some(program) => self.in_child(program, &bytes).await?,
            None => {
                let here = move || {
                    let module = compile_here(&engine, &bytes).map_err(TaskExit::Invalid)?;
                    let artifact = module
                        .serialize()
                        .map_err(|e| TaskExit::LaunchFailed(format!("cannot serialize the module: {e:#}")))?;
                    Ok((module, artifact))
                };
                return tokio::task::spawn_blocking(here)
                    .await
                    .map_err(|e| TaskExit::LaunchFailed(format!("compilation panicked: {e}")))?;
            }
        };
        let load = move || {
            crate::sys::deserialize_compiled(&engine, &artifact)
                .map(|module| (module, artifact))
                .map_err(|e| TaskExit::LaunchFailed(format!("cannot load the compiled module: {e:#}")))
        };
        tokio::task::spawn_blocking(load).await.map_err(|e| TaskExit::LaunchFailed(format!("loading panicked: {e}")))?
    }

    async fn in_child(&self, program: &std::path::Path, bytes: &[u8]) -> Result<Vec<u8>, TaskExit> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg(CHILD_FLAG)
            .arg(self.spec.to_arg())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::sys::bound_compiler(cmd.as_std_mut(), self.limits.memory_bytes);
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskExit::LaunchFailed(format!("cannot start the compiler ({}): {e}", program.display())))?;
        let (mut stdin, mut stdout, mut stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let work = async {
            let (mut artifact, mut message) = (Vec::new(), Vec::new());
            let feed = async move {
                // The child may die before reading it all: its status says why.
                let _ = stdin.write_all(bytes).await;
                drop(stdin);
            };
            let (_, out, err) = tokio::join!(feed, stdout.read_to_end(&mut artifact), stderr.read_to_end(&mut message));
            let status = child.wait().await;
            (out.and(err).and(status), artifact, message)
        };
        let Ok((status, artifact, message)) = tokio::time::timeout(self.limits.timeout, work).await else {
            return Err(TaskExit::CompileLimit(format!(
                "the module did not compile within {} (the agent's --compile-timeout)",
                humantime::format_duration(self.limits.timeout)
            )));
        };
        let status = status.map_err(|e| TaskExit::LaunchFailed(format!("the compiler failed: {e}")))?;
        let message = String::from_utf8_lossy(&message).trim().to_owned();
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(artifact),
            (Some(INVALID), _) => Err(TaskExit::Invalid(message)),
            _ if message.contains("memory allocation") || message.contains("out of memory") => {
                Err(TaskExit::CompileLimit(format!(
                    "compiling the module took more than {} MiB of memory (the agent's --compile-memory-mib)",
                    self.limits.memory_bytes >> 20
                )))
            }
            (_, Some(sig)) => {
                Err(TaskExit::CompileLimit(format!("the compiler was killed by signal {sig}: {message}")))
            }
            (code, _) => Err(TaskExit::LaunchFailed(format!("the compiler exited with {code:?}: {message}"))),
        }
    }
}

/// Validates and compiles `bytes` in this process.
fn compile_here(engine: &Engine, bytes: &[u8]) -> Result<Module, String> {
    Module::validate(engine, bytes).map_err(|e| format!("invalid Wasm module: {e:#}"))?;
    Module::from_binary(engine, bytes).map_err(|e| format!("cannot compile the module: {e:#}"))
}

/// The compiler child: when this process's first argument is [`CHILD_FLAG`], reads a module on
/// stdin, writes its serialized artifact to stdout and returns the exit code; otherwise `None`.
/// Call it first thing in `main`.
pub fn child_main() -> Option<i32> {
    let mut args = std::env::args();
    if args.nth(1).as_deref() != Some(CHILD_FLAG) {
        return None;
    }
    let fail = |code: i32, msg: String| {
        let _ = writeln!(std::io::stderr(), "{msg}");
        Some(code)
    };
    let Some(spec) = args.next().and_then(|a| EngineSpec::from_arg(&a)) else {
        return fail(2, "the compiler needs an engine spec".into());
    };
    let engine = match Engine::new(&spec.config(None)) {
        Ok(engine) => engine,
        Err(e) => return fail(1, format!("cannot build the engine: {e:#}")),
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        return fail(1, format!("cannot read the module: {e}"));
    }
    let module = match compile_here(&engine, &bytes) {
        Ok(module) => module,
        Err(msg) => return fail(INVALID, msg),
    };
    match module.serialize() {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => Some(0),
            Err(e) => fail(1, format!("cannot write the artifact: {e}")),
        },
        Err(e) => fail(1, format!("cannot serialize the module: {e:#}")),
    }
}
