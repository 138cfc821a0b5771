//! Skiff's domain model: the few rules every crate must agree on, in one place.
//!
//! The coordinator, the agent and the CLI each accept input at their edges (gRPC requests, job
//! files, records read back from etcd); they check it against the rules here, so a task id the
//! leader accepts is one the agent accepts too, and a limit named in one error is the limit
//! enforced everywhere.
//!
//! Layout:
//! - [`call`]: what frameworks send (a subscription, calls), which exists only checked;
//! - [`id`]: task, job, framework and agent ids, one rule each;
//! - [`task`]: task states, which are terminal, and the transitions between them;
//! - [`limits`]: the bounds on input (spec sizes, instances, messages, output) and their checks;
//! - [`report`]: what agents send (registration, statuses, output, usage), which exists only checked;
//! - [`spec`]: task and job specs, which exist only checked (`TryFrom<pb::TaskSpec>`, `TryFrom<pb::JobSpec>`);
//! - [`units`]: sizes, durations, CPU counts and `KEY=VALUE` as given on command lines.
#![forbid(unsafe_code)]

pub mod call;
pub mod id;
pub mod limits;
pub mod report;
pub mod spec;
pub mod task;
pub mod units;

pub use call::{CallError, CallKind, FrameworkCall, Subscription};
pub use id::IdError;
pub use limits::LimitError;
pub use report::{AgentReport, OutputChunk, Registration, ReportError, StatusReport, UsageReport};
pub use spec::{JobSpec, SpecError, TaskSpec};
