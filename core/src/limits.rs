//! The bounds on input. Each is checked at the first edge that sees the input, and refused with
//! an error naming the limit and the figure, so that nothing a client, framework or agent sends
//! can make the leader's memory, a registry transaction or a gRPC message grow without bound.

use skiff_proto as pb;

/// A task spec's own bytes (args, env, stdin, name, files, everything but the module, which is an
/// artifact): a spec is written into every task record of its job.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Instances of one job.
pub const MAX_INSTANCES: u32 = 100_000;

/// Live (not yet done) jobs one submitter may have at once.
pub const MAX_LIVE_JOBS_PER_SUBMITTER: usize = 10_000;

/// One output chunk from an agent (agents send at most 64 KiB).
pub const MAX_OUTPUT_CHUNK_BYTES: usize = 1 << 20;

/// Largest gRPC request a coordinator decodes, per service: operator and ACL requests hold one
/// spec at most; scheduler calls may launch several tasks; agent messages carry output chunks and
/// registrations with every task an agent runs. Blobs stream in 256 KiB chunks.
pub const OPERATOR_REQUEST_BYTES: usize = MAX_SPEC_BYTES + (256 << 10);
pub const SCHEDULER_REQUEST_BYTES: usize = 8 * MAX_SPEC_BYTES;
pub const AGENT_MESSAGE_BYTES: usize = 16 << 20;
pub const ACL_REQUEST_BYTES: usize = 64 << 10;
pub const ARTIFACT_CHUNK_BYTES: usize = 1 << 20;

/// Largest gRPC response (a job status lists every instance of a job of up to
/// [`MAX_INSTANCES`]); clients decode up to this.
pub const RESPONSE_BYTES: usize = 64 << 20;

/// Task ids in one reconcile call of a framework (each unknown one is a registry read).
pub const MAX_RECONCILE_TASKS: usize = 10_000;

/// Messages the leader may have queued for one agent or framework before it counts as not
/// reading and is disconnected (it registers or subscribes again, and is reconciled).
pub const PEER_BUFFER: usize = 8192;

/// Longest a connecting agent or framework may take to send its first message.
pub const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest failover timeout a framework may ask for (Mesos' default cap is a week too).
pub const MAX_FAILOVER_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;

/// What passed a limit; the message names the limit and the figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {got}, more than the limit of {limit}")]
pub struct LimitError {
    pub what: String,
    pub got: String,
    pub limit: String,
}

impl LimitError {
    /// Exact figures (a spec one byte too large must not read "1.0 MiB, more than 1.0 MiB").
    pub fn bytes(what: impl Into<String>, got: usize, limit: usize) -> Self {
        Self {
            what: what.into(),
            got: format!("{got} bytes"),
            limit: format!("{limit} bytes ({})", format_bytes(limit as u64)),
        }
    }

    pub fn count(what: impl Into<String>, got: u64, limit: u64) -> Self {
        Self { what: what.into(), got: got.to_string(), limit: limit.to_string() }
    }
}

/// `1.5 MiB`, `512 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Checks a task spec's size: the sum of its args, env, stdin and the rest of its fields as
/// encoded (an inline module, which only an agent-local launch has, does not count).
pub fn check_spec(spec: &pb::TaskSpec) -> Result<(), LimitError> {
    let module = match &spec.kind {
        Some(pb::task_spec::Kind::Wasm(w)) => w.module.len(),
        _ => 0,
    };
    let size = prost::Message::encoded_len(spec).saturating_sub(module);
    if size > MAX_SPEC_BYTES {
        let args: usize = spec.args.iter().map(String::len).sum();
        let env: usize = spec.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        return Err(LimitError::bytes(
            format!(
                "the task spec (args {}, env {}, stdin {})",
                format_bytes(args as u64),
                format_bytes(env as u64),
                format_bytes(spec.stdin.len() as u64)
            ),
            size,
            MAX_SPEC_BYTES,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sizes() {
        let mut spec = pb::TaskSpec { args: vec!["x".repeat(1000)], ..Default::default() };
        assert_eq!(check_spec(&spec), Ok(()));
        spec.env.insert("BIG".into(), "y".repeat(MAX_SPEC_BYTES));
        let err = check_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("the task spec (args 1000 B, env 1.0 MiB, stdin 0 B) is 1049"), "{err}");
        assert!(err.contains("more than the limit of 1048576 bytes (1.0 MiB)"), "{err}");
        let inline = pb::TaskSpec {
            kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask { module: vec![0; 2 << 20], ..Default::default() })),
            ..Default::default()
        };
        assert_eq!(check_spec(&inline), Ok(()), "an inline module is not part of the spec's size");
    }

    #[test]
    fn byte_figures() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 20), "3.0 MiB");
    }
}
