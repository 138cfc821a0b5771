//! End to end: the real `skiff-coordinator`, `skiff-agent` and `skiff` binaries on loopback, running
//! the example guests.

mod fleet;

use std::process::Command;
use std::time::Duration;

use fleet::{Fleet, bin, guest, run_bounded, skiff_run, spawn_until, text};

#[test]
fn hello_with_args_and_env_through_coordinator_and_agent() {
    let fleet = Fleet::start();
    let hello = guest("hello");
    let out = fleet.run(&["--env", "GREETING=hi", hello.to_str().unwrap(), "--", "a", "b"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "hello, a b!\nGREETING=hi\n");
    // The guest's own stderr is streamed too, and the state changes are shown in order.
    assert!(stderr.contains("[INFO] hello.wasm greeted 2 argument(s)"), "{stderr}");
    let states: Vec<usize> = ["PENDING", "STAGING", "RUNNING", "FINISHED with exit code 0"]
        .iter()
        .map(|s| stderr.find(s).unwrap_or_else(|| panic!("no {s} in {stderr}")))
        .collect();
    assert!(states.windows(2).all(|w| w[0] < w[1]), "states out of order: {stderr}");
    assert!(stderr.contains("peak memory"), "usage is reported: {stderr}");
}

#[test]
fn exit_code_passes_through_and_stdin_reaches_the_task() {
    let fleet = Fleet::start();
    let out = fleet.run(&[guest("exit-code").to_str().unwrap(), "--", "3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FAILED with exit code 3"), "{}", text(&out.stderr));

    let out = fleet.run_with_stdin(&["-q", guest("hello").to_str().unwrap()], Some(b"from stdin\n"));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, world!\ninput: from stdin\n");
    assert!(!text(&out.stderr).contains("[skiff]"), "--quiet hides state changes: {}", text(&out.stderr));
}

#[test]
fn bad_input_gets_one_clear_line_and_the_fleet_keeps_serving() {
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "just some text\n").unwrap();
    let missing = dir.path().join("missing.wasm");
    let hello = guest("hello");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![missing.to_str().unwrap()], 64, "cannot read"),
        (vec![text_file.to_str().unwrap()], 64, "is not a Wasm module"),
        (vec!["--mem", "12Q", hello.to_str().unwrap()], 64, "invalid size \"12Q\""),
        (vec!["--timeout", "soon", hello.to_str().unwrap()], 64, "invalid duration \"soon\""),
        (vec!["--cpus", "0", hello.to_str().unwrap()], 64, "invalid cpus"),
        (vec!["--cpus=-1", hello.to_str().unwrap()], 64, "invalid cpus"),
        (vec!["--env", "NOEQUALS", hello.to_str().unwrap()], 64, "expected KEY=VALUE"),
    ];
    for (args, code, message) in cases {
        let out = fleet.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // After all that, tasks still run.
    let out = fleet.run(&["-q", hello.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn no_coordinator_reachable() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = skiff_run(&addr, &[guest("hello").to_str().unwrap()], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("no coordinator reachable") && stderr.contains(&addr), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn daemons_stop_cleanly_on_sigterm() {
    let mut fleet = Fleet::start();
    let out = fleet.run(&["-q", guest("hello").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fleet.agent.terminate(Duration::from_secs(15)), Some(0), "agent exits 0 on SIGTERM");
    assert_eq!(fleet.coordinator.terminate(Duration::from_secs(15)), Some(0), "coordinator exits 0 on SIGTERM");
}

#[test]
fn skiff_dev_runs_a_single_node_fleet() {
    // skiff dev is secured with a CA of its own; the CLI finds its files under SKIFF_HOME.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("skiff"));
    cmd.env("SKIFF_HOME", home.path()).args(["dev", "--listen", "127.0.0.1:0"]);
    let (mut dev, line) = spawn_until(cmd, "skiff dev", "coordinator listening on", Duration::from_secs(15));
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .map(|w| w.trim_end_matches(';').to_owned())
        .expect("address in the ready line");

    // The dev files appear once the management token is made (a line after the ready line).
    let token = home.path().join("dev").join(addr.replace(':', "_")).join("token");
    fleet::eventually(Duration::from_secs(10), "skiff dev's token file", || token.exists().then_some(()));
    let mut cmd = Command::new(bin("skiff"));
    cmd.env("SKIFF_HOME", home.path())
        .args(["run", "--coordinators", &addr])
        .arg(guest("hello"))
        .args(["--", "a", "b"]);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, a b!\n");

    // SKIFF_COORDINATORS is honoured when --coordinators is not given.
    let mut cmd = Command::new(bin("skiff"));
    cmd.env("SKIFF_HOME", home.path());
    cmd.env("SKIFF_COORDINATORS", &addr).args(["run", "-q"]).arg(guest("exit-code")).args(["--", "7"]);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    assert_eq!(dev.terminate(Duration::from_secs(15)), Some(0), "skiff dev exits 0 on SIGTERM");
}
