//! Peers that stop reading, and submitters that never stop: against a whole coordinator over
//! gRPC, an agent and a framework that read nothing while the leader has ever more to tell them
//! are disconnected with a reason (never buffered for without bound) and can come back; a
//! submitter past its live jobs is refused with the limit until one of its jobs ends.

use std::time::{Duration, Instant};

use skiff_coordinator::{Config, Coordinator};
use skiff_proto as pb;
use skiff_proto::agent_message::Msg as AgentMsg;
use skiff_proto::scheduler_call::Call;
use skiff_proto::scheduler_event::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

struct Running {
    url: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<skiff_coordinator::Result<()>>,
    _data: tempfile::TempDir,
}

impl Running {
    async fn start(set: impl FnOnce(&mut Config)) -> Running {
        let data = tempfile::tempdir().unwrap();
        let mut config =
            Config { listen: "127.0.0.1:0".parse().unwrap(), data_dir: data.path().into(), ..Config::default() };
        set(&mut config);
        let coordinator = Coordinator::bind(config).await.expect("bind");
        let url = format!("http://{}", coordinator.local_addr());
        let stop = CancellationToken::new();
        let server = tokio::spawn(coordinator.run(stop.clone()));
        let running = Running { url, stop, server, _data: data };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut op = running.operator().await;
            if op.get_leader(pb::GetLeaderRequest {}).await.is_ok_and(|r| r.into_inner().is_leader) {
                return running;
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone()).unwrap().connect().await.unwrap()
    }

    /// A connection with 1 KiB flow-control windows: what its peer does not read stays on the
    /// coordinator's side instead of in the client's buffers.
    async fn narrow_channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .unwrap()
            .initial_stream_window_size(1 << 10)
            .initial_connection_window_size(1 << 10)
            .connect()
            .await
            .unwrap()
    }

    async fn operator(&self) -> pb::operator_service_client::OperatorServiceClient<Channel> {
        loop {
            if let Ok(endpoint) = Endpoint::from_shared(self.url.clone())
                && let Ok(channel) = endpoint.connect().await
            {
                return pb::operator_service_client::OperatorServiceClient::new(channel);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

/// Reads a stream the test stopped reading until it ends; answers how many items it held and the
/// status it ended with.
async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (u64, tonic::Status) {
    let mut held = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message()).await.expect("the stream went quiet") {
            Ok(Some(_)) => held += 1,
            Ok(None) => panic!("the stream ended without saying why after {held} messages"),
            Err(status) => return (held, status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_reads_is_disconnected_with_a_reason_and_registers_again() {
    let fleet = Running::start(|c| c.leader.peer_buffer = 32).await;
    let register = pb::Register {
        agent_id: "deaf".into(),
        hostname: "deaf".into(),
        resources: Some(pb::Resources { cpus: 1.0, mem_bytes: 1 << 30, disk_bytes: 0, wasm_slots: 1 }),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage { msg: Some(AgentMsg::Register(register.clone())) }).await.unwrap();
    let mut agent = pb::agent_service_client::AgentServiceClient::new(fleet.narrow_channel().await);
    let mut inbound = agent.session(ReceiverStream::new(rx)).await.unwrap().into_inner();
    // Each status of a task the leader does not know is acknowledged: 20,000 acks (~1.2 MB) for
    // an agent that reads none of them.
    const SENT: u64 = 20_000;
    for i in 0..SENT {
        let status = pb::TaskStatus {
            task_id: format!("t-unknown-{i}"),
            state: pb::TaskState::Running as i32,
            agent_id: "deaf".into(),
            update_id: format!("u-{i}"),
            ..Default::default()
        };
        if tx.send(pb::AgentMessage { msg: Some(AgentMsg::Status(status)) }).await.is_err() {
            break; // The leader already hung up.
        }
    }
    let (held, cut) = drain(&mut inbound).await;
    assert_eq!(cut.code(), tonic::Code::ResourceExhausted, "{cut:?}");
    assert!(cut.message().contains("the agent read none of the last 32 messages; register again"), "{cut:?}");
    assert!(held < SENT, "all {held} acks were buffered for an agent that did not read");
    drop(tx);

    // It registers again, and is an agent of the fleet like any other.
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage { msg: Some(AgentMsg::Register(register)) }).await.unwrap();
    let mut agent = pb::agent_service_client::AgentServiceClient::new(fleet.channel().await);
    let mut inbound = agent.session(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = inbound.message().await.unwrap().unwrap();
    assert!(matches!(first.msg, Some(pb::coordinator_message::Msg::Registered(_))), "{first:?}");
    let mut op = fleet.operator().await;
    let agents = op.list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    assert!(agents.iter().any(|a| a.agent_id == "deaf" && a.connected), "{agents:?}");
    drop(tx);
    fleet.stop().await;
}

async fn subscribe(
    channel: Channel,
    info: pb::FrameworkInfo,
) -> (pb::scheduler_service_client::SchedulerServiceClient<Channel>, tonic::Streaming<pb::SchedulerEvent>, String, u64)
{
    let mut client = pb::scheduler_service_client::SchedulerServiceClient::new(channel);
    let mut events = client.subscribe(pb::SubscribeRequest { framework: Some(info) }).await.unwrap().into_inner();
    let first = events.message().await.unwrap().unwrap();
    let Some(Event::Subscribed(subscribed)) = first.event else { panic!("first event: {first:?}") };
    (client, events, subscribed.framework.unwrap().framework_id, first.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_that_never_reads_is_disconnected_with_a_reason_and_subscribes_again() {
    let fleet = Running::start(|c| c.leader.peer_buffer = 32).await;
    let info = pb::FrameworkInfo { name: "deaf".into(), role: "default".into(), ..Default::default() };
    let (_, mut events, framework_id, epoch) = subscribe(fleet.narrow_channel().await, info.clone()).await;
    // Calls on a connection of their own; every unknown task id reconciled is an event.
    let mut calls = pb::scheduler_service_client::SchedulerServiceClient::new(fleet.channel().await);
    let reconcile = |task_ids: Vec<String>| pb::SchedulerCall {
        framework_id: framework_id.clone(),
        epoch,
        call: Some(Call::Reconcile(pb::scheduler_call::Reconcile { task_ids })),
    };
    // One call may not ask for more than the limit.
    let too_many = (0..=skiff_core::limits::MAX_RECONCILE_TASKS).map(|i| format!("t-{i}")).collect();
    let err = calls.call(reconcile(too_many)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("reconcile is 10001, more than the limit of 10000"), "{err:?}");
    let mut asked = 0u64;
    for round in 0..4 {
        let ids = (0..10_000).map(|i| format!("t-{round}-{i}")).collect();
        if calls.call(reconcile(ids)).await.is_err() {
            break; // Disconnected already: not subscribed any more.
        }
        asked += 10_000;
    }
    let (held, cut) = drain(&mut events).await;
    assert_eq!(cut.code(), tonic::Code::ResourceExhausted, "{cut:?}");
    assert!(cut.message().contains("the framework read none of the last 32 events"), "{cut:?}");
    assert!(held < asked, "all {held} of {asked} events were buffered for a framework that did not read");

    // It subscribes again under its id (its failover timeout has not passed) and is served.
    let again = pb::FrameworkInfo { framework_id: framework_id.clone(), ..info };
    let (_, _events, id, _) = subscribe(fleet.channel().await, again).await;
    assert_eq!(id, framework_id, "the framework came back as itself");
    calls.call(reconcile(vec!["t-after".into()])).await.expect("a call after subscribing again");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_past_its_live_jobs_is_refused_until_one_ends() {
    let fleet = Running::start(|c| c.leader.max_live_jobs_per_submitter = 2).await;
    let mut op = fleet.operator().await;
    // No agent: the jobs stay pending, live.
    let job = || pb::JobSpec {
        name: "waits".into(),
        instances: 1,
        task: Some(pb::TaskSpec {
            resources: Some(pb::Resources { cpus: 0.1, mem_bytes: 16 << 20, ..Default::default() }),
            kind: Some(pb::task_spec::Kind::Native(pb::NativeTask {
                command: "/bin/true".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = op.submit_job(pb::SubmitJobRequest { spec: Some(job()) }).await.unwrap().into_inner();
    op.submit_job(pb::SubmitJobRequest { spec: Some(job()) }).await.unwrap();
    let err = op.submit_job(pb::SubmitJobRequest { spec: Some(job()) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(
            "the number of live jobs of this submitter is 3, more than the limit of 2: wait for some to finish, or kill some"
        ),
        "{err:?}"
    );
    let listed = op.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs;
    assert_eq!(listed.len(), 2, "the refused job left nothing behind: {listed:?}");
    op.kill_job(pb::KillJobRequest { job_id: first.job_id }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op.submit_job(pb::SubmitJobRequest { spec: Some(job()) }).await {
            Ok(_) => break,
            Err(err) if err.code() == tonic::Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("still refused after a job was killed: {err:?}"),
        }
    }
    fleet.stop().await;
}
