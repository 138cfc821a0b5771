//! `skiff kill TASK_ID`.

use std::process::ExitCode;

use skiff_proto as pb;

use crate::client;
use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    pub coordinators: Vec<String>,
    /// The task to kill.
    pub task_id: String,
}

pub async fn run(args: KillArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.coordinators).await?;
    client
        .kill_task(pb::KillTaskRequest { task_id: args.task_id.clone() })
        .await
        .map_err(|s| CliError::from_status(&s))?;
    eprintln!("[skiff] kill sent to task {}", args.task_id);
    Ok(ExitCode::SUCCESS)
}
