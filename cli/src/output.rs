//! How commands that print state print it: a table sized to the terminal (colour only on a TTY),
//! or JSON (`-o json`: states and reasons in lower case, as in the metrics' labels) whose field names are part of the CLI's interface — they are written here by
//! hand, not derived from the protobuf types, so that the wire format can change without breaking
//! scripts.

use std::io::IsTerminal;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use serde_json::{Value, json};
use skiff_proto as pb;
use skiff_proto::TaskState;

use crate::cmd::run::{reason_name, state_name};

/// `-o`: what a command prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// One JSON document (stable field names) for scripts.
    Json,
}

/// Prints a JSON document on stdout.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("a JSON value serialises"));
}

/// A borderless table (as kubectl's), as wide as the terminal allows.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    if !std::io::stdout().is_terminal() {
        // Piped: no colour and no terminal width to fit.
        table.force_no_tty();
    }
    table
}

/// A state, coloured on a terminal by how it is doing.
pub fn state_cell(state: TaskState) -> Cell {
    let cell = Cell::new(state_name(state));
    match state {
        TaskState::Running => cell.fg(Color::Green),
        TaskState::Failed | TaskState::Lost => cell.fg(Color::Red),
        TaskState::Unreachable | TaskState::Killed => cell.fg(Color::Yellow),
        _ => cell,
    }
}

/// `2026-12-07T23:29:04Z` (empty for 0).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    skiff_core::limits::format_bytes(n)
}

/// `used/total` of each resource: `cpu 1.5/4  mem 1.0 GiB/8.0 GiB  slots 3/100`.
pub fn capacity(used: &pb::Resources, total: &pb::Resources) -> String {
    format!(
        "cpu {}/{}  mem {}/{}  disk {}/{}  slots {}/{}",
        used.cpus,
        total.cpus,
        bytes(used.mem_bytes),
        bytes(total.mem_bytes),
        bytes(used.disk_bytes),
        bytes(total.disk_bytes),
        used.wasm_slots,
        total.wasm_slots
    )
}

pub fn resources_json(r: &pb::Resources) -> Value {
    json!({ "cpus": r.cpus, "mem_bytes": r.mem_bytes, "disk_bytes": r.disk_bytes, "wasm_slots": r.wasm_slots })
}

pub fn status_json(s: &pb::TaskStatus) -> Value {
    let usage = s.usage.clone().unwrap_or_default();
    json!({
        "state": state_name(s.state()).to_lowercase(),
        "reason": match s.reason() {
            pb::Reason::Unspecified => String::new(),
            r => reason_name(r).to_lowercase(),
        },
        "message": s.message,
        "exit_code": s.exit_code,
        "agent_id": s.agent_id,
        "timestamp_ms": s.timestamp_ms,
        "usage": {
            "cpu_time_us": usage.cpu_time_us,
            "wall_time_us": usage.wall_time_us,
            "peak_memory_bytes": usage.peak_memory_bytes,
            "fuel_consumed": usage.fuel_consumed,
            "module_cache": usage.module_cache,
        },
    })
}

pub fn agent_json(a: &pb::AgentInfo) -> Value {
    json!({
        "agent_id": a.agent_id,
        "hostname": a.hostname,
        "state": agent_state(a),
        "draining": a.draining,
        "drain_deadline_ms": a.drain_deadline_ms,
        "total": resources_json(&a.total.unwrap_or_default()),
        "used": resources_json(&a.used.unwrap_or_default()),
        "attributes": a.attributes,
        "running_tasks": a.running_tasks,
        "running_task_ids": a.running_task_ids,
        "cached_modules": a.cached_modules,
        "last_seen_ms_ago": a.last_seen_ms_ago,
    })
}

/// `connected`, `unreachable` or `disconnected`.
pub fn agent_state(a: &pb::AgentInfo) -> &'static str {
    match (a.connected, a.unreachable) {
        (true, _) => "connected",
        (false, true) => "unreachable",
        (false, false) => "disconnected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(time(0), "");
        assert_eq!(time(1_000), "1970-01-01T00:00:01Z");
    }
}
