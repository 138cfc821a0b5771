//! Agent membership: registration, heartbeats, unreachable agents, and the status updates agents send.
//!
//! Heartbeats are never written to the registry: an agent's liveness is the leader's memory of when
//! it last heard from it. An agent silent for `agent_timeout` is unreachable: it gets no offers, its
//! outstanding offers are rescinded and its tasks are reported UNREACHABLE. It is reconciled when it
//! registers again (a stream that outlived the silence is closed so that it does).

use prost::Message;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{AgentEntry, AgentSender, Leader, now_ms, std_now};
use crate::error::{Error, Result};
use crate::registry::{Txn, keys};
use crate::resources::Resources;
use skiff_core::{AgentReport, Registration};

impl Leader {
    pub(super) async fn agent_connect(&mut self, register: Registration, tx: AgentSender) -> Result<u64> {
        if register.highest_epoch > self.config.epoch {
            return Err(Error::InvalidArgument(format!(
                "agent {} has seen leader epoch {}, newer than this leader's {}",
                register.agent_id, register.highest_epoch, self.config.epoch
            )));
        }
        let mut register = register;
        let reported = register.take_tasks();
        let register = register.into_inner();
        let total = Resources::from(&register.resources.unwrap_or_default());
        // A drain outlives the agent's restarts (and the leader's).
        let (drained_ms, drain_deadline_ms) =
            self.agents.get(&register.agent_id).map_or((0, 0), |a| (a.drained_ms, a.drain_deadline_ms));
        let record = pb::AgentRecord {
            agent_id: register.agent_id.clone(),
            hostname: register.hostname.clone(),
            resources: Some(total.into()),
            attributes: register.attributes.clone(),
            leader_epoch: self.config.epoch,
            drained_ms,
            drain_deadline_ms,
        };
        self.commit(Txn::new().put(keys::agent(&record.agent_id), record.encode_to_vec())).await?;

        self.next_session += 1;
        let session = self.next_session;
        let id = register.agent_id;
        let fresh = match self.agents.get(&id) {
            Some(old) => {
                if old.tx.is_some() {
                    info!(agent_id = %id, "agent reconnected; replacing its previous stream");
                }
                old.session == 0
            }
            None => true,
        };
        let entry = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| AgentEntry::new(register.hostname.clone(), register.attributes.clone(), total));
        entry.session = session;
        entry.hostname = register.hostname;
        entry.attributes = register.attributes;
        entry.total = total;
        entry.tx = Some(tx);
        entry.last_seen = Instant::now();
        entry.reachable = true;
        entry.cached_modules = register.cached_modules.into_iter().collect();
        self.allocator.add_agent(&id, total);
        // A drained agent is offered to no one.
        self.allocator.activate_agent(&id, drained_ms == 0);
        info!(agent_id = %id, hostname = %self.agents[&id].hostname, %total, "agent registered");
        self.send_to_agent(
            &id,
            Out::Registered(pb::Registered {
                agent_id: id.clone(),
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
                // First registration under this leader: it has not seen this agent's output.
                replay_output: fresh,
            }),
        );
        self.reconcile_agent(&id, reported, fresh).await;
        Ok(session)
    }

    pub(super) fn agent_disconnect(&mut self, agent_id: &str, session: u64) {
        if let Some(agent) = self.agents.get_mut(agent_id)
            && agent.session == session
        {
            agent.tx = None;
            info!(agent_id, "agent disconnected");
            self.allocator.activate_agent(agent_id, false);
            self.rescind_agent_offers(agent_id, "agent disconnected");
        }
    }

    pub(super) fn agent_message(&mut self, agent_id: &str, session: u64, report: AgentReport) {
        let Some(agent) = self.agents.get_mut(agent_id).filter(|a| a.session == session) else {
            debug!(agent_id, "message from a replaced agent stream dropped");
            return;
        };
        agent.last_seen = Instant::now();
        if !agent.reachable {
            // Heard from again on the same stream: have it register anew so that its tasks are reconciled.
            info!(agent_id, "unreachable agent heard from again; asking it to re-register");
            if let Some(tx) = agent.tx.take() {
                let _ = tx.try_send(Err(tonic::Status::unavailable("missed heartbeats: register again")));
            }
            return;
        }
        // Node authorization: usage and output count only for tasks placed on the sending agent.
        let placed_here =
            |leader: &Self, task_id: &str| leader.tasks.get(task_id).is_some_and(|t| t.agent_id() == agent_id);
        match report {
            AgentReport::Register => warn!(agent_id, "duplicate register on an open stream ignored"),
            AgentReport::Heartbeat => {}
            AgentReport::Status(status) => self.queue_status(agent_id, status.into_inner()),
            AgentReport::Usage(report) => {
                if !placed_here(self, &report.task_id) {
                    return self.not_placed(agent_id, &report.task_id);
                }
                // Live usage is kept in memory only; the terminal status carries the final figures.
                let report = report.into_inner();
                if let Some(status) = self.tasks.get_mut(&report.task_id).and_then(|t| t.record.status.as_mut()) {
                    status.usage = report.usage;
                }
            }
            AgentReport::Output(output) => {
                if !placed_here(self, &output.task_id) {
                    return self.not_placed(agent_id, &output.task_id);
                }
                self.queue_output(output);
            }
        }
    }

    /// Usage or output for a task not placed on the agent that sent it: dropped.
    fn not_placed(&self, agent_id: &str, task_id: &str) {
        if self.tasks.contains_key(task_id) {
            warn!(agent_id, task_id, "usage or output for a task not placed on this agent dropped");
        } else {
            // A task collected or retired already (agents send kept output again).
            debug!(agent_id, task_id, "usage or output for a task this leader does not hold dropped");
        }
    }

    /// Marks agents silent for longer than the agent timeout unreachable.
    pub(super) async fn check_agents(&mut self) {
        // An agent that stopped reading its stream (its buffer is full, the reason in its last
        // slot) is disconnected; it registers again and is reconciled.
        let mut stuck: Vec<(String, u64)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.tx.as_ref().is_some_and(|tx| tx.capacity() == 0))
            .map(|(id, a)| (id.clone(), a.session))
            .collect();
        stuck.sort();
        for (agent_id, session) in stuck {
            warn!(%agent_id, "agent stopped reading its stream; disconnected");
            self.agent_disconnect(&agent_id, session);
        }
        let timeout = self.config.agent_timeout;
        let mut silent: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| a.reachable && a.last_seen.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        silent.sort();
        for agent_id in silent {
            self.mark_unreachable(&agent_id).await;
        }
        // Silent past the partition window: the agent has killed its tasks by now; they are lost.
        let lost_after = self.config.agent_lost_after;
        let mut gone: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state() == TaskState::Unreachable)
            .filter(|(_, t)| {
                self.agents.get(t.agent_id()).is_some_and(|a| !a.reachable && a.last_seen.elapsed() >= lost_after)
            })
            .map(|(id, t)| (id.clone(), t.agent_id().to_owned()))
            .collect();
        gone.sort();
        for (task_id, agent_id) in gone {
            let message = format!("agent {agent_id} unreachable for {lost_after:?}");
            self.mark_lost(&task_id, &agent_id, message).await;
        }
    }

    async fn mark_unreachable(&mut self, agent_id: &str) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        warn!(agent_id, silent = ?agent.last_seen.elapsed(), "agent missed its heartbeats: unreachable");
        agent.reachable = false;
        self.allocator.activate_agent(agent_id, false);
        self.rescind_agent_offers(agent_id, "agent unreachable");
        let mut running: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id() == agent_id && matches!(t.state(), TaskState::Staging | TaskState::Running))
            .map(|(id, _)| id.clone())
            .collect();
        running.sort();
        for task_id in running {
            let status = pb::TaskStatus {
                task_id: task_id.clone(),
                state: TaskState::Unreachable as i32,
                reason: pb::Reason::AgentUnreachable as i32,
                message: format!("agent {agent_id} missed its heartbeats for {:?}", self.config.agent_timeout),
                agent_id: agent_id.to_owned(),
                timestamp_ms: now_ms(),
                ..Default::default()
            };
            if let Err(err) = self.set_status(status).await {
                warn!(%task_id, %err, "could not record an unreachable task");
            }
        }
    }

    /// Rescinds every offer on an agent and gives its resources back to the allocator.
    pub(super) fn rescind_agent_offers(&mut self, agent_id: &str, reason: &str) {
        let now = std_now();
        for offer in self.offers.rescind_agent(agent_id) {
            self.allocator.recover(&offer.framework_id, agent_id, offer.resources, None, now);
            self.send_rescind(&offer.framework_id, &offer.id, reason);
        }
    }

    /// Agents' cached modules, sorted (for offers).
    pub(super) fn cached_modules(&self, agent_id: &str) -> Vec<String> {
        let mut mods: Vec<String> =
            self.agents.get(agent_id).map(|a| a.cached_modules.iter().cloned().collect()).unwrap_or_default();
        mods.sort();
        mods
    }
}
