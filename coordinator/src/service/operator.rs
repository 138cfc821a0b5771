//! `OperatorService`: what the CLI calls.

use futures::stream::{self, BoxStream, StreamExt};
use skiff_proto as pb;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::leader_of;
use crate::acl::gate::Gate;
use crate::acl::{ANONYMOUS, Ask, Caller, Capability, Need};
use crate::leader::{Command, LeaderHandle};
use crate::replica::Role;

#[derive(Debug, Clone)]
pub struct OperatorApi {
    roles: watch::Receiver<Role>,
    advertise: String,
    gate: Gate,
}

impl OperatorApi {
    pub fn new(roles: watch::Receiver<Role>, advertise: String, gate: Gate) -> Self {
        Self { roles, advertise, gate }
    }

    fn leader(&self) -> Result<LeaderHandle, Status> {
        leader_of(&self.roles)
    }

    /// The leader and who the request says it comes from (the leader checks it with each command).
    fn caller<T>(&self, request: &Request<T>) -> Result<(LeaderHandle, Caller), Status> {
        let caller = self.gate.client(request)?;
        Ok((self.leader()?, caller))
    }
}

/// What submitting a task needs: `submit`, or `submit-native` for a native one.
fn submit_capability(spec: Option<&pb::TaskSpec>) -> Capability {
    match spec.and_then(|s| s.kind.as_ref()) {
        Some(pb::task_spec::Kind::Native(_)) => Capability::SubmitNative,
        _ => Capability::Submit,
    }
}

/// A spec converted at this edge; a caller that may not submit hears that before what is wrong
/// with its spec.
async fn checked<T>(
    leader: &LeaderHandle,
    caller: &Caller,
    need: Capability,
    spec: Result<T, skiff_core::SpecError>,
) -> Result<T, Status> {
    match spec {
        Ok(spec) => Ok(spec),
        Err(err) => {
            leader.authorize(caller, Ask::Jobs(need)).await?;
            Err(Status::invalid_argument(format!("invalid request: {err}")))
        }
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    type WatchTaskStream = BoxStream<'static, Result<pb::TaskEvent, Status>>;

    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskResponse>, Status> {
        let need = submit_capability(request.get_ref().spec.as_ref());
        let (leader, caller) = self.caller(&request)?;
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("submit: spec is missing"))?;
        let spec = checked(&leader, &caller, need, skiff_core::TaskSpec::try_from(spec)).await?;
        // The leader puts the token's accessor in place of `anonymous`.
        let submitted_by = ANONYMOUS.to_owned();
        let (task_id, job_id) =
            leader.ask_as(&caller, Ask::Jobs(need), |reply| Command::Submit { spec, submitted_by, reply }).await??;
        Ok(Response::new(pb::SubmitTaskResponse { task_id, job_id }))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let need = submit_capability(request.get_ref().spec.as_ref().and_then(|s| s.task.as_ref()));
        let (leader, caller) = self.caller(&request)?;
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("submit job: spec is missing"))?;
        let mut spec = checked(&leader, &caller, need, skiff_core::JobSpec::try_from(spec)).await?;
        // Whatever the client sent: the leader records the token's accessor.
        spec.set_submitted_by(ANONYMOUS.to_owned());
        Ok(Response::new(leader.ask_as(&caller, Ask::Jobs(need), |reply| Command::SubmitJob { spec, reply }).await??))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let job_id = request.into_inner().job_id;
        let job =
            leader.ask_as(&caller, Ask::Jobs(Capability::Read), |reply| Command::GetJob { job_id, reply }).await??;
        Ok(Response::new(pb::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let jobs = leader.ask_as(&caller, Ask::Jobs(Capability::Read), |reply| Command::ListJobs { reply }).await??;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn kill_job(&self, request: Request<pb::KillJobRequest>) -> Result<Response<pb::KillJobResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let job_id = request.into_inner().job_id;
        leader.ask_as(&caller, Ask::Jobs(Capability::Kill), |reply| Command::KillJob { job_id, reply }).await??;
        Ok(Response::new(pb::KillJobResponse {}))
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let pb::WatchTaskRequest { task_id, history_only, from_event } = request.into_inner();
        let ask = Ask::Task(Capability::Read, task_id.clone());
        let watch = leader.ask_as(&caller, ask, |reply| Command::Watch { task_id, from_event, reply }).await??;
        let history = stream::iter(watch.history).map(Ok);
        let events = match watch.live {
            Some(live) if !history_only => history.chain(ReceiverStream::new(live)).boxed(),
            _ => history.boxed(),
        };
        Ok(Response::new(events))
    }

    async fn kill_task(&self, request: Request<pb::KillTaskRequest>) -> Result<Response<pb::KillTaskResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let task_id = request.into_inner().task_id;
        let ask = Ask::Task(Capability::Kill, task_id.clone());
        leader.ask_as(&caller, ask, |reply| Command::Kill { task_id, reply }).await??;
        Ok(Response::new(pb::KillTaskResponse {}))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::GetTaskResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let task_id = request.into_inner().task_id;
        let ask = Ask::Task(Capability::Read, task_id.clone());
        Ok(Response::new(leader.ask_as(&caller, ask, |reply| Command::GetTask { task_id, reply }).await??))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let ask = Ask::Need(Need::fleet(Capability::Operator));
        let agents = leader.ask_as(&caller, ask, |reply| Command::ListAgents { reply }).await??;
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn get_leader(
        &self,
        request: Request<pb::GetLeaderRequest>,
    ) -> Result<Response<pb::GetLeaderResponse>, Status> {
        // Anyone of the fleet (any valid certificate) may ask who leads.
        self.gate.peer(&request)?;
        let answer = match &*self.roles.borrow() {
            Role::Leader(handle) => {
                pb::GetLeaderResponse { leader_address: self.advertise.clone(), epoch: handle.epoch(), is_leader: true }
            }
            Role::Follower { leader: Some(info) } => {
                pb::GetLeaderResponse { leader_address: info.address.clone(), epoch: info.epoch, is_leader: false }
            }
            Role::Follower { leader: None } => pb::GetLeaderResponse::default(),
        };
        Ok(Response::new(answer))
    }
}
