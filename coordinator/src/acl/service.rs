//! `AclService`: bootstrap, policies and tokens, each answered by the leader.

use skiff_proto as pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::gate::Gate;
use crate::leader::{AclAnswer, AclOp, Command};
use crate::replica::Role;
use crate::service::leader_of;

#[derive(Debug, Clone)]
pub struct AclApi {
    roles: watch::Receiver<Role>,
    gate: Gate,
}

impl AclApi {
    pub fn new(roles: watch::Receiver<Role>, gate: Gate) -> Self {
        Self { roles, gate }
    }

    async fn op<T>(&self, request: &Request<T>, op: AclOp) -> Result<AclAnswer, Status> {
        if !self.gate.acls_on() {
            return Err(Status::failed_precondition(
                "ACLs are off on this fleet: it runs without TLS (start the coordinators with --ca-cert, --cert and --key)",
            ));
        }
        let caller = self.gate.client(request)?;
        let leader = leader_of(&self.roles)?;
        Ok(leader.ask(|reply| Command::Acl { caller, op, reply }).await??)
    }
}

fn unexpected(answer: AclAnswer) -> Status {
    Status::internal(format!("unexpected ACL answer {answer:?}"))
}

#[tonic::async_trait]
impl pb::acl_service_server::AclService for AclApi {
    async fn bootstrap(
        &self,
        request: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        match self.op(&request, AclOp::Bootstrap).await? {
            AclAnswer::Secret(secret) => Ok(Response::new(secret)),
            other => Err(unexpected(other)),
        }
    }

    async fn who_am_i(&self, request: Request<pb::AclWhoAmIRequest>) -> Result<Response<pb::AclToken>, Status> {
        match self.op(&request, AclOp::WhoAmI).await? {
            AclAnswer::Token(token) => Ok(Response::new(token)),
            other => Err(unexpected(other)),
        }
    }

    async fn upsert_policy(
        &self,
        request: Request<pb::AclUpsertPolicyRequest>,
    ) -> Result<Response<pb::AclPolicy>, Status> {
        let policy = request.get_ref().policy.clone().ok_or_else(|| Status::invalid_argument("no policy given"))?;
        match self.op(&request, AclOp::UpsertPolicy(policy)).await? {
            AclAnswer::Policy(policy) => Ok(Response::new(policy)),
            other => Err(unexpected(other)),
        }
    }

    async fn list_policies(
        &self,
        request: Request<pb::AclListPoliciesRequest>,
    ) -> Result<Response<pb::AclListPoliciesResponse>, Status> {
        match self.op(&request, AclOp::ListPolicies).await? {
            AclAnswer::Policies(policies) => Ok(Response::new(pb::AclListPoliciesResponse { policies })),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_policy(
        &self,
        request: Request<pb::AclDeletePolicyRequest>,
    ) -> Result<Response<pb::AclDeletePolicyResponse>, Status> {
        let name = request.get_ref().name.clone();
        match self.op(&request, AclOp::DeletePolicy(name)).await? {
            AclAnswer::Done => Ok(Response::new(pb::AclDeletePolicyResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn create_token(
        &self,
        request: Request<pb::AclCreateTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        let create = request.get_ref().clone();
        match self.op(&request, AclOp::CreateToken(create)).await? {
            AclAnswer::Secret(secret) => Ok(Response::new(secret)),
            other => Err(unexpected(other)),
        }
    }

    async fn list_tokens(
        &self,
        request: Request<pb::AclListTokensRequest>,
    ) -> Result<Response<pb::AclListTokensResponse>, Status> {
        match self.op(&request, AclOp::ListTokens).await? {
            AclAnswer::Tokens(tokens) => Ok(Response::new(pb::AclListTokensResponse { tokens })),
            other => Err(unexpected(other)),
        }
    }

    async fn revoke_token(
        &self,
        request: Request<pb::AclRevokeTokenRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let accessor = request.get_ref().accessor_id.clone();
        match self.op(&request, AclOp::RevokeToken(accessor)).await? {
            AclAnswer::Token(token) => Ok(Response::new(token)),
            other => Err(unexpected(other)),
        }
    }
}
