//! The quick fault-injection suite: a fleet of real processes — etcd (3 members), 3 coordinators,
//! 3 agents on loopback, the agents reaching the coordinators through TCP proxies — runs jobs of
//! Wasm and native tasks while a nemesis SIGKILLs the leader, SIGSTOPs and resumes it, SIGKILLs and
//! restarts agents, kills an etcd member and cuts the agents' connections. A checker then
//! asserts, and prints the counts of:
//! - every instance of every job finished (nothing lost), each task that started started once;
//! - no instance ever ran twice at once (native tasks: the process table is sampled every 10 ms
//!   for the instance's shell, found by its marker argument and its SKIFF_* environment);
//! - no status update left unacknowledged on any agent's disk at the end;
//! - commands of deposed leaders (the resumed SIGSTOPped one) refused by the agents.
//!
//! `SKIFF_FAULTS_LONG=1` runs the long variant (≥ 1,000 tasks, ≥ 10 leader kills).
//!
//! Not run by default yet (`cargo test -p skiff-cli --test faults -- --ignored --nocapture`): in
//! about one run in ten a task id is started a second time a few hundred ms after its first start
//! ended (never at the same time), which the checker rightly fails. Not yet reproduced with
//! debug logs; see issue #7.

mod fleet;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleet::{HaFleet, guest, run_bounded, text};
use nix::sys::signal::Signal;
use skiff_proto as pb;

/// The marker argument (`$0`) of every native task's shell.
const MARKER: &str = "skiff-fault-task";

struct Workload {
    jobs_per_kind: usize,
    instances: usize,
    leader_kills: usize,
    agent_restarts: usize,
}

/// Tasks with a process whose command line has the marker, by the instance they run (job id /
/// instance). (A task's shell and its forked child are one task.)
fn running_instances() -> HashMap<String, HashSet<String>> {
    let mut by_instance: HashMap<String, HashSet<String>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return by_instance };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if !cmdline.split(|b| *b == 0).any(|arg| arg == MARKER.as_bytes()) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let var = |name: &str| {
            environ.split(|b| *b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
            })
        };
        if let (Some(job), Some(instance), Some(task)) =
            (var("SKIFF_JOB_ID"), var("SKIFF_INSTANCE"), var("SKIFF_TASK_ID"))
        {
            by_instance.entry(format!("{job}/{instance}")).or_default().insert(task);
        }
    }
    by_instance
}

/// `call` on whichever coordinator leads (connecting and the call bounded to 3 s each).
fn on_leader<T>(fleet: &HaFleet, call: impl AsyncFnOnce(&mut skiff_cli::client::Operator) -> Option<T>) -> Option<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let access = fleet::pki::access(&fleet.addrs[0]);
        let connect = skiff_cli::client::connect_leader_with(&access, &fleet.addrs);
        let mut op = tokio::time::timeout(Duration::from_secs(3), connect).await.ok()?.ok()?;
        tokio::time::timeout(Duration::from_secs(3), call(&mut op)).await.ok()?
    })
}

/// A task's status from whichever coordinator leads.
fn task(fleet: &HaFleet, task_id: &str) -> Option<pb::TaskStatus> {
    on_leader(fleet, async |op| {
        op.get_task(pb::GetTaskRequest { task_id: task_id.into() }).await.ok()?.into_inner().status
    })
}

/// Seconds since the Unix epoch (to line the nemesis up with the tasks' log).
fn wall() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn submit(fleet: &HaFleet, dir: &Path, name: &str, body: &str) -> String {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, body).expect("write job file");
    let mut cmd = fleet::skiff_cmd(&fleet.coordinators_arg());
    cmd.args(["job", "run", "--detach", "--coordinators", &fleet.coordinators_arg()]).arg(&file);
    let out = run_bounded(cmd, None, Duration::from_secs(30));
    assert!(out.status.success(), "submit {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// A job's status from whichever coordinator leads.
fn job(fleet: &HaFleet, job_id: &str) -> Option<pb::JobStatus> {
    on_leader(fleet, async |op| op.get_job(pb::GetJobRequest { job_id: job_id.into() }).await.ok()?.into_inner().job)
}

fn run_suite(w: Workload) {
    let began = Instant::now();
    let mut fleet = HaFleet::start_proxied(3, 3, 3);
    let dir = tempfile::tempdir().expect("temp dir");
    // Native tasks, each as a uid of its own, append to a log in the fleet's shared directory
    // (the agents' --task-host-dir).
    let log = fleet.shared.path().join("starts.log");
    let spin = guest("spin");

    let mut jobs = Vec::new();
    for j in 0..w.jobs_per_kind {
        let native = format!(
            "name = \"native-{j}\"\ninstances = {}\n[task]\nnative = [\"/bin/sh\", \"-c\", \
             \"echo \\\"$SKIFF_TASK_ID $SKIFF_JOB_ID/$SKIFF_INSTANCE $(date +%s.%N)\\\" >> {}; sleep 1\", \"{MARKER}\"]\n\
             cpus = 0.5\nmem = \"16M\"\n[retry]\nattempts = 30\nbackoff = \"100ms\"\nmax_backoff = \"1s\"\n",
            w.instances,
            log.display()
        );
        jobs.push(submit(&fleet, dir.path(), &format!("native-{j}"), &native));
        let wasm = format!(
            "name = \"wasm-{j}\"\ninstances = {}\n[task]\nwasm = {:?}\nargs = [\"800\"]\ncpus = 0.5\n\
             [retry]\nattempts = 30\nbackoff = \"100ms\"\nmax_backoff = \"1s\"\n",
            w.instances,
            spin.display().to_string()
        );
        jobs.push(submit(&fleet, dir.path(), &format!("wasm-{j}"), &wasm));
    }
    let tasks = jobs.len() * w.instances;

    // The sampler: never two processes of one instance at once.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut samples, mut twice) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for (instance, tasks) in running_instances() {
                    if tasks.len() > 1 {
                        twice.push(format!("{instance}: tasks {tasks:?}"));
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, twice)
        })
    };

    // The nemesis, while the jobs run.
    let (mut leader_kills, mut agent_restarts, mut pauses, mut etcd_kills, mut drops) = (0, 0, 0, 0, 0);
    let mut step = 0;
    while leader_kills < w.leader_kills || agent_restarts < w.agent_restarts {
        let leader = fleet.leader(Duration::from_secs(30));
        match step % 4 {
            0 | 2 => {
                fleet.kill_coordinator(leader);
                leader_kills += 1;
                eprintln!("{:.3} nemesis: coordinator {leader} (leader) SIGKILLed", wall());
                std::thread::sleep(Duration::from_millis(500));
                fleet.start_coordinator(leader);
            }
            1 => {
                let agent = agent_restarts % fleet.agents.len();
                fleet.kill_agent(agent);
                agent_restarts += 1;
                eprintln!("{:.3} nemesis: agent {agent} SIGKILLed", wall());
                std::thread::sleep(Duration::from_millis(500));
                fleet.restart_agent(agent);
            }
            _ => {
                // A leader paused past its lease: deposed while asleep, it wakes up believing it leads.
                fleet.signal_coordinator(leader, Signal::SIGSTOP);
                pauses += 1;
                eprintln!("{:.3} nemesis: coordinator {leader} (leader) SIGSTOPped for 4 s", wall());
                std::thread::sleep(Duration::from_secs(4));
                fleet.signal_coordinator(leader, Signal::SIGCONT);
            }
        }
        if step % 2 == 1 {
            // Cut every agent's connection to the coordinators (through their proxies).
            let cut: usize = fleet.proxies.iter().map(|p| p.drop_connections()).sum();
            drops += 1;
            eprintln!("{:.3} nemesis: {cut} agent connections cut", wall());
        }
        if step == 5 {
            let member = fleet.etcd.members.len() - 1;
            fleet.etcd.members[member].kill();
            etcd_kills += 1;
            eprintln!("{:.3} nemesis: etcd member {member} SIGKILLed (2 of 3 left)", wall());
        }
        step += 1;
        std::thread::sleep(Duration::from_secs(2));
    }

    // Everything finishes.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut statuses: HashMap<String, pb::JobStatus> = HashMap::new();
    while statuses.len() < jobs.len() {
        assert!(
            Instant::now() < deadline,
            "jobs not done: {:?}",
            jobs.iter().filter(|j| !statuses.contains_key(*j)).collect::<Vec<_>>()
        );
        for job_id in &jobs {
            if !statuses.contains_key(job_id)
                && let Some(status) = job(&fleet, job_id)
                && status.state() != pb::JobState::Running
            {
                statuses.insert(job_id.clone(), status);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, twice) = sampler.join().expect("sampler");

    // The checker.
    let mut lost = 0;
    let mut attempts = 0;
    for status in statuses.values() {
        for i in &status.instances {
            attempts += i.attempts as usize;
            if i.status.as_ref().map(|s| s.state()) != Some(pb::TaskState::Finished) {
                lost += 1;
                eprintln!(
                    "not finished: {} instance {}: {:?}",
                    status.spec.as_ref().map_or("", |s| &s.name),
                    i.index,
                    i.status
                );
            }
        }
    }
    let starts = std::fs::read_to_string(&log).unwrap_or_default();
    let mut started: HashMap<&str, usize> = HashMap::new();
    for line in starts.lines() {
        *started.entry(line.split(' ').next().unwrap_or("")).or_default() += 1;
    }
    let started_twice: Vec<&&str> = started.iter().filter(|(_, n)| **n > 1).map(|(t, _)| t).collect();
    for task in &started_twice {
        for line in starts.lines().filter(|l| l.starts_with(**task)) {
            eprintln!("started twice: {line}");
        }
    }
    let instances_started: HashSet<&str> = starts.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    // Why native instances were retried: how their earlier attempts ended.
    let mut attempts_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in starts.lines() {
        let mut parts = line.split(' ');
        if let (Some(task), Some(instance)) = (parts.next(), parts.next()) {
            attempts_of.entry(instance).or_default().push(task);
        }
    }
    let mut retried: HashMap<String, usize> = HashMap::new();
    for tasks in attempts_of.values().filter(|t| t.len() > 1) {
        for earlier in &tasks[..tasks.len() - 1] {
            let why = task(&fleet, earlier).map_or("unknown".into(), |s| format!("{:?} ({})", s.state(), s.message));
            *retried.entry(why).or_default() += 1;
        }
    }
    for (why, n) in &retried {
        eprintln!("native attempts retried: {n} ended {why}");
    }
    // Updates on the agents' disks: none left unacknowledged (give the last acks a moment).
    let unacked = fleet::eventually(Duration::from_secs(10), "no unacknowledged update on the agents' disks", || {
        let n: usize = fleet
            .work_dirs
            .iter()
            .map(|d| skiff_agent::updates::read(&d.path().join("updates")).map_or(0, |l| l.updates.len()))
            .sum();
        (n == 0).then_some(n)
    });
    if let Some(keep) = std::env::var_os("SKIFF_FAULTS_KEEP_LOGS") {
        for (i, dir) in fleet.work_dirs.iter().enumerate() {
            for log in ["agent.log", "executor.log"] {
                let _ = std::fs::copy(dir.path().join(log), std::path::Path::new(&keep).join(format!("{i}-{log}")));
            }
        }
    }
    // What the agents refused (their logs): commands of deposed leaders, and second launches.
    let count = |what: &str| -> usize {
        let logs =
            fleet.work_dirs.iter().map(|d| std::fs::read_to_string(d.path().join("agent.log")).unwrap_or_default());
        logs.map(|l| l.lines().filter(|line| line.contains(what)).count()).sum()
    };
    let (stale, relaunches) =
        (count("refusing a command from an older leader epoch"), count("refusing a second launch"));
    // And accepted none: every command an agent acted on (registered, launching) carries an epoch
    // no lower than the highest it had acted on before (across its restarts: one log per agent).
    let (mut accepted_stale, mut checked) = (Vec::new(), 0);
    for (i, dir) in fleet.work_dirs.iter().enumerate() {
        let mut highest = 0u64;
        for line in std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default().lines() {
            if !(line.contains("registered with coordinator") || line.contains("launching task")) {
                continue;
            }
            let Some(epoch) =
                line.split("epoch=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            else {
                continue;
            };
            checked += 1;
            if epoch < highest {
                accepted_stale.push(format!("agent {i} acted on epoch {epoch} after {highest}: {line}"));
            }
            highest = highest.max(epoch);
        }
    }
    eprintln!(
        "fault suite: {tasks} task instances in {} jobs ({} task attempts, {} native instances started); \
         nemesis: {leader_kills} leader kills, {pauses} leader pauses, {agent_restarts} agent restarts, \
         {etcd_kills} etcd member kills, {drops} connection cuts; checker: {lost} lost, {} started twice, {} ran twice at once \
         ({samples} samples), {unacked} unacknowledged updates, {} older-epoch commands accepted of {checked} \
         ({stale} refused), {relaunches} second launches refused; {:.0?}",
        jobs.len(),
        attempts,
        instances_started.len(),
        started_twice.len(),
        twice.len(),
        accepted_stale.len(),
        began.elapsed()
    );
    assert_eq!(lost, 0, "instances lost");
    assert!(started_twice.is_empty(), "tasks started twice: {started_twice:?}");
    assert!(twice.is_empty(), "instances running twice at once: {twice:?}");
    assert!(accepted_stale.is_empty(), "commands of older epochs accepted: {accepted_stale:#?}");
    assert!(checked >= tasks, "only {checked} commands found in the agents' logs");
    assert!(tasks >= 200 && leader_kills >= 3 && agent_restarts >= 2);
}

#[test]
fn quick_fault_suite_loses_nothing_and_runs_nothing_twice() {
    let long = std::env::var_os("SKIFF_FAULTS_LONG").is_some();
    run_suite(if long {
        Workload { jobs_per_kind: 2, instances: 260, leader_kills: 10, agent_restarts: 4 }
    } else {
        Workload { jobs_per_kind: 2, instances: 50, leader_kills: 3, agent_restarts: 2 }
    });
}
