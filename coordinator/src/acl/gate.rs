//! What a request's peer may call, from its TLS certificate, and the token it carries.
//!
//! With TLS, every request must come with a certificate from the fleet's CA (the handshake checks
//! the chain and the dates), and each service wants one role: clients (the CLI, frameworks) call
//! the operator, scheduler and ACL services with a token; agents hold sessions under the name
//! their certificate gives; coordinators replicate artifacts to each other. Without TLS (a
//! loopback or explicitly insecure fleet) the gate lets everything through and ACLs are off.

use skiff_tls::{Identity, Role, peer_identity};
use tonic::{Request, Status};

use super::Caller;

/// The metadata key a token travels in (`authorization: Bearer <secret>`).
pub const TOKEN_HEADER: &str = "authorization";

#[derive(Debug, Clone, Copy)]
pub struct Gate {
    tls: bool,
}

impl Gate {
    /// A gate for a fleet with TLS (and so ACLs) on or off.
    pub fn new(tls: bool) -> Self {
        Self { tls }
    }

    pub fn acls_on(&self) -> bool {
        self.tls
    }

    /// The verified identity of the peer (`None` without TLS).
    pub fn peer<T>(&self, request: &Request<T>) -> Result<Option<Identity>, Status> {
        if !self.tls {
            return Ok(None);
        }
        match peer_identity(request) {
            None => Err(Status::unauthenticated(
                "no client certificate: this coordinator requires TLS client certificates from the fleet's CA",
            )),
            Some(Err(err)) => Err(Status::unauthenticated(format!("client certificate refused: {err}"))),
            Some(Ok(identity)) => Ok(Some(identity)),
        }
    }

    /// The peer must hold a certificate of `role`.
    fn require<T>(&self, request: &Request<T>, role: Role, what: &str) -> Result<Option<Identity>, Status> {
        let identity = self.peer(request)?;
        if let Some(identity) = &identity
            && identity.role != role
        {
            return Err(Status::permission_denied(format!(
                "certificate is for {} ({identity}), not {}: {what}",
                identity.role.with_article(),
                role.with_article()
            )));
        }
        Ok(identity)
    }

    /// A client's call: a client certificate, and the token it carries.
    pub fn client<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if !self.tls {
            return Ok(Caller::Open);
        }
        self.require(request, Role::Client, "only clients call this service")?;
        token(request).map(Caller::Token)
    }

    /// The agent an agent session's certificate names (`None` without TLS); see [`check_agent`].
    pub fn agent<T>(&self, request: &Request<T>) -> Result<Option<Identity>, Status> {
        self.require(request, Role::Agent, "only agents open agent sessions")
    }

    /// A call only coordinators make to each other (artifact replication).
    pub fn coordinator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.require(request, Role::Coordinator, "only coordinators replicate to each other").map(drop)
    }
}

/// An agent registers only as the agent its certificate names.
pub fn check_agent(identity: Option<&Identity>, agent_id: &str) -> Result<(), Status> {
    match identity {
        Some(identity) if identity.name != agent_id => Err(Status::permission_denied(format!(
            "certificate is for agent {}, which cannot register as agent {agent_id}",
            identity.name
        ))),
        _ => Ok(()),
    }
}

/// The secret of the request's `authorization: Bearer` metadata, if it has one.
pub fn token<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get(TOKEN_HEADER) else { return Ok(None) };
    let value = value.to_str().map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
    let secret = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("the authorization metadata must be `Bearer <token secret>`"))?;
    Ok(Some(secret.trim().to_owned()))
}
