//! Artifacts end to end on the real binaries: modules move by hash, are uploaded once, survive a
//! leader failover on a replica, are verified in flight, bounded in size, and a restarted agent with
//! a warm cache does not fetch again.

mod fleet;

use std::time::Duration;

use fleet::{Fleet, HaFleet, guest, text};
use skiff_proto as pb;

fn g(name: &str) -> String {
    guest(name).display().to_string()
}

/// A valid Wasm module of about `size` bytes: the header and one custom section of filler.
fn module_of_size(size: usize) -> Vec<u8> {
    let payload = size - 16;
    let mut body = vec![1, b'x'];
    body.resize(payload, 0);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.push(0); // custom section
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        module.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    module.extend_from_slice(&body);
    module
}

#[test]
fn corrupted_or_oversize_uploads_are_refused_and_nothing_is_stored() {
    let fleet = Fleet::start_with(&["--max-artifact-mib", "1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let module = std::fs::read(guest("hello")).unwrap();
    let sha256 = skiff_cli::artifact::sha256_hex(&module);
    let status = rt.block_on(async {
        let channel = fleet::pki::channel(&fleet.addr).await.unwrap();
        let mut client = pb::artifact_service_client::ArtifactServiceClient::new(channel);
        let mut flipped = module.clone();
        flipped[1000] ^= 0xff;
        let header = pb::UploadHeader { sha256: sha256.clone(), size: module.len() as u64 };
        let chunks = vec![
            pb::UploadChunk { part: Some(pb::upload_chunk::Part::Header(header)) },
            pb::UploadChunk { part: Some(pb::upload_chunk::Part::Data(flipped)) },
        ];
        let err = client.upload(futures::stream::iter(chunks)).await.unwrap_err();
        let stat = client.stat(pb::StatArtifactRequest { sha256: sha256.clone() }).await.unwrap().into_inner();
        assert!(!stat.present, "a corrupted transfer must not be stored");
        err
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("corrupted"), "{status:?}");
    let on_disk: Vec<_> = std::fs::read_dir(fleet.data_dir.path().join("artifacts")).unwrap().collect();
    assert!(on_disk.is_empty(), "nothing may be left on disk: {on_disk:?}");

    // The good bytes go through, once.
    let out = fleet.skiff(&["push", &g("hello")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), sha256);
    assert!(text(&out.stderr).contains("uploaded"), "{}", text(&out.stderr));
    let out = fleet.skiff(&["push", &g("hello")]);
    assert!(text(&out.stderr).contains("already stored"), "{}", text(&out.stderr));

    // Over the coordinator's 1 MiB limit: a clear error, exit 64.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, module_of_size(2 << 20)).unwrap();
    let out = fleet.skiff(&["push", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("over the 1048576 byte limit"), "{}", text(&out.stderr));
}

#[test]
fn restarted_agent_with_a_warm_cache_does_not_fetch_again() {
    let mut fleet = Fleet::start();
    let first = fleet.run(&[&g("hello")]);
    assert!(text(&first.stderr).contains("module fetched"), "{}", text(&first.stderr));
    fleet.restart_agent();
    let again = fleet.run(&[&g("hello")]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("already stored"), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("module disk"), "compiled module reused, no fetch: {}", text(&again.stderr));
}

#[test]
fn module_survives_a_leader_failover_without_being_uploaded_again() {
    let mut fleet = HaFleet::start(1, 3, 0);
    let leader = fleet.leader(Duration::from_secs(15));
    let mut push = fleet::skiff_cmd(&fleet.coordinators_arg());
    push.args(["push", "--coordinators", &fleet.coordinators_arg(), &g("primes")]);
    let out = fleet::run_bounded(push, None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("uploaded") && text(&out.stderr).contains("on 3 coordinator replicas"));

    fleet.kill_coordinator(leader);
    // A fresh agent, so the module must come from a surviving replica.
    fleet.add_agent();
    let out = fleet.run(&[&g("primes"), "--", "100"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already stored"), "not uploaded again: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("module fetched"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "25 primes below 100\n");
}

/// The task id `skiff run` printed.
fn task_id(stderr: &str) -> String {
    stderr.split_whitespace().find(|w| w.starts_with("t-")).expect("task id in the output").to_owned()
}

fn cp(fleet: &Fleet, source: &str, dest: &std::path::Path) -> std::process::Output {
    fleet.skiff(&["cp", source, dest.to_str().unwrap()])
}

#[test]
fn files_dirs_and_outputs_round_trip_through_a_wasm_task() {
    let fleet = Fleet::start();
    let local = tempfile::tempdir().unwrap();
    let input = local.path().join("in.txt");
    std::fs::write(&input, "shout this\n").unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a").unwrap();
    std::fs::write(tree.join("sub/b.txt"), "bb").unwrap();

    let file_arg = input.display().to_string();
    let dir_arg = format!("{}:/data", tree.display());
    let out = fleet.run(&[
        "--file",
        &file_arg,
        "--dir",
        &dir_arg,
        "--output",
        "/out.txt",
        "--output",
        "/missing.txt",
        &g("files"),
        "--",
        "upper",
        "/input/in.txt",
        "/out.txt",
        "ls",
        "/data",
        "read",
        "/data/sub/b.txt",
        "write",
        "/input/in.txt",
        "write",
        "/data/a.txt",
        "read",
        "/etc/passwd",
        "ls",
        "/",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "upper /input/in.txt -> /out.txt: ok", "{stdout}");
    assert_eq!(lines[1], "ls /data: a.txt,sub/b.txt", "{stdout}");
    assert_eq!(lines[2], "read /data/sub/b.txt: ok (2 bytes)", "{stdout}");
    assert!(lines[3].starts_with("write /input/in.txt: denied"), "inputs are read-only: {stdout}");
    assert!(lines[4].starts_with("write /data/a.txt: denied"), "--dir is read-only: {stdout}");
    assert!(lines[5].starts_with("read /etc/passwd: denied"), "{stdout}");
    assert_eq!(lines[6], "ls /: out.txt", "the sandbox holds only what the task wrote: {stdout}");
    assert!(stderr.contains("output /out.txt collected (11 bytes)"), "{stderr}");
    assert!(stderr.contains("output /missing.txt was not collected: the task did not write it"), "{stderr}");

    let dest = local.path().join("got.txt");
    let got = cp(&fleet, &format!("{}:/out.txt", task_id(&stderr)), &dest);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "SHOUT THIS\n");
    let missing = cp(&fleet, &format!("{}:/nope.txt", task_id(&stderr)), &dest);
    assert_eq!(missing.status.code(), Some(64), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("has no output /nope.txt"), "{}", text(&missing.stderr));
}

#[test]
fn files_and_outputs_round_trip_through_a_native_task() {
    let fleet = Fleet::start();
    let local = tempfile::tempdir().unwrap();
    let input = local.path().join("in.txt");
    std::fs::write(&input, "native input\n").unwrap();
    let file_arg = format!("{}:/input/in.txt", input.display());
    let script = "tr a-z A-Z < input/in.txt > out.txt && if echo x >> input/in.txt 2>/dev/null; then echo WROTE; else echo READONLY; fi";
    let out = fleet.run(&["--native", "--file", &file_arg, "--output", "/out.txt", "--", "sh", "-c", script]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "READONLY\n", "inputs are read-only for the task: {stderr}");
    let dest = local.path().join("got.txt");
    let got = cp(&fleet, &format!("{}:/out.txt", task_id(&stderr)), &dest);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "NATIVE INPUT\n");
}

#[test]
fn unused_artifacts_are_collected_after_the_grace_period_never_while_a_task_uses_them() {
    let fleet = Fleet::start_with(&["--artifact-grace", "1s", "--gc-interval", "100ms"]);
    let blob = |sha: &str| fleet.data_dir.path().join("artifacts").join(sha);
    let out = fleet.skiff(&["push", &g("hello")]);
    let hello = text(&out.stdout).trim().to_owned();
    assert!(blob(&hello).exists());

    let spin = skiff_cli::artifact::sha256_hex(&std::fs::read(guest("spin")).unwrap());
    let (mut long, _) = fleet::running(&fleet.addr, &["--cpus", "0.5", &g("spin"), "--", "4000"]);
    let started = std::time::Instant::now();
    fleet::eventually(Duration::from_secs(10), "the unused module to be removed", || {
        (!blob(&hello).exists()).then_some(())
    });
    // Past its grace period, the module of the running task stays.
    while started.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(blob(&spin).exists(), "the module of a running task was removed");
    let (code, _) = fleet::wait_exit(&mut long, Duration::from_secs(30));
    assert_eq!(code, 0);
    fleet::eventually(Duration::from_secs(10), "the module to go once no task uses it", || {
        (!blob(&spin).exists()).then_some(())
    });
    // Gone from the fleet too: the next run uploads it again.
    let again = fleet.run(&[&g("hello")]);
    assert!(text(&again.stderr).contains(" uploaded ("), "{}", text(&again.stderr));
}
