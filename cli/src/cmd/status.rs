//! `skiff status`: the fleet at a glance (leader, replicas, agents, capacity, tasks by state).

use std::process::ExitCode;

use serde_json::json;
use skiff_proto as pb;

use crate::client;
use crate::cmd::run::state_name;
use crate::exit::CliError;
use crate::output::{self, Format};

/// Where to reach the fleet and how to print; shared by the commands that print state.
#[derive(Debug, Clone, clap::Args)]
pub struct ViewArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070", global = true)]
    pub coordinators: Vec<String>,
    /// `table` for people, `json` (stable field names) for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
}

pub async fn run(args: ViewArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.coordinators).await?;
    let status = client
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    match args.output {
        Format::Json => output::print_json(&to_json(&status)),
        Format::Table => print!("{}", render(&status)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn to_json(s: &pb::ClusterStatus) -> serde_json::Value {
    let tasks: serde_json::Map<String, serde_json::Value> =
        s.tasks.iter().map(|c| (state_name(c.state()).to_lowercase(), json!(c.tasks))).collect();
    json!({
        "leader": s.leader_address,
        "epoch": s.epoch,
        "replicas": s.replicas.iter().map(|r| json!({ "address": r.address, "leader": r.leader })).collect::<Vec<_>>(),
        "agents": {
            "connected": s.agents_connected,
            "unreachable": s.agents_unreachable,
            "disconnected": s.agents_disconnected,
            "draining": s.agents_draining,
        },
        "capacity": {
            "total": output::resources_json(&s.capacity_total.unwrap_or_default()),
            "used": output::resources_json(&s.capacity_used.unwrap_or_default()),
        },
        "tasks": tasks,
        "finished_tasks_kept": s.finished_tasks_kept,
        "jobs_live": s.jobs_live,
        "job_queue": { "depth": s.job_queue_depth, "policy": s.job_policy },
        "frameworks_connected": s.frameworks_connected,
        "offers_outstanding": s.offers_outstanding,
        "watchers": s.watchers,
        "quarantined_records": s.quarantined_records,
    })
}

fn render(s: &pb::ClusterStatus) -> String {
    let replicas: Vec<String> = s
        .replicas
        .iter()
        .map(|r| if r.leader { format!("{} (leader)", r.address) } else { r.address.clone() })
        .collect();
    let tasks: Vec<String> =
        s.tasks.iter().map(|c| format!("{} {}", c.tasks, state_name(c.state()).to_lowercase())).collect();
    let (total, used) = (s.capacity_total.unwrap_or_default(), s.capacity_used.unwrap_or_default());
    let mut out = String::new();
    out.push_str(&format!("Leader:     {} (epoch {})\n", s.leader_address, s.epoch));
    out.push_str(&format!("Replicas:   {}\n", if replicas.is_empty() { "-".into() } else { replicas.join(", ") }));
    out.push_str(&format!(
        "Agents:     {} connected, {} unreachable, {} disconnected, {} draining\n",
        s.agents_connected, s.agents_unreachable, s.agents_disconnected, s.agents_draining
    ));
    out.push_str(&format!("Capacity:   {} (used/total)\n", output::capacity(&used, &total)));
    out.push_str(&format!("Tasks:      {}\n", if tasks.is_empty() { "none".into() } else { tasks.join(", ") }));
    out.push_str(&format!("Finished:   {} kept until collected\n", s.finished_tasks_kept));
    out.push_str(&format!("Jobs:       {} live, {} tasks queued ({})\n", s.jobs_live, s.job_queue_depth, s.job_policy));
    out.push_str(&format!(
        "Frameworks: {} connected; {} offers outstanding; {} watchers\n",
        s.frameworks_connected, s.offers_outstanding, s.watchers
    ));
    if s.quarantined_records > 0 {
        out.push_str(&format!("Warning:    {} registry records quarantined at takeover\n", s.quarantined_records));
    }
    out
}
