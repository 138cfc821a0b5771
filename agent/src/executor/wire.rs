//! Framing of the agent <-> executor conversation (`executor.proto`): a big-endian u32 length,
//! then the encoded message. Async on both sides once attached; blocking for the attach itself,
//! which the agent does before its runtime exists.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Largest message (a launch may carry an inline module of up to `--max-module-bytes`).
pub const MAX_FRAME: usize = 256 << 20;

pub type Conn = Framed<UnixStream, LengthDelimitedCodec>;

/// The executor's socket in an agent's work directory.
pub fn socket_path(work_dir: &Path) -> PathBuf {
    work_dir.join("executor.sock")
}

/// Where the executor process names itself (boot id, pid, start time).
pub fn pid_path(work_dir: &Path) -> PathBuf {
    work_dir.join("executor.pid")
}

pub fn framed(stream: UnixStream) -> Conn {
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec())
}

pub fn decode<M: Message + Default>(bytes: &[u8]) -> io::Result<M> {
    M::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable message: {e}")))
}

/// Writes one message (blocking).
pub fn write_blocking(stream: &mut impl Write, message: &impl Message) -> io::Result<()> {
    let body = message.encode_to_vec();
    let len =
        u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&body)
}

/// Reads one message (blocking).
pub fn read_blocking<M: Message + Default>(stream: &mut impl Read) -> io::Result<M> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a message of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    decode(&body)
}
