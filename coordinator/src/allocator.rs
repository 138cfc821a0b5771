//! Which framework each agent's free resources are offered to: Dominant Resource Fairness across
//! roles and, within a role, across frameworks (two levels, as in Mesos' hierarchical allocator).
//!
//! The allocator keeps totals and allocations only; the caller owns the offers. A framework's
//! allocation is what is offered to it plus what its tasks use: it grows when [`Allocator::allocate`]
//! hands out an agent (or [`Allocator::allocate_used`] counts tasks found running) and shrinks when
//! [`Allocator::recover`] gives resources back. A role's allocation is the sum over its frameworks.
//!
//! Dominant share: for each dimension (cpu, memory, disk, wasm slots), allocated / the sum of the
//! totals of the *active* agents; the largest of these. A dimension whose cluster total is 0 is
//! ignored. The numerator includes allocations on inactive agents, so a share can exceed 1 while
//! agents are unreachable. A role's weighted share is its dominant share divided by its weight.
//!
//! One cycle visits the active agents with free resources (total - allocated, not
//! [`Resources::is_empty`], so free disk alone is not offered) in order of agent id, starting one
//! agent further each cycle, and offers each agent whole to one framework:
//! 1. roles below their quota guarantee (allocation does not yet contain it) come first, then the
//!    others; within each group, lowest weighted share first, ties by role name;
//! 2. within a role: the active, non-suppressed framework with the lowest dominant share, ties by
//!    framework id, skipping frameworks with an unexpired filter on the agent; if none can take the
//!    agent, the next role is tried;
//! 3. a role with a quota limit gets the agent's free resources capped component-wise at
//!    (limit - role allocation); if that is empty the role is skipped. The rest of a capped agent is
//!    offered in a later cycle.
//!
//! The chosen framework's and role's allocations grow at once, so the next agent sees the new shares.
//! Candidates are kept in ordered sets keyed by share (roles globally, frameworks per role) and
//! re-keyed incrementally when an allocation changes; a change of the cluster total re-keys everything
//! at the start of the next cycle. A cycle costs O(agents × log frameworks) when filters are rare.
//!
//! Not done (unlike Mesos): no headroom is held back for unsatisfied guarantees, an agent goes to one
//! framework per cycle, and there are no reservations.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::resources::Resources;

/// Longest filter [`Allocator::recover`] sets; longer refusals are capped to it.
pub const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a role shares the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    /// Relative weight (> 0, default 1): a role with weight 3 converges to 3 times the dominant share
    /// of a role with weight 1. A weight that is not a positive finite number counts as 1.
    pub weight: f64,
    /// Quota guarantee: while the role's allocation does not contain it, the role is served before
    /// roles whose guarantee is met. Zero dimensions guarantee nothing.
    pub guarantee: Resources,
    /// Quota limit: the role's allocation never grows beyond it through [`Allocator::allocate`]
    /// (every dimension is limited; a 0 dimension allows none of it). `None`: unlimited.
    pub limit: Option<Resources>,
}

impl Default for RoleConfig {
    fn default() -> Self {
        Self { weight: 1.0, guarantee: Resources::default(), limit: None }
    }
}

/// Resources of one agent offered to one framework by [`Allocator::allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The agent whose resources these are.
    pub agent_id: String,
    /// The framework they are now allocated to (the caller turns them into an offer).
    pub framework_id: String,
    /// What is allocated: the agent's free resources, capped by the role's quota limit.
    pub resources: Resources,
}

/// Position of a framework in its role: (dominant share bits, id, slot). Non-negative `f64`s order
/// like their bits.
type FrameworkKey = (u64, Arc<str>, usize);
/// Position of a role: (guarantee met, weighted share bits, name, slot); unmet guarantees first.
type RoleKey = (bool, u64, Arc<str>, usize);

#[derive(Debug)]
struct Framework {
    id: Arc<str>,
    role: usize,
    active: bool,
    suppressed: bool,
    allocated: Resources,
    /// Agents on which `allocated` has a share (the amounts are in [`Agent::allocations`]).
    agents: HashSet<usize>,
    /// Agent slot -> not offered to this framework before this instant.
    filters: HashMap<usize, Instant>,
    /// Its entry in its role's `frameworks`, when it is a candidate (active, not suppressed).
    key: Option<FrameworkKey>,
}

#[derive(Debug)]
struct Role {
    name: Arc<str>,
    config: RoleConfig,
    allocated: Resources,
    /// Candidate frameworks, lowest share first.
    frameworks: BTreeSet<FrameworkKey>,
    /// Its entry in `Allocator::role_order`, when it has candidates.
    key: Option<RoleKey>,
}

#[derive(Debug)]
struct Agent {
    id: String,
    total: Resources,
    allocated: Resources,
    active: bool,
    /// Framework slot -> what it is allocated here.
    allocations: HashMap<usize, Resources>,
}

/// DRF allocator state: roles, frameworks, agents and who is allocated what where.
#[derive(Debug, Default)]
pub struct Allocator {
    frameworks: Vec<Option<Framework>>,
    framework_slots: HashMap<String, usize>,
    free_framework_slots: Vec<usize>,
    roles: Vec<Role>,
    role_slots: HashMap<String, usize>,
    agents: Vec<Option<Agent>>,
    agent_slots: HashMap<String, usize>,
    free_agent_slots: Vec<usize>,
    /// Sum of the totals of the active agents: the share denominators.
    active_total: Resources,
    /// Roles with candidate frameworks, in allocation order.
    role_order: BTreeSet<RoleKey>,
    /// Agent slots by agent id.
    agent_order: Vec<usize>,
    agent_order_stale: bool,
    /// The cluster total changed: every key is re-computed before the next cycle.
    keys_stale: bool,
    cycle: usize,
}

/// Largest of allocated / total over the dimensions whose total is not 0.
fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    [
        (allocated.millicpus, total.millicpus),
        (allocated.mem_bytes, total.mem_bytes),
        (allocated.disk_bytes, total.disk_bytes),
        (u64::from(allocated.wasm_slots), u64::from(total.wasm_slots)),
    ]
    .into_iter()
    .filter(|&(_, t)| t > 0)
    .map(|(a, t)| a as f64 / t as f64)
    .fold(0.0, f64::max)
}

fn is_zero(r: &Resources) -> bool {
    *r == Resources::default()
}

impl Allocator {
    /// An allocator without roles, frameworks or agents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a role (creating it if needed). Roles never configured use [`RoleConfig::default`].
    pub fn set_role(&mut self, role: &str, mut config: RoleConfig) {
        if !(config.weight.is_finite() && config.weight > 0.0) {
            config.weight = 1.0;
        }
        let r = self.role_slot(role);
        self.roles[r].config = config;
        self.refresh_role(r);
    }

    /// Adds an active, non-suppressed framework in `role`. Adding a known framework again is a no-op,
    /// except that it moves to another `role` if it has no allocation; with an allocation it keeps its
    /// old role (see [`Allocator::framework_role`]).
    pub fn add_framework(&mut self, framework_id: &str, role: &str) {
        let r = self.role_slot(role);
        if let Some(&f) = self.framework_slots.get(framework_id) {
            let fw = self.frameworks[f].as_mut().expect("indexed framework slot is live");
            if fw.role == r || !fw.agents.is_empty() || !is_zero(&fw.allocated) {
                return;
            }
            let old = fw.role;
            if let Some(key) = fw.key.take() {
                self.roles[old].frameworks.remove(&key);
            }
            fw.role = r;
            self.refresh_framework(f);
            self.refresh_role(old);
            self.refresh_role(r);
            return;
        }
        let fw = Framework {
            id: Arc::from(framework_id),
            role: r,
            active: true,
            suppressed: false,
            allocated: Resources::default(),
            agents: HashSet::new(),
            filters: HashMap::new(),
            key: None,
        };
        let f = match self.free_framework_slots.pop() {
            Some(f) => {
                self.frameworks[f] = Some(fw);
                f
            }
            None => {
                self.frameworks.push(Some(fw));
                self.frameworks.len() - 1
            }
        };
        self.framework_slots.insert(framework_id.to_owned(), f);
        self.refresh_framework(f);
        self.refresh_role(r);
    }

    /// Forgets a framework. Its allocations are dropped from its role's and the agents' accounting
    /// (those resources are free again); it cannot recover them afterwards.
    pub fn remove_framework(&mut self, framework_id: &str) {
        let Some(f) = self.framework_slots.remove(framework_id) else { return };
        let fw = self.frameworks[f].take().expect("indexed framework slot is live");
        self.free_framework_slots.push(f);
        let role = &mut self.roles[fw.role];
        if let Some(key) = &fw.key {
            role.frameworks.remove(key);
        }
        role.allocated = role.allocated.saturating_sub(&fw.allocated);
        for a in fw.agents {
            let agent = self.agents[a].as_mut().expect("allocated agent slot is live");
            if let Some(r) = agent.allocations.remove(&f) {
                agent.allocated = agent.allocated.saturating_sub(&r);
            }
        }
        self.refresh_role(fw.role);
    }

    /// Marks a framework connected (`true`) or disconnected: an inactive framework is allocated
    /// nothing but keeps its allocation.
    pub fn activate_framework(&mut self, framework_id: &str, active: bool) {
        self.update_framework(framework_id, |fw| fw.active = active);
    }

    /// Stops offers to a framework until [`Allocator::revive`].
    pub fn suppress(&mut self, framework_id: &str) {
        self.update_framework(framework_id, |fw| fw.suppressed = true);
    }

    /// Resumes offers to a framework and clears all its filters.
    pub fn revive(&mut self, framework_id: &str) {
        self.update_framework(framework_id, |fw| {
            fw.suppressed = false;
            fw.filters.clear();
        });
    }

    /// Clears a framework's filter on one agent (resources were freed there).
    pub fn unfilter(&mut self, framework_id: &str, agent_id: &str) {
        let (Some(&f), Some(&a)) = (self.framework_slots.get(framework_id), self.agent_slots.get(agent_id)) else {
            return;
        };
        if let Some(fw) = self.frameworks.get_mut(f).and_then(Option::as_mut) {
            fw.filters.remove(&a);
        }
    }

    /// Whether the allocator knows a framework.
    pub fn has_framework(&self, framework_id: &str) -> bool {
        self.framework_slots.contains_key(framework_id)
    }

    /// Adds an active agent, or updates the total of a known one (its allocations and activity stay).
    pub fn add_agent(&mut self, agent_id: &str, total: Resources) {
        if let Some(&a) = self.agent_slots.get(agent_id) {
            let agent = self.agents[a].as_mut().expect("indexed agent slot is live");
            if agent.active && agent.total != total {
                self.active_total = self.active_total.saturating_sub(&agent.total).saturating_add(&total);
                self.keys_stale = true;
            }
            agent.total = total;
            return;
        }
        let agent = Agent {
            id: agent_id.to_owned(),
            total,
            allocated: Resources::default(),
            active: true,
            allocations: HashMap::new(),
        };
        let a = match self.free_agent_slots.pop() {
            Some(a) => {
                self.agents[a] = Some(agent);
                a
            }
            None => {
                self.agents.push(Some(agent));
                self.agents.len() - 1
            }
        };
        self.agent_slots.insert(agent_id.to_owned(), a);
        self.active_total = self.active_total.saturating_add(&total);
        self.agent_order_stale = true;
        self.keys_stale = true;
    }

    /// Forgets an agent. Its allocations are dropped from the frameworks' and roles' accounting, and
    /// filters on it are dropped.
    pub fn remove_agent(&mut self, agent_id: &str) {
        let Some(a) = self.agent_slots.remove(agent_id) else { return };
        let agent = self.agents[a].take().expect("indexed agent slot is live");
        self.free_agent_slots.push(a);
        if agent.active {
            self.active_total = self.active_total.saturating_sub(&agent.total);
        }
        for (f, r) in agent.allocations {
            let fw = self.frameworks[f].as_mut().expect("allocating framework slot is live");
            fw.allocated = fw.allocated.saturating_sub(&r);
            fw.agents.remove(&a);
            let role = &mut self.roles[fw.role];
            role.allocated = role.allocated.saturating_sub(&r);
        }
        for fw in self.frameworks.iter_mut().flatten() {
            fw.filters.remove(&a);
        }
        self.agent_order_stale = true;
        self.keys_stale = true;
    }

    /// Marks an agent reachable (`true`) or not: an inactive agent is not allocated and does not count
    /// in the share denominators, but its allocations stay.
    pub fn activate_agent(&mut self, agent_id: &str, active: bool) {
        let Some(&a) = self.agent_slots.get(agent_id) else { return };
        let agent = self.agents[a].as_mut().expect("indexed agent slot is live");
        if agent.active == active {
            return;
        }
        agent.active = active;
        self.active_total = if active {
            self.active_total.saturating_add(&agent.total)
        } else {
            self.active_total.saturating_sub(&agent.total)
        };
        self.keys_stale = true;
    }

    /// Counts resources as allocated to a framework on an agent outside of an offer (tasks found
    /// running after a leader takeover). Counted as given, even beyond the agent's total or the role's
    /// limit. Unknown framework or agent: ignored.
    pub fn allocate_used(&mut self, framework_id: &str, agent_id: &str, resources: Resources) {
        let (Some(&f), Some(&a)) = (self.framework_slots.get(framework_id), self.agent_slots.get(agent_id)) else {
            return;
        };
        self.add_allocation(f, a, resources);
    }

    /// Resources come back (declined, unused part of an accepted offer, rescinded or expired offer,
    /// task ended); at most what the framework is allocated on the agent is released. `refuse`: this
    /// agent is not offered to this framework again before `now + refuse` (capped at [`MAX_REFUSE`];
    /// `None` or zero: no filter; an existing later filter stays). Unknown framework or agent: ignored.
    pub fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) {
        let (Some(&f), Some(&a)) = (self.framework_slots.get(framework_id), self.agent_slots.get(agent_id)) else {
            return;
        };
        self.release(f, a, &resources);
        let Some(until) = refuse.filter(|d| !d.is_zero()).and_then(|d| now.checked_add(d.min(MAX_REFUSE))) else {
            return;
        };
        let fw = self.frameworks[f].as_mut().expect("indexed framework slot is live");
        fw.filters.entry(a).and_modify(|u| *u = (*u).max(until)).or_insert(until);
    }

    /// One allocation cycle: every active agent with free resources is offered whole (all its free
    /// resources, or capped by a quota limit) to one framework chosen by DRF (see the module docs).
    /// The chosen framework's and role's allocations grow by it at once. Filters expired at `now` are
    /// dropped as they are met.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        if self.agent_order_stale {
            let mut order: Vec<(&str, usize)> =
                self.agents.iter().enumerate().filter_map(|(a, s)| s.as_ref().map(|s| (s.id.as_str(), a))).collect();
            order.sort_unstable();
            self.agent_order = order.into_iter().map(|(_, a)| a).collect();
            self.agent_order_stale = false;
        }
        if self.keys_stale {
            self.rekey_all();
        }
        let mut out = Vec::new();
        let n = self.agent_order.len();
        if n == 0 {
            return out;
        }
        let start = self.cycle % n;
        self.cycle = start + 1;
        for i in 0..n {
            if self.role_order.is_empty() {
                break;
            }
            let a = self.agent_order[(start + i) % n];
            let agent = self.agents[a].as_ref().expect("ordered agent slot is live");
            if !agent.active {
                continue;
            }
            let free = agent.total.saturating_sub(&agent.allocated);
            if free.is_empty() {
                continue;
            }
            let Some((f, resources)) = self.pick(a, free, now) else { continue };
            let agent_id = self.agents[a].as_ref().expect("ordered agent slot is live").id.clone();
            self.add_allocation(f, a, resources);
            let framework_id = self.frameworks[f].as_ref().expect("picked framework slot is live").id.to_string();
            out.push(Allocation { agent_id, framework_id, resources });
        }
        out
    }

    /// Dominant share of a role's allocation over the active agents' total, not divided by its
    /// weight; 0 for an unknown role.
    pub fn role_share(&self, role: &str) -> f64 {
        self.role_slots.get(role).map_or(0.0, |&r| dominant_share(&self.roles[r].allocated, &self.active_total))
    }

    /// [`Allocator::role_share`] divided by the role's weight: what roles are ordered by.
    pub fn role_weighted_share(&self, role: &str) -> f64 {
        self.role_slots.get(role).map_or(0.0, |&r| {
            let role = &self.roles[r];
            dominant_share(&role.allocated, &self.active_total) / role.config.weight
        })
    }

    /// Dominant share of a framework's allocation over the active agents' total; 0 if unknown.
    pub fn framework_share(&self, framework_id: &str) -> f64 {
        self.framework(framework_id).map_or(0.0, |fw| dominant_share(&fw.allocated, &self.active_total))
    }

    /// The role a framework is in; `None` if it is unknown.
    pub fn framework_role(&self, framework_id: &str) -> Option<&str> {
        self.framework(framework_id).map(|fw| &*self.roles[fw.role].name)
    }

    /// An agent's total minus what is allocated on it (zero where allocations exceed the total).
    pub fn free(&self, agent_id: &str) -> Option<Resources> {
        let agent = self.agents[*self.agent_slots.get(agent_id)?].as_ref()?;
        Some(agent.total.saturating_sub(&agent.allocated))
    }

    /// What a framework is allocated, summed over agents; zero if unknown.
    pub fn allocated(&self, framework_id: &str) -> Resources {
        self.framework(framework_id).map(|fw| fw.allocated).unwrap_or_default()
    }

    /// What a role's frameworks are allocated; zero if unknown.
    pub fn role_allocated(&self, role: &str) -> Resources {
        self.role_slots.get(role).map(|&r| self.roles[r].allocated).unwrap_or_default()
    }

    /// Sum of the totals of the active agents (the share denominators).
    pub fn cluster_total(&self) -> Resources {
        self.active_total
    }

    fn framework(&self, framework_id: &str) -> Option<&Framework> {
        self.frameworks[*self.framework_slots.get(framework_id)?].as_ref()
    }

    fn role_slot(&mut self, name: &str) -> usize {
        if let Some(&r) = self.role_slots.get(name) {
            return r;
        }
        self.roles.push(Role {
            name: Arc::from(name),
            config: RoleConfig::default(),
            allocated: Resources::default(),
            frameworks: BTreeSet::new(),
            key: None,
        });
        self.role_slots.insert(name.to_owned(), self.roles.len() - 1);
        self.roles.len() - 1
    }

    fn update_framework(&mut self, framework_id: &str, change: impl FnOnce(&mut Framework)) {
        let Some(&f) = self.framework_slots.get(framework_id) else { return };
        let fw = self.frameworks[f].as_mut().expect("indexed framework slot is live");
        change(fw);
        let r = fw.role;
        self.refresh_framework(f);
        self.refresh_role(r);
    }

    /// The first framework, in allocation order, that may take agent `a`, with what it is offered.
    fn pick(&mut self, a: usize, free: Resources, now: Instant) -> Option<(usize, Resources)> {
        for role_key in &self.role_order {
            let role = &self.roles[role_key.3];
            let offer = match &role.config.limit {
                Some(limit) => free.min(&limit.saturating_sub(&role.allocated)),
                None => free,
            };
            if offer.is_empty() {
                continue;
            }
            for fw_key in &role.frameworks {
                let fw = self.frameworks[fw_key.2].as_mut().expect("candidate framework slot is live");
                if let Some(&until) = fw.filters.get(&a) {
                    if now < until {
                        continue;
                    }
                    fw.filters.remove(&a);
                }
                return Some((fw_key.2, offer));
            }
        }
        None
    }

    fn add_allocation(&mut self, f: usize, a: usize, r: Resources) {
        if is_zero(&r) {
            return;
        }
        let agent = self.agents[a].as_mut().expect("agent slot is live");
        agent.allocated = agent.allocated.saturating_add(&r);
        let here = agent.allocations.entry(f).or_default();
        *here = here.saturating_add(&r);
        let fw = self.frameworks[f].as_mut().expect("framework slot is live");
        fw.allocated = fw.allocated.saturating_add(&r);
        fw.agents.insert(a);
        let role = fw.role;
        self.roles[role].allocated = self.roles[role].allocated.saturating_add(&r);
        self.refresh_framework(f);
        self.refresh_role(role);
    }

    /// Releases up to `r` of framework `f`'s allocation on agent `a`.
    fn release(&mut self, f: usize, a: usize, r: &Resources) {
        let agent = self.agents[a].as_mut().expect("agent slot is live");
        let Some(here) = agent.allocations.get_mut(&f) else { return };
        let released = here.min(r);
        if is_zero(&released) {
            return;
        }
        *here = here.saturating_sub(&released);
        let emptied = is_zero(here);
        if emptied {
            agent.allocations.remove(&f);
        }
        agent.allocated = agent.allocated.saturating_sub(&released);
        let fw = self.frameworks[f].as_mut().expect("framework slot is live");
        fw.allocated = fw.allocated.saturating_sub(&released);
        if emptied {
            fw.agents.remove(&a);
        }
        let role = fw.role;
        self.roles[role].allocated = self.roles[role].allocated.saturating_sub(&released);
        self.refresh_framework(f);
        self.refresh_role(role);
    }

    /// Re-positions framework `f` in its role's candidates (in, out or at its current share).
    fn refresh_framework(&mut self, f: usize) {
        let fw = self.frameworks[f].as_mut().expect("framework slot is live");
        let role = &mut self.roles[fw.role];
        if let Some(key) = fw.key.take() {
            role.frameworks.remove(&key);
        }
        if fw.active && !fw.suppressed {
            let key = (dominant_share(&fw.allocated, &self.active_total).to_bits(), fw.id.clone(), f);
            role.frameworks.insert(key.clone());
            fw.key = Some(key);
        }
    }

    /// Re-positions role `r` in the role order (in while it has candidates).
    fn refresh_role(&mut self, r: usize) {
        let role = &mut self.roles[r];
        if let Some(key) = role.key.take() {
            self.role_order.remove(&key);
        }
        if !role.frameworks.is_empty() {
            let share = dominant_share(&role.allocated, &self.active_total) / role.config.weight;
            let key = (role.allocated.contains(&role.config.guarantee), share.to_bits(), role.name.clone(), r);
            self.role_order.insert(key.clone());
            role.key = Some(key);
        }
    }

    /// Re-computes every key (after the cluster total changed).
    fn rekey_all(&mut self) {
        for role in &mut self.roles {
            role.frameworks.clear();
            role.key = None;
        }
        self.role_order.clear();
        for f in 0..self.frameworks.len() {
            if let Some(fw) = self.frameworks[f].as_mut() {
                fw.key = None;
                self.refresh_framework(f);
            }
        }
        for r in 0..self.roles.len() {
            self.refresh_role(r);
        }
        self.keys_stale = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn res(millicpus: u64, mem_gib: u64) -> Resources {
        Resources { millicpus, mem_bytes: mem_gib * GIB, ..Default::default() }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Who got which agents in one cycle, as (agent, framework) pairs.
    fn pairs(allocations: &[Allocation]) -> Vec<(&str, &str)> {
        allocations.iter().map(|a| (a.agent_id.as_str(), a.framework_id.as_str())).collect()
    }

    /// Sums agree at every level and match the per-agent records.
    fn check_invariants(al: &Allocator) {
        let mut by_fw: HashMap<usize, Resources> = HashMap::new();
        let mut active = Resources::default();
        for (a, agent) in al.agents.iter().enumerate() {
            let Some(agent) = agent else { continue };
            if agent.active {
                active = active.saturating_add(&agent.total);
            }
            let mut sum = Resources::default();
            for (&f, r) in &agent.allocations {
                assert!(!is_zero(r), "empty allocation record");
                sum = sum.saturating_add(r);
                let e = by_fw.entry(f).or_default();
                *e = e.saturating_add(r);
                assert!(al.frameworks[f].as_ref().unwrap().agents.contains(&a));
            }
            assert_eq!(sum, agent.allocated, "agent {}", agent.id);
        }
        assert_eq!(active, al.active_total);
        let mut by_role = vec![Resources::default(); al.roles.len()];
        for (f, fw) in al.frameworks.iter().enumerate() {
            let Some(fw) = fw else { continue };
            assert_eq!(by_fw.get(&f).copied().unwrap_or_default(), fw.allocated, "framework {}", fw.id);
            assert_eq!(fw.agents.len(), al.agents.iter().flatten().filter(|a| a.allocations.contains_key(&f)).count());
            by_role[fw.role] = by_role[fw.role].saturating_add(&fw.allocated);
        }
        for (role, sum) in al.roles.iter().zip(by_role) {
            assert_eq!(role.allocated, sum, "role {}", role.name);
        }
    }

    /// Frameworks launch one task per offer while it fits (recovering the rest) and decline with a
    /// long filter when it does not, until nothing is offered; returns the task count per framework.
    fn run_one_task_per_offer(al: &mut Allocator, demands: &[(&str, Resources)], now: Instant) -> Vec<usize> {
        let mut tasks = vec![0; demands.len()];
        for _ in 0..1000 {
            let allocations = al.allocate(now);
            if allocations.is_empty() {
                return tasks;
            }
            for alloc in allocations {
                let i = demands.iter().position(|(id, _)| *id == alloc.framework_id).unwrap();
                match alloc.resources.checked_sub(&demands[i].1) {
                    Some(rest) => {
                        tasks[i] += 1;
                        al.recover(&alloc.framework_id, &alloc.agent_id, rest, None, now);
                    }
                    None => {
                        al.recover(&alloc.framework_id, &alloc.agent_id, alloc.resources, Some(secs(3600.0)), now);
                    }
                }
            }
            check_invariants(al);
        }
        panic!("allocation did not settle");
    }

    #[test]
    fn drf_paper_example() {
        // DRF paper: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB> (memory-dominant), B's <3 CPU, 1 GB>.
        // Progressive filling: A, B, A, B, A -> A 3 tasks (12/18 = 2/3 of memory), B 2 tasks (6/9 of CPU).
        let a = ("A", res(1000, 4));
        let b = ("B", res(3000, 1));
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str, Resources)], &'a [usize]);
        let cases: [Case; 4] = [
            ("same role", &[("A", "r", a.1), ("B", "r", b.1)], &[3, 2]),
            ("one role each", &[("A", "ra", a.1), ("B", "rb", b.1)], &[3, 2]),
            ("A alone: memory bound", &[("A", "r", a.1)], &[4]),
            ("B alone: cpu bound", &[("B", "r", b.1)], &[3]),
        ];
        for (name, frameworks, want) in cases {
            let mut al = Allocator::new();
            al.add_agent("s1", res(9000, 18));
            for (id, role, _) in frameworks {
                al.add_framework(id, role);
            }
            let demands: Vec<(&str, Resources)> = frameworks.iter().map(|(id, _, d)| (*id, *d)).collect();
            let tasks = run_one_task_per_offer(&mut al, &demands, Instant::now());
            assert_eq!(tasks, want, "{name}");
            if want.len() == 2 {
                assert!((al.framework_share("A") - 2.0 / 3.0).abs() < 1e-9, "{name}");
                assert!((al.framework_share("B") - 2.0 / 3.0).abs() < 1e-9, "{name}");
            }
        }
    }

    #[test]
    fn weights_converge_to_their_ratio() {
        // (weight of a, weight of b, agents, agents a should end with); frameworks keep whole offers.
        let cases = [(1.0, 1.0, 100, 50), (1.0, 3.0, 100, 25), (2.0, 1.0, 120, 80), (1.0, 9.0, 100, 10)];
        for (wa, wb, agents, want_a) in cases {
            let mut al = Allocator::new();
            al.set_role("a", RoleConfig { weight: wa, ..Default::default() });
            al.set_role("b", RoleConfig { weight: wb, ..Default::default() });
            al.add_framework("fa", "a");
            al.add_framework("fb", "b");
            for i in 0..agents {
                al.add_agent(&format!("s{i:03}"), res(1000, 1));
            }
            let allocations = al.allocate(Instant::now());
            assert_eq!(allocations.len(), agents);
            let got_a = allocations.iter().filter(|a| a.framework_id == "fa").count();
            assert!(got_a.abs_diff(want_a) <= 1, "weights {wa}:{wb}: a got {got_a}, want {want_a}");
            // Weighted shares are within one agent's worth (of the lighter role) of each other.
            let one_agent = 1.0 / agents as f64 / wa.min(wb);
            let (sa, sb) = (al.role_weighted_share("a"), al.role_weighted_share("b"));
            assert!((sa - sb).abs() <= one_agent + 1e-12, "weights {wa}:{wb}: {sa} vs {sb}");
            assert!((al.role_share("a") - got_a as f64 / agents as f64).abs() < 1e-12);
            assert!(al.allocate(Instant::now()).is_empty(), "nothing is left");
            check_invariants(&al);
        }
    }

    #[test]
    fn weights_over_many_cycles() {
        // Agents arrive a few at a time; shares still converge to 1:3.
        let mut al = Allocator::new();
        al.set_role("light", RoleConfig { weight: 1.0, ..Default::default() });
        al.set_role("heavy", RoleConfig { weight: 3.0, ..Default::default() });
        al.add_framework("l", "light");
        al.add_framework("h", "heavy");
        let now = Instant::now();
        for i in 0..200 {
            al.add_agent(&format!("s{i:03}"), res(1000, 1));
            if i % 7 == 0 {
                al.allocate(now);
            }
        }
        al.allocate(now);
        let (l, h) = (al.allocated("l").millicpus / 1000, al.allocated("h").millicpus / 1000);
        assert_eq!(l + h, 200);
        assert!(l.abs_diff(50) <= 1, "light {l}, heavy {h}");
    }

    #[test]
    fn quota_guarantee_is_served_first() {
        // q already uses 3 of 5 agents (share 0.6), r nothing: without a guarantee r gets both free
        // agents; while q is below its guarantee, q gets them.
        let cases = [
            ("no guarantee", Resources::default(), 0, 2),
            ("cpu guarantee unmet", res(5000, 0), 2, 0),
            ("memory guarantee unmet", res(0, 4), 1, 1),
            ("guarantee met", res(3000, 3), 0, 2),
        ];
        for (name, guarantee, want_q, want_r) in cases {
            let mut al = Allocator::new();
            al.set_role("q", RoleConfig { guarantee, ..Default::default() });
            al.add_framework("fq", "q");
            al.add_framework("fr", "r");
            for i in 0..5 {
                al.add_agent(&format!("s{i}"), res(1000, 1));
            }
            for i in 0..3 {
                al.allocate_used("fq", &format!("s{i}"), res(1000, 1));
            }
            assert!(al.framework_share("fq") > al.framework_share("fr"));
            let got = al.allocate(Instant::now());
            let count = |fw: &str| got.iter().filter(|a| a.framework_id == fw).count();
            assert_eq!((count("fq"), count("fr")), (want_q, want_r), "{name}");
            check_invariants(&al);
        }
    }

    #[test]
    fn quota_limit_caps_offers() {
        let limit = Resources { millicpus: 3000, mem_bytes: 3 * GIB, disk_bytes: 100, wasm_slots: 8 };
        let agent = Resources { millicpus: 2000, mem_bytes: 2 * GIB, disk_bytes: 100, wasm_slots: 4 };
        let mut al = Allocator::new();
        al.set_role("l", RoleConfig { limit: Some(limit), ..Default::default() });
        al.add_framework("fl", "l");
        for id in ["s0", "s1", "s2"] {
            al.add_agent(id, agent);
        }
        let now = Instant::now();
        let got = al.allocate(now);
        assert_eq!(got.len(), 2, "the third agent is not offered: the limit is reached");
        assert_eq!(got[0].resources, agent);
        assert_eq!(got[1].resources, Resources { millicpus: 1000, mem_bytes: GIB, disk_bytes: 0, wasm_slots: 4 });
        assert_eq!(al.allocated("fl"), limit);
        assert!(al.allocate(now).is_empty());
        // Another role gets the rest: the capped agent's remainder and the untouched agent.
        al.add_framework("fo", "o");
        let got = al.allocate(now);
        let mut got: Vec<_> = got.iter().map(|a| (a.framework_id.as_str(), a.resources)).collect();
        got.sort_by_key(|(_, r)| r.millicpus);
        let remainder = Resources { millicpus: 1000, mem_bytes: GIB, disk_bytes: 100, wasm_slots: 0 };
        assert_eq!(got, [("fo", remainder), ("fo", agent)]);
        // Recovering part of the limit makes exactly that much offerable again.
        al.recover("fl", "s0", res(500, 0), None, now);
        al.recover("fo", "s1", remainder, None, now);
        al.suppress("fo");
        let got = al.allocate(now);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].framework_id.as_str(), got[0].resources), ("fl", res(500, 0)));
        assert_eq!(al.allocated("fl"), limit);
        assert!(limit.contains(&al.role_allocated("l")));
        check_invariants(&al);
    }

    #[test]
    fn unfilter_clears_one_agent_only() {
        let t0 = Instant::now();
        let mut al = Allocator::new();
        al.add_framework("fw", "r");
        for a in ["a1", "a2"] {
            al.add_agent(a, Resources { millicpus: 1000, mem_bytes: 1 << 30, disk_bytes: 0, wasm_slots: 0 });
        }
        for offer in al.allocate(t0) {
            al.recover("fw", &offer.agent_id, offer.resources, Some(Duration::from_secs(60)), t0);
        }
        assert!(al.allocate(t0).is_empty(), "both agents filtered");
        al.unfilter("fw", "a2");
        let again: Vec<String> = al.allocate(t0).into_iter().map(|a| a.agent_id).collect();
        assert_eq!(again, vec!["a2".to_string()]);
        assert!(al.has_framework("fw") && !al.has_framework("other"));
    }

    #[test]
    fn filters_expire_and_revive_clears_them() {
        let t0 = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s", res(1000, 1));
        al.add_framework("a", "r");
        al.add_framework("b", "r");
        let all = res(1000, 1);
        // (offered at, who gets it); each holder declines, a with a 5 s filter at t0, b without one.
        assert_eq!(pairs(&al.allocate(t0)), [("s", "a")]);
        al.recover("a", "s", all, Some(secs(5.0)), t0);
        let steps = [(0.0, "b"), (4.999, "b"), (5.0, "a")];
        for (at, want) in steps {
            let now = t0 + secs(at);
            assert_eq!(pairs(&al.allocate(now)), [("s", want)], "at t0+{at}s");
            al.recover(want, "s", all, None, now);
        }
        // a alone: filtered means not offered at all.
        al.remove_framework("b");
        al.recover("a", "s", Resources::default(), Some(secs(5.0)), t0 + secs(10.0));
        assert!(al.allocate(t0 + secs(14.0)).is_empty());
        al.revive("a");
        assert_eq!(pairs(&al.allocate(t0 + secs(14.0))), [("s", "a")]);
        // A zero refusal sets no filter; an earlier refusal does not shorten a later one.
        al.recover("a", "s", all, Some(Duration::ZERO), t0);
        assert_eq!(pairs(&al.allocate(t0)), [("s", "a")]);
        al.recover("a", "s", all, Some(secs(60.0)), t0);
        al.recover("a", "s", Resources::default(), Some(secs(1.0)), t0);
        assert!(al.allocate(t0 + secs(30.0)).is_empty());
        assert_eq!(pairs(&al.allocate(t0 + secs(60.0))), [("s", "a")]);
        check_invariants(&al);
    }

    #[test]
    fn suppress_stops_offers_until_revive() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s", res(1000, 1));
        al.add_framework("a", "r");
        al.add_framework("b", "r");
        al.suppress("a");
        assert_eq!(pairs(&al.allocate(now)), [("s", "b")]);
        al.recover("b", "s", res(1000, 1), None, now);
        al.suppress("b");
        assert!(al.allocate(now).is_empty());
        al.revive("a");
        assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
    }

    #[test]
    fn inactive_agents_and_frameworks_are_not_allocated() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s0", res(1000, 1));
        al.add_agent("s1", res(1000, 1));
        al.add_framework("a", "r");
        al.activate_agent("s1", false);
        assert_eq!(pairs(&al.allocate(now)), [("s0", "a")]);
        assert_eq!(al.cluster_total(), res(1000, 1));
        assert_eq!(al.framework_share("a"), 1.0);
        // An inactive framework keeps its allocation but gets nothing new.
        al.activate_agent("s1", true);
        al.activate_framework("a", false);
        assert!(al.allocate(now).is_empty());
        assert_eq!(al.allocated("a"), res(1000, 1));
        assert_eq!(al.framework_share("a"), 0.5);
        al.activate_framework("a", true);
        assert_eq!(pairs(&al.allocate(now)), [("s1", "a")]);
        // An unreachable agent keeps its accounting but leaves the denominator.
        al.activate_agent("s1", false);
        assert_eq!(al.allocated("a"), res(2000, 2));
        assert_eq!(al.framework_share("a"), 2.0);
        check_invariants(&al);
    }

    #[test]
    fn remove_agent_and_framework_drop_allocations() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s0", res(1000, 1));
        al.add_agent("s1", res(1000, 1));
        al.add_framework("a", "r");
        al.add_framework("b", "r");
        al.allocate_used("a", "s0", res(400, 0));
        al.allocate_used("b", "s0", res(100, 0));
        assert_eq!(al.free("s0"), Some(res(500, 1)));
        al.allocate_used("a", "s1", res(1000, 1));
        al.remove_agent("s1");
        assert_eq!(al.free("s1"), None);
        assert_eq!(al.allocated("a"), res(400, 0));
        assert_eq!(al.role_allocated("r"), res(500, 0));
        assert_eq!(al.framework_share("a"), 0.4);
        al.remove_framework("a");
        assert_eq!(al.free("s0"), Some(res(900, 1)));
        assert_eq!(al.allocated("a"), Resources::default());
        assert_eq!(al.role_allocated("r"), res(100, 0));
        // Recovering for a forgotten framework or agent is ignored.
        al.recover("a", "s0", res(400, 0), None, now);
        al.recover("b", "s1", res(100, 0), None, now);
        assert_eq!(al.free("s0"), Some(res(900, 1)));
        // Recovering more than allocated releases only what is allocated.
        al.recover("b", "s0", res(5000, 5), None, now);
        assert_eq!(al.free("s0"), Some(res(1000, 1)));
        assert_eq!(pairs(&al.allocate(now)), [("s0", "b")]);
        check_invariants(&al);
    }

    #[test]
    fn allocate_used_counts_in_shares_and_free() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s0", res(4000, 4));
        al.add_agent("s1", res(4000, 4));
        al.add_framework("a", "r");
        al.add_framework("b", "r");
        al.allocate_used("a", "s0", res(1000, 0));
        assert_eq!(al.free("s0"), Some(res(3000, 4)));
        assert_eq!(al.framework_share("a"), 1000.0 / 8000.0);
        // a's share is higher, so b gets the first agent visited; then a (1/8 < 4/8+) gets the next.
        let got = al.allocate(now);
        assert_eq!(got.iter().map(|a| a.framework_id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        // Tasks beyond an agent's total are still counted; free saturates at zero.
        al.allocate_used("b", "s1", res(9000, 9));
        assert_eq!(al.free("s1"), Some(Resources::default()));
        // Unknown framework or agent: ignored.
        al.allocate_used("nobody", "s0", res(1, 0));
        al.allocate_used("a", "nowhere", res(1, 0));
        check_invariants(&al);
    }

    #[test]
    fn add_framework_moves_role_only_without_allocation() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s", res(1000, 1));
        al.add_framework("a", "r1");
        al.add_framework("a", "r1");
        al.add_framework("a", "r2");
        assert_eq!(al.framework_role("a"), Some("r2"));
        al.allocate(now);
        al.add_framework("a", "r3");
        assert_eq!(al.framework_role("a"), Some("r2"), "it has an allocation, so it stays");
        assert_eq!(al.role_allocated("r2"), res(1000, 1));
        al.recover("a", "s", res(1000, 1), None, now);
        al.add_framework("a", "r3");
        assert_eq!(al.framework_role("a"), Some("r3"));
        assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
        assert_eq!(al.role_allocated("r3"), res(1000, 1));
        assert_eq!(al.role_allocated("r2"), Resources::default());
        check_invariants(&al);
    }

    #[test]
    fn agent_updates_keep_allocations() {
        let now = Instant::now();
        let mut al = Allocator::new();
        al.add_agent("s", res(1000, 1));
        al.add_framework("a", "r");
        al.allocate(now);
        al.add_agent("s", res(3000, 3));
        assert_eq!(al.free("s"), Some(res(2000, 2)));
        assert_eq!(al.allocated("a"), res(1000, 1));
        assert_eq!(al.framework_share("a"), 1.0 / 3.0);
        assert_eq!(pairs(&al.allocate(now)), [("s", "a")]);
        assert_eq!(al.allocated("a"), res(3000, 3));
        check_invariants(&al);
    }

    #[test]
    fn agent_order_rotates_between_cycles() {
        let now = Instant::now();
        let mut al = Allocator::new();
        for id in ["c", "a", "b"] {
            al.add_agent(id, res(1000, 1));
        }
        al.add_framework("f", "r");
        let want = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]];
        for want in want {
            let got = al.allocate(now);
            assert_eq!(got.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), want);
            for a in got {
                al.recover(&a.framework_id, &a.agent_id, a.resources, None, now);
            }
        }
    }

    #[test]
    fn shares_ignore_dimensions_without_capacity_and_bad_weights() {
        let mut al = Allocator::new();
        al.add_agent("s", res(1000, 0));
        al.add_framework("a", "r");
        al.allocate_used("a", "s", Resources { millicpus: 250, mem_bytes: 7, disk_bytes: 7, wasm_slots: 7 });
        assert_eq!(al.framework_share("a"), 0.25);
        al.set_role("r", RoleConfig { weight: f64::NAN, ..Default::default() });
        assert_eq!(al.role_weighted_share("r"), 0.25);
        al.set_role("r", RoleConfig { weight: -2.0, ..Default::default() });
        assert_eq!(al.role_weighted_share("r"), 0.25);
        al.set_role("r", RoleConfig { weight: 0.5, ..Default::default() });
        assert_eq!(al.role_share("r"), 0.25);
        assert_eq!(al.role_weighted_share("r"), 0.5);
        assert_eq!(al.role_share("unknown"), 0.0);
        assert_eq!(al.framework_share("unknown"), 0.0);
    }

    #[test]
    fn random_operations_keep_accounting_consistent() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let t0 = Instant::now();
        let mut al = Allocator::new();
        al.set_role("r0", RoleConfig { limit: Some(res(8000, 8)), ..Default::default() });
        al.set_role("r1", RoleConfig { weight: 2.0, guarantee: res(4000, 0), ..Default::default() });
        let mut held: Vec<Allocation> = Vec::new();
        for step in 0..5000 {
            let now = t0 + secs(step as f64 * 0.1);
            let fw = format!("f{}", next(8));
            let agent = format!("s{}", next(12));
            match next(12) {
                0 => al.add_framework(&fw, &format!("r{}", next(3))),
                1 if next(4) == 0 => al.remove_framework(&fw),
                2 => al.add_agent(&agent, res(1000 * (1 + next(4)), 1 + next(4))),
                3 if next(4) == 0 => al.remove_agent(&agent),
                4 => al.activate_agent(&agent, next(3) != 0),
                5 => al.activate_framework(&fw, next(3) != 0),
                6 => al.suppress(&fw),
                7 => al.revive(&fw),
                8 => al.allocate_used(&fw, &agent, res(100 * next(5), next(2))),
                9 if !held.is_empty() => {
                    let a = held.swap_remove(next(held.len() as u64) as usize);
                    let refuse = [None, Some(secs(1.0)), Some(secs(5.0))][next(3) as usize];
                    al.recover(&a.framework_id, &a.agent_id, a.resources, refuse, now);
                }
                _ => {
                    // allocate_used may exceed a limit; allocate never does, and never adds beyond it.
                    let before: Vec<Resources> = al.roles.iter().map(|r| r.allocated).collect();
                    let got = al.allocate(now);
                    for (role, before) in al.roles.iter().zip(before) {
                        if let Some(limit) = role.config.limit {
                            let room = limit.saturating_sub(&before);
                            let added = role.allocated.saturating_sub(&before);
                            assert!(room.contains(&added), "limit exceeded at step {step}");
                        }
                    }
                    held.extend(got);
                }
            }
            check_invariants(&al);
            let mut keyed = 0;
            if !al.keys_stale {
                for (r, role) in al.roles.iter().enumerate() {
                    assert_eq!(role.key.is_some(), !role.frameworks.is_empty());
                    assert_eq!(role.key.as_ref().is_some_and(|k| al.role_order.contains(k)), role.key.is_some());
                    for key in &role.frameworks {
                        let fw = al.frameworks[key.2].as_ref().unwrap();
                        assert_eq!((fw.role, fw.active && !fw.suppressed), (r, true));
                        keyed += 1;
                    }
                }
                let candidates = al.frameworks.iter().flatten().filter(|f| f.active && !f.suppressed).count();
                assert_eq!(keyed, candidates);
            }
        }
    }
}
