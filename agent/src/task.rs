//! What a task is to the agent, and how it ended.

use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};

/// How a task ended. A value, not an error: a trap or a limit is a normal outcome of running a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskExit {
    /// Exited on its own (returned from `_start`, or called `proc_exit`).
    Exited(i32),
    /// A Wasm trap, named.
    Trapped(String),
    /// Tried to grow its memory past `--mem`.
    MemoryLimit(String),
    /// A native task killed by the kernel's OOM killer in its cgroup.
    OutOfMemory(String),
    /// A native task ended by a signal it did not ask for.
    Signaled(i32),
    /// Ran past its wall-clock `--timeout`.
    TimedOut,
    /// Filled its sandbox (its `disk`), then failed.
    DiskLimit(String),
    /// Its module did not compile within the agent's bounds.
    CompileLimit(String),
    /// Used up its `--fuel` budget.
    OutOfFuel,
    /// Killed on request.
    Killed,
    /// The module or command could not be loaded.
    Invalid(String),
    /// Could not be started for another reason.
    LaunchFailed(String),
}

impl TaskExit {
    /// The terminal state, reason, message and exit code this outcome is reported as.
    pub fn report(&self) -> (TaskState, Reason, String, Option<i32>) {
        match self {
            TaskExit::Exited(0) => (TaskState::Finished, Reason::Exited, "exited with code 0".into(), Some(0)),
            TaskExit::Exited(code) => {
                (TaskState::Failed, Reason::Exited, format!("exited with code {code}"), Some(*code))
            }
            TaskExit::Trapped(trap) => (TaskState::Failed, Reason::Trap, format!("trap: {trap}"), None),
            TaskExit::MemoryLimit(msg) => (TaskState::Failed, Reason::MemoryLimit, msg.clone(), None),
            TaskExit::OutOfMemory(msg) => (TaskState::Failed, Reason::Oom, msg.clone(), None),
            TaskExit::Signaled(sig) => {
                (TaskState::Failed, Reason::Exited, format!("killed by signal {sig}"), Some(128 + sig))
            }
            TaskExit::TimedOut => (TaskState::Failed, Reason::TimeLimit, "ran past its timeout".into(), None),
            TaskExit::OutOfFuel => (TaskState::Failed, Reason::OutOfFuel, "used up its fuel".into(), None),
            TaskExit::DiskLimit(msg) => (TaskState::Failed, Reason::DiskLimit, msg.clone(), None),
            TaskExit::CompileLimit(msg) => (TaskState::Failed, Reason::CompileLimit, msg.clone(), None),
            TaskExit::Killed => (TaskState::Killed, Reason::Killed, "killed on request".into(), None),
            TaskExit::Invalid(msg) => (TaskState::Failed, Reason::InvalidTask, msg.clone(), None),
            TaskExit::LaunchFailed(msg) => (TaskState::Failed, Reason::LaunchFailed, msg.clone(), None),
        }
    }
}

/// Whether a status's state (as sent on the wire) is terminal: FINISHED, FAILED, KILLED or LOST.
pub fn is_terminal(state: i32) -> bool {
    TaskState::try_from(state).is_ok_and(skiff_core::task::is_terminal)
}

/// Events a running task sends to the coordinator, in order.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    Status(pb::TaskStatus),
    Output(pb::TaskOutput),
    Usage(pb::TaskUsage),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        let cases = [
            (TaskExit::Exited(0), TaskState::Finished, Reason::Exited, Some(0)),
            (TaskExit::Exited(3), TaskState::Failed, Reason::Exited, Some(3)),
            (TaskExit::Trapped("unreachable".into()), TaskState::Failed, Reason::Trap, None),
            (TaskExit::MemoryLimit("grow".into()), TaskState::Failed, Reason::MemoryLimit, None),
            (TaskExit::TimedOut, TaskState::Failed, Reason::TimeLimit, None),
            (TaskExit::OutOfMemory("peak 64 MiB".into()), TaskState::Failed, Reason::Oom, None),
            (TaskExit::Signaled(11), TaskState::Failed, Reason::Exited, Some(139)),
            (TaskExit::OutOfFuel, TaskState::Failed, Reason::OutOfFuel, None),
            (TaskExit::DiskLimit("full".into()), TaskState::Failed, Reason::DiskLimit, None),
            (TaskExit::CompileLimit("30 s".into()), TaskState::Failed, Reason::CompileLimit, None),
            (TaskExit::Killed, TaskState::Killed, Reason::Killed, None),
            (TaskExit::Invalid("not wasm".into()), TaskState::Failed, Reason::InvalidTask, None),
        ];
        for (exit, state, reason, code) in cases {
            let (s, r, msg, c) = exit.report();
            assert_eq!((s, r, c), (state, reason, code), "{exit:?}");
            assert!(!msg.is_empty());
        }
        assert!(TaskExit::Trapped("wasm `unreachable` instruction executed".into()).report().2.contains("unreachable"));
    }
}
