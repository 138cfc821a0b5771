//! Task output kept on the agent's disk, served again to a coordinator that asks (as Nomad's
//! clients keep allocation logs): what makes `skiff logs` and watchers see every byte of a task
//! once after a leader failover (the new leader had none of it) or an agent crash (chunks it had
//! taken from the executor and not sent yet).
//!
//! Each chunk is written at its offset in `<dir>/<task id>.out` or `.err` before it goes on (and,
//! with an executor process, before the executor is acknowledged), so a chunk seen twice is
//! written twice to the same place. What a task may print is bounded by the agent
//! (`max_output_bytes`), so each file is too; the output of at most `keep` tasks is kept, the
//! oldest removed first. A `<task id>.out.truncated` marker says the task printed more.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use skiff_proto as pb;
use tracing::warn;

/// Past any output bound an agent sets: a chunk claiming to lie beyond is not written.
const MAX_STREAM_BYTES: u64 = 1 << 30;

/// Bytes per chunk when output is sent again.
const REPLAY_CHUNK: usize = 64 << 10;

/// The output of recent tasks, on disk.
#[derive(Debug)]
pub struct TaskLogs {
    dir: PathBuf,
    keep: usize,
    /// Task ids with output here, oldest first.
    order: VecDeque<String>,
    /// Bytes of each stream (the end of the furthest chunk written).
    sizes: HashMap<String, [u64; 2]>,
}

fn index(stream: i32) -> usize {
    usize::from(stream == pb::OutputStream::Stderr as i32)
}

fn suffix(i: usize) -> &'static str {
    if i == 0 { "out" } else { "err" }
}

impl TaskLogs {
    /// Opens (creating) `dir`, keeping the output of at most `keep` tasks.
    pub fn open(dir: &Path, keep: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(std::time::SystemTime, String)> = Vec::new();
        let mut sizes: HashMap<String, [u64; 2]> = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((task_id, ext)) = name.rsplit_once('.') else { continue };
            let i = match ext {
                "out" => 0,
                "err" => 1,
                _ => continue,
            };
            let meta = entry.metadata()?;
            if !sizes.contains_key(task_id) {
                found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), task_id.to_owned()));
            }
            sizes.entry(task_id.to_owned()).or_default()[i] = meta.len();
        }
        found.sort();
        let order = found.into_iter().map(|(_, id)| id).collect();
        let mut logs = TaskLogs { dir: dir.to_owned(), keep: keep.max(1), order, sizes };
        logs.prune();
        Ok(logs)
    }

    fn path(&self, task_id: &str, i: usize) -> PathBuf {
        self.dir.join(format!("{task_id}.{}", suffix(i)))
    }

    fn marker(&self, task_id: &str, i: usize) -> PathBuf {
        self.dir.join(format!("{task_id}.{}.truncated", suffix(i)))
    }

    /// Writes a chunk at its offset (a chunk without one goes at the end).
    pub fn append(&mut self, chunk: &pb::TaskOutput) -> io::Result<()> {
        // Task ids are checked before a task is launched; output of any other is not kept.
        if skiff_core::id::check_task_id(&chunk.task_id).is_err() {
            return Ok(());
        }
        let i = index(chunk.stream);
        if !self.sizes.contains_key(&chunk.task_id) {
            self.order.push_back(chunk.task_id.clone());
            self.sizes.insert(chunk.task_id.clone(), [0, 0]);
            self.prune();
        }
        let size = self.sizes.get(&chunk.task_id).map_or(0, |s| s[i]);
        let offset = chunk.offset.unwrap_or(size);
        if offset.saturating_add(chunk.data.len() as u64) > MAX_STREAM_BYTES {
            return Ok(());
        }
        if !chunk.data.is_empty() {
            let file =
                OpenOptions::new().create(true).write(true).truncate(false).open(self.path(&chunk.task_id, i))?;
            file.write_all_at(&chunk.data, offset)?;
        }
        if chunk.truncated {
            File::create(self.marker(&chunk.task_id, i))?;
        }
        if let Some(sizes) = self.sizes.get_mut(&chunk.task_id) {
            sizes[i] = sizes[i].max(offset + chunk.data.len() as u64);
        }
        Ok(())
    }

    /// Every task with output here, oldest first.
    pub fn task_ids(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// A task's output as chunks at their offsets, stdout first.
    pub fn replay(&self, task_id: &str) -> io::Result<Vec<pb::TaskOutput>> {
        let mut chunks = Vec::new();
        for i in 0..2 {
            let stream = if i == 0 { pb::OutputStream::Stdout } else { pb::OutputStream::Stderr };
            let data = match std::fs::read(self.path(task_id, i)) {
                Ok(data) => data,
                Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(err) => return Err(err),
            };
            let truncated = self.marker(task_id, i).exists();
            let mut offset = 0;
            for piece in data.chunks(REPLAY_CHUNK) {
                chunks.push(pb::TaskOutput {
                    task_id: task_id.to_owned(),
                    stream: stream as i32,
                    data: piece.to_vec(),
                    truncated: false,
                    offset: Some(offset),
                });
                offset += piece.len() as u64;
            }
            if truncated {
                chunks.push(pb::TaskOutput {
                    task_id: task_id.to_owned(),
                    stream: stream as i32,
                    data: Vec::new(),
                    truncated: true,
                    offset: Some(offset),
                });
            }
        }
        Ok(chunks)
    }

    /// Removes the output of the oldest tasks past `keep`.
    fn prune(&mut self) {
        while self.order.len() > self.keep {
            let Some(old) = self.order.pop_front() else { break };
            self.sizes.remove(&old);
            for i in 0..2 {
                for path in [self.path(&old, i), self.marker(&old, i)] {
                    if let Err(err) = std::fs::remove_file(&path)
                        && err.kind() != io::ErrorKind::NotFound
                    {
                        warn!(path = %path.display(), %err, "cannot remove old task output");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(task: &str, stream: pb::OutputStream, offset: u64, data: &[u8]) -> pb::TaskOutput {
        pb::TaskOutput {
            task_id: task.into(),
            stream: stream as i32,
            data: data.to_vec(),
            truncated: false,
            offset: Some(offset),
        }
    }

    #[test]
    fn chunks_land_at_their_offsets_once_and_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = TaskLogs::open(dir.path(), 8).unwrap();
        logs.append(&chunk("t-1", pb::OutputStream::Stdout, 0, b"hello ")).unwrap();
        logs.append(&chunk("t-1", pb::OutputStream::Stdout, 6, b"world\n")).unwrap();
        // Sent again (an executor replaying what its agent had not acknowledged): same place.
        logs.append(&chunk("t-1", pb::OutputStream::Stdout, 0, b"hello ")).unwrap();
        logs.append(&chunk("t-1", pb::OutputStream::Stderr, 0, b"oops")).unwrap();
        let mut done = chunk("t-1", pb::OutputStream::Stderr, 4, b"");
        done.truncated = true;
        logs.append(&done).unwrap();

        // A new agent process finds it all.
        let logs = TaskLogs::open(dir.path(), 8).unwrap();
        let replay = logs.replay("t-1").unwrap();
        let out: Vec<u8> = replay
            .iter()
            .filter(|c| c.stream == pb::OutputStream::Stdout as i32)
            .flat_map(|c| c.data.clone())
            .collect();
        assert_eq!(out, b"hello world\n");
        let err = replay.iter().filter(|c| c.stream == pb::OutputStream::Stderr as i32).collect::<Vec<_>>();
        assert_eq!(err[0].data, b"oops");
        assert!(err.last().unwrap().truncated && err.last().unwrap().offset == Some(4));
        assert_eq!(logs.task_ids().collect::<Vec<_>>(), ["t-1"]);
    }

    #[test]
    fn only_the_most_recent_tasks_are_kept_and_bad_ids_never_name_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = TaskLogs::open(dir.path(), 2).unwrap();
        for task in ["t-a", "t-b", "t-c"] {
            logs.append(&chunk(task, pb::OutputStream::Stdout, 0, b"x")).unwrap();
        }
        assert_eq!(logs.task_ids().collect::<Vec<_>>(), ["t-b", "t-c"]);
        assert!(!dir.path().join("t-a.out").exists());
        logs.append(&chunk("../escape", pb::OutputStream::Stdout, 0, b"x")).unwrap();
        assert!(!dir.path().join("../escape.out").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
