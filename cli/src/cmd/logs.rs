//! `skiff logs TASK_ID`: a task's stdout and stderr, as the coordinator kept them.

use std::io::Write;
use std::process::ExitCode;

use skiff_proto as pb;

use crate::client;
use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    pub coordinators: Vec<String>,
    /// Keep following the task's output until it ends.
    #[arg(long, short)]
    pub follow: bool,
    /// The task whose output to print.
    pub task_id: String,
}

pub async fn run(args: LogsArgs) -> Result<ExitCode, CliError> {
    let mut client = client::connect_leader(&args.coordinators).await?;
    let request =
        pb::WatchTaskRequest { task_id: args.task_id.clone(), history_only: !args.follow, ..Default::default() };
    let mut events = client.watch_task(request).await.map_err(|s| CliError::from_status(&s))?.into_inner();
    let mut truncated = false;
    let mut printed = crate::printed::Printed::default();
    while let Some(event) =
        events.message().await.map_err(|s| CliError::Unavailable(format!("lost the coordinator: {}", s.message())))?
    {
        if let Some(pb::task_event::Event::Output(out)) = event.event {
            truncated |= out.truncated;
            let data = printed.fresh(&out);
            if out.stream == pb::OutputStream::Stderr as i32 {
                let _ = std::io::stderr().write_all(data);
            } else {
                let _ = std::io::stdout().write_all(data);
            }
        }
    }
    if truncated {
        eprintln!("[skiff] output of task {} was truncated at the agent's bound", args.task_id);
    }
    Ok(ExitCode::SUCCESS)
}
