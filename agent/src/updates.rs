//! The status update log: every status update is on the agent's disk before it is sent and stays
//! there until the coordinator acknowledges it, so an update outlives an agent restart (a task that
//! ended while its agent could not report it is delivered with its real exit status afterwards).
//!
//! The log is append-only segment files under `work_dir/updates/` (`<seq>.log`), each a run of
//! records `[length: u32 LE][kind: u8][body][sha256 of kind and body]`: an update (the encoded
//! `TaskStatus`) or an acknowledgement (the update id). When the active segment outgrows
//! [`SEGMENT_BYTES`], the updates still unacknowledged are written to a new segment (to a temporary
//! name, then renamed) and the old ones are deleted, so the files stay small and few. (One file
//! per update, created and deleted, cost the agent more CPU than running a trivial task: ext4's
//! inode allocation scans its recently deleted inodes.) A record whose digest does not match, or
//! that is cut short, ends what is read of its segment: it and anything after it are reported and
//! never trusted.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use skiff_proto as pb;

const DIGEST: usize = 32;
const UPDATE: u8 = 1;
const ACK: u8 = 2;
/// A segment this large (or twice what its last compaction kept, if more) is compacted into a new
/// one holding only what is unacknowledged.
pub const SEGMENT_BYTES: u64 = 1 << 20;
/// Largest record accepted when reading (a length beyond it is damage).
const MAX_RECORD: usize = 16 << 20;

/// What [`UpdateLog::open`] found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Updates not acknowledged before, in the order they were written.
    pub updates: Vec<pb::TaskStatus>,
    /// Damage found, one line each ("PATH at byte N: why"); what follows it in its segment is dropped.
    pub corrupt: Vec<String>,
}

#[derive(Debug)]
pub struct UpdateLog {
    dir: PathBuf,
    /// Sequence number of the active segment.
    seq: u64,
    file: File,
    size: u64,
    /// Size of the active segment right after it was written (what was unacknowledged then).
    base: u64,
    /// Unacknowledged updates by the order they were written, and their ids.
    pending: BTreeMap<u64, pb::TaskStatus>,
    order: HashMap<String, u64>,
    next: u64,
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 1 + body.len() + DIGEST);
    out.extend_from_slice(&((1 + body.len()) as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    let digest = Sha256::digest(&out[4..]);
    out.extend_from_slice(&digest);
    out
}

/// Where a segment is damaged and how.
type Damage = (usize, &'static str);

/// The records (kind, body) of one segment, up to the first damaged one.
fn read_records(bytes: &[u8]) -> (Vec<(u8, &[u8])>, Option<Damage>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(len) = bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        else {
            return (records, Some((at, "cut short in its length")));
        };
        if len == 0 || len > MAX_RECORD {
            return (records, Some((at, "impossible length")));
        }
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else {
            return (records, Some((at, "cut short")));
        };
        let Some(digest) = bytes.get(at + 4 + len..at + 4 + len + DIGEST) else {
            return (records, Some((at, "cut short in its digest")));
        };
        if Sha256::digest(payload)[..] != digest[..] {
            return (records, Some((at, "digest mismatch")));
        }
        records.push((payload[0], &payload[1..]));
        at += 4 + len + DIGEST;
    }
    (records, None)
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

fn segment_seq(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()
}

/// What the segments of a log hold.
struct Found {
    pending: BTreeMap<u64, pb::TaskStatus>,
    order: HashMap<String, u64>,
    next: u64,
    corrupt: Vec<String>,
}

/// Reads every segment of the log in `dir`, oldest first, changing nothing.
fn load(dir: &Path) -> io::Result<(Vec<(u64, PathBuf)>, Found)> {
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(seq) = segment_seq(&path) {
            segments.push((seq, path));
        }
    }
    segments.sort();
    let mut found = Found { pending: BTreeMap::new(), order: HashMap::new(), next: 0, corrupt: Vec::new() };
    for (_, path) in &segments {
        let bytes = std::fs::read(path)?;
        let (records, damage) = read_records(&bytes);
        for (kind, body) in records {
            match kind {
                UPDATE => match pb::TaskStatus::decode(body) {
                    // Also in a compacted segment whose predecessor was not deleted yet.
                    Ok(status) if found.order.contains_key(&status.update_id) => {}
                    Ok(status) => {
                        found.order.insert(status.update_id.clone(), found.next);
                        found.pending.insert(found.next, status);
                        found.next += 1;
                    }
                    Err(e) => found.corrupt.push(format!("{}: an update that does not decode: {e}", path.display())),
                },
                ACK => {
                    if let Some(seq) = std::str::from_utf8(body).ok().and_then(|id| found.order.remove(id)) {
                        found.pending.remove(&seq);
                    }
                }
                other => found.corrupt.push(format!("{}: a record of unknown kind {other}", path.display())),
            }
        }
        if let Some((at, why)) = damage {
            found.corrupt.push(format!("{} at byte {at}: {why}", path.display()));
        }
    }
    Ok((segments, found))
}

/// The unacknowledged updates of the log in `dir`, read without changing it (for inspection while
/// an agent runs).
pub fn read(dir: &Path) -> io::Result<Loaded> {
    let (_, found) = load(dir)?;
    Ok(Loaded { updates: found.pending.into_values().collect(), corrupt: found.corrupt })
}

/// Writes `status` to the shared `log` before it is handed on; false (and a warning) if it could not
/// be written: it is handed on anyway, and only a crash before its acknowledgement loses it.
pub fn store(log: &std::sync::Mutex<UpdateLog>, status: &pb::TaskStatus) -> bool {
    match log.lock().unwrap_or_else(|p| p.into_inner()).append(status) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, task_id = %status.task_id, "cannot write a status update to disk");
            false
        }
    }
}

impl UpdateLog {
    /// Opens (creating) the log in `dir`, loads what is in it and compacts it into one segment.
    pub fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if segment_seq(&path).is_none() {
                // Leftovers of a compaction cut short, or of an older layout.
                std::fs::remove_file(&path)?;
            }
        }
        let (segments, found) = load(dir)?;
        let seq = segments.last().map_or(0, |(s, _)| s + 1);
        let (file, size) = Self::write_segment(dir, seq, found.pending.values())?;
        for (_, path) in &segments {
            std::fs::remove_file(path)?;
        }
        let updates = found.pending.values().cloned().collect();
        let Found { pending, order, next, corrupt } = found;
        let log = UpdateLog { dir: dir.to_owned(), seq, file, size, base: size, pending, order, next };
        Ok((log, Loaded { updates, corrupt }))
    }

    /// Writes segment `seq` holding `updates` (under a temporary name, renamed when complete) and
    /// returns it open for appending.
    fn write_segment<'a>(
        dir: &Path,
        seq: u64,
        updates: impl Iterator<Item = &'a pb::TaskStatus>,
    ) -> io::Result<(File, u64)> {
        let tmp = dir.join(format!("{seq:020}.tmp"));
        let mut bytes = Vec::new();
        for status in updates {
            bytes.extend_from_slice(&record(UPDATE, &status.encode_to_vec()));
        }
        std::fs::write(&tmp, &bytes)?;
        let path = dir.join(segment_name(seq));
        std::fs::rename(&tmp, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok((file, bytes.len() as u64))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes an update (before it is sent).
    pub fn append(&mut self, status: &pb::TaskStatus) -> io::Result<()> {
        self.write(&record(UPDATE, &status.encode_to_vec()))?;
        self.order.insert(status.update_id.clone(), self.next);
        self.pending.insert(self.next, status.clone());
        self.next += 1;
        Ok(())
    }

    /// Whether the update is in the log and not acknowledged.
    pub fn contains(&self, update_id: &str) -> bool {
        self.order.contains_key(update_id)
    }

    /// Forgets an acknowledged update; compacts the log when its segment has grown large.
    pub fn remove(&mut self, update_id: &str) -> io::Result<()> {
        let Some(seq) = self.order.remove(update_id) else { return Ok(()) };
        self.pending.remove(&seq);
        self.write(&record(ACK, update_id.as_bytes()))?;
        // Twice what the last compaction kept: rewriting stays proportional to what is appended
        // even while many updates wait for acknowledgement (a burst of launches).
        if self.size >= SEGMENT_BYTES.max(2 * self.base) {
            self.compact()?;
        }
        Ok(())
    }

    /// Moves what is unacknowledged to a new segment and deletes the old one.
    fn compact(&mut self) -> io::Result<()> {
        let old = self.dir.join(segment_name(self.seq));
        let (file, size) = Self::write_segment(&self.dir, self.seq + 1, self.pending.values())?;
        self.seq += 1;
        self.file = file;
        self.size = size;
        self.base = size;
        std::fs::remove_file(old)
    }

    /// Updates not acknowledged yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
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

    fn ids(loaded: &Loaded) -> Vec<&str> {
        loaded.updates.iter().map(|s| s.update_id.as_str()).collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
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
        let (mut log, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["u2", "u3"]);
        assert_eq!(loaded.updates[0].exit_code, Some(3));
        assert_eq!(log.len(), 2);
        assert!(loaded.corrupt.is_empty());
        // Acknowledgements after a reopen count too, and new updates go after the old ones.
        log.remove("u3").unwrap();
        log.append(&status("t4", "u4", pb::TaskState::Finished)).unwrap();
        drop(log);
        let (_, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["u2", "u4"]);
        assert_eq!(files(dir.path()), [segment_name(2)], "one segment is left after each open");
    }

    #[test]
    fn a_long_run_stays_one_small_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = UpdateLog::open(dir.path()).unwrap();
        log.append(&status("keep", "keep", pb::TaskState::Running)).unwrap();
        for i in 0..40_000 {
            let id = format!("u{i}");
            log.append(&status(&format!("t{i}"), &id, pb::TaskState::Finished)).unwrap();
            log.remove(&id).unwrap();
        }
        assert!(log.seq >= 2, "compacted at least twice");
        let names = files(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(std::fs::metadata(dir.path().join(&names[0])).unwrap().len() <= SEGMENT_BYTES + 1024);
        drop(log);
        let (_, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["keep"]);
    }

    #[test]
    fn many_unacknowledged_updates_do_not_make_every_ack_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = UpdateLog::open(dir.path()).unwrap();
        // 20,000 pending (more than a segment's worth), then acknowledged one by one.
        for i in 0..20_000 {
            log.append(&status(&format!("t{i}"), &format!("u{i}"), pb::TaskState::Running)).unwrap();
        }
        for i in 0..20_000 {
            log.remove(&format!("u{i}")).unwrap();
        }
        assert!(log.seq <= 4, "compacted {} times for 20,000 acks", log.seq);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn damage_and_truncation_are_detected_and_what_follows_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = UpdateLog::open(dir.path()).unwrap();
        for (i, u) in ["u1", "u2", "u3"].into_iter().enumerate() {
            log.append(&status(&format!("t{i}"), u, pb::TaskState::Finished)).unwrap();
        }
        drop(log);
        let segment = dir.path().join(segment_name(0));
        let good = std::fs::read(&segment).unwrap();
        let one = good.len() / 3;

        // A flipped byte in the second record: the first is kept, the rest dropped and reported.
        let mut bytes = good.clone();
        bytes[one + 10] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"half").unwrap();
        let (log, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["u1"]);
        assert_eq!(loaded.corrupt.len(), 1);
        assert!(loaded.corrupt[0].contains(&format!("at byte {one}: digest mismatch")), "{:?}", loaded.corrupt);
        assert_eq!(files(dir.path()), [segment_name(1)], "the damaged segment and the tmp file are gone");
        drop(log);

        // A write cut short at the end (a crash mid-append): only the last update is lost.
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join(segment_name(0));
        std::fs::write(&segment, &good[..good.len() - 5]).unwrap();
        let (_, loaded) = UpdateLog::open(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["u1", "u2"]);
        assert!(loaded.corrupt[0].contains("cut short"), "{:?}", loaded.corrupt);
    }
}
