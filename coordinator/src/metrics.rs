//! The coordinator's metrics (Prometheus), named in the spirit of Mesos' `master/*` and Nomad's
//! `nomad.nomad.*` so that existing dashboards translate.
//!
//! Two kinds: what happens is counted where it happens (task transitions, offers declined and
//! rescinded, registry transactions, allocation runs), with atomics the leader bumps as it goes;
//! what *is* (tasks by state, agents, queue depth) is read from the leader's [`pb::ClusterStatus`]
//! when Prometheus scrapes (see [`Metrics::refresh`]), so that gauges can never drift from the
//! state they describe. A follower reports `skiff_leader 0` and no leader gauges.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use skiff_proto as pb;
use skiff_telemetry::labels::{FloatGauge, set_resources};
pub use skiff_telemetry::labels::{ResourceLabel, StateLabel, TransitionLabels, reason_name, state_name};

/// What a registry transaction wrote (the namespace of its first key).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TxnKind {
    task,
    job,
    agent,
    framework,
    artifact,
    acl,
    collected,
    other,
}

impl TxnKind {
    /// The kind of a transaction whose first key (relative to the fleet's prefix) is `key`.
    pub fn of_key(key: &str) -> Self {
        match key.split('/').next().unwrap_or("") {
            "tasks" => TxnKind::task,
            "jobs" => TxnKind::job,
            "agents" => TxnKind::agent,
            "frameworks" => TxnKind::framework,
            "artifacts" => TxnKind::artifact,
            "acl" => TxnKind::acl,
            "collected" => TxnKind::collected,
            _ => TxnKind::other,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxnLabels {
    pub kind: TxnKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

/// Seconds, from 1 ms to about 65 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of a coordinator replica (cheap to clone: the values are shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub leader: Gauge,
    pub epoch: Gauge,
    pub lease_keepalive: Histogram,
    pub registry_txn: Family<TxnLabels, Histogram, fn() -> Histogram>,
    pub tasks: Family<StateLabel, Gauge>,
    pub task_transitions: Family<TransitionLabels, Counter>,
    pub submit_to_running: Histogram,
    pub agents: Family<StateLabel, Gauge>,
    pub capacity_total: Family<ResourceLabel, FloatGauge>,
    pub capacity_used: Family<ResourceLabel, FloatGauge>,
    pub offers_outstanding: Gauge,
    pub offers_made: Counter,
    pub offers_declined: Counter,
    pub offers_rescinded: Counter,
    pub allocation_run: Histogram,
    pub job_queue_depth: Family<PolicyLabel, Gauge>,
    pub jobs_live: Gauge,
    pub frameworks_connected: Gauge,
    pub watchers: Gauge,
    pub finished_tasks_kept: Gauge,
    pub artifact_bytes: Gauge,
    pub artifact_blobs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            leader: Gauge::default(),
            epoch: Gauge::default(),
            lease_keepalive: latency_buckets(),
            registry_txn: Family::new_with_constructor(latency_buckets),
            tasks: Family::default(),
            task_transitions: Family::default(),
            submit_to_running: latency_buckets(),
            agents: Family::default(),
            capacity_total: Family::default(),
            capacity_used: Family::default(),
            offers_outstanding: Gauge::default(),
            offers_made: Counter::default(),
            offers_declined: Counter::default(),
            offers_rescinded: Counter::default(),
            allocation_run: latency_buckets(),
            job_queue_depth: Family::default(),
            jobs_live: Gauge::default(),
            frameworks_connected: Gauge::default(),
            watchers: Gauge::default(),
            finished_tasks_kept: Gauge::default(),
            artifact_bytes: Gauge::default(),
            artifact_blobs: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every family under `skiff_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff");
        r.register("leader", "1 on the replica that leads, 0 on a follower", self.leader.clone());
        r.register(
            "leader_epoch",
            "Epoch of the leader this replica knows (its own when it leads)",
            self.epoch.clone(),
        );
        r.register_with_unit(
            "lease_keepalive",
            "Round trip of each keep-alive of the leader's etcd lease (a lag near the TTL means leadership is at risk)",
            Unit::Seconds,
            self.lease_keepalive.clone(),
        );
        r.register_with_unit(
            "registry_txn",
            "Registry transactions of the leader, by what they wrote",
            Unit::Seconds,
            self.registry_txn.clone(),
        );
        r.register(
            "tasks",
            "Tasks the leader holds, by state (every live one; recent finished ones)",
            self.tasks.clone(),
        );
        r.register(
            "task_transitions",
            "Task status changes the leader recorded, by new state and reason",
            self.task_transitions.clone(),
        );
        r.register_with_unit(
            "task_submit_to_running",
            "From a task's submission to its first RUNNING status",
            Unit::Seconds,
            self.submit_to_running.clone(),
        );
        r.register(
            "agents",
            "Agents the leader knows, by state (connected, unreachable, disconnected, draining)",
            self.agents.clone(),
        );
        r.register(
            "capacity_total",
            "Resources of connected agents (cpus, mem_bytes, disk_bytes, wasm_slots)",
            self.capacity_total.clone(),
        );
        r.register("capacity_used", "Resources reserved by tasks on connected agents", self.capacity_used.clone());
        r.register("offers_outstanding", "Offers made and not yet answered", self.offers_outstanding.clone());
        r.register("offers", "Offers made", self.offers_made.clone());
        r.register(
            "offers_declined",
            "Offers declined by frameworks (the built-in job scheduler included)",
            self.offers_declined.clone(),
        );
        r.register(
            "offers_rescinded",
            "Offers taken back (agent gone, framework gone, timeout)",
            self.offers_rescinded.clone(),
        );
        r.register_with_unit(
            "allocation_run",
            "One run of the allocator (weighted DRF) and the offers it makes",
            Unit::Seconds,
            self.allocation_run.clone(),
        );
        r.register(
            "job_queue_depth",
            "Tasks of the built-in job scheduler waiting for a placement, by queue policy",
            self.job_queue_depth.clone(),
        );
        r.register("jobs_live", "Jobs of the built-in scheduler not done yet", self.jobs_live.clone());
        r.register("frameworks_connected", "Frameworks subscribed and connected", self.frameworks_connected.clone());
        r.register("watchers", "Streams following a task (skiff logs -f, skiff run)", self.watchers.clone());
        r.register(
            "finished_tasks_kept",
            "Finished tasks kept in the registry until collected",
            self.finished_tasks_kept.clone(),
        );
        r.register_with_unit(
            "artifact_store",
            "Bytes of artifacts on this replica",
            Unit::Bytes,
            self.artifact_bytes.clone(),
        );
        r.register("artifact_store_blobs", "Artifacts (blobs) on this replica", self.artifact_blobs.clone());
    }

    /// Counts a recorded task status.
    pub fn transition(&self, state: pb::TaskState, reason: pb::Reason) {
        self.task_transitions.get_or_create(&TransitionLabels::of(state, reason)).inc();
    }

    pub fn registry_txn(&self, kind: TxnKind, took: Duration) {
        self.registry_txn.get_or_create(&TxnLabels { kind }).observe(took.as_secs_f64());
    }

    /// Sets the gauges that describe the leader's state, from its status (`None`: this replica does
    /// not lead, and reports none of them).
    pub fn refresh(&self, status: Option<&pb::ClusterStatus>) {
        self.tasks.clear();
        self.agents.clear();
        self.capacity_total.clear();
        self.capacity_used.clear();
        self.job_queue_depth.clear();
        let Some(status) = status else {
            self.leader.set(0);
            for gauge in [&self.offers_outstanding, &self.jobs_live, &self.frameworks_connected, &self.watchers] {
                gauge.set(0);
            }
            self.finished_tasks_kept.set(0);
            return;
        };
        self.leader.set(1);
        self.epoch.set(status.epoch as i64);
        for count in &status.tasks {
            self.tasks.get_or_create(&StateLabel { state: state_name(count.state()) }).set(count.tasks as i64);
        }
        for (state, n) in [
            ("connected", status.agents_connected),
            ("unreachable", status.agents_unreachable),
            ("disconnected", status.agents_disconnected),
            ("draining", status.agents_draining),
        ] {
            self.agents.get_or_create(&StateLabel { state: state.into() }).set(n.into());
        }
        set_resources(&self.capacity_total, &status.capacity_total.unwrap_or_default());
        set_resources(&self.capacity_used, &status.capacity_used.unwrap_or_default());
        self.job_queue_depth
            .get_or_create(&PolicyLabel { policy: status.job_policy.clone() })
            .set(status.job_queue_depth as i64);
        self.offers_outstanding.set(status.offers_outstanding as i64);
        self.jobs_live.set(status.jobs_live.into());
        self.frameworks_connected.set(status.frameworks_connected.into());
        self.watchers.set(status.watchers as i64);
        self.finished_tasks_kept.set(status.finished_tasks_kept as i64);
    }
}

/// A replica's metrics and the registry they are registered in, for `--metrics-listen`.
pub fn registry(metrics: &Metrics) -> Registry {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry(metrics)).unwrap();
        out
    }

    #[test]
    fn transactions_are_labelled_by_what_they_wrote() {
        assert_eq!(TxnKind::of_key("tasks/t-1"), TxnKind::task);
        assert_eq!(TxnKind::of_key("acl/tokens/x"), TxnKind::acl);
        assert_eq!(TxnKind::of_key("weird"), TxnKind::other);
    }

    #[test]
    fn a_follower_reports_no_leader_gauges() {
        let metrics = Metrics::default();
        let status = pb::ClusterStatus {
            epoch: 7,
            agents_connected: 2,
            tasks: vec![pb::TaskStateCount { state: pb::TaskState::Running as i32, tasks: 3 }],
            job_policy: "fifo/greedy".into(),
            job_queue_depth: 5,
            ..Default::default()
        };
        metrics.refresh(Some(&status));
        let text = scrape(&metrics);
        assert!(text.contains("skiff_leader 1\n"), "{text}");
        assert!(text.contains("skiff_tasks{state=\"running\"} 3\n"), "{text}");
        assert!(text.contains("skiff_agents{state=\"connected\"} 2\n"), "{text}");
        assert!(text.contains("skiff_job_queue_depth{policy=\"fifo/greedy\"} 5\n"), "{text}");
        metrics.refresh(None);
        let text = scrape(&metrics);
        assert!(text.contains("skiff_leader 0\n"), "{text}");
        assert!(!text.contains("skiff_tasks{"), "{text}");
        assert!(!text.contains("skiff_job_queue_depth{"), "{text}");
    }
}
