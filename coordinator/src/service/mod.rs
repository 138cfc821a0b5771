//! The gRPC services; each forwards to the leader through its [`crate::leader::LeaderHandle`].

pub mod agent;
pub mod operator;

/// Largest gRPC message accepted or sent (task specs carry their module until artifacts move by hash).
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;
