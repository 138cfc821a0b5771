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
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", fleet.addr)).unwrap().connect().await.unwrap();
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
    let mut push = std::process::Command::new(fleet::bin("skiff"));
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
