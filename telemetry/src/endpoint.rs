//! The `/metrics` listener: the Prometheus text format (version 0.0.4) of a registry, on a
//! listener of its own so that scraping never competes with the gRPC services' limits.
//!
//! Metrics say which tasks run where and how busy the fleet is, and the listener has no TLS: it
//! binds a loopback address unless the operator says the network is trusted (as the gRPC listener
//! refuses plaintext elsewhere).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Called before each scrape to bring gauges read from elsewhere (a leader's state) up to date.
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to serve metrics on {0}, which is not a loopback address: they are served without TLS; \
         use a loopback address (and a local scraper or proxy), or --insecure-plaintext if this network is trusted"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    refresh: Option<Refresh>,
}

/// A bound metrics listener, ready to [`run`](MetricsEndpoint::run).
pub struct MetricsEndpoint {
    listener: TcpListener,
    shared: Shared,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// Binds `addr` (port 0 picks one); a non-loopback address only with `insecure_plaintext`.
    pub async fn bind(addr: SocketAddr, insecure_plaintext: bool, registry: Registry) -> Result<Self, Error> {
        if !addr.ip().is_loopback() && !insecure_plaintext {
            return Err(Error::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        Ok(Self { listener, shared: Shared { registry: Arc::new(registry), refresh: None } })
    }

    /// Calls `refresh` before encoding each scrape.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.shared.refresh = Some(refresh);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves `GET /metrics` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let addr = self.local_addr();
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/", get(|| async { "Skiff metrics: GET /metrics (Prometheus text format 0.0.4)\n" }))
            .with_state(self.shared);
        tracing::info!(%addr, "serving metrics");
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
    }
}

async fn scrape(State(shared): State<Shared>) -> impl IntoResponse {
    if let Some(refresh) = &shared.refresh {
        refresh().await;
    }
    let mut body = String::with_capacity(16 << 10);
    match prometheus_text::encode(&mut body, &shared.registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn refuses_a_non_loopback_address_without_the_operator_saying_so() {
        let err = MetricsEndpoint::bind("0.0.0.0:0".parse().unwrap(), false, Registry::default()).await.unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
    }

    #[tokio::test]
    async fn serves_the_registry_after_refreshing_it() {
        let mut registry = Registry::default();
        let scrapes: Counter = Counter::default();
        registry.register("scrapes", "Scrapes so far", scrapes.clone());
        let counted = scrapes.clone();
        let refresh: Refresh = Arc::new(move || {
            counted.inc();
            Box::pin(async {})
        });
        let endpoint =
            MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), false, registry).await.unwrap().with_refresh(refresh);
        let addr = endpoint.local_addr();
        let stop = CancellationToken::new();
        let served = tokio::spawn(endpoint.run(stop.clone()));
        let body = get_text(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("text/plain; version=0.0.4"), "{body}");
        assert!(body.contains("scrapes_total 1\n"), "{body}");
        assert!(get_text(addr, "/nothing").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        served.await.unwrap().unwrap();
    }

    async fn get_text(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
