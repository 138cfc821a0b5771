//! Putting a module into the coordinators' artifact store: ask by hash first, upload only if the
//! fleet does not have it.

use crate::client::Channel;
use skiff_proto as pb;

use crate::client::MAX_MESSAGE_BYTES;
use crate::exit::CliError;

/// Bytes per upload message.
const CHUNK_BYTES: usize = 256 * 1024;

pub use skiff_coordinator::artifacts::sha256_hex;

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
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            CliError::Denied(format!("upload refused: {}", status.message()))
        }
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
    // A transfer damaged or cut off on the way is refused by the coordinator: send it again.
    let mut attempt = 1;
    loop {
        match client.upload(futures::stream::iter(chunks.clone())).await {
            Ok(done) => {
                let done = done.into_inner();
                return Ok(Stored { sha256, uploaded: done.stored, replicas: done.replicas.len() });
            }
            Err(status) if attempt < 3 && in_flight_damage(&status) => attempt += 1,
            Err(status) => return Err(upload_error(status)),
        }
    }
}

/// Whether a refused upload was damaged in flight (rather than refused for what it is).
fn in_flight_damage(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Aborted)
        || (status.code() == tonic::Code::InvalidArgument
            && (status.message().contains("was corrupted") || status.message().contains("the header said")))
}

/// `LOCAL[:SANDBOX_PATH[:rw]]` → (local path, sandbox path, writable). The default sandbox path is
/// `/input/<file name>`.
pub fn parse_file_arg(arg: &str) -> Result<(std::path::PathBuf, String, bool), CliError> {
    let bad = |why: &str| CliError::BadInput(format!("--file {arg}: {why}"));
    let mut parts = arg.splitn(3, ':');
    let local = std::path::PathBuf::from(parts.next().unwrap_or_default());
    let path = match parts.next() {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => {
            let name = local.file_name().ok_or_else(|| bad("no file name"))?.to_string_lossy().into_owned();
            format!("/input/{name}")
        }
    };
    let writable = match parts.next() {
        None => false,
        Some("rw") => true,
        Some(other) => return Err(bad(&format!("{other:?}: the only option is rw"))),
    };
    if !path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
        return Err(bad("the sandbox path must be absolute, without . or .."));
    }
    Ok((local, path, writable))
}

fn read_local(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))
}

/// Stores each `--file` in the artifact store and describes it for the spec.
pub async fn task_files(leader: &Channel, args: &[String]) -> Result<Vec<pb::TaskFile>, CliError> {
    let mut files = Vec::new();
    for arg in args {
        let (local, path, writable) = parse_file_arg(arg)?;
        let bytes = read_local(&local)?;
        let stored = ensure_stored(leader.clone(), &bytes).await?;
        files.push(pb::TaskFile { path, sha256: stored.sha256, size: bytes.len() as u64, writable });
    }
    Ok(files)
}

/// Stores every file of each `--dir LOCAL_DIR:GUEST_PATH` tree and describes the trees for the spec.
pub async fn task_dirs(leader: &Channel, args: &[String]) -> Result<Vec<pb::TaskDir>, CliError> {
    let mut dirs = Vec::new();
    for arg in args {
        let bad = |why: String| CliError::BadInput(format!("--dir {arg}: {why}"));
        let (local, path) = arg.split_once(':').ok_or_else(|| bad("expected LOCAL_DIR:GUEST_PATH".into()))?;
        if !path.starts_with('/') || path == "/" || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(bad("the guest path must be an absolute directory other than /, without . or ..".into()));
        }
        let root = std::path::Path::new(local);
        let mut files = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| bad(format!("cannot list {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| bad(e.to_string()))?;
                let kind = entry.file_type().map_err(|e| bad(e.to_string()))?;
                let p = entry.path();
                if kind.is_dir() {
                    pending.push(p);
                } else if kind.is_file() {
                    let bytes = read_local(&p)?;
                    let stored = ensure_stored(leader.clone(), &bytes).await?;
                    let rel = p.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
                    files.push(pb::TaskFile {
                        path: rel,
                        sha256: stored.sha256,
                        size: bytes.len() as u64,
                        writable: false,
                    });
                } else {
                    return Err(bad(format!("{}: only regular files and directories are sent", p.display())));
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        dirs.push(pb::TaskDir { path: path.trim_end_matches('/').to_owned(), files });
    }
    Ok(dirs)
}

/// Downloads the artifact `sha256` from the leader.
pub async fn download(leader: Channel, sha256: &str) -> Result<Vec<u8>, CliError> {
    let mut client =
        pb::artifact_service_client::ArtifactServiceClient::new(leader).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = client
        .download(pb::DownloadRequest { sha256: sha256.to_owned() })
        .await
        .map_err(|s| match CliError::from_status(&s) {
            CliError::Denied(m) => CliError::Denied(format!("download of {sha256}: {m}")),
            _ => CliError::Unavailable(format!("download of {sha256}: {}", s.message())),
        })?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) =
        stream.message().await.map_err(|s| CliError::Unavailable(format!("download of {sha256}: {}", s.message())))?
    {
        bytes.extend_from_slice(&chunk.data);
    }
    if sha256_hex(&bytes) != sha256 {
        return Err(CliError::Unavailable(format!("download of {sha256} was corrupted")));
    }
    Ok(bytes)
}
