//! What agents report, checked once where it arrives: a registration, status updates, output
//! chunks and usage. Like specs, each exists only through `TryFrom` of its protobuf message and is
//! read through `Deref`; past the coordinator's agent service nothing handles an unchecked one.
//!
//! An agent is treated as a peer that may be broken or hostile: ids follow their rules, states are
//! ones an agent may report (never PENDING), sizes are bounded (a status message longer than
//! [`MAX_STATUS_MESSAGE_BYTES`] is cut to it, marked), and a registration lists at most
//! [`MAX_RECONCILE_TASKS`](crate::limits::MAX_RECONCILE_TASKS) tasks.

use std::ops::Deref;

use skiff_proto as pb;
use skiff_proto::agent_message::Msg;

use crate::id;
use crate::limits::{MAX_OUTPUT_CHUNK_BYTES, MAX_RECONCILE_TASKS};
use crate::spec::is_sha256;

/// Longest status message kept (longer ones are cut, ending in [`CUT`]).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 16 << 10;
/// What ends a cut status message.
pub const CUT: &str = " [...]";
/// Longest update id (agents send UUIDs).
pub const MAX_UPDATE_ID_BYTES: usize = 64;
/// Most output files a terminal status lists, and the longest path of one.
pub const MAX_OUTPUT_FILES: usize = 1024;
pub const MAX_PATH_BYTES: usize = 4096;
/// Most attributes an agent registers, and the longest key or value.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Longest hostname (DNS's bound).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Most compiled modules a registration lists.
pub const MAX_CACHED_MODULES: usize = 100_000;

/// Why an agent's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct ReportError {
    /// Which message (and field).
    pub what: String,
    pub why: String,
}

fn refuse<T>(what: impl Into<String>, why: impl Into<String>) -> Result<T, ReportError> {
    Err(ReportError { what: what.into(), why: why.into() })
}

macro_rules! checked_message {
    ($(#[$doc:meta])* $name:ident, $pb:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name($pb);

        impl Deref for $name {
            type Target = $pb;
            fn deref(&self) -> &$pb {
                &self.0
            }
        }

        impl $name {
            pub fn into_inner(self) -> $pb {
                self.0
            }
        }
    };
}

checked_message!(
    /// A task status an agent reports.
    StatusReport,
    pb::TaskStatus
);
checked_message!(
    /// A chunk of a task's stdout or stderr.
    OutputChunk,
    pb::TaskOutput
);
checked_message!(
    /// Live usage of a running task.
    UsageReport,
    pb::TaskUsage
);
checked_message!(
    /// The first message of an agent's session.
    Registration,
    pb::Register
);

fn task_id(what: &str, task_id: &str) -> Result<(), ReportError> {
    id::check_task_id(task_id).or_else(|e| refuse(what, e.to_string()))
}

impl TryFrom<pb::TaskStatus> for StatusReport {
    type Error = ReportError;

    fn try_from(mut status: pb::TaskStatus) -> Result<Self, ReportError> {
        task_id("status", &status.task_id)?;
        let what = format!("status of {}", status.task_id);
        match pb::TaskState::try_from(status.state) {
            Err(_) => return refuse(what, format!("state {} is not a task state", status.state)),
            Ok(s @ (pb::TaskState::Unspecified | pb::TaskState::Pending)) => {
                return refuse(what, format!("an agent never reports {}", s.as_str_name()));
            }
            Ok(_) => {}
        }
        if pb::Reason::try_from(status.reason).is_err() {
            return refuse(what, format!("reason {} is not a reason", status.reason));
        }
        if status.update_id.is_empty() || status.update_id.len() > MAX_UPDATE_ID_BYTES {
            return refuse(what, format!("update_id must be 1-{MAX_UPDATE_ID_BYTES} bytes"));
        }
        if status.outputs.len() > MAX_OUTPUT_FILES {
            return refuse(what, format!("{} output files, more than {MAX_OUTPUT_FILES}", status.outputs.len()));
        }
        for file in &status.outputs {
            if file.path.is_empty() || file.path.len() > MAX_PATH_BYTES {
                return refuse(what, format!("an output file's path must be 1-{MAX_PATH_BYTES} bytes"));
            }
            if !file.sha256.is_empty() && !is_sha256(&file.sha256) {
                return refuse(what, format!("output file {:?}: sha256 is not 64 lower-case hex digits", file.path));
            }
        }
        cut(&mut status.message, MAX_STATUS_MESSAGE_BYTES);
        for file in &mut status.outputs {
            cut(&mut file.error, MAX_STATUS_MESSAGE_BYTES / 16);
        }
        if let Some(usage) = status.usage.as_mut() {
            cut(&mut usage.module_cache, 16);
        }
        Ok(Self(status))
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), ending in [`CUT`].
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(CUT);
}

impl TryFrom<pb::TaskOutput> for OutputChunk {
    type Error = ReportError;

    fn try_from(output: pb::TaskOutput) -> Result<Self, ReportError> {
        task_id("output", &output.task_id)?;
        let what = format!("output of {}", output.task_id);
        match pb::OutputStream::try_from(output.stream) {
            Ok(pb::OutputStream::Stdout | pb::OutputStream::Stderr) => {}
            _ => return refuse(what, format!("stream {} is neither stdout nor stderr", output.stream)),
        }
        if output.data.len() > MAX_OUTPUT_CHUNK_BYTES {
            return refuse(what, format!("a chunk of {} bytes, more than {MAX_OUTPUT_CHUNK_BYTES}", output.data.len()));
        }
        if let Some(offset) = output.offset
            && offset.checked_add(output.data.len() as u64).is_none()
        {
            return refuse(what, "its offset overflows");
        }
        Ok(Self(output))
    }
}

impl TryFrom<pb::TaskUsage> for UsageReport {
    type Error = ReportError;

    fn try_from(mut usage: pb::TaskUsage) -> Result<Self, ReportError> {
        task_id("usage", &usage.task_id)?;
        if let Some(u) = usage.usage.as_mut() {
            cut(&mut u.module_cache, 16);
        }
        Ok(Self(usage))
    }
}

impl TryFrom<pb::Register> for Registration {
    type Error = ReportError;

    fn try_from(mut register: pb::Register) -> Result<Self, ReportError> {
        id::check_agent_id(&register.agent_id).or_else(|e| refuse("register", e.to_string()))?;
        let what = format!("register of {}", register.agent_id);
        if register.hostname.len() > MAX_HOSTNAME_BYTES {
            return refuse(what, format!("hostname longer than {MAX_HOSTNAME_BYTES} bytes"));
        }
        if register.attributes.len() > MAX_ATTRIBUTES {
            return refuse(what, format!("{} attributes, more than {MAX_ATTRIBUTES}", register.attributes.len()));
        }
        for (key, value) in &register.attributes {
            if key.is_empty() || key.len() > MAX_ATTRIBUTE_BYTES || value.len() > MAX_ATTRIBUTE_BYTES {
                return refuse(
                    what,
                    format!("attribute {key:?}: keys must be 1-{MAX_ATTRIBUTE_BYTES} bytes, values at most that"),
                );
            }
        }
        let resources = register.resources.unwrap_or_default();
        if !resources.cpus.is_finite() || resources.cpus < 0.0 || resources.cpus > 1e6 {
            return refuse(what, format!("cpus {} is not a number of cores", resources.cpus));
        }
        register.resources = Some(resources);
        if register.tasks.len() > MAX_RECONCILE_TASKS {
            return refuse(what, format!("{} tasks, more than {MAX_RECONCILE_TASKS}", register.tasks.len()));
        }
        register.tasks = std::mem::take(&mut register.tasks)
            .into_iter()
            .map(|status| StatusReport::try_from(status).map(StatusReport::into_inner))
            .collect::<Result<_, _>>()
            .or_else(|e| refuse(what.clone(), e.to_string()))?;
        if register.cached_modules.len() > MAX_CACHED_MODULES {
            return refuse(
                what,
                format!("{} cached modules, more than {MAX_CACHED_MODULES}", register.cached_modules.len()),
            );
        }
        if let Some(bad) = register.cached_modules.iter().find(|m| !is_sha256(m)) {
            return refuse(what, format!("cached module {bad:.80?} is not a sha256"));
        }
        Ok(Self(register))
    }
}

impl Registration {
    /// The statuses it reports, each checked as a [`StatusReport`] already.
    pub fn take_tasks(&mut self) -> Vec<StatusReport> {
        std::mem::take(&mut self.0.tasks).into_iter().map(StatusReport).collect()
    }
}

/// A message of an agent's session after its registration.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentReport {
    Heartbeat,
    Status(StatusReport),
    Output(OutputChunk),
    Usage(UsageReport),
    /// A second registration on an open session (ignored).
    Register,
}

impl TryFrom<Msg> for AgentReport {
    type Error = ReportError;

    fn try_from(msg: Msg) -> Result<Self, ReportError> {
        Ok(match msg {
            Msg::Heartbeat(_) => Self::Heartbeat,
            Msg::Status(s) => Self::Status(s.try_into()?),
            Msg::Output(o) => Self::Output(o.try_into()?),
            Msg::Usage(u) => Self::Usage(u.try_into()?),
            Msg::Register(_) => Self::Register,
        })
    }
}

#[cfg(test)]
mod tests;
