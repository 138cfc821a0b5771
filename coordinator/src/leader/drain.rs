//! Draining an agent (`skiff agent drain`, as `nomad node drain`): it is offered to no framework
//! from then on, so nothing new is placed there; its running tasks finish, or are killed once the
//! drain's deadline passes. The drain is in the agent's registry record, so it outlives restarts
//! of the agent and takeovers; it lasts until undone.

use std::time::Duration;

use prost::Message;
use skiff_proto as pb;
use skiff_proto::coordinator_message::Msg as Out;
use tracing::{info, warn};

use super::{Leader, now_ms};
use crate::error::{Error, Result};
use crate::registry::{Txn, keys};
use crate::task;

impl Leader {
    /// Drains an agent (its running tasks killed after `deadline`, if any), or undoes a drain.
    pub(super) async fn drain_agent(
        &mut self,
        agent_id: &str,
        deadline: Option<Duration>,
        undo: bool,
    ) -> Result<pb::AgentInfo> {
        let agent = self.agents.get(agent_id).ok_or_else(|| Error::NotFound(format!("agent {agent_id}")))?;
        let now = now_ms();
        let (drained_ms, drain_deadline_ms) = if undo {
            (0, 0)
        } else {
            // Drained again: the first drain's start stands, the new deadline replaces the old one.
            let since = if agent.draining() { agent.drained_ms } else { now };
            (since, deadline.map_or(0, |d| now.saturating_add(d.as_millis() as u64).max(1)))
        };
        let mut record = agent.record(agent_id, self.config.epoch);
        (record.drained_ms, record.drain_deadline_ms) = (drained_ms, drain_deadline_ms);
        self.commit(Txn::new().put(keys::agent(agent_id), record.encode_to_vec())).await?;
        let agent = self.agents.get_mut(agent_id).expect("checked above; the leader's loop is single-threaded");
        (agent.drained_ms, agent.drain_deadline_ms, agent.drain_kills_sent) = (drained_ms, drain_deadline_ms, false);
        if undo {
            info!(agent_id, "drain undone: the agent is offered again");
            let connected = agent.tx.is_some() && agent.reachable;
            self.allocator.activate_agent(agent_id, connected);
        } else {
            info!(agent_id, deadline_ms = drain_deadline_ms, "agent draining: no new placements");
            self.allocator.activate_agent(agent_id, false);
            self.rescind_agent_offers(agent_id, "agent draining");
        }
        self.kill_past_drain_deadlines();
        Ok(self.agent(agent_id).expect("the agent is known"))
    }

    /// Kills the tasks still running on agents whose drain deadline has passed (once per drain; an
    /// agent that is not connected when it passes is asked when it is back).
    pub(super) fn kill_past_drain_deadlines(&mut self) {
        let now = now_ms();
        let due: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.draining() && a.drain_deadline_ms > 0 && a.drain_deadline_ms <= now)
            .filter(|(_, a)| !a.drain_kills_sent && a.tx.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for agent_id in due {
            let mut doomed: Vec<String> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.agent_id() == agent_id && !task::is_terminal(t.state()))
                .map(|(id, _)| id.clone())
                .collect();
            doomed.sort();
            let mut sent = true;
            for task_id in &doomed {
                sent &= self.send_to_agent(&agent_id, Out::Kill(pb::KillTask { task_id: task_id.clone() }));
            }
            if sent {
                if !doomed.is_empty() {
                    info!(%agent_id, tasks = doomed.len(), "drain deadline passed; its tasks were killed");
                }
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.drain_kills_sent = true;
                }
            } else {
                warn!(%agent_id, "drain deadline passed but the kills did not all reach the agent; trying again");
            }
        }
    }
}
