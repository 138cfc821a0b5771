//! The operator's view of a live fleet (real `skiff-coordinator` and `skiff-agent` processes, TLS
//! and ACLs on): metrics scraped after a known workload, `skiff status|agents|agent|tasks|task`
//! with `-o json` parsed and checked against what ran, and draining an agent.

mod fleet;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::{Fleet, Proc, Security, eventually, guest, running_task, skiff_cmd, text};
use serde_json::Value;

fn g(name: &str) -> String {
    guest(name).to_str().unwrap().to_owned()
}

/// A free loopback port (bound, then released for the coordinator to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.1: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` (exact label text) in a Prometheus text scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
fn sum(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn json(fleet: &Fleet, args: &[&str]) -> Value {
    let out = fleet.skiff(args);
    assert!(out.status.success(), "skiff {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("skiff {args:?} -o json: {e}: {}", text(&out.stdout)))
}

#[test]
fn metrics_and_views_count_a_known_workload() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let fleet = Fleet::start_secured(
        Security::Tls,
        &["--metrics-listen", &metrics, "--log-format", "json"],
        &["--metrics-listen", &agent_metrics, "--metrics-per-task"],
    );
    for _ in 0..3 {
        let out = fleet.run(&[&g("hello")]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    for _ in 0..2 {
        let out = fleet.run(&["--mem", "16M", &g("memhog")]);
        assert!(text(&out.stderr).contains("MEMORY_LIMIT"), "{}", text(&out.stderr));
    }

    // Metrics: the counts match the workload.
    let (status_line, scrape) = http_get(&metrics, "/metrics");
    assert!(status_line.contains("200"), "{status_line}");
    assert_eq!(sample(&scrape, "skiff_leader"), Some(1.0), "{scrape}");
    assert_eq!(sum(&scrape, "skiff_task_transitions_total", &["state=\"finished\""]), 3.0, "{scrape}");
    assert_eq!(
        sum(&scrape, "skiff_task_transitions_total", &["state=\"failed\"", "reason=\"memory_limit\""]),
        2.0,
        "{scrape}"
    );
    assert_eq!(sum(&scrape, "skiff_task_transitions_total", &["state=\"running\""]), 5.0, "{scrape}");
    assert_eq!(sample(&scrape, "skiff_task_submit_to_running_seconds_count"), Some(5.0), "{scrape}");
    assert_eq!(sample(&scrape, "skiff_agents{state=\"connected\"}"), Some(1.0), "{scrape}");
    assert_eq!(sample(&scrape, "skiff_tasks{state=\"finished\"}"), Some(3.0), "{scrape}");
    assert_eq!(sample(&scrape, "skiff_tasks{state=\"failed\"}"), Some(2.0), "{scrape}");
    assert!(sum(&scrape, "skiff_registry_txn_seconds_count", &["kind=\"task\""]) >= 5.0, "{scrape}");
    assert!(sample(&scrape, "skiff_offers_total").is_some_and(|n| n >= 5.0), "{scrape}");
    assert!(sample(&scrape, "skiff_allocation_run_seconds_count").is_some_and(|n| n >= 1.0), "{scrape}");
    assert!(sample(&scrape, "skiff_artifact_store_blobs").is_some_and(|n| n >= 2.0), "{scrape}");
    assert!(sample(&scrape, "skiff_capacity_total{resource=\"wasm_slots\"}").is_some_and(|n| n > 0.0), "{scrape}");
    assert!(scrape.contains("# HELP skiff_task_transitions_total"), "{scrape}");

    // The agent's metrics: the same tasks, seen from the host.
    let scrape = eventually(Duration::from_secs(10), "every update acknowledged", || {
        let (_, scrape) = http_get(&agent_metrics, "/metrics");
        (sample(&scrape, "skiff_agent_updates_unacknowledged") == Some(0.0)).then_some(scrape)
    });
    assert_eq!(sample(&scrape, "skiff_agent_connected"), Some(1.0), "{scrape}");
    assert_eq!(sum(&scrape, "skiff_agent_task_transitions_total", &["state=\"finished\""]), 3.0, "{scrape}");
    assert_eq!(
        sum(&scrape, "skiff_agent_task_transitions_total", &["state=\"failed\"", "reason=\"memory_limit\""]),
        2.0,
        "{scrape}"
    );
    // Each module was fetched and compiled once, then came from the cache.
    assert_eq!(sum(&scrape, "skiff_agent_module_source_total", &[]), 5.0, "{scrape}");
    assert!(sum(&scrape, "skiff_agent_module_source_total", &["source=\"memory\""]) >= 2.0, "{scrape}");
    assert!(sample(&scrape, "skiff_agent_capacity{resource=\"wasm_slots\"}").is_some_and(|n| n > 0.0), "{scrape}");
    assert!(!scrape.contains("skiff_agent_task_cpu_seconds{"), "no series is left for ended tasks: {scrape}");

    // `skiff status -o json`.
    let status = json(&fleet, &["status", "-o", "json"]);
    assert_eq!(status["leader"], fleet.addr.as_str(), "{status}");
    assert_eq!(status["replicas"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["replicas"][0]["leader"], true, "{status}");
    assert_eq!(status["agents"]["connected"], 1, "{status}");
    assert_eq!(status["tasks"]["finished"], 3, "{status}");
    assert_eq!(status["tasks"]["failed"], 2, "{status}");
    assert_eq!(status["jobs_live"], 0, "{status}");
    assert!(status["capacity"]["total"]["wasm_slots"].as_u64().unwrap() > 0, "{status}");
    let table = text(&fleet.skiff(&["status"]).stdout);
    assert!(table.contains("1 connected") && table.contains("3 finished"), "{table}");

    // `skiff tasks`: newest first, filtered by state.
    let failed = json(&fleet, &["tasks", "--state", "failed", "-o", "json"]);
    let failed = failed["tasks"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|t| t["status"]["reason"] == "memory_limit"), "{failed:?}");
    let all = json(&fleet, &["tasks", "-o", "json"]);
    let all = all["tasks"].as_array().unwrap().clone();
    assert_eq!(all.len(), 5, "{all:?}");
    let submitted: Vec<u64> = all.iter().map(|t| t["submitted_ms"].as_u64().unwrap()).collect();
    assert!(submitted.windows(2).all(|w| w[0] >= w[1]), "newest first: {submitted:?}");
    assert_eq!(all[0]["status"]["state"], "failed", "the newest is the last memhog: {all:?}");
    let one = json(&fleet, &["tasks", "--limit", "1", "-o", "json"]);
    assert_eq!((one["tasks"].as_array().unwrap().len(), one["more"].as_u64()), (1, Some(4)), "{one}");
    let agent_id = all[0]["status"]["agent_id"].as_str().unwrap().to_owned();
    let on_agent = json(&fleet, &["tasks", "--agent", &agent_id, "-o", "json"]);
    assert_eq!(on_agent["tasks"].as_array().unwrap().len(), 5, "{on_agent}");
    let elsewhere = json(&fleet, &["tasks", "--agent", "no-such-agent", "-o", "json"]);
    assert!(elsewhere["tasks"].as_array().unwrap().is_empty(), "{elsewhere}");

    // `skiff task status`: the state history, in order, with times.
    let task_id = all[4]["task_id"].as_str().unwrap();
    let task = json(&fleet, &["task", "status", task_id, "-o", "json"]);
    let states: Vec<&str> = task["history"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"pending"), "{task}");
    assert_eq!(states.last(), Some(&"finished"), "{task}");
    assert!(states.contains(&"running"), "{task}");
    assert!(task["history"].as_array().unwrap().iter().all(|s| s["timestamp_ms"].as_u64() > Some(0)), "{task}");
    assert_eq!(task["spec"]["kind"], "wasm", "{task}");
    assert_eq!(task["status"]["agent_id"], agent_id.as_str(), "{task}");

    // `skiff agents` and `skiff agent status`.
    let agents = json(&fleet, &["agents", "-o", "json"]);
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(
        (agents[0]["agent_id"].as_str(), agents[0]["state"].as_str()),
        (Some(agent_id.as_str()), Some("connected"))
    );
    let agent = json(&fleet, &["agent", "status", &agent_id, "-o", "json"]);
    assert_eq!(agent["running_tasks"], 0, "{agent}");
    assert!(!agent["cached_modules"].as_array().unwrap().is_empty(), "the agent compiled hello and memhog: {agent}");
    let listed = text(&fleet.skiff(&["agents"]).stdout);
    assert!(listed.contains(&agent_id) && listed.contains("connected"), "{listed}");

    // Bad input is refused with the reason, and exits 64.
    let out = fleet.skiff(&["tasks", "--limit", "20000"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("limit 20000"), "{}", text(&out.stderr));
    let out = fleet.skiff(&["agent", "status", "no-such-agent"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-agent"), "{}", text(&out.stderr));
    let out = fleet.skiff(&["tasks", "--state", "done"]);
    assert!(!out.status.success() && text(&out.stderr).contains("not a task state"), "{}", text(&out.stderr));
}

#[test]
fn the_metrics_listener_refuses_a_non_loopback_address() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(fleet::bin("skiff-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a loopback address"), "{}", text(&out.stderr));
}

#[test]
fn a_drained_agent_gets_no_new_tasks_and_its_tasks_are_killed_at_the_deadline() {
    let fleet = Fleet::start();
    let (mut spinning, _lines, spin_id) = running_task(&fleet.addr, &[&g("spin")]);
    let agents = json(&fleet, &["agents", "-o", "json"]);
    let agent_id = agents[0]["agent_id"].as_str().unwrap().to_owned();

    let drained = json(&fleet, &["agent", "drain", &agent_id, "--deadline", "2s", "-o", "json"]);
    assert_eq!(drained["draining"], true, "{drained}");
    assert!(drained["drain_deadline_ms"].as_u64() > Some(0), "{drained}");
    assert_eq!(json(&fleet, &["status", "-o", "json"])["agents"]["draining"], 1);

    // Submitted while the agent drains: it waits, even once the agent is idle.
    let mut cmd = skiff_cmd(&fleet.addr);
    cmd.args(["run", "--coordinators", &fleet.addr, &g("hello")]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut waiting = Proc { child: cmd.spawn().unwrap(), name: "skiff run hello".into() };

    let killed = eventually(Duration::from_secs(15), "the spinning task is killed at the drain deadline", || {
        let task = json(&fleet, &["task", "status", &spin_id, "-o", "json"]);
        (task["status"]["state"] == "killed").then_some(task)
    });
    assert_eq!(killed["status"]["agent_id"], agent_id.as_str());
    let _ = spinning.child.wait();
    let pending = eventually(Duration::from_secs(10), "hello is pending", || {
        let tasks = json(&fleet, &["tasks", "--state", "pending", "-o", "json"]);
        (tasks["tasks"].as_array().unwrap().len() == 1).then_some(tasks)
    });
    let hello_id = pending["tasks"][0]["task_id"].as_str().unwrap().to_owned();
    // The agent is idle now, and offers run every 10 ms: a second of them places nothing.
    let idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(1) {
        let task = json(&fleet, &["task", "status", &hello_id, "-o", "json"]);
        assert_eq!(task["status"]["state"], "pending", "placed on a drained agent: {task}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let undone = json(&fleet, &["agent", "drain", &agent_id, "--undo", "-o", "json"]);
    assert_eq!(undone["draining"], false, "{undone}");
    let (code, _) = fleet::wait_exit(&mut waiting, Duration::from_secs(20));
    assert_eq!(code, 0, "hello runs once the drain is undone");
    assert_eq!(json(&fleet, &["status", "-o", "json"])["agents"]["draining"], 0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(fleet::bin("skiff-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut proc = Proc { child, name: "skiff-coordinator --log-format json".into() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let serving = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a log line");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{line}");
        if event["fields"]["message"] == "coordinator serving" {
            break event;
        }
    };
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["fields"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{serving}");
    proc.terminate(Duration::from_secs(10));
}
