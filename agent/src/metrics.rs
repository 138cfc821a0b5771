//! The agent's metrics (Prometheus), served by `--metrics-listen`: what the host offers, the tasks
//! it holds by state and how they ended, where Wasm modules came from (the compiled-module cache),
//! the status updates waiting for a coordinator's acknowledgement, and (opt-in with
//! `--metrics-per-task`, as it is one series per task) each running task's CPU and memory.
//!
//! The agent's loop owns its state, so it sets these as things happen (see `Agent::run`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use skiff_proto as pb;
use skiff_telemetry::labels::{FloatGauge, ResourceLabel, StateLabel, TransitionLabels, set_resources, state_name};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task_id: String,
}

/// Every metric of an agent (cheap to clone: the values are shared).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connected: Gauge,
    pub capacity: Family<ResourceLabel, FloatGauge>,
    pub tasks: Family<StateLabel, Gauge>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub module_sources: Family<SourceLabel, Counter>,
    pub unacknowledged: Gauge,
    pub event_backlog: Gauge,
    /// Opt-in (`--metrics-per-task`): one series per running task.
    pub per_task: bool,
    pub task_cpu: Family<TaskLabel, FloatGauge>,
    pub task_memory: Family<TaskLabel, Gauge>,
}

impl Metrics {
    pub fn new(per_task: bool) -> Self {
        Self { per_task, ..Self::default() }
    }

    /// Registers every family under `skiff_agent_`.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("skiff_agent");
        r.register("connected", "1 while a session with the leading coordinator is registered", self.connected.clone());
        r.register(
            "capacity",
            "What this host offers (cpus, mem_bytes, disk_bytes, wasm_slots)",
            self.capacity.clone(),
        );
        r.register(
            "tasks",
            "Tasks held, by latest state (running ones, and ended ones not yet acknowledged)",
            self.tasks.clone(),
        );
        r.register("task_transitions", "Task statuses reported, by state and reason", self.transitions.clone());
        r.register(
            "module_source",
            "Where ended Wasm tasks' compiled modules came from: memory or disk (cache hits), compiled or fetched (misses)",
            self.module_sources.clone(),
        );
        r.register(
            "updates_unacknowledged",
            "Status updates on disk waiting for a coordinator's acknowledgement",
            self.unacknowledged.clone(),
        );
        r.register(
            "event_backlog",
            "Task events from the executor not yet sent to the coordinator",
            self.event_backlog.clone(),
        );
        if self.per_task {
            r.register_with_unit(
                "task_cpu",
                "CPU time of each running task (opt-in)",
                Unit::Seconds,
                self.task_cpu.clone(),
            );
            r.register_with_unit(
                "task_memory",
                "Memory of each running task (peak for Wasm, current for native; opt-in)",
                Unit::Bytes,
                self.task_memory.clone(),
            );
        }
        registry
    }

    pub fn set_capacity(&self, r: &pb::Resources) {
        set_resources(&self.capacity, r);
    }

    /// Counts a status the agent reports; a terminal one says where its module came from and ends
    /// the task's own series.
    pub fn status(&self, status: &pb::TaskStatus, terminal: bool) {
        self.transitions.get_or_create(&TransitionLabels::of(status.state(), status.reason())).inc();
        if terminal {
            if let Some(source) = status.usage.as_ref().map(|u| u.module_cache.as_str()).filter(|s| !s.is_empty()) {
                self.module_sources.get_or_create(&SourceLabel { source: source.to_owned() }).inc();
            }
            if self.per_task {
                let task = TaskLabel { task_id: status.task_id.clone() };
                self.task_cpu.remove(&task);
                self.task_memory.remove(&task);
            }
        }
    }

    /// A running task's usage (only with `--metrics-per-task`).
    pub fn usage(&self, usage: &pb::TaskUsage) {
        if !self.per_task {
            return;
        }
        let Some(u) = &usage.usage else { return };
        let task = TaskLabel { task_id: usage.task_id.clone() };
        self.task_cpu.get_or_create(&task).set(u.cpu_time_us as f64 / 1e6);
        let memory = if u.memory_current_bytes > 0 { u.memory_current_bytes } else { u.peak_memory_bytes };
        self.task_memory.get_or_create(&task).set(memory as i64);
    }

    /// Tasks held by state, from the agent's table.
    pub fn tasks<'a>(&self, statuses: impl Iterator<Item = &'a pb::TaskStatus>) {
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for s in statuses {
            *counts.entry(state_name(s.state())).or_default() += 1;
        }
        self.tasks.clear();
        for (state, n) in counts {
            self.tasks.get_or_create(&StateLabel { state }).set(n);
        }
    }
}
