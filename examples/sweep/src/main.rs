//! `skiff-sweep`: an external framework that counts primes below each of a list of limits, one Wasm
//! task per limit, placed on the offers of Skiff's SchedulerService, and prints a table of results.
//!
//! Layout:
//! - `sweep`: the state machine (offers -> launches, status updates -> done / retry / give up);
//! - `fleet`: finding the leader, storing the module, reading a task's stdout.
//!
//! Exit codes: 0 every limit counted; 1 some limit failed after its retries; 2 bad flags;
//! 64 unreadable module; 69 the fleet could not be reached or the event stream ended.

mod fleet;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pb::scheduler_call::Call;
use pb::scheduler_event::Event;
use skiff_cli::client::Channel;
use skiff_cli::units;
use skiff_proto as pb;
use sweep::{Interest, Shape, Sweep, Update};

/// A sweep of the primes guest over a list of limits, scheduled as a Skiff framework.
#[derive(Debug, Parser)]
#[command(name = "skiff-sweep", version)]
struct Cli {
    /// Coordinators to ask for the leader, comma-separated.
    #[arg(long, visible_alias = "coordinators", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    coordinator: Vec<String>,
    /// The primes guest (it prints "<count> primes below <N>").
    #[arg(long, default_value = "examples/guests/target/wasm32-wasi/release/primes.wasm")]
    module: PathBuf,
    /// The limits N to count primes below, one task each, comma-separated.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "10000,20000,30000,40000,50000,60000,70000,80000")]
    limits: Vec<u64>,
    /// The role the framework's share of the fleet is counted under.
    #[arg(long, default_value = "default")]
    role: String,
    /// CPUs reserved per task.
    #[arg(long, default_value_t = 0.25, value_parser = units::parse_cpus)]
    cpus: f64,
    /// Memory reserved per task: bytes, or with a K, M or G suffix (binary: 32M = 32MiB).
    #[arg(long, default_value = "32MiB", value_parser = units::parse_size)]
    mem: u64,
    /// How many times a failed, lost or killed task is launched again.
    #[arg(long, default_value_t = 2)]
    retries: u32,
}

/// How long the framework's tasks outlive a lost connection to it.
const FAILOVER_TIMEOUT_MS: u64 = 10_000;

/// A subscribed framework: every call names its id and the leader epoch it subscribed under.
struct Framework {
    client: pb::scheduler_service_client::SchedulerServiceClient<Channel>,
    id: String,
    epoch: u64,
}

impl Framework {
    async fn call(&mut self, call: Call) -> Result<pb::SchedulerCallResponse, tonic::Status> {
        let request = pb::SchedulerCall { framework_id: self.id.clone(), epoch: self.epoch, call: Some(call) };
        match tokio::time::timeout(Duration::from_secs(10), self.client.call(request)).await {
            Ok(answer) => Ok(answer?.into_inner()),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer within 10s")),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let module = match std::fs::read(&cli.module) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("skiff-sweep: cannot read {}: {e}", cli.module.display());
            return ExitCode::from(64);
        }
    };
    match run(&cli, &module).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff-sweep: {e:#}");
            ExitCode::from(69)
        }
    }
}

/// Runs the sweep to its end, prints the results, tears the framework down.
async fn run(cli: &Cli, module: &[u8]) -> Result<ExitCode> {
    let leader = skiff_cli::client::leader_channel(&cli.coordinator).await?;
    let stored = skiff_cli::artifact::ensure_stored(leader.clone(), module).await?;
    let verb = if stored.uploaded { "uploaded" } else { "already stored" };
    eprintln!("module {} {verb} ({} bytes)", stored.sha256, module.len());
    let wasm = pb::WasmTask { module: Vec::new(), module_sha256: stored.sha256, module_size: module.len() as u64 };

    let mut client = pb::scheduler_service_client::SchedulerServiceClient::new(leader.clone());
    let framework = pb::FrameworkInfo {
        framework_id: String::new(),
        name: "sweep".into(),
        role: cli.role.clone(),
        failover_timeout_ms: FAILOVER_TIMEOUT_MS,
    };
    let subscribe = pb::SubscribeRequest { framework: Some(framework) };
    let mut events = client.subscribe(subscribe).await.context("Subscribe")?.into_inner();
    let first = events.message().await.context("Subscribe")?.context("the event stream ended at once")?;
    let Some(Event::Subscribed(subscribed)) = first.event else { bail!("the first event was not `subscribed`") };
    let id = subscribed.framework.map(|f| f.framework_id).unwrap_or_default();
    eprintln!("subscribed as framework {id} (epoch {})", first.epoch);
    let mut fw = Framework { client, id, epoch: first.epoch };
    // A leader that stops sending heartbeats is as gone as one that closed the stream.
    let beat = subscribed.heartbeat_interval_ms;
    let silence = (beat > 0).then(|| Duration::from_millis(beat.saturating_mul(3)));

    let shape = Shape { cpus: cli.cpus, mem_bytes: cli.mem };
    let mut sweep = Sweep::new(&cli.limits, cli.retries, shape, wasm);
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    while !sweep.is_done() {
        let event = tokio::select! {
            _ = &mut interrupt => {
                let _ = fw.call(Call::Teardown(pb::scheduler_call::Teardown {})).await;
                bail!("interrupted: tore the framework down (its tasks are killed)");
            }
            next = next_event(&mut events, silence) => next,
        };
        let lost = format!(
            "the leader's event stream ended (failover?); re-subscribing is not implemented, so the \
             framework's tasks are killed after its {FAILOVER_TIMEOUT_MS} ms failover timeout"
        );
        let event = match event {
            Ok(Some(event)) => event.event,
            Ok(None) => bail!("{lost}"),
            Err(why) => bail!("{lost} ({why})"),
        };
        match event {
            Some(Event::Offers(offers)) => {
                for offer in offers.offers {
                    place(&mut fw, &mut sweep, offer).await?;
                }
            }
            Some(Event::Update(status)) => on_update(&mut fw, &mut sweep, &leader, status).await,
            Some(Event::Rescind(r)) => eprintln!("offer {} rescinded: {}", r.offer_id, r.reason),
            Some(Event::Error(message)) => bail!("the coordinator sent an error: {message}"),
            Some(Event::Subscribed(_) | Event::Heartbeat(_)) | None => {}
        }
        if sweep.is_done() {
            break;
        }
        if let Some(interest) = sweep.interest() {
            let call = match interest {
                Interest::Suppress => Call::Suppress(pb::scheduler_call::Suppress {}),
                Interest::Revive => Call::Revive(pb::scheduler_call::Revive {}),
            };
            fw.call(call).await.with_context(|| format!("{interest:?}"))?;
        }
    }
    let code = report(&sweep);
    if let Err(status) = fw.call(Call::Teardown(pb::scheduler_call::Teardown {})).await {
        eprintln!("teardown: {}", status.message());
    }
    Ok(code)
}

/// The next event, or why none came: an error, or `silence` without even a heartbeat.
async fn next_event(
    events: &mut tonic::Streaming<pb::SchedulerEvent>,
    silence: Option<Duration>,
) -> Result<Option<pb::SchedulerEvent>, String> {
    let next = match silence {
        Some(limit) => {
            tokio::time::timeout(limit, events.message()).await.map_err(|_| format!("silent for {limit:?}"))?
        }
        None => events.message().await,
    };
    next.map_err(|status| status.message().to_owned())
}

/// Accepts `offer` with the launches that fit, or declines it.
async fn place(fw: &mut Framework, sweep: &mut Sweep, offer: pb::Offer) -> Result<()> {
    let launches = sweep.fill(&offer.resources.unwrap_or_default());
    if launches.is_empty() {
        let decline = pb::scheduler_call::Decline { offer_ids: vec![offer.offer_id], refuse_seconds: Some(1.0) };
        if let Err(status) = fw.call(Call::Decline(decline)).await {
            eprintln!("decline: {}", status.message());
        }
        return Ok(());
    }
    let specs = launches.iter().map(|l| l.spec.clone()).collect();
    let accept = pb::scheduler_call::Accept { offer_ids: vec![offer.offer_id], launches: specs, refuse_seconds: 0.0 };
    match fw.call(Call::Accept(accept)).await {
        Ok(answer) if answer.task_ids.len() == launches.len() => {
            for (launch, task_id) in launches.iter().zip(&answer.task_ids) {
                eprintln!("launched {} as {task_id} on agent {}", launch.spec.name, offer.agent_id);
                sweep.launched(launch.index, task_id);
            }
        }
        Ok(answer) => bail!("Accept of {} launches answered {} task ids", launches.len(), answer.task_ids.len()),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            bail!("the coordinator refused the task spec: {}", status.message())
        }
        Err(status) => {
            eprintln!("accept refused ({}); the launches wait for another offer", status.message());
            launches.iter().for_each(|l| sweep.launch_failed(l.index));
        }
    }
    Ok(())
}

async fn on_update(fw: &mut Framework, sweep: &mut Sweep, leader: &Channel, status: pb::TaskStatus) {
    if !status.update_id.is_empty() {
        let ack =
            pb::scheduler_call::Acknowledge { task_id: status.task_id.clone(), update_id: status.update_id.clone() };
        if let Err(e) = fw.call(Call::Acknowledge(ack)).await {
            eprintln!("acknowledge {}: {} (it will be sent again)", status.task_id, e.message());
        }
    }
    match sweep.on_status(&status) {
        Update::Ignored => {}
        Update::Progress { limit, state } => {
            let state = state.as_str_name().trim_start_matches("TASK_STATE_");
            eprintln!("primes-{limit} ({}): {state}", status.task_id);
        }
        Update::Finished { index, limit } => {
            let stdout = fleet::read_stdout(leader.clone(), &status.task_id).await;
            match sweep.record(index, &status.task_id, &status.agent_id, stdout) {
                Ok(done) => eprintln!("primes-{limit}: {} primes below {limit}", done.primes),
                Err(why) => eprintln!("primes-{limit} ({}) finished, but {why}", status.task_id),
            }
        }
        Update::Retrying { limit, attempt, why } => eprintln!("primes-{limit}: {why}; attempt {attempt} queued"),
        Update::GaveUp { limit, why } => eprintln!("primes-{limit}: {why}; no retries left"),
    }
}

/// Prints the table of results to stdout and the failures to stderr.
fn report(sweep: &Sweep) -> ExitCode {
    let (done, failed) = sweep.outcome();
    let width = done.iter().map(|d| d.task_id.len()).max().unwrap_or(0).max("task_id".len());
    println!("{:>10}  {:>8}  {:<width$}  agent_id", "limit", "primes", "task_id");
    for d in &done {
        println!("{:>10}  {:>8}  {:<width$}  {}", d.limit, d.primes, d.task_id, d.agent_id);
    }
    println!("total primes: {}", done.iter().map(|d| d.primes).sum::<u64>());
    for (limit, why) in &failed {
        eprintln!("limit {limit} failed: {why}");
    }
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_the_documented_defaults() {
        let cli = Cli::try_parse_from(["skiff-sweep"]).expect("defaults parse");
        assert_eq!(
            (cli.coordinator, cli.limits.len(), cli.cpus, cli.mem),
            (vec!["127.0.0.1:7070".into()], 8, 0.25, 32 << 20)
        );
        let cli = Cli::try_parse_from(["skiff-sweep", "--coordinator", "a:1,b:2", "--limits", "5,6"]).expect("parses");
        assert_eq!((cli.coordinator.len(), cli.limits), (2, vec![5, 6]));
        assert!(Cli::try_parse_from(["skiff-sweep", "--cpus", "0"]).is_err());
    }
}
