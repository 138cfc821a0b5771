//! A coordinator: the leader task plus the gRPC services, served until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use skiff_proto as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::leader::Leader;
use crate::registry::Registry;
use crate::service::{MAX_MESSAGE_BYTES, agent::AgentApi, operator::OperatorApi};

/// A bound coordinator, ready to [`run`](Coordinator::run).
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    registry: Arc<dyn Registry>,
    listener: TcpListener,
}

impl Coordinator {
    /// Binds the listen address (so callers learn the port before serving).
    pub async fn bind(config: Config, registry: Arc<dyn Registry>) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| Error::InvalidArgument(format!("cannot listen on {}: {err}", config.listen)))?;
        Ok(Self { config, registry, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then stops the leader and waits for every stream task.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let addr = self.local_addr();
        let advertise = self.config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let (leader, handle) = Leader::new(self.config.leader.clone(), self.registry);
        let tracker = TaskTracker::new();
        let leader_token = shutdown.child_token();
        {
            let shutdown = shutdown.clone();
            let token = leader_token.clone();
            tracker.spawn(async move {
                if let Err(err) = leader.run(token).await {
                    error!(%err, "leader failed");
                }
                // Without a leader nothing can be served.
                shutdown.cancel();
            });
        }

        let agents = pb::agent_service_server::AgentServiceServer::new(AgentApi::new(
            handle.clone(),
            tracker.clone(),
            shutdown.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let operators = pb::operator_service_server::OperatorServiceServer::new(OperatorApi::new(handle, advertise))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        info!(%addr, "coordinator serving");
        let served = tonic::transport::Server::builder()
            .add_service(agents)
            .add_service(operators)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown.cancelled())
            .await;
        leader_token.cancel();
        tracker.close();
        tracker.wait().await;
        served.map_err(Error::from)
    }
}
