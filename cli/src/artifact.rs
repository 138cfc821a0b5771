//! Putting a module into the coordinators' artifact store: ask by hash first, upload only if the
//! fleet does not have it.

use skiff_proto as pb;
use tonic::transport::Channel;

use crate::client::MAX_MESSAGE_BYTES;
use crate::exit::CliError;

/// Bytes per upload message.
const CHUNK_BYTES: usize = 256 * 1024;

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`ensure_stored`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    /// True when the bytes were sent (the fleet did not have them).
    pub uploaded: bool,
    pub replicas: usize,
}

fn upload_error(status: tonic::Status) -> CliError {
    match status.code() {
        tonic::Code::InvalidArgument => CliError::BadInput(format!("upload refused: {}", status.message())),
        _ => CliError::Unavailable(format!("upload failed: {}", status.message())),
    }
}

/// Makes sure the leader's artifact store holds `bytes`; uploads them only if it does not.
pub async fn ensure_stored(leader: Channel, bytes: &[u8]) -> Result<Stored, CliError> {
    let sha256 = sha256_hex(bytes);
    let mut client = pb::artifact_service_client::ArtifactServiceClient::new(leader)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let stat =
        client.stat(pb::StatArtifactRequest { sha256: sha256.clone() }).await.map_err(upload_error)?.into_inner();
    if stat.present {
        return Ok(Stored { sha256, uploaded: false, replicas: stat.replicas.len() });
    }
    let header = pb::UploadChunk {
        part: Some(pb::upload_chunk::Part::Header(pb::UploadHeader {
            sha256: sha256.clone(),
            size: bytes.len() as u64,
        })),
    };
    let data =
        bytes.chunks(CHUNK_BYTES).map(|c| pb::UploadChunk { part: Some(pb::upload_chunk::Part::Data(c.to_vec())) });
    let chunks: Vec<pb::UploadChunk> = std::iter::once(header).chain(data).collect();
    let done = client.upload(futures::stream::iter(chunks)).await.map_err(upload_error)?.into_inner();
    Ok(Stored { sha256, uploaded: done.stored, replicas: done.replicas.len() })
}
