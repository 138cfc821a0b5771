//! The etcd registry on a real etcd: compare-and-swap, prefix isolation, and fencing — a write under
//! a leader key that was deleted or re-created is refused, and told apart from a conflict.

#[path = "../../cli/tests/fleet/etcd.rs"]
mod etcd;

use skiff_coordinator::members::Members;
use skiff_coordinator::registry::{EtcdRegistry, Fence, Registry, RegistryError, Txn};

/// Creates a key under a fresh lease, as a campaign would; returns the fence on it.
async fn leader_key(client: &mut etcd_client::Client, key: &str) -> (Fence, i64) {
    let lease = client.lease_grant(5, None).await.unwrap().id();
    let put = client.put(key, "addr", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
    let revision = put.header().unwrap().revision();
    (Fence { key: key.as_bytes().to_vec(), revision }, lease)
}

#[tokio::test]
async fn fenced_writes_on_real_etcd() {
    let cluster = etcd::Etcd::start(1);
    let url = cluster.members[0].client_url.clone();
    let mut client = etcd_client::Client::connect([&url], None).await.unwrap();
    let members = Members::connect(std::slice::from_ref(&url), None).await.unwrap();

    let (fence, lease) = leader_key(&mut client, "/test/election/a").await;
    let reg = EtcdRegistry::fenced(members.clone(), "/test/", fence.clone());

    // Compare-and-swap as with the embedded registry.
    let rev1 = reg.commit(Txn::new().if_mod_revision("tasks/1", 0).put("tasks/1", "one")).await.unwrap();
    let got = reg.get("tasks/1").await.unwrap().unwrap();
    assert_eq!((&got.value[..], got.mod_revision), (&b"one"[..], rev1));
    let err = reg.commit(Txn::new().if_mod_revision("tasks/1", 0).put("tasks/1", "again")).await.unwrap_err();
    assert_eq!(err, RegistryError::Conflict { key: "tasks/1".into() });
    reg.commit(Txn::new().if_mod_revision("tasks/1", rev1).put("tasks/1", "two").put("tasks/2", "x")).await.unwrap();

    // Keys live under the prefix and come back without it; other prefixes are invisible.
    let other = EtcdRegistry::fenced(members.clone(), "/other/", fence.clone());
    other.commit(Txn::new().put("tasks/9", "elsewhere")).await.unwrap();
    let keys: Vec<String> = reg.range("tasks/").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["tasks/1", "tasks/2"]);
    assert!(client.get("/test/tasks/1", None).await.unwrap().kvs().len() == 1);

    // A read-only registry reads but cannot write.
    let ro = EtcdRegistry::read_only(members.clone(), "/test/");
    assert_eq!(ro.range("tasks/").await.unwrap().len(), 2);
    assert_eq!(ro.commit(Txn::new().put("tasks/3", "no")).await.unwrap_err(), RegistryError::Fenced);

    // The leader's lease ends (as when it is paused past its TTL): every write is fenced off, even
    // one whose own compares hold, and nothing of it is written.
    client.lease_revoke(lease).await.unwrap();
    let err = reg.commit(Txn::new().put("tasks/1", "stale").delete("tasks/2")).await.unwrap_err();
    assert_eq!(err, RegistryError::Fenced);
    assert_eq!(&reg.get("tasks/1").await.unwrap().unwrap().value[..], b"two");
    assert!(reg.get("tasks/2").await.unwrap().is_some());

    // A new leader key at the same name has another create revision: the old fence still fails.
    let (new_fence, _) = leader_key(&mut client, "/test/election/a").await;
    assert_ne!(new_fence.revision, fence.revision);
    assert_eq!(reg.commit(Txn::new().put("tasks/1", "stale")).await.unwrap_err(), RegistryError::Fenced);
    let new = EtcdRegistry::fenced(members, "/test/", new_fence);
    new.commit(Txn::new().put("tasks/1", "three")).await.unwrap();
    assert_eq!(&reg.get("tasks/1").await.unwrap().unwrap().value[..], b"three");
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable_not_a_hang() {
    let port = etcd::free_port();
    let members = Members::connect(&[format!("http://127.0.0.1:{port}")], None).await.unwrap();
    let reg = EtcdRegistry::read_only(members, "/x/");
    let started = std::time::Instant::now();
    let err = reg.get("tasks/1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A range of many pages: every key once, in order, in several pages, all at the revision of the
/// first page (a write made while the pages are handed out is not in them); on a multi-threaded
/// runtime the next page is read while one is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_ranges_are_one_snapshot_every_key_once() {
    let cluster = etcd::Etcd::start(1);
    let url = cluster.members[0].client_url.clone();
    let mut client = etcd_client::Client::connect([&url], None).await.unwrap();
    let members = Members::connect(std::slice::from_ref(&url), None).await.unwrap();
    let (fence, _) = leader_key(&mut client, "/paged/election/a").await;
    let reg = EtcdRegistry::fenced(members, "/paged/", fence);
    const KEYS: usize = 2_600;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let mut txn = Txn::new();
        for i in chunk {
            txn = txn.put(format!("tasks/{i:05}"), vec![b'x'; 2048]);
        }
        reg.commit(txn).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut keys = Vec::new();
    let mut writer = client.clone();
    let handle = tokio::runtime::Handle::current();
    reg.range_pages("tasks/", &mut |page| {
        if pages.is_empty() {
            // Written after the first page was read: not part of this snapshot.
            handle.block_on(writer.put("/paged/tasks/99999", "late", None)).unwrap();
        }
        pages.push(page.len());
        keys.extend(page.into_iter().map(|(k, _)| k));
    })
    .await
    .unwrap();
    let want: Vec<String> = (0..KEYS).map(|i| format!("tasks/{i:05}")).collect();
    assert_eq!(keys, want, "every key once, in key order, and nothing written after the first page");
    assert!(pages.len() >= 2, "one page for {KEYS} keys: {pages:?}");
    assert_eq!(reg.range("tasks/").await.unwrap().len(), KEYS + 1, "a later range sees the late write");
}
