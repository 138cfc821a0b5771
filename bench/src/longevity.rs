//! A fleet that lives for years, measured: many trivial tasks through a 3-coordinator etcd fleet
//! with garbage collection on, sampling etcd's database size and the leader's RSS as it goes (they
//! should stay flat: the registry is bounded by live work plus the retention, not by history);
//! then a takeover with 100,000 live (pending) tasks and 1,000 agents' records in the registry.
//!
//! etcd runs with periodic auto-compaction (as Kubernetes runs it): without compaction etcd keeps
//! every revision of every key, and its database grows with history whatever Skiff deletes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use skiff_proto as pb;

use crate::fleet::{HaFleet, text};
use crate::path;

/// One sample of the run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub tasks_done: u64,
    pub seconds: f64,
    /// etcd's database file, and the part of it in use.
    pub db_bytes: i64,
    pub db_in_use_bytes: i64,
    /// Keys under the fleet's prefix.
    pub keys: i64,
    pub leader_rss_kib: u64,
}

/// The takeover with many live tasks.
#[derive(Debug, Clone)]
pub struct Takeover {
    pub live_tasks: u32,
    pub agent_records: u32,
    /// From the SIGKILL of the leader until another coordinator holds the election key.
    pub elected: Duration,
    /// From the SIGKILL until a task submitted then had finished on the new leader.
    pub first_task: Duration,
    /// The leader's RSS before and after the live tasks were submitted, and the new leader's after
    /// it took over (all of them, and the agents' records, in its memory).
    pub rss_before_kib: u64,
    pub rss_with_live_kib: u64,
    pub new_leader_rss_kib: u64,
    /// The RSS of the followers (each holding a mirror of the registry) just before the SIGKILL.
    pub followers_rss_kib: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub tasks: u64,
    pub job_size: u32,
    pub tasks_per_second: f64,
    pub samples: Vec<Sample>,
    pub takeover: Takeover,
}

/// The coordinators' flags of the run: collect finished work 10 s after it ends.
pub const GC_FLAGS: [&str; 6] = ["--gc-after", "10s", "--gc-interval", "1s", "--max-finished-tasks", "50000"];

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn sample(fleet: &HaFleet, leader: usize, done: u64, started: Instant) -> Result<Sample> {
    let mut etcd = crate::fleet::etcd_client(&fleet.etcd.members[0].client_url).await;
    let status = etcd.status().await?;
    let keys = etcd.get("/skiff/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await?;
    let pid = fleet.coordinators[leader].as_ref().context("leader running")?.child.id();
    Ok(Sample {
        tasks_done: done,
        seconds: started.elapsed().as_secs_f64(),
        db_bytes: status.db_size(),
        db_in_use_bytes: status.raft_used_db_size(),
        keys: keys.count(),
        leader_rss_kib: rss_kib(pid),
    })
}

/// `total` trivial Wasm tasks (`module`) in jobs of `job_size`, two jobs in flight; then the
/// takeover with `live` pending tasks and 1,000 agent records.
pub fn run(total: u64, job_size: u32, live: u32, module: &[u8]) -> Result<Figures> {
    // Periodic compaction every 30 s keeps etcd's history bounded, as a production etcd does.
    let compaction = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "30s"];
    let mut fleet = HaFleet::start_with_etcd(1, 3, 1, &GC_FLAGS, &compaction);
    let leader = fleet.leader(Duration::from_secs(30));
    let addr = fleet.addrs[leader].clone();
    let rt = tokio::runtime::Runtime::new()?;
    let program = rt.block_on(path::upload(&addr, module))?;
    let started = Instant::now();
    let mut samples = vec![rt.block_on(sample(&fleet, leader, 0, started))?];
    let jobs = total.div_ceil(u64::from(job_size));
    let mut done = 0u64;
    rt.block_on(async {
        let mut op = path::operator(&addr).await?;
        let mut in_flight: std::collections::VecDeque<String> = Default::default();
        let mut submitted = 0u64;
        let mut next_sample = total / 10;
        while done < total {
            while in_flight.len() < 2 && submitted < jobs {
                let spec = pb::JobSpec {
                    name: format!("longevity-{submitted}"),
                    instances: job_size,
                    task: Some(program.spec("t")),
                    ..Default::default()
                };
                let job_id = op.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await?.into_inner().job_id;
                in_flight.push_back(job_id);
                submitted += 1;
            }
            let job_id = in_flight.pop_front().context("a job in flight")?;
            let job =
                path::wait_job(&mut op, &job_id, Duration::from_secs(600), |j| j.state() != pb::JobState::Running)
                    .await?;
            ensure!(job.state() == pb::JobState::Finished, "job {job_id} ended {:?}", job.state());
            done += u64::from(job_size);
            if done >= next_sample || done >= total {
                let s = sample(&fleet, leader, done, started).await?;
                eprintln!(
                    "  {done} tasks in {:.0} s: etcd db {} MiB ({} MiB in use), {} keys, leader RSS {} MiB",
                    s.seconds,
                    s.db_bytes >> 20,
                    s.db_in_use_bytes >> 20,
                    s.keys,
                    s.leader_rss_kib >> 10
                );
                samples.push(s);
                next_sample += total / 10;
            }
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let tasks_per_second = done as f64 / elapsed;
    // Let the last jobs be collected, then sample once more.
    std::thread::sleep(Duration::from_secs(15));
    samples.push(rt.block_on(sample(&fleet, leader, done, started))?);
    let takeover = takeover(&mut fleet, leader, live, module, &rt)?;
    Ok(Figures { tasks: done, job_size, tasks_per_second, samples, takeover })
}

/// Fills the registry with `live` pending tasks (a job whose constraint no agent meets) and 1,000
/// agents' records, SIGKILLs the leader and times the next leader to a finished task.
fn takeover(
    fleet: &mut HaFleet,
    leader: usize,
    live: u32,
    module: &[u8],
    rt: &tokio::runtime::Runtime,
) -> Result<Takeover> {
    let addr = fleet.addrs[leader].clone();
    let url = fleet.etcd.members[0].client_url.clone();
    let pid = fleet.coordinators[leader].as_ref().context("leader running")?.child.id();
    let rss_before_kib = rss_kib(pid);
    rt.block_on(async {
        let program = path::upload(&addr, module).await?;
        let mut op = path::operator(&addr).await?;
        let constraint = pb::Constraint {
            attribute: "zone".into(),
            operator: pb::constraint::Operator::Eq as i32,
            values: vec!["nowhere".into()],
        };
        let spec = pb::JobSpec {
            name: "waiting".into(),
            instances: live,
            task: Some(program.spec("w")),
            constraints: vec![constraint],
            ..Default::default()
        };
        let submitted = Instant::now();
        op.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await?;
        eprintln!("  {live} pending tasks submitted in {:.1?}", submitted.elapsed());
        let mut etcd = crate::fleet::etcd_client(&url).await;
        for i in 0..1000 {
            let record = pb::AgentRecord {
                agent_id: format!("sim-{i:04}"),
                hostname: format!("sim-{i:04}.example"),
                resources: Some(pb::Resources {
                    cpus: 32.0,
                    mem_bytes: 128 << 30,
                    disk_bytes: 1 << 40,
                    wasm_slots: 1000,
                }),
                attributes: [("rack".to_owned(), format!("r{}", i % 40))].into(),
                leader_epoch: 1,
                ..Default::default()
            };
            etcd.put(format!("/skiff/agents/sim-{i:04}"), record.encode_to_vec(), None).await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_with_live_kib = rss_kib(pid);
    let followers_rss_kib = fleet
        .coordinators
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .filter_map(|(_, c)| c.as_ref().map(|c| rss_kib(c.child.id())))
        .collect();
    let old_key = rt.block_on(election_key(&url))?;
    let killed = Instant::now();
    fleet.kill_coordinator(leader);
    let elected = rt.block_on(async {
        loop {
            let key = election_key(&url).await?;
            if key.is_some() && key != old_key {
                return anyhow::Ok(killed.elapsed());
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no new leader within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("trivial.wasm");
    std::fs::write(&file, module)?;
    let out = fleet.run(&["-q", &file.display().to_string()]);
    let first_task = killed.elapsed();
    ensure!(out.status.success(), "no task ran on the new leader: {}", text(&out.stderr));
    let new = fleet.leader(Duration::from_secs(10));
    let new_leader_rss_kib = rss_kib(fleet.coordinators[new].as_ref().context("new leader running")?.child.id());
    Ok(Takeover {
        live_tasks: live,
        agent_records: 1000,
        elected,
        first_task,
        rss_before_kib,
        rss_with_live_kib,
        new_leader_rss_kib,
        followers_rss_kib,
    })
}

/// The key (and its create revision) of the current leader in the election.
async fn election_key(url: &str) -> Result<Option<(String, i64)>> {
    let mut etcd = crate::fleet::etcd_client(url).await;
    let resp = etcd.get("/skiff/election/", Some(etcd_client::GetOptions::new().with_prefix())).await?;
    Ok(resp
        .kvs()
        .iter()
        .min_by_key(|kv| kv.create_revision())
        .map(|kv| (kv.key_str().unwrap_or_default().to_owned(), kv.create_revision())))
}

/// The figures as Markdown.
pub fn markdown(f: &Figures) -> String {
    let mut s = format!(
        "{} trivial Wasm tasks (jobs of {}; `{}`; etcd auto-compaction every 30 s): {:.0} tasks/s.\n\n",
        f.tasks,
        f.job_size,
        GC_FLAGS.join(" "),
        f.tasks_per_second
    );
    s.push_str("| tasks done | s | etcd db (MiB) | etcd db in use (MiB) | registry keys | leader RSS (MiB) |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for x in &f.samples {
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} | {} | {:.1} |\n",
            x.tasks_done,
            x.seconds,
            x.db_bytes as f64 / 1048576.0,
            x.db_in_use_bytes as f64 / 1048576.0,
            x.keys,
            x.leader_rss_kib as f64 / 1024.0
        ));
    }
    let t = &f.takeover;
    s.push_str(&format!(
        "\nTakeover with {} live (pending) tasks and {} agents' records: SIGKILL → new leader elected {:.2} s; \
         SIGKILL → a task finished on it {:.2} s ({:.2} s after the election).\n",
        t.live_tasks,
        t.agent_records,
        t.elected.as_secs_f64(),
        t.first_task.as_secs_f64(),
        (t.first_task.saturating_sub(t.elected)).as_secs_f64()
    ));
    s.push_str(&format!(
        "Leader RSS {:.0} MiB before the live tasks, {:.0} MiB with them ({:.0} bytes per live task); the new \
         leader {:.0} MiB after the takeover; the followers (each with its mirror of the registry) {} MiB \
         before it.\n",
        t.rss_before_kib as f64 / 1024.0,
        t.rss_with_live_kib as f64 / 1024.0,
        (t.rss_with_live_kib.saturating_sub(t.rss_before_kib) * 1024) as f64 / f64::from(t.live_tasks.max(1)),
        t.new_leader_rss_kib as f64 / 1024.0,
        t.followers_rss_kib.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(" and ")
    ));
    s
}
