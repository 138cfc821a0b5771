//! Disk limits: each sandbox a tmpfs of the task's `disk` bytes.
//!
//! A tmpfs's size is enforced by the kernel for every writer, root included: a write past it fails
//! with `ENOSPC` inside the task, whether the writer is a native task or the executor writing for a
//! Wasm guest. Project quotas were the other way (Docker's and Kubernetes' on XFS), but they exempt
//! `CAP_SYS_RESOURCE` (the executor, which writes for Wasm guests) and need a kernel built with
//! `CONFIG_QUOTA`, which the kernel Skiff is tested on is not. The price: a sandbox's files are
//! memory (swappable) while they exist, and a native task's writes also count toward its memory
//! limit (as in Kubernetes' memory-backed `emptyDir`). Mounting one costs ~70 µs, so sandboxes are
//! mounted ahead at the default size and only resized (a remount, ~30 µs) for a task asking for
//! another.
//!
//! Sandboxes are mounted below a private mount (the sandboxes' directory bound onto itself), so
//! none propagates anywhere and a kept one can be moved to its task's name.

use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::task::TaskExit;

/// A task's disk when it asks for none.
pub const DEFAULT_BYTES: u64 = 256 << 20;
/// Room left in a sandbox below which it counts as full (a failed write leaves less than a block).
const FULL_BELOW: u64 = 64 << 10;

const NONE: Option<&str> = None;

/// Makes `root` a private mount of its own (a bind mount onto itself, unless it is a mount point
/// already).
pub fn private_root(root: &Path) -> io::Result<()> {
    if !is_mount_point(root)? {
        mount(Some(root), root, NONE, MsFlags::MS_BIND, NONE)?;
    }
    mount(NONE, root, NONE, MsFlags::MS_PRIVATE, NONE)?;
    Ok(())
}

/// Mounts an empty tmpfs of `bytes` (root's, 0700, no set-uid, no devices) on `dir`.
pub fn mount_tmpfs(dir: &Path, bytes: u64) -> io::Result<()> {
    let options = format!("size={},mode=0700", bytes.max(1));
    mount(Some("skiff-sandbox"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))?;
    Ok(())
}

/// Changes the size of the tmpfs on `dir`.
pub fn resize(dir: &Path, bytes: u64) -> io::Result<()> {
    let options = format!("size={}", bytes.max(1));
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(NONE, dir, NONE, flags, Some(options.as_str()))?;
    Ok(())
}

/// Unmounts what is mounted on `dir` (and below it), at once even if something still uses it.
pub fn unmount(dir: &Path) -> io::Result<()> {
    umount2(dir, MntFlags::MNT_DETACH)?;
    Ok(())
}

/// Moves the mount on `from` to `to` (an empty directory).
pub fn move_mount(from: &Path, to: &Path) -> io::Result<()> {
    mount(Some(from), to, NONE, MsFlags::MS_MOVE, NONE)?;
    Ok(())
}

/// Whether something is mounted on `path` (it is the root of a mount).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW;
    let st = statx(rustix::fs::CWD, path, flags, StatxFlags::empty())?;
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    // Kernels before 5.8: a mount root is on another device than its parent, or is its own parent.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::symlink_metadata(path)?, std::fs::symlink_metadata(path.join(".."))?);
    Ok(a.dev() != b.dev() || a.ino() == b.ino())
}

/// Whether the filesystem holding `dir` has (nearly) no room left.
pub fn is_full(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir).is_ok_and(|s| s.blocks_available() * s.fragment_size() < FULL_BELOW)
}

/// How a task that ended as `exit` is reported, its sandbox of `bytes` being `full` (asked only of
/// a failure): a failure of a task that filled its sandbox is named DISK_LIMIT (a write failed
/// with ENOSPC).
pub fn verdict(exit: TaskExit, bytes: u64, full: impl FnOnce() -> bool) -> TaskExit {
    let how = match &exit {
        TaskExit::Exited(code) if *code != 0 => format!("exited with code {code}"),
        TaskExit::Trapped(trap) => format!("trap: {trap}"),
        TaskExit::Signaled(sig) => format!("killed by signal {sig}"),
        _ => return exit,
    };
    if !full() {
        return exit;
    }
    TaskExit::DiskLimit(format!("filled its disk ({}): a write failed with ENOSPC, then it {how}", mib(bytes)))
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) { format!("{} MiB", bytes >> 20) } else { format!("{bytes} bytes") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_tasks_that_filled_their_sandbox_are_disk_limits() {
        let full = verdict(TaskExit::Exited(1), 32 << 20, || true);
        assert!(matches!(&full, TaskExit::DiskLimit(m) if m.contains("32 MiB") && m.contains("exited with code 1")));
        assert!(matches!(verdict(TaskExit::Trapped("x".into()), 1 << 20, || true), TaskExit::DiskLimit(_)));
        assert_eq!(verdict(TaskExit::Exited(1), 1 << 20, || false), TaskExit::Exited(1));
        assert_eq!(verdict(TaskExit::Exited(0), 1 << 20, || true), TaskExit::Exited(0), "coped with it");
        assert_eq!(verdict(TaskExit::TimedOut, 1 << 20, || true), TaskExit::TimedOut);
        assert_eq!(verdict(TaskExit::Killed, 1 << 20, || true), TaskExit::Killed);
    }
}
