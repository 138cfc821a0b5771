//! A party's TLS credentials on disk: the fleet CA, its certificate and its key, checked once
//! when loaded, and the tonic settings made from them.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::identity::{Identity, Role};
use crate::{COORDINATOR_NAME, Error, Result};

/// Where a party's CA certificate, certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca`, `cert` and `key` from flags: all three or none (`None`), else an error naming what
    /// is missing.
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        flags: [&str; 3],
    ) -> Result<Option<Self>> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Self { ca, cert, key })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [ca.is_none(), cert.is_none(), key.is_none()]
                    .iter()
                    .zip(flags)
                    .filter_map(|(missing, flag)| missing.then_some(flag))
                    .collect();
                Err(Error::Invalid(format!(
                    "TLS needs a CA certificate, a certificate and a key: {} missing",
                    missing.join(", ")
                )))
            }
        }
    }

    /// Reads the three files and checks that the certificate is for `role`.
    pub fn load(&self, role: Role) -> Result<Credentials> {
        let (mut credentials, identity) = self.read()?;
        let identity = identity.map_err(|e| at(&self.cert, e.to_string()))?;
        if identity.role != role {
            return Err(at(
                &self.cert,
                format!(
                    "the certificate is for {} ({identity}), not {}",
                    identity.role.with_article(),
                    role.with_article()
                ),
            ));
        }
        credentials.identity = identity;
        Ok(credentials)
    }

    /// Reads the three files; the certificate may be of any role, or of none (a certificate that
    /// another CA issued, e.g. for etcd, which then counts as a nameless client's).
    pub fn load_any(&self) -> Result<Credentials> {
        self.read().map(|(credentials, _)| credentials)
    }

    /// The three files, checked to hold PEM, and the identity the certificate names.
    fn read(&self) -> Result<(Credentials, Result<Identity>)> {
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        if pem_certs(&ca).map_err(|e| at(&self.ca, e))?.is_empty() {
            return Err(at(&self.ca, "holds no PEM certificate".into()));
        }
        let leaf = pem_certs(&cert).map_err(|e| at(&self.cert, e))?;
        let leaf = leaf.first().ok_or_else(|| at(&self.cert, "holds no PEM certificate".into()))?;
        let named = Identity::from_der(leaf);
        if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
            return Err(at(&self.key, "holds no PEM private key".into()));
        }
        let identity = named.as_ref().map_or(Identity { role: Role::Client, name: String::new() }, Clone::clone);
        Ok((Credentials { ca, cert, key, identity }, named))
    }
}

fn at(path: &Path, problem: String) -> Error {
    Error::Invalid(format!("{}: {problem}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })
}

/// The DER certificates in a PEM text.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut certs = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| format!("not PEM: {e}"))?;
        if item.label == "CERTIFICATE" {
            certs.push(item.contents);
        }
    }
    Ok(certs)
}

/// Loaded, checked credentials of one party.
#[derive(Clone)]
pub struct Credentials {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    identity: Identity,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from PEM texts already in memory; the certificate must be for `role`.
    pub fn from_pem(ca: &str, cert: &str, key: &str, role: Role) -> Result<Self> {
        let leaf = pem_certs(cert.as_bytes()).map_err(Error::Invalid)?;
        let leaf = leaf.first().ok_or_else(|| Error::Invalid("no PEM certificate".into()))?;
        let identity = Identity::from_der(leaf)?;
        if identity.role != role {
            return Err(Error::Invalid(format!(
                "the certificate is for {}, not {}",
                identity.role.with_article(),
                role.with_article()
            )));
        }
        Ok(Self { ca: ca.as_bytes().to_vec(), cert: cert.as_bytes().to_vec(), key: key.as_bytes().to_vec(), identity })
    }

    /// Who these credentials say their holder is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// A server that requires nothing of the TLS handshake beyond a valid certificate from the
    /// fleet's CA if one is sent: a request without one reaches the service, which refuses it with
    /// a message saying so ("no client certificate") instead of a bare handshake failure.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(true)
    }

    /// A client that presents these credentials and accepts only a coordinator of the fleet.
    pub fn to_coordinator(&self) -> ClientTlsConfig {
        self.client(Some(COORDINATOR_NAME))
    }

    /// A client that presents these credentials and verifies the server as `server_name`
    /// (`None`: as the host it dials, e.g. an etcd member by its address).
    pub fn client(&self, server_name: Option<&str>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(TonicIdentity::from_pem(&self.cert, &self.key));
        match server_name {
            Some(name) => config.domain_name(name),
            None => config,
        }
    }
}

/// An endpoint on a coordinator at `address` (`host:port`): TLS with `tls`, plaintext without.
pub fn coordinator_endpoint(address: &str, tls: Option<&Credentials>) -> Result<tonic::transport::Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| format!("{address}: invalid address: {e}"))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.to_coordinator()).map_err(|e| format!("{address}: TLS settings: {e}")),
        None => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Validity};

    #[test]
    fn loading_checks_the_role_and_names_missing_parts() {
        let dir = tempfile_dir();
        let (ca, ca_files) = Ca::create("t", Validity::days(1)).unwrap();
        let agent = ca.issue(&Identity::agent("a1").unwrap(), &[], Validity::days(1)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca_files.cert_pem).unwrap();
        std::fs::write(dir.join("a.pem"), &agent.cert_pem).unwrap();
        std::fs::write(dir.join("a-key.pem"), &agent.key_pem).unwrap();
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("a.pem"), key: dir.join("a-key.pem") };
        assert_eq!(files.load(Role::Agent).unwrap().identity().name, "a1");
        let err = files.load(Role::Client).unwrap_err().to_string();
        assert!(err.contains("the certificate is for an agent (agent a1), not a client"), "{err}");
        let err = TlsFiles::from_parts(Some("x".into()), None, Some("k".into()), ["--ca-cert", "--cert", "--key"])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("--cert missing"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
