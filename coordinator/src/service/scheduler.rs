//! `SchedulerService`: the framework API. A subscription is a stream of events fed by the leader;
//! calls are forwarded to it. When the leader steps down its streams end, and frameworks subscribe
//! again with the new one (their calls name the epoch they subscribed under).

use skiff_proto as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::leader_of;
use crate::acl::gate::Gate;
use crate::acl::{Ask, Capability, Need, Principal};
use crate::leader::Command;
use crate::replica::Role;

#[derive(Debug, Clone)]
pub struct SchedulerApi {
    roles: watch::Receiver<Role>,
    gate: Gate,
    /// Events queued for a framework before it counts as not reading (`LeaderConfig::peer_buffer`).
    buffer: usize,
}

impl SchedulerApi {
    pub fn new(roles: watch::Receiver<Role>, gate: Gate, buffer: usize) -> Self {
        Self { roles, gate, buffer: buffer.max(2) }
    }
}

#[tonic::async_trait]
impl pb::scheduler_service_server::SchedulerService for SchedulerApi {
    type SubscribeStream = ReceiverStream<Result<pb::SchedulerEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.gate.client(&request)?;
        let info = request
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("subscribe: framework info is missing"))?;
        let info = skiff_core::Subscription::try_from(info).map_err(refused)?;
        let leader = leader_of(&self.roles)?;
        let ask = Ask::Need(Need::on_role(Capability::Framework, &info.role));
        // The leader puts the token's principal in place of the anonymous one.
        let principal = Principal::anonymous();
        let (tx, rx) = mpsc::channel(self.buffer);
        leader.ask_as(&caller, ask, |reply| Command::Subscribe { info, principal, tx, reply }).await??;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn call(&self, request: Request<pb::SchedulerCall>) -> Result<Response<pb::SchedulerCallResponse>, Status> {
        let caller = self.gate.client(&request)?;
        let call = skiff_core::FrameworkCall::try_from(request.into_inner()).map_err(refused)?;
        let leader = leader_of(&self.roles)?;
        let ask = Ask::Framework(call.framework_id.clone());
        let task_ids = leader.ask_as(&caller, ask, |reply| Command::Call { call, reply }).await??;
        Ok(Response::new(pb::SchedulerCallResponse { task_ids }))
    }
}

/// A subscription or call that breaks the rules, as the framework is told.
fn refused(err: skiff_core::CallError) -> Status {
    match err {
        skiff_core::CallError::Invalid(msg) => Status::invalid_argument(msg),
        skiff_core::CallError::Limit(msg) => Status::resource_exhausted(msg),
    }
}
