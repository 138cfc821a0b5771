//! The leader: the one task that owns the fleet's state and acts on it.
//!
//! gRPC services talk to it through a [`LeaderHandle`] (an mpsc of [`Command`]s), so every change of
//! state happens here, in order, with no locks. Each state change is written to the registry in one
//! transaction (guarded by the record's mod revision) before it is announced to anyone.
//!
//! Placement is two-level, as in Mesos: after every batch of commands, and on a short interval, the
//! [`Allocator`] divides agents' free resources between frameworks by weighted DRF; the [`OfferBook`]
//! records the offers and checks that each accept fits. External frameworks get their offers over
//! the scheduler stream ([`frameworks`]); the built-in job scheduler ([`crate::jobs`]) answers its own
//! in-process ([`placement`]).
//!
//! Layout: [`handle`] (the commands and the handle services use), [`agents`] (membership,
//! heartbeats, status updates), [`frameworks`] (subscribe, calls, status forwarding, failover),
//! [`jobs`] (the built-in job scheduler's jobs), [`placement`] (offer cycles and launches),
//! [`spec`] (task spec checks), [`records`] (registry records read back, checked),
//! [`recovery`] (takeover), [`retention`] (collection of finished jobs and tasks), [`gc`]
//! (artifacts), [`status`] (what operators see: the cluster, agents, tasks), [`drain`] (agents
//! taken out of placement).

mod acl;
mod agents;
mod drain;
mod frameworks;
mod gc;
mod handle;
mod jobs;
mod placement;
mod records;
mod recovery;
mod retention;
mod spec;
mod status;
mod updates;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use skiff_proto as pb;
use skiff_proto::{TaskState, coordinator_message::Msg as Out};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::allocator::{Allocator, RoleConfig};
use crate::error::{Error, Result};
use crate::jobs::JobScheduler;
use crate::offers::OfferBook;
use crate::registry::{Registry, RegistryError, Txn, keys};
use crate::resources::Resources;
use crate::task;

pub use frameworks::FrameworkSender;

pub use acl::{AclAnswer, AclOp};
pub use handle::{AgentSender, Command, LeaderHandle, Watch};
pub use status::TaskQuery;

/// Leader settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Leader epoch stamped on every command (the embedded registry has a single leader: 1).
    pub epoch: u64,
    /// Heartbeat interval asked of agents, and of the leader towards frameworks.
    pub heartbeat_interval: Duration,
    /// An agent silent for this long is unreachable: its offers are rescinded, its tasks UNREACHABLE.
    pub agent_timeout: Duration,
    /// An agent silent for this long has its UNREACHABLE tasks reported LOST (jobs retry them
    /// elsewhere). Longer than agents' `--partition-kill-after`, so the originals are gone by then.
    pub agent_lost_after: Duration,
    /// Offers are made at least this often (and after every batch of requests).
    pub offer_interval: Duration,
    /// An offer not answered within this time is rescinded.
    pub offer_timeout: Duration,
    /// Default decline filter.
    pub refuse: Duration,
    /// Failover timeout of frameworks that do not name one.
    pub framework_failover_timeout: Duration,
    /// Role weights and quotas (roles not listed: weight 1, no quota).
    pub roles: Vec<(String, RoleConfig)>,
    /// Role of the built-in job scheduler.
    pub jobs_role: String,
    /// Queue order and placement of the built-in job scheduler.
    pub jobs_policy: crate::jobs::Policy,
    /// Terminal tasks whose events stay in memory for `watch` and `get`.
    pub retained_terminal_tasks: usize,
    /// After taking over, how long agents have to re-register before their tasks are reported LOST.
    pub reregister_timeout: Duration,
    /// Artifacts no live task refers to are forgotten after this long unused.
    pub artifact_grace: Duration,
    /// How often unused artifacts and finished work are looked for.
    pub gc_interval: Duration,
    /// Finished jobs and tasks are collected this long after they ended (`--gc-after`).
    pub gc_after: Duration,
    /// At most this many finished tasks are kept; past it the oldest are collected sooner.
    pub max_finished_tasks: usize,
    /// Output of one task the leader keeps for watchers (past it: dropped, marked truncated).
    pub max_task_output_bytes: u64,
    /// Events a watcher may fall behind before it is cut off (it may resume from where it was).
    pub watch_buffer: usize,
    /// Messages queued for one agent or framework before it counts as not reading and is
    /// disconnected with a reason (it registers or subscribes again and is reconciled).
    pub peer_buffer: usize,
    /// Live (not yet done) jobs one submitter may have at once.
    pub max_live_jobs_per_submitter: usize,
    /// Where the leader counts what happens (shared with the replica's `/metrics`).
    pub metrics: crate::metrics::Metrics,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            epoch: 1,
            heartbeat_interval: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(3),
            agent_lost_after: Duration::from_secs(30),
            offer_interval: Duration::from_millis(10),
            offer_timeout: Duration::from_secs(30),
            refuse: Duration::from_secs(5),
            framework_failover_timeout: Duration::from_secs(60),
            roles: Vec::new(),
            jobs_role: "default".into(),
            jobs_policy: crate::jobs::Policy::default(),
            retained_terminal_tasks: 4096,
            reregister_timeout: Duration::from_secs(10),
            artifact_grace: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(60),
            // Nomad's job_gc_threshold.
            gc_after: Duration::from_secs(4 * 3600),
            max_finished_tasks: 100_000,
            max_task_output_bytes: 4 << 20,
            watch_buffer: 1024,
            peer_buffer: skiff_core::limits::PEER_BUFFER,
            max_live_jobs_per_submitter: skiff_core::limits::MAX_LIVE_JOBS_PER_SUBMITTER,
            metrics: Default::default(),
        }
    }
}

#[derive(Debug)]
struct AgentEntry {
    session: u64,
    hostname: String,
    attributes: HashMap<String, String>,
    total: Resources,
    /// Reserved by tasks.
    used: Resources,
    tx: Option<AgentSender>,
    last_seen: Instant,
    reachable: bool,
    /// Wasm modules (sha256) the agent has compiled, as far as this leader knows.
    cached_modules: HashSet<String>,
    /// Drained (see [`drain`]): when, and when its remaining tasks are killed (0: not / never).
    drained_ms: u64,
    drain_deadline_ms: u64,
    /// The kills of its drain deadline reached every task still there.
    drain_kills_sent: bool,
}

impl AgentEntry {
    fn new(hostname: String, attributes: HashMap<String, String>, total: Resources) -> Self {
        AgentEntry {
            session: 0,
            hostname,
            attributes,
            total,
            used: Resources::default(),
            tx: None,
            last_seen: Instant::now(),
            reachable: false,
            cached_modules: HashSet::new(),
            drained_ms: 0,
            drain_deadline_ms: 0,
            drain_kills_sent: false,
        }
    }

    fn draining(&self) -> bool {
        self.drained_ms > 0
    }

    /// The registry record of this agent.
    fn record(&self, agent_id: &str, epoch: u64) -> pb::AgentRecord {
        pb::AgentRecord {
            agent_id: agent_id.to_owned(),
            hostname: self.hostname.clone(),
            resources: Some(self.total.into()),
            attributes: self.attributes.clone(),
            leader_epoch: epoch,
            drained_ms: self.drained_ms,
            drain_deadline_ms: self.drain_deadline_ms,
        }
    }
}

#[derive(Debug)]
struct TaskEntry {
    record: pb::TaskRecord,
    resources: Resources,
    mod_revision: i64,
    events: Vec<pb::TaskEvent>,
    /// Bytes of output kept in `events` (at most `max_task_output_bytes`).
    output_bytes: u64,
    /// Output reached that bound: later chunks are dropped.
    output_capped: bool,
    watchers: Vec<handle::WatchSender>,
    /// How much of its stdout and stderr was published (chunks sent again are dropped).
    output: crate::output::Published,
}

impl TaskEntry {
    /// The entry of a record just written (or loaded) at `mod_revision`, its status published.
    fn new(record: pb::TaskRecord, mod_revision: i64) -> Self {
        let resources = Resources::from(&record.spec.as_ref().and_then(|s| s.resources).unwrap_or_default());
        let status = record.status.clone();
        let mut entry = TaskEntry {
            record,
            resources,
            mod_revision,
            // Most tasks have a handful of events; the first grow would make room for four.
            events: Vec::with_capacity(1),
            output_bytes: 0,
            output_capped: false,
            watchers: Vec::new(),
            output: Default::default(),
        };
        entry.publish(pb::TaskEvent { event: status.map(pb::task_event::Event::Status) });
        entry
    }

    /// The entry of a task this leader just created: it sees the task's output from the start.
    fn created(record: pb::TaskRecord, mod_revision: i64) -> Self {
        Self { output: crate::output::Published::from_start(), ..Self::new(record, mod_revision) }
    }

    fn state(&self) -> TaskState {
        self.record.status.as_ref().map_or(TaskState::Unspecified, |s| s.state())
    }

    /// When the task was submitted: the time of its first status (0 if unknown).
    fn submitted_ms(&self) -> u64 {
        match self.events.first().and_then(|e| e.event.as_ref()) {
            Some(pb::task_event::Event::Status(s)) if s.state() == TaskState::Pending => s.timestamp_ms,
            _ => 0,
        }
    }

    fn agent_id(&self) -> &str {
        self.record.status.as_ref().map_or("", |s| s.agent_id.as_str())
    }

    fn framework_id(&self) -> &str {
        &self.record.framework_id
    }

    /// Keeps an event and sends it to every watcher. A watcher that stopped reading is cut off
    /// (its last slot holds the reason) instead of buffered for: it can watch again from the
    /// position it reached.
    fn publish(&mut self, event: pb::TaskEvent) {
        let position = self.events.len() as u64;
        self.watchers.retain(|w| {
            handle::offer(w, event.clone(), || {
                tonic::Status::resource_exhausted(format!(
                    "this watcher fell {} events behind and was cut off; watch again from event {position} \
                     (WatchTaskRequest.from_event) to resume",
                    w.max_capacity()
                ))
            })
        });
        self.events.push(event);
    }
}

/// The leader's state and loop. Build with [`Leader::new`], run with [`Leader::run`].
#[derive(Debug)]
pub struct Leader {
    config: LeaderConfig,
    registry: Arc<dyn Registry>,
    rx: mpsc::Receiver<Command>,
    agents: HashMap<String, AgentEntry>,
    /// Boxed: an entry is about 800 bytes, and the table moves its entries each time it grows (a
    /// takeover inserts hundreds of thousands).
    tasks: HashMap<String, Box<TaskEntry>>,
    terminal: VecDeque<String>,
    /// Artifacts the fleet holds, by sha256 (from the registry).
    artifacts: HashMap<String, pb::ArtifactRecord>,
    /// When each artifact was last used (in memory: a new leader counts from its takeover).
    artifact_used: HashMap<String, Instant>,
    allocator: Allocator,
    offers: OfferBook,
    frameworks: HashMap<String, frameworks::FrameworkEntry>,
    jobs: JobScheduler,
    /// Whether the built-in job scheduler is suppressed in the allocator (it has nothing pending).
    jobs_suppressed: bool,
    next_session: u64,
    /// Cancelled to step down (a fenced write failed) or by the owner (shutdown, lease lost).
    stop: CancellationToken,
    /// Agents that still have to re-register after a takeover, and until when.
    recovery: Option<recovery::Window>,
    /// Status updates and output received and not applied yet (see [`updates`]).
    incoming: Vec<updates::Incoming>,
    /// ACL policies and tokens (from the registry).
    acl: crate::acl::Book,
    /// Finished work waiting for collection, and tombstones of collected work.
    retention: retention::Retention,
    /// Records set aside at takeover because they did not decode or validate.
    quarantined: usize,
    /// What a takeover reads instead of the registry (a follower's mirror of it), while it reads.
    source: Option<Arc<dyn Registry>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn new_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..16])
}

/// The std instant of now (the allocator and offer book are pure and take std instants).
fn std_now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Leader {
    pub fn new(config: LeaderConfig, registry: Arc<dyn Registry>) -> (Self, LeaderHandle) {
        let (epoch, jobs_policy) = (config.epoch, config.jobs_policy);
        let (tx, rx) = mpsc::channel(4096);
        let handle = LeaderHandle::new(tx, config.epoch);
        let mut allocator = Allocator::new();
        for (role, role_config) in &config.roles {
            allocator.set_role(role, role_config.clone());
        }
        allocator.add_framework(crate::jobs::FRAMEWORK_ID, &config.jobs_role);
        allocator.suppress(crate::jobs::FRAMEWORK_ID);
        let leader = Leader {
            config,
            registry,
            rx,
            agents: HashMap::new(),
            tasks: HashMap::new(),
            terminal: VecDeque::new(),
            artifacts: HashMap::new(),
            artifact_used: HashMap::new(),
            allocator,
            offers: OfferBook::new(epoch),
            frameworks: HashMap::new(),
            jobs: JobScheduler::with_policy(jobs_policy),
            jobs_suppressed: true,
            next_session: 0,
            stop: CancellationToken::new(),
            recovery: None,
            incoming: Vec::new(),
            acl: Default::default(),
            retention: Default::default(),
            quarantined: 0,
            source: None,
        };
        (leader, handle)
    }

    /// Serves commands until `shutdown`; dropping the state then closes every agent, framework and
    /// watch stream.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        info!(epoch = self.config.epoch, "leading");
        self.stop = shutdown;
        let mut gc = tokio::time::interval(self.config.gc_interval);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut offer_tick = tokio::time::interval(self.config.offer_interval);
        offer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance = tokio::time::interval(Duration::from_millis(100));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heartbeat = Instant::now();
        loop {
            let recovery_deadline = self.recovery.as_ref().map(|w| w.deadline);
            let cmd = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(recovery_deadline.unwrap_or_else(Instant::now)),
                    if recovery_deadline.is_some() =>
                {
                    self.flush_updates().await;
                    self.end_recovery().await;
                    continue;
                }
                _ = gc.tick() => {
                    self.flush_updates().await;
                    self.collect_finished().await;
                    self.collect_garbage().await;
                    continue;
                }
                _ = offer_tick.tick() => {
                    self.flush_updates().await;
                    self.start_due_retries().await;
                    self.offer_cycle().await;
                    continue;
                }
                _ = maintenance.tick() => {
                    // Heartbeats already queued count before anyone is judged silent.
                    while !self.stop.is_cancelled()
                        && let Ok(cmd) = self.rx.try_recv()
                    {
                        self.handle(cmd).await;
                    }
                    self.flush_updates().await;
                    self.check_agents().await;
                    self.expire_offers();
                    let beat = last_heartbeat.elapsed() >= self.config.heartbeat_interval;
                    if beat {
                        last_heartbeat = Instant::now();
                    }
                    self.check_frameworks(beat).await;
                    self.kill_past_drain_deadlines();
                    continue;
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
            };
            self.handle(cmd).await;
            // Batch whatever else is already queued before making offers.
            while !self.stop.is_cancelled()
                && let Ok(cmd) = self.rx.try_recv()
            {
                self.handle(cmd).await;
            }
            self.flush_updates().await;
            if self.stop.is_cancelled() {
                break;
            }
            self.offer_cycle().await;
        }
        info!("leader stopped");
        Ok(())
    }

    async fn handle(&mut self, cmd: Command) {
        // Status updates queued so far are applied before anything that may look at them.
        if !matches!(cmd, Command::AgentMessage { .. }) {
            self.flush_updates().await;
        }
        match cmd {
            Command::AgentConnect { register, tx, reply } => {
                let _ = reply.send(self.agent_connect(register, tx).await);
            }
            Command::AgentMessage { agent_id, session, report } => self.agent_message(&agent_id, session, report),
            Command::AgentDisconnect { agent_id, session } => {
                self.agent_disconnect(&agent_id, session);
            }
            Command::Authorized { caller, ask, mut cmd } => match self.authorize(&caller, ask) {
                Ok(principal) => {
                    cmd.run_as(principal);
                    Box::pin(self.handle(*cmd)).await;
                }
                Err(err) => cmd.refuse(err),
            },
            Command::Authorize { caller, ask, reply } => {
                let _ = reply.send(self.authorize(&caller, ask));
            }
            Command::Acl { caller, op, reply } => {
                let _ = reply.send(self.acl_op(&caller, op).await);
            }
            Command::Submit { spec, submitted_by, reply } => {
                let _ = reply.send(self.submit(spec, submitted_by).await);
            }
            Command::SubmitJob { spec, reply } => {
                let _ = reply.send(self.submit_job(spec).await);
            }
            Command::GetJob { job_id, reply } => {
                let found = self.job_status(&job_id).ok_or(Error::JobNotFound(job_id));
                let _ = reply.send(found.map_err(|e| self.retention.not_found(e)));
            }
            Command::ListJobs { reply } => {
                let jobs = self.jobs.job_ids().iter().filter_map(|id| self.job_status(id)).collect();
                let _ = reply.send(Ok(jobs));
            }
            Command::KillJob { job_id, reply } => {
                let killed = self.kill_job(&job_id).await;
                let _ = reply.send(killed.map_err(|e| self.retention.not_found(e)));
            }
            Command::Watch { task_id, from_event, reply } => {
                let watch = self.watch(&task_id, from_event);
                let _ = reply.send(watch.map_err(|e| self.retention.not_found(e)));
            }
            Command::Kill { task_id, reply } => {
                let killed = self.kill(&task_id).await;
                let _ = reply.send(killed.map_err(|e| self.retention.not_found(e)));
            }
            Command::GetTask { task_id, reply } => {
                let task = self.get_task(&task_id);
                let _ = reply.send(task.map_err(|e| self.retention.not_found(e)));
            }
            Command::ListAgents { reply } => {
                let _ = reply.send(Ok(self.list_agents()));
            }
            Command::GetAgent { agent_id, reply } => {
                let found = self.agent(&agent_id).ok_or_else(|| Error::NotFound(format!("agent {agent_id}")));
                let _ = reply.send(found);
            }
            Command::ClusterStatus { reply } => {
                let _ = reply.send(Ok(self.cluster_status()));
            }
            Command::ListTasks { query, reply } => {
                let _ = reply.send(Ok(self.list_tasks(&query)));
            }
            Command::DrainAgent { agent_id, deadline, undo, reply } => {
                let _ = reply.send(self.drain_agent(&agent_id, deadline, undo).await);
            }
            Command::StatArtifact { sha256, reply } => {
                let found = self.artifacts.get(&sha256).cloned();
                if found.is_some() {
                    // Asked for by a client about to use it.
                    self.touch_artifacts(std::iter::once(sha256.as_str()));
                }
                let _ = reply.send(found);
            }
            Command::RecordArtifact { record, reply } => {
                let _ = reply.send(self.record_artifact(record).await);
            }
            Command::Subscribe { info, principal, tx, reply } => {
                let _ = reply.send(self.subscribe(info, principal, tx).await);
            }
            Command::Call { call, reply } => {
                let _ = reply.send(self.call(call).await);
            }
        }
    }

    /// Writes through the registry; a fenced write means another coordinator leads: step down.
    async fn commit(&mut self, txn: Txn) -> Result<i64> {
        let kind = txn.ops.first().map_or(crate::metrics::TxnKind::other, |op| match op {
            crate::registry::Op::Put { key, .. } | crate::registry::Op::Delete { key } => {
                crate::metrics::TxnKind::of_key(key)
            }
        });
        let started = Instant::now();
        let committed = self.registry.commit(txn).await;
        self.config.metrics.registry_txn(kind, started.elapsed());
        match committed {
            Err(RegistryError::Fenced) => {
                warn!(epoch = self.config.epoch, "a write was fenced off: another coordinator leads; stepping down");
                self.stop.cancel();
                Err(RegistryError::Fenced.into())
            }
            other => Ok(other?),
        }
    }

    fn send_to_agent(&self, agent_id: &str, msg: Out) -> bool {
        let Some(tx) = self.agents.get(agent_id).and_then(|a| a.tx.as_ref()) else {
            return false;
        };
        let msg = pb::CoordinatorMessage { epoch: self.config.epoch, msg: Some(msg) };
        handle::offer(tx, msg, || {
            tonic::Status::resource_exhausted(format!(
                "the agent read none of the last {} messages; register again",
                tx.max_capacity()
            ))
        })
    }

    /// The record of a task with `status` as its new status (`status` gets an update id if it has
    /// none); `base` is the record already decided for it in this batch, if any.
    fn status_record(&self, status: &mut pb::TaskStatus, base: Option<&pb::TaskRecord>) -> pb::TaskRecord {
        if status.update_id.is_empty() {
            status.update_id = uuid::Uuid::new_v4().to_string();
        }
        let mut record =
            base.or_else(|| self.tasks.get(&status.task_id).map(|t| &t.record)).cloned().unwrap_or_default();
        record.status = Some(status.clone());
        record.leader_epoch = self.config.epoch;
        record
    }

    /// Persists a new status of a known task, then publishes it and hands it to the task's
    /// framework; terminal statuses release the task's resources.
    async fn set_status(&mut self, mut status: pb::TaskStatus) -> Result<()> {
        let task_id = status.task_id.clone();
        let entry = self.tasks.get(&task_id).ok_or_else(|| Error::TaskNotFound(task_id.clone()))?;
        let mod_revision = entry.mod_revision;
        let record = self.status_record(&mut status, None);
        let key = keys::task(&task_id);
        let revision =
            self.commit(Txn::new().if_mod_revision(&key, mod_revision).put(key, record.encode_to_vec())).await?;
        self.status_written(status, record, revision).await;
        Ok(())
    }

    /// Applies a status that is in the registry (as `record`, at `revision`): published, handed to
    /// the task's framework; a terminal one releases the task's resources.
    async fn status_written(&mut self, status: pb::TaskStatus, record: pb::TaskRecord, revision: i64) {
        let task_id = status.task_id.clone();
        let Some(entry) = self.tasks.get_mut(&task_id) else { return };
        let previous_agent = entry.agent_id().to_owned();
        self.config.metrics.transition(status.state(), status.reason());
        if status.state() == TaskState::Running && entry.state() != TaskState::Running {
            let submitted_ms = entry.submitted_ms();
            if submitted_ms > 0 {
                let waited = status.timestamp_ms.saturating_sub(submitted_ms);
                self.config.metrics.submit_to_running.observe(waited as f64 / 1000.0);
            }
        }
        entry.record = record;
        entry.mod_revision = revision;
        debug!(%task_id, state = ?status.state(), "task status");
        let terminal = task::is_terminal(status.state());
        entry.publish(pb::TaskEvent { event: Some(pb::task_event::Event::Status(status.clone())) });
        let framework_id = entry.framework_id().to_owned();
        let resources = entry.resources;
        if terminal {
            entry.watchers.clear();
            if !previous_agent.is_empty() {
                self.release(&framework_id, &previous_agent, &resources);
            }
            self.task_ended(&task_id, &framework_id, status.timestamp_ms);
            self.retire(task_id);
        }
        self.forward(&framework_id, status).await;
    }

    /// Counts a task's resources as used on an agent (outside of an offer: a task found after a
    /// takeover). A framework the leader does not know (removed, its tasks still running) is kept
    /// in the allocator, inactive, so that what its tasks use is not offered again.
    fn reserve(&mut self, framework_id: &str, agent_id: &str, resources: &Resources) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = agent.used.saturating_add(resources);
            if !self.allocator.has_framework(framework_id) {
                self.allocator.add_framework(framework_id, "default");
                self.allocator.suppress(framework_id);
                self.allocator.activate_framework(framework_id, false);
            }
            self.allocator.allocate_used(framework_id, agent_id, *resources);
        }
    }

    /// Gives back what an ended task reserved; the job scheduler may use it at once.
    fn release(&mut self, framework_id: &str, agent_id: &str, resources: &Resources) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = agent.used.saturating_sub(resources);
            self.allocator.recover(framework_id, agent_id, *resources, None, std_now());
            self.allocator.unfilter(crate::jobs::FRAMEWORK_ID, agent_id);
        }
        self.forget_if_gone(framework_id);
    }

    /// Drops a removed framework from the allocator once none of its tasks is live.
    fn forget_if_gone(&mut self, framework_id: &str) {
        if framework_id == crate::jobs::FRAMEWORK_ID || self.frameworks.contains_key(framework_id) {
            return;
        }
        if !self.tasks.values().any(|t| t.framework_id() == framework_id && !task::is_terminal(t.state())) {
            self.allocator.remove_framework(framework_id);
        }
    }

    /// Keeps a bounded number of terminal tasks in memory.
    fn retire(&mut self, task_id: String) {
        self.terminal.push_back(task_id);
        while self.terminal.len() > self.config.retained_terminal_tasks {
            if let Some(old) = self.terminal.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    async fn record_artifact(&mut self, mut record: pb::ArtifactRecord) -> Result<()> {
        if self.artifacts.contains_key(&record.sha256) {
            return Ok(());
        }
        record.created_ms = now_ms();
        record.leader_epoch = self.config.epoch;
        let key = keys::artifact(&record.sha256);
        self.commit(Txn::new().if_mod_revision(&key, 0).put(key, record.encode_to_vec())).await?;
        self.touch_artifacts(std::iter::once(record.sha256.as_str()));
        self.artifacts.insert(record.sha256.clone(), record);
        Ok(())
    }

    fn watch(&mut self, task_id: &str, from_event: u64) -> Result<Watch> {
        let buffer = self.config.watch_buffer.max(2);
        let entry = self.tasks.get_mut(task_id).ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
        let from = usize::try_from(from_event).unwrap_or(usize::MAX).min(entry.events.len());
        let history = entry.events[from..].to_vec();
        if task::is_terminal(entry.state()) {
            return Ok(Watch { history, live: None });
        }
        let (tx, rx) = mpsc::channel(buffer);
        entry.watchers.push(tx);
        Ok(Watch { history, live: Some(rx) })
    }

    async fn kill(&mut self, task_id: &str) -> Result<()> {
        let entry = self.tasks.get(task_id).ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
        match entry.state() {
            TaskState::Pending => {
                let resources = entry.resources;
                let queued = self.jobs.remove(task_id);
                let status = pb::TaskStatus {
                    task_id: task_id.to_owned(),
                    state: TaskState::Killed as i32,
                    reason: pb::Reason::Killed as i32,
                    message: "killed before it was placed".into(),
                    timestamp_ms: now_ms(),
                    ..Default::default()
                };
                let killed = self.set_status(status).await;
                if killed.is_err() && queued {
                    self.jobs.requeue_front(task_id, resources);
                }
                killed
            }
            state if task::is_terminal(state) => Ok(()),
            _ => {
                let agent_id = entry.agent_id().to_owned();
                if self.send_to_agent(&agent_id, Out::Kill(pb::KillTask { task_id: task_id.to_owned() })) {
                    Ok(())
                } else {
                    Err(Error::AgentNotConnected { agent_id, task_id: task_id.to_owned() })
                }
            }
        }
    }

    fn get_task(&self, task_id: &str) -> Result<pb::GetTaskResponse> {
        let entry = self.tasks.get(task_id).ok_or_else(|| Error::TaskNotFound(task_id.to_owned()))?;
        let mut spec = entry.record.spec.clone();
        if let Some(pb::task_spec::Kind::Wasm(wasm)) = spec.as_mut().and_then(|s| s.kind.as_mut()) {
            wasm.module.clear();
        }
        Ok(pb::GetTaskResponse { spec, status: entry.record.status.clone() })
    }
}
