//! Native tasks on the real cgroup hierarchy of this host (v1 here; v2 hosts work the same way,
//! and the v2 files are asserted on a fake cgroupfs in the unit tests). Needs root, as CI has.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_agent::cgroup::CgroupManager;
use skiff_agent::executor::Executor;
use skiff_agent::runtime::native::{NativeConfig, NativeRuntime};
use skiff_agent::runtime::wasm::{WasmConfig, WasmRuntime};
use skiff_agent::sandbox::Sandboxes;
use skiff_agent::task::TaskEvent;
use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};
use tokio::sync::mpsc;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// CPU- and time-sensitive tests take this so they don't skew each other.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    executor: Executor,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    agent_id: String,
    _dir: tempfile::TempDir,
    next: u32,
}

#[derive(Debug, Default)]
struct Outcome {
    status: pb::TaskStatus,
    stdout: String,
}

impl Harness {
    fn new(name: &str) -> Harness {
        assert!(nix::unistd::geteuid().is_root(), "these tests create cgroups: run them as root (CI does)");
        let dir = tempfile::tempdir().unwrap();
        let agent_id = format!("test-{name}-{}", std::process::id());
        let cgroups = CgroupManager::new(Path::new(CGROUP_ROOT), &agent_id).expect("a usable cgroup hierarchy");
        // Contained as an agent's tasks are.
        let config =
            NativeConfig { pids_max: 256, jail_root: Some(dir.path().join("jail")), ..NativeConfig::default() };
        let native = NativeRuntime::new(cgroups, config).unwrap();
        let mut config = WasmConfig::new(dir.path().join("module-cache"));
        config.instance_slots = 4;
        let wasm = WasmRuntime::new(config).unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let sandboxes = Sandboxes::new(&dir.path().join("sandboxes"), Some(64 << 20)).unwrap();
        let executor = Executor::new(agent_id.clone(), wasm, Ok(native), sandboxes, 1 << 20, tx).unwrap();
        Harness { executor, events, agent_id, _dir: dir, next: 0 }
    }

    fn spec(&mut self, args: &[&str], mem: u64, cpus: f64, timeout_ms: u64) -> pb::TaskSpec {
        self.next += 1;
        pb::TaskSpec {
            task_id: format!("t-{}", self.next),
            name: args[0].into(),
            resources: Some(pb::Resources { cpus, mem_bytes: mem, ..Default::default() }),
            limits: Some(pb::Limits { timeout_ms, ..Default::default() }),
            args: args[1..].iter().map(|s| s.to_string()).collect(),
            kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: args[0].into(), ..Default::default() })),
            ..Default::default()
        }
    }

    async fn wait(&mut self, task_id: &str, within: Duration) -> Outcome {
        let mut out = Outcome::default();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{task_id} did not end within {within:?}"))
                .expect("events");
            match event {
                TaskEvent::Status(s) if s.task_id == task_id && s.state() != TaskState::Running => {
                    out.status = s;
                    return out;
                }
                TaskEvent::Output(o) if o.task_id == task_id && o.stream == pb::OutputStream::Stdout as i32 => {
                    out.stdout.push_str(&String::from_utf8_lossy(&o.data));
                }
                _ => {}
            }
        }
    }

    async fn run(&mut self, spec: pb::TaskSpec, within: Duration) -> Outcome {
        let id = spec.task_id.clone();
        self.executor.launch(spec);
        self.wait(&id, within).await
    }

    fn cgroup_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        ["cpu", "cpuacct", "memory", "pids", "freezer"]
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c).join("skiff").join(&self.agent_id).join(task_id))
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The agent's parent cgroups: empty once its tasks are gone.
        for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
            let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join(c).join("skiff").join(&self.agent_id));
        }
    }
}

fn usage(o: &Outcome) -> pb::Usage {
    o.status.usage.clone().unwrap_or_default()
}

fn reason(o: &Outcome) -> (TaskState, Reason) {
    (o.status.state(), o.status.reason())
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_past_the_memory_limit_is_reported_as_oom() {
    let mut h = Harness::new("oom");
    let spec = h.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"], 64 * MIB, 1.0, 30_000);
    let o = h.run(spec, Duration::from_secs(60)).await;
    assert_eq!(reason(&o), (TaskState::Failed, Reason::Oom), "{:?}", o.status);
    let peak = usage(&o).peak_memory_bytes;
    assert!((60 * MIB..=66 * MIB).contains(&peak), "peak {} MiB, want ≈ 64", peak / MIB);
    assert!(o.status.message.contains("OOM killer"), "{}", o.status.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_allocated_before_any_attach_is_charged() {
    // The child joins its cgroup before exec, so even the first allocation of the program counts.
    let mut h = Harness::new("charge");
    let spec = h.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=50M", "count=1"], 256 * MIB, 1.0, 30_000);
    let o = h.run(spec, Duration::from_secs(60)).await;
    assert_eq!(reason(&o), (TaskState::Finished, Reason::Exited), "{:?}", o.status);
    let peak = usage(&o).peak_memory_bytes;
    assert!(peak >= 50 * MIB, "peak {} MiB must include the 50 MiB buffer", peak / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_held_to_its_cpu_quota() {
    let _serial = TIMING.lock().await;
    let mut h = Harness::new("cpu");
    let spec = h.spec(&["sh", "-c", "while :; do :; done"], 64 * MIB, 0.2, 3_000);
    let o = h.run(spec, Duration::from_secs(30)).await;
    assert_eq!(reason(&o), (TaskState::Failed, Reason::TimeLimit), "{:?}", o.status);
    let u = usage(&o);
    let share = u.cpu_time_us as f64 / u.wall_time_us as f64;
    assert!((0.1..=0.3).contains(&share), "used {share:.3} of a core under --cpus 0.2 ({u:?})");
    assert!(u.throttled_periods > 0, "the quota throttled it: {u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let _serial = TIMING.lock().await;
    let mut h = Harness::new("forkbomb");
    let spec = h.spec(&["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 5"], 256 * MIB, 1.0, 1_500);
    let id = spec.task_id.clone();
    let o = h.run(spec, Duration::from_secs(60)).await;
    assert_eq!(reason(&o), (TaskState::Failed, Reason::TimeLimit), "{:?}", o.status);
    for dir in h.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    // The agent keeps serving.
    let spec = h.spec(&["true"], 16 * MIB, 0.5, 10_000);
    let o = h.run(spec, Duration::from_secs(30)).await;
    assert_eq!(reason(&o), (TaskState::Finished, Reason::Exited), "{:?}", o.status);
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: it runs nothing and holds no memory.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_leaves_no_process_and_no_cgroup() {
    let mut h = Harness::new("kill");
    let spec = h.spec(&["sh", "-c", "sleep 1000 & sleep 1000 & (sleep 1000 &) ; echo started; wait"], 64 * MIB, 0.5, 0);
    let id = spec.task_id.clone();
    h.executor.launch(spec);
    // Wait until the grandchildren exist: four processes in the task's cgroup.
    let procs_file = h.cgroup_dirs(&id)[2].join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids: Vec<u32> = loop {
        let pids: Vec<u32> = std::fs::read_to_string(&procs_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.len() >= 4 {
            break pids;
        }
        assert!(Instant::now() < deadline, "processes never appeared: {pids:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(h.executor.kill(&id));
    let o = h.wait(&id, Duration::from_secs(20)).await;
    assert_eq!(reason(&o), (TaskState::Killed, Reason::Killed), "{:?}", o.status);
    for pid in pids {
        assert!(!alive(pid), "process {pid} of the task survived its kill");
    }
    for dir in h.cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_their_own_uid_in_their_sandbox_with_only_their_env() {
    let mut h = Harness::new("user");
    let mut spec = h.spec(&["sh", "-c", "id -u; pwd; env | sort; touch made-here"], 64 * MIB, 0.5, 10_000);
    spec.env.insert("ONLY".into(), "this".into());
    let o = h.run(spec, Duration::from_secs(30)).await;
    assert_eq!(reason(&o), (TaskState::Finished, Reason::Exited), "{:?}", o.status);
    let lines: Vec<&str> = o.stdout.lines().collect();
    let uid: u32 = lines[0].parse().unwrap();
    assert!((200_000..=265_535).contains(&uid), "runs as a uid of the default range: {}", o.stdout);
    assert_eq!(lines[1], "/sandbox", "cwd is the sandbox: {}", o.stdout);
    assert!(o.stdout.contains("ONLY=this"), "{}", o.stdout);
    assert!(!o.stdout.contains("HOME=") && !o.stdout.contains("CARGO"), "no agent env leaks: {}", o.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_fails_with_a_clear_reason() {
    let mut h = Harness::new("missing");
    let spec = h.spec(&["no-such-command-skiff"], 16 * MIB, 0.5, 10_000);
    let o = h.run(spec, Duration::from_secs(30)).await;
    assert_eq!(reason(&o), (TaskState::Failed, Reason::InvalidTask), "{:?}", o.status);
    assert!(o.status.message.contains("command not found: no-such-command-skiff"), "{}", o.status.message);
    let spec = h.spec(&["sh", "-c", "exit 5"], 16 * MIB, 0.5, 10_000);
    let o = h.run(spec, Duration::from_secs(30)).await;
    assert_eq!(o.status.exit_code, Some(5));
}
