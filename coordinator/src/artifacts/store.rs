//! A replica's blob store on disk: one file per blob, named by its sha256.
//!
//! A blob is received into `<sha>.part`, hashed as it arrives, and renamed into place only when its
//! size and sha256 match the header (after an fsync): a short, long or corrupted transfer leaves
//! nothing behind. The store enforces a per-blob size limit and a total quota (space is reserved
//! when a transfer starts and released if it fails).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why a blob was not stored or served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0:?} is not a sha256 (64 lower-case hex digits)")]
    BadHash(String),
    #[error("artifact is {size} bytes, over the {limit} byte limit per artifact")]
    TooLarge { size: u64, limit: u64 },
    #[error("artifact store full: {size} more bytes do not fit ({used} of {quota} bytes used)")]
    Full { size: u64, used: u64, quota: u64 },
    #[error("transfer of {sha256} was corrupted: the bytes hash to {got}")]
    Corrupt { sha256: String, got: String },
    #[error("transfer of {sha256} has {got} bytes, the header said {expected}")]
    WrongSize { sha256: String, expected: u64, got: u64 },
    #[error("transfer of {sha256} broke off: {why}")]
    Broken { sha256: String, why: String },
    #[error("artifact {0} is not on this coordinator")]
    NotFound(String),
    #[error("artifact store I/O on {path}: {why}")]
    Io { path: PathBuf, why: String },
}

/// Whether `text` is a lower-case hex sha256 (the one rule, in the domain model).
pub use skiff_core::spec::is_sha256 as valid_sha256;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Limits of a store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_blob_bytes: u64,
    pub quota_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { max_blob_bytes: 64 << 20, quota_bytes: 10 << 30 }
    }
}

/// A transfer that sends nothing for this long is given up (its space released).
const IDLE_TRANSFER: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    limits: StoreLimits,
    /// Bytes stored plus bytes reserved by transfers in progress.
    used: Mutex<u64>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |e| ArtifactError::Io { path: path.to_path_buf(), why: e.to_string() }
}

impl BlobStore {
    /// Opens (creating) the store in `dir`; leftovers of interrupted transfers are removed.
    pub fn open(dir: impl Into<PathBuf>, limits: StoreLimits) -> Result<Self, ArtifactError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut used = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            } else if valid_sha256(&name) {
                used += entry.metadata().map_err(io_error(&entry.path()))?.len();
            }
        }
        Ok(Self { dir, limits, used: Mutex::new(used) })
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Bytes held (and reserved by transfers in progress).
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub fn has(&self, sha256: &str) -> bool {
        valid_sha256(sha256) && self.path(sha256).is_file()
    }

    /// Checks a transfer's header against the limits.
    fn check(&self, sha256: &str, size: u64) -> Result<(), ArtifactError> {
        if !valid_sha256(sha256) {
            return Err(ArtifactError::BadHash(sha256.to_owned()));
        }
        if size > self.limits.max_blob_bytes {
            return Err(ArtifactError::TooLarge { size, limit: self.limits.max_blob_bytes });
        }
        let used = *self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used + size > self.limits.quota_bytes {
            return Err(ArtifactError::Full { size, used, quota: self.limits.quota_bytes });
        }
        Ok(())
    }

    /// Reserves the space of bytes that arrived.
    fn reserve(&self, size: u64) -> Result<(), ArtifactError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if *used + size > self.limits.quota_bytes {
            return Err(ArtifactError::Full { size, used: *used, quota: self.limits.quota_bytes });
        }
        *used += size;
        Ok(())
    }

    fn release(&self, size: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(size);
    }

    /// Receives the blob `sha256` of `size` bytes from `chunks`. Returns false when it was already
    /// here (the chunks are then not read).
    pub async fn receive(
        &self,
        sha256: &str,
        size: u64,
        chunks: impl Stream<Item = Result<Vec<u8>, String>> + Unpin,
    ) -> Result<bool, ArtifactError> {
        if self.has(sha256) {
            return Ok(false);
        }
        self.check(sha256, size)?;
        // Space is reserved as bytes arrive (not from the declared size): an upload that sends
        // nothing holds nothing, one that stalls holds what it sent until it times out.
        let reserved = std::sync::atomic::AtomicU64::new(0);
        let result = self.write(sha256, size, chunks, &reserved).await;
        if result.is_err() {
            self.release(reserved.load(std::sync::atomic::Ordering::Relaxed));
        }
        result.map(|()| true)
    }

    async fn write(
        &self,
        sha256: &str,
        size: u64,
        mut chunks: impl Stream<Item = Result<Vec<u8>, String>> + Unpin,
        reserved: &std::sync::atomic::AtomicU64,
    ) -> Result<(), ArtifactError> {
        let part = self.dir.join(format!("{sha256}.{}.part", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&part).await.map_err(io_error(&part))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let outcome = async {
            loop {
                let next =
                    tokio::time::timeout(IDLE_TRANSFER, chunks.next()).await.map_err(|_| ArtifactError::Broken {
                        sha256: sha256.to_owned(),
                        why: format!("no data for {IDLE_TRANSFER:?}: the transfer was given up"),
                    })?;
                let Some(chunk) = next else { break };
                let chunk = chunk.map_err(|why| ArtifactError::Broken { sha256: sha256.to_owned(), why })?;
                got += chunk.len() as u64;
                if got > size {
                    return Err(ArtifactError::WrongSize { sha256: sha256.to_owned(), expected: size, got });
                }
                self.reserve(chunk.len() as u64)?;
                reserved.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_error(&part))?;
            }
            if got != size {
                return Err(ArtifactError::WrongSize { sha256: sha256.to_owned(), expected: size, got });
            }
            let digest = hex(&hasher.finalize());
            if digest != sha256 {
                return Err(ArtifactError::Corrupt { sha256: sha256.to_owned(), got: digest });
            }
            file.sync_all().await.map_err(io_error(&part))?;
            Ok(())
        }
        .await;
        drop(file);
        match outcome {
            Ok(()) => {
                let path = self.path(sha256);
                tokio::fs::rename(&part, &path).await.map_err(io_error(&path))?;
                Ok(())
            }
            Err(err) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(err)
            }
        }
    }

    /// The blobs held: (sha256, size, last modified).
    pub fn list(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                let modified = meta.modified().ok()?;
                (valid_sha256(&name) && meta.is_file()).then_some((name, meta.len(), modified))
            })
            .collect()
    }

    /// Removes a blob; returns whether it was there.
    pub fn remove(&self, sha256: &str) -> bool {
        let path = self.path(sha256);
        let Ok(meta) = std::fs::metadata(&path) else { return false };
        if std::fs::remove_file(&path).is_err() {
            return false;
        }
        self.release(meta.len());
        true
    }

    /// Opens a blob for reading.
    pub async fn open_blob(&self, sha256: &str) -> Result<tokio::fs::File, ArtifactError> {
        if !valid_sha256(sha256) {
            return Err(ArtifactError::BadHash(sha256.to_owned()));
        }
        tokio::fs::File::open(self.path(sha256)).await.map_err(|_| ArtifactError::NotFound(sha256.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Vec<u8>, String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(p.to_vec())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn receive_checks_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), StoreLimits { max_blob_bytes: 16, quota_bytes: 24 }).unwrap();
        let blob = b"hello, artifacts";
        let sha = sha256_hex(blob);

        // (case, sha256, size in the header, chunks sent, error wanted)
        type Case<'a> = (&'a str, String, u64, Vec<&'a [u8]>, &'a str);
        let cases: Vec<Case> = vec![
            ("bad hash", "XYZ".into(), 16, vec![blob], "not a sha256"),
            ("too large", sha.clone(), 17, vec![blob], "over the 16 byte limit"),
            ("short", sha.clone(), 16, vec![&blob[..10]], "has 10 bytes, the header said 16"),
            ("long", sha.clone(), 10, vec![blob], "the header said 10"),
            ("corrupt", sha.clone(), 16, vec![b"hello, artifactZ"], "was corrupted"),
        ];
        for (what, sha, size, parts, want) in cases {
            let err = store.receive(&sha, size, chunks(&parts)).await.unwrap_err();
            assert!(err.to_string().contains(want), "{what}: {err}");
        }
        assert_eq!(store.used(), 0, "failed transfers release their space");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "failed transfers leave nothing");

        assert!(store.receive(&sha, 16, chunks(&[&blob[..5], &blob[5..]])).await.unwrap());
        assert!(!store.receive(&sha, 16, chunks(&[])).await.unwrap(), "a second upload stores nothing");
        assert_eq!(std::fs::read(store.path(&sha)).unwrap(), blob);

        let other = b"another blob!";
        let err = store.receive(&sha256_hex(other), 13, chunks(&[other])).await.unwrap_err();
        assert!(matches!(err, ArtifactError::Full { used: 16, quota: 24, .. }), "{err}");

        // Reopened, the store counts what it holds.
        drop(store);
        let store = BlobStore::open(dir.path(), StoreLimits::default()).unwrap();
        assert_eq!(store.used(), 16);
        assert!(store.has(&sha));
    }

    /// Uploads that declare a size and send nothing hold no quota: another one still fits.
    #[tokio::test]
    async fn idle_uploads_hold_no_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), StoreLimits { max_blob_bytes: 16, quota_bytes: 24 }).unwrap());
        let idle: Vec<_> = (0..4u8)
            .map(|i| {
                let store = store.clone();
                let sha = sha256_hex(&[i; 16]);
                tokio::spawn(async move { store.receive(&sha, 16, futures::stream::pending()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let blob = b"hello, artifacts";
        assert!(store.receive(&sha256_hex(blob), 16, chunks(&[blob])).await.unwrap(), "refused while others idle");
        assert_eq!(store.used(), 16);
        for task in idle {
            task.abort();
        }
    }

    /// A transfer that stops sending is given up after the idle bound, and its space released.
    #[tokio::test(start_paused = true)]
    async fn stalled_uploads_are_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), StoreLimits { max_blob_bytes: 16, quota_bytes: 24 }).unwrap();
        let first = futures::stream::iter([Ok(vec![1u8; 8])]).chain(futures::stream::pending());
        let err = store.receive(&sha256_hex(&[1; 16]), 16, Box::pin(first)).await.unwrap_err();
        assert!(err.to_string().contains("no data for 30s"), "{err}");
        assert_eq!(store.used(), 0);
    }
}
