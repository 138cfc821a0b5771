//! The Skiff agent: one per host. It registers the host's resources with the leading coordinator
//! and runs the tasks it is given: Wasm modules in wasmtime (WASI preview 1), as futures on an
//! executor of their own, never on the runtime that serves the control plane.
//!
//! Layout:
//! - [`config`]: the agent's settings;
//! - [`agent`]: the session with the coordinators (register, commands, heartbeats, status updates);
//! - [`outbox`]: status updates sent and not acknowledged yet, resent with backoff;
//! - [`work_dir`]: the agent's directory (one agent at a time) and the small files it keeps there;
//! - [`updates`]: the on-disk log of status updates not acknowledged yet;
//! - [`task_logs`]: the output of recent tasks on disk, sent again to a leader that lacks it;
//! - [`executor`]: starts and kills tasks on the Wasm executor and reports their statuses and usage,
//!   in the agent or in its executor process, which outlives the agent so tasks survive its restart;
//! - [`metrics`]: what the agent counts, for Prometheus (`--metrics-listen`);
//! - [`history`]: the ids of the tasks launched here (none starts twice);
//! - [`artifacts`]: module bytes by hash (a bounded on-disk cache, filled from the coordinators);
//! - [`files`]: a task's input files put into place and its output files collected;
//! - [`beneath`]: files below a directory, never reached through a link (what `files` uses);
//! - [`runtime`]: how task code runs ([`runtime::wasm`]) and how its output is captured;
//! - [`sandbox`]: the host directories tasks see as `/`, one fresh for each task, each a
//!   filesystem of the task's disk size;
//! - [`task`]: how a task ended ([`task::TaskExit`]) and the events tasks send;
//! - [`cgroup`]: cgroups (v1 and v2) for native tasks;
//! - [`host`]: what this host offers (CPUs, memory, disk);
//! - [`sys`]: the only platform-specific and `unsafe` code;
//! - [`error`]: the error type.

pub mod agent;
pub mod artifacts;
pub mod beneath;
pub mod cgroup;
pub mod config;
pub mod error;
pub mod executor;
pub mod files;
pub mod history;
pub mod host;
pub mod metrics;
pub mod outbox;
pub mod runtime;
pub mod sandbox;
pub mod sys;
pub mod task;
pub mod task_logs;
pub mod updates;
pub mod work_dir;

pub use agent::Agent;
pub use config::{Config, ExecutorMode};
pub use error::{Error, Result};
