//! The executor process's record of its event stream: every status update and output chunk gets a
//! sequence number and is kept until the agent says it is on its disk, so that an agent that dies
//! between receiving an event and writing it gets it again from its successor's attach. It also
//! knows which tasks are alive, for the welcome a (re-)attaching agent gets.

use std::collections::{HashMap, VecDeque};

use skiff_proto as pb;
use skiff_proto::executor_event::Msg;

use crate::task::{TaskEvent, is_terminal};

#[derive(Debug, Default)]
pub struct Journal {
    next_seq: u64,
    /// Sent (or to be sent) and not acknowledged, oldest first.
    unacked: VecDeque<pb::ExecutorEvent>,
    /// Latest status of every task launched and not ended (STAGING until it runs).
    alive: HashMap<String, pb::TaskStatus>,
}

impl Journal {
    /// A task was handed to the executor (`staging` is its STAGING status, not an event).
    pub fn launched(&mut self, staging: pb::TaskStatus) {
        self.alive.entry(staging.task_id.clone()).or_insert(staging);
    }

    /// Numbers an event of the executor and keeps it until acknowledged (usage is neither: it is
    /// sent once, if an agent is attached).
    pub fn record(&mut self, event: TaskEvent) -> pb::ExecutorEvent {
        let msg = match event {
            TaskEvent::Usage(usage) => return pb::ExecutorEvent { seq: 0, msg: Some(Msg::Usage(usage)) },
            TaskEvent::Output(output) => Msg::Output(output),
            TaskEvent::Status(status) => {
                if is_terminal(status.state) {
                    self.alive.remove(&status.task_id);
                } else {
                    self.alive.insert(status.task_id.clone(), status.clone());
                }
                Msg::Status(status)
            }
        };
        self.next_seq += 1;
        let event = pb::ExecutorEvent { seq: self.next_seq, msg: Some(msg) };
        self.unacked.push_back(event.clone());
        event
    }

    /// Every event up to `seq` is on the agent's disk.
    pub fn ack(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|e| e.seq <= seq) {
            self.unacked.pop_front();
        }
    }

    /// What an attaching agent is told before the unacknowledged events follow.
    pub fn welcome(&self) -> pb::ExecutorWelcome {
        let mut running: Vec<pb::TaskStatus> = self.alive.values().cloned().collect();
        running.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let ended: Vec<pb::TaskStatus> = self
            .unacked
            .iter()
            .filter_map(|e| match &e.msg {
                Some(Msg::Status(s)) if is_terminal(s.state) => Some(s.clone()),
                _ => None,
            })
            .collect();
        pb::ExecutorWelcome { running, ended, ..Default::default() }
    }

    /// The unacknowledged events, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &pb::ExecutorEvent> {
        self.unacked.iter()
    }

    pub fn alive(&self) -> usize {
        self.alive.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, state: pb::TaskState) -> TaskEvent {
        TaskEvent::Status(pb::TaskStatus { task_id: task.into(), state: state as i32, ..Default::default() })
    }

    fn staging(task: &str) -> pb::TaskStatus {
        pb::TaskStatus { task_id: task.into(), state: pb::TaskState::Staging as i32, ..Default::default() }
    }

    #[test]
    fn events_are_kept_until_acknowledged_and_usage_is_not() {
        let mut j = Journal::default();
        j.launched(staging("a"));
        j.launched(staging("b"));
        let seqs: Vec<u64> = [
            status("a", pb::TaskState::Running),
            TaskEvent::Usage(pb::TaskUsage { task_id: "a".into(), usage: None }),
            TaskEvent::Output(pb::TaskOutput { task_id: "a".into(), ..Default::default() }),
            status("a", pb::TaskState::Finished),
            status("b", pb::TaskState::Running),
        ]
        .into_iter()
        .map(|e| j.record(e).seq)
        .collect();
        assert_eq!(seqs, [1, 0, 2, 3, 4]);
        let w = j.welcome();
        assert_eq!(
            w.running.iter().map(|s| (s.task_id.as_str(), s.state())).collect::<Vec<_>>(),
            [("b", pb::TaskState::Running)]
        );
        assert_eq!(
            w.ended.iter().map(|s| (s.task_id.as_str(), s.state())).collect::<Vec<_>>(),
            [("a", pb::TaskState::Finished)]
        );
        j.ack(2);
        assert_eq!(j.unacked().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        j.ack(3);
        assert!(j.welcome().ended.is_empty(), "a's end is on the agent's disk");
        j.ack(3); // a duplicate ack changes nothing
        assert_eq!(j.unacked().count(), 1);
        assert_eq!(j.alive(), 1);
    }

    #[test]
    fn a_task_launched_and_not_running_yet_is_alive() {
        let mut j = Journal::default();
        j.launched(staging("a"));
        assert_eq!(j.welcome().running[0].state(), pb::TaskState::Staging);
        j.record(status("a", pb::TaskState::Failed));
        assert_eq!(j.alive(), 0);
        assert_eq!(j.welcome().ended[0].task_id, "a");
    }
}
