//! Task and job specs as Skiff accepts them: a [`TaskSpec`] or [`JobSpec`] exists only once its
//! protobuf passed every rule here (`TryFrom<pb::...>`), so code that takes one never handles an
//! unchecked spec. The leader converts what clients and frameworks send, the agent what a leader
//! launches, and records read back from etcd are checked against the same rules.
//!
//! What is checked is the spec's own shape (ids, sizes, kinds, resources, digests, retry policy,
//! constraints); what depends on state (is the module in the artifact store, is a task id free)
//! is the leader's to check.

use std::ops::Deref;

use skiff_proto as pb;

use crate::id::{self, IdError};
use crate::limits::{self, LimitError};

/// Why a spec was refused; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(msg.into()))
}

/// Whether `text` is a sha256 as Skiff writes them: 64 lower-case hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Retries of one instance, at most.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;

/// Longest retry backoff.
pub const MAX_BACKOFF_MS: u64 = 86_400_000;

/// A checked task spec. Read it through `Deref`; [`TaskSpec::into_inner`] gives the protobuf back
/// to send or record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec(pb::TaskSpec);

impl TaskSpec {
    /// Checks a spec without taking it (records read back are checked in place).
    pub fn check(spec: &pb::TaskSpec) -> Result<(), SpecError> {
        limits::check_spec(spec)?;
        if !spec.task_id.is_empty() {
            id::check_task_id(&spec.task_id)?;
        }
        match &spec.kind {
            None => return invalid("task has neither a wasm module nor a native command"),
            // Inline bytes (a launch straight to an agent) need no digest; the leader takes
            // modules only by digest ([`TaskSpec::module_by_digest`]).
            Some(pb::task_spec::Kind::Wasm(w))
                if (w.module.is_empty() || !w.module_sha256.is_empty()) && !is_sha256(&w.module_sha256) =>
            {
                return invalid("wasm task: module_sha256 must be 64 lower-case hex digits");
            }
            Some(pb::task_spec::Kind::Native(n)) if n.command.is_empty() => {
                return invalid("native task has an empty command");
            }
            Some(_) => {}
        }
        let res = spec.resources.unwrap_or_default();
        if !(res.cpus.is_finite() && res.cpus >= 0.001) {
            return invalid("cpus must be a number of at least 0.001 (one milli-CPU)");
        }
        if res.mem_bytes == 0 {
            return invalid("mem must be positive");
        }
        for file in spec.files.iter().chain(spec.dirs.iter().flat_map(|d| d.files.iter())) {
            if file.path.is_empty() {
                return invalid("a task file has no path");
            }
            if !is_sha256(&file.sha256) {
                return invalid(format!("task file {}: sha256 must be 64 lower-case hex digits", file.path));
            }
        }
        Ok(())
    }

    /// Refuses inline module bytes: what the leader records and launches names its module by
    /// digest (the artifact store holds it once, not every task record).
    pub fn module_by_digest(&self) -> Result<(), SpecError> {
        match &self.0.kind {
            Some(pb::task_spec::Kind::Wasm(w)) if !w.module.is_empty() => invalid(
                "wasm tasks name their module by sha256 (upload it to the artifact store); inline module bytes are for agent-local use",
            ),
            _ => Ok(()),
        }
    }

    /// Sets the task id (the leader names tasks it creates); the id is checked like any other.
    pub fn set_task_id(&mut self, task_id: String) -> Result<(), IdError> {
        id::check_task_id(&task_id)?;
        self.0.task_id = task_id;
        Ok(())
    }

    /// Fills in the module's size, which the leader knows from the artifact store.
    pub fn set_module_size(&mut self, size: u64) {
        if let Some(pb::task_spec::Kind::Wasm(w)) = self.0.kind.as_mut() {
            w.module_size = size;
        }
    }

    pub fn into_inner(self) -> pb::TaskSpec {
        self.0
    }
}

impl TryFrom<pb::TaskSpec> for TaskSpec {
    type Error = SpecError;

    fn try_from(spec: pb::TaskSpec) -> Result<Self, SpecError> {
        Self::check(&spec)?;
        Ok(Self(spec))
    }
}

impl Deref for TaskSpec {
    type Target = pb::TaskSpec;

    fn deref(&self) -> &pb::TaskSpec {
        &self.0
    }
}

/// A checked job spec (its task template checked as a [`TaskSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec(pb::JobSpec);

impl JobSpec {
    /// Checks a job spec without taking it.
    pub fn check(job: &pb::JobSpec) -> Result<(), SpecError> {
        let Some(task) = &job.task else { return invalid("job has no task") };
        Self::check_policy(job)?;
        TaskSpec::check(task)
    }

    /// Checks the job's own fields (instances, id, retry policy, constraints) but not its task
    /// template: what a client can check before it uploads the template's module.
    pub fn check_policy(job: &pb::JobSpec) -> Result<(), SpecError> {
        if job.instances == 0 || job.instances > limits::MAX_INSTANCES {
            return invalid(format!(
                "job instances must be between 1 and {}, got {}",
                limits::MAX_INSTANCES,
                job.instances
            ));
        }
        if !job.job_id.is_empty() {
            id::check_job_id(&job.job_id)?;
        }
        if job.task.is_none() {
            return invalid("job has no task");
        }
        if let Some(retry) = job.retry {
            if retry.attempts > MAX_RETRY_ATTEMPTS {
                return invalid(format!("retry attempts must be at most {MAX_RETRY_ATTEMPTS}, got {}", retry.attempts));
            }
            if retry.backoff_ms > MAX_BACKOFF_MS || retry.max_backoff_ms > MAX_BACKOFF_MS {
                return invalid("retry backoff and max_backoff must be at most 24h");
            }
        }
        check_constraints(&job.constraints)
    }

    /// A job of one instance of `task`, without retries (`skiff run`).
    pub fn single(task: TaskSpec, submitted_by: String) -> Self {
        Self(pb::JobSpec {
            name: task.name.clone(),
            instances: 1,
            task: Some(task.0),
            submitted_by,
            ..Default::default()
        })
    }

    /// The job without its task template, and the template (checked with the job).
    pub fn into_parts(self) -> (pb::JobSpec, TaskSpec) {
        let mut job = self.0;
        let task = job.task.take().unwrap_or_default();
        (job, TaskSpec(task))
    }

    /// Who submitted it (the leader sets the caller's token accessor, whatever the client sent).
    pub fn set_submitted_by(&mut self, who: String) {
        self.0.submitted_by = who;
    }

    pub fn into_inner(self) -> pb::JobSpec {
        self.0
    }
}

impl TryFrom<pb::JobSpec> for JobSpec {
    type Error = SpecError;

    fn try_from(job: pb::JobSpec) -> Result<Self, SpecError> {
        Self::check(&job)?;
        Ok(Self(job))
    }
}

impl Deref for JobSpec {
    type Target = pb::JobSpec;

    fn deref(&self) -> &pb::JobSpec {
        &self.0
    }
}

/// Checks placement constraints: an attribute each, and as many values as the operator takes.
pub fn check_constraints(constraints: &[pb::Constraint]) -> Result<(), SpecError> {
    use pb::constraint::Operator;
    for (i, c) in constraints.iter().enumerate() {
        let name =
            if c.attribute.is_empty() { format!("constraint {i}") } else { format!("constraint on {:?}", c.attribute) };
        if c.attribute.is_empty() {
            return invalid(format!("{name}: attribute is empty"));
        }
        let n = c.values.len();
        let (ok, takes) = match Operator::try_from(c.operator).unwrap_or(Operator::Unspecified) {
            Operator::Eq | Operator::Ne => (n == 1, "exactly one value"),
            Operator::In | Operator::NotIn => (n >= 1, "one or more values"),
            Operator::Exists => (n == 0, "no values"),
            Operator::Unspecified => return invalid(format!("{name}: operator missing (==, !=, in, not_in, exists)")),
        };
        if !ok {
            return invalid(format!("{name}: {:?} takes {takes}, got {n} values", c.operator()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
