//! A coordinator replica's role over time: follower, candidate, leader, and back.
//!
//! With the embedded registry the replica leads from the start, under epoch 1. With etcd it loops:
//! grant a lease and keep it alive, campaign, and once elected build a [`Leader`] over a registry
//! fenced on the election key, recover the state from etcd and lead — until the lease is lost, a
//! fenced write fails, or shutdown. Then it revokes the lease (so the next replica need not wait for
//! it to expire), becomes a follower again and campaigns anew.
//!
//! While following, a replica keeps a [`Mirror`] of the registry (kept by a watch); once elected it
//! recovers from that copy when it has caught up with etcd, else from etcd itself.
//!
//! The gRPC services read the current [`Role`] from a `watch` channel: the leader's handle, or the
//! address of the leader a follower redirects clients to.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::election::{self, Lease};
use crate::leader::{Leader, LeaderConfig, LeaderHandle};
use crate::members::Members;
use crate::registry::{EtcdRegistry, Fence, Mirror, Registry};

/// How long a new leader waits for its mirror of the registry to catch up before reading etcd.
const MIRROR_CATCH_UP: Duration = Duration::from_millis(500);

/// Who leads, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's advertised gRPC address.
    pub address: String,
    pub epoch: u64,
}

/// What this replica is right now.
#[derive(Debug, Clone)]
pub enum Role {
    Leader(LeaderHandle),
    /// Not leading; `leader` is the last leader observed (`None` while none is known).
    Follower {
        leader: Option<LeaderInfo>,
    },
}

/// Records `info` as the leader a follower points to (no change while this replica leads).
pub fn publish_leader(roles: &watch::Sender<Role>, info: LeaderInfo) {
    roles.send_if_modified(|role| match role {
        Role::Follower { leader } if leader.as_ref() != Some(&info) => {
            info!(leader = %info.address, epoch = info.epoch, "observed a new leader");
            *leader = Some(info);
            true
        }
        _ => false,
    });
}

/// Settings of a replica on etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Key prefix of all of this fleet's state (default `/skiff/`).
    pub prefix: String,
    /// Lease TTL (etcd's minimum, 2 s, by default).
    pub lease_ttl: Duration,
    /// TLS to etcd with a client certificate (`https://` endpoints); `None`: plaintext.
    pub tls: Option<skiff_tls::Credentials>,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, prefix: "/skiff/".into(), lease_ttl: Duration::from_secs(2), tls: None }
    }

    /// The election name (etcd keys `<name>/<lease id>`).
    pub fn election_name(&self) -> String {
        format!("{}election", self.prefix)
    }
}

/// Leads for as long as it holds the lease; campaigns again after losing it, until `shutdown`.
pub async fn run_on_etcd(
    client: Members,
    config: EtcdConfig,
    leader_config: LeaderConfig,
    advertise: String,
    roles: watch::Sender<Role>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let name = config.election_name();
    tracker.spawn(election::observe(client.clone(), name.clone(), roles.clone(), shutdown.clone()));
    let mut backoff = Duration::from_millis(50);
    while !shutdown.is_cancelled() {
        // The observer only reports changes: read who leads now (after a step-down it may be another).
        if let Some(info) = election::current_leader(&client, &name).await {
            publish_leader(&roles, info);
        }
        let lease = match election::grant(&client, config.lease_ttl).await {
            Ok(lease) => lease,
            Err(err) => {
                warn!(%err, "cannot get an etcd lease; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let lost = shutdown.child_token();
        // While following, keep a copy of the registry to take over from.
        let mirror = Mirror::new(client.clone(), config.prefix.clone());
        tracker.spawn(mirror.clone().run(lost.child_token()));
        let lag = leader_config.metrics.lease_keepalive.clone();
        tracker.spawn(election::keep_alive(client.clone(), lease, lost.clone(), shutdown.clone(), lag));
        let elected = tokio::select! {
            _ = lost.cancelled() => None,
            e = election::campaign(&client, &name, &advertise, &lease) => match e {
                Ok(e) => Some(e),
                Err(err) => {
                    warn!(%err, "campaign failed");
                    None
                }
            },
        };
        if let Some(elected) = elected {
            let term = Term { elected, lease: &lease, mirror: &mirror };
            lead(&client, &config, &leader_config, &roles, term, lost.clone()).await;
        }
        lost.cancel();
        election::revoke(&client, &lease).await;
    }
    tracker.close();
    tracker.wait().await;
}

/// What a won election leads with: the election key, the lease under it, and the mirror of the
/// registry kept while following.
struct Term<'a> {
    elected: election::Elected,
    lease: &'a Lease,
    mirror: &'a Mirror,
}

/// Leads for `term` until `lost` is cancelled or the leader steps down by itself.
async fn lead(
    client: &Members,
    config: &EtcdConfig,
    leader_config: &LeaderConfig,
    roles: &watch::Sender<Role>,
    term: Term<'_>,
    lost: CancellationToken,
) {
    let Term { elected, lease, mirror } = term;
    let epoch = elected.epoch as u64;
    info!(epoch, lease = lease.id, "elected leader");
    let fence = Fence { key: elected.key, revision: elected.epoch };
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::fenced(client.clone(), config.prefix.clone(), fence));
    let (mut leader, handle) = Leader::new(LeaderConfig { epoch, ..leader_config.clone() }, registry);
    let snapshot = tokio::select! {
        _ = lost.cancelled() => return,
        s = mirror.freeze(MIRROR_CATCH_UP) => s,
    };
    let recovered = tokio::select! {
        _ = lost.cancelled() => return,
        r = async {
            match snapshot {
                Some(snapshot) => leader.recover_from(Arc::new(snapshot)).await,
                None => leader.recover().await,
            }
        } => r,
    };
    if let Err(err) = recovered {
        warn!(%err, "cannot load the state from etcd; stepping down");
        return;
    }
    roles.send_replace(Role::Leader(handle));
    let result = leader.run(lost.clone()).await;
    roles.send_replace(Role::Follower { leader: None });
    match result {
        Ok(()) if lost.is_cancelled() => info!(epoch, "stepped down"),
        Ok(()) => info!(epoch, "leader stopped"),
        Err(err) => warn!(epoch, %err, "leader failed; stepped down"),
    }
}
