//! A coordinator: its replica (the leader, or a follower on etcd) plus the gRPC services, served until
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use skiff_proto as pb;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use skiff_core::limits;

use crate::acl::gate::Gate;
use crate::acl::service::AclApi;
use crate::artifacts::service::ArtifactApi;
use crate::artifacts::{self, BlobStore, Peers};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::leader::Leader;
use crate::registry::{EtcdRegistry, MemoryRegistry, Registry};
use crate::replica::{self, Role};
use crate::service::{agent::AgentApi, operator::OperatorApi, scheduler::SchedulerApi};
use skiff_telemetry::{MetricsEndpoint, Refresh};

/// A bound coordinator, ready to [`run`](Coordinator::run).
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    listener: TcpListener,
    metrics: Option<MetricsEndpoint>,
}

impl Coordinator {
    /// Binds the listen address (so callers learn the port before serving).
    pub async fn bind(config: Config) -> Result<Self> {
        if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.insecure_plaintext {
            return Err(Error::InvalidArgument(format!(
                "refusing to serve plaintext without authentication on {}, which is not a loopback address: \
                 give --ca-cert, --cert and --key (see `skiff tls`), or --insecure-plaintext if this network is trusted",
                config.listen
            )));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| Error::InvalidArgument(format!("cannot listen on {}: {err}", config.listen)))?;
        let metrics = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let registry = crate::metrics::registry(&config.leader.metrics);
                let endpoint = MetricsEndpoint::bind(addr, config.insecure_plaintext, registry)
                    .await
                    .map_err(|err| Error::InvalidArgument(err.to_string()))?;
                Some(endpoint)
            }
        };
        Ok(Self { config, listener, metrics })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where metrics are served, if they are (`--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// Serves until `shutdown` is cancelled, then stops the leader and waits for every stream task.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let addr = self.local_addr();
        let advertise = self.config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let store = BlobStore::open(self.config.data_dir.join("artifacts"), self.config.artifacts)
            .map_err(|err| Error::InvalidArgument(format!("artifact store: {err}")))?;
        let store = Arc::new(store);
        let mut peers = Peers::Alone;
        let mut election = None;
        let tracker = TaskTracker::new();
        let leader_token = shutdown.child_token();
        let (roles_tx, roles) = tokio::sync::watch::channel(Role::Follower { leader: None });
        let (grace, interval) = (self.config.leader.artifact_grace, self.config.leader.gc_interval);
        match self.config.etcd.clone() {
            None => {
                let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
                let me = artifacts::Replica { advertise: advertise.clone(), tls: None, alone: true };
                tracker.spawn(artifacts::sweep(
                    store.clone(),
                    registry.clone(),
                    me,
                    grace,
                    interval,
                    leader_token.clone(),
                ));
                let (leader, handle) = Leader::new(self.config.leader.clone(), registry);
                roles_tx.send_replace(Role::Leader(handle));
                let shutdown = shutdown.clone();
                let token = leader_token.clone();
                tracker.spawn(async move {
                    if let Err(err) = leader.run(token).await {
                        error!(%err, "leader failed");
                    }
                    // The embedded registry has a single leader: without it nothing can be served.
                    shutdown.cancel();
                    drop(roles_tx);
                });
            }
            Some(etcd) => {
                let client = crate::members::Members::connect(&etcd.endpoints, etcd.tls.as_ref())
                    .await
                    .map_err(|err| Error::InvalidArgument(format!("etcd {:?}: {err}", etcd.endpoints)))?;
                peers = Peers::Etcd { members: client.clone(), election_name: etcd.election_name() };
                election = Some((client.clone(), etcd.election_name()));
                let registry: Arc<dyn Registry> =
                    Arc::new(EtcdRegistry::read_only(client.clone(), etcd.prefix.clone()));
                let me =
                    artifacts::Replica { advertise: advertise.clone(), tls: self.config.tls.clone(), alone: false };
                tracker.spawn(artifacts::sweep(store.clone(), registry, me, grace, interval, leader_token.clone()));
                info!(endpoints = ?etcd.endpoints, prefix = %etcd.prefix, ttl = ?etcd.lease_ttl, "replicating through etcd");
                let leader_config = self.config.leader.clone();
                tracker.spawn(replica::run_on_etcd(
                    client,
                    etcd,
                    leader_config,
                    advertise.clone(),
                    roles_tx,
                    leader_token.clone(),
                ));
            }
        }

        if let Some(endpoint) = self.metrics {
            let refresh = refresh_metrics(self.config.leader.metrics.clone(), roles.clone(), store.clone());
            let token = shutdown.clone();
            tracker.spawn(async move {
                if let Err(err) = endpoint.with_refresh(refresh).run(token).await {
                    error!(%err, "metrics listener failed");
                }
            });
        }

        let gate = Gate::new(self.config.tls.is_some());
        let agents = pb::agent_service_server::AgentServiceServer::new(AgentApi::new(
            roles.clone(),
            tracker.clone(),
            shutdown.clone(),
            gate,
            self.config.leader.peer_buffer,
        ))
        .max_decoding_message_size(limits::AGENT_MESSAGE_BYTES)
        .max_encoding_message_size(limits::RESPONSE_BYTES);
        let artifacts = pb::artifact_service_server::ArtifactServiceServer::new(ArtifactApi::new(
            roles.clone(),
            store,
            peers,
            advertise.clone(),
            gate,
            self.config.tls.clone(),
        ))
        .max_decoding_message_size(limits::ARTIFACT_CHUNK_BYTES)
        .max_encoding_message_size(limits::ARTIFACT_CHUNK_BYTES);
        let schedulers = pb::scheduler_service_server::SchedulerServiceServer::new(SchedulerApi::new(
            roles.clone(),
            gate,
            self.config.leader.peer_buffer,
        ))
        .max_decoding_message_size(limits::SCHEDULER_REQUEST_BYTES)
        .max_encoding_message_size(limits::RESPONSE_BYTES);
        let acls = pb::acl_service_server::AclServiceServer::new(AclApi::new(roles.clone(), gate))
            .max_decoding_message_size(limits::ACL_REQUEST_BYTES);
        let operators =
            pb::operator_service_server::OperatorServiceServer::new(OperatorApi::new(roles, advertise, gate, election))
                .max_decoding_message_size(limits::OPERATOR_REQUEST_BYTES)
                .max_encoding_message_size(limits::RESPONSE_BYTES);

        info!(%addr, tls = self.config.tls.is_some(), "coordinator serving");
        // Small messages (acks, status updates, launches) go out at once: without TCP_NODELAY each
        // waits for the peer's delayed ACK (40 ms). Server::tcp_nodelay does not apply to an
        // incoming stream of our own, so it is set here.
        let incoming = TcpListenerStream::new(self.listener).map(|conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.config.tls {
            server = server.tls_config(tls.server()).map_err(Error::Serve)?;
        }
        let served = server
            .add_service(agents)
            .add_service(acls)
            .add_service(operators)
            .add_service(schedulers)
            .add_service(artifacts)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await;
        leader_token.cancel();
        tracker.close();
        tracker.wait().await;
        served.map_err(Error::from)
    }
}

/// Before each scrape: the leader's gauges from its status (none on a follower), and this
/// replica's artifact store.
fn refresh_metrics(
    metrics: crate::metrics::Metrics,
    roles: tokio::sync::watch::Receiver<Role>,
    store: Arc<BlobStore>,
) -> Refresh {
    Arc::new(move || {
        let (metrics, store) = (metrics.clone(), store.clone());
        let role = roles.borrow().clone();
        Box::pin(async move {
            metrics.artifact_bytes.set(store.used() as i64);
            metrics.artifact_blobs.set(store.list().len() as i64);
            let status = match role {
                Role::Leader(handle) => handle.ask(|reply| crate::leader::Command::ClusterStatus { reply }).await,
                Role::Follower { leader } => {
                    metrics.epoch.set(leader.map_or(0, |l| l.epoch as i64));
                    metrics.refresh(None);
                    return;
                }
            };
            match status {
                Ok(Ok(status)) => metrics.refresh(Some(&status)),
                _ => metrics.refresh(None),
            }
        })
    })
}
