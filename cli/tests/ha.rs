//! Replicated coordinators on real etcd, as separate processes: failover after SIGKILL, a paused
//! leader fenced off, a leader cut off from etcd stepping down, and a 3-member etcd losing a member.

mod fleet;

use std::time::{Duration, Instant};

use fleet::{HaFleet, eventually, get_leader, guest, running, text, wait_exit};
use nix::sys::signal::Signal;
use prost::Message;
use skiff_proto as pb;

/// These tests measure failover times: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn sigkilled_leader_is_replaced_and_running_tasks_report_to_the_new_one() {
    let _serial = serial();
    let mut fleet = HaFleet::start(1, 3, 1);
    let old = fleet.leader(Duration::from_secs(15));
    let hello = guest("hello").display().to_string();
    let spin = guest("spin").display().to_string();
    let out = fleet.run(&[&hello]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A task that spans the failover.
    let (mut long, _) = running(&fleet.coordinators_arg(), &["--cpus", "0.5", &spin, "--", "4000"]);

    let killed = Instant::now();
    fleet.kill_coordinator(old);
    let out = fleet.run(&[&hello]);
    let elapsed = killed.elapsed();
    assert!(out.status.success(), "no task ran after the failover: {}", text(&out.stderr));
    assert!(elapsed <= Duration::from_secs(3), "a new leader accepted a task only {elapsed:?} after the kill");
    let new = fleet.leader(Duration::from_secs(5));
    assert_ne!(new, old);

    let (code, stdout) = wait_exit(&mut long, Duration::from_secs(30));
    assert_eq!(code, 0, "the task launched by the old leader should finish under the new one");
    assert!(stdout.contains("spun to"), "{stdout}");
}

/// Every task and agent record written to etcd, with the revision that wrote it, and the revision at
/// which the election key of `epoch` was deleted.
fn etcd_history(url: &str, epoch: u64) -> (Vec<(i64, String, u64)>, Option<i64>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut client = fleet::etcd_client(url).await;

            let now = client.get("/", None).await.unwrap().header().unwrap().revision();
            let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(1).with_prev_key();
            let mut stream = client.watch("/skiff/", Some(options)).await.unwrap();
            let mut writes = Vec::new();
            let mut deleted_at = None;
            'outer: while let Some(resp) = stream.message().await.unwrap() {
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = kv.key_str().unwrap().to_owned();
                    let done = kv.mod_revision() >= now;
                    if event.event_type() == etcd_client::EventType::Delete && key.starts_with("/skiff/election/") {
                        let created = event.prev_kv().map_or(0, |p| p.create_revision());
                        if created as u64 == epoch {
                            deleted_at = Some(kv.mod_revision());
                        }
                    } else if event.event_type() == etcd_client::EventType::Put {
                        let written_under = if key.starts_with("/skiff/tasks/") {
                            pb::TaskRecord::decode(kv.value()).unwrap().leader_epoch
                        } else if key.starts_with("/skiff/agents/") {
                            pb::AgentRecord::decode(kv.value()).unwrap().leader_epoch
                        } else {
                            0
                        };
                        writes.push((kv.mod_revision(), key, written_under));
                    }
                    if done {
                        break 'outer;
                    }
                }
            }
            (writes, deleted_at)
        })
        .await
    });
    read.expect("etcd history read within 10 s")
}

#[test]
fn paused_leader_is_fenced_off_and_steps_down() {
    let _serial = serial();
    let fleet = HaFleet::start(1, 3, 1);
    let old = fleet.leader(Duration::from_secs(15));
    let (_, _, old_epoch) = get_leader(&fleet.addrs[old]).unwrap();
    let hello = guest("hello").display().to_string();
    assert!(fleet.run(&[&hello]).status.success());

    // A client connected to the leader before it is paused; its request waits in the socket.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt.block_on(async {
        let channel = fleet::pki::channel(&fleet.addrs[old]).await.unwrap();
        pb::operator_service_client::OperatorServiceClient::new(channel)
    });
    fleet.signal_coordinator(old, Signal::SIGSTOP);
    let stopped = Instant::now();
    let new = eventually(Duration::from_secs(10), "another leader", || {
        (0..3).find(|&i| i != old && get_leader(&fleet.addrs[i]).is_some_and(|(leads, _, _)| leads))
    });
    assert!(stopped.elapsed() >= Duration::from_secs(1), "took over before the lease could expire");
    // hello is in the artifact store (the run above put it there): name it by hash.
    let module = std::fs::read(guest("hello")).unwrap();
    let wasm = pb::WasmTask {
        module: Vec::new(),
        module_sha256: skiff_cli::artifact::sha256_hex(&module),
        module_size: module.len() as u64,
    };
    let submit = rt.spawn(async move {
        let spec = pb::TaskSpec {
            name: "late".into(),
            resources: Some(pb::Resources { cpus: 0.1, mem_bytes: 16 << 20, ..Default::default() }),
            kind: Some(pb::task_spec::Kind::Wasm(wasm)),
            ..Default::default()
        };
        client.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await
    });
    // Wait for a task on the new leader, then let the old one run again.
    assert!(fleet.run(&[&hello]).status.success());
    fleet.signal_coordinator(old, Signal::SIGCONT);

    let answer = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), submit).await });
    let answer = answer.expect("the old leader answers after SIGCONT").unwrap();
    let status = answer.expect_err("the deposed leader accepted a task");
    assert!(
        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::FailedPrecondition),
        "refused for the wrong reason: {status:?}"
    );
    eventually(Duration::from_secs(5), "the old leader to step down and name the new one", || {
        let (leads, address, _) = get_leader(&fleet.addrs[old])?;
        (!leads && address == fleet.addrs[new]).then_some(())
    });

    let (writes, deleted_at) = etcd_history(&fleet.etcd.members[0].client_url, old_epoch);
    let deleted_at = deleted_at.expect("the old leader's election key was deleted (its lease expired)");
    assert!(writes.iter().any(|(_, _, e)| *e == old_epoch), "the old leader wrote records before its pause");
    let late: Vec<_> = writes.iter().filter(|(rev, _, e)| *rev > deleted_at && *e == old_epoch).collect();
    assert!(late.is_empty(), "writes by the old leader after its lease expired: {late:?}");
}

#[test]
fn leader_cut_off_from_etcd_steps_down_within_the_ttl() {
    let _serial = serial();
    let etcd = fleet::secure_etcd(3);
    let all = etcd.urls();
    let only_first = etcd.members[0].client_url.clone();
    let mut fleet = HaFleet::start_on(etcd, vec![only_first, all.clone(), all], 0);
    // Make coordinator 0 (which talks only to member 0) the leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = fleet.leader(Duration::from_secs(15));
        if leader == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "coordinator 0 never won an election");
        fleet.kill_coordinator(leader);
        fleet.start_coordinator(leader);
    }
    fleet.etcd.members[0].kill();
    let cut = Instant::now();
    eventually(Duration::from_secs(5), "coordinator 0 to stop leading", || {
        get_leader(&fleet.addrs[0]).is_some_and(|(leads, _, _)| !leads).then_some(())
    });
    let elapsed = cut.elapsed();
    assert!(elapsed <= Duration::from_secs(2), "stopped leading only {elapsed:?} after losing etcd (TTL 2 s)");
    eventually(Duration::from_secs(10), "a coordinator still on etcd to lead", || {
        (1..3).find(|&i| get_leader(&fleet.addrs[i]).is_some_and(|(leads, _, _)| leads))
    });
}

#[test]
fn fleet_keeps_working_when_an_etcd_member_dies() {
    let _serial = serial();
    let mut fleet = HaFleet::start(3, 3, 1);
    fleet.leader(Duration::from_secs(15));
    let hello = guest("hello").display().to_string();
    assert!(fleet.run(&[&hello]).status.success());
    fleet.etcd.members[0].kill();
    for i in 0..3 {
        let out = fleet.run(&[&hello, "--", &format!("after-{i}")]);
        assert!(out.status.success(), "run {i} after losing an etcd member: {}", text(&out.stderr));
    }
}
