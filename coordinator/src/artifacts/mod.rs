//! Artifacts: content-addressed blobs (Wasm modules) kept on every coordinator replica.
//!
//! Each replica has a [`BlobStore`] on its disk. An upload goes to the leader, which stores the blob,
//! pushes it to the other replicas and acknowledges only when a majority of them (counting itself)
//! hold it; then it records the blob in the registry (`artifacts/<sha256>`), so a new leader after a
//! failover knows it and a surviving replica can serve it. Tasks name their module by hash; agents
//! download it from any replica that has it.
//!
//! - [`store`]: the on-disk store (verify while receiving, size limit, quota);
//! - [`service`]: the `ArtifactService` gRPC API (stat, upload, replicate, download);
//! - [`sweep`]: each replica removes blobs the registry no longer records (the leader forgets
//!   unused artifacts after a grace period).

pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use skiff_proto as pb;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use store::{ArtifactError, BlobStore, StoreLimits, sha256_hex, valid_sha256};

use crate::members::Members;
use crate::registry::{Registry, keys};

/// Bytes per gRPC message of a transfer.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Where the other replicas are: the values of the election keys are the candidates' addresses.
#[derive(Debug, Clone)]
pub enum Peers {
    /// Single-machine mode: no other replica.
    Alone,
    Etcd {
        members: Members,
        election_name: String,
    },
}

impl Peers {
    /// Advertised addresses of the other live replicas.
    pub async fn list(&self, me: &str) -> Result<Vec<String>, String> {
        let Peers::Etcd { members, election_name } = self else { return Ok(Vec::new()) };
        let member = members.current();
        let options = etcd_client::GetOptions::new().with_prefix();
        let resp = tokio::time::timeout(
            Duration::from_secs(2),
            member.client.kv_client().get(format!("{election_name}/"), Some(options)),
        )
        .await
        .map_err(|_| "listing replicas timed out".to_owned())
        .and_then(|r| r.map_err(|e| format!("listing replicas: {e}")))
        .inspect_err(|_| members.failed(&member))?;
        let mut peers: Vec<String> = resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .filter(|addr| addr != me)
            .collect();
        peers.sort();
        peers.dedup();
        Ok(peers)
    }
}

/// Streams a stored blob as upload chunks (a header, then data), for replication.
pub async fn upload_chunks(
    store: &BlobStore,
    sha256: &str,
    size: u64,
) -> Result<impl futures::Stream<Item = pb::UploadChunk> + Send + 'static, ArtifactError> {
    let file = store.open_blob(sha256).await?;
    let header = pb::UploadChunk {
        part: Some(pb::upload_chunk::Part::Header(pb::UploadHeader { sha256: sha256.to_owned(), size })),
    };
    let data = read_chunks(file).map(|chunk| pb::UploadChunk { part: Some(pb::upload_chunk::Part::Data(chunk)) });
    Ok(futures::stream::iter([header]).chain(data))
}

/// The file's bytes in [`CHUNK_BYTES`] pieces (a read error ends the stream early; the receiver's
/// size and hash checks reject the short transfer).
pub fn read_chunks(file: tokio::fs::File) -> impl futures::Stream<Item = Vec<u8>> + Send + 'static {
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((buf, Some(file)))
            }
        }
    })
}

/// Every `interval` until `stop`, removes from `store` the blobs older than `grace` that the
/// registry does not record (forgotten by the leader, or left by an upload that never reached a
/// majority). Younger blobs stay: an upload in progress records its blob only at the end.
///
/// It also keeps blobs replicated (anti-entropy): a blob the registry records that this replica
/// lacks (a replica replaced, a disk wiped) is copied again from a replica that has it, a few per
/// round, so every recorded blob comes back to every replica and so to a majority.
pub async fn sweep(
    store: Arc<BlobStore>,
    registry: Arc<dyn Registry>,
    replica: Replica,
    grace: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now();
        for (sha256, size, modified) in store.list() {
            if now.duration_since(modified).unwrap_or_default() < grace {
                continue;
            }
            match registry.get(&keys::artifact(&sha256)).await {
                Ok(None) if store.remove(&sha256) => info!(%sha256, size, "unrecorded blob removed"),
                Ok(_) => {}
                Err(err) => {
                    debug!(%err, "cannot check blobs against the registry now");
                    break;
                }
            }
        }
        if !replica.alone {
            repair(&store, registry.as_ref(), &replica).await;
        }
    }
}

/// Who this replica is, to copy blobs from its peers.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The address this replica is recorded under in artifact records.
    pub advertise: String,
    pub tls: Option<skiff_tls::Credentials>,
    /// The embedded registry: no peers.
    pub alone: bool,
}

/// Blobs copied again per round.
const REPAIRS_PER_ROUND: usize = 16;

/// Copies recorded blobs this replica lacks from the replicas that have them.
async fn repair(store: &BlobStore, registry: &dyn Registry, replica: &Replica) {
    use prost::Message;
    let Ok(records) = registry.range("artifacts/").await else { return };
    let mut repaired = 0;
    for (_, value) in records {
        let Ok(record) = pb::ArtifactRecord::decode(&value.value[..]) else { continue };
        if store.has(&record.sha256) || !valid_sha256(&record.sha256) {
            continue;
        }
        for peer in record.replicas.iter().filter(|p| **p != replica.advertise) {
            match fetch(store, peer, &record, replica.tls.as_ref()).await {
                Ok(()) => {
                    info!(sha256 = %record.sha256, from = %peer, "blob missing here copied again from a replica");
                    repaired += 1;
                    break;
                }
                Err(why) => debug!(sha256 = %record.sha256, %peer, %why, "cannot copy a blob from this replica"),
            }
        }
        if repaired >= REPAIRS_PER_ROUND {
            return;
        }
    }
}

/// Downloads `record`'s blob from `peer` into `store` (size and hash checked as for any upload).
async fn fetch(
    store: &BlobStore,
    peer: &str,
    record: &pb::ArtifactRecord,
    tls: Option<&skiff_tls::Credentials>,
) -> Result<(), String> {
    let endpoint = skiff_tls::coordinator_endpoint(peer, tls)?.connect_timeout(Duration::from_secs(1));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = pb::artifact_service_client::ArtifactServiceClient::new(channel)
        .max_decoding_message_size(skiff_core::limits::ARTIFACT_CHUNK_BYTES);
    let request = pb::DownloadRequest { sha256: record.sha256.clone() };
    let stream = client.download(request).await.map_err(|s| s.message().to_owned())?.into_inner();
    let chunks = stream.map(|c| c.map(|c| c.data).map_err(|s| s.message().to_owned()));
    store.receive(&record.sha256, record.size, chunks).await.map(drop).map_err(|e| e.to_string())
}
