//! Skiff's gRPC API, package `skiff.v1`: the generated tonic/prost code and nothing else.
//!
//! Layout (one `.proto` file per conversation, under `proto/skiff/v1/`):
//! - `types.proto`: tasks, resources, limits, status updates, usage, offers;
//! - `agent.proto`: `AgentService`, the agent's long-lived stream to the coordinator;
//! - `operator.proto`: `OperatorService`, what the CLI and operators call;
//! - `scheduler.proto`: `SchedulerService`, the framework (two-level scheduling) API;
//! - `registry.proto`: the records the coordinator persists in its registry;
//! - `artifact.proto`: content-addressed blobs (modules, files) on the coordinator replicas;
//! - `executor.proto`: the agent and its executor process (the tasks' parent, outliving the agent).
//! - `acl.proto`: `AclService`, ACL tokens and policies.
//!
//! Conversions to domain types live in the crates that own those types.
#![forbid(unsafe_code)]
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("skiff.v1");
}

pub use v1::*;

/// The agent attribute that says whether an agent runs native tasks (`"true"` or `"false"`);
/// every agent offers it, and native tasks are placed only where it is `"true"`.
pub const NATIVE_ATTRIBUTE: &str = "skiff.native";
