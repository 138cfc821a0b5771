//! `skiff job run|status|list|kill` through real processes: instances, retries with backoff,
//! constraints on agent attributes.

mod fleet;

use std::time::Duration;

use fleet::{Cluster, text};

fn job_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn two_zones() -> Cluster {
    Cluster::start(&[], &[&["--attribute", "zone=a"], &["--attribute", "zone=b"]])
}

#[test]
fn instances_run_where_the_constraints_allow() {
    let cluster = two_zones();
    let agent_b = fleet::connected_agents(&cluster.addr)
        .into_iter()
        .find(|a| a.attributes.get("zone").map(String::as_str) == Some("b"))
        .expect("the zone=b agent")
        .agent_id;
    let dir = tempfile::tempdir().unwrap();
    let primes = fleet::guest("primes");
    let file = job_file(
        dir.path(),
        &format!(
            "name = \"primes\"\ninstances = 4\n[task]\nwasm = {primes:?}\nargs = [\"{{instance}}000\"]\ncpus = 0.1\n\
             [[constraint]]\nattribute = \"zone\"\noperator = \"==\"\nvalue = \"b\"\n"
        ),
    );
    let out = cluster.skiff(&["job", "run", file.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("FINISHED, 4 instances"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for row in rows {
        assert!(row.contains("FINISHED") && row.contains(&agent_b), "every instance on the zone=b agent: {row}");
    }
    // Instance i counted the primes below i*1000 (`{instance}` in args): instance 0 got "0", so none.
    let job_id = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let listed = text(&cluster.skiff(&["job", "list"]).stdout);
    assert!(listed.contains(&job_id) && listed.contains("FINISHED"), "{listed}");
}

#[test]
fn failed_instances_are_retried_with_backoff_then_the_job_fails() {
    let cluster = two_zones();
    let dir = tempfile::tempdir().unwrap();
    let file = job_file(
        dir.path(),
        "name = \"flaky\"\ninstances = 2\n[task]\nnative = [\"/bin/sh\", \"-c\", \"exit 3\"]\n\
         [retry]\nattempts = 2\nbackoff = \"200ms\"\n",
    );
    let started = std::time::Instant::now();
    let out = cluster.skiff(&["job", "run", file.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("FAILED, 2 instances"), "{stdout}");
    for row in stdout.lines().skip(2) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!((cols[1], cols[3], cols[4]), ("3", "FAILED", "3"), "3 attempts, each exit 3: {row}");
    }
    // Backoffs of 200 ms then 400 ms between the three attempts.
    assert!(took >= Duration::from_millis(600), "retries waited their backoff: {took:?}");
}

#[test]
fn a_killed_job_stops_its_tasks_and_starts_nothing_more() {
    let cluster = two_zones();
    let dir = tempfile::tempdir().unwrap();
    let file = job_file(
        dir.path(),
        "name = \"sleepers\"\ninstances = 3\n[task]\nnative = [\"/bin/sleep\", \"60\"]\n[retry]\nattempts = 5\n",
    );
    let out = cluster.skiff(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job_id = text(&out.stdout).trim().to_owned();
    let states = |status: &str| -> Vec<String> {
        status.lines().skip(2).filter_map(|row| row.split_whitespace().nth(3).map(str::to_owned)).collect()
    };
    fleet::eventually(Duration::from_secs(10), "3 running instances", || {
        let status = text(&cluster.skiff(&["job", "status", &job_id]).stdout);
        (states(&status) == ["RUNNING"; 3]).then_some(())
    });
    let out = cluster.skiff(&["job", "kill", &job_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = fleet::eventually(Duration::from_secs(10), "3 killed instances", || {
        let status = text(&cluster.skiff(&["job", "status", &job_id]).stdout);
        (states(&status) == ["KILLED"; 3] && status.contains(": KILLED,")).then_some(status)
    });
    assert!(status.lines().skip(2).all(|row| row.split_whitespace().nth(1) == Some("1")), "no retries: {status}");

    let out = cluster.skiff(&["job", "status", "j-nosuchjob"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("job j-nosuchjob not found"), "{}", text(&out.stderr));
    let bad = job_file(dir.path(), "[task]\nwasm = \"x.wasm\"\ncpu = 2\n");
    let out = cluster.skiff(&["job", "run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("unknown field `cpu`"), "{}", text(&out.stderr));
}
