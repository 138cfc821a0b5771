//! The Wasm runtime on real wasmtime with real guests (built by scripts/build-guests with Debian's
//! Rust 1.63) and WAT modules: every limit and terminal reason, the sandbox, the module pipeline
//! and the compiled-module cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_agent::executor::Executor;
use skiff_agent::runtime::wasm::{WasmConfig, WasmRuntime};
use skiff_agent::sandbox::Sandboxes;
use skiff_agent::task::TaskEvent;
use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};
use tokio::sync::mpsc;

/// Tests that measure time or CPU, or burn both cores, take this so they don't skew each other.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../examples/guests/target/wasm32-wasi/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("guest {} missing ({e}): run scripts/build-guests", path.display()))
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

struct Harness {
    executor: Executor,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    work_dir: PathBuf,
    next: u32,
}

#[derive(Debug, Default)]
struct Outcome {
    running_at: Option<Instant>,
    status: pb::TaskStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
    usage_reports: usize,
}

fn spec(module: Vec<u8>) -> pb::TaskSpec {
    pb::TaskSpec {
        name: "test".into(),
        resources: Some(pb::Resources { cpus: 1.0, mem_bytes: 64 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask { module, module_sha256: String::new(), module_size: 0 })),
        ..Default::default()
    }
}

impl Harness {
    fn new(work_dir: &Path) -> Harness {
        Self::with(work_dir, |_| {})
    }

    fn with(work_dir: &Path, tweak: impl FnOnce(&mut WasmConfig)) -> Harness {
        let mut config = WasmConfig::new(work_dir.join("module-cache"));
        config.instance_slots = 64;
        config.max_module_bytes = 8 << 20;
        // Compiled as an agent does: in a child process running the agent's binary.
        config.compile.program = Some(env!("CARGO_BIN_EXE_skiff-agent").into());
        tweak(&mut config);
        let runtime = WasmRuntime::new(config).expect("runtime");
        let (tx, events) = mpsc::unbounded_channel();
        let executor = Executor::new(
            "a-test".into(),
            runtime,
            Err("not under test".into()),
            Sandboxes::new(&work_dir.join("sandboxes"), Some(64 << 20)).unwrap(),
            1 << 20,
            tx,
        )
        .expect("executor");
        Harness { executor, events, work_dir: work_dir.to_path_buf(), next: 0 }
    }

    fn launch(&mut self, mut spec: pb::TaskSpec) -> String {
        self.next += 1;
        spec.task_id = format!("t-{}", self.next);
        let id = spec.task_id.clone();
        self.executor.launch(spec);
        id
    }

    /// Collects events of `task_id` until its terminal status (other tasks' events are dropped).
    async fn wait(&mut self, task_id: &str, within: Duration) -> Outcome {
        let mut out = Outcome::default();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("task {task_id} did not end within {within:?}"))
                .expect("event channel open");
            match event {
                TaskEvent::Status(s) if s.task_id == task_id => {
                    if s.state() == TaskState::Running {
                        out.running_at = Some(Instant::now());
                    } else {
                        out.status = s;
                        return out;
                    }
                }
                TaskEvent::Output(o) if o.task_id == task_id => {
                    out.truncated |= o.truncated;
                    if o.stream == pb::OutputStream::Stderr as i32 {
                        out.stderr.extend(o.data);
                    } else {
                        out.stdout.extend(o.data);
                    }
                }
                TaskEvent::Usage(u) if u.task_id == task_id => out.usage_reports += 1,
                _ => {}
            }
        }
    }

    async fn run(&mut self, spec: pb::TaskSpec) -> Outcome {
        let id = self.launch(spec);
        self.wait(&id, Duration::from_secs(60)).await
    }

    /// Waits for the RUNNING status of `task_id`.
    async fn wait_running(&mut self, task_id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await.expect("RUNNING in time") {
                Some(TaskEvent::Status(s)) if s.task_id == task_id && s.state() == TaskState::Running => {
                    return;
                }
                Some(TaskEvent::Status(s)) if s.task_id == task_id => {
                    panic!("ended before running: {s:?}")
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    }
}

fn usage(o: &Outcome) -> pb::Usage {
    o.status.usage.clone().unwrap_or_default()
}

fn assert_reason(o: &Outcome, state: TaskState, reason: Reason) {
    assert_eq!((o.status.state(), o.status.reason()), (state, reason), "{:?}", o.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_hits_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("memhog"));
    s.resources.as_mut().unwrap().mem_bytes = 16 << 20;
    let o = h.run(s).await;
    assert_reason(&o, TaskState::Failed, Reason::MemoryLimit);
    assert!(o.status.message.contains("limit of 16777216 bytes"), "{}", o.status.message);
    let peak = usage(&o).peak_memory_bytes;
    assert!(peak <= 16 << 20 && peak > 8 << 20, "peak {peak}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("holding 10 MiB"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_share_holds_a_busy_guest_to_a_quarter_core() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("spin"));
    s.args = vec!["3000".into()];
    s.resources.as_mut().unwrap().cpus = 0.25;
    let o = h.run(s).await;
    assert_reason(&o, TaskState::Finished, Reason::Exited);
    let u = usage(&o);
    let share = u.cpu_time_us as f64 / u.wall_time_us as f64;
    assert!((0.15..=0.35).contains(&share), "share {share:.3} (cpu {} us, wall {} us)", u.cpu_time_us, u.wall_time_us);
    assert!(o.usage_reports >= 2, "usage reported while running: {}", o.usage_reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_an_infinite_loop_with_time_limit() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("spin"));
    s.limits = Some(pb::Limits { timeout_ms: 500, ..Default::default() });
    let o = h.run(s).await;
    let took = o.running_at.expect("it ran").elapsed();
    assert_reason(&o, TaskState::Failed, Reason::TimeLimit);
    let wall = Duration::from_micros(usage(&o).wall_time_us);
    for d in [took, wall] {
        assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(600), "{d:?} not within 500 ms ± 20%");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_a_spinning_guest_within_100ms() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let id = h.launch(spec(guest("spin")));
    h.wait_running(&id).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // let it spin for real
    let killed_at = Instant::now();
    assert!(h.executor.kill(&id));
    let o = h.wait(&id, Duration::from_secs(5)).await;
    let took = killed_at.elapsed();
    assert_reason(&o, TaskState::Killed, Reason::Killed);
    assert!(took <= Duration::from_millis(100), "kill took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("spin"));
    s.limits = Some(pb::Limits { fuel: 2_000_000, ..Default::default() });
    let o = h.run(s).await;
    assert_reason(&o, TaskState::Failed, Reason::OutOfFuel);
    assert_eq!(usage(&o).fuel_consumed, 2_000_000);

    // Deterministic: a task that fits its budget reports the same fuel every time.
    let counted = |h: &mut Harness| {
        let mut s = spec(guest("primes"));
        s.args = vec!["2000".into()];
        s.limits = Some(pb::Limits { fuel: 1_000_000_000, ..Default::default() });
        h.launch(s)
    };
    let a = counted(&mut h);
    let oa = h.wait(&a, Duration::from_secs(30)).await;
    let b = counted(&mut h);
    let ob = h.wait(&b, Duration::from_secs(30)).await;
    assert_reason(&oa, TaskState::Finished, Reason::Exited);
    assert!(usage(&oa).fuel_consumed > 0);
    assert_eq!(usage(&oa).fuel_consumed, usage(&ob).fuel_consumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_are_named_and_proc_exit_is_an_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let cases = [
        (r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#, "unreachable"),
        (r#"(module (memory (export "memory") 1) (func $f (export "_start") call $f))"#, "stack overflow"),
        (
            r#"(module (memory (export "memory") 1) (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#,
            "integer divide by zero",
        ),
    ];
    for (text, trap) in cases {
        let o = h.run(spec(wat(text))).await;
        assert_reason(&o, TaskState::Failed, Reason::Trap);
        assert!(o.status.message.contains(trap), "{trap}: {}", o.status.message);
    }
    let exit7 = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 7))))"#;
    let o = h.run(spec(wat(exit7))).await;
    assert_reason(&o, TaskState::Failed, Reason::Exited);
    assert_eq!(o.status.exit_code, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_is_the_only_filesystem_and_env_comes_from_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("sandbox"));
    s.env = HashMap::from([("ONLY_THIS".to_owned(), "1".to_owned())]);
    let id = h.launch(s);
    let o = h.wait(&id, Duration::from_secs(30)).await;
    assert_reason(&o, TaskState::Finished, Reason::Exited);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("write /result.txt: ok"), "{out}");
    for escape in ["read /etc/passwd: denied", "read ../../etc/passwd: denied", "read /../../../etc/hostname: denied"] {
        assert!(out.contains(escape), "{escape} in {out}");
    }
    // The spec's variables and the task's own id, nothing of the agent's environment.
    let names = out.lines().find_map(|l| l.strip_prefix("env: ")).expect("an env line");
    let mut names: Vec<&str> = names.split(',').collect();
    names.sort();
    assert_eq!(names, ["ONLY_THIS", "SKIFF_TASK_ID"], "{out}");
    let written = std::fs::read_to_string(h.work_dir.join("sandboxes").join(&id).join("result.txt")).unwrap();
    assert_eq!(written, "written by the sandbox guest\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_its_bound_is_truncated_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut s = spec(guest("memhog"));
    s.args = vec!["40".into()]; // 40 lines of "holding N MiB"
    s.limits = Some(pb::Limits { max_output_bytes: 100, ..Default::default() });
    let o = h.run(s).await;
    assert_reason(&o, TaskState::Finished, Reason::Exited);
    assert_eq!(o.stdout.len(), 100);
    assert!(o.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_are_rejected_with_a_reason_and_the_agent_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let mut malformed = wat(r#"(module (func (export "_start")))"#);
    malformed.truncate(malformed.len() - 3);
    let mut oversize = b"\0asm\x01\0\0\0".to_vec();
    oversize.resize(9 << 20, 0);
    let cases: [(Vec<u8>, &str); 5] = [
        (malformed, "invalid Wasm module"),
        (b"#!/bin/sh\necho I am a text file\n".to_vec(), "does not start with the \\0asm magic"),
        (oversize, "over this agent's limit"),
        (b"\0asm\x0d\0\x01\0rest".to_vec(), "not a core Wasm module"),
        (wat(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#), "cannot be linked"),
    ];
    for (module, reason) in cases {
        let o = h.run(spec(module)).await;
        assert_reason(&o, TaskState::Failed, Reason::InvalidTask);
        assert!(o.status.message.contains(reason), "{reason}: {}", o.status.message);
    }
    let o = h.run(spec(guest("hello"))).await;
    assert_reason(&o, TaskState::Finished, Reason::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_compiles_once_per_agent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = Harness::new(dir.path());
        let first = h.run(spec(guest("hello"))).await;
        let second = h.run(spec(guest("hello"))).await;
        assert_eq!(usage(&first).module_cache, "compiled");
        assert_eq!(usage(&second).module_cache, "memory");
        let stats = h.executor.wasm().cache_stats();
        assert_eq!((stats.compiled, stats.memory_hits), (1, 1));
        assert_eq!(h.executor.wasm().cached_modules().len(), 1);
    }
    // A new runtime on the same work directory (an agent restart) loads the artifact from disk.
    let mut h = Harness::new(dir.path());
    let third = h.run(spec(guest("hello"))).await;
    assert_eq!(usage(&third).module_cache, "disk");
    assert_eq!(h.executor.wasm().cache_stats().compiled, 0);

    // A corrupted artifact is detected and recompiled, never loaded.
    drop(h);
    for entry in walk(&dir.path().join("module-cache")) {
        if entry.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&entry).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&entry, bytes).unwrap();
        }
    }
    let mut h = Harness::new(dir.path());
    let fourth = h.run(spec(guest("hello"))).await;
    assert_reason(&fourth, TaskState::Finished, Reason::Exited);
    assert_eq!(usage(&fourth).module_cache, "compiled");
}

/// Both caches stay within `--module-cache-mib`: with room for one module only, each new module
/// pushes the last one out of memory and off the disk, and it is compiled again when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_caches_keep_within_their_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::with(dir.path(), |c| c.module_cache_bytes = 1);
    let modules = [
        guest("hello"),
        wat(r#"(module (func (export "_start")))"#),
        wat(r#"(module (func (export "_start") (drop (i32.const 7))))"#),
    ];
    for module in &modules {
        let o = h.run(spec(module.clone())).await;
        assert_reason(&o, TaskState::Finished, Reason::Exited);
        assert_eq!(usage(&o).module_cache, "compiled");
    }
    let stats = h.executor.wasm().cache_stats();
    assert_eq!((stats.memory_evictions, stats.disk_evictions), (2, 2), "{stats:?}");
    assert_eq!(h.executor.wasm().cached_modules().len(), 1);
    let on_disk = walk(&dir.path().join("module-cache"));
    assert_eq!(on_disk.iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).count(), 1, "{on_disk:?}");
    assert_eq!(on_disk.iter().filter(|p| p.extension().is_some_and(|e| e == "sum")).count(), 1, "{on_disk:?}");
    // The last one is still cached; the first was evicted from both and compiles again.
    let o = h.run(spec(modules[2].clone())).await;
    assert_eq!(usage(&o).module_cache, "memory");
    let o = h.run(spec(modules[0].clone())).await;
    assert_eq!(usage(&o).module_cache, "compiled");

    // A restart counts what is on disk toward the bound.
    drop(h);
    let h = Harness::with(dir.path(), |c| c.module_cache_bytes = 1);
    let on_disk = walk(&dir.path().join("module-cache"));
    assert_eq!(on_disk.iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).count(), 1, "{on_disk:?}");
    drop(h);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compile_does_not_stall_other_tasks() {
    let _serial = TIMING.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    // A module with a few huge functions: slow to compile.
    let body: String = (0..100_000).map(|i| format!("(drop (i32.add (local.get 0) (i32.const {i})))")).collect();
    let funcs: String = (0..8).map(|f| format!("(func $f{f} (local i32) {body})")).collect();
    let big = wat(&format!(r#"(module (memory (export "memory") 1) {funcs} (func (export "_start")))"#));
    let t0 = Instant::now();
    let slow = h.launch(spec(big));
    let fast = h.launch(spec(guest("hello")));
    // Both end; the small one long before the big one has finished compiling.
    let mut ended = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while ended.len() < 2 {
        let event = tokio::time::timeout_at(deadline, h.events.recv()).await.expect("both end in time").unwrap();
        if let TaskEvent::Status(s) = event
            && s.state() != TaskState::Running
        {
            assert_eq!(s.state(), TaskState::Finished, "{s:?}");
            ended.push((s.task_id, t0.elapsed()));
        }
    }
    assert_eq!(ended[0].0, fast, "the small task ends first: {ended:?}");
    assert_eq!(ended[1].0, slow);
    assert!(ended[1].1 > ended[0].1 * 2, "the big compile took much longer than the small task: {ended:?}");
}
