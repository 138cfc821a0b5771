//! Wasm limits and terminal reasons through the whole path: `skiff run` against real
//! `skiff-coordinator` and `skiff-agent` processes.

mod fleet;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleet::{Fleet, Proc, guest, run_bounded, text};

fn g(name: &str) -> String {
    guest(name).to_str().unwrap().to_owned()
}

#[test]
fn limits_end_tasks_with_their_own_reasons() {
    let fleet = Fleet::start();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--mem".into(), "16M".into(), g("memhog")], 70, "FAILED (MEMORY_LIMIT)"),
        (vec!["--timeout".into(), "300ms".into(), g("spin")], 70, "FAILED (TIME_LIMIT)"),
        (vec!["--fuel".into(), "1000000".into(), g("spin")], 70, "FAILED (OUT_OF_FUEL)"),
    ];
    for (args, code, reason) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = fleet.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let out = fleet.run(&["--fuel", "1000000", &g("spin")]);
    assert!(text(&out.stderr).contains("fuel 1000000"), "fuel used is reported: {}", text(&out.stderr));
}

#[test]
fn second_run_of_a_module_is_not_uploaded_again_hits_the_agents_cache_and_logs_are_kept() {
    let fleet = Fleet::start();
    let first = fleet.run(&[&g("primes"), "--", "1000"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains(" uploaded ("), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("module fetched"), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("[PROGRESS] 1000/1000 (100%)"), "progress is shown: {}", text(&first.stderr));
    let second = fleet.run(&[&g("primes"), "--", "1000"]);
    assert!(text(&second.stderr).contains("already stored"), "sent once: {}", text(&second.stderr));
    assert!(!text(&second.stderr).contains(" uploaded ("), "sent once: {}", text(&second.stderr));
    assert!(text(&second.stderr).contains("module memory"), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), "168 primes below 1000\n");

    // `skiff logs` prints what the task wrote.
    let task_id = text(&second.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("t-"))
        .expect("task id in the output")
        .to_owned();
    let mut cmd = fleet::skiff_cmd(&fleet.addr);
    cmd.args(["logs", "--coordinators", &fleet.addr, &task_id]);
    let out = run_bounded(cmd, None, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "168 primes below 1000\n");
    assert!(text(&out.stderr).contains("[PROGRESS]"));
}

/// Starts `skiff run` on a spinning guest and waits until it reports RUNNING; returns the child,
/// the task id and the receiver of its further stderr lines.
fn spinning(fleet: &Fleet) -> (Proc, String, mpsc::Receiver<String>) {
    let child = fleet::skiff_cmd(&fleet.addr)
        .args(["run", "--coordinators", &fleet.addr, &g("spin")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff run");
    // Killed and reaped on drop, whatever happens below.
    let mut child = Proc { child, name: "skiff run".into() };
    let (tx, rx) = mpsc::channel();
    let stderr = child.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut task_id = String::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("RUNNING in time");
        if let Some(id) = line.split_whitespace().find(|w| w.starts_with("t-")) {
            task_id = id.to_owned();
        }
        if line.contains("RUNNING") {
            return (child, task_id, rx);
        }
    }
}

fn wait_exit(proc: &mut Proc, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("skiff run did not exit within {within:?}");
}

#[test]
fn skiff_kill_stops_a_spinning_task() {
    let fleet = Fleet::start();
    let (mut child, task_id, rx) = spinning(&fleet);
    let mut kill = fleet::skiff_cmd(&fleet.addr);
    kill.args(["kill", "--coordinators", &fleet.addr, &task_id]);
    let sent = Instant::now();
    let out = run_bounded(kill, None, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(137));
    let took = sent.elapsed();
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("KILLED (KILLED)")), "{lines:?}");
    // Through two processes and the coordinator; the agent itself stops the guest within a tick.
    assert!(took < Duration::from_secs(2), "kill to exit took {took:?}");
}

#[test]
fn ctrl_c_on_skiff_run_kills_the_task() {
    let fleet = Fleet::start();
    let (mut child, _task_id, rx) = spinning(&fleet);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(137));
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("interrupted: killing task")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("KILLED")), "{lines:?}");
}
