//! Tasks through the whole path of a real fleet, as a user submits them: `SubmitTask` to the
//! leader (written to the registry, placed on an offer, launched on an agent) and `WatchTask` to see
//! it RUNNING and done; and jobs of many instances through `SubmitJob` for throughput.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use skiff_cli::client::{self, Operator};
use skiff_proto as pb;
use skiff_proto::TaskState;

/// The smallest Wasm task: a `_start` that returns.
pub const TRIVIAL_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// What a task runs.
#[derive(Debug, Clone)]
pub enum Program {
    /// A module already in the fleet's artifact store, by sha256.
    Wasm { sha256: String, size: u64 },
    /// A command on the agent, in a cgroup of its own.
    Native { command: String },
}

impl Program {
    /// A task spec with small resources, so that many fit on one agent at once.
    pub fn spec(&self, name: &str) -> pb::TaskSpec {
        let kind = match self {
            Program::Wasm { sha256, size } => pb::task_spec::Kind::Wasm(pb::WasmTask {
                module: Vec::new(),
                module_sha256: sha256.clone(),
                module_size: *size,
            }),
            Program::Native { command } => {
                pb::task_spec::Kind::Native(pb::NativeTask { command: command.clone(), ..Default::default() })
            }
        };
        // A native task's CPU share is a CFS quota: at 0.01 CPU (1 ms per 100 ms period) even
        // /bin/true's exec is throttled for periods; 0.1 is the CLI's default. A Wasm task's share
        // allows a 20 ms burst, more than a trivial task uses.
        let (cpus, mem_bytes) = match self {
            Program::Wasm { .. } => (0.01, 1 << 20),
            Program::Native { .. } => (0.1, 16 << 20),
        };
        pb::TaskSpec {
            name: name.to_owned(),
            resources: Some(pb::Resources { cpus, mem_bytes, ..Default::default() }),
            kind: Some(kind),
            ..Default::default()
        }
    }
}

/// The leader of the coordinators at `addr`, with the credentials of the test fleet there (a
/// client certificate and its management token, when it runs with TLS).
pub async fn operator(addr: &str) -> Result<Operator> {
    let access = crate::fleet::pki::access(addr);
    client::connect_leader_with(&access, &[addr.to_owned()])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("no leader")
}

/// Stores `module` in the fleet's artifact store.
pub async fn upload(addr: &str, module: &[u8]) -> Result<Program> {
    let access = crate::fleet::pki::access(addr);
    let channel = client::leader_channel_with(&access, &[addr.to_owned()]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored = skiff_cli::artifact::ensure_stored(channel, module).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Program::Wasm { sha256: stored.sha256, size: module.len() as u64 })
}

/// Latencies of one task: until RUNNING was seen, until its end was seen.
#[derive(Debug, Clone, Copy)]
pub struct TaskTimes {
    pub to_running: Duration,
    pub to_finished: Duration,
}

/// Submits one task and follows it to its end, timing what the submitter sees.
pub async fn one(op: &mut Operator, spec: pb::TaskSpec) -> Result<TaskTimes> {
    let start = Instant::now();
    let task_id = op.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await?.into_inner().task_id;
    let mut events = op
        .watch_task(pb::WatchTaskRequest { task_id: task_id.clone(), history_only: false, ..Default::default() })
        .await?;
    let events = events.get_mut();
    let mut to_running = None;
    while let Some(event) = events.message().await? {
        let Some(pb::task_event::Event::Status(status)) = event.event else { continue };
        match status.state() {
            TaskState::Running => to_running = Some(start.elapsed()),
            TaskState::Finished => {
                let to_finished = start.elapsed();
                let to_running = to_running.context("FINISHED without RUNNING")?;
                return Ok(TaskTimes { to_running, to_finished });
            }
            s if skiff_coordinator::task::is_terminal(s) => bail!("task {task_id} ended {s:?}: {}", status.message),
            _ => {}
        }
    }
    bail!("the watch of task {task_id} ended before the task did")
}

/// `n` tasks one after another (after `warmup` untimed ones).
pub async fn latency(addr: &str, program: &Program, warmup: usize, n: usize) -> Result<Vec<TaskTimes>> {
    let mut op = operator(addr).await?;
    for i in 0..warmup {
        one(&mut op, program.spec(&format!("warmup-{i}"))).await.context("warm-up task")?;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        times.push(one(&mut op, program.spec(&format!("latency-{i}"))).await.with_context(|| format!("task {i}"))?);
    }
    Ok(times)
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces): utime is the 14th
    // field of the line, stime the 15th, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // In USER_HZ ticks, 100 per second on every Linux architecture.
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A job of `n` instances submitted at once: seconds from the submit until the last instance
/// finished (by the agents' timestamps of the terminal updates, on this same clock).
pub async fn throughput(addr: &str, program: &Program, n: u32, within: Duration) -> Result<f64> {
    let mut op = operator(addr).await?;
    let spec =
        pb::JobSpec { name: "throughput".into(), instances: n, task: Some(program.spec("t")), ..Default::default() };
    let submitted_ms = now_ms();
    let job_id = op.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await?.into_inner().job_id;
    let job = wait_job(&mut op, &job_id, within, |job| job.state() != pb::JobState::Running).await?;
    if job.state() != pb::JobState::Finished {
        bail!("job {job_id} ended {:?}", job.state());
    }
    let last = job.instances.iter().filter_map(|i| i.status.as_ref()).map(|s| s.timestamp_ms).max().unwrap_or(0);
    Ok(last.saturating_sub(submitted_ms).max(1) as f64 / 1e3)
}

/// Polls a job every 500 ms until `done` says so (a large job's status is a large message: polling
/// it often would load the leader being measured).
pub async fn wait_job(
    op: &mut Operator,
    job_id: &str,
    within: Duration,
    done: impl Fn(&pb::JobStatus) -> bool,
) -> Result<pb::JobStatus> {
    let deadline = Instant::now() + within;
    loop {
        let job = op.get_job(pb::GetJobRequest { job_id: job_id.to_owned() }).await?.into_inner().job;
        let job = job.with_context(|| format!("job {job_id} unknown"))?;
        if done(&job) {
            return Ok(job);
        }
        if Instant::now() > deadline {
            let counts = count_states(&job);
            bail!("job {job_id} not done within {within:?}: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Instances of a job by the state of their latest task.
pub fn count_states(job: &pb::JobStatus) -> Vec<(TaskState, usize)> {
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for state in job.instances.iter().map(|i| i.status.as_ref().map_or(TaskState::Pending, |s| s.state())) {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    counts
}
