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
mod tests;
