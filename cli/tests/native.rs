//! Native tasks through the whole path: `skiff run --native` against real `skiff-coordinator` and
//! `skiff-agent` processes (the agent as root, creating real cgroups, tasks contained, each as a uid of its own).

mod fleet;

use fleet::{Fleet, text};

#[test]
fn native_commands_run_and_report_like_wasm_tasks() {
    let fleet = Fleet::start();
    let out = fleet.run(&["--native", "--env", "WHO=skiff", "--", "sh", "-c", "echo hello from $WHO; id -u; exit 4"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(text(&out.stdout), "hello from skiff\n200000\n", "the first uid of the default --task-uids");
    assert!(stderr.contains("FAILED with exit code 4"), "{stderr}");

    let out =
        fleet.run(&["--native", "--mem", "32M", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("FAILED (OOM)") && stderr.contains("OOM killer"), "{stderr}");

    let out = fleet.run(&["--native", "--", "no-such-command-skiff"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("INVALID_TASK") && stderr.contains("command not found"), "{stderr}");

    let out = fleet.run(&["--native", "--timeout", "300ms", "--cpus", "0.2", "--", "sh", "-c", "while :; do :; done"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("FAILED (TIME_LIMIT)"), "{stderr}");
}

#[test]
fn native_usage_errors_are_one_clear_line() {
    let fleet = Fleet::start();
    for (args, message) in [
        (vec!["--native"], "--native needs a command"),
        (vec!["--native", "x.wasm", "--", "true"], "not a file"),
        (vec![], "nothing to run"),
    ] {
        let out = fleet.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
