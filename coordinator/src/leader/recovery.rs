//! Taking over: loading the state a previous leader left in the registry, and reconciling each
//! agent's tasks when it (re-)registers.
//!
//! A task launched by an earlier leader is neither lost nor launched twice: the registry says which
//! agent it was given to, and that agent's registration says what it runs. A STAGING task the agent
//! does not know is sent again (the launch never reached it; the agent refuses duplicates anyway); a
//! RUNNING task it does not know ended unobserved and is reported LOST; an unknown task it runs is
//! killed. Agents that do not come back within the re-registration window have their tasks reported
//! LOST.

use std::collections::HashSet;

use prost::Message;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{AgentEntry, Leader, TaskEntry, now_ms};
use crate::error::{Error, Result};
use crate::registry::RegistryError;
use crate::resources::Resources;
use crate::task;

/// Agents a new leader waits for.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) deadline: Instant,
    pub(super) waiting: HashSet<String>,
}

fn corrupt(key: &str, err: prost::DecodeError) -> Error {
    Error::Registry(RegistryError::Unavailable(format!("registry record {key} cannot be decoded: {err}")))
}

impl Leader {
    /// Loads agents and tasks from the registry (call once, before [`Leader::run`]).
    pub async fn recover(&mut self) -> Result<()> {
        for (key, value) in self.registry.range("agents/").await? {
            let record = pb::AgentRecord::decode(&value.value[..]).map_err(|e| corrupt(&key, e))?;
            let total = Resources::from(&record.resources.unwrap_or_default());
            let entry =
                AgentEntry { session: 0, hostname: record.hostname, attributes: record.attributes, total, tx: None };
            self.agents.insert(record.agent_id, entry);
        }
        for (key, value) in self.registry.range("artifacts/").await? {
            let record = pb::ArtifactRecord::decode(&value.value[..]).map_err(|e| corrupt(&key, e))?;
            self.artifact_used.insert(record.sha256.clone(), Instant::now());
            self.artifacts.insert(record.sha256.clone(), record);
        }
        let mut pending = Vec::new();
        let mut terminal = Vec::new();
        let mut waiting = HashSet::new();
        for (key, value) in self.registry.range("tasks/").await? {
            let record = pb::TaskRecord::decode(&value.value[..]).map_err(|e| corrupt(&key, e))?;
            let Some(status) = record.status.clone() else { continue };
            let resources = Resources::from(&record.spec.as_ref().and_then(|s| s.resources).unwrap_or_default());
            let task_id = status.task_id.clone();
            let state = status.state();
            let stamp = status.timestamp_ms;
            if matches!(state, TaskState::Staging | TaskState::Running) {
                waiting.insert(status.agent_id.clone());
            }
            let mut entry = TaskEntry {
                record,
                resources,
                mod_revision: value.mod_revision,
                events: Vec::new(),
                watchers: Vec::new(),
            };
            entry.publish(pb::TaskEvent { event: Some(pb::task_event::Event::Status(status)) });
            self.tasks.insert(task_id.clone(), entry);
            match state {
                TaskState::Pending => pending.push((stamp, task_id, resources)),
                s if task::is_terminal(s) => terminal.push((stamp, task_id)),
                _ => {}
            }
        }
        pending.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        terminal.sort();
        info!(
            agents = self.agents.len(),
            tasks = self.tasks.len(),
            pending = pending.len(),
            awaited_agents = waiting.len(),
            artifacts = self.artifacts.len(),
            "state recovered from the registry"
        );
        for (_, task_id, resources) in pending {
            self.jobs.enqueue(task_id, resources);
        }
        for (_, task_id) in terminal {
            self.retire(task_id);
        }
        if !waiting.is_empty() {
            self.recovery = Some(Window { deadline: Instant::now() + self.config.reregister_timeout, waiting });
        }
        Ok(())
    }

    /// Reconciles what a (re-)registering agent runs with what this leader believes it runs.
    /// `fresh`: the offer book did not know the agent yet (first registration under this leader).
    pub(super) async fn reconcile_agent(&mut self, agent_id: &str, reported: Vec<pb::TaskStatus>, fresh: bool) {
        let mut reported_ids = HashSet::new();
        for status in reported {
            let ours = self
                .tasks
                .get(&status.task_id)
                .is_some_and(|t| t.agent_id() == agent_id && !task::is_terminal(t.state()));
            if !ours && !task::is_terminal(status.state()) {
                warn!(agent_id, task_id = %status.task_id, "agent runs a task this leader did not give it; killing it");
                self.send_to_agent(agent_id, Out::Kill(pb::KillTask { task_id: status.task_id.clone() }));
            }
            reported_ids.insert(status.task_id);
        }
        let mut mine: Vec<(String, TaskState, Resources)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id() == agent_id && !task::is_terminal(t.state()))
            .map(|(id, t)| (id.clone(), t.state(), t.resources))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        for (task_id, state, resources) in mine {
            if fresh {
                self.offers.reserve(agent_id, &resources);
            }
            if reported_ids.contains(&task_id) {
                continue;
            }
            if state == TaskState::Staging {
                info!(agent_id, %task_id, "agent does not know a task launched on it; sending the launch again");
                let spec = self.tasks.get(&task_id).and_then(|t| t.record.spec.clone());
                self.send_to_agent(agent_id, Out::Launch(pb::LaunchTask { spec }));
            } else {
                let message = format!("agent {agent_id} re-registered without this task");
                self.mark_lost(&task_id, agent_id, message).await;
            }
        }
        if let Some(window) = self.recovery.as_mut() {
            window.waiting.remove(agent_id);
            if window.waiting.is_empty() {
                info!("every agent with tasks has re-registered");
                self.recovery = None;
            }
        }
    }

    /// The re-registration window closed: tasks of agents that did not come back are lost.
    pub(super) async fn end_recovery(&mut self) {
        let Some(window) = self.recovery.take() else { return };
        let mut lost: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| window.waiting.contains(t.agent_id()) && !task::is_terminal(t.state()))
            .map(|(id, t)| (id.clone(), t.agent_id().to_owned()))
            .collect();
        lost.sort();
        for (task_id, agent_id) in lost {
            let message = format!(
                "agent {agent_id} did not re-register within {:?} of the leader takeover",
                self.config.reregister_timeout
            );
            self.mark_lost(&task_id, &agent_id, message).await;
        }
    }

    async fn mark_lost(&mut self, task_id: &str, agent_id: &str, message: String) {
        warn!(task_id, agent_id, %message, "task lost");
        let status = pb::TaskStatus {
            task_id: task_id.to_owned(),
            state: TaskState::Lost as i32,
            reason: pb::Reason::AgentLost as i32,
            message,
            agent_id: agent_id.to_owned(),
            timestamp_ms: now_ms(),
            ..Default::default()
        };
        if let Err(err) = self.set_status(status).await {
            warn!(task_id, %err, "could not record a lost task");
        }
    }
}
