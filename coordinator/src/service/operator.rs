//! `OperatorService`: what the CLI calls.

use futures::stream::{self, BoxStream, StreamExt};
use skiff_proto as pb;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use std::time::Duration;

use super::leader_of;
use crate::acl::gate::Gate;
use crate::acl::{ANONYMOUS, Ask, Caller, Capability, Need};
use crate::leader::{Command, LeaderHandle, TaskQuery};
use crate::members::Members;
use crate::replica::Role;

#[derive(Debug, Clone)]
pub struct OperatorApi {
    roles: watch::Receiver<Role>,
    advertise: String,
    gate: Gate,
    /// The etcd election the replicas campaign in (`None`: the embedded registry, one replica).
    election: Option<(Members, String)>,
}

/// What reading or changing the fleet as a whole needs: `operator` on `*`.
const FLEET_OPERATOR: Ask = Ask::Need(Need::fleet(Capability::Operator));

/// Most tasks one `ListTasks` answers.
pub const MAX_LIST_TASKS: u32 = 10_000;
/// What `ListTasks` answers when it names no limit.
pub const DEFAULT_LIST_TASKS: u32 = 100;
/// Longest drain deadline (a year): longer is a mistake in units.
const MAX_DRAIN_DEADLINE: Duration = Duration::from_secs(365 * 86_400);
/// Longest id a filter may name (ids are far shorter; this bounds what a request makes the leader compare).
const MAX_FILTER_ID_BYTES: usize = 256;

impl OperatorApi {
    pub fn new(
        roles: watch::Receiver<Role>,
        advertise: String,
        gate: Gate,
        election: Option<(Members, String)>,
    ) -> Self {
        Self { roles, advertise, gate, election }
    }

    /// Every replica, the leader first.
    async fn replicas(&self, leader_address: &str) -> Vec<pb::Replica> {
        let addresses = match &self.election {
            None => vec![self.advertise.clone()],
            Some((members, name)) => crate::election::candidates(members, name).await.unwrap_or_else(|err| {
                tracing::warn!(%err, "cannot list the replicas");
                Vec::new()
            }),
        };
        addresses.into_iter().map(|address| pb::Replica { leader: address == leader_address, address }).collect()
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

/// A `ListTasks` request as the leader takes it.
pub fn task_query(request: pb::ListTasksRequest) -> Result<TaskQuery, Status> {
    let mut states = Vec::with_capacity(request.states.len().min(16));
    for state in request.states {
        match pb::TaskState::try_from(state) {
            Ok(pb::TaskState::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!("list tasks: {state} is not a task state")));
            }
            Ok(state) if !states.contains(&state) => states.push(state),
            Ok(_) => {}
        }
    }
    let filter = |what: &str, id: String| -> Result<Option<String>, Status> {
        match id.len() {
            0 => Ok(None),
            n if n > MAX_FILTER_ID_BYTES => Err(Status::invalid_argument(format!(
                "list tasks: the {what} filter is {n} bytes; ids are at most {MAX_FILTER_ID_BYTES}"
            ))),
            _ => Ok(Some(id)),
        }
    };
    let limit = match request.limit {
        0 => DEFAULT_LIST_TASKS,
        n if n > MAX_LIST_TASKS => {
            return Err(Status::invalid_argument(format!(
                "list tasks: limit {n} is above the most one answer holds ({MAX_LIST_TASKS}); filter by state, job or agent"
            )));
        }
        n => n,
    };
    Ok(TaskQuery {
        states,
        job_id: filter("job", request.job_id)?,
        agent_id: filter("agent", request.agent_id)?,
        limit: limit as usize,
    })
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
        let ask = FLEET_OPERATOR;
        let agents = leader.ask_as(&caller, ask, |reply| Command::ListAgents { reply }).await??;
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<pb::AgentInfo>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let agent_id = request.into_inner().agent_id;
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("get agent: agent_id is empty"));
        }
        let ask = FLEET_OPERATOR;
        Ok(Response::new(leader.ask_as(&caller, ask, |reply| Command::GetAgent { agent_id, reply }).await??))
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let ask = FLEET_OPERATOR;
        let mut status = leader.ask_as(&caller, ask, |reply| Command::ClusterStatus { reply }).await??;
        status.leader_address = self.advertise.clone();
        status.replicas = self.replicas(&status.leader_address).await;
        Ok(Response::new(status))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let query = task_query(request.into_inner())?;
        let ask = FLEET_OPERATOR;
        Ok(Response::new(leader.ask_as(&caller, ask, |reply| Command::ListTasks { query, reply }).await??))
    }

    async fn drain_agent(
        &self,
        request: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::DrainAgentResponse>, Status> {
        let (leader, caller) = self.caller(&request)?;
        let pb::DrainAgentRequest { agent_id, deadline_ms, undo } = request.into_inner();
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("drain agent: agent_id is empty"));
        }
        let deadline = match Duration::from_millis(deadline_ms) {
            d if d.is_zero() => None,
            d if d > MAX_DRAIN_DEADLINE => {
                return Err(Status::invalid_argument(format!(
                    "drain agent: a deadline of {deadline_ms} ms is more than a year; give it in milliseconds"
                )));
            }
            d => Some(d),
        };
        let ask = FLEET_OPERATOR;
        let agent =
            leader.ask_as(&caller, ask, |reply| Command::DrainAgent { agent_id, deadline, undo, reply }).await??;
        Ok(Response::new(pb::DrainAgentResponse { agent: Some(agent) }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(request: pb::ListTasksRequest) -> Result<TaskQuery, String> {
        task_query(request).map_err(|s| s.message().to_owned())
    }

    #[test]
    fn task_queries_are_checked_where_they_arrive() {
        let q = query(pb::ListTasksRequest::default()).unwrap();
        assert_eq!((q.states.len(), q.job_id, q.agent_id, q.limit), (0, None, None, DEFAULT_LIST_TASKS as usize));
        let running = pb::TaskState::Running as i32;
        let q = query(pb::ListTasksRequest { states: vec![running, running], limit: 7, ..Default::default() }).unwrap();
        assert_eq!((q.states, q.limit), (vec![pb::TaskState::Running], 7));
        for (request, refusal) in [
            (pb::ListTasksRequest { states: vec![99], ..Default::default() }, "99 is not a task state"),
            (pb::ListTasksRequest { states: vec![0], ..Default::default() }, "0 is not a task state"),
            (pb::ListTasksRequest { limit: MAX_LIST_TASKS + 1, ..Default::default() }, "limit 10001"),
            (pb::ListTasksRequest { job_id: "j".repeat(257), ..Default::default() }, "job filter is 257 bytes"),
            (pb::ListTasksRequest { agent_id: "a".repeat(1 << 20), ..Default::default() }, "agent filter"),
        ] {
            let err = query(request).unwrap_err();
            assert!(err.contains(refusal), "{err}");
        }
    }
}
