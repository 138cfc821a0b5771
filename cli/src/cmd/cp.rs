//! `skiff cp TASK_ID:PATH LOCAL`: fetch an output file a task left (collected with `--output`).

use std::path::PathBuf;
use std::process::ExitCode;

use skiff_proto as pb;

use crate::exit::CliError;
use crate::{artifact, client};

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    pub coordinators: Vec<String>,
    /// TASK_ID:SANDBOX_PATH of an output the task was run with (`skiff run --output PATH`).
    pub source: String,
    /// Where to write it (`-`: standard output).
    pub dest: PathBuf,
}

pub async fn run(args: CpArgs) -> Result<ExitCode, CliError> {
    let (task_id, path) = args
        .source
        .split_once(':')
        .ok_or_else(|| CliError::BadInput(format!("{}: expected TASK_ID:SANDBOX_PATH", args.source)))?;
    let leader = client::leader_channel(&args.coordinators).await?;
    let task = client::operator(leader.clone())
        .get_task(pb::GetTaskRequest { task_id: task_id.to_owned() })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    let outputs = task.status.map(|s| s.outputs).unwrap_or_default();
    let Some(output) = outputs.iter().find(|o| o.path == path) else {
        let known: Vec<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
        return Err(CliError::BadInput(format!(
            "task {task_id} has no output {path} (collected: {}; outputs are named with skiff run --output, and known once the task ended)",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        )));
    };
    if output.sha256.is_empty() {
        return Err(CliError::BadInput(format!("task {task_id} left no output at {path}: {}", output.error)));
    }
    let bytes = artifact::download(leader, &output.sha256).await?;
    if args.dest.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&bytes).map_err(|e| CliError::Unavailable(e.to_string()))?;
    } else {
        std::fs::write(&args.dest, &bytes)
            .map_err(|e| CliError::BadInput(format!("cannot write {}: {e}", args.dest.display())))?;
    }
    Ok(ExitCode::SUCCESS)
}
