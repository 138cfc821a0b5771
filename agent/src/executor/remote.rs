//! The agent's side of its executor process (see [`super::process`]): relaying its events and
//! driving it, once [`super::attach`] found (or started) it.
//!
//! Every status update the executor sends is written to the agent's update log before it is handed
//! to the session and before the executor is told it may forget it (an update already in the log,
//! replayed to a restarted agent, is not written or sent twice). When the connection ends the agent
//! attaches again: to the same executor if it still runs (a task its welcome does not name is
//! LOST), else to a new one (every task is LOST: they died with the old executor).

use std::collections::HashSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use prost::Message;
use skiff_proto as pb;
use skiff_proto::executor_event::Msg as Ev;
use skiff_proto::executor_request::Msg as Req;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::attach::attach_or;
pub use super::attach::{Attached, attach};
use super::status_update;
use super::wire;
use crate::config::Config;
use crate::error::Result;
use crate::task::{TaskEvent, is_terminal};
use crate::task_logs::TaskLogs;
use crate::updates::UpdateLog;

/// How a connection ended by a failing update log is told apart.
const DISK_ERROR: &str = "disk";

/// What the relay and the agent share.
#[derive(Debug, Default)]
struct Shared {
    /// Tasks handed to the executor and not ended.
    running: Mutex<HashSet<String>>,
    cached: Mutex<Vec<String>>,
    /// Tasks asked to be killed and not ended, and the coordinator named last: what an executor
    /// attached again is told again (requests in flight on a lost connection are lost with it).
    kills: Mutex<HashSet<String>>,
    coordinator: Mutex<Option<String>>,
    stopping: AtomicBool,
    /// The executor was sent `stop`: its connection ending is expected.
    stop_sent: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The executor process, as the agent drives it.
#[derive(Debug)]
pub struct Remote {
    requests: mpsc::UnboundedSender<pb::ExecutorRequest>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The relay's parts.
struct Relay {
    config: Config,
    agent_id: String,
    log: Arc<Mutex<UpdateLog>>,
    logs: Arc<Mutex<TaskLogs>>,
    events: mpsc::UnboundedSender<TaskEvent>,
    requests: mpsc::UnboundedReceiver<pb::ExecutorRequest>,
    /// Requests to send first on the next connection (kept over a reconnect).
    resend: Vec<pb::ExecutorRequest>,
    shared: Arc<Shared>,
}

impl Remote {
    /// Starts relaying `attached`'s events (into `log`, then `events`); call inside the runtime.
    pub fn start(
        attached: Attached,
        config: Config,
        agent_id: String,
        log: Arc<Mutex<UpdateLog>>,
        logs: Arc<Mutex<TaskLogs>>,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(attached.welcome.running.iter().map(|s| s.task_id.clone()));
        *shared.cached.lock().unwrap_or_else(|p| p.into_inner()) = attached.welcome.cached_modules.clone();
        let (tx, requests) = mpsc::unbounded_channel();
        let relay = Relay { config, agent_id, log, logs, events, requests, resend: Vec::new(), shared: shared.clone() };
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        tracker.spawn(relay.run(attached, cancel.clone()));
        tracker.close();
        Ok(Self { requests: tx, shared, tracker, cancel })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shared.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, msg: Req) {
        let _ = self.requests.send(pb::ExecutorRequest { msg: Some(msg) });
    }

    pub fn launch(&self, spec: pb::TaskSpec) {
        // Under the lock: a reconnect (which drops queued launches and reports their tasks LOST)
        // sees both the task and its request, or neither.
        let mut running = self.running();
        running.insert(spec.task_id.clone());
        self.request(Req::Launch(pb::LaunchTask { spec: Some(spec) }));
    }

    pub fn kill(&self, task_id: &str) -> bool {
        let running = self.running();
        let known = running.contains(task_id);
        if known {
            lock(&self.shared.kills).insert(task_id.to_owned());
            self.request(Req::Kill(pb::KillTask { task_id: task_id.to_owned() }));
        }
        known
    }

    pub fn kill_all(&self) -> Vec<String> {
        let running = self.running();
        let mut ids: Vec<String> = running.iter().cloned().collect();
        ids.sort();
        lock(&self.shared.kills).extend(ids.iter().cloned());
        self.request(Req::KillAll(pb::ExecutorKillAll {}));
        ids
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        self.running().contains(task_id)
    }

    pub fn cached_modules(&self) -> Vec<String> {
        self.shared.cached.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_coordinator(&self, address: &str) {
        let _running = self.running();
        *lock(&self.shared.coordinator) = Some(address.to_owned());
        self.request(Req::Coordinator(address.to_owned()));
    }

    /// The agent stops on purpose: kill every task, wait (up to `grace`) for their ends to be on
    /// disk, then stop the executor process.
    pub async fn shutdown(&self, grace: Duration) {
        // From now on a connection that ends is the executor stopping, not a loss to recover from.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.request(Req::KillAll(pb::ExecutorKillAll {}));
        let deadline = tokio::time::Instant::now() + grace;
        while !self.running().is_empty() && !self.tracker.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self.running().is_empty() {
            warn!(tasks = self.running().len(), "tasks did not stop within {grace:?}");
        }
        self.request(Req::Stop(pb::ExecutorStop {}));
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            warn!("the executor process did not stop");
        }
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

impl Relay {
    async fn run(mut self, mut attached: Attached, cancel: CancellationToken) {
        // Executor processes this agent started, reaped once they exit.
        let mut children: Vec<Child> = Vec::new();
        loop {
            children.extend(attached.child.take());
            let end = match attached
                .stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(attached.stream))
            {
                Ok(stream) => self.relay(wire::framed(stream), &cancel).await,
                Err(err) => Err(err.to_string()),
            };
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if end.is_ok() || cancel.is_cancelled() || self.shared.stop_sent.load(Ordering::SeqCst) {
                // The executor was told to stop (or the agent is gone): let it exit, then reap it.
                let deadline = Instant::now() + Duration::from_secs(5);
                while children.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return;
            }
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let why = end.err().unwrap_or_default();
            warn!(%why, "lost the connection to the executor process; attaching again");
            if why.starts_with(DISK_ERROR) {
                // Not a tight loop on a failing disk: the executor keeps the update meanwhile.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // The same executor if it still runs (its tasks with it), else a new one (but not while
            // stopping: the agent only needs to deliver its kills and stop to a live one).
            attached = loop {
                let (config, agent_id) = (self.config.clone(), self.agent_id.clone());
                match tokio::task::spawn_blocking(move || attach_or(&config, &agent_id, !stopping)).await {
                    Ok(Ok(a)) => break a,
                    Ok(Err(_)) if stopping => return,
                    Ok(Err(err)) => warn!(%err, "cannot attach to an executor process; trying again in 1 s"),
                    Err(err) => warn!(%err, "attaching to an executor process panicked; trying again in 1 s"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            };
            if cancel.is_cancelled() {
                if let Some(mut child) = attached.child.take() {
                    // Started while the agent was stopping: nobody will attach to it.
                    let _ = child.kill();
                    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                }
                return;
            }
            self.reconcile(&attached.welcome, &why);
        }
    }

    /// After attaching again: tasks the executor neither runs nor says ended are lost (a new
    /// executor runs none); launches not sent yet go to it, then the coordinator's address and the
    /// kills asked for again (both idempotent), and KillAll (and Stop, if asked) if the agent is
    /// stopping.
    fn reconcile(&mut self, welcome: &pb::ExecutorWelcome, why: &str) {
        let mut running = lock(&self.shared.running);
        let (mut launches, mut stop) = (Vec::new(), false);
        while let Ok(request) = self.requests.try_recv() {
            match request.msg {
                Some(Req::Launch(launch)) => launches.push(launch),
                Some(Req::Stop(_)) => stop = true,
                _ => {}
            }
        }
        let queued: HashSet<String> =
            launches.iter().filter_map(|l| l.spec.as_ref()).map(|s| s.task_id.clone()).collect();
        let alive: HashSet<&str> = welcome.running.iter().map(|s| s.task_id.as_str()).collect();
        let ended: HashSet<&str> = welcome.ended.iter().map(|s| s.task_id.as_str()).collect();
        let mut lost: Vec<String> = running
            .iter()
            .filter(|id| !alive.contains(id.as_str()) && !ended.contains(id.as_str()) && !queued.contains(*id))
            .cloned()
            .collect();
        lost.sort();
        *running = alive.iter().map(|id| (*id).to_owned()).chain(queued).collect();
        let mut resend: Vec<Req> = launches.into_iter().map(Req::Launch).collect();
        if let Some(address) = lock(&self.shared.coordinator).clone() {
            resend.push(Req::Coordinator(address));
        }
        let mut kills = lock(&self.shared.kills);
        kills.retain(|id| running.contains(id));
        resend.extend(kills.iter().map(|id| Req::Kill(pb::KillTask { task_id: id.clone() })));
        drop(kills);
        if self.shared.stopping.load(Ordering::SeqCst) {
            resend.push(Req::KillAll(pb::ExecutorKillAll {}));
        }
        if stop {
            resend.push(Req::Stop(pb::ExecutorStop {}));
        }
        drop(running);
        self.resend = resend.into_iter().map(|msg| pb::ExecutorRequest { msg: Some(msg) }).collect();
        *lock(&self.shared.cached) = welcome.cached_modules.clone();
        if !lost.is_empty() {
            warn!(tasks = lost.len(), "tasks the executor process does not run are lost");
        }
        for task_id in lost {
            let status = status_update(
                &task_id,
                &self.agent_id,
                pb::TaskState::Lost,
                pb::Reason::AgentLost,
                format!("the agent's executor process no longer runs the task ({why})"),
                None,
                None,
            );
            relay_status(&self.log, &self.events, &self.shared, status);
        }
    }

    /// Relays until the connection ends (`Err`: it failed or the executor went away). Reading
    /// never waits for writing (requests and acks go out from a writer of their own), so neither
    /// side can block the other with full socket buffers.
    async fn relay(&mut self, conn: wire::Conn, cancel: &CancellationToken) -> std::result::Result<(), String> {
        let (mut sink, stream) = conn.split();
        let (acks, mut acks_rx) = mpsc::unbounded_channel::<u64>();
        let requests = &mut self.requests;
        let first = std::mem::take(&mut self.resend);
        let stop_sent = &self.shared.stop_sent;
        let writer = async move {
            if !first.is_empty() {
                for request in first {
                    sink.feed(request.encode_to_vec().into())
                        .await
                        .map_err(|e| format!("cannot send to the executor: {e}"))?;
                }
                sink.flush().await.map_err(|e| format!("cannot send to the executor: {e}"))?;
            }
            loop {
                let request = tokio::select! {
                    request = requests.recv() => match request {
                        Some(request) => request,
                        None => return Ok(()),
                    },
                    Some(seq) = acks_rx.recv() => pb::ExecutorRequest { msg: Some(Req::Ack(seq)) },
                };
                let stop = matches!(request.msg, Some(Req::Stop(_)));
                sink.send(request.encode_to_vec().into())
                    .await
                    .map_err(|e| format!("cannot send to the executor: {e}"))?;
                if stop {
                    stop_sent.store(true, Ordering::SeqCst);
                }
            }
        };
        let (log, logs, events, shared) = (&self.log, &self.logs, &self.events, &self.shared);
        // Every event already received is handled, then acknowledged with one ack (the last one).
        let mut stream = stream.ready_chunks(256);
        let reader = async move {
            loop {
                let Some(frames) = stream.next().await else {
                    return Err("the executor closed its socket".into());
                };
                let mut last = 0;
                for frame in frames {
                    let bytes = frame.map_err(|err| format!("reading from the executor: {err}"))?;
                    let event: pb::ExecutorEvent = wire::decode(&bytes).map_err(|e| e.to_string())?;
                    if !relay_event(log, logs, events, shared, event.msg) {
                        // Not on disk: not acknowledged (nor anything after it); attaching again
                        // replays it, in order.
                        if last > 0 {
                            let _ = acks.send(last);
                        }
                        return Err(format!("{DISK_ERROR}: an update could not be written to the update log"));
                    }
                    last = last.max(event.seq);
                }
                if last > 0 {
                    let _ = acks.send(last);
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            end = writer => end,
            end = reader => end,
        }
    }
}

/// Hands an event on; false if it was a status update that could not be written to disk.
fn relay_event(
    log: &Mutex<UpdateLog>,
    logs: &Mutex<TaskLogs>,
    events: &mpsc::UnboundedSender<TaskEvent>,
    shared: &Shared,
    msg: Option<Ev>,
) -> bool {
    match msg {
        Some(Ev::Status(status)) => return relay_status(log, events, shared, status),
        Some(Ev::Output(output)) => {
            // On disk before the executor is acknowledged: an agent that dies now still has it.
            if let Err(err) = lock(logs).append(&output) {
                tracing::warn!(task_id = %output.task_id, %err, "cannot keep task output on disk");
            }
            let _ = events.send(TaskEvent::Output(output));
        }
        Some(Ev::Usage(usage)) => {
            let _ = events.send(TaskEvent::Usage(usage));
        }
        Some(Ev::Modules(m)) => *shared.cached.lock().unwrap_or_else(|p| p.into_inner()) = m.sha256,
        Some(Ev::Welcome(_)) | None => {}
    }
    true
}

/// On disk, then to the session (once: an update replayed after a restart may be there already);
/// false if it could not be written (it is sent anyway).
fn relay_status(
    log: &Mutex<UpdateLog>,
    events: &mpsc::UnboundedSender<TaskEvent>,
    shared: &Shared,
    status: pb::TaskStatus,
) -> bool {
    if is_terminal(status.state) {
        lock(&shared.running).remove(&status.task_id);
        lock(&shared.kills).remove(&status.task_id);
    }
    if lock(log).contains(&status.update_id) {
        return true;
    }
    let stored = crate::updates::store(log, &status);
    let _ = events.send(TaskEvent::Status(status));
    stored
}
