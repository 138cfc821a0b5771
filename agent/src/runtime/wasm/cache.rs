//! Compiled modules, by content: a module's sha256 names its compiled artifact, in memory and on
//! disk, so the same module never compiles twice on an agent, across restarts too.
//!
//! On disk, under `<work_dir>/module-cache/<engine compatibility hash>/`, each artifact is
//! `<module sha256>.cwasm` plus `<module sha256>.sum` holding the artifact's own sha256, written
//! after the artifact (both through a temporary file and a rename). An artifact is deserialized
//! only when its bytes match the recorded sum, so a truncated, corrupted or foreign file is
//! recompiled, never loaded. Concurrent launches of one module wait for a single compilation
//! ([`super::compile`]: bounded, in a child process); launches of other modules do not.
//!
//! Both are bounded (`--module-cache-mib` each): past the bound, the least recently used modules
//! go first (in memory: dropped, tasks running them keep theirs; on disk: deleted, recompiled if
//! asked for again). An artifact's size stands for its size in memory too.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::{debug, warn};
use wasmtime::{Engine, InstancePre, Linker, Module};

use super::compile::Compiler;
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
    /// Modules dropped from memory and deleted from disk to stay within the bound.
    pub memory_evictions: u64,
    pub disk_evictions: u64,
}

type Slot<T> = Arc<OnceCell<(InstancePre<T>, CacheOutcome)>>;

/// Least recently used first out, within `budget` bytes.
#[derive(Debug)]
struct Lru<V> {
    entries: HashMap<String, (V, u64, u64)>, // value, bytes, last use
    bytes: u64,
    budget: u64,
    clock: u64,
}

impl<V: Clone> Lru<V> {
    fn new(budget: u64) -> Self {
        Self { entries: HashMap::new(), bytes: 0, budget, clock: 0 }
    }

    /// The value of `key`, marked used.
    fn touch(&mut self, key: &str) -> Option<V> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.2 = self.clock;
        Some(entry.0.clone())
    }

    /// Puts `value` (of `bytes`) under `key`, marked used; returns what had to go to stay within
    /// the budget (never `key` itself).
    fn put(&mut self, key: &str, value: V, bytes: u64) -> Vec<(String, V)> {
        self.clock += 1;
        if let Some((_, old, _)) = self.entries.insert(key.to_owned(), (value, bytes, self.clock)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        let mut gone = Vec::new();
        while self.bytes > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(k, v)| k.as_str() != key && v.1 > 0)
                .min_by_key(|(_, v)| v.2)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((value, bytes, _)) = self.entries.remove(&oldest) {
                self.bytes -= bytes;
                gone.push((oldest, value));
            }
        }
        gone
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, bytes, _)) = self.entries.remove(key) {
            self.bytes -= bytes;
        }
    }
}

pub struct ModuleCache<T: 'static> {
    engine: Engine,
    dir: PathBuf,
    compiler: Compiler,
    /// Slots of modules compiled or being compiled; a slot's bytes are 0 until it is ready.
    memory: Mutex<Lru<Slot<T>>>,
    /// Artifacts on disk.
    disk: Mutex<Lru<()>>,
    compiled: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    memory_evictions: AtomicU64,
    disk_evictions: AtomicU64,
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
    /// The cache of `engine`'s modules under `root`, compiling with `compiler`, each of memory and
    /// disk bounded by `budget` bytes. Artifacts an earlier executor left count toward the bound,
    /// the most recently written last out.
    pub fn new(engine: Engine, root: &Path, compiler: Compiler, budget: u64) -> std::io::Result<Self> {
        let dir = engine_dir(root, &engine);
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut found: Vec<(SystemTime, String, u64)> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha = name.strip_suffix(".cwasm")?.to_owned();
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, sha, meta.len()))
            })
            .collect();
        found.sort();
        let cache = Self {
            engine,
            dir,
            compiler,
            memory: Mutex::new(Lru::new(budget)),
            disk: Mutex::new(Lru::new(budget)),
            compiled: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_evictions: AtomicU64::new(0),
            disk_evictions: AtomicU64::new(0),
        };
        for (_, sha, bytes) in found {
            let gone = cache.disk().put(&sha, (), bytes.max(1));
            cache.delete(gone);
        }
        Ok(cache)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Lru<Slot<T>>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Lru<()>> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_evictions: self.memory_evictions.load(Ordering::Relaxed),
            disk_evictions: self.disk_evictions.load(Ordering::Relaxed),
        }
    }

    /// Bytes the modules ready in memory take, and those on disk.
    pub fn footprint(&self) -> (u64, u64) {
        (self.memory().bytes, self.disk().bytes)
    }

    /// sha256 of the modules compiled and ready in memory.
    pub fn cached_modules(&self) -> Vec<String> {
        let memory = self.memory();
        let mut v: Vec<String> =
            memory.entries.iter().filter(|(_, (s, _, _))| s.initialized()).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// The linked, ready-to-instantiate module whose sha256 is `sha`: from memory, else from disk,
    /// else compiled from `source`'s bytes, fetched only then.
    pub async fn get(
        self: &Arc<Self>,
        linker: &Arc<Linker<T>>,
        sha: &str,
        source: ModuleSource,
    ) -> Result<(InstancePre<T>, CacheOutcome), TaskExit> {
        let slot = {
            let mut memory = self.memory();
            match memory.touch(sha) {
                Some(slot) => slot,
                None => {
                    // Its size is known once it is ready: nothing has to make room for it yet.
                    let slot = Slot::default();
                    let now = memory.clock;
                    memory.entries.insert(sha.to_owned(), (slot.clone(), 0, now));
                    slot
                }
            }
        };
        if let Some((pre, _)) = slot.get() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            self.disk().touch(sha);
            return Ok((pre.clone(), CacheOutcome::Memory));
        }
        let result = slot.get_or_try_init(|| self.load_or_compile(linker, sha, source)).await;
        match result {
            Ok((pre, outcome)) => Ok((pre.clone(), *outcome)),
            Err(exit) => {
                // Not kept: the next launch tries again (a fetch may have failed).
                let mut memory = self.memory();
                if memory.entries.get(sha).is_some_and(|(s, _, _)| Arc::ptr_eq(s, &slot) && !s.initialized()) {
                    memory.remove(sha);
                }
                Err(exit)
            }
        }
    }

    /// Disk first, without bytes; on a miss get the bytes (fetching them if need be) and compile.
    async fn load_or_compile(
        self: &Arc<Self>,
        linker: &Arc<Linker<T>>,
        sha: &str,
        source: ModuleSource,
    ) -> Result<(InstancePre<T>, CacheOutcome), TaskExit> {
        let this = self.clone();
        let s = sha.to_owned();
        let (module, size, outcome) = match blocking(move || Ok(this.load(&s))).await? {
            Some((module, size)) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.disk().touch(sha);
                (module, size, CacheOutcome::Disk)
            }
            None => {
                let (bytes, outcome) = match source {
                    ModuleSource::Inline(bytes) => (bytes, CacheOutcome::Compiled),
                    ModuleSource::Store { artifacts, size } => {
                        (artifacts.get(sha, size).await.map_err(TaskExit::LaunchFailed)?, CacheOutcome::Fetched)
                    }
                };
                let (module, artifact) = self.compiler.compile(&self.engine, bytes).await?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                let (this, s) = (self.clone(), sha.to_owned());
                let size = artifact.len() as u64;
                blocking(move || {
                    if let Err(err) = this.store(&s, &artifact) {
                        warn!(sha = %s, %err, "could not write the compiled module to the cache");
                    }
                    Ok(())
                })
                .await?;
                (module, size, outcome)
            }
        };
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| TaskExit::Invalid(format!("module cannot be linked against WASI preview 1: {e:#}")))?;
        let mut memory = self.memory();
        if let Some(slot) = memory.entries.get(sha).map(|(slot, _, _)| slot.clone()) {
            let gone = memory.put(sha, slot, size.max(1));
            self.memory_evictions.fetch_add(gone.len() as u64, Ordering::Relaxed);
            if !gone.is_empty() {
                debug!(evicted = gone.len(), "modules dropped from memory to stay within the cache's bound");
            }
        }
        Ok((pre, outcome))
    }

    fn paths(&self, sha: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{sha}.cwasm")), self.dir.join(format!("{sha}.sum")))
    }

    /// The module and its artifact's size, from disk.
    fn load(&self, sha: &str) -> Option<(Module, u64)> {
        let (artifact, sum) = self.paths(sha);
        let expected = std::fs::read_to_string(&sum).ok()?;
        let bytes = std::fs::read(&artifact).ok()?;
        if sha256_hex(&bytes) != expected.trim() {
            warn!(path = %artifact.display(), "cached artifact does not match its recorded sum; recompiling");
            return None;
        }
        match crate::sys::deserialize_own_artifact(&self.engine, &bytes, &artifact) {
            Ok(module) => Some((module, bytes.len() as u64)),
            Err(err) => {
                warn!(%err, "cached artifact could not be loaded; recompiling");
                None
            }
        }
    }

    fn store(&self, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
        let (artifact, sum) = self.paths(sha);
        write_atomically(&artifact, bytes)?;
        write_atomically(&sum, sha256_hex(bytes).as_bytes())?;
        debug!(%sha, bytes = bytes.len(), "compiled module cached");
        let gone = self.disk().put(sha, (), bytes.len() as u64);
        self.delete(gone);
        Ok(())
    }

    /// Deletes evicted artifacts from disk.
    fn delete(&self, gone: Vec<(String, ())>) {
        for (sha, ()) in gone {
            let (artifact, sum) = self.paths(&sha);
            // The sum first: an artifact without one is never loaded.
            let _ = std::fs::remove_file(sum);
            let _ = std::fs::remove_file(artifact);
            self.disk_evictions.fetch_add(1, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_and_never_the_one_just_put() {
        let mut lru = Lru::new(100);
        assert!(lru.put("a", 1, 40).is_empty());
        assert!(lru.put("b", 2, 40).is_empty());
        assert_eq!(lru.touch("a"), Some(1)); // b is now the oldest
        let gone = lru.put("c", 3, 40);
        assert_eq!(gone, vec![("b".to_owned(), 2)]);
        assert_eq!(lru.bytes, 80);
        // Slots not ready yet (0 bytes) are never evicted; one entry over the budget stays alone.
        assert!(lru.put("pending", 9, 0).is_empty());
        let gone = lru.put("huge", 4, 500);
        assert_eq!(gone.len(), 2, "{gone:?}");
        assert_eq!(lru.touch("pending"), Some(9));
        assert_eq!(lru.touch("huge"), Some(4));
        assert_eq!(lru.bytes, 500);
        // Put again under the same key: its size is replaced, not added.
        assert!(lru.put("huge", 4, 50).is_empty());
        assert_eq!(lru.bytes, 50);
        lru.remove("huge");
        assert_eq!(lru.bytes, 0);
    }

    #[test]
    fn engine_specs_travel_to_the_compiler_child_intact() {
        use super::super::EngineSpec;
        for spec in [
            EngineSpec { fuel: false, max_memory_bytes: 4 << 30 },
            EngineSpec { fuel: true, max_memory_bytes: 1 << 20 },
        ] {
            assert_eq!(EngineSpec::from_arg(&spec.to_arg()), Some(spec));
        }
        assert_eq!(EngineSpec::from_arg("fuel=2,memory=1"), None);
        assert_eq!(EngineSpec::from_arg("memory=1"), None);
    }
}
