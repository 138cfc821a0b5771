//! Module bytes by hash: a size-bounded on-disk cache of blobs, filled from the coordinators.
//!
//! A Wasm task names its module by sha256. The compiled-module cache is asked first (a module
//! compiled before, even before a restart, needs no bytes at all); only then are the bytes looked up
//! here, and fetched from a coordinator replica if missing: the coordinator the agent is connected
//! to first, then every configured one, until one serves bytes that hash right. Blobs live in
//! `<work_dir>/blobs/<sha256>`; the least recently used go when the cache outgrows its bound.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use skiff_proto as pb;
use tracing::{debug, info, warn};

use crate::runtime::wasm::cache::sha256_hex;

/// Largest gRPC message of a download.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct Artifacts {
    dir: PathBuf,
    max_bytes: u64,
    max_blob_bytes: u64,
    /// Coordinators to fetch from: the one of the current session first (set by the agent).
    sources: Mutex<Vec<String>>,
    configured: Vec<String>,
    /// This agent's credentials, to dial coordinators over TLS.
    tls: Option<skiff_tls::Credentials>,
}

impl Artifacts {
    pub fn new(dir: PathBuf, max_bytes: u64, max_blob_bytes: u64, coordinators: Vec<String>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            max_bytes,
            max_blob_bytes,
            sources: Mutex::new(coordinators.clone()),
            configured: coordinators,
            tls: None,
        })
    }

    /// Dials coordinators over TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<skiff_tls::Credentials>) -> Self {
        self.tls = tls;
        self
    }

    /// The coordinator this agent is connected to; tried first.
    pub fn set_current(&self, address: &str) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        *sources = std::iter::once(address.to_owned())
            .chain(self.configured.iter().filter(|a| *a != address).cloned())
            .collect();
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// The blob from the local cache, if present and intact (a damaged one is removed).
    pub fn cached(&self, sha256: &str) -> Option<Vec<u8>> {
        let path = self.path(sha256);
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) != sha256 {
            warn!(path = %path.display(), "cached blob does not match its name; removing it");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Recently used: keep it over older ones.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// The blob `sha256` of `size` bytes: from the cache, or fetched from a coordinator.
    pub async fn get(&self, sha256: &str, size: u64) -> Result<Arc<Vec<u8>>, String> {
        if size > self.max_blob_bytes {
            return Err(format!("module is {size} bytes, over this agent's {} byte limit", self.max_blob_bytes));
        }
        if let Some(bytes) = self.cached(sha256) {
            return Ok(Arc::new(bytes));
        }
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut errors = Vec::new();
        for source in &sources {
            match fetch(source, self.tls.as_ref(), sha256, size).await {
                Ok(bytes) => {
                    info!(%sha256, size, %source, "module fetched");
                    if let Err(err) = self.store(sha256, &bytes) {
                        warn!(%sha256, %err, "could not cache a fetched module");
                    }
                    return Ok(Arc::new(bytes));
                }
                Err(why) => {
                    debug!(%source, %why, "fetch failed; trying the next coordinator");
                    errors.push(format!("{source}: {why}"));
                }
            }
        }
        Err(format!("module {sha256} could not be fetched from any coordinator ({})", errors.join("; ")))
    }

    fn store(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        let part = self.dir.join(format!("{sha256}.{}.part", uuid::Uuid::new_v4().simple()));
        std::fs::write(&part, bytes)?;
        std::fs::rename(&part, self.path(sha256))?;
        self.evict(sha256);
        Ok(())
    }

    /// Removes least recently used blobs (never `keep`) until the cache fits its bound.
    fn evict(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name() != keep)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let kept = std::fs::metadata(self.path(keep)).map_or(0, |m| m.len());
        let mut total: u64 = kept + blobs.iter().map(|b| b.1).sum::<u64>();
        blobs.sort();
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            debug!(path = %path.display(), "evicting a cached blob");
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest blob this agent stores or uploads.
    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    /// Stores `bytes` in the fleet's artifact store (through the coordinator of the current
    /// session, which must lead); returns their sha256 and size.
    pub async fn upload(&self, bytes: Vec<u8>) -> Result<(String, u64), String> {
        if bytes.len() as u64 > self.max_blob_bytes {
            return Err(format!("{} bytes, over the {} byte limit", bytes.len(), self.max_blob_bytes));
        }
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let leader = self.sources.lock().unwrap_or_else(|p| p.into_inner()).first().cloned().unwrap_or_default();
        let endpoint =
            skiff_tls::coordinator_endpoint(&leader, self.tls.as_ref())?.connect_timeout(Duration::from_secs(1));
        let upload = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut client = pb::artifact_service_client::ArtifactServiceClient::new(channel)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let header = pb::UploadChunk {
                part: Some(pb::upload_chunk::Part::Header(pb::UploadHeader { sha256: sha256.clone(), size })),
            };
            let data: Vec<pb::UploadChunk> = bytes
                .chunks(1 << 20)
                .map(|c| pb::UploadChunk { part: Some(pb::upload_chunk::Part::Data(c.to_vec())) })
                .collect();
            client
                .upload(futures::stream::iter(std::iter::once(header).chain(data)))
                .await
                .map_err(|s| s.message().to_owned())
        };
        tokio::time::timeout(Duration::from_secs(60), upload).await.map_err(|_| "upload timed out".to_owned())??;
        Ok((sha256, size))
    }
}

/// Downloads a blob from one coordinator, checking its size and hash.
async fn fetch(
    address: &str,
    tls: Option<&skiff_tls::Credentials>,
    sha256: &str,
    size: u64,
) -> Result<Vec<u8>, String> {
    let endpoint = skiff_tls::coordinator_endpoint(address, tls)?.connect_timeout(Duration::from_secs(1));
    let download = async {
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let mut client = pb::artifact_service_client::ArtifactServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = client
            .download(pb::DownloadRequest { sha256: sha256.to_owned() })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > size {
                return Err(format!("more than the {size} bytes expected"));
            }
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(60), download).await.map_err(|_| "timed out".to_owned())??;
    if bytes.len() as u64 != size {
        return Err(format!("got {} bytes, expected {size}", bytes.len()));
    }
    let got = sha256_hex(&bytes);
    if got != sha256 {
        return Err(format!("the bytes hash to {got}"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let file = std::fs::File::options().append(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn cache_is_bounded_least_recently_used_first_and_checks_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::new(dir.path().join("blobs"), 25, 100, vec![]).unwrap();
        let (a, b, c) = (vec![b'a'; 10], vec![b'b'; 10], vec![b'c'; 10]);
        let (sa, sb, sc) = (sha256_hex(&a), sha256_hex(&b), sha256_hex(&c));
        artifacts.store(&sa, &a).unwrap();
        artifacts.store(&sb, &b).unwrap();
        age(&artifacts.path(&sa), 200);
        age(&artifacts.path(&sb), 100);
        // Reading a refreshes it: b is now the least recently used.
        assert_eq!(artifacts.cached(&sa).unwrap(), a);
        artifacts.store(&sc, &c).unwrap();
        assert!(artifacts.cached(&sb).is_none(), "the least recently used blob goes first");
        assert_eq!(artifacts.cached(&sa).unwrap(), a);
        assert_eq!(artifacts.cached(&sc).unwrap(), c);

        // A damaged blob is not served, and is removed.
        std::fs::write(artifacts.path(&sa), b"tampered").unwrap();
        assert!(artifacts.cached(&sa).is_none());
        assert!(!artifacts.path(&sa).exists());
    }
}
