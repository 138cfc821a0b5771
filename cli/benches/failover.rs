//! Failover time of replicated coordinators on a real etcd: SIGKILL the leader, then time until the
//! next `skiff run` of a trivial Wasm task succeeds on the new leader (the CLI finds the new leader by
//! itself). Beside it, in the same run, the floor: how long etcd itself takes to expire a 2 s lease
//! after its last keep-alive.
//!
//!   cargo bench -p skiff-cli --bench failover [-- --kills N]

#[path = "../tests/fleet/mod.rs"]
mod fleet;

use std::time::{Duration, Instant};

use fleet::{HaFleet, guest, text};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<44} n={:<3} min {:>6.2} s  p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s  mean {:>6.2} s",
        samples.len(),
        samples[0].as_secs_f64(),
        percentile(&samples, 50.0).as_secs_f64(),
        percentile(&samples, 99.0).as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
        mean.as_secs_f64()
    );
}

/// etcd's own expiry of a 2 s lease: from the last confirmed keep-alive to the delete of a key on it.
fn lease_expiry(url: &str, rounds: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([url], None).await.unwrap();
        let mut samples = Vec::new();
        for i in 0..rounds {
            let key = format!("/bench/lease/{i}");
            let lease = client.lease_grant(2, None).await.unwrap().id();
            client.put(key.as_str(), "x", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
            let mut watch = client.watch(key.as_str(), None).await.unwrap();
            let (_keeper, mut acks) = client.lease_keep_alive(lease).await.unwrap();
            let confirmed = Instant::now();
            drop(acks.message());
            loop {
                let resp = watch.message().await.unwrap().unwrap();
                if resp.events().iter().any(|e| e.event_type() == etcd_client::EventType::Delete) {
                    break;
                }
            }
            samples.push(confirmed.elapsed());
        }
        samples
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kills = args.iter().position(|a| a == "--kills").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(10);
    println!("failover benchmark: 1 etcd member, 3 coordinators (lease TTL 2 s), 1 agent; {kills} leader kills");
    let mut fleet = HaFleet::start(1, 3, 1);
    let hello = guest("hello").display().to_string();
    let warm = fleet.run(&["-q", &hello]);
    assert!(warm.status.success(), "{}", text(&warm.stderr));

    let mut failovers = Vec::new();
    for k in 0..kills {
        let leader = fleet.leader(Duration::from_secs(30));
        let killed = Instant::now();
        fleet.kill_coordinator(leader);
        let out = fleet.run(&["-q", &hello, "--", &format!("after-kill-{k}")]);
        let took = killed.elapsed();
        assert!(out.status.success(), "kill {k}: no task ran on a new leader: {}", text(&out.stderr));
        println!(
            "  kill {k}: coordinator {leader} SIGKILLed; a task ran on the new leader after {:.3} s",
            took.as_secs_f64()
        );
        failovers.push(took);
        fleet.start_coordinator(leader);
    }
    let expiry = lease_expiry(&fleet.etcd.members[0].client_url, 5);
    println!();
    summary("leader SIGKILL -> task finished on new leader", failovers.clone());
    summary("etcd lease expiry after last keep-alive", expiry.clone());
    let mut sorted = failovers;
    sorted.sort();
    let mut floor = expiry;
    floor.sort();
    println!(
        "failover p99 / lease-expiry p50: {:.2}x (goal: failover p99 <= 3.0 s)",
        percentile(&sorted, 99.0).as_secs_f64() / percentile(&floor, 50.0).as_secs_f64()
    );
}
