//! The Skiff coordinator: it tracks agents and tasks, offers agents' free resources to frameworks
//! (two-level scheduling, as in Mesos) and tells agents what to run.
//!
//! Layout:
//! - [`config`]: the coordinator's settings;
//! - [`acl`]: ACL tokens and policies, and what a request's certificate lets it call;
//! - [`artifacts`]: content-addressed blobs on every replica, acknowledged once on a majority;
//! - [`server`]: binds, runs the replica and serves the gRPC services until shutdown;
//! - [`replica`]: the replica's [`Role`](replica::Role) over time (embedded: always leader; etcd:
//!   campaign, lead while the lease holds, step down, campaign again);
//! - [`election`]: etcd lease keep-alive against a local deadline, campaign, observe;
//! - [`members`]: one etcd client per member, moving to the next member when a call fails;
//! - [`leader`]: the task that owns the state; every change happens there, in order; it recovers
//!   the state from the registry when it takes over and reconciles agents as they re-register;
//! - [`registry`]: where state is kept, written only by compare-and-swap transactions
//!   (embedded in-process registry, or etcd with every write fenced on the leader key);
//! - [`allocator`]: pure weighted DRF across roles with quotas, filters, suppression: who is offered what;
//! - [`offers`]: pure offer bookkeeping (outstanding offers, does an accept fit, timeouts);
//! - [`jobs`]: the built-in job scheduler (jobs of N instances, retries, constraints) that places
//!   the CLI's tasks by accepting offers;
//! - [`task`]: task states and their transitions (from `skiff-core`, the domain model shared with
//!   the agent and the CLI);
//! - [`output`]: which part of a task's output chunk is new (agents may send one again);
//! - [`resources`]: exact resource arithmetic;
//! - [`units`]: sizes, durations, CPU counts, resource lists and `KEY=VALUE` given on command lines;
//! - [`service`]: `AgentService`, `OperatorService` and `SchedulerService`;
//! - [`metrics`]: what the replica counts and measures, for Prometheus (`--metrics-listen`);
//! - [`error`]: the error type and its mapping to gRPC statuses.
#![forbid(unsafe_code)]

pub mod acl;
pub mod allocator;
pub mod artifacts;
pub mod config;
pub mod election;
pub mod error;
pub mod jobs;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod offers;
pub mod output;
pub mod registry;
pub mod replica;
pub mod resources;
pub mod server;
pub mod service;
pub mod units;

pub use config::Config;
pub use error::{Error, Result};
pub use registry::{EtcdRegistry, MemoryRegistry, Registry};
pub use replica::EtcdConfig;
pub use server::Coordinator;
pub use skiff_core::task;
