//! Cgroups for native tasks, v1 and v2 behind one type.
//!
//! [`detect`] looks at a cgroupfs root (`/sys/fs/cgroup` on a host; a temp directory in tests) and
//! finds the version: v2 when the root is a unified hierarchy with the cpu and memory controllers,
//! v1 when it holds per-controller hierarchies (`cpu/`, `memory/`, ...). [`CgroupManager`] then
//! creates each task's cgroup under `skiff/<agent-id>/` and only there: it never touches a cgroup
//! it did not create, and on start-up removes what an earlier run of the same agent left behind.
//!
//! cgroups-rs does the reading and writing; its types stay inside this module.
//!
//! Layout: [`hierarchy`] (a cgroups-rs hierarchy rooted anywhere), [`task`] (one task's cgroup:
//! limits, joining, stats, kill, removal).

pub mod hierarchy;
pub mod task;

use std::path::{Path, PathBuf};

pub use self::hierarchy::Version;
pub use self::task::{CgroupLimits, CgroupStats, TaskCgroup};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup hierarchy under {0}: need cgroup v2 with the cpu and memory controllers, or cgroup v1 with cpu, cpuacct, memory, pids and freezer"
    )]
    Unsupported(PathBuf),
    #[error("cgroup {cgroup}: failed to {action}: {reason}")]
    Op { cgroup: String, action: &'static str, reason: String },
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// The version of the cgroup hierarchy under `root`, if Skiff can use it.
pub fn detect(root: &Path) -> Option<Version> {
    if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            return Some(Version::V2);
        }
    }
    let v1 = ["cpu", "cpuacct", "memory", "pids", "freezer"].iter().all(|c| root.join(c).is_dir());
    v1.then_some(Version::V1)
}

/// Creates and cleans up the cgroups of one agent's tasks.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    root: PathBuf,
    version: Version,
    /// `skiff/<agent-id>`, relative to each hierarchy.
    parent: String,
}

impl CgroupManager {
    /// Detects the hierarchy under `root` for the agent `agent_id`.
    pub fn new(root: &Path, agent_id: &str) -> Result<Self> {
        let version = detect(root).ok_or_else(|| CgroupError::Unsupported(root.to_path_buf()))?;
        Ok(Self { root: root.to_path_buf(), version, parent: format!("skiff/{agent_id}") })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directories of the agent's parent cgroup, one per hierarchy (one on v2).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        hierarchy::controller_roots(&self.root, self.version).into_iter().map(|r| r.join(&self.parent)).collect()
    }

    /// Creates the cgroup of a task, `skiff/<agent-id>/<task_id>`.
    pub fn create(&self, task_id: &str) -> Result<TaskCgroup> {
        TaskCgroup::create(&self.root, self.version, &format!("{}/{task_id}", self.parent))
    }

    /// Removes the cgroups an earlier run of this agent left under its parent (killing what is
    /// still in them); returns how many it removed. Nothing outside `skiff/<agent-id>/` is touched.
    pub fn remove_leftovers(&self) -> Result<usize> {
        let mut names = std::collections::BTreeSet::new();
        for dir in self.parent_dirs() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                names.extend(
                    entries.flatten().filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()),
                );
            }
        }
        for name in &names {
            let cg = TaskCgroup::load(&self.root, self.version, &format!("{}/{name}", self.parent));
            cg.kill_all()?;
            cg.delete()?;
        }
        Ok(names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_versions() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        assert_eq!(detect(v2.path()), Some(Version::V2));

        let v2_empty = tempfile::tempdir().unwrap();
        std::fs::write(v2_empty.path().join("cgroup.controllers"), "\n").unwrap();
        assert_eq!(detect(v2_empty.path()), None, "a v2 mount without cpu and memory is not usable");

        let v1 = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
            std::fs::create_dir(v1.path().join(c)).unwrap();
        }
        assert_eq!(detect(v1.path()), Some(Version::V1));
        std::fs::remove_dir(v1.path().join("freezer")).unwrap();
        assert_eq!(detect(v1.path()), None);

        let err = CgroupManager::new(v2_empty.path(), "a-1").unwrap_err();
        assert!(err.to_string().contains("no usable cgroup hierarchy"), "{err}");
    }
}

#[cfg(test)]
mod fake_v2 {
    //! cgroup v2 on a fake cgroupfs in a temp dir: the files Skiff writes, asserted.

    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n")
            .unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        root
    }

    /// The interface files the kernel creates in a new v2 cgroup, with their defaults.
    fn kernel_files(dir: &std::path::Path) {
        let files = [
            ("cgroup.procs", ""),
            ("cpu.max", "max 100000\n"),
            ("cpu.weight", "100\n"),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("pids.max", "max\n"),
        ];
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }

    #[test]
    fn limits_are_written_where_v2_wants_them() {
        let root = fake_root();
        let manager = CgroupManager::new(root.path(), "a-1").unwrap();
        assert_eq!(manager.version(), Version::V2);
        let cg = manager.create("t-1").unwrap();
        let dir = root.path().join("skiff/a-1/t-1");
        assert!(dir.is_dir());
        kernel_files(&dir);
        assert_eq!(cg.procs_files(), vec![dir.join("cgroup.procs")]);

        cg.apply(&CgroupLimits { memory_bytes: Some(64 << 20), cpus: Some(0.2), pids_max: Some(1024) }).unwrap();
        let read =
            |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")).trim().to_owned();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0", "no swap for the task");
        assert_eq!(read("cpu.max"), "20000 100000");
        assert_eq!(read("pids.max"), "1024");
        assert!(!read("cpu.weight").is_empty());
        // Controllers are enabled for the children of every ancestor Skiff created.
        for parent in ["skiff", "skiff/a-1"] {
            let control = std::fs::read_to_string(root.path().join(parent).join("cgroup.subtree_control")).unwrap();
            for c in ["cpu", "memory", "pids"] {
                assert!(control.contains(c), "{parent}: {control:?}");
            }
        }
    }

    #[test]
    fn stats_are_read_from_v2_files() {
        let root = fake_root();
        let manager = CgroupManager::new(root.path(), "a-1").unwrap();
        let cg = manager.create("t-2").unwrap();
        let dir = root.path().join("skiff/a-1/t-2");
        let write = |f: &str, s: &str| std::fs::write(dir.join(f), s).unwrap();
        write(
            "cpu.stat",
            "usage_usec 300000\nuser_usec 200000\nsystem_usec 100000\nnr_periods 30\nnr_throttled 7\nthrottled_usec 55000\n",
        );
        write("memory.current", "1048576\n");
        write("memory.peak", "67108864\n");
        write("memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n");
        write("pids.current", "3\n");
        let s = cg.stats();
        assert_eq!(s.cpu_user, Duration::from_millis(200));
        assert_eq!(s.cpu_system, Duration::from_millis(100));
        assert_eq!((s.throttled_periods, s.throttled), (7, Duration::from_millis(55)));
        assert_eq!((s.memory_current, s.memory_peak), (1 << 20, 64 << 20));
        assert_eq!((s.oom_kills, s.pids_current), (1, 3));
    }

    #[test]
    fn leftovers_of_this_agent_only_are_removed() {
        let root = fake_root();
        let mine = CgroupManager::new(root.path(), "a-1").unwrap();
        let other = CgroupManager::new(root.path(), "a-2").unwrap();
        mine.create("t-old").unwrap();
        other.create("t-theirs").unwrap();
        std::fs::create_dir_all(root.path().join("system.slice")).unwrap();
        // Fake cgroupfs directories hold regular files, which rmdir refuses: clear them as the
        // kernel would on a real cgroupfs.
        for dir in [root.path().join("skiff/a-1/t-old")] {
            for f in std::fs::read_dir(&dir).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        assert_eq!(mine.remove_leftovers().unwrap(), 1);
        assert!(!root.path().join("skiff/a-1/t-old").exists());
        assert!(root.path().join("skiff/a-2/t-theirs").is_dir(), "another agent's cgroup is untouched");
        assert!(root.path().join("system.slice").is_dir(), "cgroups Skiff did not create are untouched");
    }

    use std::time::Duration;
}
