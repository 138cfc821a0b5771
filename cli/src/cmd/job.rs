//! `skiff job run|status|list|kill`: jobs of the built-in job scheduler (see [`crate::jobfile`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skiff_proto as pb;
use skiff_proto::JobState;

use crate::client;
use crate::cmd::run::{reason_name, state_name};
use crate::exit::{self, CliError};
use crate::jobfile::{self, Program};

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070", global = true)]
    pub coordinators: Vec<String>,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit a job file and follow it until every instance is done (exit 0 if all finished).
    Run {
        /// The job file (TOML; see `skiff job run --help` and the README).
        file: PathBuf,
        /// Print the job id and return at once.
        #[arg(long, short)]
        detach: bool,
    },
    /// Show a job's instances and their tasks.
    Status { job_id: String },
    /// List every job.
    List,
    /// Kill a job's tasks; nothing more is started or retried.
    Kill { job_id: String },
}

pub async fn run(args: JobArgs) -> Result<ExitCode, CliError> {
    match args.command {
        JobCommand::Run { file, detach } => submit(&args.coordinators, &file, detach).await,
        JobCommand::Status { job_id } => {
            let job = get(&mut client::connect_leader(&args.coordinators).await?, &job_id).await?;
            print!("{}", render(&job));
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List => {
            let mut client = client::connect_leader(&args.coordinators).await?;
            let jobs = client.list_jobs(pb::ListJobsRequest {}).await.map_err(|s| CliError::from_status(&s))?;
            println!("{:<20} {:<20} {:>9} {:<8}", "JOB", "NAME", "INSTANCES", "STATE");
            for job in jobs.into_inner().jobs {
                let spec = job.spec.clone().unwrap_or_default();
                println!("{:<20} {:<20} {:>9} {:<8}", spec.job_id, spec.name, spec.instances, job_state(job.state()));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Kill { job_id } => {
            let mut client = client::connect_leader(&args.coordinators).await?;
            client
                .kill_job(pb::KillJobRequest { job_id: job_id.clone() })
                .await
                .map_err(|s| CliError::from_status(&s))?;
            eprintln!("[skiff] job {job_id} killed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn get(client: &mut client::Operator, job_id: &str) -> Result<pb::JobStatus, CliError> {
    let response = client.get_job(pb::GetJobRequest { job_id: job_id.to_owned() }).await;
    response
        .map_err(|s| CliError::from_status(&s))?
        .into_inner()
        .job
        .ok_or_else(|| CliError::Other("empty answer".into()))
}

async fn submit(coordinators: &[String], file: &std::path::Path, detach: bool) -> Result<ExitCode, CliError> {
    let job = jobfile::load(file)?;
    let mut spec = job.spec;
    let leader = client::leader_channel(coordinators).await?;
    if let Program::Wasm(path) = &job.program {
        let module = super::run::read_module(path)?;
        let stored = crate::artifact::ensure_stored(leader.clone(), &module).await?;
        let what = if stored.uploaded { "uploaded" } else { "already stored" };
        eprintln!("[skiff] module {} {what} ({} bytes)", &stored.sha256[..12], module.len());
        if let Some(task) = spec.task.as_mut() {
            task.kind = Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
                module: Vec::new(),
                module_sha256: stored.sha256,
                module_size: module.len() as u64,
            }));
        }
    }
    let mut client = client::operator(leader);
    let submitted = client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    let job_id = submitted.job_id;
    eprintln!("[skiff] job {job_id} submitted ({} instances)", submitted.task_ids.len());
    if detach {
        println!("{job_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = String::new();
    loop {
        let job = match get(&mut client, &job_id).await {
            Ok(job) => job,
            // A new leader may be taking over: find it and carry on.
            Err(CliError::Unavailable(_)) => {
                client = client::connect_leader(coordinators).await?;
                continue;
            }
            Err(err) => return Err(err),
        };
        let summary = progress(&job);
        if summary != last {
            eprintln!("[skiff] {summary}");
            last = summary;
        }
        if job.state() != JobState::Running {
            print!("{}", render(&job));
            return Ok(match job.state() {
                JobState::Finished => ExitCode::SUCCESS,
                JobState::Killed => ExitCode::from(exit::TASK_KILLED),
                _ => ExitCode::FAILURE,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn job_state(state: JobState) -> &'static str {
    state.as_str_name().trim_start_matches("JOB_STATE_")
}

/// `RUNNING: 3 running, 1 pending, 2 finished, 1 waiting to retry`.
fn progress(job: &pb::JobStatus) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in &job.instances {
        let state = if i.retry_at_ms > 0 {
            "waiting to retry"
        } else {
            i.status.as_ref().map_or("pending", |s| state_name(s.state()))
        };
        *counts.entry(state).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {}", s.to_lowercase())).collect();
    format!("{}: {}", job_state(job.state()), parts.join(", "))
}

/// The table of `skiff job status`.
pub fn render(job: &pb::JobStatus) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let mut out = format!(
        "job {} ({}): {}, {} instances, scheduler {}\n{:<9} {:<8} {:<20} {:<12} {:>4} {:<16} {}\n",
        spec.job_id,
        spec.name,
        job_state(job.state()),
        spec.instances,
        job.scheduler,
        "INSTANCE",
        "ATTEMPTS",
        "TASK",
        "STATE",
        "EXIT",
        "AGENT",
        "MESSAGE"
    );
    for i in &job.instances {
        let status = i.status.clone().unwrap_or_default();
        let state = if i.status.is_none() { "-" } else { state_name(status.state()) };
        let exit = status.exit_code.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut message = status.message.clone();
        if status.reason() != pb::Reason::Unspecified && status.reason() != pb::Reason::Exited {
            message = format!("{} {message}", reason_name(status.reason()));
        }
        if i.retry_at_ms > 0 {
            message = format!("retry pending; {message}");
        }
        out.push_str(&format!(
            "{:<9} {:<8} {:<20} {:<12} {:>4} {:<16} {}\n",
            i.index,
            i.attempts,
            i.task_id,
            state,
            exit,
            status.agent_id,
            message.trim()
        ));
    }
    out
}
