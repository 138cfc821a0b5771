//! The job scheduler's policies: the order its queue is served in, and how queued tasks are
//! placed into a batch of offers. Pure.
//!
//! Queue orders (`--queue-order`):
//! - `fifo`: submission order (the default);
//! - `priority`: highest job priority first, FIFO among equals. Aging: a task's priority rises by
//!   one for every `--priority-aging` it has waited (default 60 s; 0 turns aging off), so a
//!   low-priority job is not starved for ever by a stream of higher ones;
//! - `sjf`: shortest expected task first — the job's declared `expected_duration`, else the median
//!   run time of its finished tasks; jobs with neither go last, FIFO among themselves;
//! - `srtf`: fewest remaining task-seconds first — for each job, the expected duration times its
//!   unfinished instances, less what its running ones have already run.
//!
//! Placements (`--placement`):
//! - `greedy`: first fit, in queue order, offer by offer;
//! - `mcf`: one min-cost max-flow per batch of offers ([`super::mcf`]): source → one node per job
//!   (capacity: its queued tasks; cost: its place in the queue order, so earlier jobs win when room
//!   is short) → one node per agent it may run on (capacity: how many of its tasks fit the offer;
//!   cost: 0 if the agent has the job's module compiled, [`LOCALITY_MISS`] otherwise) → sink, in
//!   four segments of rising cost (the agent's load after placement: spread). Jobs of different
//!   shapes on one agent are checked against the offer afterwards; what does not fit stays queued.

use std::collections::HashMap;
use std::time::Duration;

use super::mcf::Network;
use crate::resources::Resources;

/// The order the queue is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    #[default]
    Fifo,
    Priority,
    Sjf,
    Srtf,
}

/// How queued tasks are matched with offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    #[default]
    Greedy,
    Mcf,
}

/// The job scheduler's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub order: QueueOrder,
    pub placement: Placement,
    /// Priority +1 per this much waiting (`priority` order); zero: no aging.
    pub aging: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self { order: QueueOrder::Fifo, placement: Placement::Greedy, aging: Duration::from_secs(60) }
    }
}

impl std::str::FromStr for QueueOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fifo" => Ok(Self::Fifo),
            "priority" => Ok(Self::Priority),
            "sjf" => Ok(Self::Sjf),
            "srtf" => Ok(Self::Srtf),
            other => Err(format!("unknown queue order {other:?} (fifo, priority, sjf, srtf)")),
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "greedy" => Ok(Self::Greedy),
            "mcf" => Ok(Self::Mcf),
            other => Err(format!("unknown placement {other:?} (greedy, mcf)")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let order = match self.order {
            QueueOrder::Fifo => "fifo",
            QueueOrder::Priority => "priority",
            QueueOrder::Sjf => "sjf",
            QueueOrder::Srtf => "srtf",
        };
        let placement = match self.placement {
            Placement::Greedy => "greedy",
            Placement::Mcf => "mcf",
        };
        write!(f, "{order}/{placement}")
    }
}

/// A task's priority after aging.
pub fn aged_priority(priority: i32, waited: Duration, aging: Duration) -> i64 {
    let bonus = if aging.is_zero() { 0 } else { (waited.as_nanos() / aging.as_nanos()) as i64 };
    i64::from(priority) + bonus
}

/// Sort key of a job under an order (lower first); ties are broken by queue sequence.
pub fn job_key(order: QueueOrder, priority: i64, expected_ms: Option<u64>, remaining_ms: Option<u64>) -> i64 {
    match order {
        QueueOrder::Fifo => 0,
        QueueOrder::Priority => -priority,
        QueueOrder::Sjf => expected_ms.map_or(i64::MAX, |ms| ms as i64),
        QueueOrder::Srtf => remaining_ms.map_or(i64::MAX, |ms| ms as i64),
    }
}

/// Median of durations (ms), if any.
pub fn median(durations: &[u64]) -> Option<u64> {
    let mut d = durations.to_vec();
    d.sort_unstable();
    d.get(d.len() / 2).copied()
}

/// Cost of placing on an agent that lacks the module compiled.
pub const LOCALITY_MISS: i64 = 100;
/// Cost weight of the agent's load (percent used after placement).
pub const LOAD_WEIGHT: i64 = 1;
/// Cost step between consecutive jobs in queue order.
pub const ORDER_STEP: i64 = 1;
/// Load segments per agent.
const SEGMENTS: i64 = 4;

/// A group of queued tasks of one job (same resources, constraints and module).
#[derive(Debug, Clone)]
pub struct Class {
    pub resources: Resources,
    pub count: usize,
    pub module: Option<String>,
}

/// One offer as placement sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub free: Resources,
    /// Agent total and use before this offer (for load).
    pub total: Resources,
    pub cached: std::collections::HashSet<String>,
}

fn fits_count(free: &Resources, need: &Resources) -> i64 {
    let per = |have: u64, want: u64| have.checked_div(want).map_or(i64::MAX, |n| n as i64);
    per(free.millicpus, need.millicpus)
        .min(per(free.mem_bytes, need.mem_bytes))
        .min(per(free.disk_bytes, need.disk_bytes))
        .min(per(u64::from(free.wasm_slots), u64::from(need.wasm_slots)))
        .min(1 << 30)
}

fn used_percent(total: &Resources, free: &Resources) -> i64 {
    if total.millicpus == 0 {
        return 0;
    }
    (100 * total.millicpus.saturating_sub(free.millicpus) / total.millicpus) as i64
}

/// Min-cost max-flow placement of classes (in queue order) into slots; `allowed(c, s)` says whether
/// class `c` may run on slot `s` (constraints). Returns how many tasks of each class go to each slot.
pub fn place_mcf(
    classes: &[Class],
    slots: &[Slot],
    allowed: impl Fn(usize, usize) -> bool,
) -> Vec<(usize, usize, usize)> {
    let (nc, ns) = (classes.len(), slots.len());
    let source = 0;
    let sink = 1 + nc + ns;
    let mut net = Network::new(sink + 1);
    let mut arcs = Vec::new();
    let mut slot_cap = vec![0i64; ns];
    for (c, class) in classes.iter().enumerate() {
        net.add_edge(source, 1 + c, class.count as i64, c as i64 * ORDER_STEP);
        for (s, slot) in slots.iter().enumerate() {
            let k = fits_count(&slot.free, &class.resources).min(class.count as i64);
            if k == 0 || !allowed(c, s) {
                continue;
            }
            slot_cap[s] = slot_cap[s].max(k);
            let miss = class.module.as_ref().is_some_and(|m| !slot.cached.contains(m));
            let cost = if miss { LOCALITY_MISS } else { 0 };
            arcs.push((c, s, net.add_edge(1 + c, 1 + nc + s, k, cost)));
        }
    }
    for (s, slot) in slots.iter().enumerate() {
        let cap = slot_cap[s];
        if cap == 0 {
            continue;
        }
        let base = used_percent(&slot.total, &slot.free);
        let room = 100 - base;
        let per = (cap + SEGMENTS - 1) / SEGMENTS;
        for seg in 0..SEGMENTS {
            let seg_cap = per.min(cap - seg * per);
            if seg_cap <= 0 {
                break;
            }
            // The load the agent reaches while this segment fills.
            let load = base + room * (seg + 1) / SEGMENTS;
            net.add_edge(1 + nc + s, sink, seg_cap, LOAD_WEIGHT * load);
        }
    }
    net.min_cost_max_flow(source, sink);
    arcs.into_iter()
        .map(|(c, s, e)| (c, s, net.flow(e)))
        .filter(|a| a.2 > 0)
        .map(|(c, s, f)| (c, s, f as usize))
        .collect()
}

/// Total cost of a placement under the [`place_mcf`] cost model (classes in queue order), for
/// comparing policies: order cost + locality misses + load of each agent after placement.
pub fn placement_cost(classes: &[Class], slots: &[Slot], placed: &[(usize, usize, usize)]) -> i64 {
    let mut cost = 0;
    let mut on_slot: HashMap<usize, Resources> = HashMap::new();
    for &(c, s, n) in placed {
        let class = &classes[c];
        cost += n as i64 * c as i64 * ORDER_STEP;
        if class.module.as_ref().is_some_and(|m| !slots[s].cached.contains(m)) {
            cost += n as i64 * LOCALITY_MISS;
        }
        let r = on_slot.entry(s).or_default();
        for _ in 0..n {
            *r = r.saturating_add(&class.resources);
        }
    }
    for (s, used) in on_slot {
        let slot = &slots[s];
        let after = slot.free.saturating_sub(&used);
        cost += LOAD_WEIGHT * used_percent(&slot.total, &after);
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(millicpus: u64) -> Resources {
        Resources { millicpus, mem_bytes: 1, disk_bytes: 0, wasm_slots: 0 }
    }

    fn slot(free: u64, total: u64, cached: &[&str]) -> Slot {
        let room = |millicpus| Resources { millicpus, mem_bytes: 1 << 30, disk_bytes: 0, wasm_slots: 0 };
        Slot { free: room(free), total: room(total), cached: cached.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn parsing_and_keys() {
        assert_eq!("sjf".parse::<QueueOrder>(), Ok(QueueOrder::Sjf));
        assert!("lifo".parse::<QueueOrder>().unwrap_err().contains("fifo, priority, sjf, srtf"));
        assert_eq!("mcf".parse::<Placement>(), Ok(Placement::Mcf));
        assert!("best".parse::<Placement>().is_err());
        let cases = [
            (QueueOrder::Fifo, 5, Some(10), Some(20), 0),
            (QueueOrder::Priority, 5, None, None, -5),
            (QueueOrder::Sjf, 5, Some(10), Some(20), 10),
            (QueueOrder::Sjf, 5, None, Some(20), i64::MAX),
            (QueueOrder::Srtf, 5, Some(10), Some(20), 20),
        ];
        for (order, prio, expected, remaining, want) in cases {
            assert_eq!(job_key(order, prio, expected, remaining), want, "{order:?}");
        }
        assert_eq!(aged_priority(1, Duration::from_secs(125), Duration::from_secs(60)), 3);
        assert_eq!(aged_priority(1, Duration::from_secs(125), Duration::ZERO), 1);
        assert_eq!(median(&[30, 10, 20]), Some(20));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn mcf_prefers_agents_with_the_module_and_spreads() {
        let classes = vec![Class { resources: r(100), count: 4, module: Some("m".into()) }];
        // Slot 1 has the module; slot 0 and 2 do not. Slot 1 holds 2 tasks.
        let slots = vec![slot(1000, 1000, &[]), slot(200, 1000, &["m"]), slot(1000, 1000, &[])];
        let placed = place_mcf(&classes, &slots, |_, _| true);
        let on = |s: usize| placed.iter().filter(|p| p.1 == s).map(|p| p.2).sum::<usize>();
        assert_eq!(on(1), 2, "the agent with the module is filled first: {placed:?}");
        assert_eq!((on(0), on(2)), (1, 1), "the rest spread over the empty agents: {placed:?}");
    }

    #[test]
    fn mcf_gives_scarce_room_to_earlier_classes_and_respects_constraints() {
        let classes = vec![
            Class { resources: r(500), count: 2, module: None },
            Class { resources: r(500), count: 2, module: None },
        ];
        let slots = vec![slot(1000, 1000, &[]), slot(500, 1000, &[])];
        // Class 1 may not run on slot 1.
        let placed = place_mcf(&classes, &slots, |c, s| !(c == 1 && s == 1));
        let of = |c: usize| placed.iter().filter(|p| p.0 == c).map(|p| p.2).sum::<usize>();
        assert_eq!(of(0) + of(1), 3, "all room used: {placed:?}");
        assert_eq!(of(0), 2, "the earlier class is placed in full: {placed:?}");
        assert!(!placed.iter().any(|p| p.0 == 1 && p.1 == 1), "constraint respected: {placed:?}");
        for (s, slot) in slots.iter().enumerate() {
            let used: u64 = placed.iter().filter(|p| p.1 == s).map(|p| p.2 as u64 * 500).sum();
            assert!(used <= slot.free.millicpus, "capacity of slot {s}: {placed:?}");
        }
    }
}
