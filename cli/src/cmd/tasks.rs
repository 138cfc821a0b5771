//! `skiff tasks` (filters: state, job, agent; newest first) and `skiff task status ID` (spec,
//! placement, state history with times and reasons, usage).

use std::process::ExitCode;

use futures::StreamExt;
use serde_json::{Value, json};
use skiff_proto as pb;
use skiff_proto::TaskState;

use crate::client;
use crate::cmd::run::{reason_name, state_name};
use crate::cmd::status::ViewArgs;
use crate::exit::CliError;
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Only tasks in these states (pending, staging, running, finished, failed, killed, lost, unreachable).
    #[arg(long, value_delimiter = ',', value_parser = parse_state)]
    pub state: Vec<TaskState>,
    /// Only the tasks of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only tasks placed on this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// At most this many (newest first; at most 10,000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// A task's spec, placement, state history and usage.
    Status { task_id: String },
}

fn parse_state(text: &str) -> Result<TaskState, String> {
    let name = format!("TASK_STATE_{}", text.trim().to_ascii_uppercase());
    match TaskState::from_str_name(&name) {
        Some(TaskState::Unspecified) | None => Err(format!(
            "{text:?} is not a task state (pending, staging, running, finished, failed, killed, lost, unreachable)"
        )),
        Some(state) => Ok(state),
    }
}

/// `skiff tasks`.
pub async fn list(args: TasksArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.view.coordinators).await?;
    let request = pb::ListTasksRequest {
        states: args.state.iter().map(|s| *s as i32).collect(),
        job_id: args.job.unwrap_or_default(),
        agent_id: args.agent.unwrap_or_default(),
        limit: args.limit,
    };
    let answer = client.list_tasks(request).await.map_err(|s| CliError::from_status(&s))?.into_inner();
    match args.view.output {
        Format::Json => output::print_json(&json!({
            "tasks": answer.tasks.iter().map(summary_json).collect::<Vec<_>>(),
            "more": answer.more,
        })),
        Format::Table => {
            let mut table = output::table(&["ID", "NAME", "JOB", "STATE", "REASON", "AGENT", "SUBMITTED"]);
            for t in &answer.tasks {
                let status = t.status.clone().unwrap_or_default();
                let reason = match status.reason() {
                    pb::Reason::Unspecified => String::new(),
                    r => reason_name(r).to_lowercase(),
                };
                table.add_row(vec![
                    comfy_table::Cell::new(&t.task_id),
                    comfy_table::Cell::new(&t.name),
                    comfy_table::Cell::new(&t.job_id),
                    output::state_cell(status.state()),
                    comfy_table::Cell::new(reason),
                    comfy_table::Cell::new(&status.agent_id),
                    comfy_table::Cell::new(output::time(t.submitted_ms)),
                ]);
            }
            println!("{table}");
            if answer.more > 0 {
                eprintln!("[skiff] {} more match; raise --limit or filter by --state, --job or --agent", answer.more);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary_json(t: &pb::TaskSummary) -> Value {
    json!({
        "task_id": t.task_id,
        "name": t.name,
        "job_id": t.job_id,
        "framework_id": t.framework_id,
        "submitted_ms": t.submitted_ms,
        "resources": output::resources_json(&t.resources.unwrap_or_default()),
        "status": output::status_json(&t.status.clone().unwrap_or_default()),
    })
}

/// `skiff task status ID`.
pub async fn run(args: TaskArgs) -> Result<ExitCode, CliError> {
    let TaskCommand::Status { task_id } = args.command;
    let mut client = client::connect_leader(&args.view.coordinators).await?;
    let task = client
        .get_task(pb::GetTaskRequest { task_id: task_id.clone() })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    let mut events = client
        .watch_task(pb::WatchTaskRequest { task_id: task_id.clone(), history_only: true, from_event: 0 })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    let mut history = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|s| CliError::from_status(&s))?;
        if let Some(pb::task_event::Event::Status(status)) = event.event {
            history.push(status);
        }
    }
    let spec = task.spec.unwrap_or_default();
    let status = task.status.unwrap_or_default();
    match args.view.output {
        Format::Json => output::print_json(&json!({
            "task_id": task_id,
            "spec": spec_json(&spec),
            "status": output::status_json(&status),
            "history": history.iter().map(output::status_json).collect::<Vec<_>>(),
        })),
        Format::Table => print!("{}", render(&task_id, &spec, &status, &history)),
    }
    Ok(ExitCode::SUCCESS)
}

fn kind(spec: &pb::TaskSpec) -> (&'static str, String) {
    match &spec.kind {
        Some(pb::task_spec::Kind::Wasm(w)) => ("wasm", w.module_sha256.clone()),
        Some(pb::task_spec::Kind::Native(n)) => ("native", n.command.clone()),
        None => ("", String::new()),
    }
}

fn spec_json(spec: &pb::TaskSpec) -> Value {
    let (kind, what) = kind(spec);
    let (module_sha256, command) = if kind == "wasm" { (what, String::new()) } else { (String::new(), what) };
    json!({
        "name": spec.name,
        "kind": kind,
        "module_sha256": module_sha256,
        "command": command,
        "args": spec.args,
        "env_keys": spec.env.keys().collect::<Vec<_>>(),
        "resources": output::resources_json(&spec.resources.unwrap_or_default()),
    })
}

fn render(task_id: &str, spec: &pb::TaskSpec, status: &pb::TaskStatus, history: &[pb::TaskStatus]) -> String {
    let (kind, what) = kind(spec);
    let r = spec.resources.unwrap_or_default();
    let usage = status.usage.clone().unwrap_or_default();
    let mut out = format!("Task:      {task_id} ({})\n", spec.name);
    out.push_str(&format!("Kind:      {kind} {what}\n"));
    if !spec.args.is_empty() {
        out.push_str(&format!("Args:      {}\n", spec.args.join(" ")));
    }
    out.push_str(&format!(
        "Resources: cpu {}  mem {}  disk {}  slots {}\n",
        r.cpus,
        output::bytes(r.mem_bytes),
        output::bytes(r.disk_bytes),
        r.wasm_slots
    ));
    out.push_str(&format!("State:     {}", state_name(status.state())));
    if let Some(code) = status.exit_code {
        out.push_str(&format!(" (exit {code})"));
    }
    out.push_str(&format!("\nAgent:     {}\n", if status.agent_id.is_empty() { "-" } else { &status.agent_id }));
    out.push_str(&format!(
        "Usage:     cpu {:.3}s  wall {:.3}s  peak mem {}  fuel {}{}\n",
        usage.cpu_time_us as f64 / 1e6,
        usage.wall_time_us as f64 / 1e6,
        output::bytes(usage.peak_memory_bytes),
        usage.fuel_consumed,
        if usage.module_cache.is_empty() { String::new() } else { format!("  module {}", usage.module_cache) }
    ));
    out.push_str("History:\n");
    let mut table = output::table(&["TIME", "STATE", "REASON", "MESSAGE"]);
    for s in history {
        let reason = match s.reason() {
            pb::Reason::Unspecified => String::new(),
            r => reason_name(r).to_lowercase(),
        };
        table.add_row(vec![
            comfy_table::Cell::new(output::time(s.timestamp_ms)),
            output::state_cell(s.state()),
            comfy_table::Cell::new(reason),
            comfy_table::Cell::new(s.message.trim()),
        ]);
    }
    out.push_str(&format!("{table}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_as_the_tables_print_them() {
        assert_eq!(parse_state("running"), Ok(TaskState::Running));
        assert_eq!(parse_state("FINISHED"), Ok(TaskState::Finished));
        assert!(parse_state("unspecified").unwrap_err().contains("not a task state"));
        assert!(parse_state("done").unwrap_err().contains("not a task state"));
    }
}
