//! Coordinator configuration: built once by `main` (flags) or by `skiff dev`, passed by value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::artifacts::StoreLimits;
use crate::leader::LeaderConfig;
use crate::replica::EtcdConfig;

/// The default address coordinators listen on and clients dial.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Debug, Clone)]
pub struct Config {
    /// Address to serve gRPC on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address clients are told to dial to reach this coordinator (defaults to the bound address).
    pub advertise: Option<String>,
    pub leader: LeaderConfig,
    /// Replicate through etcd (`None`: the embedded single-machine registry).
    pub etcd: Option<EtcdConfig>,
    /// Where this replica keeps its artifacts.
    pub data_dir: PathBuf,
    pub artifacts: StoreLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            advertise: None,
            leader: LeaderConfig { heartbeat_interval: Duration::from_secs(1), ..LeaderConfig::default() },
            etcd: None,
            data_dir: PathBuf::from("skiff-coordinator-data"),
            artifacts: StoreLimits::default(),
        }
    }
}
