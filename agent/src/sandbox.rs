//! Task sandboxes: the host directory each task sees as its `/` (Wasm) or works in (native).
//!
//! A sandbox is made fresh by the agent for one task and never handed to another. A pool of reused
//! directories was a way to root: a native task owns its sandbox, so anything it leaves in one
//! that a later task gets (a link `x -> /etc` is enough) is followed when the agent, as root,
//! places that task's inputs. The directory that holds the sandboxes is the agent's alone (0700):
//! a task reaches its own sandbox as its working directory (or preopen), and cannot list or enter
//! the others by path. (Native tasks all run as one uid for now, so one can still reach a running
//! neighbour's through `/proc/PID/cwd`: per-task uids are what closes that.) When the task ends, a
//! sandbox it left empty is removed; one holding files is renamed to `<root>/<task_id>` and kept,
//! so what the task wrote can be inspected or collected.
//!
//! A `mkdir` and an `rmdir` cost ~0.2 ms here, as much as the rest of a trivial Wasm launch, so
//! neither is on a task's path: a few directories are made ahead (never used, under the private
//! root, so no task can have touched them), and a used one is removed after the task's end is
//! reported, when a new one is made ahead in its place.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of the directory holding the sandboxes, and of each sandbox as made.
const PRIVATE: u32 = 0o700;
/// New, never used sandboxes kept made ahead, at most.
const AHEAD: usize = 32;

#[derive(Debug)]
pub struct Sandboxes {
    root: PathBuf,
    next: AtomicU64,
    /// Made ahead by the agent and never handed out yet.
    ahead: Mutex<Vec<PathBuf>>,
}

impl Sandboxes {
    /// Sandboxes under `root` (made 0700). What an earlier executor left of its tasks' unnamed
    /// sandboxes is removed if empty, else renamed `orphan-<n>`: none is ever used again.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(PRIVATE))?;
        let mut next = 0;
        for entry in std::fs::read_dir(root)?.flatten() {
            let name = entry.file_name();
            // `run-<n>`, and `free-<n>` of the pooling versions.
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("run-").or_else(|| n.strip_prefix("free-")))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            next = next.max(n + 1);
            if std::fs::remove_dir(entry.path()).is_err() {
                let _ = std::fs::rename(entry.path(), root.join(format!("orphan-{n}")));
            }
        }
        Ok(Self { root: root.to_path_buf(), next: AtomicU64::new(next), ahead: Mutex::new(Vec::new()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new, empty directory for one task, made by the agent (mode 0700) and never handed out
    /// before.
    pub fn acquire(&self) -> std::io::Result<PathBuf> {
        if let Some(dir) = self.ahead.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(dir);
        }
        self.make()
    }

    fn make(&self) -> std::io::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(PRIVATE);
        loop {
            let dir = self.root.join(format!("run-{}", self.next.fetch_add(1, Ordering::Relaxed)));
            match builder.create(&dir) {
                Ok(()) => return Ok(dir),
                // Never take over a directory that is there already, whoever made it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends a task's sandbox: one holding files is kept as `<root>/<task_id>` (at once, so it is
    /// there when the task's end is reported); an empty one is for [`Sandboxes::remove`].
    pub fn end(&self, dir: PathBuf, task_id: &str) -> Ended {
        if is_empty(&dir) {
            return Ended::Empty(dir);
        }
        // Never onto something there already: a task named like a sandbox made ahead (`run-9`)
        // would otherwise replace that empty directory with its own tree, for a later task.
        let kept = self.root.join(task_id);
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &dir,
            rustix::fs::CWD,
            &kept,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ended::Kept(kept),
            Err(_) => Ended::Kept(dir),
        }
    }

    /// Removes an ended, empty sandbox and makes a new one ahead for a later task. Call it after
    /// the task's end is reported: it costs ~0.2 ms.
    pub fn remove(&self, dir: PathBuf) {
        if std::fs::remove_dir(&dir).is_err() {
            return; // something appeared in it after all: left for the next executor to move away
        }
        if self.ahead.lock().unwrap_or_else(|p| p.into_inner()).len() < AHEAD
            && let Ok(new) = self.make()
        {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            if ahead.len() < AHEAD {
                ahead.push(new);
            } else {
                drop(ahead);
                let _ = std::fs::remove_dir(new);
            }
        }
    }
}

/// What became of a task's sandbox when it ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The task left files: kept here.
    Kept(PathBuf),
    /// Nothing in it: to be removed.
    Empty(PathBuf),
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn every_task_gets_a_fresh_private_sandbox_and_used_ones_are_kept() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("sandboxes");
        let pool = Sandboxes::new(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        let a = pool.acquire().unwrap();
        assert!(a.is_dir());
        assert_eq!(mode(&a), 0o700);
        assert_eq!(pool.end(a.clone(), "t-1"), Ended::Empty(a.clone()));
        pool.remove(a.clone());
        assert!(!a.exists(), "an empty sandbox is removed, not pooled");
        assert_eq!(pool.ahead.lock().unwrap().len(), 1, "one made ahead in its place");
        let b = pool.acquire().unwrap();
        assert_ne!(a, b, "no directory is handed out twice");
        assert_eq!(mode(&b), 0o700);
        std::fs::write(b.join("out.txt"), "x").unwrap();
        let kept = root.join("t-2");
        assert_eq!(pool.end(b, "t-2"), Ended::Kept(kept.clone()));
        assert_eq!(std::fs::read_to_string(kept.join("out.txt")).unwrap(), "x");

        // A task named like a sandbox made ahead does not replace it with its files.
        let spare = pool.acquire().unwrap();
        pool.remove(spare);
        let ahead = pool.ahead.lock().unwrap().last().cloned().expect("one made ahead");
        let named = pool.acquire().unwrap();
        assert_eq!(named, ahead);
        let other = pool.acquire().unwrap();
        std::fs::write(other.join("planted"), "z").unwrap();
        let name = named.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(pool.end(other.clone(), &name), Ended::Kept(other), "kept under its own name");
        assert_eq!(std::fs::read_dir(&named).unwrap().count(), 0);

        // A directory that appeared under a name the agent is about to use is not taken over.
        let made_ahead = std::mem::take(&mut *pool.ahead.lock().unwrap());
        let next = root.join(format!("run-{}", pool.next.load(Ordering::Relaxed)));
        std::fs::create_dir(&next).unwrap();
        std::os::unix::fs::symlink("/etc", next.join("x")).unwrap();
        let c = pool.acquire().unwrap();
        assert_ne!(c, next);
        assert_eq!(std::fs::read_dir(&c).unwrap().count(), 0);

        // A new executor removes what is left empty (made ahead, or of tasks) and never reuses what
        // holds something.
        let d = pool.acquire().unwrap();
        std::fs::write(c.join("left-behind"), "y").unwrap();
        let again = Sandboxes::new(&root).unwrap();
        assert!(!d.exists() && made_ahead.iter().all(|m| !m.exists()), "empty leftovers are removed");
        assert!(!c.exists() && !next.exists(), "leftovers holding files are moved out of the way");
        let e = again.acquire().unwrap();
        assert_eq!(std::fs::read_dir(&e).unwrap().count(), 0);
        assert!(![&c, &d, &next].contains(&&e));
        assert!(root.join("t-2").exists(), "kept sandboxes stay");
    }
}
