//! `OperatorService`: what the CLI calls.

use futures::stream::{self, BoxStream, StreamExt};
use skiff_proto as pb;
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::leader_of;
use crate::leader::{Command, LeaderHandle};
use crate::replica::Role;

#[derive(Debug, Clone)]
pub struct OperatorApi {
    roles: watch::Receiver<Role>,
    advertise: String,
}

impl OperatorApi {
    pub fn new(roles: watch::Receiver<Role>, advertise: String) -> Self {
        Self { roles, advertise }
    }

    fn leader(&self) -> Result<LeaderHandle, Status> {
        leader_of(&self.roles)
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    type WatchTaskStream = BoxStream<'static, Result<pb::TaskEvent, Status>>;

    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("submit: spec is missing"))?;
        let (task_id, job_id) = self.leader()?.ask(|reply| Command::Submit { spec, reply }).await??;
        Ok(Response::new(pb::SubmitTaskResponse { task_id, job_id }))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("submit job: spec is missing"))?;
        Ok(Response::new(self.leader()?.ask(|reply| Command::SubmitJob { spec, reply }).await??))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let job_id = request.into_inner().job_id;
        let job = self.leader()?.ask(|reply| Command::GetJob { job_id, reply }).await??;
        Ok(Response::new(pb::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self.leader()?.ask(|reply| Command::ListJobs { reply }).await?;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn kill_job(&self, request: Request<pb::KillJobRequest>) -> Result<Response<pb::KillJobResponse>, Status> {
        let job_id = request.into_inner().job_id;
        self.leader()?.ask(|reply| Command::KillJob { job_id, reply }).await??;
        Ok(Response::new(pb::KillJobResponse {}))
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let pb::WatchTaskRequest { task_id, history_only } = request.into_inner();
        let watch = self.leader()?.ask(|reply| Command::Watch { task_id, reply }).await??;
        let history = stream::iter(watch.history);
        let events = match watch.live {
            Some(live) if !history_only => history.chain(UnboundedReceiverStream::new(live)).boxed(),
            _ => history.boxed(),
        };
        Ok(Response::new(events.map(Ok).boxed()))
    }

    async fn kill_task(&self, request: Request<pb::KillTaskRequest>) -> Result<Response<pb::KillTaskResponse>, Status> {
        let task_id = request.into_inner().task_id;
        self.leader()?.ask(|reply| Command::Kill { task_id, reply }).await??;
        Ok(Response::new(pb::KillTaskResponse {}))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::GetTaskResponse>, Status> {
        let task_id = request.into_inner().task_id;
        Ok(Response::new(self.leader()?.ask(|reply| Command::GetTask { task_id, reply }).await??))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self.leader()?.ask(|reply| Command::ListAgents { reply }).await?;
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn get_leader(
        &self,
        _request: Request<pb::GetLeaderRequest>,
    ) -> Result<Response<pb::GetLeaderResponse>, Status> {
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
