//! Task states and the transitions between them.
//!
//! ```text
//! PENDING --launch--> STAGING --agent--> RUNNING --exit--> FINISHED | FAILED
//!    |                   |                  |
//!    +--------kill-------+------------------+----------> KILLED
//!                        +--agent lost------+----------> LOST
//!                        +--no heartbeats---+--> UNREACHABLE --agent back--> RUNNING | any terminal
//! ```
//! Terminal states never change again. A repeated update of the same state, or a non-terminal one
//! after an end (at-least-once redelivery of older news), is a duplicate, not an error.

use skiff_proto::TaskState;

/// Whether `state` is terminal.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(state, TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost)
}

/// What to do with a reported state given the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Apply it.
    Apply,
    /// Older news (an at-least-once redelivery: the same state again, STAGING after it was
    /// placed, any non-terminal state after an end): ignore, but acknowledge.
    Duplicate,
    /// Not allowed from the current state (e.g. another end after an end, RUNNING before STAGING).
    Invalid,
}

/// Decides whether a task may move from `from` to `to`.
pub fn transition(from: TaskState, to: TaskState) -> Transition {
    use TaskState::*;
    if from == to {
        return Transition::Duplicate;
    }
    // The agent's own STAGING (its checkpoint of a launch) is older news than anything after it.
    if to == Staging && from != Pending {
        return Transition::Duplicate;
    }
    if is_terminal(from) {
        // A state from before the end (an agent resending its RUNNING whose acknowledgement it
        // missed) is older news; another end is a conflict.
        return if is_terminal(to) { Transition::Invalid } else { Transition::Duplicate };
    }
    let allowed = matches!(
        (from, to),
        (Pending, Staging | Killed | Failed)
            | (Staging, Running)
            | (Staging | Running, Finished | Failed | Killed | Lost | Unreachable)
            | (Unreachable, Running | Finished | Failed | Killed | Lost)
    );
    if allowed { Transition::Apply } else { Transition::Invalid }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn transitions() {
        let cases = [
            (Pending, Staging, Transition::Apply),
            (Pending, Running, Transition::Invalid),
            (Pending, Killed, Transition::Apply),
            (Staging, Running, Transition::Apply),
            (Staging, Failed, Transition::Apply),
            (Running, Finished, Transition::Apply),
            (Running, Failed, Transition::Apply),
            (Running, Killed, Transition::Apply),
            (Running, Lost, Transition::Apply),
            (Running, Running, Transition::Duplicate),
            (Running, Staging, Transition::Duplicate),
            (Finished, Staging, Transition::Duplicate),
            (Running, Pending, Transition::Invalid),
            (Finished, Finished, Transition::Duplicate),
            (Finished, Running, Transition::Duplicate),
            (Killed, Unreachable, Transition::Duplicate),
            (Lost, Running, Transition::Duplicate),
            (Failed, Finished, Transition::Invalid),
            (Killed, Failed, Transition::Invalid),
            (Running, Unreachable, Transition::Apply),
            (Staging, Unreachable, Transition::Apply),
            (Unreachable, Running, Transition::Apply),
            (Unreachable, Finished, Transition::Apply),
            (Unreachable, Lost, Transition::Apply),
            (Unreachable, Staging, Transition::Duplicate),
            (Pending, Unreachable, Transition::Invalid),
        ];
        for (from, to, want) in cases {
            assert_eq!(transition(from, to), want, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn terminal_states() {
        for s in [Finished, Failed, Killed, Lost] {
            assert!(is_terminal(s), "{s:?}");
        }
        for s in [Unspecified, Pending, Staging, Running, Unreachable] {
            assert!(!is_terminal(s), "{s:?}");
        }
    }
}
