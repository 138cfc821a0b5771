//! The built-in job scheduler: the framework inside the leader that runs the CLI's jobs.
//!
//! A job is N instances of one task, with a retry policy and constraints on agent attributes. Each
//! instance runs as a sequence of tasks (attempts): a failed or lost attempt is retried after a
//! doubling backoff while attempts remain. Pending tasks wait in one FIFO queue and are placed the
//! way any framework places tasks: each offer is accepted with the queued tasks that fit in it and
//! whose job's constraints the agent satisfies (first fit, in queue order), or declined.
//! Pure: no I/O and no clock of its own; the leader applies its decisions and passes the time in.
//!
//! The queue order and the placement are policies ([`policy`]): FIFO and greedy first fit by
//! default; priority (with aging), shortest-job-first, shortest-remaining-time-first; min-cost-flow
//! placement ([`mcf`]).
//!
//! Layout: [`constraint`] (attribute constraints), [`policy`] (queue orders, placements),
//! [`mcf`] (the min-cost max-flow solver).

pub mod constraint;
pub mod mcf;
pub mod policy;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use skiff_proto as pb;
use skiff_proto::{JobState, TaskState};

use crate::offers::Offer;
use crate::resources::Resources;
use crate::task;
pub use policy::{Placement, Policy, QueueOrder};

/// The framework id of the built-in job scheduler.
pub const FRAMEWORK_ID: &str = "skiff-jobs";

/// Largest number of instances of one job.
pub use skiff_core::limits::MAX_INSTANCES;

/// The framework's answer to one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept { offer_id: String, launches: Vec<String> },
    Decline { offer_id: String },
}

/// An instance to start a new attempt of (its retry backoff is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub job_id: String,
    pub instance: u32,
    pub attempt: u32,
}

#[derive(Debug, Clone, Default)]
struct Instance {
    /// Tasks started so far.
    attempts: u32,
    task_id: Option<String>,
    state: TaskState,
    retry_at: Option<(Instant, u64)>,
    /// Since when the latest attempt runs (for remaining time).
    running_since: Option<Instant>,
}

#[derive(Debug)]
struct Job {
    spec: pb::JobSpec,
    submitted_ms: u64,
    killed: bool,
    instances: Vec<Instance>,
    /// Run times (ms) of its finished tasks.
    durations: Vec<u64>,
    /// Every task of every attempt, in creation order (collected with the job).
    task_ids: Vec<String>,
}

impl Job {
    /// Expected run time of one task: declared, else the median of the finished ones.
    fn expected_ms(&self) -> Option<u64> {
        match self.spec.expected_duration_ms {
            0 => policy::median(&self.durations),
            ms => Some(ms),
        }
    }

    /// Task-milliseconds left: the expected time of every unfinished instance, less what running
    /// ones have run.
    fn remaining_ms(&self, now: Instant) -> Option<u64> {
        let expected = self.expected_ms()?;
        let left = self
            .instances
            .iter()
            .filter(|i| !self.done(i) && i.state != TaskState::Finished)
            .map(|i| {
                let ran = i.running_since.map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
                expected.saturating_sub(ran)
            })
            .sum();
        Some(left)
    }

    fn module(&self) -> Option<String> {
        match self.spec.task.as_ref().and_then(|t| t.kind.as_ref()) {
            Some(pb::task_spec::Kind::Wasm(w)) => Some(w.module_sha256.clone()),
            _ => None,
        }
    }

    fn done(&self, i: &Instance) -> bool {
        task::is_terminal(i.state) && i.retry_at.is_none() && !(retriable(i.state) && self.may_retry(i))
    }

    fn may_retry(&self, i: &Instance) -> bool {
        !self.killed && i.attempts <= self.spec.retry.map_or(0, |r| r.attempts)
    }

    fn state(&self) -> JobState {
        if self.killed {
            JobState::Killed
        } else if !self.instances.iter().all(|i| self.done(i)) {
            JobState::Running
        } else if self.instances.iter().all(|i| i.state == TaskState::Finished) {
            JobState::Finished
        } else {
            JobState::Failed
        }
    }
}

/// Failed and lost attempts are retried; finished and killed ones are not.
fn retriable(state: TaskState) -> bool {
    matches!(state, TaskState::Failed | TaskState::Lost)
}

#[derive(Debug)]
struct Queued {
    task_id: String,
    job_id: String,
    resources: Resources,
    /// Order of queueing (FIFO among equals under every order).
    seq: i64,
    since: Instant,
}

/// What placement knows of an offer's agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub attributes: &'a HashMap<String, String>,
    /// Wasm modules (sha256) it has compiled.
    pub cached: &'a HashSet<String>,
    pub total: Resources,
}

/// Jobs, their instances, and the queue of pending tasks.
#[derive(Debug, Default)]
pub struct JobScheduler {
    policy: Policy,
    next_seq: i64,
    jobs: HashMap<String, Job>,
    pending: VecDeque<Queued>,
    /// task id -> (job id, instance).
    tasks: HashMap<String, (String, u32)>,
    retries: BTreeSet<(Instant, String, u32)>,
    /// Component-wise minimum of the resources of every task queued since the queue was last empty.
    floor: Resources,
}

/// The task of one instance of a job: the template with SKIFF_* env and `{instance}` in args.
pub fn instance_spec(job: &pb::JobSpec, instance: u32) -> pb::TaskSpec {
    let mut spec = job.task.clone().unwrap_or_default();
    let index = instance.to_string();
    for arg in &mut spec.args {
        *arg = arg.replace("{instance}", &index);
    }
    spec.env.insert("SKIFF_JOB_ID".into(), job.job_id.clone());
    spec.env.insert("SKIFF_INSTANCE".into(), index);
    spec.env.insert("SKIFF_INSTANCES".into(), job.instances.to_string());
    if spec.name.is_empty() {
        spec.name = job.name.clone();
    }
    if job.instances > 1 {
        spec.name = format!("{}[{instance}]", spec.name);
    }
    spec
}

/// Backoff before attempt `attempt` (1 = the first retry): doubles from `backoff_ms`, capped.
pub fn backoff(retry: &pb::RetryPolicy, attempt: u32) -> Duration {
    let cap = if retry.max_backoff_ms == 0 { 60_000 } else { retry.max_backoff_ms };
    let doubled = retry.backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    Duration::from_millis(doubled.min(cap.max(retry.backoff_ms)))
}

impl JobScheduler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_policy(policy: Policy) -> Self {
        Self { policy, ..Self::default() }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Adds a job (submitted, or recovered from the registry).
    pub fn add_job(&mut self, spec: pb::JobSpec, submitted_ms: u64, killed: bool) {
        let instances = vec![Instance::default(); spec.instances as usize];
        let job = Job { spec, submitted_ms, killed, instances, durations: Vec::new(), task_ids: Vec::new() };
        self.jobs.insert(job.spec.job_id.clone(), job);
    }

    /// Whether a job was killed (nothing of it may run).
    pub fn is_killed(&self, job_id: &str) -> bool {
        self.jobs.get(job_id).is_some_and(|j| j.killed)
    }

    /// Whether every instance of a job is done (finished, or failed for good).
    pub fn is_done(&self, job_id: &str) -> bool {
        self.jobs.get(job_id).is_some_and(|j| j.state() != JobState::Running)
    }

    pub fn spec(&self, job_id: &str) -> Option<&pb::JobSpec> {
        self.jobs.get(job_id).map(|j| &j.spec)
    }

    /// Records a task of an instance (a new attempt, or one recovered from the registry with its
    /// state); a PENDING one is queued for placement.
    pub fn add_task(
        &mut self,
        task_id: &str,
        job_id: &str,
        instance: u32,
        attempt: u32,
        state: TaskState,
        resources: Resources,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else { return };
        let Some(slot) = job.instances.get_mut(instance as usize) else { return };
        if attempt + 1 >= slot.attempts {
            slot.attempts = attempt + 1;
            slot.task_id = Some(task_id.to_owned());
            slot.state = state;
            slot.retry_at = None;
        }
        if self.tasks.insert(task_id.to_owned(), (job_id.to_owned(), instance)).is_none() {
            job.task_ids.push(task_id.to_owned());
        }
        if state == TaskState::Pending && !job.killed {
            self.queue(
                Queued {
                    task_id: task_id.to_owned(),
                    job_id: job_id.to_owned(),
                    resources,
                    seq: 0,
                    since: Instant::now(),
                },
                false,
            );
        }
    }

    /// Instances of `job_id` that have no task yet (a takeover after a partly written submit).
    pub fn missing_instances(&self, job_id: &str) -> Vec<u32> {
        let Some(job) = self.jobs.get(job_id) else { return Vec::new() };
        if job.killed {
            return Vec::new();
        }
        (0..job.spec.instances).filter(|i| job.instances[*i as usize].task_id.is_none()).collect()
    }

    /// Instances whose latest attempt ended unsuccessfully and may be retried: schedules them
    /// (used after a takeover, when retries in flight were not persisted).
    pub fn schedule_retries(&mut self, now: Instant, now_ms: u64) {
        let ids: Vec<(String, u32)> = self
            .jobs
            .iter()
            .flat_map(|(id, job)| {
                job.instances.iter().enumerate().filter_map(move |(i, inst)| {
                    let retry = retriable(inst.state) && inst.retry_at.is_none() && job.may_retry(inst);
                    retry.then(|| (id.clone(), i as u32))
                })
            })
            .collect();
        for (job_id, instance) in ids {
            self.schedule_retry(&job_id, instance, now, now_ms);
        }
    }

    /// Schedules (again) a retry of an instance after its backoff (also when starting it failed).
    pub fn schedule_retry(&mut self, job_id: &str, instance: u32, now: Instant, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(job_id) else { return };
        let retry = job.spec.retry.unwrap_or_default();
        let Some(slot) = job.instances.get_mut(instance as usize) else { return };
        let wait = backoff(&retry, slot.attempts);
        slot.retry_at = Some((now + wait, now_ms.saturating_add(wait.as_millis() as u64)));
        self.retries.insert((now + wait, job_id.to_owned(), instance));
    }

    /// A task's new state (`wall_us`: its run time when it ended, 0 if unknown). A failed or lost
    /// attempt with attempts left is scheduled for a retry.
    pub fn on_status(&mut self, task_id: &str, state: TaskState, wall_us: u64, now: Instant, now_ms: u64) {
        let Some((job_id, instance)) = self.tasks.get(task_id).cloned() else { return };
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(slot) = job.instances.get_mut(instance as usize) else { return };
        if slot.task_id.as_deref() != Some(task_id) {
            return;
        }
        slot.state = state;
        if state == TaskState::Running {
            slot.running_since = Some(now);
        }
        if state == TaskState::Finished && wall_us > 0 {
            job.durations.push(wall_us / 1000);
        }
        if task::is_terminal(state) {
            slot.running_since = None;
            self.tasks.remove(task_id);
            let slot = &job.instances[instance as usize];
            if retriable(state) && job.may_retry(slot) {
                self.schedule_retry(&job_id, instance, now, now_ms);
            }
        }
    }

    /// When the next retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first().map(|(at, _, _)| *at)
    }

    /// Retries whose backoff is over, to start as new attempts.
    pub fn due_retries(&mut self, now: Instant) -> Vec<Attempt> {
        let mut due = Vec::new();
        while let Some((at, job_id, instance)) = self.retries.first().cloned()
            && at <= now
        {
            self.retries.pop_first();
            let Some(job) = self.jobs.get_mut(&job_id) else { continue };
            let Some(slot) = job.instances.get_mut(instance as usize) else { continue };
            if job.killed || slot.retry_at.map(|r| r.0) != Some(at) {
                continue;
            }
            slot.retry_at = None;
            due.push(Attempt { job_id, instance, attempt: slot.attempts });
        }
        due
    }

    /// Kills a job: nothing more is started or retried. Returns its live tasks (pending ones are
    /// dequeued; the leader kills them all).
    pub fn kill(&mut self, job_id: &str) -> Option<Vec<String>> {
        let job = self.jobs.get_mut(job_id)?;
        job.killed = true;
        for slot in &mut job.instances {
            slot.retry_at = None;
        }
        self.retries.retain(|(_, j, _)| j != job_id);
        self.pending.retain(|q| q.job_id != job_id);
        let live =
            job.instances.iter().filter(|i| !task::is_terminal(i.state)).filter_map(|i| i.task_id.clone()).collect();
        Some(live)
    }

    /// Drops a queued task (killed before placement); true if it was queued.
    pub fn remove(&mut self, task_id: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|q| q.task_id != task_id);
        before != self.pending.len()
    }

    /// Puts a task back at the head of the queue (its launch was refused or could not be recorded).
    pub fn requeue_front(&mut self, task_id: &str, resources: Resources) {
        if let Some((job_id, _)) = self.tasks.get(task_id).cloned() {
            self.queue(Queued { task_id: task_id.to_owned(), job_id, resources, seq: 0, since: Instant::now() }, true);
        }
    }

    fn queue(&mut self, mut q: Queued, front: bool) {
        self.next_seq += 1;
        q.seq = if front { -self.next_seq } else { self.next_seq };
        self.floor = if self.pending.is_empty() { q.resources } else { self.floor.min(&q.resources) };
        if front {
            self.pending.push_front(q);
        } else {
            self.pending.push_back(q);
        }
    }

    /// Room for `tasks` more queued tasks (a takeover queues them all at once).
    pub fn reserve_queue(&mut self, tasks: usize) {
        self.pending.reserve(tasks);
    }

    /// Queues a recovered PENDING task of `job_id` (added with [`JobScheduler::add_task`]) at the
    /// back of the queue.
    pub fn queue_recovered(&mut self, task_id: String, job_id: String, resources: Resources) {
        if self.tasks.contains_key(&task_id) {
            self.queue(Queued { task_id, job_id, resources, seq: 0, since: Instant::now() }, false);
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Answers a batch of offers; `agent` tells what placement knows of each offer's agent.
    /// Placed tasks leave the queue.
    pub fn on_offers<'a>(&mut self, offers: &[Offer], agent: impl Fn(&str) -> Option<AgentView<'a>>) -> Vec<Decision> {
        self.sort_queue(Instant::now());
        let launches = match self.policy.placement {
            Placement::Greedy => self.first_fit(offers, &agent),
            Placement::Mcf => self.min_cost_flow(offers, &agent),
        };
        offers
            .iter()
            .zip(launches)
            .map(|(offer, launches)| {
                if launches.is_empty() {
                    Decision::Decline { offer_id: offer.id.clone() }
                } else {
                    Decision::Accept { offer_id: offer.id.clone(), launches }
                }
            })
            .collect()
    }

    /// Puts the queue in the policy's order (FIFO needs nothing: it is kept in order).
    fn sort_queue(&mut self, now: Instant) {
        let order = self.policy.order;
        if order == QueueOrder::Fifo || self.pending.len() < 2 {
            return;
        }
        // Only the jobs with queued tasks (finished jobs stay in `jobs`).
        let mut job_keys: HashMap<&str, (i32, Option<u64>, Option<u64>)> = HashMap::new();
        for q in &self.pending {
            if let Some((id, job)) = self.jobs.get_key_value(&q.job_id) {
                job_keys
                    .entry(id.as_str())
                    .or_insert_with(|| (job.spec.priority, job.expected_ms(), job.remaining_ms(now)));
            }
        }
        let aging = self.policy.aging;
        let key = |q: &Queued| {
            let (priority, expected, remaining) = job_keys.get(q.job_id.as_str()).copied().unwrap_or((0, None, None));
            let priority = policy::aged_priority(priority, now.saturating_duration_since(q.since), aging);
            (policy::job_key(order, priority, expected, remaining), q.seq)
        };
        self.pending.make_contiguous().sort_by_cached_key(key);
    }

    fn first_fit<'a>(&mut self, offers: &[Offer], agent: &impl Fn(&str) -> Option<AgentView<'a>>) -> Vec<Vec<String>> {
        let none = HashMap::new();
        offers
            .iter()
            .map(|offer| {
                let attrs = agent(&offer.agent_id).map_or(&none, |a| a.attributes);
                let mut left = offer.resources;
                let mut launches = Vec::new();
                let mut skipped = Vec::new();
                // Nothing fits once the offer cannot hold the smallest of every resource queued.
                while left.contains(&self.floor)
                    && let Some(q) = self.pending.pop_front()
                {
                    let allowed = self.jobs.get(&q.job_id).is_some_and(|j| constraint::eligible(&j.spec, attrs));
                    match left.checked_sub(&q.resources) {
                        Some(rest) if allowed => {
                            left = rest;
                            launches.push(q.task_id);
                        }
                        _ => skipped.push(q),
                    }
                }
                for q in skipped.into_iter().rev() {
                    self.pending.push_front(q);
                }
                launches
            })
            .collect()
    }

    /// One min-cost max-flow over the (sorted) queue, grouped by job, and the offers.
    fn min_cost_flow<'a>(
        &mut self,
        offers: &[Offer],
        agent: &impl Fn(&str) -> Option<AgentView<'a>>,
    ) -> Vec<Vec<String>> {
        let none_attrs = HashMap::new();
        let none_cached = HashSet::new();
        let mut class_of: HashMap<&str, usize> = HashMap::new();
        let mut classes: Vec<policy::Class> = Vec::new();
        let mut class_jobs: Vec<&str> = Vec::new();
        let mut members: Vec<VecDeque<usize>> = Vec::new();
        for (i, q) in self.pending.iter().enumerate() {
            let c = *class_of.entry(q.job_id.as_str()).or_insert_with(|| {
                classes.push(policy::Class {
                    resources: q.resources,
                    count: 0,
                    module: self.jobs.get(&q.job_id).and_then(Job::module),
                });
                class_jobs.push(q.job_id.as_str());
                members.push(VecDeque::new());
                classes.len() - 1
            });
            classes[c].count += 1;
            members[c].push_back(i);
        }
        let views: Vec<Option<AgentView<'a>>> = offers.iter().map(|o| agent(&o.agent_id)).collect();
        let slots: Vec<policy::Slot> = offers
            .iter()
            .zip(&views)
            .map(|(o, v)| policy::Slot {
                free: o.resources,
                total: v.map_or(o.resources, |v| v.total),
                cached: v.map_or(&none_cached, |v| v.cached).clone(),
            })
            .collect();
        let allowed = |c: usize, s: usize| {
            let attrs = views[s].map_or(&none_attrs, |v| v.attributes);
            self.jobs.get(class_jobs[c]).is_some_and(|j| constraint::eligible(&j.spec, attrs))
        };
        let placed = policy::place_mcf(&classes, &slots, allowed);
        // Apply, checking each offer's real fit (jobs of different shapes share an agent's room).
        let mut left: Vec<Resources> = offers.iter().map(|o| o.resources).collect();
        let mut launches: Vec<Vec<String>> = vec![Vec::new(); offers.len()];
        let mut taken = vec![false; self.pending.len()];
        for (c, s, n) in placed {
            for _ in 0..n {
                let Some(&i) = members[c].front() else { break };
                let Some(rest) = left[s].checked_sub(&self.pending[i].resources) else { break };
                members[c].pop_front();
                left[s] = rest;
                taken[i] = true;
                launches[s].push(self.pending[i].task_id.clone());
            }
        }
        let mut i = 0;
        self.pending.retain(|_| {
            i += 1;
            !taken[i - 1]
        });
        launches
    }

    /// A job's status; `status_of` gives the latest status of a task.
    pub fn status<'a>(
        &self,
        job_id: &str,
        status_of: impl Fn(&str) -> Option<&'a pb::TaskStatus>,
    ) -> Option<pb::JobStatus> {
        let job = self.jobs.get(job_id)?;
        let instances = job
            .instances
            .iter()
            .enumerate()
            .map(|(index, i)| pb::JobInstance {
                index: index as u32,
                attempts: i.attempts,
                task_id: i.task_id.clone().unwrap_or_default(),
                status: i.task_id.as_deref().and_then(&status_of).cloned(),
                retry_at_ms: i.retry_at.map_or(0, |r| r.1),
            })
            .collect();
        Some(pb::JobStatus {
            spec: Some(job.spec.clone()),
            state: job.state() as i32,
            instances,
            submitted_ms: job.submitted_ms,
            scheduler: self.policy.to_string(),
        })
    }

    /// Every task (of every attempt) of a job.
    pub fn task_ids(&self, job_id: &str) -> &[String] {
        self.jobs.get(job_id).map_or(&[], |j| &j.task_ids)
    }

    /// The state of a job (`None`: not known).
    pub fn state(&self, job_id: &str) -> Option<JobState> {
        self.jobs.get(job_id).map(Job::state)
    }

    /// Forgets a done job and its tasks (garbage collection); answers its task ids.
    pub fn remove_job(&mut self, job_id: &str) -> Vec<String> {
        let Some(job) = self.jobs.remove(job_id) else { return Vec::new() };
        for task_id in &job.task_ids {
            self.tasks.remove(task_id);
        }
        self.pending.retain(|q| q.job_id != job_id);
        self.retries.retain(|(_, id, _)| id != job_id);
        job.task_ids
    }

    /// Jobs of `submitter` that are not done.
    pub fn live_jobs_of(&self, submitter: &str) -> usize {
        self.jobs.values().filter(|j| j.spec.submitted_by == submitter && j.state() == JobState::Running).count()
    }

    /// Jobs that are not done.
    pub fn live_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.state() == JobState::Running).count()
    }

    /// Every job id, oldest first.
    pub fn job_ids(&self) -> Vec<String> {
        let mut ids: Vec<(u64, &String)> = self.jobs.iter().map(|(id, j)| (j.submitted_ms, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }
}

#[cfg(test)]
mod tests;
