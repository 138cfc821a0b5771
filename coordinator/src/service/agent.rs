//! `AgentService`: one long-lived bidirectional stream per agent.

use futures::StreamExt;
use skiff_core::limits;
use skiff_proto as pb;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::acl::gate::{Gate, check_agent};
use crate::leader::{Command, LeaderHandle};
use crate::replica::Role;

/// How long a follower holds an agent's session open waiting for a leader to be elected before it
/// answers "no leader known" (so agents reconnect as soon as there is one, without polling).
const AWAIT_LEADER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct AgentApi {
    roles: watch::Receiver<Role>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    gate: Gate,
    /// Messages queued for an agent before it counts as not reading (`LeaderConfig::peer_buffer`).
    buffer: usize,
}

impl AgentApi {
    pub fn new(
        roles: watch::Receiver<Role>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        gate: Gate,
        buffer: usize,
    ) -> Self {
        Self { roles, tracker, shutdown, gate, buffer: buffer.max(2) }
    }

    /// The leader's handle, or the redirect a follower answers with.
    async fn leader_or_redirect(&self) -> Result<LeaderHandle, pb::CoordinatorMessage> {
        let mut roles = self.roles.clone();
        let _ =
            tokio::time::timeout(AWAIT_LEADER, roles.wait_for(|role| !matches!(role, Role::Follower { leader: None })))
                .await;
        let role = roles.borrow().clone();
        match role {
            Role::Leader(handle) => Ok(handle),
            Role::Follower { leader } => {
                let (leader_address, epoch) = leader.map_or((String::new(), 0), |l| (l.address, l.epoch));
                Err(pb::CoordinatorMessage {
                    epoch,
                    msg: Some(pb::coordinator_message::Msg::Redirect(pb::Redirect { leader_address })),
                })
            }
        }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = self.gate.agent(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(limits::HANDSHAKE, inbound.next()).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "no register message within {:?} of opening the session",
                limits::HANDSHAKE
            ))
        })?;
        let register = match first {
            Some(Ok(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Register(r)) })) => {
                skiff_core::Registration::try_from(r).map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            Some(Ok(_)) => {
                return Err(Status::invalid_argument("the first message on the stream must be register"));
            }
            Some(Err(status)) => return Err(status),
            None => return Err(Status::invalid_argument("stream closed before register")),
        };
        check_agent(identity.as_ref(), &register.agent_id)?;
        let agent_id = register.agent_id.clone();
        let (tx, rx) = mpsc::channel(self.buffer);
        let leader = match self.leader_or_redirect().await {
            Ok(leader) => leader,
            Err(redirect) => {
                let _ = tx.try_send(Ok(redirect));
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
        };
        let session = leader.ask(|reply| Command::AgentConnect { register, tx, reply }).await??;

        // Forward what the agent sends until its stream ends, then tell the leader it is gone.
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = inbound.next() => next,
                };
                match next {
                    Some(Ok(pb::AgentMessage { msg: Some(msg) })) => match skiff_core::AgentReport::try_from(msg) {
                        Ok(report) => {
                            let cmd = Command::AgentMessage { agent_id: agent_id.clone(), session, report };
                            if leader.send(cmd).await.is_err() {
                                break;
                            }
                        }
                        // As Mesos drops an invalid status update: the session goes on.
                        Err(err) => warn!(%agent_id, %err, "a message from the agent breaks the rules; dropped"),
                    },
                    Some(Ok(pb::AgentMessage { msg: None })) => {}
                    Some(Err(status)) => {
                        debug!(%agent_id, %status, "agent stream failed");
                        break;
                    }
                    None => break,
                }
            }
            let _ = leader.send(Command::AgentDisconnect { agent_id, session }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
