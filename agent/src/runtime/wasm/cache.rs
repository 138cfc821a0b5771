//! Compiled modules, by content: a module's sha256 names its compiled artifact, in memory and on
//! disk, so the same module never compiles twice on an agent, across restarts too.
//!
//! On disk, under `<work_dir>/module-cache/<engine compatibility hash>/`, each artifact is
//! `<module sha256>.cwasm` plus `<module sha256>.sum` holding the artifact's own sha256, written
//! after the artifact (both through a temporary file and a rename). An artifact is deserialized
//! only when its bytes match the recorded sum, so a truncated, corrupted or foreign file is
//! recompiled, never loaded. Concurrent launches of one module wait for a single compilation.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::{debug, warn};
use wasmtime::{Engine, InstancePre, Linker, Module};

use crate::artifacts::Artifacts;
use crate::task::TaskExit;

/// Where a module's bytes come from when it has to be compiled.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// The bytes came with the task (agent-local use: tests, benchmarks).
    Inline(Arc<Vec<u8>>),
    /// Fetched by hash from the agent's blob cache or a coordinator, only if not compiled already.
    Store { artifacts: Arc<Artifacts>, size: u64 },
}

/// Where a task's compiled module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Compiled for this task from bytes the agent had.
    Compiled,
    /// Fetched from a coordinator, then compiled.
    Fetched,
    /// Already in memory.
    Memory,
    /// Loaded from the on-disk cache (compiled before, maybe before a restart).
    Disk,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Compiled => "compiled",
            CacheOutcome::Fetched => "fetched",
            CacheOutcome::Memory => "memory",
            CacheOutcome::Disk => "disk",
        }
    }
}

/// Counters of a cache, for logs, tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub compiled: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
}

type Slot<T> = Arc<OnceCell<(InstancePre<T>, CacheOutcome)>>;

pub struct ModuleCache<T: 'static> {
    engine: Engine,
    dir: PathBuf,
    entries: Mutex<HashMap<String, Slot<T>>>,
    compiled: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
}

impl<T: Send> std::fmt::Debug for ModuleCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache").field("dir", &self.dir).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory for artifacts of engines compatible with `engine`.
pub fn engine_dir(root: &Path, engine: &Engine) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    root.join(format!("{:016x}", hasher.finish()))
}

impl<T: Send + 'static> ModuleCache<T> {
    pub fn new(engine: Engine, root: &Path) -> std::io::Result<Self> {
        let dir = engine_dir(root, &engine);
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            engine,
            dir,
            entries: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
        }
    }

    /// sha256 of the modules compiled and ready in memory.
    pub fn cached_modules(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = entries.iter().filter(|(_, s)| s.initialized()).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// The linked, ready-to-instantiate module whose sha256 is `sha`: from memory, else from disk,
    /// else compiled (off the async threads) from `source`'s bytes, fetched only then.
    pub async fn get(
        self: &Arc<Self>,
        linker: &Arc<Linker<T>>,
        sha: &str,
        source: ModuleSource,
    ) -> Result<(InstancePre<T>, CacheOutcome), TaskExit> {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.entry(sha.to_owned()).or_default().clone()
        };
        if let Some((pre, _)) = slot.get() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((pre.clone(), CacheOutcome::Memory));
        }
        let this = self.clone();
        let linker = linker.clone();
        let sha = sha.to_owned();
        let (pre, outcome) = slot
            .get_or_try_init(|| async move {
                // Disk first, without bytes; on a miss get the bytes (fetching them if need be) and compile.
                let (t, l, s) = (this.clone(), linker.clone(), sha.clone());
                if let Some(found) = blocking(move || t.load_or_compile(&l, &s, None)).await? {
                    return Ok(found);
                }
                let (bytes, fetched) = match source {
                    ModuleSource::Inline(bytes) => (bytes, false),
                    ModuleSource::Store { artifacts, size } => {
                        (artifacts.get(&sha, size).await.map_err(TaskExit::LaunchFailed)?, true)
                    }
                };
                let found = blocking(move || this.load_or_compile(&linker, &sha, Some(&bytes))).await?;
                let (pre, outcome) = found.ok_or_else(|| TaskExit::LaunchFailed("module bytes missing".into()))?;
                Ok((pre, if fetched && outcome == CacheOutcome::Compiled { CacheOutcome::Fetched } else { outcome }))
            })
            .await?;
        Ok((pre.clone(), *outcome))
    }

    /// Loads from disk, or compiles `bytes` (none: disk only).
    fn load_or_compile(
        &self,
        linker: &Linker<T>,
        sha: &str,
        bytes: Option<&[u8]>,
    ) -> Result<Option<(InstancePre<T>, CacheOutcome)>, TaskExit> {
        let (module, outcome) = match self.load(sha) {
            Some(module) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                (module, CacheOutcome::Disk)
            }
            None => {
                let Some(bytes) = bytes else { return Ok(None) };
                Module::validate(&self.engine, bytes)
                    .map_err(|e| TaskExit::Invalid(format!("invalid Wasm module: {e:#}")))?;
                let module = Module::from_binary(&self.engine, bytes)
                    .map_err(|e| TaskExit::Invalid(format!("cannot compile the module: {e:#}")))?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = self.store(sha, &module) {
                    warn!(%sha, %err, "could not write the compiled module to the cache");
                }
                (module, CacheOutcome::Compiled)
            }
        };
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| TaskExit::Invalid(format!("module cannot be linked against WASI preview 1: {e:#}")))?;
        Ok(Some((pre, outcome)))
    }

    fn paths(&self, sha: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{sha}.cwasm")), self.dir.join(format!("{sha}.sum")))
    }

    fn load(&self, sha: &str) -> Option<Module> {
        let (artifact, sum) = self.paths(sha);
        let expected = std::fs::read_to_string(&sum).ok()?;
        let bytes = std::fs::read(&artifact).ok()?;
        if sha256_hex(&bytes) != expected.trim() {
            warn!(path = %artifact.display(), "cached artifact does not match its recorded sum; recompiling");
            return None;
        }
        match crate::sys::deserialize_own_artifact(&self.engine, &bytes, &artifact) {
            Ok(module) => Some(module),
            Err(err) => {
                warn!(%err, "cached artifact could not be loaded; recompiling");
                None
            }
        }
    }

    fn store(&self, sha: &str, module: &Module) -> std::io::Result<()> {
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        let (artifact, sum) = self.paths(sha);
        write_atomically(&artifact, &bytes)?;
        write_atomically(&sum, sha256_hex(&bytes).as_bytes())?;
        debug!(%sha, bytes = bytes.len(), "compiled module cached");
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs `f` on the blocking pool.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R, TaskExit> + Send + 'static) -> Result<R, TaskExit> {
    tokio::task::spawn_blocking(f).await.map_err(|e| TaskExit::LaunchFailed(format!("compilation panicked: {e}")))?
}
