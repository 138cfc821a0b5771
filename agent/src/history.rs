//! The ids of the tasks this agent launched, on disk: a launch of one of them is refused, so a
//! task never starts twice on an agent, whatever a leader (stale, or one that lost an update)
//! sends. The most recent [`History::limit`] ids are kept; the file is an append-only list of ids,
//! one per line, rewritten when it holds twice as many.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct History {
    path: PathBuf,
    file: File,
    ids: HashSet<String>,
    order: VecDeque<String>,
    limit: usize,
}

impl History {
    /// Opens (creating) the history in `path`, keeping the last `limit` ids.
    pub fn open(path: &Path, limit: usize) -> io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(err),
        };
        // A torn last line (a crash mid-write) is not a complete id: only lines ended by '\n' count.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let mut ids = HashSet::new();
        let mut order = VecDeque::new();
        for id in complete.lines().rev().filter(|l| !l.is_empty()) {
            if order.len() == limit {
                break;
            }
            if ids.insert(id.to_owned()) {
                order.push_front(id.to_owned());
            }
        }
        let file = Self::rewrite(path, &order)?;
        Ok(Self { path: path.to_owned(), file, ids, order, limit })
    }

    fn rewrite(path: &Path, order: &VecDeque<String>) -> io::Result<File> {
        let mut text = String::with_capacity(order.iter().map(|id| id.len() + 1).sum());
        for id in order {
            text.push_str(id);
            text.push('\n');
        }
        crate::work_dir::replace_file(path, text.as_bytes())?;
        OpenOptions::new().append(true).open(path)
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.ids.contains(task_id)
    }

    /// Records a launch (before the task may start).
    pub fn record(&mut self, task_id: &str) -> io::Result<()> {
        self.file.write_all(format!("{task_id}\n").as_bytes())?;
        if self.ids.insert(task_id.to_owned()) {
            self.order.push_back(task_id.to_owned());
        }
        if self.order.len() >= 2 * self.limit {
            while self.order.len() > self.limit {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
            self.file = Self::rewrite(&self.path, &self.order)?;
        }
        Ok(())
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_are_remembered_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launched");
        let mut h = History::open(&path, 10).unwrap();
        for id in ["t-1", "t-2", "t-2", "t-3"] {
            h.record(id).unwrap();
        }
        drop(h);
        let h = History::open(&path, 10).unwrap();
        assert!(["t-1", "t-2", "t-3"].iter().all(|id| h.contains(id)));
        assert!(!h.contains("t-4"));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn a_torn_last_line_is_not_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launched");
        std::fs::write(&path, "t-1\nt-2\nt-3").unwrap();
        let h = History::open(&path, 10).unwrap();
        assert!(h.contains("t-2") && !h.contains("t-3") && !h.contains("t"));
    }

    #[test]
    fn only_the_most_recent_are_kept_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launched");
        let mut h = History::open(&path, 100).unwrap();
        for i in 0..1_000 {
            h.record(&format!("t-{i}")).unwrap();
        }
        assert!(h.len() <= 200);
        assert!(h.contains("t-999") && !h.contains("t-0"));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 200, "{lines} lines on disk");
        let reopened = History::open(&path, 100).unwrap();
        assert_eq!(reopened.len(), 100);
        assert!(reopened.contains("t-999") && !reopened.contains("t-899"));
    }
}
