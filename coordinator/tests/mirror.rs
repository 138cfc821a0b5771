//! The follower's mirror of the registry on a real etcd: it holds exactly what a range reads,
//! including writes made the instant before it is frozen, survives a watch that breaks, and hands
//! over nothing (so the new leader reads etcd) when it cannot catch up.

#[path = "../../cli/tests/fleet/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use skiff_coordinator::members::Members;
use skiff_coordinator::registry::{EtcdRegistry, Fence, Mirror, Registry, Txn};
use tokio_util::sync::CancellationToken;

async fn fenced(client: &mut etcd_client::Client, members: &Members) -> EtcdRegistry {
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let put = client.put("/m/election/a", "addr", Some(etcd_client::PutOptions::new().with_lease(lease))).await;
    let fence = Fence { key: b"/m/election/a".to_vec(), revision: put.unwrap().header().unwrap().revision() };
    EtcdRegistry::fenced(members.clone(), "/m/", fence)
}

/// Every key and value (and revision) under the prefix, as the registry reads it.
async fn everything(registry: &dyn Registry) -> Vec<(String, Vec<u8>, i64)> {
    let range = registry.range("").await.unwrap();
    range.into_iter().map(|(k, v)| (k, v.value.to_vec(), v.mod_revision)).collect()
}

/// Polls (with a deadline) until the mirror has read the registry once and follows the watch.
async fn following(mirror: &Mirror) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror.revision() == 0 {
        assert!(Instant::now() < deadline, "the mirror never read the registry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn mirror_holds_what_etcd_holds_up_to_the_freeze() {
    let cluster = etcd::Etcd::start(1);
    let url = cluster.members[0].client_url.clone();
    let mut client = etcd_client::Client::connect([&url], None).await.unwrap();
    let members = Members::connect(std::slice::from_ref(&url), None).await.unwrap();
    let reg = fenced(&mut client, &members).await;
    for i in 0..300 {
        reg.commit(Txn::new().put(format!("tasks/{i:04}"), vec![i as u8; 100])).await.unwrap();
    }
    // Another fleet's keys on the same etcd are not ours.
    client.put("/other/tasks/1", "theirs", None).await.unwrap();

    let stop = CancellationToken::new();
    let mirror = Mirror::new(members.clone(), "/m/");
    let running = tokio::spawn(mirror.clone().run(stop.clone()));
    following(&mirror).await;
    // Writes while it follows: puts, overwrites, deletes, a large value, in one transaction too.
    for i in 0..100 {
        reg.commit(Txn::new().put(format!("tasks/{i:04}"), b"again".to_vec()).delete(format!("tasks/{:04}", 299 - i)))
            .await
            .unwrap();
    }
    for i in 0..8 {
        reg.commit(Txn::new().put(format!("jobs/big{i}"), vec![i as u8; 900 << 10])).await.unwrap();
    }
    // Writes go on while it is frozen (large ones, which the watch takes a while to deliver): the
    // snapshot holds every write made before the freeze, and is etcd as of its revision.
    let writing = CancellationToken::new();
    let writer = {
        let (reg, writing) = (reg.clone(), writing.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !writing.is_cancelled() {
                reg.commit(Txn::new().put(format!("jobs/w{}", i % 20), vec![i as u8; 300 << 10])).await.unwrap();
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last = reg.commit(Txn::new().put("agents/last", b"x".to_vec())).await.unwrap();
    let snapshot = mirror.freeze(Duration::from_secs(5)).await.expect("a mirror that follows catches up");
    writing.cancel();
    writer.await.unwrap();
    assert!(snapshot.revision() >= last, "frozen at {} before the write at {last}", snapshot.revision());
    let mut kv = client.kv_client().max_decoding_message_size(64 << 20);
    let at = kv.get("/m/", Some(etcd_client::GetOptions::new().with_prefix().with_revision(snapshot.revision())));
    let read: Vec<(String, Vec<u8>, i64)> = at
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| {
            (kv.key_str().unwrap().strip_prefix("/m/").unwrap().to_owned(), kv.value().to_vec(), kv.mod_revision())
        })
        .collect();
    assert_eq!(everything(&snapshot).await, read, "the snapshot is etcd at its revision");
    assert!(read.iter().any(|(k, _, r)| k == "agents/last" && *r == last));
    assert!(!read.iter().any(|(k, _, _)| k.contains("other")));
    assert_eq!(snapshot.range("tasks/").await.unwrap().len(), 200);
    assert_eq!(snapshot.get("jobs/big7").await.unwrap().unwrap().value.len(), 900 << 10);
    // It is read back, never written to.
    assert!(snapshot.commit(Txn::new().put("x", "y")).await.is_err());
    // Frozen, it stops by itself.
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("a frozen mirror stops").unwrap();
    stop.cancel();
}

#[tokio::test]
async fn mirror_that_cannot_catch_up_hands_over_nothing() {
    let mut cluster = etcd::Etcd::start(1);
    let url = cluster.members[0].client_url.clone();
    let mut client = etcd_client::Client::connect([&url], None).await.unwrap();
    let members = Members::connect(std::slice::from_ref(&url), None).await.unwrap();
    let reg = fenced(&mut client, &members).await;
    reg.commit(Txn::new().put("tasks/1", "one")).await.unwrap();

    // Never started: it has read nothing, so the leader must read etcd.
    let idle = Mirror::new(members.clone(), "/m/");
    let started = Instant::now();
    assert!(idle.freeze(Duration::from_millis(300)).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(2));

    // Following, then etcd goes away: the freeze gives up within its wait.
    let stop = CancellationToken::new();
    let mirror = Mirror::new(members.clone(), "/m/");
    let running = tokio::spawn(mirror.clone().run(stop.clone()));
    following(&mirror).await;
    cluster.members[0].kill();
    let started = Instant::now();
    assert!(mirror.freeze(Duration::from_millis(500)).await.is_none(), "no etcd, no snapshot");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("the mirror stops on shutdown").unwrap();
}
