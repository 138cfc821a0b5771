//! The allocator in process (no I/O): one full DRF cycle over 10,000 agents and 1,000 frameworks in
//! 10 roles, a first-fit placement loop on top of it, and the built-in job scheduler placing
//! 100,000 queued tasks.

use std::hint::black_box;
use std::time::Instant;

use skiff_coordinator::allocator::{Allocator, RoleConfig};
use skiff_coordinator::jobs::{self, Decision, JobScheduler};
use skiff_coordinator::offers::OfferBook;
use skiff_coordinator::resources::Resources;
use skiff_proto as pb;

use crate::stats::Summary;

const AGENTS: usize = 10_000;
const FRAMEWORKS: usize = 1_000;
const ROLES: usize = 10;
const CYCLES: usize = 20;
const PLACEMENT_ROUNDS: usize = 20;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn setup() -> Allocator {
    let mut al = Allocator::new();
    for r in 0..ROLES {
        al.set_role(&format!("role-{r}"), RoleConfig { weight: 1.0 + r as f64, ..RoleConfig::default() });
    }
    for f in 0..FRAMEWORKS {
        al.add_framework(&format!("framework-{f:04}"), &format!("role-{}", f % ROLES));
    }
    let agent = Resources { millicpus: 8_000, mem_bytes: 32 * GIB, disk_bytes: 100 * GIB, wasm_slots: 64 };
    for a in 0..AGENTS {
        al.add_agent(&format!("agent-{a:05}"), agent);
    }
    al
}

/// What the allocator benchmark measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub agents: usize,
    pub frameworks: usize,
    pub roles: usize,
    /// Full allocation cycles, each offering every agent.
    pub cycles: Summary,
    /// Tasks placed per second by frameworks filling their offers first-fit.
    pub placement_loop_per_sec: f64,
    /// Queued tasks placed per second by the built-in job scheduler.
    pub job_scheduler_per_sec: f64,
}

pub fn run() -> Figures {
    // Full cycles: every agent is offered, then everything is recovered (declined, no filter).
    let mut al = setup();
    let mut times = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        let now = Instant::now();
        let started = Instant::now();
        let allocations = black_box(al.allocate(now));
        times.push(started.elapsed());
        assert_eq!(allocations.len(), AGENTS, "every agent is allocated in one cycle");
        for a in allocations {
            al.recover(&a.framework_id, &a.agent_id, a.resources, None, now);
        }
    }
    let cycles = Summary::new(times);

    // Placement loop: each framework fills its offers first-fit with <0.1 cpu, 64 MiB> tasks and
    // recovers the remainder; the tasks end before the next round (their resources are recovered).
    let mut al = setup();
    let task = Resources { millicpus: 100, mem_bytes: 64 * MIB, disk_bytes: 0, wasm_slots: 0 };
    let mut placements = 0u64;
    let mut running: Vec<(String, String, Resources)> = Vec::new();
    let started = Instant::now();
    for _ in 0..PLACEMENT_ROUNDS {
        let now = Instant::now();
        for (framework_id, agent_id, used) in running.drain(..) {
            al.recover(&framework_id, &agent_id, used, None, now);
        }
        for offer in al.allocate(now) {
            let mut left = offer.resources;
            let mut used = Resources::default();
            while let Some(rest) = left.checked_sub(&task) {
                left = rest;
                used = used.saturating_add(&task);
                placements += 1;
            }
            al.recover(&offer.framework_id, &offer.agent_id, left, None, now);
            running.push((offer.framework_id, offer.agent_id, used));
        }
    }
    let placement_loop_per_sec = placements as f64 / started.elapsed().as_secs_f64();
    Figures {
        agents: AGENTS,
        frameworks: FRAMEWORKS,
        roles: ROLES,
        cycles,
        placement_loop_per_sec,
        job_scheduler_per_sec: job_scheduler_placement(),
    }
}

/// The built-in job scheduler's own path, as the leader runs it (without the registry): allocate,
/// make offers, first-fit 100,000 queued tasks of one job into them, accept through the offer book.
fn job_scheduler_placement() -> f64 {
    const PENDING: u32 = 100_000;
    let mut al = Allocator::new();
    al.add_framework(jobs::FRAMEWORK_ID, "default");
    let agent = Resources { millicpus: 8_000, mem_bytes: 32 * GIB, disk_bytes: 0, wasm_slots: 64 };
    for a in 0..AGENTS {
        al.add_agent(&format!("agent-{a:05}"), agent);
    }
    let mut scheduler = JobScheduler::new();
    let task = Resources { millicpus: 100, mem_bytes: 64 * MIB, disk_bytes: 0, wasm_slots: 1 };
    let spec = pb::JobSpec {
        job_id: "j".into(),
        instances: PENDING,
        task: Some(pb::TaskSpec::default()),
        ..Default::default()
    };
    scheduler.add_job(spec, 0, false);
    for i in 0..PENDING {
        scheduler.add_task(&format!("t-{i}"), "j", i, 0, pb::TaskState::Pending, task);
    }
    let mut book = OfferBook::new(1);
    let (attributes, cached) = (std::collections::HashMap::new(), std::collections::HashSet::new());
    let view = jobs::AgentView { attributes: &attributes, cached: &cached, total: agent };
    let started = Instant::now();
    let mut placed = 0usize;
    while scheduler.has_pending() {
        let now = Instant::now();
        let offers: Vec<_> =
            al.allocate(now).into_iter().map(|a| book.make(&a.agent_id, &a.framework_id, a.resources, now)).collect();
        assert!(!offers.is_empty(), "the fleet has room for every task");
        for decision in scheduler.on_offers(&offers, |_| Some(view)) {
            if let Decision::Accept { offer_id, launches } = decision {
                let wanted: Vec<(String, Resources)> = launches.into_iter().map(|id| (id, task)).collect();
                let accepted = book.accept(jobs::FRAMEWORK_ID, std::slice::from_ref(&offer_id), &wanted).expect("fits");
                al.recover(jobs::FRAMEWORK_ID, &accepted.agent_id, accepted.returned, None, now);
                placed += wanted.len();
            }
        }
    }
    placed as f64 / started.elapsed().as_secs_f64()
}
