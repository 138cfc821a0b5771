//! `AgentService`: one long-lived bidirectional stream per agent.

use futures::StreamExt;
use skiff_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::leader::{Command, LeaderHandle};

#[derive(Debug, Clone)]
pub struct AgentApi {
    leader: LeaderHandle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl AgentApi {
    pub fn new(leader: LeaderHandle, tracker: TaskTracker, shutdown: CancellationToken) -> Self {
        Self { leader, tracker, shutdown }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type SessionStream = UnboundedReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let register = match inbound.next().await {
            Some(Ok(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Register(r)) })) => r,
            Some(Ok(_)) => {
                return Err(Status::invalid_argument("the first message on the stream must be register"));
            }
            Some(Err(status)) => return Err(status),
            None => return Err(Status::invalid_argument("stream closed before register")),
        };
        let agent_id = register.agent_id.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let session = self.leader.ask(|reply| Command::AgentConnect { register, tx, reply }).await??;

        // Forward what the agent sends until its stream ends, then tell the leader it is gone.
        let leader = self.leader.clone();
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = inbound.next() => next,
                };
                match next {
                    Some(Ok(pb::AgentMessage { msg: Some(msg) })) => {
                        let cmd = Command::AgentMessage { agent_id: agent_id.clone(), session, msg };
                        if leader.send(cmd).await.is_err() {
                            break;
                        }
                    }
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
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
