//! Placement: allocation cycles turned into offers, the built-in job scheduler's answers to its
//! offers, and launches.

use std::collections::HashMap;

use prost::Message;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out, scheduler_event::Event};
use tracing::{debug, info, warn};

use super::{Leader, now_ms, std_now};
use crate::jobs::{self, Decision};
use crate::offers::Offer;
use crate::registry::{Txn, batches, keys};
use crate::resources::Resources;

impl Leader {
    /// One allocation cycle: the allocator divides free resources, each allocation becomes an offer;
    /// the built-in job scheduler answers its offers at once, external frameworks get theirs as one
    /// `offers` event each.
    pub(super) async fn offer_cycle(&mut self) {
        let pending = self.jobs.has_pending();
        if pending == self.jobs_suppressed {
            self.jobs_suppressed = !pending;
            if pending {
                self.allocator.revive(jobs::FRAMEWORK_ID);
            } else {
                self.allocator.suppress(jobs::FRAMEWORK_ID);
            }
        }
        let now = std_now();
        let allocations = self.allocator.allocate(now);
        if allocations.is_empty() {
            return;
        }
        self.config.metrics.offers_made.inc_by(allocations.len() as u64);
        let _timer = AllocationTimer(self.config.metrics.allocation_run.clone(), now);
        let mut builtin = Vec::new();
        let mut external: HashMap<String, Vec<Offer>> = HashMap::new();
        for a in allocations {
            let offer = self.offers.make(&a.agent_id, &a.framework_id, a.resources, now);
            if a.framework_id == jobs::FRAMEWORK_ID {
                builtin.push(offer);
            } else {
                external.entry(a.framework_id).or_default().push(offer);
            }
        }
        let mut frameworks: Vec<_> = external.into_iter().collect();
        frameworks.sort_by(|a, b| a.0.cmp(&b.0));
        for (framework_id, offers) in frameworks {
            let event = pb::Offers { offers: offers.iter().map(|o| self.offer_message(o)).collect() };
            debug!(%framework_id, offers = event.offers.len(), "offers sent");
            if !self.send_event(&framework_id, Event::Offers(event)) {
                // Gone since the allocation: its offers were rescinded with the disconnect. Any made
                // after it are taken back here.
                for offer in
                    self.offers.decline(&framework_id, &offers.iter().map(|o| o.id.clone()).collect::<Vec<_>>())
                {
                    self.allocator.recover(&framework_id, &offer.agent_id, offer.resources, None, now);
                }
            }
        }
        if !builtin.is_empty() {
            self.answer_job_offers(builtin).await;
        }
    }

    fn offer_message(&self, offer: &Offer) -> pb::Offer {
        pb::Offer {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            framework_id: offer.framework_id.clone(),
            resources: Some(offer.resources.into()),
            attributes: self.agents.get(&offer.agent_id).map(|a| a.attributes.clone()).unwrap_or_default(),
            epoch: offer.epoch,
            cached_modules: self.cached_modules(&offer.agent_id),
        }
    }

    async fn answer_job_offers(&mut self, offers: Vec<Offer>) {
        let now = std_now();
        let agents = &self.agents;
        let decisions = self.jobs.on_offers(&offers, |id| {
            agents.get(id).map(|a| jobs::AgentView {
                attributes: &a.attributes,
                cached: &a.cached_modules,
                total: a.total,
            })
        });
        let agent_of: HashMap<String, String> = offers.iter().map(|o| (o.id.clone(), o.agent_id.clone())).collect();
        for decision in decisions {
            match decision {
                Decision::Decline { offer_id } => {
                    // Filtered until something changes (a new task or freed resources revive the scheduler).
                    for offer in self.offers.decline(jobs::FRAMEWORK_ID, &[offer_id]) {
                        self.config.metrics.offers_declined.inc();
                        let refuse = Some(self.config.refuse);
                        self.allocator.recover(jobs::FRAMEWORK_ID, &offer.agent_id, offer.resources, refuse, now);
                    }
                }
                Decision::Accept { offer_id, launches } => {
                    let wanted: Vec<(String, Resources)> = launches
                        .iter()
                        .filter_map(|id| self.tasks.get(id).map(|t| (id.clone(), t.resources)))
                        .collect();
                    match self.offers.accept(jobs::FRAMEWORK_ID, std::slice::from_ref(&offer_id), &wanted) {
                        Ok(accepted) => {
                            let agent_id = accepted.agent_id;
                            self.allocator.recover(jobs::FRAMEWORK_ID, &agent_id, accepted.returned, None, now);
                            if let Some(agent) = self.agents.get_mut(&agent_id) {
                                agent.used = agent.used.saturating_add(&accepted.used);
                            }
                            let ids: Vec<String> = wanted.into_iter().map(|(id, _)| id).collect();
                            self.launch(&ids, &agent_id).await;
                            info!(%agent_id, tasks = ids.len(), "job tasks launched");
                        }
                        Err(err) => {
                            warn!(%err, agent_id = ?agent_of.get(&offer_id), "accept refused; tasks requeued");
                            for offer in self.offers.decline(jobs::FRAMEWORK_ID, &[offer_id]) {
                                self.allocator.recover(jobs::FRAMEWORK_ID, &offer.agent_id, offer.resources, None, now);
                            }
                            for (task_id, resources) in wanted.into_iter().rev() {
                                self.jobs.requeue_front(&task_id, resources);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Launches PENDING tasks of the job scheduler on an agent whose resources they now hold: one
    /// registry transaction per batch records them STAGING, then the agent is told.
    pub(super) async fn launch(&mut self, task_ids: &[String], agent_id: &str) {
        let sizes = |id: &String| self.tasks.get(id).map_or(64, |t| t.record.encoded_len() + 128);
        for run in batches(task_ids, 1, sizes) {
            let batch = &task_ids[run];
            let mut txn = Txn::new();
            let mut records = Vec::with_capacity(batch.len());
            for task_id in batch {
                let Some(entry) = self.tasks.get(task_id) else { continue };
                let mut record = entry.record.clone();
                record.status = Some(pb::TaskStatus {
                    task_id: task_id.clone(),
                    state: TaskState::Staging as i32,
                    agent_id: agent_id.to_owned(),
                    timestamp_ms: now_ms(),
                    update_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                });
                record.leader_epoch = self.config.epoch;
                let key = keys::task(task_id);
                txn = txn.if_mod_revision(&key, entry.mod_revision).put(key, record.encode_to_vec());
                records.push(record);
            }
            let revision = match self.commit(txn).await {
                Ok(revision) => revision,
                Err(err) => {
                    warn!(%err, tasks = records.len(), "could not record launches; tasks requeued");
                    for record in records.iter().rev() {
                        let task_id = record.status.as_ref().map(|s| s.task_id.clone()).unwrap_or_default();
                        if let Some(resources) = self.tasks.get(&task_id).map(|t| t.resources) {
                            self.release(jobs::FRAMEWORK_ID, agent_id, &resources);
                            self.jobs.requeue_front(&task_id, resources);
                        }
                    }
                    continue;
                }
            };
            for record in records {
                let Some(status) = record.status.clone() else { continue };
                let task_id = status.task_id.clone();
                let spec = record.spec.clone();
                if let Some(entry) = self.tasks.get_mut(&task_id) {
                    entry.record = record;
                    entry.mod_revision = revision;
                    entry.publish(pb::TaskEvent { event: Some(pb::task_event::Event::Status(status.clone())) });
                }
                self.jobs.on_status(&task_id, TaskState::Staging, 0, std_now(), now_ms());
                if self.send_to_agent(agent_id, Out::Launch(pb::LaunchTask { spec })) {
                    debug!(%task_id, agent_id, "task launched");
                } else {
                    // The agent went away between the offer and the launch: report the task lost.
                    let status = pb::TaskStatus {
                        task_id: task_id.clone(),
                        state: TaskState::Lost as i32,
                        reason: pb::Reason::AgentLost as i32,
                        message: format!("agent {agent_id} disconnected before the launch reached it"),
                        agent_id: agent_id.to_owned(),
                        timestamp_ms: now_ms(),
                        ..Default::default()
                    };
                    if let Err(err) = self.set_status(status).await {
                        warn!(%task_id, %err, "could not record a lost launch");
                    }
                }
            }
        }
    }

    /// Rescinds offers older than the offer timeout.
    pub(super) fn expire_offers(&mut self) {
        let now = std_now();
        for offer in self.offers.expired(now, self.config.offer_timeout) {
            info!(offer_id = %offer.id, framework_id = %offer.framework_id, "offer timed out; rescinded");
            self.allocator.recover(&offer.framework_id, &offer.agent_id, offer.resources, None, now);
            self.send_rescind(&offer.framework_id, &offer.id, "offer timeout");
        }
    }
}

/// Observes how long an allocation run took (offers made and answered) when it is dropped.
struct AllocationTimer(prometheus_client::metrics::histogram::Histogram, std::time::Instant);

impl Drop for AllocationTimer {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}
