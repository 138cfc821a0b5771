//! Failover of replicated coordinators on a real etcd: SIGKILL the leader, then time until the next
//! `skiff run` of a trivial Wasm task succeeds on the new leader (the CLI finds it by itself). Beside
//! it, in the same run, the floor: how long etcd itself takes to expire a 2 s lease after its last
//! keep-alive.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::fleet::{HaFleet, text};

/// What the failover benchmark measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub failovers: Vec<Duration>,
    pub lease_expiry: Vec<Duration>,
}

/// `kills` leader kills on 1 etcd member, 3 coordinators (lease TTL 2 s) and 1 agent; `module`
/// is the path of a Wasm task to run after each.
pub fn run(kills: usize, module: &str) -> Result<Figures> {
    let mut fleet = HaFleet::start(1, 3, 1);
    let warm = fleet.run(&["-q", module]);
    ensure!(warm.status.success(), "the first task failed: {}", text(&warm.stderr));
    let mut failovers = Vec::new();
    for k in 0..kills {
        let leader = fleet.leader(Duration::from_secs(30));
        let killed = Instant::now();
        fleet.kill_coordinator(leader);
        let out = fleet.run(&["-q", module]);
        let took = killed.elapsed();
        ensure!(out.status.success(), "kill {k}: no task ran on a new leader: {}", text(&out.stderr));
        eprintln!("  kill {k}: coordinator {leader} SIGKILLed; a task ran on the new leader after {took:.3?}");
        failovers.push(took);
        fleet.start_coordinator(leader);
    }
    let lease_expiry = lease_expiry(&fleet.etcd.members[0].client_url, 3)?;
    Ok(Figures { failovers, lease_expiry })
}

/// etcd's own expiry of a 2 s lease: from the last confirmed keep-alive to the delete of a key on it.
fn lease_expiry(url: &str, rounds: usize) -> Result<Vec<Duration>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut client = crate::fleet::etcd_client(url).await;
        let mut samples = Vec::new();
        for i in 0..rounds {
            let key = format!("/bench/lease/{i}");
            let lease = client.lease_grant(2, None).await?.id();
            client.put(key.as_str(), "x", Some(etcd_client::PutOptions::new().with_lease(lease))).await?;
            let mut watch = client.watch(key.as_str(), None).await?;
            let (_keeper, mut acks) = client.lease_keep_alive(lease).await?;
            let confirmed = Instant::now();
            drop(acks.message());
            loop {
                let Some(resp) = watch.message().await? else { anyhow::bail!("the watch of {key} ended") };
                if resp.events().iter().any(|e| e.event_type() == etcd_client::EventType::Delete) {
                    break;
                }
            }
            samples.push(confirmed.elapsed());
        }
        Ok(samples)
    })
}
