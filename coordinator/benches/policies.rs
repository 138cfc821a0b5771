//! Placement policies of the built-in job scheduler side by side: one placement round of 10,000
//! pending tasks (10 jobs of 1,000, each with its own Wasm module) over offers of 1,000 agents (8 CPUs;
//! each has 2 of the 10 modules compiled), with `greedy` first fit and with `mcf` min-cost flow.
//! Reports round time, total cost (the mcf cost model), compile count (tasks placed where their module
//! is not compiled) and load imbalance (max / mean agent CPU use). Run with
//! `cargo bench -p skiff-coordinator --bench policies`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use skiff_coordinator::jobs::policy::{self, Class, Slot};
use skiff_coordinator::jobs::{AgentView, Decision, JobScheduler, Placement, Policy, QueueOrder};
use skiff_coordinator::offers::OfferBook;
use skiff_coordinator::resources::Resources;
use skiff_proto as pb;

const AGENTS: usize = 1_000;
const JOBS: usize = 10;
const PER_JOB: u32 = 1_000;
const ROUNDS: usize = 5;

fn agent_total() -> Resources {
    Resources { millicpus: 8_000, mem_bytes: 32 << 30, disk_bytes: 0, wasm_slots: 64 }
}

fn task() -> Resources {
    Resources { millicpus: 500, mem_bytes: 256 << 20, disk_bytes: 0, wasm_slots: 1 }
}

fn module(j: usize) -> String {
    format!("{j:064x}")
}

struct Outcome {
    round: Duration,
    cost: i64,
    compiles: usize,
    imbalance: f64,
    placed: usize,
}

fn round(placement: Placement, cached: &[HashSet<String>]) -> Outcome {
    let mut s = JobScheduler::with_policy(Policy { order: QueueOrder::Fifo, placement, aging: Duration::ZERO });
    let mut job_of = HashMap::new();
    for j in 0..JOBS {
        let id = format!("job-{j}");
        let wasm = pb::WasmTask { module_sha256: module(j), ..Default::default() };
        let spec = pb::JobSpec {
            job_id: id.clone(),
            instances: PER_JOB,
            task: Some(pb::TaskSpec { kind: Some(pb::task_spec::Kind::Wasm(wasm)), ..Default::default() }),
            ..Default::default()
        };
        s.add_job(spec, 0, false);
        for i in 0..PER_JOB {
            let task_id = format!("t-{j}-{i}");
            s.add_task(&task_id, &id, i, 0, pb::TaskState::Pending, task());
            job_of.insert(task_id, j);
        }
    }
    let mut book = OfferBook::new(1);
    let now = Instant::now();
    let offers: Vec<_> =
        (0..AGENTS).map(|a| book.make(&format!("agent-{a:04}"), "skiff-jobs", agent_total(), now)).collect();
    let attributes = HashMap::new();
    let index: HashMap<String, usize> = (0..AGENTS).map(|a| (format!("agent-{a:04}"), a)).collect();
    let started = Instant::now();
    let decisions = s.on_offers(&offers, |id| {
        index.get(id).map(|&a| AgentView { attributes: &attributes, cached: &cached[a], total: agent_total() })
    });
    let round = started.elapsed();

    let classes: Vec<Class> =
        (0..JOBS).map(|j| Class { resources: task(), count: PER_JOB as usize, module: Some(module(j)) }).collect();
    let slots: Vec<Slot> =
        (0..AGENTS).map(|a| Slot { free: agent_total(), total: agent_total(), cached: cached[a].clone() }).collect();
    let mut placed_triples: HashMap<(usize, usize), usize> = HashMap::new();
    let mut compiles = 0;
    let mut used = vec![0u64; AGENTS];
    let mut placed = 0;
    for (a, d) in decisions.iter().enumerate() {
        if let Decision::Accept { launches, .. } = d {
            for t in launches {
                let j = job_of[t];
                *placed_triples.entry((j, a)).or_default() += 1;
                if !cached[a].contains(&module(j)) {
                    compiles += 1;
                }
                used[a] += task().millicpus;
                placed += 1;
            }
        }
    }
    let triples: Vec<(usize, usize, usize)> = placed_triples.into_iter().map(|((c, s), n)| (c, s, n)).collect();
    let cost = policy::placement_cost(&classes, &slots, &triples);
    let max = *used.iter().max().unwrap_or(&0) as f64;
    let mean = used.iter().sum::<u64>() as f64 / AGENTS as f64;
    Outcome { round, cost, compiles, imbalance: if mean > 0.0 { max / mean } else { 0.0 }, placed }
}

fn main() {
    // Each agent has 2 of the 10 modules compiled (a fixed pattern, the same for both policies).
    let cached: Vec<HashSet<String>> =
        (0..AGENTS).map(|a| HashSet::from([module(a % JOBS), module((a * 7 + 3) % JOBS)])).collect();
    println!("{} pending tasks ({JOBS} jobs) over {AGENTS} agents; {ROUNDS} rounds each", JOBS * PER_JOB as usize);
    println!("| placement | round p50 | round max | placed | total cost | compiles | load max/mean |");
    println!("|---|---|---|---|---|---|---|");
    for placement in [Placement::Greedy, Placement::Mcf] {
        let mut outcomes: Vec<Outcome> = (0..ROUNDS).map(|_| round(placement, &cached)).collect();
        outcomes.sort_by_key(|o| o.round);
        let (p50, max) = (&outcomes[ROUNDS / 2], &outcomes[ROUNDS - 1]);
        println!(
            "| {placement:?} | {:.1} ms | {:.1} ms | {} | {} | {} | {:.2} |",
            p50.round.as_secs_f64() * 1e3,
            max.round.as_secs_f64() * 1e3,
            p50.placed,
            p50.cost,
            p50.compiles,
            p50.imbalance
        );
    }
}
