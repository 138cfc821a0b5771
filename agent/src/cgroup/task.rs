//! One task's cgroup: created before the task starts, joined by the task's process before it
//! execs, limited, measured, frozen and killed as a whole, and removed when the task ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cgroup::Cgroup;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::{MaxValue, Resources};

use super::hierarchy::{Rooted, Version, controller_roots};
use super::{CgroupError, Result};

/// The v2 controllers a task's cgroup needs, as written to `cgroup.subtree_control`.
const V2_CONTROLLERS: &str = "+cpu +memory +pids";

/// The CFS period quotas are expressed in.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Limits of a task's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupLimits {
    /// Hard memory limit; swap is disabled for the task.
    pub memory_bytes: Option<u64>,
    /// CPU cores: quota = cpus × period, and a proportional weight.
    pub cpus: Option<f64>,
    /// Most processes and threads the task may have at once.
    pub pids_max: Option<u64>,
}

impl CgroupLimits {
    /// The cgroups-rs resources for these limits.
    fn resources(&self, version: Version) -> Resources {
        let mut r = Resources::default();
        if let Some(mem) = self.memory_bytes {
            let mem = i64::try_from(mem).unwrap_or(i64::MAX);
            r.memory.memory_hard_limit = Some(mem);
            // No swap for the task. v1's memory.memsw.limit_in_bytes counts memory + swap, v2's
            // memory.swap.max counts swap alone.
            r.memory.memory_swap_limit = Some(match version {
                Version::V1 => mem,
                Version::V2 => 0,
            });
        }
        if let Some(cpus) = self.cpus {
            r.cpu.quota = Some(cpu_quota_us(cpus));
            r.cpu.period = Some(CPU_PERIOD_US);
            r.cpu.shares = Some(cpu_shares(cpus));
        }
        if let Some(pids) = self.pids_max {
            r.pid.maximum_number_of_processes = Some(MaxValue::Value(i64::try_from(pids).unwrap_or(i64::MAX)));
        }
        r
    }
}

/// CFS quota for `cpus` cores (at least 1 ms per period, as the kernel requires).
pub fn cpu_quota_us(cpus: f64) -> i64 {
    ((cpus * CPU_PERIOD_US as f64).round() as i64).max(1000)
}

/// v1 cpu.shares for `cpus` cores (1024 per core; cgroups-rs converts to cpu.weight on v2).
pub fn cpu_shares(cpus: f64) -> u64 {
    ((cpus * 1024.0).round() as u64).clamp(2, 262_144)
}

/// What a task's cgroup has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub throttled_periods: u64,
    pub throttled: Duration,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub pids_current: u64,
    /// Processes the kernel's OOM killer killed in this cgroup.
    pub oom_kills: u64,
}

#[derive(Debug)]
pub struct TaskCgroup {
    cgroup: Cgroup,
    root: PathBuf,
    version: Version,
    path: String,
}

impl TaskCgroup {
    fn op(&self, action: &'static str) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError + '_ {
        move |e| CgroupError::Op { cgroup: self.path.clone(), action, reason: error_text(&e) }
    }

    pub(super) fn create(root: &Path, version: Version, path: &str) -> Result<Self> {
        let failed = |reason: String| CgroupError::Op { cgroup: path.to_owned(), action: "create", reason };
        let cgroup = Cgroup::new(Box::new(Rooted::new(root, version)), path).map_err(|e| failed(error_text(&e)))?;
        if version == Version::V2 {
            // cgroups-rs enables the controllers it finds at /sys/fs/cgroup, whatever the root;
            // enable ours, under our root, in the root and every ancestor of the task's cgroup.
            let mut dir = root.to_path_buf();
            let mut ancestors = vec![dir.clone()];
            let parts: Vec<&str> = path.split('/').collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                dir.push(part);
                ancestors.push(dir.clone());
            }
            for dir in ancestors {
                let file = dir.join("cgroup.subtree_control");
                std::fs::write(&file, V2_CONTROLLERS).map_err(|e| failed(format!("{}: {e}", file.display())))?;
            }
        }
        Ok(Self { cgroup, root: root.to_path_buf(), version, path: path.to_owned() })
    }

    pub(super) fn load(root: &Path, version: Version, path: &str) -> Self {
        let cgroup = Cgroup::load(Box::new(Rooted::new(root, version)), path);
        Self { cgroup, root: root.to_path_buf(), version, path: path.to_owned() }
    }

    /// Path relative to the hierarchy root(s), e.g. `skiff/a-1/t-2`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cgroup's directory in each hierarchy (one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        controller_roots(&self.root, self.version).into_iter().map(|r| r.join(&self.path)).collect()
    }

    /// The `cgroup.procs` files a process writes `0` to, to join this cgroup (all of them on v1).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn apply(&self, limits: &CgroupLimits) -> Result<()> {
        self.cgroup.apply(&limits.resources(self.version)).map_err(self.op("apply limits"))
    }

    /// Pids of the processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        self.cgroup.procs().into_iter().map(|p| p.pid as u32).collect()
    }

    /// Reads what the cgroup has used: only the few files needed, directly (the hot path of
    /// every native task's end; cgroups-rs's full stats read a dozen files per controller).
    pub fn stats(&self) -> CgroupStats {
        let dirs = self.dirs();
        let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let number = |dir: &Path, file: &str| read(dir, file).trim().parse::<u64>().unwrap_or(0);
        let mut s = CgroupStats::default();
        match self.version {
            Version::V1 => {
                let (cpu, cpuacct, memory, pids) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3]);
                // cpuacct.stat is in USER_HZ ticks (100 per second).
                let acct = read(cpuacct, "cpuacct.stat");
                s.cpu_user = Duration::from_millis(key_value(&acct, "user").unwrap_or(0) * 10);
                s.cpu_system = Duration::from_millis(key_value(&acct, "system").unwrap_or(0) * 10);
                let stat = read(cpu, "cpu.stat");
                s.throttled_periods = key_value(&stat, "nr_throttled").unwrap_or(0);
                s.throttled = Duration::from_nanos(key_value(&stat, "throttled_time").unwrap_or(0));
                s.memory_current = number(memory, "memory.usage_in_bytes");
                s.memory_peak = number(memory, "memory.max_usage_in_bytes");
                s.oom_kills = key_value(&read(memory, "memory.oom_control"), "oom_kill").unwrap_or(0);
                s.pids_current = number(pids, "pids.current");
            }
            Version::V2 => {
                let dir = &dirs[0];
                let stat = read(dir, "cpu.stat");
                let us = |key: &str| Duration::from_micros(key_value(&stat, key).unwrap_or(0));
                s.cpu_user = us("user_usec");
                s.cpu_system = us("system_usec");
                s.throttled = us("throttled_usec");
                s.throttled_periods = key_value(&stat, "nr_throttled").unwrap_or(0);
                s.memory_current = number(dir, "memory.current");
                s.memory_peak = number(dir, "memory.peak");
                s.oom_kills = key_value(&read(dir, "memory.events"), "oom_kill").unwrap_or(0);
                s.pids_current = number(dir, "pids.current");
            }
        }
        s
    }

    /// Kills every process in the cgroup: freeze (so none can fork away), SIGKILL each, thaw,
    /// then wait until the cgroup is empty.
    pub fn kill_all(&self) -> Result<()> {
        if self.procs().is_empty() {
            return Ok(());
        }
        let freezer = self.cgroup.controller_of::<FreezerController>();
        if let Some(f) = freezer {
            f.freeze().map_err(self.op("freeze"))?;
        }
        for pid in self.procs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(f) = freezer {
            f.thaw().map_err(self.op("thaw"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.procs();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Op {
                    cgroup: self.path.clone(),
                    action: "kill all processes",
                    reason: format!("{} still running after 5 s: {left:?}", left.len()),
                });
            }
            for pid in left {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the (empty) cgroup from every hierarchy.
    pub fn delete(&self) -> Result<()> {
        for dir in self.dirs() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CgroupError::Op {
                        cgroup: self.path.clone(),
                        action: "remove",
                        reason: format!("{}: {e}", dir.display()),
                    });
                }
            }
        }
        Ok(())
    }
}

fn error_text(e: &cgroups_rs::fs::error::Error) -> String {
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        text.push_str(&format!(": {source}"));
    }
    text
}

/// `value` of the line `key value` in a flat-keyed cgroup file.
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_and_shares() {
        let cases = [(0.2, 20_000, 205), (1.0, 100_000, 1024), (2.5, 250_000, 2560), (0.001, 1000, 2)];
        for (cpus, quota, shares) in cases {
            assert_eq!(cpu_quota_us(cpus), quota, "{cpus}");
            assert_eq!(cpu_shares(cpus), shares, "{cpus}");
        }
    }

    #[test]
    fn flat_keyed_files() {
        let stat = "nr_periods 10\nnr_throttled 4\nthrottled_time 12345\n";
        assert_eq!(key_value(stat, "nr_throttled"), Some(4));
        assert_eq!(key_value(stat, "throttled_time"), Some(12345));
        assert_eq!(key_value(stat, "nr"), None);
        assert_eq!(key_value("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "oom_kill"), Some(1));
    }
}
