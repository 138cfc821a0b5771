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
//! Each sandbox is a filesystem of the task's `disk` size ([`disk`]: a tmpfs), so a task that
//! writes past it gets `ENOSPC` and cannot fill the agent's disk. Kept sandboxes are bounded too:
//! the last [`KEPT`] stay, older ones are removed.
//!
//! A `mkdir` and a mount (or an unmount and an `rmdir`) cost ~0.3 ms here, as much as the rest of a
//! trivial Wasm launch, so neither is on a task's path: a few sandboxes are made ahead (never used,
//! under the private root, so no task can have touched them), and a used one is removed after the
//! task's end is reported, when a new one is made ahead in its place.
//!
//! Layout:
//! - [`disk`]: the size-limited filesystem of a sandbox, and DISK_LIMIT.

use std::collections::VecDeque;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

pub mod disk;

/// Mode of the directory holding the sandboxes, and of each sandbox as made.
const PRIVATE: u32 = 0o700;
/// New, never used sandboxes kept made ahead, at most.
const AHEAD: usize = 8;
/// Sandboxes tasks left files in that are kept, at most (the oldest go first).
pub const KEPT: usize = 32;

#[derive(Debug)]
pub struct Sandboxes {
    root: PathBuf,
    next: AtomicU64,
    /// Made ahead by the agent and never handed out yet.
    ahead: Mutex<Vec<PathBuf>>,
    /// Size of the sandboxes made ahead (`None`: plain directories, no disk limit).
    disk: Option<u64>,
    /// Kept sandboxes, oldest first.
    kept: Mutex<VecDeque<PathBuf>>,
}

impl Sandboxes {
    /// Sandboxes under `root` (made 0700), each a filesystem of `disk` bytes unless a task asks for
    /// another size (`None`: plain directories). What an earlier executor left of its tasks'
    /// unnamed sandboxes is removed if empty, else renamed `orphan-<n>`: none is ever used again.
    pub fn new(root: &Path, disk: Option<u64>) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(PRIVATE))?;
        let disk = match disk.map(|bytes| disk::private_root(root).map(|()| bytes)) {
            Some(Err(err)) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                warn!(%err, "sandboxes are plain directories: mounting needs CAP_SYS_ADMIN; disk is not limited");
                None
            }
            other => other.transpose()?,
        };
        let mut next = 0;
        let mut kept = VecDeque::new();
        for entry in std::fs::read_dir(root)?.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            // `run-<n>`, and `free-<n>` of the pooling versions.
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("run-").or_else(|| n.strip_prefix("free-")))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !name.to_string_lossy().starts_with("orphan-") {
                    kept.push_back(path);
                }
                continue;
            };
            next = next.max(n + 1);
            if disk::is_mount_point(&path).unwrap_or(false) {
                let _ = disk::unmount(&path);
            }
            if std::fs::remove_dir(&path).is_err() {
                let _ = std::fs::rename(&path, root.join(format!("orphan-{n}")));
            }
        }
        let sandboxes = Self {
            root: root.to_path_buf(),
            next: AtomicU64::new(next),
            ahead: Mutex::new(Vec::new()),
            disk,
            kept: Mutex::new(kept),
        };
        sandboxes.trim_kept();
        Ok(sandboxes)
    }

    /// Whether sandboxes are size-limited filesystems.
    pub fn limits_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// The size of the sandbox of a task asking for `disk` bytes (0: the default), if limited.
    pub fn size(&self, disk: u64) -> Option<u64> {
        self.disk.map(|default| if disk == 0 { default } else { disk })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new, empty directory for one task of `disk` bytes (0: the default), made by the agent
    /// (mode 0700) and never handed out before.
    pub fn acquire(&self, disk: u64) -> std::io::Result<PathBuf> {
        let ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let dir = match ahead {
            Some(dir) => dir,
            None => self.make()?,
        };
        if let Some(made) = self.disk
            && disk != 0
            && made != disk
            && let Err(err) = disk::resize(&dir, disk)
        {
            self.tidy(Ended::Empty(dir));
            return Err(err);
        }
        Ok(dir)
    }

    fn make(&self) -> std::io::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(PRIVATE);
        loop {
            let dir = self.root.join(format!("run-{}", self.next.fetch_add(1, Ordering::Relaxed)));
            match builder.create(&dir) {
                Ok(()) => {}
                // Never take over a directory that is there already, whoever made it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            if let Some(bytes) = self.disk
                && let Err(err) = disk::mount_tmpfs(&dir, bytes)
            {
                let _ = std::fs::remove_dir(&dir);
                return Err(err);
            }
            return Ok(dir);
        }
    }

    /// Ends a task's sandbox: one holding files is kept as `<root>/<task_id>` (at once, so it is
    /// there when the task's end is reported); then [`Sandboxes::tidy`], off the task's path.
    pub fn end(&self, dir: PathBuf, task_id: &str) -> Ended {
        if is_empty(&dir) {
            return Ended::Empty(dir);
        }
        // Never onto something there already: a task named like a sandbox made ahead (`run-9`)
        // would otherwise replace that empty directory with its own tree, for a later task.
        let kept = self.root.join(task_id);
        let moved = if self.disk.is_some() {
            // A mount cannot be renamed: moved onto a new directory of the task's name.
            std::fs::DirBuilder::new().mode(PRIVATE).create(&kept).is_ok_and(|()| {
                let moved = disk::move_mount(&dir, &kept).is_ok();
                let _ = std::fs::remove_dir(if moved { &dir } else { &kept });
                moved
            })
        } else {
            rustix::fs::renameat_with(rustix::fs::CWD, &dir, rustix::fs::CWD, &kept, rustix::fs::RenameFlags::NOREPLACE)
                .is_ok()
        };
        Ended::Kept(if moved { kept } else { dir })
    }

    /// After a task's end is reported (it costs ~0.3 ms): removes its sandbox if empty, and makes a
    /// new one ahead for a later task; or, if it was kept, removes the oldest kept past [`KEPT`].
    pub fn tidy(&self, ended: Ended) {
        let dir = match ended {
            Ended::Kept(dir) => {
                self.kept.lock().unwrap_or_else(|p| p.into_inner()).push_back(dir);
                return self.trim_kept();
            }
            Ended::Empty(dir) => dir,
        };
        if self.disk.is_some() {
            let _ = disk::unmount(&dir);
        }
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
                self.discard(&new);
            }
        }
    }

    fn trim_kept(&self) {
        loop {
            let oldest = {
                let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() <= KEPT {
                    return;
                }
                kept.pop_front()
            };
            if let Some(dir) = oldest {
                self.discard(&dir);
            }
        }
    }

    /// Removes a sandbox and what is in it.
    fn discard(&self, dir: &Path) {
        if disk::is_mount_point(dir).unwrap_or(false) {
            let _ = disk::unmount(dir);
        }
        // Does not follow links: removes them.
        if let Err(err) = std::fs::remove_dir_all(dir) {
            warn!(dir = %dir.display(), %err, "could not remove a sandbox");
        }
    }
}

impl Drop for Sandboxes {
    /// Unmounts every sandbox (kept ones too: their files are memory) and removes the directories.
    fn drop(&mut self) {
        if self.disk.is_none() {
            return;
        }
        let _ = disk::unmount(&self.root);
        let ahead = std::mem::take(&mut *self.ahead.lock().unwrap_or_else(|p| p.into_inner()));
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in ahead.iter().chain(&kept) {
            let _ = std::fs::remove_dir(dir);
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
        let pool = Sandboxes::new(&root, None).unwrap();
        assert_eq!(mode(&root), 0o700);
        let a = pool.acquire(0).unwrap();
        assert!(a.is_dir());
        assert_eq!(mode(&a), 0o700);
        assert_eq!(pool.end(a.clone(), "t-1"), Ended::Empty(a.clone()));
        pool.tidy(Ended::Empty(a.clone()));
        assert!(!a.exists(), "an empty sandbox is removed, not pooled");
        assert_eq!(pool.ahead.lock().unwrap().len(), 1, "one made ahead in its place");
        let b = pool.acquire(0).unwrap();
        assert_ne!(a, b, "no directory is handed out twice");
        assert_eq!(mode(&b), 0o700);
        std::fs::write(b.join("out.txt"), "x").unwrap();
        let kept = root.join("t-2");
        assert_eq!(pool.end(b, "t-2"), Ended::Kept(kept.clone()));
        assert_eq!(std::fs::read_to_string(kept.join("out.txt")).unwrap(), "x");

        // A task named like a sandbox made ahead does not replace it with its files.
        let spare = pool.acquire(0).unwrap();
        pool.tidy(Ended::Empty(spare));
        let ahead = pool.ahead.lock().unwrap().last().cloned().expect("one made ahead");
        let named = pool.acquire(0).unwrap();
        assert_eq!(named, ahead);
        let other = pool.acquire(0).unwrap();
        std::fs::write(other.join("planted"), "z").unwrap();
        let name = named.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(pool.end(other.clone(), &name), Ended::Kept(other), "kept under its own name");
        assert_eq!(std::fs::read_dir(&named).unwrap().count(), 0);

        // A directory that appeared under a name the agent is about to use is not taken over.
        let made_ahead = std::mem::take(&mut *pool.ahead.lock().unwrap());
        let next = root.join(format!("run-{}", pool.next.load(Ordering::Relaxed)));
        std::fs::create_dir(&next).unwrap();
        std::os::unix::fs::symlink("/etc", next.join("x")).unwrap();
        let c = pool.acquire(0).unwrap();
        assert_ne!(c, next);
        assert_eq!(std::fs::read_dir(&c).unwrap().count(), 0);

        // A new executor removes what is left empty (made ahead, or of tasks) and never reuses what
        // holds something.
        let d = pool.acquire(0).unwrap();
        std::fs::write(c.join("left-behind"), "y").unwrap();
        let again = Sandboxes::new(&root, None).unwrap();
        assert!(!d.exists() && made_ahead.iter().all(|m| !m.exists()), "empty leftovers are removed");
        assert!(!c.exists() && !next.exists(), "leftovers holding files are moved out of the way");
        let e = again.acquire(0).unwrap();
        assert_eq!(std::fs::read_dir(&e).unwrap().count(), 0);
        assert!(![&c, &d, &next].contains(&&e));
        assert!(root.join("t-2").exists(), "kept sandboxes stay");
    }

    #[test]
    fn sandboxes_are_filesystems_of_the_tasks_disk_size_and_kept_ones_are_bounded() {
        use std::io::Write;
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("sandboxes");
        let pool = Sandboxes::new(&root, Some(1 << 20)).unwrap();
        assert!(pool.limits_disk(), "tests run as root");
        assert!(disk::is_mount_point(&root).unwrap());

        // A write past the size fails inside the task with ENOSPC, and the sandbox counts as full.
        let small = pool.acquire(1 << 20).unwrap();
        assert!(disk::is_mount_point(&small).unwrap());
        assert_eq!(mode(&small), 0o700);
        let mut f = std::fs::File::create(small.join("big")).unwrap();
        let err = (0..4).try_for_each(|_| f.write_all(&[7u8; 512 << 10])).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
        drop(f);
        assert!(disk::is_full(&small));

        // Another size: resized; a fresh one has nothing of the last task's.
        let large = pool.acquire(8 << 20).unwrap();
        std::fs::write(large.join("big"), vec![1u8; 4 << 20]).unwrap();
        assert!(!disk::is_full(&large));

        // Kept: moved (still mounted, files intact) to the task's name; at most KEPT of them.
        let kept = pool.end(small, "t-full");
        assert_eq!(kept, Ended::Kept(root.join("t-full")));
        pool.tidy(kept);
        assert_eq!(std::fs::metadata(root.join("t-full/big")).unwrap().len(), 1 << 20);
        assert!(disk::is_mount_point(&root.join("t-full")).unwrap());
        for i in 0..KEPT {
            let dir = pool.acquire(1 << 20).unwrap();
            std::fs::write(dir.join("x"), "x").unwrap();
            let ended = pool.end(dir, &format!("t-{i}"));
            pool.tidy(ended);
        }
        assert!(!root.join("t-full").exists(), "the oldest kept sandbox went first");
        assert!(root.join("t-0/x").exists() && root.join(format!("t-{}/x", KEPT - 1)).exists());

        // An empty one is unmounted and removed.
        let empty = pool.acquire(1 << 20).unwrap();
        pool.tidy(pool.end(empty.clone(), "t-empty"));
        assert!(!empty.exists());

        // Dropped: nothing is left mounted.
        drop(pool);
        assert!(!disk::is_mount_point(&root).unwrap());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(root.to_str().unwrap()), "{mounts}");
    }
}
