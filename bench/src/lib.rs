//! Skiff's end-to-end benchmark harness (`skiff-bench`; not part of the test suite). It starts real
//! fleets — etcd, coordinators and agents as separate processes on loopback — and measures what a
//! user sees: trivial tasks from submit to running and to finished, throughput of jobs, agent
//! density with idle tasks, failover; beside the peers a user would pick instead (plain fork+exec,
//! a container per task with runc, Slurm), in the same run, on the same machine. It writes a
//! Markdown report and PNG plots.
//!
//! Layout:
//! - [`fleet`]: real Skiff processes (the integration tests' fleet, shared);
//! - [`path`]: tasks and jobs through a fleet's operator API, timed;
//! - [`peers`]: fork+exec, runc and Slurm running the same trivial jobs;
//! - [`density`]: the agent's memory with idle Wasm tasks;
//! - [`failover`]: leader SIGKILL → a task done on the new leader;
//! - [`longevity`]: many tasks with garbage collection on (etcd size and leader RSS stay flat),
//!   and a takeover with 100,000 live tasks;
//! - [`allocator`]: the DRF allocator and the job scheduler in process;
//! - [`stats`]: percentiles and number formats;
//! - [`report`]: the Markdown table and the plots.

#[path = "../../cli/tests/fleet/mod.rs"]
#[allow(missing_debug_implementations)]
pub mod fleet;

pub mod allocator;
pub mod density;
pub mod failover;
pub mod longevity;
pub mod path;
pub mod peers;
pub mod report;
pub mod stats;
