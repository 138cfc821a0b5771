//! How the gRPC services talk to the leader: [`Command`]s over a channel, through a [`LeaderHandle`].

use skiff_proto as pb;
use tokio::sync::{mpsc, oneshot};

use super::FrameworkSender;
use super::acl::{AclAnswer, AclOp};
use crate::acl::{Ask, Caller, Principal};
use crate::error::{Error, Result};

/// Messages to one connected agent.
pub type AgentSender = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;

/// A watcher's view of a task: what happened so far, then live events until the task is terminal.
#[derive(Debug)]
pub struct Watch {
    pub history: Vec<pb::TaskEvent>,
    /// `None` when the task is already terminal. Ends with an error if the watcher fell behind.
    pub live: Option<mpsc::Receiver<Result<pb::TaskEvent, tonic::Status>>>,
}

/// Sends `item` to a peer's bounded stream. A peer whose buffer is full is not reading: its last
/// slot gets the status `cut_off` makes (the reason it is disconnected) and false is answered, as
/// for a closed stream; the caller then drops the sender.
pub fn offer<T>(tx: &mpsc::Sender<Result<T, tonic::Status>>, item: T, cut_off: impl FnOnce() -> tonic::Status) -> bool {
    match tx.capacity() {
        0 => false,
        1 => {
            let _ = tx.try_send(Err(cut_off()));
            false
        }
        _ => tx.try_send(Ok(item)).is_ok(),
    }
}

/// Where the leader sends a watcher the events of its task (bounded: see [`super::LeaderConfig::watch_buffer`]).
pub type WatchSender = mpsc::Sender<Result<pb::TaskEvent, tonic::Status>>;

/// Requests to the leader.
#[derive(Debug)]
pub enum Command {
    AgentConnect {
        register: skiff_core::Registration,
        tx: AgentSender,
        reply: oneshot::Sender<Result<u64>>,
    },
    AgentMessage {
        agent_id: String,
        session: u64,
        report: skiff_core::AgentReport,
    },
    AgentDisconnect {
        agent_id: String,
        session: u64,
    },
    /// `cmd`, once `caller` is found to be allowed what `ask` says (in the same turn of the
    /// leader's loop: no second hop); refused through `cmd`'s own reply otherwise.
    Authorized {
        caller: Caller,
        ask: Ask,
        cmd: Box<Command>,
    },
    /// Who `caller` is, if it may do what `ask` says.
    Authorize {
        caller: Caller,
        ask: Ask,
        reply: oneshot::Sender<Result<Principal>>,
    },
    /// A change to, or a question about, the ACLs (each checks its own capability).
    Acl {
        caller: Caller,
        op: AclOp,
        reply: oneshot::Sender<Result<AclAnswer>>,
    },
    /// A one-instance job; answers its task id and job id.
    Submit {
        spec: skiff_core::TaskSpec,
        submitted_by: String,
        reply: oneshot::Sender<Result<(String, String)>>,
    },
    SubmitJob {
        spec: skiff_core::JobSpec,
        reply: oneshot::Sender<Result<pb::SubmitJobResponse>>,
    },
    GetJob {
        job_id: String,
        reply: oneshot::Sender<Result<pb::JobStatus>>,
    },
    ListJobs {
        reply: oneshot::Sender<Result<Vec<pb::JobStatus>>>,
    },
    KillJob {
        job_id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Watch {
        task_id: String,
        /// Events already seen: history starts after them.
        from_event: u64,
        reply: oneshot::Sender<Result<Watch>>,
    },
    Kill {
        task_id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    GetTask {
        task_id: String,
        reply: oneshot::Sender<Result<pb::GetTaskResponse>>,
    },
    ListAgents {
        reply: oneshot::Sender<Result<Vec<pb::AgentInfo>>>,
    },
    GetAgent {
        agent_id: String,
        reply: oneshot::Sender<Result<pb::AgentInfo>>,
    },
    /// The cluster at a glance (without the leader's address and the replicas: the service adds them).
    ClusterStatus {
        reply: oneshot::Sender<Result<pb::ClusterStatus>>,
    },
    ListTasks {
        query: super::TaskQuery,
        reply: oneshot::Sender<Result<pb::ListTasksResponse>>,
    },
    /// Drains an agent (no new placements; its tasks killed after `deadline`), or undoes it.
    DrainAgent {
        agent_id: String,
        deadline: Option<std::time::Duration>,
        undo: bool,
        reply: oneshot::Sender<Result<pb::AgentInfo>>,
    },
    /// The registry's record of an artifact, if the fleet holds it.
    StatArtifact {
        sha256: String,
        reply: oneshot::Sender<Option<pb::ArtifactRecord>>,
    },
    /// Records an artifact that a majority of the replicas now hold.
    RecordArtifact {
        record: pb::ArtifactRecord,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A framework subscribes (or re-subscribes); answers its info with the id set.
    Subscribe {
        info: skiff_core::Subscription,
        principal: Principal,
        tx: FrameworkSender,
        reply: oneshot::Sender<Result<pb::FrameworkInfo>>,
    },
    /// A framework's call; answers the launched task ids of an accept.
    Call {
        call: skiff_core::FrameworkCall,
        reply: oneshot::Sender<Result<Vec<String>>>,
    },
}

impl Command {
    /// Answers the command with `err` instead of doing it (commands without a fallible reply are
    /// dropped: their asker sees the leader go away).
    pub(super) fn refuse(self, err: Error) {
        macro_rules! no {
            ($reply:expr) => {{
                let _ = $reply.send(Err(err));
            }};
        }
        match self {
            Command::AgentConnect { reply, .. } => no!(reply),
            Command::Authorize { reply, .. } => no!(reply),
            Command::Acl { reply, .. } => no!(reply),
            Command::Submit { reply, .. } => no!(reply),
            Command::SubmitJob { reply, .. } => no!(reply),
            Command::GetJob { reply, .. } => no!(reply),
            Command::ListJobs { reply } => no!(reply),
            Command::KillJob { reply, .. } => no!(reply),
            Command::Watch { reply, .. } => no!(reply),
            Command::Kill { reply, .. } => no!(reply),
            Command::GetTask { reply, .. } => no!(reply),
            Command::ListAgents { reply } => no!(reply),
            Command::GetAgent { reply, .. } => no!(reply),
            Command::ClusterStatus { reply } => no!(reply),
            Command::ListTasks { reply, .. } => no!(reply),
            Command::DrainAgent { reply, .. } => no!(reply),
            Command::RecordArtifact { reply, .. } => no!(reply),
            Command::Subscribe { reply, .. } => no!(reply),
            Command::Call { reply, .. } => no!(reply),
            Command::Authorized { cmd, .. } => cmd.refuse(err),
            Command::AgentMessage { .. } | Command::AgentDisconnect { .. } | Command::StatArtifact { .. } => {}
        }
    }

    /// Gives the command the principal it runs as (what it records as submitter or owner).
    pub(super) fn run_as(&mut self, principal: Principal) {
        match self {
            Command::Submit { submitted_by, .. } => *submitted_by = principal.accessor,
            Command::SubmitJob { spec, .. } => spec.set_submitted_by(principal.accessor),
            Command::Subscribe { principal: p, .. } => *p = principal,
            _ => {}
        }
    }
}

/// Cheap, cloneable access to the leader.
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    tx: mpsc::Sender<Command>,
    epoch: u64,
}

impl LeaderHandle {
    pub(super) fn new(tx: mpsc::Sender<Command>, epoch: u64) -> Self {
        Self { tx, epoch }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sends a command that carries no reply.
    pub async fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| Error::ShuttingDown)
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Sends a command built around a reply channel, to be done only if `caller` may do what
    /// `ask` says (checked by the leader as it takes the command), and waits for the answer.
    pub async fn ask_as<T>(
        &self,
        caller: &Caller,
        ask: Ask,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        if *caller == Caller::Open {
            return self.ask(make).await;
        }
        let (reply, rx) = oneshot::channel();
        let cmd = Box::new(make(reply));
        self.send(Command::Authorized { caller: caller.clone(), ask, cmd }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Who `caller` is, if it may do what `ask` says (at once with ACLs off).
    pub async fn authorize(&self, caller: &Caller, ask: Ask) -> Result<Principal> {
        if *caller == Caller::Open {
            return Ok(Principal::anonymous());
        }
        let caller = caller.clone();
        self.ask(|reply| Command::Authorize { caller, ask, reply }).await?
    }
}
