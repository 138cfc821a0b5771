//! Coordinator configuration: built once by `main` (flags) or by `skiff dev`, passed by value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::allocator::RoleConfig;
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
    /// TLS on every connection, client certificates required, ACLs on (`None`: plaintext, ACLs off).
    pub tls: Option<skiff_tls::Credentials>,
    /// Serve plaintext on a non-loopback address anyway (`--insecure-plaintext`).
    pub insecure_plaintext: bool,
    /// Serve Prometheus metrics here (`--metrics-listen`; `None`: no metrics listener).
    pub metrics_listen: Option<SocketAddr>,
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
            tls: None,
            insecure_plaintext: false,
            metrics_listen: None,
        }
    }
}

/// Role settings from `--role-weight ROLE=W`, `--role-guarantee ROLE=RES` and `--role-limit ROLE=RES`.
pub fn roles(
    weights: &[(String, String)],
    guarantees: &[(String, String)],
    limits: &[(String, String)],
) -> Result<Vec<(String, RoleConfig)>, String> {
    let mut roles: std::collections::BTreeMap<String, RoleConfig> = Default::default();
    for (role, weight) in weights {
        let w: f64 = weight
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w > 0.0)
            .ok_or_else(|| format!("--role-weight {role}={weight}: the weight must be a positive number"))?;
        roles.entry(role.clone()).or_default().weight = w;
    }
    for (role, res) in guarantees {
        let r = crate::units::parse_resources(res).map_err(|e| format!("--role-guarantee {role}: {e}"))?;
        roles.entry(role.clone()).or_default().guarantee = r;
    }
    for (role, res) in limits {
        let mut r = crate::units::parse_resources(res).map_err(|e| format!("--role-limit {role}: {e}"))?;
        // Resources the limit does not name are not limited.
        let unlimited = |v: u64| if v == 0 { u64::MAX } else { v };
        r.millicpus = unlimited(r.millicpus);
        r.mem_bytes = unlimited(r.mem_bytes);
        r.disk_bytes = unlimited(r.disk_bytes);
        r.wasm_slots = if r.wasm_slots == 0 { u32::MAX } else { r.wasm_slots };
        roles.entry(role.clone()).or_default().limit = Some(r);
    }
    for (role, config) in &roles {
        if let Some(limit) = config.limit
            && !limit.contains(&config.guarantee)
        {
            return Err(format!("role {role}: its guarantee {} exceeds its limit {limit}", config.guarantee));
        }
    }
    Ok(roles.into_iter().collect())
}
