//! The gRPC services; each forwards to the leader through its [`crate::leader::LeaderHandle`].

pub mod agent;
pub mod operator;
pub mod scheduler;

/// Largest gRPC message accepted or sent (task specs carry their module until artifacts move by hash).
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

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
