//! The agent: keeps a session with the leading coordinator and runs what it is told to.
//!
//! The session is one bidirectional gRPC stream. The agent registers (its id, resources, attributes
//! and the latest status of its tasks), then receives commands and sends heartbeats, status updates
//! and task output. When the stream breaks it reconnects with backoff, trying each configured
//! coordinator in turn and following redirects to the leader. Status updates stay queued until the
//! coordinator acknowledges them and are sent again after a reconnect. An agent that has had no
//! registered session for its partition timeout kills its tasks and reports them LOST: by the time
//! the coordinators give up on it (their longer `--agent-lost-after`) and start copies elsewhere,
//! the originals are gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto as pb;
use skiff_proto::coordinator_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, ExecutorMode};
use crate::error::{Error, Result};
use crate::executor::remote::{self, Remote};
use crate::executor::setup;
use crate::executor::tasks::Tasks;
use crate::history::History;
use crate::host;
use crate::outbox::Outbox;
use crate::task::TaskEvent;
use crate::task_logs::TaskLogs;
use crate::updates::UpdateLog;
use crate::work_dir::WorkDir;

/// Largest gRPC message accepted (launches carry their module until artifacts move by hash).
const MAX_MESSAGE_BYTES: usize = skiff_core::limits::AGENT_MESSAGE_BYTES;

/// Task ids remembered as launched here (a second launch of one is refused).
const LAUNCHES_REMEMBERED: usize = 100_000;

/// Bound of connecting and of opening a session.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Redirect(String),
    Closed(String),
}

#[derive(Debug)]
pub struct Agent {
    config: Config,
    /// Held for the agent's life: no other agent uses this work directory meanwhile.
    work_dir: WorkDir,
    agent_id: String,
    executor: Tasks,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    /// The sending side of `events`, for what the agent itself reports (launches it refuses).
    own_events: mpsc::UnboundedSender<TaskEvent>,
    /// Status updates not acknowledged yet, oldest first, resent with backoff.
    outbox: Outbox,
    /// Updates on disk until acknowledged (the executor writes them as tasks produce them).
    log: Arc<std::sync::Mutex<UpdateLog>>,
    /// Recent tasks' output on disk (written before it goes on), sent again to a leader that asks.
    logs: Arc<std::sync::Mutex<TaskLogs>>,
    /// Launches checkpointed in the update log (task id -> the STAGING update's id), until a later
    /// update of the task is acknowledged.
    launched: HashMap<String, String>,
    /// Tasks killed because no coordinator was reachable: their end is reported LOST.
    partition_killed: HashSet<String>,
    /// Latest status of every task that is running or whose terminal status is unacknowledged.
    tasks: HashMap<String, pb::TaskStatus>,
    highest_epoch: u64,
    /// Every task id launched here (the most recent ones): a second launch of one is refused.
    history: History,
    /// Address of the coordinator of the current session.
    session_address: String,
    /// The kept output was sent once by this agent process (after that: when a leader asks).
    replayed_once: bool,
}

impl Agent {
    /// An agent on `config`'s work directory. With an executor process, this attaches to the one
    /// a previous run left (its tasks are still running) or starts one; call it inside the runtime.
    pub fn new(config: Config) -> Result<Self> {
        if config.coordinators.is_empty() {
            return Err(Error::NoCoordinators);
        }
        // Before anything else: a second agent here would attach to this one's executor.
        let work_dir = WorkDir::lock(&config.work_dir)?;
        let agent_id = match &config.tls {
            // The certificate names the agent: its id is that name.
            Some(tls) => work_dir.named_agent_id(&tls.identity().name)?,
            None => work_dir.agent_id()?,
        };
        let highest_epoch = work_dir.highest_epoch()?;
        let history_path = config.work_dir.join("launched");
        let history = History::open(&history_path, LAUNCHES_REMEMBERED).map_err(Error::io("open", &history_path))?;
        let (tx, events) = mpsc::unbounded_channel();
        let own_events = tx.clone();
        let updates_dir = config.work_dir.join("updates");
        let (log, loaded) = UpdateLog::open(&updates_dir).map_err(Error::io("open the update log in", &updates_dir))?;
        for damage in &loaded.corrupt {
            warn!(%damage, "damaged status updates were dropped; the coordinator reconciles their tasks");
        }
        let log = Arc::new(std::sync::Mutex::new(log));
        let logs_dir = config.work_dir.join("output");
        let logs = TaskLogs::open(&logs_dir, config.task_logs_kept)
            .map_err(Error::io("open the task output in", &logs_dir))?;
        let logs = Arc::new(std::sync::Mutex::new(logs));
        let (executor, welcome) = match &config.executor {
            ExecutorMode::InProcess => {
                let executor = setup::build(&config, &agent_id, tx)?.with_update_log(log.clone());
                (Tasks::InProcess(executor), pb::ExecutorWelcome::default())
            }
            ExecutorMode::Process { .. } => {
                let attached = remote::attach(&config, &agent_id)?;
                let welcome = attached.welcome.clone();
                let remote = Remote::start(attached, config.clone(), agent_id.clone(), log.clone(), logs.clone(), tx)?;
                (Tasks::Process(remote), welcome)
            }
        };
        let (unacked, tasks) = {
            let mut guard = log.lock().unwrap_or_else(|p| p.into_inner());
            carry_over(&mut guard, loaded.updates, &agent_id, &welcome)
        };
        if !unacked.is_empty() {
            info!(updates = unacked.len(), "status updates from before the restart will be sent again");
        }
        let mut outbox = Outbox::default();
        for status in unacked {
            outbox.push(status);
        }
        Ok(Self {
            config,
            work_dir,
            agent_id,
            executor,
            events,
            own_events,
            outbox,
            log,
            logs,
            launched: HashMap::new(),
            partition_killed: Default::default(),
            tasks,
            highest_epoch,
            history,
            session_address: String::new(),
            replayed_once: false,
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Keeps a session with the coordinators until `shutdown`, then kills and waits for its tasks.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        info!(agent_id = %self.agent_id, coordinators = ?self.config.coordinators, "agent starting");
        let mut backoff = self.config.reconnect_min;
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        let mut redirect_count = 0u32;
        // Since when no session has been registered (tasks exist only after one was).
        let mut alone_since = tokio::time::Instant::now();
        loop {
            let addr = redirect.take().unwrap_or_else(|| {
                let a = self.config.coordinators[next % self.config.coordinators.len()].clone();
                next += 1;
                a
            });
            let mut answered = redirect_count > 0;
            let (end, registered) = self.session(&addr, &shutdown).await;
            match end {
                SessionEnd::Shutdown => break,
                // Followers name the leader; a stale name (a dead leader) is tried at most a few times in a row.
                SessionEnd::Redirect(leader) if !leader.is_empty() && redirect_count < 3 => {
                    info!(%addr, %leader, "redirected to the leader");
                    redirect = Some(leader);
                    redirect_count += 1;
                    continue;
                }
                SessionEnd::Redirect(_) => {
                    debug!(%addr, "no leader known yet");
                    answered = true;
                }
                // Losing a registered session matters; failing to reach a coordinator while looking
                // for the leader (one is down, an election is under way) is routine.
                SessionEnd::Closed(why) if registered => warn!(%addr, %why, "session with coordinator ended"),
                SessionEnd::Closed(why) => debug!(%addr, %why, "coordinator not reachable"),
            }
            redirect_count = 0;
            if registered {
                alone_since = tokio::time::Instant::now();
            } else if alone_since.elapsed() >= self.config.partition_timeout {
                self.kill_partitioned();
            }
            // A coordinator answered (or was the leader): an election is under way or just done, so try
            // again soon; only when nothing answers does the backoff grow.
            if registered || answered {
                backoff = self.config.reconnect_min;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
        info!("agent stopping; killing its tasks");
        self.executor.shutdown(Duration::from_secs(5)).await;
        Ok(())
    }

    /// No coordinator for the partition timeout: kill every task, so that the copies the coordinators
    /// start elsewhere once they give up on this agent never run beside these.
    fn kill_partitioned(&mut self) {
        let killed = self.executor.kill_all();
        if !killed.is_empty() {
            warn!(tasks = killed.len(), after = ?self.config.partition_timeout, "no coordinator reachable; killing this agent's tasks");
            self.partition_killed.extend(killed);
        }
    }

    /// Answers a launch that is not run with a terminal status: on disk, then through the same
    /// event path as the executor's updates (known, sent, resent until acknowledged).
    fn refuse(&mut self, task_id: &str, state: pb::TaskState, reason: pb::Reason, message: String) {
        let status = crate::executor::status_update(task_id, &self.agent_id, state, reason, message, None, None);
        crate::updates::store(&self.log, &status);
        let _ = self.own_events.send(TaskEvent::Status(status));
    }

    /// What the host has, unless the operator said what to offer (`--cpus`, `--mem`).
    fn resources(&self) -> pb::Resources {
        let mut r = host::detect_resources(&self.config.work_dir, self.config.wasm_slots);
        if let Some(cpus) = self.config.cpus {
            r.cpus = cpus;
        }
        if let Some(mem) = self.config.mem_bytes {
            r.mem_bytes = mem;
        }
        r
    }

    /// The operator's attributes, and what kinds of task this agent runs: `skiff.native` is
    /// `true` only on an agent started with native tasks on (schedulers place native tasks there).
    fn attributes(&self) -> HashMap<String, String> {
        let mut attributes = self.config.attributes.clone();
        attributes.insert(pb::NATIVE_ATTRIBUTE.into(), self.config.native_tasks.to_string());
        attributes
    }

    fn register_message(&self) -> pb::AgentMessage {
        pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Register(pb::Register {
                agent_id: self.agent_id.clone(),
                hostname: host::hostname(),
                resources: Some(self.resources()),
                attributes: self.attributes(),
                tasks: self.tasks.values().cloned().collect(),
                highest_epoch: self.highest_epoch,
                cached_modules: self.executor.cached_modules(),
            })),
        }
    }

    /// One session; returns how it ended and whether it got as far as being registered.
    async fn session(&mut self, addr: &str, shutdown: &CancellationToken) -> (SessionEnd, bool) {
        let mut registered = false;
        let end = self.session_inner(addr, shutdown, &mut registered).await;
        self.config.metrics.connected.set(0);
        (end.unwrap_or_else(|e| SessionEnd::Closed(e.to_string())), registered)
    }

    async fn session_inner(
        &mut self,
        addr: &str,
        shutdown: &CancellationToken,
        registered: &mut bool,
    ) -> Result<SessionEnd> {
        self.session_address = addr.to_owned();
        let endpoint = skiff_tls::coordinator_endpoint(addr, self.config.tls.as_ref())
            .map_err(|reason| Error::BadAddress { address: addr.to_owned(), reason })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2));
        // A frozen coordinator accepts TCP connections but never answers: bound every step.
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = tokio::time::timeout(SETUP_TIMEOUT, endpoint.connect()) => match c {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Ok(SessionEnd::Closed(format!("cannot connect: {e}"))),
                Err(_) => return Ok(SessionEnd::Closed("connecting timed out".into())),
            },
        };
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out, out_rx) = mpsc::channel::<pb::AgentMessage>(1024);
        let _ = out.send(self.register_message()).await;
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = tokio::time::timeout(SETUP_TIMEOUT, client.session(ReceiverStream::new(out_rx))) => r,
        };
        let mut inbound = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Ok(SessionEnd::Closed(format!("register refused: {status}"))),
            Err(_) => return Ok(SessionEnd::Closed("opening the session timed out".into())),
        };

        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut sequence = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        if let Some(end) = self.command(msg, &out, registered, &mut heartbeat).await {
                            return Ok(end);
                        }
                    }
                    Ok(None) => return Ok(SessionEnd::Closed("coordinator closed the stream".into())),
                    Err(status) => return Ok(SessionEnd::Closed(status.to_string())),
                },
                // Not before the coordinator has registered us: until then events wait, in order, in the channel.
                Some(event) = self.events.recv(), if *registered => {
                    let msg = match event {
                        TaskEvent::Status(mut status) => {
                            if self.partition_killed.remove(&status.task_id) {
                                status.state = pb::TaskState::Lost as i32;
                                status.reason = pb::Reason::AgentLost as i32;
                                status.message = format!(
                                    "killed by its agent after {:?} without a coordinator",
                                    self.config.partition_timeout
                                );
                                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                                if let Err(err) = log.remove(&status.update_id).and_then(|()| log.append(&status)) {
                                    warn!(%err, "cannot rewrite a status update on disk");
                                }
                            }
                            self.tasks.insert(status.task_id.clone(), status.clone());
                            self.config.metrics.status(&status, crate::task::is_terminal(status.state));
                            self.outbox.push_sent(status.clone(), tokio::time::Instant::now());
                            pb::agent_message::Msg::Status(status)
                        }
                        TaskEvent::Output(output) => {
                            // An executor process has written it already (before acknowledging it).
                            if matches!(self.executor, Tasks::InProcess(_)) {
                                self.keep_output(&output);
                            }
                            pb::agent_message::Msg::Output(output)
                        }
                        TaskEvent::Usage(usage) => {
                            self.config.metrics.usage(&usage);
                            pb::agent_message::Msg::Usage(usage)
                        }
                    };
                    if out.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                        return Ok(SessionEnd::Closed("outbound stream closed".into()));
                    }
                }
                // Unacknowledged past their retry interval (a lost ack, or not persisted): again.
                _ = sleep_until_due(self.outbox.next_due()), if *registered && !self.outbox.is_empty() => {
                    let due = self.outbox.due(tokio::time::Instant::now());
                    if !due.is_empty() {
                        debug!(updates = due.len(), "status updates sent again: not acknowledged in time");
                    }
                    for status in due {
                        if out.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Status(status)) }).await.is_err() {
                            return Ok(SessionEnd::Closed("outbound stream closed".into()));
                        }
                    }
                }
                _ = heartbeat.tick(), if *registered => {
                    self.observe();
                    sequence += 1;
                    let hb = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { sequence })) };
                    if out.send(hb).await.is_err() {
                        return Ok(SessionEnd::Closed("outbound stream closed".into()));
                    }
                }
            }
        }
    }

    /// Sets the gauges read from the agent's own state (once a heartbeat, off the path of each
    /// event: it reads every task the agent holds).
    fn observe(&self) {
        let m = &self.config.metrics;
        m.tasks(self.tasks.values());
        m.unacknowledged.set(self.outbox.len() as i64);
        m.event_backlog.set(self.events.len() as i64);
    }

    /// Writes a chunk of output to disk (a failure is logged: the chunk still goes on).
    fn keep_output(&self, chunk: &pb::TaskOutput) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = logs.append(chunk) {
            warn!(task_id = %chunk.task_id, %err, "cannot keep task output on disk");
        }
    }

    /// Every kept chunk of output, task by task (oldest task first).
    fn kept_output(&self) -> Vec<pb::TaskOutput> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut chunks = Vec::new();
        for task_id in logs.task_ids() {
            match logs.replay(task_id) {
                Ok(c) => chunks.extend(c),
                Err(err) => warn!(task_id, %err, "cannot read kept task output"),
            }
        }
        chunks
    }

    /// Handles one command; returns `Some` when the session must end.
    async fn command(
        &mut self,
        msg: pb::CoordinatorMessage,
        out: &mpsc::Sender<pb::AgentMessage>,
        registered: &mut bool,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<SessionEnd> {
        let body = msg.msg?;
        if let In::Redirect(r) = body {
            return Some(SessionEnd::Redirect(r.leader_address));
        }
        if msg.epoch < self.highest_epoch {
            warn!(epoch = msg.epoch, highest = self.highest_epoch, "refusing a command from an older leader epoch");
            if matches!(body, In::Registered(_)) {
                return Some(SessionEnd::Closed(format!(
                    "coordinator leads under epoch {}, older than epoch {} seen before",
                    msg.epoch, self.highest_epoch
                )));
            }
            return None;
        }
        if msg.epoch > self.highest_epoch {
            if let Err(err) = self.work_dir.store_highest_epoch(msg.epoch) {
                // Refusing stale leaders after a restart depends on this file: do not act on it unsaved.
                warn!(%err, epoch = msg.epoch, "cannot persist the leader epoch; ignoring the command");
                return Some(SessionEnd::Closed(format!("cannot persist leader epoch: {err}")));
            }
            self.highest_epoch = msg.epoch;
        }
        match body {
            In::Registered(r) => {
                info!(agent_id = %r.agent_id, epoch = msg.epoch, "registered with coordinator");
                self.executor.set_coordinator(&self.session_address);
                *registered = true;
                self.config.metrics.connected.set(1);
                self.config.metrics.set_capacity(&self.resources());
                let interval = Duration::from_millis(r.heartbeat_interval_ms.max(100));
                *heartbeat = tokio::time::interval(interval);
                // A leader that lacks our tasks' output (it took over, or this agent restarted
                // holding chunks it had not sent) gets it again from disk, before anything new;
                // leaders drop what they have seen already.
                if r.replay_output || !self.replayed_once {
                    self.replayed_once = true;
                    for chunk in self.kept_output() {
                        let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Output(chunk)) };
                        if out.send(m).await.is_err() {
                            return Some(SessionEnd::Closed("outbound stream closed".into()));
                        }
                    }
                }
                // Whatever was not acknowledged before goes again, in order.
                self.outbox.reconnected();
                for status in self.outbox.unsent(tokio::time::Instant::now()) {
                    let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Status(status)) };
                    if out.send(m).await.is_err() {
                        return Some(SessionEnd::Closed("outbound stream closed".into()));
                    }
                }
            }
            In::Launch(launch) => {
                let Some(spec) = launch.spec else {
                    warn!("launch without a spec ignored");
                    return None;
                };
                // Checked once, here, by the rules the leader checked it with.
                let task_id = spec.task_id.clone();
                let spec = match skiff_core::TaskSpec::try_from(spec) {
                    Ok(spec) => spec,
                    Err(err) => {
                        warn!(%err, "refusing a launch whose spec is invalid");
                        // A task whose id is itself invalid cannot be answered by that id.
                        if skiff_core::id::check_task_id(&task_id).is_ok() {
                            let why = format!("the agent refused the spec: {err}");
                            self.refuse(&task_id, pb::TaskState::Failed, pb::Reason::LaunchFailed, why);
                        }
                        return None;
                    }
                };
                if self.tasks.contains_key(&spec.task_id) || self.executor.is_running(&spec.task_id) {
                    debug!(task_id = %spec.task_id, "duplicate launch ignored");
                    return None;
                }
                if self.history.contains(&spec.task_id) {
                    // Launched here before, ended, and its end acknowledged: never run it again.
                    warn!(task_id = %spec.task_id, epoch = msg.epoch, "refusing a second launch of a task this agent ran");
                    let why = "launched on this agent before: a task is never started twice".into();
                    self.refuse(&spec.task_id, pb::TaskState::Lost, pb::Reason::AgentLost, why);
                    return None;
                }
                if let Err(err) = self.history.record(&spec.task_id) {
                    // Unrecorded, a later duplicate launch could run it again: do not run it now.
                    warn!(%err, task_id = %spec.task_id, "cannot record a launch on disk; refusing it");
                    let why = format!("the agent cannot record the launch on its disk: {err}");
                    self.refuse(&spec.task_id, pb::TaskState::Failed, pb::Reason::LaunchFailed, why);
                    return None;
                }
                info!(task_id = %spec.task_id, epoch = msg.epoch, "launching task");
                // Known from now on: a re-registration reports it, and a second launch is refused.
                let staging = crate::executor::staging(&spec.task_id, &self.agent_id);
                // Checkpointed before the task can start (in the update log, not sent): an agent
                // killed now knows after its restart that it launched the task, reports it LOST and
                // refuses the launch a new leader may send again, instead of running it a second
                // time. Dropped once the coordinator acknowledges any later update of the task.
                crate::updates::store(&self.log, &staging);
                self.launched.insert(spec.task_id.clone(), staging.update_id.clone());
                self.tasks.insert(spec.task_id.clone(), staging);
                self.executor.launch(spec.into_inner());
            }
            In::Kill(kill) => {
                if !self.executor.kill(&kill.task_id) {
                    debug!(task_id = %kill.task_id, "kill for a task not running here");
                }
            }
            In::Ack(ack) => {
                self.outbox.ack(&ack.update_id);
                let checkpoint = self.launched.remove(&ack.task_id);
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                for update_id in checkpoint.iter().chain([&ack.update_id]) {
                    if let Err(err) = log.remove(update_id) {
                        warn!(%err, %update_id, "cannot remove an acknowledged update from disk");
                    }
                }
                drop(log);
                let done = self
                    .tasks
                    .get(&ack.task_id)
                    .is_some_and(|s| s.update_id == ack.update_id && crate::task::is_terminal(s.state));
                if done {
                    self.tasks.remove(&ack.task_id);
                }
            }
            In::Redirect(_) => {}
        }
        None
    }
}

/// The updates an earlier run of this agent left unacknowledged: sent again in order. Tasks the
/// executor process still runs (`welcome`) were re-attached and are reported as it says; a task
/// the updates show alive that it neither runs nor says ended (its end follows from it) ran under
/// a process that is gone: it is reported LOST.
fn carry_over(
    log: &mut UpdateLog,
    updates: Vec<pb::TaskStatus>,
    agent_id: &str,
    welcome: &pb::ExecutorWelcome,
) -> (VecDeque<pb::TaskStatus>, HashMap<String, pb::TaskStatus>) {
    let mut latest: HashMap<String, pb::TaskStatus> = HashMap::new();
    let mut unacked: VecDeque<pb::TaskStatus> = updates.into();
    for status in &unacked {
        latest.insert(status.task_id.clone(), status.clone());
    }
    let alive: HashSet<&str> = welcome.running.iter().map(|s| s.task_id.as_str()).collect();
    let ended: HashSet<&str> = welcome.ended.iter().map(|s| s.task_id.as_str()).collect();
    let mut orphans: Vec<&pb::TaskStatus> = latest
        .values()
        .filter(|s| !crate::task::is_terminal(s.state))
        .filter(|s| !alive.contains(s.task_id.as_str()) && !ended.contains(s.task_id.as_str()))
        .collect();
    orphans.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let lost: Vec<pb::TaskStatus> = orphans
        .into_iter()
        .map(|s| {
            crate::executor::status_update(
                &s.task_id,
                agent_id,
                pb::TaskState::Lost,
                pb::Reason::AgentLost,
                "the agent restarted while the task ran and its executor process no longer runs it".into(),
                None,
                None,
            )
        })
        .collect();
    for status in lost {
        if let Err(err) = log.append(&status) {
            warn!(%err, "cannot write a status update to disk");
        }
        latest.insert(status.task_id.clone(), status.clone());
        unacked.push_back(status);
    }
    // Re-attached, or ended while no agent listened (the end follows from the executor): reported
    // as such by the registration, so no leader takes them for lost.
    for status in welcome.running.iter().chain(&welcome.ended) {
        let newer = latest.get(&status.task_id).is_none_or(|known| !crate::task::is_terminal(known.state));
        if newer {
            latest.insert(status.task_id.clone(), status.clone());
        }
    }
    (unacked, latest)
}

/// Sleeps until `due` (forever without one).
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
