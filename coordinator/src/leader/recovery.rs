//! Taking over: loading the state a previous leader left in the registry, and reconciling each
//! agent's tasks when it (re-)registers.
//!
//! A task launched by an earlier leader is neither lost nor launched twice: the registry says which
//! agent it was given to, and that agent's registration says what it runs. A STAGING task the agent
//! does not know is sent again (the launch never reached it; the agent refuses duplicates anyway); a
//! RUNNING task it does not know ended unobserved and is reported LOST; an unknown task it runs is
//! killed. Agents that do not come back within the re-registration window have their tasks reported
//! LOST.

use std::collections::{HashMap, HashSet};

use prost::Message;
use skiff_core::StatusReport;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{AgentEntry, Leader, TaskEntry, now_ms, std_now};
use crate::error::Result;
use crate::jobs::Attempt;
use crate::registry::{Txn, keys};
use crate::resources::Resources;
use crate::task;

/// Agents a new leader waits for.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) deadline: Instant,
    pub(super) waiting: HashSet<String>,
}

/// What the task records of a takeover hold besides the tasks themselves.
#[derive(Debug, Default)]
struct Found {
    /// PENDING tasks (submitted, task id, job id, resources), queued once all are read.
    pending: Vec<(u64, String, String, Resources)>,
    /// Ended tasks (ended, task id, framework id), retired once all are read.
    terminal: Vec<(u64, String, String)>,
    /// Agents with tasks placed on them: the re-registration window waits for them.
    waiting: HashSet<String>,
    /// Tasks whose job has no record.
    orphans: Vec<String>,
}

impl Leader {
    /// [`Leader::recover`] from `snapshot` (a follower's mirror of the registry, complete up to
    /// the election) instead of reading etcd; writes still go to the registry.
    pub async fn recover_from(&mut self, snapshot: std::sync::Arc<dyn crate::registry::Registry>) -> Result<()> {
        self.source = Some(snapshot);
        let recovered = self.recover().await;
        let started = std::time::Instant::now();
        self.source = None;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "registry snapshot dropped");
        recovered
    }

    /// Loads agents, frameworks, jobs, artifacts and tasks from the registry (call once, before
    /// [`Leader::run`]).
    pub async fn recover(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        self.recover_acl().await?;
        for loaded in self.load::<pb::AgentRecord>("agents/").await? {
            let record = loaded.record;
            let total = Resources::from(&record.resources.unwrap_or_default());
            let mut entry = AgentEntry::new(record.hostname, record.attributes, total);
            (entry.drained_ms, entry.drain_deadline_ms) = (record.drained_ms, record.drain_deadline_ms);
            self.agents.insert(record.agent_id, entry);
        }
        for loaded in self.load::<pb::FrameworkRecord>("frameworks/").await? {
            if let Some(info) = loaded.record.info {
                self.recovered_framework(info, loaded.record.principal);
            }
        }
        let mut job_ids = Vec::new();
        for loaded in self.load::<pb::JobRecord>("jobs/").await? {
            let record = loaded.record;
            if let Some(spec) = record.spec {
                job_ids.push(spec.job_id.clone());
                self.jobs.add_job(spec, record.submitted_ms, record.killed);
            }
        }
        for loaded in self.load::<pb::ArtifactRecord>("artifacts/").await? {
            let record = loaded.record;
            self.artifact_used.insert(record.sha256.clone(), Instant::now());
            self.artifacts.insert(record.sha256.clone(), record);
        }
        let mut tombstones: Vec<pb::CollectedRecord> =
            self.load::<pb::CollectedRecord>(keys::COLLECTED).await?.into_iter().map(|l| l.record).collect();
        tombstones.sort_by_key(|t| t.collected_ms);
        for tombstone in tombstones {
            self.recovered_tombstone(tombstone);
        }
        let mut found = Found::default();
        self.load_each::<pb::TaskRecord>("tasks/", |this, loaded| this.recovered_task(loaded, &mut found)).await?;
        let loaded = started.elapsed();
        let Found { mut pending, mut terminal, waiting, orphans } = found;
        if !orphans.is_empty() {
            info!(tasks = orphans.len(), "deleting tasks whose job has no record (a submit or collection cut short)");
            self.collect_tasks(orphans).await?;
        }
        pending.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        terminal.sort();
        info!(
            agents = self.agents.len(),
            tasks = self.tasks.len(),
            quarantined = self.quarantined,
            loaded_ms = loaded.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            pending = pending.len(),
            awaited_agents = waiting.len(),
            artifacts = self.artifacts.len(),
            "state recovered from the registry"
        );
        // Pending tasks are queued in submission order; those of killed jobs are killed, and those
        // written before jobs existed become jobs of one instance.
        self.jobs.reserve_queue(pending.len());
        for (_, task_id, mut job_id, resources) in pending {
            if job_id.is_empty() {
                job_id = self.adopt_into_job(&task_id).await?;
            } else if self.jobs.is_killed(&job_id) {
                self.kill(&task_id).await?;
                continue;
            }
            self.jobs.queue_recovered(task_id, job_id, resources);
        }
        // Instances a partly written submit left without a task, and retries that were waiting.
        let missing: Vec<Attempt> = job_ids
            .iter()
            .flat_map(|job_id| {
                self.jobs.missing_instances(job_id).into_iter().map(|instance| Attempt {
                    job_id: job_id.clone(),
                    instance,
                    attempt: 0,
                })
            })
            .collect();
        if !missing.is_empty() {
            self.create_attempts(&missing).await?;
        }
        self.jobs.schedule_retries(std_now(), now_ms());
        for (stamp, task_id, framework_id) in terminal {
            self.task_ended(&task_id, &framework_id, stamp);
            self.retire(task_id);
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "recovered tasks queued");
        if !waiting.is_empty() {
            self.recovery = Some(Window { deadline: Instant::now() + self.config.reregister_timeout, waiting });
        }
        Ok(())
    }

    /// Indexes one task record read back at a takeover.
    fn recovered_task(&mut self, loaded: super::records::Loaded<pb::TaskRecord>, found: &mut Found) {
        let (record, mod_revision) = (loaded.record, loaded.mod_revision);
        let Some(status) = record.status.as_ref() else { return };
        let task_id = status.task_id.clone();
        let state = status.state();
        let stamp = status.timestamp_ms;
        if !record.job_id.is_empty()
            && self.jobs.spec(&record.job_id).is_none()
            && (state == TaskState::Pending || task::is_terminal(state))
        {
            // A task of a submit that did not reach its job record, or of a job collected
            // halfway: it goes too.
            found.orphans.push(task_id);
            return;
        }
        if matches!(state, TaskState::Staging | TaskState::Running | TaskState::Unreachable)
            && !found.waiting.contains(&status.agent_id)
        {
            found.waiting.insert(status.agent_id.clone());
        }
        let job_id = record.job_id.clone();
        let (instance, attempt) = (record.instance, record.attempt);
        let framework_id = record.framework_id.clone();
        let entry = TaskEntry::new(record, mod_revision);
        let resources = entry.resources;
        self.tasks.insert(task_id.clone(), Box::new(entry));
        if !job_id.is_empty() {
            let queued_state = if state == TaskState::Pending { TaskState::Unspecified } else { state };
            self.jobs.add_task(&task_id, &job_id, instance, attempt, queued_state, resources);
        }
        match state {
            TaskState::Pending => found.pending.push((stamp, task_id, job_id, resources)),
            s if task::is_terminal(s) => found.terminal.push((stamp, task_id, framework_id)),
            _ => {}
        }
    }

    /// Makes a PENDING task without a job (written by a coordinator before jobs existed) a job of
    /// one instance, so that the job scheduler places it; answers the job's id.
    async fn adopt_into_job(&mut self, task_id: &str) -> Result<String> {
        let Some(entry) = self.tasks.get(task_id) else { return Ok(String::new()) };
        let (mut record, resources, mod_revision) = (entry.record.clone(), entry.resources, entry.mod_revision);
        let spec = record.spec.clone().unwrap_or_default();
        let job_id = format!("j-{task_id}");
        let job = pb::JobSpec {
            job_id: job_id.clone(),
            name: spec.name.clone(),
            instances: 1,
            task: Some(spec),
            ..Default::default()
        };
        let submitted_ms = record.status.as_ref().map_or(0, |s| s.timestamp_ms);
        let job_record =
            pb::JobRecord { spec: Some(job.clone()), submitted_ms, killed: false, leader_epoch: self.config.epoch };
        record.job_id = job_id.clone();
        record.leader_epoch = self.config.epoch;
        let key = keys::task(task_id);
        let txn = Txn::new()
            .if_mod_revision(&key, mod_revision)
            .put(key, record.encode_to_vec())
            .if_mod_revision(keys::job(&job_id), 0)
            .put(keys::job(&job_id), job_record.encode_to_vec());
        let revision = self.commit(txn).await?;
        if let Some(entry) = self.tasks.get_mut(task_id) {
            entry.record = record;
            entry.mod_revision = revision;
        }
        self.jobs.add_job(job, submitted_ms, false);
        self.jobs.add_task(task_id, &job_id, 0, 0, TaskState::Unspecified, resources);
        info!(task_id, %job_id, "pending task from before jobs adopted into a job of one instance");
        Ok(job_id)
    }

    /// Reconciles what a (re-)registering agent runs with what this leader believes it runs.
    /// `fresh`: the offer book did not know the agent yet (first registration under this leader).
    pub(super) async fn reconcile_agent(&mut self, agent_id: &str, reported: Vec<StatusReport>, fresh: bool) {
        let mut reported_ids = HashMap::new();
        for status in reported {
            let ours = self
                .tasks
                .get(&status.task_id)
                .is_some_and(|t| t.agent_id() == agent_id && !task::is_terminal(t.state()));
            if !ours && !task::is_terminal(status.state()) {
                let gave_up = self.tasks.get(&status.task_id).is_some_and(|t| t.agent_id() == agent_id);
                let why = if gave_up { "the leader gave up on it (LOST)" } else { "this leader did not give it" };
                warn!(agent_id, task_id = %status.task_id, why, "agent runs a task it should not; killing it");
                self.send_to_agent(agent_id, Out::Kill(pb::KillTask { task_id: status.task_id.clone() }));
            } else if ours && !task::is_terminal(status.state()) && self.unwanted(&status.task_id) {
                info!(agent_id, task_id = %status.task_id, "task of a removed framework or killed job; killing it");
                self.send_to_agent(agent_id, Out::Kill(pb::KillTask { task_id: status.task_id.clone() }));
            }
            reported_ids.insert(status.task_id.clone(), status);
        }
        let reported = reported_ids;
        let mut mine: Vec<(String, TaskState, Resources)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id() == agent_id && !task::is_terminal(t.state()))
            .map(|(id, t)| (id.clone(), t.state(), t.resources))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        for (task_id, state, resources) in mine {
            if fresh {
                let framework_id = self.tasks.get(&task_id).map(|t| t.framework_id().to_owned()).unwrap_or_default();
                self.reserve(&framework_id, agent_id, &resources);
            }
            if let Some(status) = reported.get(&task_id) {
                if state == TaskState::Unreachable || (state == TaskState::Staging && status.state() != state) {
                    // Back from a partition (or a launch whose RUNNING was not seen): take its word.
                    self.status_update(agent_id, status.clone().into_inner()).await;
                }
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

    /// Whether a live task should not run any more: its framework was removed, or its job killed.
    fn unwanted(&self, task_id: &str) -> bool {
        let Some(t) = self.tasks.get(task_id) else { return false };
        let framework = t.framework_id();
        if framework == crate::jobs::FRAMEWORK_ID {
            self.jobs.is_killed(&t.record.job_id)
        } else {
            !self.frameworks.contains_key(framework)
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

    pub(super) async fn mark_lost(&mut self, task_id: &str, agent_id: &str, message: String) {
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
