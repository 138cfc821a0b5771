//! Who holds a certificate: its [`Role`] and, for agents and clients, a name.

use std::fmt;

use x509_parser::extensions::GeneralName;

use crate::{Error, Result};

const SCHEME: &str = "skiff://";

/// The role a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A coordinator replica: serves the fleet's API and dials its peers.
    Coordinator,
    /// An agent: holds one session under the name its certificate gives.
    Agent,
    /// A user, a framework or a script: acts with an ACL token.
    Client,
    /// An etcd member serving the coordinators (a server certificate only).
    Etcd,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Client => "client",
            Role::Etcd => "etcd",
        }
    }

    /// "a coordinator", "an agent", ... for error messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Role::Coordinator => "a coordinator",
            Role::Agent => "an agent",
            Role::Client => "a client",
            Role::Etcd => "an etcd member",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "coordinator" => Role::Coordinator,
            "agent" => Role::Agent,
            "client" => Role::Client,
            "etcd" => Role::Etcd,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate holder: a role and a name (empty for coordinators and etcd members).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn coordinator() -> Self {
        Self { role: Role::Coordinator, name: String::new() }
    }

    pub fn etcd() -> Self {
        Self { role: Role::Etcd, name: String::new() }
    }

    /// An agent named `name` (validated: see [`check_name`]).
    pub fn agent(name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Self { role: Role::Agent, name: name.to_owned() })
    }

    /// A client named `name` (validated: see [`check_name`]).
    pub fn client(name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Self { role: Role::Client, name: name.to_owned() })
    }

    /// The URI naming this identity in a certificate.
    pub fn uri(&self) -> String {
        if self.name.is_empty() {
            format!("{SCHEME}{}", self.role)
        } else {
            format!("{SCHEME}{}/{}", self.role, self.name)
        }
    }

    fn from_uri(uri: &str) -> Option<Result<Self>> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (role, name) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(role) = Role::parse(role) else {
            return Some(Err(Error::Invalid(format!("certificate names an unknown role: {uri}"))));
        };
        let identity = match role {
            Role::Coordinator | Role::Etcd if name.is_empty() => Ok(Identity { role, name: String::new() }),
            Role::Coordinator | Role::Etcd => Err(Error::Invalid(format!("{role} certificates carry no name: {uri}"))),
            Role::Agent => Identity::agent(name),
            Role::Client => Identity::client(name),
        };
        Some(identity)
    }

    /// The identity a DER certificate names (its one `skiff://` URI).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Invalid(format!("unreadable certificate: {e}")))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| Error::Invalid(format!("certificate's subject alternative names: {e}")))?;
        let mut found = None;
        for name in names.iter().flat_map(|ext| ext.value.general_names.iter()) {
            if let GeneralName::URI(uri) = name
                && let Some(identity) = Identity::from_uri(uri)
            {
                if found.is_some() {
                    return Err(Error::Invalid("certificate names more than one Skiff identity".into()));
                }
                found = Some(identity?);
            }
        }
        found.ok_or_else(|| {
            Error::Invalid("certificate names no Skiff identity (no skiff:// subject alternative name)".into())
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() { write!(f, "{}", self.role) } else { write!(f, "{} {}", self.role, self.name) }
    }
}

/// Agent and client names: 1–63 of `[A-Za-z0-9._-]`, not starting with a dot or dash.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name:?} is not a valid name: use 1-63 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )))
    }
}

/// The identity of a request's peer, read from the certificate the TLS handshake verified:
/// `None` when the connection is not TLS or the peer sent no certificate.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<Result<Identity>> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    Some(Identity::from_der(leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_refused() {
        for identity in [Identity::coordinator(), Identity::agent("a-1").unwrap(), Identity::client("ops").unwrap()] {
            assert_eq!(Identity::from_uri(&identity.uri()).unwrap().unwrap(), identity);
        }
        assert!(Identity::from_uri("https://agent/x").is_none());
        assert!(Identity::from_uri("skiff://root").unwrap().is_err());
        assert!(Identity::from_uri("skiff://coordinator/x").unwrap().is_err());
        assert!(Identity::from_uri("skiff://agent/").unwrap().is_err());
        assert!(Identity::from_uri("skiff://agent/a/../b").unwrap().is_err());
    }
}
