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
    client.kill_task(pb::KillTaskRequest { task_id: args.task_id.clone() }).await.map_err(|s| match s.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => CliError::BadInput(s.message().to_owned()),
        _ => CliError::Unavailable(s.message().to_owned()),
    })?;
    eprintln!("[skiff] kill sent to task {}", args.task_id);
    Ok(ExitCode::SUCCESS)
}
