//! `skiff agents`, `skiff agent status ID`, `skiff agent drain ID`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use skiff_proto as pb;

use crate::client;
use crate::cmd::status::ViewArgs;
use crate::exit::CliError;
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// One agent: resources, attributes, running tasks, cached modules.
    Status { agent_id: String },
    /// Place nothing new on an agent; its running tasks finish, or are killed after --deadline.
    Drain {
        agent_id: String,
        /// Kill what still runs there after this long (e.g. 10m; default: let it finish).
        #[arg(long, value_parser = skiff_core::units::parse_duration)]
        deadline: Option<Duration>,
        /// Undo a drain: the agent is offered again.
        #[arg(long, conflicts_with = "deadline")]
        undo: bool,
    },
}

/// `skiff agents`.
pub async fn list(args: ViewArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.coordinators).await?;
    let agents =
        client.list_agents(pb::ListAgentsRequest {}).await.map_err(|s| CliError::from_status(&s))?.into_inner().agents;
    match args.output {
        Format::Json => output::print_json(&Value::Array(agents.iter().map(output::agent_json).collect())),
        Format::Table => {
            let mut table = output::table(&["ID", "HOSTNAME", "STATE", "TASKS", "CPU", "MEM", "SLOTS", "LAST SEEN"]);
            for a in &agents {
                let (used, total) = (a.used.unwrap_or_default(), a.total.unwrap_or_default());
                let state = if a.draining {
                    format!("{} (draining)", output::agent_state(a))
                } else {
                    output::agent_state(a).into()
                };
                table.add_row(vec![
                    a.agent_id.clone(),
                    a.hostname.clone(),
                    state,
                    a.running_tasks.to_string(),
                    format!("{}/{}", used.cpus, total.cpus),
                    format!("{}/{}", output::bytes(used.mem_bytes), output::bytes(total.mem_bytes)),
                    format!("{}/{}", used.wasm_slots, total.wasm_slots),
                    format!("{:.1}s ago", a.last_seen_ms_ago as f64 / 1000.0),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: AgentArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.view.coordinators).await?;
    let agent = match args.command {
        AgentCommand::Status { agent_id } => client
            .get_agent(pb::GetAgentRequest { agent_id })
            .await
            .map_err(|s| CliError::from_status(&s))?
            .into_inner(),
        AgentCommand::Drain { agent_id, deadline, undo } => {
            let deadline_ms = deadline.map_or(0, |d| d.as_millis().max(1) as u64);
            let request = pb::DrainAgentRequest { agent_id, deadline_ms, undo };
            let drained = client.drain_agent(request).await.map_err(|s| CliError::from_status(&s))?.into_inner();
            let agent = drained.agent.unwrap_or_default();
            if args.view.output == Format::Table {
                eprintln!(
                    "[skiff] agent {} {}",
                    agent.agent_id,
                    match (undo, agent.drain_deadline_ms) {
                        (true, _) => "is offered again".to_owned(),
                        (false, 0) => "is draining: nothing new is placed there; its tasks run to the end".to_owned(),
                        (false, ms) =>
                            format!("is draining: its tasks still running at {} are killed", output::time(ms)),
                    }
                );
            }
            agent
        }
    };
    match args.view.output {
        Format::Json => output::print_json(&output::agent_json(&agent)),
        Format::Table => print!("{}", render(&agent)),
    }
    Ok(ExitCode::SUCCESS)
}

fn render(a: &pb::AgentInfo) -> String {
    let (used, total) = (a.used.unwrap_or_default(), a.total.unwrap_or_default());
    let mut attributes: Vec<String> = a.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    attributes.sort();
    let mut out = format!("Agent:      {} ({})\n", a.agent_id, a.hostname);
    let drain = match (a.draining, a.drain_deadline_ms) {
        (false, _) => String::new(),
        (true, 0) => ", draining".into(),
        (true, ms) => format!(", draining (tasks killed at {})", output::time(ms)),
    };
    out.push_str(&format!("State:      {}{drain}; last heard {} ms ago\n", output::agent_state(a), a.last_seen_ms_ago));
    out.push_str(&format!("Resources:  {} (used/total)\n", output::capacity(&used, &total)));
    out.push_str(&format!("Attributes: {}\n", if attributes.is_empty() { "-".into() } else { attributes.join(", ") }));
    out.push_str(&format!("Tasks:      {} running\n", a.running_tasks));
    for id in &a.running_task_ids {
        out.push_str(&format!("  {id}\n"));
    }
    out.push_str(&format!("Modules:    {} compiled\n", a.cached_modules.len()));
    for m in &a.cached_modules {
        out.push_str(&format!("  {m}\n"));
    }
    out
}
