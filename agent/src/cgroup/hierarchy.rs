//! A cgroups-rs [`Hierarchy`] rooted at any directory, so the same code drives `/sys/fs/cgroup`
//! and a fake cgroupfs in a test's temp dir.

use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Hierarchy, Subsystem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers Skiff uses, by v1 directory name.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// The roots of the hierarchies: one per controller on v1, the unified root on v2.
pub fn controller_roots(root: &Path, version: Version) -> Vec<PathBuf> {
    match version {
        Version::V1 => V1_CONTROLLERS.iter().map(|c| root.join(c)).collect(),
        Version::V2 => vec![root.to_path_buf()],
    }
}

#[derive(Debug, Clone)]
pub struct Rooted {
    root: PathBuf,
    version: Version,
}

impl Rooted {
    pub fn new(root: &Path, version: Version) -> Self {
        Self { root: root.to_path_buf(), version }
    }
}

impl Hierarchy for Rooted {
    fn subsystems(&self) -> Vec<Subsystem> {
        match self.version {
            Version::V1 => {
                let at = |c: &str| self.root.join(c);
                vec![
                    Subsystem::Cpu(CpuController::new(at("cpu"), PathBuf::from("/"), false)),
                    Subsystem::CpuAcct(CpuAcctController::new(at("cpuacct"), PathBuf::from("/"))),
                    Subsystem::Mem(MemController::new(at("memory"), PathBuf::from("/"), false)),
                    Subsystem::Pid(PidController::new(at("pids"), PathBuf::from("/"), false)),
                    Subsystem::Freezer(FreezerController::new(at("freezer"), PathBuf::from("/"), false)),
                ]
            }
            Version::V2 => {
                let root = || self.root.clone();
                let none = PathBuf::new;
                vec![
                    Subsystem::Cpu(CpuController::new(root(), none(), true)),
                    Subsystem::Mem(MemController::new(root(), none(), true)),
                    Subsystem::Pid(PidController::new(root(), none(), true)),
                    // The v2 freezer is core functionality (cgroup.freeze), not a controller.
                    Subsystem::Freezer(FreezerController::new(root(), none(), true)),
                ]
            }
        }
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        self.version == Version::V2
    }
}
