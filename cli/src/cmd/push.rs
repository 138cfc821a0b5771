//! `skiff push FILE.wasm`: store a module in the fleet's artifact store ahead of running it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::artifact;
use crate::client;
use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    pub coordinators: Vec<String>,
    /// The Wasm module to store.
    pub file: PathBuf,
}

pub async fn run(args: PushArgs) -> Result<ExitCode, CliError> {
    let module = super::run::read_module(&args.file)?;
    let leader = client::leader_channel(&args.coordinators).await?;
    let stored = artifact::ensure_stored(leader, &module).await?;
    let what = if stored.uploaded { "uploaded" } else { "already stored" };
    eprintln!("[skiff] module {what} ({} bytes, on {} coordinator replicas)", module.len(), stored.replicas);
    println!("{}", stored.sha256);
    Ok(ExitCode::SUCCESS)
}
