//! The etcd members a replica talks to: one client per member and failover between them.
//!
//! etcd-client balances one channel over all endpoints, but keeps routing requests to a member that
//! died (each fails with a transport error) and never reopens streams. Skiff instead talks to one
//! member at a time and moves to the next one as soon as a call through the current one fails; the
//! stream loops of [`crate::election`] reopen their streams on whichever member is current.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tracing::info;

/// Cloneable handle on the etcd members.
#[derive(Clone)]
pub struct Members {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Vec<(String, Client)>,
    current: AtomicUsize,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self.inner.clients.iter().map(|(e, _)| e.as_str()).collect();
        f.debug_struct("Members").field("endpoints", &endpoints).field("current", &self.inner.current).finish()
    }
}

/// A client on one member, and which one (to report it failed).
#[derive(Clone)]
pub struct Member {
    pub index: usize,
    pub client: Client,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("index", &self.index).finish()
    }
}

impl Members {
    /// Clients on each endpoint; they connect lazily (a member may come up later).
    /// With `tls`, each member is verified as the host of its URL and sees `tls`'s certificate.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<&skiff_tls::Credentials>,
    ) -> Result<Self, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_millis(500), Duration::from_secs(1))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls.client(None));
        }
        let mut clients = Vec::new();
        for endpoint in endpoints {
            clients.push((endpoint.clone(), Client::connect([endpoint], Some(options.clone())).await?));
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoints".into()));
        }
        Ok(Self { inner: Arc::new(Inner { clients, current: AtomicUsize::new(0) }) })
    }

    /// The member to use now.
    pub fn current(&self) -> Member {
        let index = self.inner.current.load(Ordering::Acquire) % self.inner.clients.len();
        Member { index, client: self.inner.clients[index].1.clone() }
    }

    /// A call through `member` failed: later calls go to the next member (once per failure of the
    /// current one; reports about a member already left behind are ignored).
    pub fn failed(&self, member: &Member) {
        let n = self.inner.clients.len();
        if n > 1 {
            let next = (member.index + 1) % n;
            let moved =
                self.inner.current.compare_exchange(member.index, next, Ordering::AcqRel, Ordering::Acquire).is_ok();
            if moved {
                info!(from = %self.inner.clients[member.index].0, to = %self.inner.clients[next].0, "switching etcd member");
            }
        }
    }
}
