//! The example framework (`examples/sweep`) against a real fleet: it subscribes, fans out Wasm tasks
//! on the offers it gets, gathers their output and tears down.

mod fleet;

use std::process::Command;
use std::time::Duration;

use fleet::{Cluster, text};

fn primes_below(n: u64) -> u64 {
    (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
}

#[test]
fn the_sweep_framework_runs_to_completion() {
    let agent: &[&str] = &["--cpus", "1", "--mem-mib", "1024"];
    let cluster = Cluster::start(&[], &[agent, agent]);
    let limits = [1000u64, 2000, 3000, 4000, 5000, 6000];
    let mut cmd = Command::new(fleet::bin("skiff-sweep"));
    // Its client certificate and token, as any framework of a secured fleet.
    fleet::pki::client_env(&mut cmd, &cluster.addr);
    cmd.args(["--coordinator", &cluster.addr, "--module"]).arg(fleet::guest("primes"));
    cmd.args(["--limits", &limits.map(|l| l.to_string()).join(","), "--cpus", "0.25"]);
    let out = fleet::run_bounded(cmd, None, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    let total: u64 = limits.iter().map(|&l| primes_below(l)).sum();
    assert!(stdout.contains(&format!("total primes: {total}")), "want total {total}:\n{stdout}");
    // Both agents took part (each holds 4 tasks of 0.25 CPU; 6 tasks do not fit on one).
    let rows: Vec<Vec<&str>> =
        stdout.lines().skip(1).map(|l| l.split_whitespace().collect()).filter(|c: &Vec<&str>| c.len() == 4).collect();
    assert_eq!(rows.len(), limits.len(), "one row per limit:\n{stdout}");
    let agents: std::collections::HashSet<&str> = rows.iter().map(|c| c[3]).collect();
    assert_eq!(agents.len(), 2, "tasks on both agents:\n{stdout}");
}
