//! External frameworks: subscription, calls, status updates forwarded until acknowledged, and
//! failover (a disconnected framework's tasks survive its failover timeout, then are killed).

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use skiff_core::CallKind;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out, scheduler_event::Event};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Leader, TaskEntry, new_id, now_ms, std_now};
use crate::error::{Error, Result};
use crate::jobs;
use crate::registry::{Txn, batches, keys};
use crate::resources::Resources;
use crate::task;

/// Events to one subscribed framework.
pub type FrameworkSender = mpsc::Sender<Result<pb::SchedulerEvent, tonic::Status>>;

#[derive(Debug)]
pub(super) struct FrameworkEntry {
    info: pb::FrameworkInfo,
    /// Accessor id of the ACL token that subscribed it.
    principal: String,
    tx: Option<FrameworkSender>,
    /// When it disconnected (or when this leader took over without it).
    disconnected_at: Option<Instant>,
    /// Latest unacknowledged update of each task.
    unacked: HashMap<String, Unacked>,
}

/// An update forwarded to a framework and not acknowledged yet.
#[derive(Debug)]
struct Unacked {
    status: pb::TaskStatus,
    /// Sends so far, and when the next is due if no acknowledgement comes.
    attempts: u32,
    due: Instant,
}

/// Wait before forwarding an unacknowledged update again; doubles per send up to [`MAX_RESEND`].
const FIRST_RESEND: Duration = Duration::from_secs(2);
const MAX_RESEND: Duration = Duration::from_secs(30);

fn resend_after(attempts: u32) -> Duration {
    FIRST_RESEND.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_RESEND)
}

impl Unacked {
    fn new(status: pb::TaskStatus, now: Instant) -> Self {
        Unacked { status, attempts: 1, due: now + resend_after(1) }
    }
}

impl Leader {
    fn failover_timeout(&self, info: &pb::FrameworkInfo) -> Duration {
        match info.failover_timeout_ms {
            0 => self.config.framework_failover_timeout,
            ms => Duration::from_millis(ms),
        }
    }

    /// A framework known from the registry after a takeover: disconnected until it re-subscribes.
    /// A framework's role and the accessor id of the token that subscribed it.
    pub(super) fn framework_owner(&self, framework_id: &str) -> Option<(&str, &str)> {
        self.frameworks.get(framework_id).map(|f| (f.info.role.as_str(), f.principal.as_str()))
    }

    pub(super) fn recovered_framework(&mut self, info: pb::FrameworkInfo, principal: String) {
        self.allocator.add_framework(&info.framework_id, &info.role);
        self.allocator.activate_framework(&info.framework_id, false);
        let entry = FrameworkEntry {
            info,
            principal,
            tx: None,
            disconnected_at: Some(Instant::now()),
            unacked: HashMap::new(),
        };
        self.frameworks.insert(entry.info.framework_id.clone(), entry);
    }

    pub(super) async fn subscribe(
        &mut self,
        info: skiff_core::Subscription,
        principal: crate::acl::Principal,
        tx: FrameworkSender,
    ) -> Result<pb::FrameworkInfo> {
        let mut info = info.into_inner();
        if info.framework_id == jobs::FRAMEWORK_ID {
            return Err(Error::InvalidArgument(format!(
                "framework id {} is the built-in job scheduler's",
                jobs::FRAMEWORK_ID
            )));
        }
        if info.framework_id.is_empty() {
            info.framework_id = new_id("fw");
        } else if let Some(old) = self.frameworks.get(&info.framework_id) {
            if !principal.management && old.principal != principal.accessor {
                return Err(Error::PermissionDenied(format!(
                    "framework {} was subscribed by another ACL token; token {} cannot subscribe it",
                    info.framework_id, principal.accessor
                )));
            }
            if old.info.role != info.role {
                return Err(Error::InvalidArgument(format!(
                    "framework {} subscribed in role {:?}; it cannot re-subscribe in role {:?}",
                    info.framework_id, old.info.role, info.role
                )));
            }
        }
        let id = info.framework_id.clone();
        // A management token re-subscribing someone's framework leaves it theirs.
        let owner = self.frameworks.get(&id).map_or_else(|| principal.accessor.clone(), |f| f.principal.clone());
        let known = self.frameworks.get(&id).map(|f| (&f.info, &f.principal));
        if known != Some((&info, &owner)) {
            let record = pb::FrameworkRecord {
                info: Some(info.clone()),
                leader_epoch: self.config.epoch,
                principal: owner.clone(),
            };
            self.commit(Txn::new().put(keys::framework(&id), record.encode_to_vec())).await?;
        }
        // A stream it had before is replaced; its offers are rescinded (it would not know them).
        self.rescind_framework_offers(&id, "framework re-subscribed");
        let mut unacked = self.frameworks.remove(&id).map(|f| f.unacked).unwrap_or_default();
        let subscribed = pb::SchedulerEvent {
            epoch: self.config.epoch,
            event: Some(Event::Subscribed(pb::scheduler_event::Subscribed {
                framework: Some(info.clone()),
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            })),
        };
        let _ = tx.try_send(Ok(subscribed));
        // Sent again now, as a first send: the resend intervals start over.
        let now = Instant::now();
        for u in unacked.values_mut() {
            u.attempts = 1;
            u.due = now + resend_after(1);
            let _ = tx.try_send(Ok(pb::SchedulerEvent {
                epoch: self.config.epoch,
                event: Some(Event::Update(u.status.clone())),
            }));
        }
        self.allocator.add_framework(&id, &info.role);
        self.allocator.activate_framework(&id, true);
        self.allocator.revive(&id);
        info!(framework_id = %id, name = %info.name, role = %info.role, "framework subscribed");
        self.frameworks.insert(
            id,
            FrameworkEntry { info: info.clone(), principal: owner, tx: Some(tx), disconnected_at: None, unacked },
        );
        Ok(info)
    }

    /// Sends an event to a framework; false (and the framework is marked disconnected) if it is gone.
    pub(super) fn send_event(&mut self, framework_id: &str, event: Event) -> bool {
        let epoch = self.config.epoch;
        let Some(fw) = self.frameworks.get_mut(framework_id) else { return false };
        let sent = fw.tx.as_ref().is_some_and(|tx| {
            super::handle::offer(tx, pb::SchedulerEvent { epoch, event: Some(event) }, || {
                tonic::Status::resource_exhausted(format!(
                    "the framework read none of the last {} events; subscribe again with its framework id",
                    tx.max_capacity()
                ))
            })
        });
        if !sent && fw.tx.is_some() {
            self.framework_disconnected(framework_id);
        }
        sent
    }

    pub(super) fn send_rescind(&mut self, framework_id: &str, offer_id: &str, reason: &str) {
        self.config.metrics.offers_rescinded.inc();
        if framework_id != jobs::FRAMEWORK_ID {
            self.send_event(
                framework_id,
                Event::Rescind(pb::Rescind { offer_id: offer_id.to_owned(), reason: reason.to_owned() }),
            );
        }
    }

    fn framework_disconnected(&mut self, framework_id: &str) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else { return };
        fw.tx = None;
        fw.disconnected_at = Some(Instant::now());
        info!(framework_id, timeout = ?self.failover_timeout(&self.frameworks[framework_id].info), "framework disconnected");
        self.allocator.activate_framework(framework_id, false);
        self.rescind_framework_offers(framework_id, "framework disconnected");
    }

    /// Frameworks subscribed and connected now.
    pub(super) fn connected_frameworks(&self) -> usize {
        self.frameworks.values().filter(|f| f.tx.is_some()).count()
    }

    fn rescind_framework_offers(&mut self, framework_id: &str, reason: &str) {
        let now = std_now();
        for offer in self.offers.rescind_framework(framework_id) {
            self.allocator.recover(framework_id, &offer.agent_id, offer.resources, None, now);
            self.send_rescind(framework_id, &offer.id, reason);
        }
    }

    /// Hands a status to the task's framework: the built-in job scheduler, or an external framework
    /// that holds it until acknowledged.
    pub(super) async fn forward(&mut self, framework_id: &str, status: pb::TaskStatus) {
        if framework_id == jobs::FRAMEWORK_ID {
            let wall_us = status.usage.as_ref().map_or(0, |u| u.wall_time_us);
            self.jobs.on_status(&status.task_id, status.state(), wall_us, std_now(), now_ms());
            return;
        }
        let Some(fw) = self.frameworks.get_mut(framework_id) else { return };
        fw.unacked.insert(status.task_id.clone(), Unacked::new(status.clone(), Instant::now()));
        self.send_event(framework_id, Event::Update(status));
    }

    /// Detects closed framework streams, sends heartbeats (`beat`), and removes frameworks whose
    /// failover timeout passed.
    pub(super) async fn check_frameworks(&mut self, beat: bool) {
        let mut ids: Vec<String> = self.frameworks.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let Some(fw) = self.frameworks.get(&id) else { continue };
            match (&fw.tx, fw.disconnected_at) {
                (Some(tx), _) if tx.is_closed() => self.framework_disconnected(&id),
                (Some(_), _) if beat => {
                    self.send_event(&id, Event::Heartbeat(pb::scheduler_event::Heartbeat {}));
                    self.resend_unacked(&id);
                }
                (None, Some(since)) if since.elapsed() >= self.failover_timeout(&fw.info) => {
                    warn!(framework_id = %id, "framework did not re-subscribe within its failover timeout; killing its tasks");
                    self.remove_framework(&id).await;
                }
                _ => {}
            }
        }
    }

    /// Forwards again, with doubling intervals, the updates a connected framework has not
    /// acknowledged (frameworks must handle an update twice: dedup by update id).
    fn resend_unacked(&mut self, framework_id: &str) {
        let now = Instant::now();
        let Some(fw) = self.frameworks.get_mut(framework_id) else { return };
        let mut due: Vec<&mut Unacked> = fw.unacked.values_mut().filter(|u| u.due <= now).collect();
        due.sort_by_key(|u| u.status.timestamp_ms);
        let mut statuses = Vec::with_capacity(due.len());
        for u in due {
            u.attempts += 1;
            u.due = now + resend_after(u.attempts);
            statuses.push(u.status.clone());
        }
        if !statuses.is_empty() {
            debug!(framework_id, updates = statuses.len(), "unacknowledged updates forwarded again");
        }
        for status in statuses {
            self.send_event(framework_id, Event::Update(status));
        }
    }

    /// Forgets a framework (teardown, or failover timeout): its tasks are killed, its record deleted.
    async fn remove_framework(&mut self, framework_id: &str) {
        if let Err(err) = self.commit(Txn::new().delete(keys::framework(framework_id))).await {
            warn!(framework_id, %err, "could not delete the framework record; will try again");
            return;
        }
        self.rescind_framework_offers(framework_id, "framework removed");
        self.frameworks.remove(framework_id);
        // No more offers; it stays in the allocator (what its tasks use stays counted) until they end.
        self.allocator.suppress(framework_id);
        self.allocator.activate_framework(framework_id, false);
        let mut live: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.framework_id() == framework_id && !task::is_terminal(t.state()))
            .map(|(id, _)| id.clone())
            .collect();
        live.sort();
        for task_id in live {
            // An agent that is away now is told again when it re-registers (reconcile_agent).
            if let Err(err) = self.kill(&task_id).await {
                debug!(%task_id, %err, "kill of a removed framework's task deferred");
            }
        }
        self.forget_if_gone(framework_id);
        info!(framework_id, "framework removed");
    }

    pub(super) async fn call(&mut self, call: skiff_core::FrameworkCall) -> Result<Vec<String>> {
        let id = call.framework_id;
        if !self.frameworks.contains_key(&id) {
            return Err(Error::FrameworkNotFound(id));
        }
        if call.epoch != self.config.epoch {
            return Err(Error::FailedPrecondition(format!(
                "call made under leader epoch {}, but this leader's epoch is {}: subscribe again",
                call.epoch, self.config.epoch
            )));
        }
        let now = std_now();
        match call.kind {
            CallKind::Accept { offer_ids, launches, refuse } => self.accept(&id, offer_ids, launches, refuse).await,
            CallKind::Decline { offer_ids, refuse } => {
                let refuse = refuse.unwrap_or(self.config.refuse);
                for offer in self.offers.decline(&id, &offer_ids) {
                    self.config.metrics.offers_declined.inc();
                    self.allocator.recover(&id, &offer.agent_id, offer.resources, Some(refuse), now);
                }
                Ok(Vec::new())
            }
            CallKind::Kill { task_id } => {
                if self.tasks.get(&task_id).is_none_or(|t| t.framework_id() != id) {
                    return Err(Error::TaskNotFound(task_id));
                }
                self.kill(&task_id).await.map(|()| Vec::new())
            }
            CallKind::Acknowledge { task_id, update_id } => {
                if let Some(fw) = self.frameworks.get_mut(&id)
                    && fw.unacked.get(&task_id).is_some_and(|u| u.status.update_id == update_id)
                {
                    fw.unacked.remove(&task_id);
                }
                Ok(Vec::new())
            }
            CallKind::Reconcile { task_ids } => {
                self.reconcile_framework(&id, task_ids).await;
                Ok(Vec::new())
            }
            CallKind::Suppress => {
                self.allocator.suppress(&id);
                self.rescind_framework_offers(&id, "framework suppressed offers");
                Ok(Vec::new())
            }
            CallKind::Revive => {
                self.allocator.revive(&id);
                Ok(Vec::new())
            }
            CallKind::Teardown => {
                self.remove_framework(&id).await;
                Ok(Vec::new())
            }
        }
    }

    async fn reconcile_framework(&mut self, framework_id: &str, task_ids: Vec<String>) {
        let mut answers: Vec<pb::TaskStatus> = if task_ids.is_empty() {
            self.tasks
                .values()
                .filter(|t| t.framework_id() == framework_id && !task::is_terminal(t.state()))
                .filter_map(|t| t.record.status.clone())
                .collect()
        } else {
            let mut answers = Vec::with_capacity(task_ids.len());
            for task_id in task_ids {
                let known = match self.tasks.get(&task_id) {
                    Some(t) => Some(t.record.clone()),
                    // Terminal tasks leave memory; their record stays in the registry.
                    None => match self.registry.get(&keys::task(&task_id)).await {
                        Ok(Some(v)) => pb::TaskRecord::decode(&v.value[..]).ok(),
                        _ => None,
                    },
                };
                answers.push(match known.filter(|r| r.framework_id == framework_id).and_then(|r| r.status) {
                    Some(status) => status,
                    None => pb::TaskStatus {
                        task_id,
                        state: TaskState::Lost as i32,
                        message: "unknown to the leader".into(),
                        timestamp_ms: now_ms(),
                        ..Default::default()
                    },
                });
            }
            answers
        };
        answers.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        for mut status in answers {
            status.update_id.clear();
            self.send_event(framework_id, Event::Update(status));
        }
    }

    async fn accept(
        &mut self,
        framework_id: &str,
        offer_ids: Vec<String>,
        launches: Vec<skiff_core::TaskSpec>,
        refuse: Duration,
    ) -> Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let mut specs = Vec::with_capacity(launches.len());
        for mut spec in launches {
            if spec.task_id.is_empty() {
                spec.set_task_id(new_id("t")).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            } else if self.tasks.contains_key(&spec.task_id)
                || !seen.insert(spec.task_id.clone())
                || self.registry.get(&keys::task(&spec.task_id)).await?.is_some()
            {
                return Err(Error::InvalidArgument(format!("task id {} is already in use", spec.task_id)));
            }
            self.check_artifacts(&mut spec).map_err(|err| match err {
                Error::InvalidArgument(msg) => Error::InvalidArgument(format!("task {}: {msg}", spec.task_id)),
                other => other,
            })?;
            specs.push(spec.into_inner());
        }
        let wanted: Vec<(String, Resources)> =
            specs.iter().map(|s| (s.task_id.clone(), Resources::from(&s.resources.unwrap_or_default()))).collect();
        let accepted = self.offers.accept(framework_id, &offer_ids, &wanted)?;
        let now = std_now();
        self.allocator.recover(framework_id, &accepted.agent_id, accepted.returned, Some(refuse), now);
        let agent_id = accepted.agent_id;
        let mut launched = Vec::new();
        for run in batches(&specs, 1, |s| s.encoded_len() + 256) {
            let chunk = &specs[run];
            let mut txn = Txn::new();
            let mut entries = Vec::new();
            for spec in chunk {
                let status = pb::TaskStatus {
                    task_id: spec.task_id.clone(),
                    state: TaskState::Staging as i32,
                    agent_id: agent_id.clone(),
                    timestamp_ms: now_ms(),
                    update_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                };
                let record = pb::TaskRecord {
                    spec: Some(spec.clone()),
                    status: Some(status),
                    framework_id: framework_id.to_owned(),
                    leader_epoch: self.config.epoch,
                    submitted_by: self.frameworks.get(framework_id).map(|f| f.principal.clone()).unwrap_or_default(),
                    ..Default::default()
                };
                let key = keys::task(&spec.task_id);
                txn = txn.if_mod_revision(&key, 0).put(key, record.encode_to_vec());
                entries.push(record);
            }
            let revision = match self.commit(txn).await {
                Ok(revision) => revision,
                Err(err) => {
                    // What was not recorded is not launched; its resources go back.
                    for spec in specs.iter().skip(launched.len()) {
                        let res = Resources::from(&spec.resources.unwrap_or_default());
                        self.allocator.recover(framework_id, &agent_id, res, None, now);
                    }
                    if launched.is_empty() {
                        return Err(err);
                    }
                    warn!(%err, launched = launched.len(), "only part of an accept could be recorded");
                    break;
                }
            };
            for record in entries {
                let spec = record.spec.clone().unwrap_or_default();
                let entry = TaskEntry::created(record, revision);
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.used = agent.used.saturating_add(&entry.resources);
                }
                let task_id = spec.task_id.clone();
                self.tasks.insert(task_id.clone(), Box::new(entry));
                self.send_to_agent(&agent_id, Out::Launch(pb::LaunchTask { spec: Some(spec) }));
                launched.push(task_id);
            }
        }
        info!(framework_id, %agent_id, tasks = launched.len(), "offer accepted");
        Ok(launched)
    }
}
