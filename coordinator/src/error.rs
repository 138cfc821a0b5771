//! The coordinator's error type and its one mapping to gRPC statuses.

use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("task {0} not found")]
    TaskNotFound(String),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("agent {agent_id} running task {task_id} is not connected")]
    AgentNotConnected { agent_id: String, task_id: String },
    #[error("{0}")]
    NotFound(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("framework {0} is not subscribed (subscribe first, or again after its failover timeout)")]
    FrameworkNotFound(String),
    /// A call that cannot be served in the current state (e.g. made under an older leader epoch).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Offer(#[from] crate::offers::OfferError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The caller is not known: no certificate, no token, an unknown, revoked or expired token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (its certificate's role, its token's policies).
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit on input or on live work was reached (the message names it and the figures).
    #[error("{0}")]
    LimitExceeded(String),
    /// The job or task ended and was garbage-collected after the retention.
    #[error("{0}")]
    Collected(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("failed to serve gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A time in ms since the epoch as `2026-12-07T12:00:00Z`.
pub fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let msg = err.to_string();
        match err {
            Error::TaskNotFound(_)
            | Error::JobNotFound(_)
            | Error::FrameworkNotFound(_)
            | Error::NotFound(_)
            | Error::Collected(_) => tonic::Status::not_found(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::LimitExceeded(_) => tonic::Status::resource_exhausted(msg),
            Error::Offer(_) => tonic::Status::invalid_argument(msg),
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::AgentNotConnected { .. } | Error::ShuttingDown => tonic::Status::unavailable(msg),
            Error::Registry(RegistryError::Conflict { .. }) => tonic::Status::aborted(msg),
            Error::Registry(RegistryError::Fenced) => tonic::Status::failed_precondition(msg),
            Error::Registry(RegistryError::Unavailable(_)) => tonic::Status::unavailable(msg),
            Error::Serve(_) => tonic::Status::internal(msg),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn status_codes() {
        let cases = [
            (Error::TaskNotFound("t-1".into()), Code::NotFound, "task t-1 not found"),
            (Error::InvalidArgument("no module".into()), Code::InvalidArgument, "invalid request: no module"),
            (Error::ShuttingDown, Code::Unavailable, "the coordinator is shutting down"),
            (Error::Registry(RegistryError::Fenced), Code::FailedPrecondition, "registry write fenced off"),
            (Error::Registry(RegistryError::Conflict { key: "tasks/t".into() }), Code::Aborted, "tasks/t"),
        ];
        for (err, code, text) in cases {
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(text), "{status:?} should mention {text:?}");
        }
    }
}
