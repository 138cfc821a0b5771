//! Density: the agent's resident memory with 0, 1,000 and 10,000 idle Wasm tasks.
//!
//! An idle task is a guest parked in a WASI host call that does not return: `poll_oneoff` on a
//! one-hour clock. (Skiff gives a task its stdin as a buffer, so a read of stdin returns at its
//! end instead of blocking; a guest parked in `poll_oneoff` is the same parked future on the
//! agent's Wasm executor.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff_proto as pb;
use skiff_proto::TaskState;

use crate::path::{self, Program};

/// A guest that sleeps for an hour in `poll_oneoff` (one clock subscription), then exits.
pub const IDLE_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata (u64) 0, tag 0 = clock at 8, clock id 1 (monotonic) at 16,
    ;; timeout (ns) at 24, precision at 32, flags 0 (relative) at 40; the event at 64; nevents at 128
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
"#;

/// A `/proc/PID/<file>` line `<key>: N kB`, in bytes.
fn proc_kib(pid: u32, file: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).with_context(|| format!("process {pid}"))?;
    let line = text.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} line in {file}"))?;
    let kib: u64 = line[key.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bad {key} line in {file}"))?;
    Ok(kib << 10)
}

/// Resident set of a process, in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    proc_kib(pid, "status", "VmRSS:")
}

/// Proportional set size: a page `n` processes map counts `1/n` in each (`Pss` of smaps_rollup).
/// The agent and its executor process are one binary: their RSS sum counts its pages twice.
pub fn pss_bytes(pid: u32) -> Result<u64> {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// The memory of the agent's processes (the agent and its executor process, which holds the
/// Wasm instances) together.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
}

fn total(pids: &[u32], of: fn(u32) -> Result<u64>) -> Result<u64> {
    pids.iter().map(|&pid| of(pid)).sum()
}

/// The agent's memory once it stops moving: RSS sampled every 200 ms until two samples 1 s apart
/// differ by less than 1% (at most 10 s), then RSS and PSS.
pub fn settled(pids: Vec<u32>) -> Result<Memory> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = total(&pids, rss_bytes)?;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = total(&pids, rss_bytes)?;
        if now.abs_diff(last) * 100 > last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(1) || Instant::now() > deadline {
            return Ok(Memory { rss_bytes: now, pss_bytes: total(&pids, pss_bytes)? });
        }
    }
}

/// One measurement: the agent's memory (agent + executor processes) with `tasks` idle tasks running.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub tasks: u32,
    pub memory: Memory,
}

/// Starts `tasks` idle tasks as one job, waits until all run, measures the agent, kills the job and
/// waits until all are gone.
pub async fn with_idle_tasks(addr: &str, agent_pids: Vec<u32>, idle: &Program, tasks: u32) -> Result<Point> {
    let mut op = path::operator(addr).await?;
    let spec = pb::JobSpec {
        name: format!("idle-{tasks}"),
        instances: tasks,
        task: Some(idle.spec("idle")),
        ..Default::default()
    };
    let job_id = op.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await?.into_inner().job_id;
    let within = Duration::from_secs(300);
    let running = |job: &pb::JobStatus| {
        job.instances.iter().all(|i| i.status.as_ref().is_some_and(|s| s.state() == TaskState::Running))
    };
    let job = path::wait_job(&mut op, &job_id, within, |j| running(j) || j.state() != pb::JobState::Running).await?;
    if !running(&job) {
        bail!("idle job of {tasks} ended before all ran: {:?}", path::count_states(&job));
    }
    let memory = tokio::task::spawn_blocking(move || settled(agent_pids)).await??;
    op.kill_job(pb::KillJobRequest { job_id: job_id.clone() }).await?;
    path::wait_job(&mut op, &job_id, within, |j| j.state() != pb::JobState::Running).await?;
    Ok(Point { tasks, memory })
}
