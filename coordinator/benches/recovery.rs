//! A takeover's own work, without etcd: 100,000 pending task records of one job and 1,000 agents'
//! records in the embedded registry, then `Leader::recover` timed (decode, check, index, queue).
//! The etcd read is measured by `skiff-bench --longevity-live`; this is the rest of it. Run with
//! `cargo bench -p skiff-coordinator --bench recovery`.

use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use skiff_coordinator::MemoryRegistry;
use skiff_coordinator::leader::{Leader, LeaderConfig};
use skiff_coordinator::registry::{Registry, Txn, keys};
use skiff_proto as pb;

const TASKS: u32 = 100_000;
const AGENTS: usize = 1_000;

fn spec() -> pb::TaskSpec {
    pb::TaskSpec {
        name: "live".into(),
        resources: Some(pb::Resources { cpus: 0.01, mem_bytes: 16 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
            module_sha256: "a".repeat(64),
            module_size: 100,
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn fill(registry: &MemoryRegistry) {
    let job = pb::JobSpec {
        job_id: "j-live".into(),
        name: "live".into(),
        instances: TASKS,
        task: Some(spec()),
        constraints: vec![pb::Constraint {
            attribute: "nowhere".into(),
            operator: pb::constraint::Operator::Exists as i32,
            values: vec![],
        }],
        submitted_by: "anonymous".into(),
        ..Default::default()
    };
    let record = pb::JobRecord { spec: Some(job), submitted_ms: 1, killed: false, leader_epoch: 1 };
    registry.commit(Txn::new().put(keys::job("j-live"), record.encode_to_vec())).await.unwrap();
    for chunk in (0..TASKS).collect::<Vec<_>>().chunks(1000) {
        let mut txn = Txn::new();
        for &i in chunk {
            let task_id = format!("t-{i:08x}-0000-4000-8000-000000000000");
            let mut spec = spec();
            spec.task_id = task_id.clone();
            spec.name = format!("live[{i}]");
            spec.env.insert("SKIFF_INSTANCE".into(), i.to_string());
            spec.env.insert("SKIFF_INSTANCES".into(), TASKS.to_string());
            let status = pb::TaskStatus {
                task_id: task_id.clone(),
                state: pb::TaskState::Pending as i32,
                timestamp_ms: 1_000 + u64::from(i),
                update_id: format!("{i:08x}-0000-4000-8000-000000000000"),
                ..Default::default()
            };
            let record = pb::TaskRecord {
                spec: Some(spec),
                status: Some(status),
                framework_id: "skiff-jobs".into(),
                leader_epoch: 1,
                job_id: "j-live".into(),
                instance: i,
                attempt: 0,
                submitted_by: "anonymous".into(),
            };
            txn = txn.put(keys::task(&task_id), record.encode_to_vec());
        }
        registry.commit(txn).await.unwrap();
    }
    let mut txn = Txn::new();
    for i in 0..AGENTS {
        let record = pb::AgentRecord {
            agent_id: format!("sim-{i:04}"),
            hostname: format!("sim-{i:04}.example"),
            resources: Some(pb::Resources { cpus: 32.0, mem_bytes: 128 << 30, disk_bytes: 1 << 40, wasm_slots: 1000 }),
            attributes: [("rack".to_owned(), format!("r{}", i % 40))].into(),
            leader_epoch: 1,
            ..Default::default()
        };
        txn = txn.put(keys::agent(&record.agent_id), record.encode_to_vec());
    }
    registry.commit(txn).await.unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let registry = Arc::new(MemoryRegistry::new());
        fill(&registry).await;
        let mut best = f64::MAX;
        for round in 0..3 {
            let (mut leader, _handle) = Leader::new(LeaderConfig { epoch: 2, ..Default::default() }, registry.clone());
            let started = Instant::now();
            leader.recover().await.unwrap();
            let took = started.elapsed().as_secs_f64();
            best = best.min(took);
            println!("round {round}: recovered {TASKS} pending tasks and {AGENTS} agents in {:.0} ms", took * 1000.0);
            drop(leader);
        }
        println!("best: {:.0} ms ({:.1} µs per task)", best * 1000.0, best * 1e6 / f64::from(TASKS));
    });
}
