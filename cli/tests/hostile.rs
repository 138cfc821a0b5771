//! Hostile tasks: each test is an attack a task makes on its agent or its neighbours, run on the
//! real binaries (the agent as root, native tasks as nobody), and asserts that it is contained and
//! that the agent goes on serving other tasks.

mod fleet;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fleet::{Cluster, Fleet, guest, runs, text};

/// The agent still runs a Wasm task to the end.
fn serves_on(fleet: &Fleet) {
    let out = fleet.run(&[guest("hello").to_str().unwrap(), "--", "after"]);
    assert!(out.status.success(), "the agent no longer serves: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hello, after!"));
}

fn native(fleet: &Fleet, env: &[(&str, &str)], extra: &[&str], script: &str) -> std::process::Output {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["--native"];
    for e in &env {
        args.extend(["--env", e]);
    }
    args.extend(extra);
    args.extend(["--", "sh", "-c", script]);
    fleet.run(&args)
}

/// The attack that took root: a native task plants `x -> TARGET` in every sandbox it can reach, in
/// the hope that the agent places a later task's input `/x/anything` through it, as root. With
/// pooled sandboxes it reached the ones earlier tasks had left (owned by nobody, as it is).
#[test]
fn planted_links_in_other_sandboxes_never_reach_the_host() {
    let fleet = Fleet::start();
    let target = tempfile::tempdir().unwrap(); // stands for /etc or /etc/cron.d
    std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let target_s = target.path().to_str().unwrap();
    let work = fleet.work_dir.path().to_str().unwrap();

    // Two earlier tasks at once, whose sandboxes a pool would have handed on: the attacker gets
    // one, the other is there for it to plant in.
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..2).map(|_| s.spawn(|| native(&fleet, &[], &[], "sleep 0.5"))).collect();
        for run in runs {
            assert!(run.join().unwrap().status.success());
        }
    });
    let script = r#"
        ln -s "$T" x && echo "planted in its own sandbox"
        if cd .. 2>/dev/null && ls >/dev/null 2>&1; then
          for d in */; do ln -s "$T" "$d/x" 2>/dev/null && echo "planted in $d"; done
        else
          echo "cannot enter the other sandboxes"
        fi
        if ls "$W" >/dev/null 2>&1; then echo "listed the work dir"; else echo "cannot list the work dir"; fi
        if cat "$W/agent-id" >/dev/null 2>&1; then echo "read the agent's files"; else echo "cannot read the agent's files"; fi
    "#;
    let attack = native(&fleet, &[("T", target_s), ("W", work)], &[], script);
    assert!(attack.status.success(), "{}", text(&attack.stderr));

    // Later tasks get their input, in their own fresh sandbox, and nothing lands in the target.
    let local = tempfile::tempdir().unwrap();
    let data = local.path().join("data");
    std::fs::write(&data, "payload\n").unwrap();
    let file_arg = format!("{}:/x/anything", data.display());
    for _ in 0..3 {
        let out = native(&fleet, &[], &["--file", &file_arg], "cat x/anything; ls -A | tr '\\n' ' '");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "payload\nx ", "a fresh sandbox holding only the input");
    }
    let wasm_arg = format!("{}:/x/anything", data.display());
    let out = fleet.run(&["--file", &wasm_arg, guest("files").to_str().unwrap(), "--", "read", "/x/anything"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "read /x/anything: ok (8 bytes)\n");
    let landed: Vec<_> = std::fs::read_dir(target.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(landed.is_empty(), "the agent wrote {landed:?} through a planted link");
    assert_eq!(
        text(&attack.stdout),
        "planted in its own sandbox\ncannot enter the other sandboxes\ncannot list the work dir\n\
         cannot read the agent's files\n",
        "the work dir and the other sandboxes are the agent's alone"
    );
    serves_on(&fleet);
}

/// A task leaves its `--output` file as a link to a root-only file, hoping the agent reads
/// through it as root when it collects, or as a FIFO, hoping the agent blocks; or swaps it for a
/// link in a loop. The agent collects only once every process of the task is gone (the loop is
/// killed with the task's cgroup), and reads what is there without following a link: only the
/// task's own file is ever collected.
#[test]
fn outputs_swapped_for_links_or_fifos_are_refused() {
    let fleet = Fleet::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("shadow");
    std::fs::write(&secret, "TOP SECRET\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret_s = secret.to_str().unwrap();

    let out = native(&fleet, &[], &["--output", "/out.txt"], "mkfifo out.txt");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("output /out.txt was not collected: not a regular file"),
        "{}",
        text(&out.stderr)
    );

    let out = native(&fleet, &[("S", secret_s)], &["--output", "/out.txt"], r#"ln -s "$S" out.txt"#);
    assert!(text(&out.stderr).contains("output /out.txt was not collected: it is a link"), "{}", text(&out.stderr));

    let swap = r#"
        echo legit > out.txt
        ( while :; do ln -sf "$S" link; mv -f link out.txt; echo legit > new; mv -f new out.txt; done ) >/dev/null 2>&1 &
        sleep 0.2
    "#;
    let local = tempfile::tempdir().unwrap();
    let (mut collected, mut refused) = (0, 0);
    for i in 0..6 {
        let out = native(&fleet, &[("S", secret_s)], &["--output", "/out.txt"], swap);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        if stderr.contains("output /out.txt collected") {
            collected += 1;
            let id = stderr.split_whitespace().find(|w| w.starts_with("t-")).unwrap();
            let dest = local.path().join(format!("got-{i}"));
            let got = fleet.skiff(&["cp", &format!("{id}:/out.txt"), dest.to_str().unwrap()]);
            assert!(got.status.success(), "{}", text(&got.stderr));
            assert_eq!(std::fs::read_to_string(&dest).unwrap(), "legit\n", "only the task's own file is collected");
        } else {
            assert!(stderr.contains("output /out.txt was not collected"), "{stderr}");
            refused += 1;
        }
    }
    eprintln!("swap loop: collected {collected}, refused {refused}");
    serves_on(&fleet);
}

/// `skiff run --native -- /bin/sleep SECS` in the background, once the sleep runs; returns the
/// client process (the caller ends it) and the sleep's command line.
fn background_sleep(addr: &str, secs: u32) -> (std::process::Child, String) {
    let secs = (secs + std::process::id() % 1000).to_string();
    let client = std::process::Command::new(fleet::bin("skiff"))
        .args(["run", "-q", "--coordinators", addr, "--native", "--", "/bin/sleep", &secs])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cmdline = format!("/bin/sleep\0{secs}\0");
    fleet::eventually(Duration::from_secs(20), "the native task running", || runs(&cmdline).then_some(()));
    (client, cmdline)
}

/// A native task does not outlive its executor: SIGKILL the agent (its executor keeps the tasks,
/// by design) and then the executor, and the task dies at once, with no new executor to clean up.
#[test]
fn native_tasks_die_with_their_executor() {
    let mut cluster = Cluster::start(&[], &[&[]]);
    let (mut client, sleep) = background_sleep(&cluster.addr, 400);
    let pid_file = cluster.work_dirs[0].path().join("executor.pid");
    let executor: i32 = std::fs::read_to_string(&pid_file).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    cluster.kill_agent(0);
    assert!(runs(&sleep), "an agent restart keeps its tasks");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor), nix::sys::signal::Signal::SIGKILL).unwrap();
    fleet::eventually(Duration::from_secs(5), "the task gone with its executor", || (!runs(&sleep)).then_some(()));
    cluster.restart_agent(0);
    let out = cluster.skiff(&["run", guest("hello").to_str().unwrap()]);
    assert!(out.status.success(), "the agent serves on: {}", text(&out.stderr));
    let _ = client.kill();
    let _ = client.wait();
}

/// The same for `skiff dev`, whose executor is in its own process.
#[test]
fn native_tasks_die_with_skiff_dev() {
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    cmd.args(["dev", "--listen", "127.0.0.1:0"]);
    let (mut dev, line) = fleet::spawn_until(cmd, "skiff dev", "listening on", Duration::from_secs(20));
    let addr = line.split("listening on ").nth(1).and_then(|r| r.split(';').next()).expect("address").to_owned();
    let (mut client, sleep) = background_sleep(&addr, 500);
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    fleet::eventually(Duration::from_secs(5), "the task gone with skiff dev", || (!runs(&sleep)).then_some(()));
    let _ = client.kill();
    let _ = client.wait();
    // What the killed `skiff dev` could not remove (no later one has its agent id): its empty
    // cgroups and its work directory.
    let agent = line.split("agent ").nth(1).and_then(|r| r.split(' ').next()).expect("agent id");
    let work = line.split("working in ").nth(1).expect("work dir").trim();
    remove_cgroup(&std::path::Path::new("/sys/fs/cgroup/skiff").join(agent)); // v2
    for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        remove_cgroup(&controller.path().join("skiff").join(agent)); // v1
    }
    let _ = std::fs::remove_dir_all(work);
}

/// Removes an empty cgroup and the empty ones below it.
fn remove_cgroup(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
