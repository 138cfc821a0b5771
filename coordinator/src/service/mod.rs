//! The gRPC services; each forwards to the leader through its [`crate::leader::LeaderHandle`].

pub mod agent;
pub mod operator;
pub mod scheduler;

// Message size limits per service: see `skiff_core::limits` (`OPERATOR_REQUEST_BYTES`, ...).

use tokio::sync::watch;

use crate::leader::LeaderHandle;
use crate::replica::Role;

/// The leader's handle, or the status a follower answers with (naming the leader when it knows it).
pub fn leader_of(roles: &watch::Receiver<Role>) -> Result<LeaderHandle, tonic::Status> {
    match &*roles.borrow() {
        Role::Leader(handle) => Ok(handle.clone()),
        Role::Follower { leader: Some(info) } => Err(tonic::Status::unavailable(format!(
            "this coordinator is not the leader; the leader is {} (epoch {})",
            info.address, info.epoch
        ))),
        Role::Follower { leader: None } => {
            Err(tonic::Status::unavailable("this coordinator is not the leader and no leader is elected yet"))
        }
    }
}
