//! `ArtifactService`: stat and upload at the leader, replicate between replicas, download anywhere.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use skiff_proto as pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::{ArtifactError, BlobStore, Peers, read_chunks, upload_chunks};
use crate::acl::gate::Gate;
use crate::acl::{Ask, Capability, Need};
use crate::leader::{Command, LeaderHandle};
use crate::replica::Role;
use crate::service::leader_of;

/// Time allowed for pushing one blob to one replica.
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(60);

impl From<ArtifactError> for Status {
    fn from(err: ArtifactError) -> Self {
        let msg = err.to_string();
        match err {
            ArtifactError::BadHash(_)
            | ArtifactError::TooLarge { .. }
            | ArtifactError::Corrupt { .. }
            | ArtifactError::WrongSize { .. } => Status::invalid_argument(msg),
            ArtifactError::Full { .. } => Status::resource_exhausted(msg),
            ArtifactError::NotFound(_) => Status::not_found(msg),
            ArtifactError::Broken { .. } => Status::aborted(msg),
            ArtifactError::Io { .. } => Status::internal(msg),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArtifactApi {
    roles: watch::Receiver<Role>,
    store: Arc<BlobStore>,
    peers: Peers,
    advertise: String,
    gate: Gate,
    /// This coordinator's credentials, to push blobs to its peers over TLS.
    tls: Option<skiff_tls::Credentials>,
}

impl ArtifactApi {
    pub fn new(
        roles: watch::Receiver<Role>,
        store: Arc<BlobStore>,
        peers: Peers,
        advertise: String,
        gate: Gate,
        tls: Option<skiff_tls::Credentials>,
    ) -> Self {
        Self { roles, store, peers, advertise, gate, tls }
    }

    /// Agents (their tasks' outputs) and clients with `capability` for some role; others are refused.
    async fn agent_or_client<T>(&self, request: &Request<T>, capability: Capability) -> Result<(), Status> {
        match self.gate.peer(request)? {
            Some(peer) if peer.role == skiff_tls::Role::Agent => Ok(()),
            Some(peer) if peer.role == skiff_tls::Role::Coordinator && capability == Capability::Read => Ok(()),
            _ => {
                let caller = self.gate.client(request)?;
                let leader: LeaderHandle = leader_of(&self.roles)?;
                leader.authorize(&caller, Ask::Need(Need::any_role(capability))).await.map(drop).map_err(Status::from)
            }
        }
    }

    /// Reads a transfer's header; the data chunks follow in the stream.
    async fn header(chunks: &mut Streaming<pb::UploadChunk>) -> Result<pb::UploadHeader, Status> {
        let Some(pb::UploadChunk { part: Some(pb::upload_chunk::Part::Header(header)) }) = chunks.message().await?
        else {
            return Err(Status::invalid_argument("an upload starts with its header (sha256 and size)"));
        };
        Ok(header)
    }

    /// Receives the data of a transfer whose header was read into the local store.
    async fn receive(&self, header: &pb::UploadHeader, chunks: Streaming<pb::UploadChunk>) -> Result<(), Status> {
        let data = chunks.map(|chunk| match chunk {
            Ok(pb::UploadChunk { part: Some(pb::upload_chunk::Part::Data(d)) }) => Ok(d),
            Ok(_) => Err("a second header in one upload".to_owned()),
            Err(status) => Err(status.message().to_owned()),
        });
        self.store.receive(&header.sha256, header.size, data).await?;
        Ok(())
    }

    /// Pushes a stored blob to `peer`.
    async fn replicate_to(&self, peer: &str, sha256: &str, size: u64) -> Result<(), String> {
        let endpoint =
            skiff_tls::coordinator_endpoint(peer, self.tls.as_ref())?.connect_timeout(Duration::from_secs(1));
        let push = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut client = pb::artifact_service_client::ArtifactServiceClient::new(channel)
                .max_encoding_message_size(skiff_core::limits::ARTIFACT_CHUNK_BYTES);
            let chunks = upload_chunks(&self.store, sha256, size).await.map_err(|e| e.to_string())?;
            client.replicate(chunks).await.map_err(|s| s.message().to_owned())?;
            Ok(())
        };
        tokio::time::timeout(REPLICATE_TIMEOUT, push).await.map_err(|_| "timed out".to_owned())?
    }
}

#[tonic::async_trait]
impl pb::artifact_service_server::ArtifactService for ArtifactApi {
    type DownloadStream = BoxStream<'static, Result<pb::DownloadChunk, Status>>;

    async fn stat(
        &self,
        request: Request<pb::StatArtifactRequest>,
    ) -> Result<Response<pb::StatArtifactResponse>, Status> {
        self.agent_or_client(&request, Capability::Submit).await?;
        let sha256 = request.into_inner().sha256;
        let leader = leader_of(&self.roles)?;
        let record = leader.ask(|reply| Command::StatArtifact { sha256, reply }).await?;
        Ok(Response::new(record.map_or_else(pb::StatArtifactResponse::default, |r| pb::StatArtifactResponse {
            present: true,
            size: r.size,
            replicas: r.replicas,
        })))
    }

    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        self.agent_or_client(&request, Capability::Submit).await?;
        let leader = leader_of(&self.roles)?;
        let mut chunks = request.into_inner();
        let header = Self::header(&mut chunks).await?;
        // Known to the fleet already: answer without reading the bytes.
        let known = leader.ask(|reply| Command::StatArtifact { sha256: header.sha256.clone(), reply }).await?;
        if let Some(record) = known {
            return Ok(Response::new(pb::UploadResponse {
                sha256: header.sha256,
                size: record.size,
                stored: false,
                replicas: record.replicas,
            }));
        }
        self.receive(&header, chunks).await?;
        let pb::UploadHeader { sha256, size } = header;
        // On a majority of the replicas (this one included) before anyone relies on it.
        let peers = self.peers.list(&self.advertise).await.map_err(Status::unavailable)?;
        let total = peers.len() + 1;
        let needed = total / 2 + 1;
        let sha = sha256.as_str();
        let pushes = peers.iter().map(|peer| async move { (peer.clone(), self.replicate_to(peer, sha, size).await) });
        let mut replicas = vec![self.advertise.clone()];
        for (peer, result) in futures::future::join_all(pushes).await {
            match result {
                Ok(()) => replicas.push(peer),
                Err(why) => warn!(%peer, %sha256, %why, "could not replicate an artifact"),
            }
        }
        if replicas.len() < needed {
            return Err(Status::unavailable(format!(
                "artifact {sha256} is on {} of {total} coordinator replicas; {needed} are needed: retry",
                replicas.len()
            )));
        }
        let record =
            pb::ArtifactRecord { sha256: sha256.clone(), size, replicas: replicas.clone(), ..Default::default() };
        leader.ask(|reply| Command::RecordArtifact { record, reply }).await??;
        info!(%sha256, size, replicas = replicas.len(), "artifact stored");
        Ok(Response::new(pb::UploadResponse { sha256, size, stored: true, replicas }))
    }

    async fn replicate(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        self.gate.coordinator(&request)?;
        let mut chunks = request.into_inner();
        let header = Self::header(&mut chunks).await?;
        self.receive(&header, chunks).await?;
        let pb::UploadHeader { sha256, size } = header;
        Ok(Response::new(pb::UploadResponse { sha256, size, stored: true, replicas: vec![self.advertise.clone()] }))
    }

    async fn download(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        self.agent_or_client(&request, Capability::Read).await?;
        let sha256 = request.into_inner().sha256;
        let file = self.store.open_blob(&sha256).await?;
        Ok(Response::new(read_chunks(file).map(|data| Ok(pb::DownloadChunk { data })).boxed()))
    }
}
