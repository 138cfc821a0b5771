//! Agent-local launch benchmark: a trivial Wasm task, launch → exit, through the agent's executor
//! (spec checks, sandbox directory, module cache hit, WASI context, pooled instance, `_start`,
//! status events), against fork+exec+wait of `/bin/true` measured in the same run.
//!
//! `cargo bench -p skiff-agent --bench launch` (add `-- --quick` for a short run).

use std::process::Command;
use std::time::{Duration, Instant};

use skiff_agent::executor::Executor;
use skiff_agent::runtime::wasm::{WasmConfig, WasmRuntime};
use skiff_agent::task::TaskEvent;
use skiff_proto as pb;
use skiff_proto::TaskState;
use tokio::sync::mpsc;

const TRIVIAL: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn spec(module: &[u8], n: u64) -> pb::TaskSpec {
    pb::TaskSpec {
        task_id: format!("t-{n}"),
        name: "trivial".into(),
        resources: Some(pb::Resources { cpus: 1.0, mem_bytes: 1 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
            module: module.to_vec(),
            module_sha256: String::new(),
            module_size: 0,
        })),
        ..Default::default()
    }
}

/// Waits for the terminal status of any task; returns its id.
fn wait_terminal(events: &mut mpsc::UnboundedReceiver<TaskEvent>) -> String {
    loop {
        match events.blocking_recv().expect("events") {
            TaskEvent::Status(s) if s.state() != TaskState::Running => {
                assert_eq!(s.state(), TaskState::Finished, "{s:?}");
                return s.task_id;
            }
            _ => {}
        }
    }
}

fn wasm_bench(latency_runs: usize, throughput_runs: u64) -> (Figures, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = WasmConfig::new(dir.path().join("module-cache"));
    config.instance_slots = 1024;
    let runtime = WasmRuntime::new(config).expect("runtime");
    let (tx, mut events) = mpsc::unbounded_channel();
    let executor = Executor::new(
        "a-bench".into(),
        runtime,
        Err("not benchmarked here".into()),
        skiff_agent::sandbox::Sandboxes::new(
            &dir.path().join("sandboxes"),
            Some(skiff_agent::sandbox::disk::DEFAULT_BYTES),
        )
        .unwrap(),
        1 << 20,
        tx,
    )
    .expect("executor");
    let module = wat::parse_str(TRIVIAL).expect("wat");

    // Warm-up: the first launch compiles; every later one is a cache hit.
    let cold = Instant::now();
    executor.launch(spec(&module, 0));
    wait_terminal(&mut events);
    let first = cold.elapsed();
    let mut n = 1;
    for _ in 0..200 {
        executor.launch(spec(&module, n));
        n += 1;
        wait_terminal(&mut events);
    }

    let mut lat = Vec::with_capacity(latency_runs);
    for _ in 0..latency_runs {
        let t = Instant::now();
        executor.launch(spec(&module, n));
        n += 1;
        wait_terminal(&mut events);
        lat.push(t.elapsed());
    }
    lat.sort();

    // Throughput: keep a window of tasks in flight.
    let window = 256;
    let start = Instant::now();
    let (mut launched, mut done) = (0u64, 0u64);
    while done < throughput_runs {
        while launched < throughput_runs && launched - done < window {
            executor.launch(spec(&module, n));
            n += 1;
            launched += 1;
        }
        wait_terminal(&mut events);
        done += 1;
    }
    let per_sec = throughput_runs as f64 / start.elapsed().as_secs_f64();
    assert_eq!(executor.wasm().cache_stats().compiled, 1, "one compile for the whole run");
    (Figures { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99), per_sec }, first)
}

/// The floor under any task launch: a round trip to another runtime's thread and back (spawn a
/// future there, get one message back), with nothing run in between.
fn round_trip_bench(runs: usize) -> Duration {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("rt");
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let tx = tx.clone();
        let t = Instant::now();
        rt.spawn(async move {
            let _ = tx.send(());
        });
        rx.blocking_recv().expect("reply");
        lat.push(t.elapsed());
    }
    lat.sort();
    percentile(&lat, 0.5)
}

fn fork_exec_bench(latency_runs: usize, seconds: f64) -> Figures {
    let run = || {
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(status.success());
    };
    let mut lat = Vec::with_capacity(latency_runs);
    for _ in 0..latency_runs {
        let t = Instant::now();
        run();
        lat.push(t.elapsed());
    }
    lat.sort();
    // Throughput with one spawner per core.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut c = 0;
                    while Instant::now() < deadline {
                        run();
                        c += 1;
                    }
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("spawner")).collect()
    });
    let per_sec = counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64();
    Figures { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99), per_sec }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (lat_runs, tput_runs, fork_runs, fork_secs) =
        if quick { (2_000, 20_000, 300, 1.0) } else { (10_000, 100_000, 1_000, 3.0) };
    let (wasm, first) = wasm_bench(lat_runs, tput_runs);
    if std::env::args().any(|a| a == "--wasm-only") {
        println!("wasm: p50 {} p99 {} {:.0} tasks/s", us(wasm.p50), us(wasm.p99), wasm.per_sec);
        println!("round trip to another runtime and back: p50 {}", us(round_trip_bench(lat_runs)));
        return;
    }
    let floor = round_trip_bench(lat_runs);
    let fork = fork_exec_bench(fork_runs, fork_secs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Agent-local launch → exit of a trivial task ({cores} cores, {lat_runs} latency runs)");
    println!();
    println!("| path | p50 | p99 | tasks/s |");
    println!("|---|---|---|---|");
    println!(
        "| Skiff Wasm task (in-agent, module cached) | {} | {} | {:.0} |",
        us(wasm.p50),
        us(wasm.p99),
        wasm.per_sec
    );
    println!("| fork+exec+wait `/bin/true` | {} | {} | {:.0} |", us(fork.p50), us(fork.p99), fork.per_sec);
    println!("| floor: a round trip to another runtime's threads, nothing run | {} | | |", us(floor));
    println!();
    println!(
        "Wasm vs fork+exec: p50 {:.1}× lower latency, {:.1}× the throughput. First launch (compile): {:.1} ms.",
        fork.p50.as_secs_f64() / wasm.p50.as_secs_f64(),
        wasm.per_sec / fork.per_sec,
        first.as_secs_f64() * 1e3
    );
}
