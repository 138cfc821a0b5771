//! The agent's work directory: one agent at a time owns it (a lock), and the small files it keeps
//! there (its id, the highest leader epoch it accepted) are replaced whole, never torn.
//!
//! The lock is an exclusive `flock` on `work_dir/lock`, held for the agent process's life and
//! released by the kernel however it ends (a SIGKILL included). Its descriptor is close-on-exec,
//! so the executor process the agent starts does not hold it: an agent restarted while its
//! executor still runs takes the lock again. A second agent on the same directory would otherwise
//! attach to the same executor and the two would take its connection from each other.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A work directory this process holds the lock of (until the value is dropped).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _lock: File,
}

/// Creates the work directory `path` if need be and makes it the agent's alone (0700): no task may
/// list it, read what is kept there or enter a sandbox but its own by path.
pub fn create_private(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io("create the work directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("make private (0700) the work directory", path))
}

impl WorkDir {
    /// Creates `path` if need be and takes its lock; fails if another process holds it.
    pub fn lock(path: &Path) -> Result<Self> {
        create_private(path)?;
        let lock_path = path.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::WorkDirInUse { path: path.to_owned(), holder: holder.trim().parse().ok() });
            }
            Err(TryLockError::Error(err)) => return Err(Error::io("lock", &lock_path)(err)),
        }
        // The holder's pid, for the error a second agent gets (the lock, not this number, is what counts).
        let write_pid = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(std::process::id().to_string().as_bytes())
        };
        write_pid(&mut file).map_err(Error::io("write", &lock_path))?;
        Ok(Self { path: path.to_owned(), _lock: file })
    }

    /// The agent id kept here, created on first start.
    pub fn agent_id(&self) -> Result<String> {
        match self.kept_agent_id()? {
            Some(id) => Ok(id),
            None => self.keep_agent_id(&format!("a-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])),
        }
    }

    /// The id `name` (from the agent's certificate): kept here on first start; a work directory
    /// that belongs to another agent is refused.
    pub fn named_agent_id(&self, name: &str) -> Result<String> {
        match self.kept_agent_id()? {
            Some(id) if id == name => Ok(id),
            Some(kept) => Err(Error::WrongAgent { path: self.path.join("agent-id"), kept, named: name.to_owned() }),
            None => self.keep_agent_id(name),
        }
    }

    /// The id written here before, if any (an empty file is left only by hand: the id is
    /// replaced whole, so it counts as never written).
    fn kept_agent_id(&self) -> Result<Option<String>> {
        let path = self.path.join("agent-id");
        match std::fs::read_to_string(&path) {
            Ok(id) => Ok(Some(id.trim().to_owned()).filter(|id| !id.is_empty())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io("read", &path)(err)),
        }
    }

    fn keep_agent_id(&self, id: &str) -> Result<String> {
        let path = self.path.join("agent-id");
        replace_file(&path, id.as_bytes()).map_err(Error::io("write", &path))?;
        Ok(id.to_owned())
    }

    /// The highest leader epoch this agent has accepted (0 on first start).
    pub fn highest_epoch(&self) -> Result<u64> {
        let path = self.path.join("highest-epoch");
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| Error::Corrupt { path, what: "a leader epoch" }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(Error::io("read", &path)(err)),
        }
    }

    pub fn store_highest_epoch(&self, epoch: u64) -> Result<()> {
        let path = self.path.join("highest-epoch");
        replace_file(&path, epoch.to_string().as_bytes()).map_err(Error::io("write", &path))
    }
}

/// Replaces `path` with `bytes` whole: written to `path.tmp` and synced, renamed over it, and the
/// directory synced, so a crash or a power loss leaves the old content or the new, never part of
/// either. (For small files written rarely: an epoch, a pid, a rewritten history.)
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkDir::lock(dir.path()).unwrap();
        match WorkDir::lock(dir.path()) {
            Err(Error::WorkDirInUse { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        WorkDir::lock(dir.path()).expect("the lock is free once its holder is gone");
    }

    #[test]
    fn id_and_epoch_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (id, epoch) = {
            let work = WorkDir::lock(dir.path()).unwrap();
            assert_eq!(work.highest_epoch().unwrap(), 0);
            work.store_highest_epoch(7).unwrap();
            (work.agent_id().unwrap(), 7)
        };
        let work = WorkDir::lock(dir.path()).unwrap();
        assert_eq!(work.agent_id().unwrap(), id);
        assert_eq!(work.highest_epoch().unwrap(), epoch);
    }

    #[test]
    fn a_damaged_epoch_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::lock(dir.path()).unwrap();
        std::fs::write(dir.path().join("highest-epoch"), "7x").unwrap();
        let err = work.highest_epoch().unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("highest-epoch"), "{err}");
    }
}
