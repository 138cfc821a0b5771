//! The status update log: every status update is on the agent's disk before it is sent and stays
//! there until the coordinator acknowledges it, so an update outlives an agent restart (a task that
//! ended while its agent could not report it is delivered with its real exit status afterwards).
//!
//! One file per update under `work_dir/updates/`, named by a sequence number so that they load in
//! order: the encoded `TaskStatus` followed by its sha256, written to a temporary name and renamed.
//! A file whose digest does not match (torn write, damage) is reported and removed, never trusted.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use skiff_proto as pb;

const DIGEST: usize = 32;

/// What [`UpdateLog::open`] found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Updates not acknowledged before, in the order they were written.
    pub updates: Vec<pb::TaskStatus>,
    /// Files that could not be trusted (removed).
    pub corrupt: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct UpdateLog {
    dir: PathBuf,
    next: u64,
    /// update id -> its file.
    files: HashMap<String, PathBuf>,
}

fn encode(status: &pb::TaskStatus) -> Vec<u8> {
    let mut bytes = status.encode_to_vec();
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

fn decode(bytes: &[u8]) -> Option<pb::TaskStatus> {
    let body = bytes.len().checked_sub(DIGEST).map(|n| &bytes[..n])?;
    if Sha256::digest(body)[..] != bytes[body.len()..] {
        return None;
    }
    pb::TaskStatus::decode(body).ok()
}

impl UpdateLog {
    /// Opens (creating) the log in `dir` and loads what is in it.
    pub fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        let mut loaded = Loaded::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let seq = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".update"));
            match seq.and_then(|s| s.parse::<u64>().ok()) {
                Some(seq) => names.push((seq, path)),
                // Leftover temporary files of a write cut short.
                None => {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        names.sort();
        let mut log =
            UpdateLog { dir: dir.to_owned(), next: names.last().map_or(0, |(s, _)| s + 1), files: HashMap::new() };
        for (_, path) in names {
            match std::fs::read(&path).ok().as_deref().and_then(decode) {
                Some(status) => {
                    log.files.insert(status.update_id.clone(), path);
                    loaded.updates.push(status);
                }
                None => {
                    std::fs::remove_file(&path)?;
                    loaded.corrupt.push(path);
                }
            }
        }
        Ok((log, loaded))
    }

    /// Writes an update (before it is sent).
    pub fn append(&mut self, status: &pb::TaskStatus) -> io::Result<()> {
        let path = self.dir.join(format!("{:020}.update", self.next));
        let tmp = self.dir.join(format!("{:020}.tmp", self.next));
        self.next += 1;
        std::fs::write(&tmp, encode(status))?;
        std::fs::rename(&tmp, &path)?;
        self.files.insert(status.update_id.clone(), path);
        Ok(())
    }

    /// Forgets an acknowledged update.
    pub fn remove(&mut self, update_id: &str) -> io::Result<()> {
        match self.files.remove(update_id) {
            Some(path) => std::fs::remove_file(path),
            None => Ok(()),
        }
    }

    /// Updates on disk.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, update: &str, state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: task.into(),
            update_id: update.into(),
            state: state as i32,
            exit_code: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_in_order_and_acknowledged_ones_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert!(loaded.updates.is_empty());
        log.append(&status("t1", "u1", pb::TaskState::Running)).unwrap();
        log.append(&status("t1", "u2", pb::TaskState::Failed)).unwrap();
        log.append(&status("t2", "u3", pb::TaskState::Finished)).unwrap();
        log.remove("u1").unwrap();
        log.remove("unknown").unwrap();
        drop(log);
        let (log, loaded) = UpdateLog::open(dir.path()).unwrap();
        let ids: Vec<&str> = loaded.updates.iter().map(|s| s.update_id.as_str()).collect();
        assert_eq!(ids, ["u2", "u3"]);
        assert_eq!(loaded.updates[0].exit_code, Some(3));
        assert_eq!(log.len(), 2);
        assert!(loaded.corrupt.is_empty());
    }

    #[test]
    fn corrupt_and_truncated_files_are_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = UpdateLog::open(dir.path()).unwrap();
        for (i, u) in ["u1", "u2", "u3"].into_iter().enumerate() {
            log.append(&status(&format!("t{i}"), u, pb::TaskState::Finished)).unwrap();
        }
        drop(log);
        let file = |n: u64| dir.path().join(format!("{n:020}.update"));
        // A flipped byte, a cut-off file, and a temporary file of an interrupted write.
        let mut bytes = std::fs::read(file(0)).unwrap();
        bytes[2] ^= 0xff;
        std::fs::write(file(0), bytes).unwrap();
        let bytes = std::fs::read(file(1)).unwrap();
        std::fs::write(file(1), &bytes[..bytes.len() - 5]).unwrap();
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"half").unwrap();
        let (mut log, loaded) = UpdateLog::open(dir.path()).unwrap();
        let ids: Vec<&str> = loaded.updates.iter().map(|s| s.update_id.as_str()).collect();
        assert_eq!(ids, ["u3"]);
        assert_eq!(loaded.corrupt, vec![file(0), file(1)]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the good file is left");
        // New updates go after the old ones.
        log.append(&status("t9", "u9", pb::TaskState::Finished)).unwrap();
        assert!(file(3).exists());
    }
}
