//! Placement: offers of free resources to the job framework, and the launches it accepts.

use std::collections::HashMap;

use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tracing::{info, warn};

use super::{Leader, now_ms};
use crate::jobs::{self, Decision};
use crate::resources::Resources;

impl Leader {
    /// Offers every connected agent's free resources to the job framework and applies its answers.
    pub(super) async fn offer_cycle(&mut self) {
        let connected: Vec<String> = self
            .offers
            .agents_with_available()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| self.agents.get(id).is_some_and(|a| a.tx.is_some()))
            .collect();
        let offers: Vec<_> = connected.iter().filter_map(|id| self.offers.offer(id, jobs::FRAMEWORK_ID)).collect();
        if offers.is_empty() {
            return;
        }
        let agent_of: HashMap<String, String> = offers.iter().map(|o| (o.id.clone(), o.agent_id.clone())).collect();
        for decision in self.jobs.on_offers(&offers) {
            match decision {
                Decision::Decline { offer_id } => self.offers.decline(&[offer_id]),
                Decision::Accept { offer_id, launches } => {
                    let wanted: Vec<(String, Resources)> = launches
                        .iter()
                        .filter_map(|id| self.tasks.get(id).map(|t| (id.clone(), t.resources)))
                        .collect();
                    match self.offers.accept(jobs::FRAMEWORK_ID, std::slice::from_ref(&offer_id), &wanted) {
                        Ok(accepted) => {
                            for (task_id, _) in wanted {
                                self.launch(&task_id, &accepted.agent_id).await;
                            }
                        }
                        Err(err) => {
                            warn!(%err, agent_id = ?agent_of.get(&offer_id), "accept refused; tasks requeued");
                            for (task_id, resources) in wanted.into_iter().rev() {
                                self.jobs.requeue_front(task_id, resources);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) async fn launch(&mut self, task_id: &str, agent_id: &str) {
        let status = pb::TaskStatus {
            task_id: task_id.to_owned(),
            state: TaskState::Staging as i32,
            agent_id: agent_id.to_owned(),
            timestamp_ms: now_ms(),
            ..Default::default()
        };
        if let Err(err) = self.set_status(status).await {
            warn!(task_id, %err, "could not record the launch; task requeued");
            if let Some(entry) = self.tasks.get(task_id) {
                self.offers.release(agent_id, &entry.resources);
                self.jobs.requeue_front(task_id.to_owned(), entry.resources);
            }
            return;
        }
        let spec = self.tasks.get(task_id).and_then(|t| t.record.spec.clone());
        if !self.send_to_agent(agent_id, Out::Launch(pb::LaunchTask { spec })) {
            // The agent went away between the offer and the launch: report the task lost.
            let status = pb::TaskStatus {
                task_id: task_id.to_owned(),
                state: TaskState::Lost as i32,
                reason: pb::Reason::AgentLost as i32,
                message: format!("agent {agent_id} disconnected before the launch reached it"),
                agent_id: agent_id.to_owned(),
                timestamp_ms: now_ms(),
                ..Default::default()
            };
            if let Err(err) = self.set_status(status).await {
                warn!(task_id, %err, "could not record a lost launch");
            }
        }
        info!(task_id, agent_id, "task launched");
    }
}
