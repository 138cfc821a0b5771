//! Native launch benchmark: `/bin/true` through the agent's executor in a fresh cgroup with
//! limits (create, limit, join before exec, wait, kill-all, stats, remove), contained (namespaces,
//! filesystem view, own uid, seccomp) and not, against plain
//! fork+exec+wait and against `runc run` of a busybox container, all in the same run.
//!
//! Needs root and a usable cgroup hierarchy. `runc` and `busybox-static` (Debian) are used if
//! installed; otherwise the output says so. `cargo bench -p skiff-agent --bench native_launch`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_agent::cgroup::CgroupManager;
use skiff_agent::executor::Executor;
use skiff_agent::runtime::native::{NativeConfig, NativeRuntime};
use skiff_agent::runtime::wasm::{WasmConfig, WasmRuntime};
use skiff_agent::task::TaskEvent;
use skiff_proto as pb;
use skiff_proto::TaskState;
use tokio::sync::mpsc;

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn figures(mut lat: Vec<Duration>, per_sec: f64) -> Figures {
    lat.sort();
    let at = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Figures { p50: at(0.5), p99: at(0.99), per_sec }
}

fn spec(n: u64) -> pb::TaskSpec {
    pb::TaskSpec {
        task_id: format!("t-{n}"),
        name: "true".into(),
        resources: Some(pb::Resources { cpus: 1.0, mem_bytes: 64 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "/bin/true".into(), ..Default::default() })),
        ..Default::default()
    }
}

fn wait_terminal(events: &mut mpsc::UnboundedReceiver<TaskEvent>) {
    loop {
        if let TaskEvent::Status(s) = events.blocking_recv().expect("events")
            && s.state() != TaskState::Running
        {
            assert_eq!(s.state(), TaskState::Finished, "{s:?}");
            return;
        }
    }
}

/// `contained`: the task in its namespaces, view, own uid and seccomp profile, as agents run them;
/// otherwise only its cgroup (as before containment), in the same run for comparison.
fn skiff_native(runs: usize, seconds: f64, contained: bool) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let agent_id = format!("bench-{}-{contained}", std::process::id());
    let cgroups = CgroupManager::new(Path::new("/sys/fs/cgroup"), &agent_id).expect("usable cgroups (run as root)");
    let config = NativeConfig { jail_root: contained.then(|| dir.path().join("jail")), ..NativeConfig::default() };
    let native = NativeRuntime::new(cgroups, config).unwrap();
    let mut wasm = WasmConfig::new(dir.path().join("module-cache"));
    wasm.instance_slots = 4;
    let (tx, mut events) = mpsc::unbounded_channel();
    // Contained: sandboxes are size-limited filesystems too; cgroup-only: plain directories.
    let disk = contained.then_some(skiff_agent::sandbox::disk::DEFAULT_BYTES);
    let sandboxes = skiff_agent::sandbox::Sandboxes::new(&dir.path().join("sandboxes"), disk).unwrap();
    let executor =
        Executor::new(agent_id, WasmRuntime::new(wasm).unwrap(), Ok(native), sandboxes, 1 << 20, tx).unwrap();
    let mut n = 0;
    for _ in 0..20 {
        executor.launch(spec(n));
        n += 1;
        wait_terminal(&mut events);
    }
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        executor.launch(spec(n));
        n += 1;
        wait_terminal(&mut events);
        lat.push(t.elapsed());
    }
    let window = 8;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let (mut launched, mut done) = (0u64, 0u64);
    while Instant::now() < deadline || done < launched {
        while Instant::now() < deadline && launched - done < window {
            executor.launch(spec(n));
            n += 1;
            launched += 1;
        }
        wait_terminal(&mut events);
        done += 1;
    }
    figures(lat, done as f64 / start.elapsed().as_secs_f64())
}

/// Latency of `runs` sequential calls, and throughput with one caller per core for `seconds`.
fn measure(runs: usize, seconds: f64, run: impl Fn(u64) + Sync) -> Figures {
    let mut lat = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        run(i as u64);
        lat.push(t.elapsed());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let run = &run;
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut c = 0u64;
                    while Instant::now() < deadline {
                        run(1_000_000 * (t as u64 + 1) + c);
                        c += 1;
                    }
                    c
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    figures(lat, total as f64 / start.elapsed().as_secs_f64())
}

/// A busybox bundle for runc, or why there is none.
fn runc_bundle(dir: &Path) -> Result<(), String> {
    let which = |c: &str| {
        Command::new("sh").args(["-c", &format!("command -v {c}")]).output().is_ok_and(|o| o.status.success())
    };
    if !which("runc") {
        return Err("runc is not installed (apt-get install runc)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("busybox is not installed (apt-get install busybox-static)".into());
    }
    let rootfs = dir.join("bundle/rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).map_err(|e| e.to_string())?;
    let spec = Command::new("runc").arg("spec").current_dir(dir.join("bundle")).output().map_err(|e| e.to_string())?;
    if !spec.status.success() {
        return Err(format!("runc spec failed: {}", String::from_utf8_lossy(&spec.stderr)));
    }
    let path = dir.join("bundle/config.json");
    let config = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let config = config.replace("\"terminal\": true", "\"terminal\": false").replace("\"sh\"", "\"/bin/true\"");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("state")).map_err(|e| e.to_string())?;
    Ok(())
}

fn runc_run(dir: &Path, id: u64) {
    let status = Command::new("runc")
        .arg("--root")
        .arg(dir.join("state"))
        .args(["run", "--bundle"])
        .arg(dir.join("bundle"))
        .arg(format!("bench-{}-{id}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc");
    assert!(status.success(), "runc run failed");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, secs, runc_runs) = if quick { (100, 2.0, 10) } else { (500, 5.0, 40) };
    let skiff = skiff_native(runs, secs, true);
    let cgroup_only = skiff_native(runs, secs, false);
    let fork = measure(runs, secs, |_| {
        assert!(Command::new("/bin/true").status().expect("spawn").success());
    });
    let runc_dir = tempfile::tempdir().unwrap();
    let runc = runc_bundle(runc_dir.path()).map(|()| measure(runc_runs, secs, |i| runc_run(runc_dir.path(), i)));

    println!("## Native launch → exit of `/bin/true` ({runs} sequential runs; throughput over {secs} s)");
    println!();
    println!("| path | p50 | p99 | tasks/s |");
    println!("|---|---|---|---|");
    println!(
        "| Skiff native task, contained (namespaces, view, own uid, seccomp, fresh cgroup, cleanup) | {} | {} | {:.0} |",
        ms(skiff.p50),
        ms(skiff.p99),
        skiff.per_sec
    );
    println!(
        "| Skiff native task, cgroup only (as before containment) | {} | {} | {:.0} |",
        ms(cgroup_only.p50),
        ms(cgroup_only.p99),
        cgroup_only.per_sec
    );
    println!("| fork+exec+wait `/bin/true` | {} | {} | {:.0} |", ms(fork.p50), ms(fork.p99), fork.per_sec);
    match &runc {
        Ok(r) => println!("| `runc run` busybox `true` | {} | {} | {:.0} |", ms(r.p50), ms(r.p99), r.per_sec),
        Err(why) => println!("| `runc run` busybox `true` | not measured: {why} | | |"),
    }
    println!();
    print!(
        "Skiff native vs fork+exec: p50 {:.2}×, throughput {:.2}×",
        skiff.p50.as_secs_f64() / fork.p50.as_secs_f64(),
        skiff.per_sec / fork.per_sec
    );
    if let Ok(r) = &runc {
        print!(
            "; vs runc: p50 {:.1}× faster, throughput {:.1}×",
            r.p50.as_secs_f64() / skiff.p50.as_secs_f64(),
            skiff.per_sec / r.per_sec
        );
    }
    println!(".");
    println!(
        "Containment costs {:.2} ms at p50 ({:.2}× the cgroup-only launch).",
        (skiff.p50.as_secs_f64() - cgroup_only.p50.as_secs_f64()) * 1e3,
        skiff.p50.as_secs_f64() / cgroup_only.p50.as_secs_f64()
    );
}
