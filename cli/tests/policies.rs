//! The job scheduler's queue orders on a real fleet: with Wasm tasks of known durations contending
//! for one agent, shortest-job-first finishes them with a lower mean completion time than FIFO.

mod fleet;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet::{Cluster, text};
use skiff_proto as pb;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Submits one long and three short one-CPU spin jobs (long first) while no agent is up, then
/// starts a one-CPU agent; returns the jobs' mean completion time (ms after the agent came up) and
/// whether the long job finished last.
fn mean_completion_ms(order: &str) -> (f64, bool) {
    let mut cluster = Cluster::start(&["--queue-order", order], &[]);
    let dir = tempfile::tempdir().unwrap();
    let spin = fleet::guest("spin");
    let mut jobs = Vec::new();
    for (i, ms) in [1500u64, 200, 200, 200].into_iter().enumerate() {
        let file = dir.path().join(format!("job{i}.toml"));
        let body = format!(
            "name = \"spin-{ms}\"\nexpected_duration = \"{ms}ms\"\npriority = {}\n[task]\nwasm = {spin:?}\nargs = [\"{ms}\"]\ncpus = 1.0\n",
            // The short jobs matter more (only the priority order looks).
            if ms < 1000 { 5 } else { 0 }
        );
        std::fs::write(&file, body).unwrap();
        let out = cluster.skiff(&["job", "run", "--detach", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        jobs.push(text(&out.stdout).trim().to_owned());
    }
    let start = now_ms();
    cluster.add_agent(&["--cpus", "1"]);
    let done: Vec<u64> = jobs
        .iter()
        .map(|job_id| {
            fleet::eventually(Duration::from_secs(30), "the job finished", || {
                let job = fleet::job_status(&cluster.addr, job_id).expect("job status");
                (job.state() == pb::JobState::Finished)
                    .then(|| job.instances[0].status.as_ref().unwrap().timestamp_ms.saturating_sub(start))
            })
        })
        .collect();
    eprintln!("{order}: completion times {done:?} ms");
    let long_last = done[1..].iter().all(|&d| d < done[0]);
    (done.iter().sum::<u64>() as f64 / done.len() as f64, long_last)
}

#[test]
fn sjf_finishes_a_mix_of_jobs_sooner_on_average_than_fifo_and_priority_goes_first() {
    let (fifo, fifo_long_last) = mean_completion_ms("fifo");
    let (sjf, sjf_long_last) = mean_completion_ms("sjf");
    let (priority, priority_long_last) = mean_completion_ms("priority");
    eprintln!("mean completion: fifo {fifo:.0} ms, sjf {sjf:.0} ms, priority {priority:.0} ms");
    assert!(!fifo_long_last, "fifo runs the long job, submitted first, first");
    assert!(sjf_long_last && priority_long_last, "sjf and priority run the short jobs first");
    assert!(sjf < fifo * 0.8, "sjf {sjf:.0} ms should beat fifo {fifo:.0} ms clearly");
}
