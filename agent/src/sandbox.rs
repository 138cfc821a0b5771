//! Task sandboxes: the host directory each task sees as its `/`.
//!
//! Creating a directory is the most expensive step of launching a trivial task (an inode
//! allocation, journalled), so directories are pooled: a task gets a free empty directory
//! (`<root>/free-<n>`, made fresh only when the pool is empty). When the task ends, a sandbox it
//! left empty goes back to the pool; one holding files is renamed to `<root>/<task_id>` and kept,
//! so what the task wrote can be inspected or collected.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Empty sandboxes kept for reuse, at most.
const MAX_FREE: usize = 4096;

#[derive(Debug)]
pub struct Sandboxes {
    root: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
}

impl Sandboxes {
    /// Sandboxes under `root`; leftover pooled directories of an earlier run are reused.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut free = Vec::new();
        let mut next = 0;
        for entry in std::fs::read_dir(root)?.flatten() {
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_prefix("free-")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            next = next.max(n + 1);
            if is_empty(&entry.path()) {
                free.push(entry.path());
            } else {
                // Not ours to reuse: it holds something. Keep it out of the way.
                let _ = std::fs::rename(entry.path(), root.join(format!("orphan-{n}")));
            }
        }
        Ok(Self { root: root.to_path_buf(), free: Mutex::new(free), next: AtomicU64::new(next) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An empty directory for a task.
    pub fn acquire(&self) -> std::io::Result<PathBuf> {
        if let Some(dir) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(dir);
        }
        let dir = self.root.join(format!("free-{}", self.next.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Returns a task's sandbox: pooled again if empty, else kept as `<root>/<task_id>`.
    /// Returns where the task's files are, if it left any.
    pub fn release(&self, dir: PathBuf, task_id: &str) -> Option<PathBuf> {
        if is_empty(&dir) {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < MAX_FREE {
                free.push(dir);
                return None;
            }
            drop(free);
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        let kept = self.root.join(task_id);
        match std::fs::rename(&dir, &kept) {
            Ok(()) => Some(kept),
            Err(_) => Some(dir),
        }
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sandboxes_are_reused_and_used_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let pool = Sandboxes::new(root.path()).unwrap();
        let a = pool.acquire().unwrap();
        assert!(a.is_dir());
        assert_eq!(pool.release(a.clone(), "t-1"), None);
        let b = pool.acquire().unwrap();
        assert_eq!(a, b, "an empty sandbox is reused");
        std::fs::write(b.join("out.txt"), "x").unwrap();
        let kept = pool.release(b, "t-2").expect("kept");
        assert_eq!(kept, root.path().join("t-2"));
        assert_eq!(std::fs::read_to_string(kept.join("out.txt")).unwrap(), "x");
        let c = pool.acquire().unwrap();
        assert!(is_empty(&c) && c != kept);

        // A restart finds the pooled directories again, and never hands out a non-empty one.
        std::fs::write(c.join("left-behind"), "y").unwrap();
        let d = pool.acquire().unwrap();
        pool.release(d.clone(), "t-4");
        let again = Sandboxes::new(root.path()).unwrap();
        let e = again.acquire().unwrap();
        assert_eq!(e, d);
        let f = again.acquire().unwrap();
        assert!(is_empty(&f) && f != c, "the non-empty one is not reused");
    }
}
