//! An agent restart keeps its tasks: SIGKILL the agent while 5 native and 5 Wasm tasks run, start
//! it again on the same work directory, and the same processes (the native tasks' pids, the executor
//! process holding the Wasm instances) are still running, are re-attached, and finish with their
//! real exit codes, each reported once. One agent at a time owns a work directory.

mod fleet;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fleet::{Cluster, runs, text};
use skiff_proto as pb;

/// Sleeps (poll_oneoff on a monotonic clock) for `secs` seconds, then exits with `code`.
fn sleeper_wasm(secs: u64, code: i32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const {nanos}))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
            (call $exit (i32.const {code}))))"#,
        nanos = secs * 1_000_000_000
    ))
    .expect("wat")
}

fn submit(cluster: &Cluster, dir: &std::path::Path, name: &str, body: &str) -> String {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, body).unwrap();
    let out = cluster.skiff(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn instances(cluster: &Cluster, job: &str) -> Vec<pb::JobInstance> {
    fleet::job_status(&cluster.addr, job).map(|j| j.instances).unwrap_or_default()
}

fn state(i: &pb::JobInstance) -> pb::TaskState {
    i.status.as_ref().map_or(pb::TaskState::Unspecified, |s| s.state())
}

fn is_terminal(s: pb::TaskState) -> bool {
    matches!(s, pb::TaskState::Finished | pb::TaskState::Failed | pb::TaskState::Killed | pb::TaskState::Lost)
}

/// Every status the coordinator applied to `task_id`.
fn history(addr: &str, task_id: &str) -> Vec<pb::TaskStatus> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client =
            pb::operator_service_client::OperatorServiceClient::new(fleet::pki::channel(addr).await.unwrap());
        let req = pb::WatchTaskRequest { task_id: task_id.into(), history_only: true, ..Default::default() };
        let mut stream = client.watch_task(req).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            if let Some(pb::task_event::Event::Status(s)) = event.event {
                out.push(s);
            }
        }
        out
    })
}

/// A process as (pid, start time) from /proc, if it still runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

#[test]
fn agent_restart_keeps_native_and_wasm_tasks_running_and_reports_their_real_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    // Native tasks see this directory (the agent's --task-host-dir), each as a uid of its own:
    // they record their starts there.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut cluster = Cluster::start(&[], &[&["--task-host-dir", shared.to_str().unwrap()]]);
    // Each sleeps a length of its own, to be found in the host's /proc by its command line.
    let base = 60 + std::process::id() % 1000;
    let native = submit(
        &cluster,
        dir.path(),
        "native",
        &format!(
            "name = \"native\"\ninstances = 5\n[task]\nnative = [\"/bin/sh\", \"-c\", \
             \"echo $SKIFF_TASK_ID >> {}/$SKIFF_INSTANCE.pid; timeout 6 sleep {base}.$SKIFF_INSTANCE; exit 7\"]\n\
             cpus = 0.1\nmem = \"16M\"\n",
            shared.display()
        ),
    );
    let module = dir.path().join("sleeper.wasm");
    std::fs::write(&module, sleeper_wasm(6, 3)).unwrap();
    let wasm = submit(
        &cluster,
        dir.path(),
        "wasm",
        &format!("name = \"wasm\"\ninstances = 5\n[task]\nwasm = {:?}\ncpus = 0.1\n", module.display().to_string()),
    );
    fleet::eventually(Duration::from_secs(20), "all 10 tasks running", || {
        let all: Vec<_> = [&native, &wasm].iter().flat_map(|j| instances(&cluster, j)).collect();
        let pids = (0..5).filter(|i| shared.join(format!("{i}.pid")).exists()).count();
        (all.len() == 10 && all.iter().all(|i| state(i) == pb::TaskState::Running) && pids == 5).then_some(())
    });
    let pids: Vec<(u32, u64)> = (0..5)
        .map(|i| {
            let sleep = format!("sleep\0{base}.{i}\0");
            let pid = fleet::eventually(Duration::from_secs(10), "the native sleep", || fleet::pid_of(&sleep));
            (pid, start_time(pid).expect("the native task runs"))
        })
        .collect();
    let work_dir = cluster.work_dirs[0].path().to_owned();
    let executor_pid = std::fs::read_to_string(work_dir.join("executor.pid")).unwrap();

    cluster.kill_agent(0);
    for (pid, started) in &pids {
        assert_eq!(start_time(*pid), Some(*started), "native task {pid} died with its agent");
    }
    cluster.restart_agent(0);
    assert_eq!(std::fs::read_to_string(work_dir.join("executor.pid")).unwrap(), executor_pid, "a new executor");

    let ended = fleet::eventually(Duration::from_secs(30), "every task ended", || {
        let all: Vec<_> = [&native, &wasm].iter().flat_map(|j| instances(&cluster, j)).collect();
        (all.len() == 10 && all.iter().all(|i| is_terminal(state(i)))).then_some(all)
    });
    for (i, instance) in ended.iter().enumerate() {
        let status = instance.status.clone().unwrap();
        let want = if i < 5 { 7 } else { 3 };
        assert_eq!(
            (status.state(), status.reason(), status.exit_code),
            (pb::TaskState::Failed, pb::Reason::Exited, Some(want)),
            "instance {i}: {status:?}"
        );
        assert_eq!(instance.attempts, 1, "instance {i} started again");
        let terminal: Vec<_> =
            history(&cluster.addr, &instance.task_id).into_iter().filter(|s| is_terminal(s.state())).collect();
        assert_eq!(terminal.len(), 1, "instance {i}: terminal updates {terminal:?}");
    }
    for i in 0..5 {
        let lines = std::fs::read_to_string(shared.join(format!("{i}.pid"))).unwrap();
        assert_eq!(lines.lines().count(), 1, "native instance {i} started more than once: {lines}");
    }
}

/// A running native `sleep` of a length of its own (`base` + pid), as job `name`; returns the job
/// id and the sleep's command line (to look for in /proc).
fn sleeping_job(cluster: &Cluster, dir: &std::path::Path, name: &str, base: u32) -> (String, String) {
    let secs = format!("{}", base + std::process::id() % 1000);
    let job = submit(
        cluster,
        dir,
        name,
        &format!("name = \"{name}\"\n[task]\nnative = [\"/bin/sleep\", \"{secs}\"]\ncpus = 0.1\nmem = \"16M\"\n"),
    );
    let cmdline = format!("/bin/sleep\0{secs}\0");
    fleet::eventually(Duration::from_secs(20), "the task running", || {
        (instances(cluster, &job).first().map(state) == Some(pb::TaskState::Running) && runs(&cmdline)).then_some(())
    });
    (job, cmdline)
}

#[test]
fn a_dead_executor_takes_its_tasks_with_it_they_are_lost_and_a_new_one_serves() {
    let cluster = Cluster::start(&[], &[&[]]);
    let dir = tempfile::tempdir().unwrap();
    let (job, sleep) = sleeping_job(&cluster, dir.path(), "orphan", 300);
    let sleeping = || runs(&sleep);
    let pid_file = cluster.work_dirs[0].path().join("executor.pid");
    let first = std::fs::read_to_string(&pid_file).unwrap();
    let pid: i32 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();

    let lost = fleet::eventually(Duration::from_secs(20), "the task reported LOST", || {
        let i = instances(&cluster, &job).into_iter().next()?;
        (state(&i) == pb::TaskState::Lost).then_some(i)
    });
    assert_eq!(lost.status.unwrap().reason(), pb::Reason::AgentLost);
    // The new executor removed what the dead one left in the agent's cgroups.
    fleet::eventually(Duration::from_secs(10), "the orphaned task killed", || (!sleeping()).then_some(()));
    fleet::eventually(Duration::from_secs(10), "a new executor process", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|now| now != first).then_some(())
    });

    a_wasm_task_finishes(&cluster, dir.path(), "next");
}

/// Submits a Wasm task that exits at once as job `name` and waits until it finished.
fn a_wasm_task_finishes(cluster: &Cluster, dir: &std::path::Path, name: &str) {
    let module = dir.join(format!("{name}.wasm"));
    std::fs::write(&module, sleeper_wasm(0, 0)).unwrap();
    let body = format!("name = \"{name}\"\n[task]\nwasm = {:?}\n", module.display().to_string());
    let job = submit(cluster, dir, name, &body);
    fleet::eventually(Duration::from_secs(20), &format!("task {name} finished"), || {
        (instances(cluster, &job).first().map(state) == Some(pb::TaskState::Finished)).then_some(())
    });
}

#[test]
fn a_damaged_executor_record_means_tasks_are_killed_and_reported_lost_never_run_twice() {
    let mut cluster = Cluster::start(&[], &[&[]]);
    let dir = tempfile::tempdir().unwrap();
    let (job, sleep) = sleeping_job(&cluster, dir.path(), "unaccounted", 1300);
    let sleeping = || runs(&sleep);
    let pid_file = cluster.work_dirs[0].path().join("executor.pid");
    let old: u32 = std::fs::read_to_string(&pid_file).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    cluster.kill_agent(0);
    // The record naming the executor is torn: the next agent cannot know that process.
    std::fs::write(&pid_file, "garbage").unwrap();
    cluster.restart_agent(0);

    let lost = fleet::eventually(Duration::from_secs(20), "the task reported LOST", || {
        let i = instances(&cluster, &job).into_iter().next()?;
        (state(&i) == pb::TaskState::Lost).then_some(i)
    });
    assert_eq!(lost.status.unwrap().reason(), pb::Reason::AgentLost);
    fleet::eventually(Duration::from_secs(10), "the unaccounted task killed", || (!sleeping()).then_some(()));
    fleet::eventually(Duration::from_secs(10), "the old executor gone", || {
        (!std::path::Path::new(&format!("/proc/{old}")).exists()).then_some(())
    });
    assert_eq!(instances(&cluster, &job)[0].attempts, 1, "run again");
}

#[test]
fn a_stolen_executor_connection_is_taken_back_and_its_tasks_are_kept() {
    let cluster = Cluster::start(&[], &[&[]]);
    let dir = tempfile::tempdir().unwrap();
    let job = submit(
        &cluster,
        dir.path(),
        "kept",
        "name = \"kept\"\n[task]\nnative = [\"/bin/sh\", \"-c\", \"sleep 3; exit 5\"]\ncpus = 0.1\nmem = \"16M\"\n",
    );
    fleet::eventually(Duration::from_secs(20), "the task running", || {
        (instances(&cluster, &job).first().map(state) == Some(pb::TaskState::Running)).then_some(())
    });
    // Another client connects: the executor drops the agent's connection for it. The agent must
    // find the same executor again, not take its tasks for lost.
    let stray = std::os::unix::net::UnixStream::connect(cluster.work_dirs[0].path().join("executor.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stray);
    let ended = fleet::eventually(Duration::from_secs(20), "the task ended", || {
        let i = instances(&cluster, &job).into_iter().next()?;
        is_terminal(state(&i)).then_some(i)
    });
    let status = ended.status.unwrap();
    assert_eq!((status.state(), status.exit_code), (pb::TaskState::Failed, Some(5)), "{status:?}");
    assert_eq!(ended.attempts, 1);
}

#[test]
fn a_second_agent_on_the_same_work_directory_is_refused_and_the_first_keeps_its_executor() {
    let cluster = Cluster::start(&[], &[&[]]);
    let work_dir = cluster.work_dirs[0].path();
    let pid_file = work_dir.join("executor.pid");
    let executor = std::fs::read_to_string(&pid_file).unwrap();
    let mut second = std::process::Command::new(fleet::bin("skiff-agent"));
    second.args(["--coordinators", &cluster.addr, "--work-dir"]).arg(work_dir);
    let out = fleet::run_bounded(second, None, Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let holder = format!("in use by another agent (pid {})", cluster.agents[0].child.id());
    assert!(stderr.contains(&holder), "{stderr}");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), executor, "the executor was replaced");

    a_wasm_task_finishes(&cluster, tempfile::tempdir().unwrap().path(), "after");
}
