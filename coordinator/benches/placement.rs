//! Placement through a whole coordinator: 1,000 simulated agents (real gRPC agent sessions that
//! register, heartbeat and count the launches they receive) and one job of many instances submitted
//! over the operator API; measures submit → every task launched, with the embedded registry and with
//! a real etcd. Run with `cargo bench -p skiff-coordinator --bench placement`.

#[path = "../../cli/tests/fleet/etcd.rs"]
mod etcd;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use skiff_coordinator::{Config, Coordinator, EtcdConfig};
use skiff_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const AGENTS: usize = 1_000;
const CHANNELS: usize = 10;
const TASKS: u32 = 20_000;

#[derive(Default)]
struct Counters {
    registered: AtomicUsize,
    launched: AtomicUsize,
}

async fn sim_agent(channel: Channel, i: usize, counters: Arc<Counters>, stop: CancellationToken) {
    let (tx, rx) = mpsc::channel(64);
    let register = pb::Register {
        agent_id: format!("sim-{i:04}"),
        hostname: format!("sim-{i:04}"),
        resources: Some(pb::Resources { cpus: 8.0, mem_bytes: 32 << 30, disk_bytes: 0, wasm_slots: 256 }),
        // It runs native tasks (the scheduler places them nowhere else).
        attributes: [(pb::NATIVE_ATTRIBUTE.to_owned(), "true".to_owned())].into(),
        ..Default::default()
    };
    let _ = tx.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Register(register)) }).await;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let Ok(response) = client.session(ReceiverStream::new(rx)).await else { return };
    let mut inbound = response.into_inner();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = heartbeat.tick() => {
                let beat = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { sequence: 0 })) };
                let _ = tx.send(beat).await;
            }
            msg = inbound.message() => match msg {
                Ok(Some(pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Registered(_)), .. })) => {
                    counters.registered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Launch(_)), .. })) => {
                    counters.launched.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    }
}

async fn wait_for(what: &str, within: Duration, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what} not reached within {within:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

async fn measure(label: &str, etcd: Option<EtcdConfig>) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), etcd, data_dir: data.path().into(), ..Config::default() };
    config.leader.retained_terminal_tasks = 100_000;
    let coordinator = Coordinator::bind(config).await.expect("bind");
    let addr = coordinator.local_addr();
    let stop = CancellationToken::new();
    let server = tokio::spawn(coordinator.run(stop.clone()));

    let url = format!("http://{addr}");
    let mut operator = loop {
        if let Ok(c) = pb::operator_service_client::OperatorServiceClient::connect(url.clone()).await
            && c.clone().get_leader(pb::GetLeaderRequest {}).await.is_ok_and(|r| r.into_inner().is_leader)
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counters = Arc::new(Counters::default());
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(Channel::from_shared(url.clone()).unwrap().connect().await.expect("dial"));
    }
    let agents: Vec<_> = (0..AGENTS)
        .map(|i| tokio::spawn(sim_agent(channels[i % CHANNELS].clone(), i, counters.clone(), stop.clone())))
        .collect();
    let took = wait_for("agents registered", Duration::from_secs(60), || {
        counters.registered.load(Ordering::Relaxed) == AGENTS
    })
    .await;
    println!("{label}: {AGENTS} simulated agents registered in {:.0} ms", took.as_secs_f64() * 1e3);

    let task = pb::TaskSpec {
        name: "bench".into(),
        resources: Some(pb::Resources { cpus: 0.1, mem_bytes: 16 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "/bin/true".into(), ..Default::default() })),
        ..Default::default()
    };
    let job = pb::JobSpec { name: "bench".into(), instances: TASKS, task: Some(task), ..Default::default() };
    let start = Instant::now();
    operator.submit_job(pb::SubmitJobRequest { spec: Some(job) }).await.expect("submit");
    let accepted = start.elapsed();
    wait_for("every task launched", Duration::from_secs(300), || {
        counters.launched.load(Ordering::Relaxed) >= TASKS as usize
    })
    .await;
    let all = start.elapsed();
    println!(
        "{label}: job of {TASKS} tasks accepted in {:.0} ms; all placed and launched after {:.0} ms: {:.0} tasks/s",
        accepted.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3,
        TASKS as f64 / all.as_secs_f64()
    );
    stop.cancel();
    for a in agents {
        let _ = a.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(measure("embedded registry", None));
    let cluster = etcd::Etcd::start(1);
    let endpoints = cluster.members.iter().map(|m| m.client_url.clone()).collect();
    let config = EtcdConfig { prefix: "/skiff-bench/".into(), ..EtcdConfig::new(endpoints) };
    rt.block_on(measure("etcd (1 member)", Some(config)));
}
