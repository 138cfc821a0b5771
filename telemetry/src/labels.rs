//! Labels the coordinator's and the agent's metrics share, so that a task's state or a resource
//! reads the same in both: lower case, without the protobuf prefix (`running`, `memory_limit`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use skiff_proto as pb;

/// A gauge of a float (CPUs, bytes as counted by resources).
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub state: String,
    pub reason: String,
}

impl TransitionLabels {
    pub fn of(state: pb::TaskState, reason: pb::Reason) -> Self {
        Self { state: state_name(state), reason: reason_name(reason) }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

/// A task state as a label value (`running`, `finished`, ...).
pub fn state_name(state: pb::TaskState) -> String {
    let name = state.as_str_name();
    name.strip_prefix("TASK_STATE_").unwrap_or(name).to_ascii_lowercase()
}

/// A reason as a label value (`oom`, `memory_limit`, ...; `none` when unspecified).
pub fn reason_name(reason: pb::Reason) -> String {
    match reason {
        pb::Reason::Unspecified => "none".into(),
        r => r.as_str_name().strip_prefix("REASON_").unwrap_or(r.as_str_name()).to_ascii_lowercase(),
    }
}

/// Sets one series per resource (cpus, mem_bytes, disk_bytes, wasm_slots).
pub fn set_resources(family: &Family<ResourceLabel, FloatGauge>, r: &pb::Resources) {
    for (resource, value) in [
        ("cpus", r.cpus),
        ("mem_bytes", r.mem_bytes as f64),
        ("disk_bytes", r.disk_bytes as f64),
        ("wasm_slots", r.wasm_slots.into()),
    ] {
        family.get_or_create(&ResourceLabel { resource }).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_like_mesos_and_nomad() {
        assert_eq!(state_name(pb::TaskState::Running), "running");
        assert_eq!(reason_name(pb::Reason::MemoryLimit), "memory_limit");
        assert_eq!(reason_name(pb::Reason::Unspecified), "none");
    }
}
