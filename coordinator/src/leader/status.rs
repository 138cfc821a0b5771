//! What the leader tells operators about the fleet: the cluster at a glance (`skiff status`, the
//! metrics' gauges), its agents (`skiff agents`) and its tasks (`skiff tasks`).
//!
//! Each answer is read from the leader's memory in one turn of its loop, so it is consistent: the
//! counts of a status add up. Reading every task is O(tasks held), a few milliseconds for 100,000.

use std::collections::BTreeMap;

use skiff_proto as pb;
use skiff_proto::TaskState;

use super::{AgentEntry, Leader, TaskEntry};
use crate::resources::Resources;
use crate::task;

/// Running task ids listed per agent (`skiff agent status`); the count is always exact.
const AGENT_TASK_IDS: usize = 1000;

/// The tasks `skiff tasks` asks for (checked at the service's edge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Empty: every state.
    pub states: Vec<TaskState>,
    pub job_id: Option<String>,
    pub agent_id: Option<String>,
    pub limit: usize,
}

impl TaskQuery {
    fn matches(&self, entry: &TaskEntry) -> bool {
        (self.states.is_empty() || self.states.contains(&entry.state()))
            && self.job_id.as_deref().is_none_or(|j| entry.record.job_id == j)
            && self.agent_id.as_deref().is_none_or(|a| entry.agent_id() == a)
    }
}

impl Leader {
    /// The cluster at a glance (the service adds the leader's address and the replicas).
    pub(super) fn cluster_status(&self) -> pb::ClusterStatus {
        let mut status = pb::ClusterStatus { epoch: self.config.epoch, ..Default::default() };
        let (mut total, mut used) = (Resources::default(), Resources::default());
        for agent in self.agents.values() {
            match (agent.tx.is_some(), agent.reachable) {
                (true, true) => {
                    status.agents_connected += 1;
                    total = total.saturating_add(&agent.total);
                    used = used.saturating_add(&agent.used);
                }
                (true, false) => status.agents_unreachable += 1,
                (false, _) => status.agents_disconnected += 1,
            }
            if agent.draining() {
                status.agents_draining += 1;
            }
        }
        status.capacity_total = Some(total.into());
        status.capacity_used = Some(used.into());
        let mut by_state: BTreeMap<i32, u64> = BTreeMap::new();
        let mut watchers = 0;
        for entry in self.tasks.values() {
            *by_state.entry(entry.state() as i32).or_default() += 1;
            watchers += entry.watchers.len() as u64;
        }
        status.tasks = by_state.into_iter().map(|(state, tasks)| pb::TaskStateCount { state, tasks }).collect();
        status.watchers = watchers;
        status.finished_tasks_kept = self.retention.finished() as u64;
        status.jobs_live = self.jobs.live_jobs() as u32;
        status.job_queue_depth = self.jobs.pending() as u64;
        status.job_policy = self.jobs.policy().to_string();
        status.frameworks_connected = self.connected_frameworks() as u32;
        status.offers_outstanding = self.offers.outstanding() as u64;
        status.quarantined_records = self.quarantined as u64;
        status
    }

    /// Tasks matching `query`, newest first, and how many more matched past its limit.
    pub(super) fn list_tasks(&self, query: &TaskQuery) -> pb::ListTasksResponse {
        let mut matching: Vec<(u64, &String, &TaskEntry)> = self
            .tasks
            .iter()
            .filter(|(_, t)| query.matches(t))
            .map(|(id, t)| (t.submitted_ms(), id, t.as_ref()))
            .collect();
        let more = matching.len().saturating_sub(query.limit) as u64;
        // Newest first; ties (same millisecond) by id, so that pages are stable.
        let by_newest =
            |a: &(u64, &String, &TaskEntry), b: &(u64, &String, &TaskEntry)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if matching.len() > query.limit {
            matching.select_nth_unstable_by(query.limit, by_newest);
            matching.truncate(query.limit);
        }
        matching.sort_unstable_by(by_newest);
        let tasks = matching
            .into_iter()
            .map(|(submitted_ms, id, t)| pb::TaskSummary {
                task_id: id.clone(),
                name: t.record.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                job_id: t.record.job_id.clone(),
                framework_id: t.record.framework_id.clone(),
                status: t.record.status.clone(),
                submitted_ms,
                resources: Some(t.resources.into()),
            })
            .collect();
        pb::ListTasksResponse { tasks, more }
    }

    /// Every agent the leader knows, by id.
    pub(super) fn list_agents(&self) -> Vec<pb::AgentInfo> {
        let mut running: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for (id, t) in &self.tasks {
            if !t.agent_id().is_empty() && !task::is_terminal(t.state()) {
                running.entry(t.agent_id()).or_default().push(id);
            }
        }
        let mut agents: Vec<pb::AgentInfo> = self
            .agents
            .iter()
            .map(|(id, a)| agent_info(id, a, running.remove(id.as_str()).unwrap_or_default()))
            .collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        agents
    }

    /// One agent (`skiff agent status`).
    pub(super) fn agent(&self, agent_id: &str) -> Option<pb::AgentInfo> {
        let agent = self.agents.get(agent_id)?;
        let running = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id() == agent_id && !task::is_terminal(t.state()))
            .map(|(id, _)| id)
            .collect();
        Some(agent_info(agent_id, agent, running))
    }
}

fn agent_info(agent_id: &str, a: &AgentEntry, mut running: Vec<&String>) -> pb::AgentInfo {
    running.sort();
    let mut cached_modules: Vec<String> = a.cached_modules.iter().cloned().collect();
    cached_modules.sort();
    pb::AgentInfo {
        agent_id: agent_id.to_owned(),
        hostname: a.hostname.clone(),
        total: Some(a.total.into()),
        used: Some(a.used.into()),
        attributes: a.attributes.clone(),
        connected: a.tx.is_some() && a.reachable,
        unreachable: a.tx.is_some() && !a.reachable,
        draining: a.draining(),
        drain_deadline_ms: a.drain_deadline_ms,
        running_tasks: running.len() as u32,
        running_task_ids: running.into_iter().take(AGENT_TASK_IDS).cloned().collect(),
        cached_modules,
        last_seen_ms_ago: a.last_seen.elapsed().as_millis() as u64,
    }
}
