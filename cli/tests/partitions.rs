//! Partitions through real processes: an agent that loses every coordinator kills its tasks after
//! its partition window and reports them LOST; a coordinator that loses an agent reports its tasks
//! LOST after its own (longer) window, and the job scheduler retries them elsewhere. A returning
//! agent has the tasks the coordinator gave up on killed.

mod fleet;

use std::time::Duration;

use fleet::{Cluster, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skiff_proto as pb;

/// Whether a process with exactly this command line runs on this host.
fn process_running(cmdline: &[&str]) -> bool {
    let want: Vec<u8> = cmdline.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
}

fn signal(proc: &fleet::Proc, sig: Signal) {
    kill(Pid::from_raw(proc.child.id() as i32), sig).expect("signal");
}

fn submit(cluster: &Cluster, body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    std::fs::write(&file, body).unwrap();
    let out = cluster.skiff(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn instance(cluster: &Cluster, job_id: &str) -> pb::JobInstance {
    fleet::job_status(&cluster.addr, job_id).expect("job status").instances[0].clone()
}

fn state(i: &pb::JobInstance) -> pb::TaskState {
    i.status.as_ref().map_or(pb::TaskState::Unspecified, |s| s.state())
}

#[test]
fn an_agent_alone_kills_its_tasks_and_reports_them_lost() {
    let cluster = Cluster::start(&[], &[&["--partition-kill-after", "1s"]]);
    let job = submit(&cluster, "name = \"alone\"\n[task]\nnative = [\"/bin/sleep\", \"7771\"]\n");
    fleet::eventually(Duration::from_secs(10), "the task running", || {
        (state(&instance(&cluster, &job)) == pb::TaskState::Running && process_running(&["/bin/sleep", "7771"]))
            .then_some(())
    });
    // The coordinator freezes: the agent's session dies and no coordinator answers.
    signal(&cluster.coordinator, Signal::SIGSTOP);
    fleet::eventually(Duration::from_secs(10), "the agent killed its task", || {
        (!process_running(&["/bin/sleep", "7771"])).then_some(())
    });
    signal(&cluster.coordinator, Signal::SIGCONT);
    let lost = fleet::eventually(Duration::from_secs(15), "the task reported LOST", || {
        let i = instance(&cluster, &job);
        (state(&i) == pb::TaskState::Lost).then_some(i)
    });
    let status = lost.status.unwrap();
    assert_eq!(status.reason(), pb::Reason::AgentLost, "{status:?}");
}

#[test]
fn a_lost_agent_s_task_is_retried_elsewhere_and_killed_when_it_returns() {
    let coordinator = ["--agent-timeout", "1s", "--agent-lost-after", "2s"];
    let cluster = Cluster::start(&coordinator, &[&[], &[]]);
    // A sleep of its own (copies of earlier runs may outlive their SIGKILLed agents), short enough to end.
    let secs = format!("{}", 60 + std::process::id() % 1000);
    let job = submit(
        &cluster,
        &format!(
            "name = \"moved\"\n[task]\nnative = [\"/bin/sleep\", \"{secs}\"]\n[retry]\nattempts = 1\nbackoff = \"100ms\"\n"
        ),
    );
    let first = fleet::eventually(Duration::from_secs(10), "the first attempt running", || {
        let i = instance(&cluster, &job);
        (state(&i) == pb::TaskState::Running).then_some(i)
    });
    let first_agent = first.status.as_ref().unwrap().agent_id.clone();
    let agents = fleet::connected_agents(&cluster.addr);
    let idx: usize = agents.iter().find(|a| a.agent_id == first_agent).unwrap().attributes["idx"].parse().unwrap();
    signal(&cluster.agents[idx], Signal::SIGSTOP);
    let second = fleet::eventually(Duration::from_secs(15), "the second attempt running elsewhere", || {
        let i = instance(&cluster, &job);
        (i.attempts == 2 && state(&i) == pb::TaskState::Running).then_some(i)
    });
    assert_ne!(second.status.unwrap().agent_id, first_agent);
    // Both copies run now only because the frozen agent cannot act; when it wakes up it re-registers
    // and is told to kill the copy the coordinator gave up on.
    assert!(process_running(&["/bin/sleep", &secs]));
    signal(&cluster.agents[idx], Signal::SIGCONT);
    let mut last = usize::MAX;
    fleet::eventually(Duration::from_secs(15), "one copy left", || {
        let copies = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == format!("/bin/sleep\0{secs}\0").as_bytes())
            })
            .count();
        if copies != last {
            eprintln!("copies of the task running: {copies}");
            last = copies;
        }
        (copies == 1).then_some(())
    });
    let i = instance(&cluster, &job);
    assert_eq!((i.attempts, state(&i)), (2, pb::TaskState::Running));
}

#[test]
fn an_update_that_could_not_be_sent_survives_an_agent_restart() {
    let mut cluster = Cluster::start(&[], &[&[]]);
    let job = submit(&cluster, "name = \"ends-alone\"\n[task]\nnative = [\"/bin/sh\", \"-c\", \"sleep 4; exit 3\"]\n");
    fleet::eventually(Duration::from_secs(10), "the task running", || {
        (state(&instance(&cluster, &job)) == pb::TaskState::Running).then_some(())
    });
    // No coordinator while the task ends: its FAILED update (exit 3) cannot be sent.
    signal(&cluster.coordinator, Signal::SIGSTOP);
    fleet::eventually(Duration::from_secs(15), "the task ended", || {
        (!process_running(&["/bin/sh", "-c", "sleep 4; exit 3"])).then_some(())
    });
    // The FAILED update is in the agent's update log on disk.
    let updates = cluster.work_dirs[0].path().join("updates");
    fleet::eventually(Duration::from_secs(5), "the FAILED update written to disk", || {
        let loaded = skiff_agent::updates::read(&updates).ok()?;
        loaded.updates.iter().any(|s| s.state() == pb::TaskState::Failed).then_some(())
    });
    cluster.kill_agent(0);
    signal(&cluster.coordinator, Signal::SIGCONT);
    cluster.restart_agent(0);
    let done = fleet::eventually(Duration::from_secs(15), "the real end delivered", || {
        let i = instance(&cluster, &job);
        matches!(
            state(&i),
            pb::TaskState::Finished | pb::TaskState::Failed | pb::TaskState::Killed | pb::TaskState::Lost
        )
        .then_some(i)
    });
    let status = done.status.unwrap();
    assert_eq!((status.state(), status.exit_code), (pb::TaskState::Failed, Some(3)), "{status:?}");
}
