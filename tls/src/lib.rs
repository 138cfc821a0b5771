//! Skiff's fleet PKI: one CA per fleet, certificates that name their holder's role, and the
//! TLS settings every hop uses (tonic over rustls, no OpenSSL).
//!
//! A certificate says who its holder is in a URI subject alternative name:
//! `skiff://coordinator`, `skiff://agent/NAME` or `skiff://client/NAME`. A coordinator's
//! certificate also carries the DNS name [`COORDINATOR_NAME`], and everyone dialing a coordinator
//! verifies that name (as Nomad's `verify_server_hostname`): only a coordinator's certificate
//! passes, whatever address it was reached at. The receiving side reads the peer's
//! [`Identity`] from its verified certificate and checks its role.
//!
//! Layout:
//! - [`identity`]: roles and identities, and reading them from a certificate.
//! - [`pki`]: creating a CA and issuing role certificates (rcgen).
//! - [`files`]: a party's CA, certificate and key on disk, checked once at load, and the tonic
//!   server and client TLS settings made from them.

pub mod files;
pub mod identity;
pub mod pki;

pub use files::{Credentials, TlsFiles, coordinator_endpoint};
pub use identity::{Identity, Role, peer_identity};
pub use pki::{Ca, Issued, Validity};

/// The DNS name in every coordinator certificate, verified by whoever dials a coordinator.
pub const COORDINATOR_NAME: &str = "coordinator.skiff";

/// What can go wrong with keys and certificates; each message names the file or the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
