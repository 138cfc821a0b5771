//! What a native task sees of the host: its sandbox as `/sandbox` (the working directory), a
//! private `/tmp`, the host's `/usr`, `/bin`, `/sbin`, `/lib*`, `/etc` and `/opt` read-only, a few
//! device nodes, and a `/proc` of its own pid namespace. Nothing of the agent's work directory or
//! of other tasks; and the directories an operator shares with every task (`--task-host-dir`),
//! read-write at their own paths. Planned here (safe code: the host's part once, each task's
//! sandbox at its launch); carried out by [`crate::sys::jail`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys::jail::{Frame, Jail, Step};

/// Where the sandbox appears in the task's view.
pub const SANDBOX: &str = "/sandbox";

/// Host directories shown read-only (or re-created as the same link, as `/bin -> usr/bin`).
const HOST_DIRS: [&str; 9] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Device nodes made as the host's (same numbers and modes), in a `/dev` of their own.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The host's part of every task's view, planned once.
#[derive(Debug, Clone)]
pub struct View {
    frame: Arc<Frame>,
    /// `<root>/sandbox`, where each task's sandbox is bound.
    sandbox_at: CString,
}

fn c(path: impl AsRef<Path>) -> Result<CString, String> {
    let path = path.as_ref();
    CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL byte", path.display()))
}

impl View {
    /// Task roots are mounted on `root` (created if missing); each task's `/tmp` holds up to
    /// `tmp_bytes`; `shared` are the operator's host directories every task sees read-write
    /// (absolute paths of existing directories).
    pub fn new(root: PathBuf, tmp_bytes: u64, shared: &[PathBuf]) -> Result<Self, String> {
        for dir in shared {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(format!("--task-host-dir {}: not an absolute path of a directory", dir.display()));
            }
        }
        crate::work_dir::create_private(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let at = |p: &str| c(root.join(p.trim_start_matches('/')));
        let mut steps = Vec::new();
        for dir in HOST_DIRS {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(dir).map_err(|e| format!("cannot read the link {dir}: {e}"))?;
                    steps.push(Step::Link { target: c(target)?, path: at(dir)? });
                }
                Ok(m) if m.is_dir() => {
                    steps.push(Step::Dir { path: at(dir)?, mode: 0o755 });
                    steps.push(Step::BindRo { from: c(dir)?, path: at(dir)? });
                }
                _ => {}
            }
        }
        steps.push(Step::Dir { path: at("/tmp")?, mode: 0o1777 });
        steps.push(Step::Tmpfs { path: at("/tmp")?, options: c(format!("mode=1777,size={tmp_bytes}"))? });
        // Made, not bound: one mount for all (a bind each cost as much as the rest of /dev).
        steps.push(Step::Dir { path: at("/dev")?, mode: 0o755 });
        steps.push(Step::DevFs { path: at("/dev")? });
        for dev in DEVICES {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let host = format!("/dev/{dev}");
            let meta = std::fs::metadata(&host).map_err(|e| format!("cannot stat {host}: {e}"))?;
            if !meta.file_type().is_char_device() {
                return Err(format!("{host} is not a character device"));
            }
            steps.push(Step::Node { path: at(&host)?, mode: meta.mode() & 0o777, dev: meta.rdev() });
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            steps.push(Step::Link { target: c(target)?, path: at(&format!("/dev/{link}"))? });
        }
        steps.push(Step::Seal { path: at("/dev")? });
        for dir in shared {
            let inside = root.join(dir.strip_prefix("/").unwrap_or(dir));
            for ancestor in inside.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if ancestor.starts_with(&root) && ancestor != root {
                    steps.push(Step::DirIfMissing { path: c(ancestor)? });
                }
            }
            steps.push(Step::BindRw { from: c(dir)?, path: c(&inside)? });
        }
        steps.push(Step::Dir { path: at("/proc")?, mode: 0o555 });
        steps.push(Step::Dir { path: at("/.old-root")?, mode: 0o700 });
        steps.push(Step::Dir { path: at(SANDBOX)?, mode: 0o755 });
        let frame = Frame {
            root: c(&root)?,
            root_options: c("mode=0755,size=1m")?,
            steps,
            proc: at("/proc")?,
            old_root: at("/.old-root")?,
            old_root_inside: c("/.old-root")?,
            workdir: c(SANDBOX)?,
        };
        Ok(Self { frame: Arc::new(frame), sandbox_at: at(SANDBOX)? })
    }

    /// The plan for one task: `sandbox` (a host directory) as its working directory, its own
    /// network unless `host_network`.
    pub fn jail(&self, sandbox: &Path, hostname: &str, host_network: bool) -> Result<Jail, String> {
        // A host name is at most 64 bytes.
        let hostname: String = hostname.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
        Ok(Jail {
            frame: self.frame.clone(),
            steps: vec![Step::BindRw { from: c(sandbox)?, path: self.sandbox_at.clone() }],
            hostname: c(if hostname.is_empty() { "skiff-task".into() } else { hostname })?,
            own_network: !host_network,
            network: None,
        })
    }
}
