//! Hostile tasks: each test is an attack a task makes on its agent or its neighbours, run on the
//! real binaries (the agent as root, native tasks contained: namespaces, a view of the host, a uid
//! of their own, seccomp), and asserts that it is contained and that the agent goes on serving
//! other tasks.

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
        if ls "$W/sandboxes" >/dev/null 2>&1; then
          for d in "$W"/sandboxes/*/; do ln -s "$T" "$d/x" 2>/dev/null && echo "planted in $d"; done
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

/// `skiff run --native` of a shell that forks `/bin/sleep SECS` into the background and then
/// runs another in the foreground, once both run; returns the client process (the caller ends it)
/// and the two sleeps' command lines.
fn background_sleep(addr: &str, secs: u32) -> (std::process::Child, [String; 2]) {
    let (a, b) = (secs + std::process::id() % 1000, secs + 1000 + std::process::id() % 1000);
    let script = format!("/bin/sleep {a} & /bin/sleep {b}");
    let client = fleet::skiff_cmd(addr)
        .args(["run", "-q", "--coordinators", addr, "--native", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeps = [format!("/bin/sleep\0{a}\0"), format!("/bin/sleep\0{b}\0")];
    fleet::eventually(Duration::from_secs(20), "the native task running", || {
        sleeps.iter().all(|s| runs(s)).then_some(())
    });
    (client, sleeps)
}

fn none_runs(cmdlines: &[String]) -> bool {
    !cmdlines.iter().any(|c| runs(c))
}

/// A native task does not outlive its executor, nor do the processes it forked: SIGKILL the agent
/// (its executor keeps the tasks, by design) and then the executor, and the task dies at once,
/// with no new executor to clean up.
#[test]
fn native_tasks_die_with_their_executor() {
    let mut cluster = Cluster::start(&[], &[&[]]);
    let (mut client, sleep) = background_sleep(&cluster.addr, 400);
    let pid_file = cluster.work_dirs[0].path().join("executor.pid");
    let executor: i32 = std::fs::read_to_string(&pid_file).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    cluster.kill_agent(0);
    assert!(sleep.iter().all(|s| runs(s)), "an agent restart keeps its tasks");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor), nix::sys::signal::Signal::SIGKILL).unwrap();
    fleet::eventually(Duration::from_secs(5), "the task gone with its executor", || none_runs(&sleep).then_some(()));
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
    cmd.args(["dev", "--native-tasks", "--listen", "127.0.0.1:0"]);
    let (mut dev, line) = fleet::spawn_until(cmd, "skiff dev", "listening on", Duration::from_secs(20));
    let addr = line.split("listening on ").nth(1).and_then(|r| r.split(';').next()).expect("address").to_owned();
    // The CLI finds skiff dev's own client certificate and token (it needs nothing from the harness).
    fleet::pki::register(std::slice::from_ref(&addr), None);
    fleet::eventually(Duration::from_secs(10), "skiff dev's token", || {
        skiff_cli::access::dev_dir(&addr).join("token").exists().then_some(())
    });
    let (mut client, sleep) = background_sleep(&addr, 500);
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    fleet::eventually(Duration::from_secs(5), "the task gone with skiff dev", || none_runs(&sleep).then_some(()));
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

/// A task looks for its neighbours: another task's environment (a secret in it), its processes to
/// kill, the host's files. It sees only its own view and its own processes, and runs as a uid of
/// its own: the neighbour runs on untouched.
#[test]
fn a_task_sees_neither_its_neighbours_nor_the_host() {
    let fleet = Fleet::start();
    let secs = 300 + std::process::id() % 1000;
    let victim_script = format!("id -u; /bin/sleep {secs}; echo survived");
    let victim = fleet::skiff_cmd(&fleet.addr)
        .args(["run", "-q", "--coordinators", &fleet.addr, "--native", "--timeout", "60s"])
        .args(["--env", "SECRET=s3cr3t-of-the-victim", "--", "sh", "-c", &victim_script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleep = format!("/bin/sleep\0{secs}\0");
    let pid = fleet::eventually(Duration::from_secs(20), "the victim running", || fleet::pid_of(&sleep));
    // The secret is there to find, for a process that can see the victim.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains("s3cr3t-of-the-victim"));

    let script = r#"
        id -u
        grep -l s3cr3t /proc/*/environ 2>/dev/null || echo "no secret found"
        echo "processes: $(ls /proc | grep -c '^[0-9]')"
        ls / | tr '\n' ' '; echo
        for p in /var /root /home /srv "$W"; do [ -e "$p" ] && echo "sees $p"; done
        kill -9 -1 2>/dev/null; kill -9 "$VICTIM" 2>/dev/null || echo "cannot signal the victim"
        echo hostname $(hostname)
    "#;
    let work = fleet.work_dir.path().to_str().unwrap();
    let pid_s = pid.to_string();
    let attack = native(&fleet, &[("W", work), ("VICTIM", &pid_s)], &[], script);
    assert!(attack.status.success(), "{}", text(&attack.stderr));
    let out = text(&attack.stdout);
    let mut lines = out.lines();
    let attacker_uid = lines.next().unwrap().to_owned();
    assert_eq!(lines.next(), Some("no secret found"), "{out}");
    let processes: u32 = lines.next().unwrap().trim_start_matches("processes: ").parse().unwrap();
    assert!(processes <= 5, "the task sees only its own processes (sh, a subshell, ls, grep): {out}");
    let root: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    for needed in ["usr", "etc", "tmp", "proc", "dev", "sandbox"] {
        assert!(root.contains(&needed), "/{needed} missing from the view: {root:?}");
    }
    assert!(!out.contains("sees "), "the host shows through: {out}");
    assert!(out.contains("cannot signal the victim"), "{out}");
    assert!(out.contains("hostname t-"), "its own host name, its task id: {out}");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let done = victim.wait_with_output().unwrap();
    let victim_out = text(&done.stdout);
    let victim_uid = victim_out.lines().next().unwrap_or_default();
    assert!(victim_out.contains("survived"), "the victim lived on until the test ended it: {victim_out}");
    assert_ne!(victim_uid, attacker_uid, "two running tasks never share a uid");
    assert_ne!(victim_uid, "0");
    serves_on(&fleet);
}

/// A task tries the network: the coordinator's port, and another listener of the host's loopback.
/// It has a network namespace of its own with only `lo`: nothing of the host's is reachable. It
/// asks for the host's network, which this agent does not allow.
#[test]
fn a_task_reaches_no_address_outside_itself() {
    let fleet = Fleet::start();
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    outside.set_nonblocking(true).unwrap();
    let outside_addr = outside.local_addr().unwrap().to_string();
    let script = r#"
        for a in "$COORD" "$OUTSIDE"; do
          perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 3) and print "connected\n" or print "refused: $!\n"' "$a"
        done
        tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
    "#;
    let out = native(&fleet, &[("COORD", &fleet.addr), ("OUTSIDE", &outside_addr)], &[], script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "refused: Connection refused\nrefused: Connection refused\nlo\n");
    assert!(outside.accept().is_err(), "the host's listener was reached");

    let out = native(&fleet, &[], &["--host-network"], "true");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("asks for the host's network and this agent does not allow it"),
        "{}",
        text(&out.stderr)
    );
    serves_on(&fleet);
}

/// A fork bomb fills its own pid limit and its time (or memory) limit, nothing more.
#[test]
fn a_fork_bomb_stays_in_its_cgroup() {
    let fleet = Fleet::start();
    let out = native(&fleet, &[], &["--timeout", "3s"], "f() { f | f & }; f; sleep 2");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Its time limit, or its memory limit first (1024 processes' kernel memory is charged too).
    assert!(stderr.contains("FAILED (TIME_LIMIT)") || stderr.contains("FAILED (OOM)"), "{stderr}");
    let after = native(&fleet, &[], &[], "echo still here");
    assert_eq!(text(&after.stdout), "still here\n", "{}", text(&after.stderr));
    serves_on(&fleet);
}

/// A task tries the calls a container has no business making. Its seccomp profile refuses them
/// with EPERM (the task is not killed: it goes on and reports); the same calls work outside.
#[cfg(target_arch = "x86_64")]
#[test]
fn mounts_tracing_keys_and_namespaces_are_refused() {
    // ptrace(PTRACE_TRACEME) and keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, create)
    // succeed for any process; perl's `syscall` makes them by number (x86_64: 101, 250).
    let calls = r#"perl -e 'print syscall(101, 0, 0, 0, 0) >= 0 ? "ok;" : "$!;"; print syscall(250, 0, -1, 1, 0) >= 0 ? "ok;\n" : "$!;\n"'"#;
    let host = std::process::Command::new("sh").args(["-c", calls]).output().unwrap();
    assert_eq!(text(&host.stdout), "ok;ok;\n", "outside a task both calls work");

    let fleet = Fleet::start();
    let script = format!(
        r#"
        {calls}
        perl -e 'syscall(101, 0, 0, 0, 0); print "ptrace: $!\n"'
        unshare -Ur true 2>&1 | sed 's/^/unshare: /'
        mkdir m; mount -t tmpfs none m 2>&1 | sed 's/^/mount: /'
        echo "went on"
    "#
    );
    let out = native(&fleet, &[], &[], &script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("Operation not permitted;Operation not permitted;\nptrace: Operation not permitted\n"),
        "{stdout}"
    );
    assert!(stdout.contains("unshare: unshare: unshare failed: Operation not permitted"), "{stdout}");
    assert!(stdout.contains("mount: "), "{stdout}");
    assert!(stdout.ends_with("went on\n"), "{stdout}");
    serves_on(&fleet);
}

/// Wasm guests open handles forever, several at once, hoping to exhaust the executor's
/// descriptors so that every later task fails to start. Each is refused at its own cap (256 by
/// default, its stdio and preopens included) with ENFILE, as on a host out of descriptors, goes on
/// and ends as it chooses; the agent serves on.
#[test]
fn guests_hoarding_handles_stop_at_their_cap() {
    let fleet = Fleet::start();
    let local = tempfile::tempdir().unwrap();
    let data = local.path().join("data");
    std::fs::write(&data, "x").unwrap();
    let file_arg = format!("{}:/in/data", data.display());
    let files = guest("files");
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let args =
                        ["--file", &file_arg, files.to_str().unwrap(), "--", "hoard", "/in/data", "read", "/in/data"];
                    fleet.run(&args)
                })
            })
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert!(out.status.success(), "{stdout}\n{stderr}");
            let held: usize = stdout
                .strip_prefix("hoard /in/data: ")
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{stdout}"));
            assert!((240..256).contains(&held), "held {held}: {stdout}");
            assert!(stdout.contains("then Too many open files in system (os error 41)"), "{stdout}");
            // Its handles closed, it opens files again.
            assert!(stdout.ends_with("read /in/data: ok (1 bytes)\n"), "{stdout}");
        }
    });
    serves_on(&fleet);
}

/// Tasks write until the disk is full, hoping to fill the agent's: a Wasm guest and a native task,
/// each with `--disk 16M`. Each gets ENOSPC at its sandbox's size, ends DISK_LIMIT, and the next
/// task on the agent gets a fresh, empty sandbox of its own size.
#[test]
fn writing_past_the_disk_limit_fails_inside_the_task() {
    let fleet = Fleet::start();
    let out = fleet.run(&["--disk", "16M", guest("files").to_str().unwrap(), "--", "fill", "/big"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("FAILED (DISK_LIMIT)") && stderr.contains("filled its disk (16 MiB)"), "{stderr}");
    let got: u64 = stdout
        .strip_prefix("fill /big: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((14..=16).contains(&got), "stopped at 16 MiB, not {got}: {stdout}");
    assert!(stdout.contains("No space left on device") || stdout.contains("Insufficient space"), "{stdout}");

    let out = native(
        &fleet,
        &[],
        &["--disk", "16M", "--mem", "256M"],
        "dd if=/dev/zero of=big bs=1M count=64 2>&1 | head -n 1; exit 1",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("FAILED (DISK_LIMIT)"), "{stdout}\n{stderr}");
    assert!(stdout.contains("No space left on device"), "{stdout}");

    // A fresh sandbox of its own size: nothing of the last task's, and room for 48 MiB.
    let out = native(
        &fleet,
        &[],
        &["--disk", "64M", "--mem", "256M"],
        "ls -A; dd if=/dev/zero of=f bs=1M count=48 2>/dev/null && echo wrote",
    );
    assert_eq!(text(&out.stdout), "wrote\n", "{}", text(&out.stderr));
    serves_on(&fleet);
}

/// A module that is slow and hungry to compile: `funcs` functions of `ops` additions each, one
/// after the other (no loop: nothing for the compiler to skip).
fn compile_bomb(funcs: u32, ops: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                return out.push(byte);
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len() as u32, out);
        out.extend_from_slice(content);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: [] -> []
    let mut functions = Vec::new();
    leb(funcs, &mut functions);
    functions.resize(functions.len() + funcs as usize, 0);
    section(3, &functions, &mut module);
    section(7, b"\x01\x06_start\x00\x00", &mut module);
    // local.get 0, i32.const 1, i32.add, local.set 0; one local i32.
    let mut body = vec![1, 1, 0x7f];
    for _ in 0..ops {
        body.extend_from_slice(&[0x20, 0, 0x41, 1, 0x6a, 0x21, 0]);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(funcs, &mut code);
    for _ in 0..funcs {
        leb(body.len() as u32, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    module
}

/// Compile bombs: a module that would take minutes and gigabytes to compile, sent to an agent
/// with a 3 s compile bound, then to one with a 256 MiB bound. Each fails COMPILE_LIMIT naming its
/// bound, cached tasks go on launching while it compiles, and the agent serves on.
#[test]
fn compile_bombs_stop_at_their_bounds_and_cached_tasks_run_meanwhile() {
    let local = tempfile::tempdir().unwrap();
    let bomb = local.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(6, 700_000)).unwrap();
    let bomb = bomb.to_str().unwrap();
    for (flags, bound) in [
        (["--compile-timeout", "3s"], "did not compile within 3s (the agent's --compile-timeout)"),
        (["--compile-memory-mib", "256"], "took more than 256 MiB of memory (the agent's --compile-memory-mib)"),
    ] {
        let fleet = Fleet::start_with_agent(&flags);
        serves_on(&fleet); // hello is compiled now
        let done = std::sync::atomic::AtomicBool::new(false);
        let (out, cached) = std::thread::scope(|s| {
            let bombing = s.spawn(|| {
                let out = fleet.run(&[bomb]);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                out
            });
            let mut cached = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                serves_on(&fleet);
                cached += 1;
            }
            (bombing.join().unwrap(), cached)
        });
        let stderr = text(&out.stderr);
        assert!(stderr.contains("FAILED (COMPILE_LIMIT)") && stderr.contains(bound), "{stderr}");
        assert!(cached >= 3, "only {cached} cached tasks ran while the bomb was compiling");
        serves_on(&fleet);
    }
}

/// A task's `/dev` holds only the few nodes a program needs, made as the host's; nothing can be
/// added to it (it is read-only), and the nodes work.
#[test]
fn a_tasks_dev_holds_only_its_few_nodes() {
    let fleet = Fleet::start();
    let script = r#"
        ls /dev | tr '\n' ' '; echo
        echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c
        touch /dev/planted 2>&1 | sed 's/^.*: /touch: /'
    "#;
    let out = native(&fleet, &[], &[], script);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stdout, "fd full null random stderr stdin stdout tty urandom zero \n4\n2\ntouch: Read-only file system\n",
        "{stdout}"
    );
    serves_on(&fleet);
}
