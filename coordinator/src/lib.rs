//! The Skiff coordinator: it tracks agents and tasks, offers agents' free resources to frameworks
//! (two-level scheduling, as in Mesos) and tells agents what to run.
//!
//! Layout:
//! - [`config`]: the coordinator's settings;
//! - [`server`]: binds, runs the leader and serves the gRPC services until shutdown;
//! - [`leader`]: the task that owns the state; every change happens there, in order;
//! - [`registry`]: where state is kept, written only by compare-and-swap transactions
//!   (embedded in-process registry here; the etcd backend plugs in behind the same trait);
//! - [`offers`]: pure offer bookkeeping (used, offered, available; does an accept fit);
//! - [`jobs`]: the built-in job framework that places the CLI's tasks by accepting offers;
//! - [`task`]: task states and their transitions;
//! - [`resources`]: exact resource arithmetic;
//! - [`service`]: `AgentService` and `OperatorService`;
//! - [`error`]: the error type and its mapping to gRPC statuses.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod jobs;
pub mod leader;
pub mod offers;
pub mod registry;
pub mod resources;
pub mod server;
pub mod service;
pub mod task;

pub use config::Config;
pub use error::{Error, Result};
pub use registry::{MemoryRegistry, Registry};
pub use server::Coordinator;
