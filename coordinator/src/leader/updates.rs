//! Status updates from agents, written to the registry in batches. Updates (and task output, to
//! keep its order with them) are queued as they arrive and flushed before anything else is handled,
//! once the commands already queued have been: each flush writes the new records of up to
//! [`TXN_OPS`] tasks (and [`TXN_BYTES`]) per fenced transaction (a task's RUNNING and FINISHED in one batch
//! are one write), then applies every update in arrival order — published to watchers, handed to
//! the task's framework, acknowledged to its agent. An update that is not written is not
//! acknowledged: the agent sends it again.

use std::collections::HashMap;

use prost::Message;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tracing::warn;

use super::Leader;
use crate::output::Fresh;
use crate::registry::{TXN_BYTES, TXN_OPS, Txn, keys};
use crate::task::{self, Transition};

/// What an agent sent that is applied in order with status updates.
#[derive(Debug)]
pub(super) enum Incoming {
    Status { agent_id: String, status: pb::TaskStatus },
    Output(pb::TaskOutput),
}

/// One decided item of a batch.
#[expect(clippy::large_enum_variant, reason = "short-lived, one per message of a batch: no box per update")]
enum Step {
    Output(pb::TaskOutput),
    /// Acknowledged as it is (a duplicate, an invalid transition, an unknown task).
    Ack {
        agent_id: String,
        ack: Out,
    },
    /// Written, then applied and acknowledged.
    Write {
        agent_id: String,
        ack: Out,
        status: pb::TaskStatus,
        record: pb::TaskRecord,
    },
}

impl Leader {
    /// Queues a status update from an agent (written at the next flush).
    pub(super) fn queue_status(&mut self, agent_id: &str, status: pb::TaskStatus) {
        self.incoming.push(Incoming::Status { agent_id: agent_id.to_owned(), status });
    }

    /// Publishes task output: at once, unless updates are queued that it must not overtake.
    pub(super) fn queue_output(&mut self, output: skiff_core::OutputChunk) {
        let output = output.into_inner();
        if self.incoming.is_empty() {
            self.publish_output(output);
        } else {
            self.incoming.push(Incoming::Output(output));
        }
    }

    fn publish_output(&mut self, output: pb::TaskOutput) {
        // Chunks past `MAX_OUTPUT_CHUNK_BYTES` were refused where they arrived (`OutputChunk`).
        let Some(task) = self.tasks.get_mut(&output.task_id) else { return };
        let chunk = match task.output.fresh(output) {
            Fresh::New(chunk) => chunk,
            Fresh::AfterGap { chunk, missing } => {
                warn!(task_id = %chunk.task_id, stream = ?chunk.stream(), missing, "task output lost before this chunk");
                chunk
            }
            Fresh::Duplicate => return,
            Fresh::Invalid(chunk) => {
                warn!(task_id = %chunk.task_id, offset = ?chunk.offset, "task output with an impossible offset dropped");
                return;
            }
        };
        // What the leader keeps of a task's output is bounded whatever agents send.
        let cap = self.config.max_task_output_bytes;
        let mut chunk = chunk;
        if task.output_capped {
            return;
        }
        let room = cap.saturating_sub(task.output_bytes);
        if chunk.data.len() as u64 > room {
            chunk.data.truncate(room as usize);
            chunk.truncated = true;
            task.output_capped = true;
            warn!(task_id = %chunk.task_id, cap, "task output past the leader's bound; the rest is dropped");
        }
        task.output_bytes += chunk.data.len() as u64;
        let event = pb::TaskEvent { event: Some(pb::task_event::Event::Output(chunk)) };
        if task::is_terminal(task.state()) {
            // Output an agent sends again after the end (to a leader that took over): it goes
            // before the end in the history, where a watcher expects it.
            let end = task.events.iter().rposition(|e| matches!(e.event, Some(pb::task_event::Event::Status(_))));
            task.events.insert(end.unwrap_or(task.events.len()), event);
        } else {
            task.publish(event);
        }
    }

    /// Handles one status update now (with whatever was queued before it).
    pub(super) async fn status_update(&mut self, agent_id: &str, status: pb::TaskStatus) {
        self.queue_status(agent_id, status);
        self.flush_updates().await;
    }

    /// Writes and applies everything queued, in order.
    pub(super) async fn flush_updates(&mut self) {
        let mut items = std::mem::take(&mut self.incoming).into_iter().peekable();
        while items.peek().is_some() && !self.stop.is_cancelled() {
            // One transaction's worth: items until TXN_OPS tasks (or TXN_BYTES) have a record to write.
            let mut steps = Vec::new();
            let mut records: HashMap<String, pb::TaskRecord> = HashMap::new();
            let mut bytes = 0;
            while let Some(item) = items.peek() {
                if let Incoming::Status { status, .. } = item
                    && !records.contains_key(&status.task_id)
                {
                    // Records grow by a status each: the record as kept, plus room for its status.
                    let size = self.tasks.get(&status.task_id).map_or(0, |t| t.record.encoded_len()) + 512;
                    if !records.is_empty() && (records.len() >= TXN_OPS || bytes + size > TXN_BYTES) {
                        break;
                    }
                    bytes += size;
                }
                match items.next().expect("peeked") {
                    Incoming::Output(output) => steps.push(Step::Output(output)),
                    Incoming::Status { agent_id, status } => steps.push(self.decide(agent_id, status, &mut records)),
                }
            }
            let written = if records.is_empty() {
                None
            } else {
                let mut txn = Txn::new();
                for (task_id, record) in &records {
                    let key = keys::task(task_id);
                    let revision = self.tasks.get(task_id).map_or(0, |t| t.mod_revision);
                    txn = txn.if_mod_revision(&key, revision).put(key, record.encode_to_vec());
                }
                match self.commit(txn).await {
                    Ok(revision) => Some(revision),
                    Err(err) => {
                        // Not acknowledged: the agents send them again.
                        warn!(%err, tasks = records.len(), "could not persist status updates");
                        None
                    }
                }
            };
            for step in steps {
                match step {
                    Step::Output(output) => self.publish_output(output),
                    Step::Ack { agent_id, ack } => {
                        self.send_to_agent(&agent_id, ack);
                    }
                    Step::Write { agent_id, ack, status, record } => {
                        if let Some(revision) = written {
                            self.status_written(status, record, revision).await;
                            self.send_to_agent(&agent_id, ack);
                        }
                    }
                }
            }
        }
    }

    /// Checks one update against the task's state after the updates before it in this batch.
    fn decide(
        &mut self,
        agent_id: String,
        mut status: pb::TaskStatus,
        records: &mut HashMap<String, pb::TaskRecord>,
    ) -> Step {
        let ack = Out::Ack(pb::AckStatus { task_id: status.task_id.clone(), update_id: status.update_id.clone() });
        status.agent_id = agent_id.clone();
        let Some(entry) = self.tasks.get(&status.task_id) else {
            warn!(agent_id, task_id = %status.task_id, "status for an unknown task");
            if !task::is_terminal(status.state()) {
                self.send_to_agent(&agent_id, Out::Kill(pb::KillTask { task_id: status.task_id.clone() }));
            }
            return Step::Ack { agent_id, ack };
        };
        if entry.agent_id() != agent_id {
            // Node authorization: an agent reports only on the tasks placed on it. Acknowledged
            // (so it stops sending it) and otherwise ignored; whatever it runs under that id it
            // is told to kill.
            warn!(
                agent_id,
                task_id = %status.task_id,
                placed_on = entry.agent_id(),
                "status for a task placed on another agent refused"
            );
            if !task::is_terminal(status.state()) {
                self.send_to_agent(&agent_id, Out::Kill(pb::KillTask { task_id: status.task_id.clone() }));
            }
            return Step::Ack { agent_id, ack };
        }
        let current = records
            .get(&status.task_id)
            .map_or(entry.state(), |r| r.status.as_ref().map_or(TaskState::Pending, |s| s.state()));
        match task::transition(current, status.state()) {
            Transition::Apply => {
                if status.state() == TaskState::Running
                    && let Some(pb::task_spec::Kind::Wasm(w)) = entry.record.spec.as_ref().and_then(|s| s.kind.as_ref())
                {
                    let module = w.module_sha256.clone();
                    if let Some(agent) = self.agents.get_mut(&agent_id) {
                        agent.cached_modules.insert(module);
                    }
                }
                let task_id = status.task_id.clone();
                let record = self.status_record(&mut status, records.get(&task_id));
                records.insert(task_id, record.clone());
                Step::Write { agent_id, ack, status, record }
            }
            Transition::Duplicate => Step::Ack { agent_id, ack },
            Transition::Invalid => {
                warn!(agent_id, task_id = %status.task_id, from = ?current, to = ?status.state(), "invalid status transition ignored");
                Step::Ack { agent_id, ack }
            }
        }
    }
}
