//! ACLs at the leader: authorizing calls against the [`Book`](crate::acl::Book) and changing it
//! (bootstrap, policies, tokens), every change written to the registry first.

use prost::Message;
use skiff_proto as pb;
use tracing::info;

use super::{Leader, now_ms};
use crate::acl::{self, Ask, Caller, Capability, Need, Principal};
use crate::error::{Error, Result};
use crate::registry::{Txn, keys};

/// A change to, or a question about, the ACLs.
#[derive(Debug)]
pub enum AclOp {
    Bootstrap,
    WhoAmI,
    UpsertPolicy(pb::AclPolicy),
    ListPolicies,
    DeletePolicy(String),
    CreateToken(pb::AclCreateTokenRequest),
    ListTokens,
    RevokeToken(String),
}

/// The answer to an [`AclOp`].
#[derive(Debug)]
pub enum AclAnswer {
    Token(pb::AclToken),
    Secret(pb::AclTokenSecret),
    Policy(pb::AclPolicy),
    Policies(Vec<pb::AclPolicy>),
    Tokens(Vec<pb::AclToken>),
    Done,
}

/// A token as listed: never its secret's hash.
fn listed(token: &pb::AclToken) -> pb::AclToken {
    pb::AclToken { secret_sha256: String::new(), ..token.clone() }
}

impl Leader {
    /// Loads the ACL records (when taking over).
    pub(super) async fn recover_acl(&mut self) -> Result<()> {
        let mut book = acl::Book::default();
        for loaded in self.load::<pb::AclPolicy>(keys::ACL_POLICIES).await? {
            book.policies.insert(loaded.record.name.clone(), loaded.record);
        }
        for loaded in self.load::<pb::AclToken>(keys::ACL_TOKENS).await? {
            book.insert_token(loaded.record);
        }
        book.bootstrapped = self.reads().get(keys::ACL_BOOTSTRAPPED).await?.is_some();
        self.acl = book;
        Ok(())
    }

    /// Who `caller` is, if it may do what `ask` says.
    pub(super) fn authorize(&self, caller: &Caller, ask: Ask) -> Result<Principal> {
        let now = now_ms();
        let need = match ask {
            Ask::Need(need) => need,
            Ask::Jobs(cap) => Need::on_role(cap, &self.config.jobs_role),
            Ask::Task(cap, task_id) => match self.tasks.get(&task_id) {
                Some(task) => Need::on_role(cap, self.role_of_framework(task.framework_id())),
                // Someone who may do this somewhere learns the task does not exist.
                None => Need::any_role(cap),
            },
            Ask::Framework(framework_id) => {
                let Some((role, owner)) = self.framework_owner(&framework_id) else {
                    return self.acl.authorize(caller, &Need::any_role(Capability::Framework), now);
                };
                let principal = self.acl.authorize(caller, &Need::on_role(Capability::Framework, role), now)?;
                if !principal.management && principal.accessor != owner {
                    return Err(Error::PermissionDenied(format!(
                        "framework {framework_id} was subscribed by another ACL token; token {} cannot call for it",
                        principal.accessor
                    )));
                }
                return Ok(principal);
            }
        };
        self.acl.authorize(caller, &need, now)
    }

    /// The role of a framework's tasks (the job scheduler's for its own).
    pub(super) fn role_of_framework(&self, framework_id: &str) -> &str {
        match self.framework_owner(framework_id) {
            Some((role, _)) if framework_id != crate::jobs::FRAMEWORK_ID => role,
            _ => &self.config.jobs_role,
        }
    }

    pub(super) async fn acl_op(&mut self, caller: &Caller, op: AclOp) -> Result<AclAnswer> {
        let now = now_ms();
        let operator = Ask::Need(Need::fleet(Capability::Operator));
        match op {
            AclOp::Bootstrap => {
                if self.acl.bootstrapped {
                    return Err(Error::FailedPrecondition(
                        "ACLs are already bootstrapped: the first management token was made before".into(),
                    ));
                }
                let secret = acl::new_secret();
                let token = self.new_token("bootstrap", Vec::new(), true, 0, &secret, now);
                let txn = Txn::new()
                    .if_mod_revision(keys::ACL_BOOTSTRAPPED, 0)
                    .put(keys::ACL_BOOTSTRAPPED, now.to_string())
                    .put(keys::acl_token(&token.accessor_id), token.encode_to_vec());
                self.commit(txn).await?;
                self.acl.bootstrapped = true;
                self.acl.insert_token(token.clone());
                info!(accessor = %token.accessor_id, "ACLs bootstrapped");
                Ok(AclAnswer::Secret(pb::AclTokenSecret { token: Some(listed(&token)), secret }))
            }
            AclOp::WhoAmI => {
                let token = self.acl.token(caller, now)?.ok_or_else(|| {
                    Error::FailedPrecondition("ACLs are off on this fleet (it runs without TLS)".into())
                })?;
                Ok(AclAnswer::Token(listed(token)))
            }
            AclOp::UpsertPolicy(mut policy) => {
                self.authorize(caller, operator)?;
                acl::check_policy(&policy).map_err(Error::InvalidArgument)?;
                policy.modified_ms = now;
                self.commit(Txn::new().put(keys::acl_policy(&policy.name), policy.encode_to_vec())).await?;
                info!(policy = %policy.name, "ACL policy written");
                self.acl.policies.insert(policy.name.clone(), policy.clone());
                Ok(AclAnswer::Policy(policy))
            }
            AclOp::ListPolicies => {
                self.authorize(caller, operator)?;
                let mut policies: Vec<_> = self.acl.policies.values().cloned().collect();
                policies.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(AclAnswer::Policies(policies))
            }
            AclOp::DeletePolicy(name) => {
                self.authorize(caller, operator)?;
                if !self.acl.policies.contains_key(&name) {
                    return Err(Error::NotFound(format!("ACL policy {name} not found")));
                }
                self.commit(Txn::new().delete(keys::acl_policy(&name))).await?;
                self.acl.policies.remove(&name);
                Ok(AclAnswer::Done)
            }
            AclOp::CreateToken(request) => {
                self.authorize(caller, operator)?;
                acl::check_name("token", &request.name).map_err(Error::InvalidArgument)?;
                if request.management != request.policies.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a token is either a management token or names at least one policy".into(),
                    ));
                }
                let missing = self.acl.missing_policies(&request.policies);
                if !missing.is_empty() {
                    let names: Vec<&str> = missing.into_iter().collect();
                    return Err(Error::InvalidArgument(format!("no such ACL policy: {}", names.join(", "))));
                }
                let expires = if request.ttl_ms == 0 { 0 } else { now + request.ttl_ms };
                let secret = acl::new_secret();
                let token = self.new_token(&request.name, request.policies, request.management, expires, &secret, now);
                let key = keys::acl_token(&token.accessor_id);
                self.commit(Txn::new().if_mod_revision(&key, 0).put(key, token.encode_to_vec())).await?;
                info!(accessor = %token.accessor_id, name = %token.name, "ACL token created");
                self.acl.insert_token(token.clone());
                Ok(AclAnswer::Secret(pb::AclTokenSecret { token: Some(listed(&token)), secret }))
            }
            AclOp::ListTokens => {
                self.authorize(caller, operator)?;
                let mut tokens: Vec<_> = self.acl.tokens.values().map(listed).collect();
                tokens.sort_by_key(|t| (t.created_ms, t.accessor_id.clone()));
                Ok(AclAnswer::Tokens(tokens))
            }
            AclOp::RevokeToken(accessor) => {
                self.authorize(caller, operator)?;
                let Some(token) = self.acl.tokens.get(&accessor) else {
                    return Err(Error::NotFound(format!("ACL token {accessor} not found")));
                };
                let mut token = token.clone();
                if token.revoked_ms == 0 {
                    token.revoked_ms = now;
                    self.commit(Txn::new().put(keys::acl_token(&accessor), token.encode_to_vec())).await?;
                    info!(%accessor, "ACL token revoked");
                    self.acl.insert_token(token.clone());
                }
                Ok(AclAnswer::Token(listed(&token)))
            }
        }
    }

    fn new_token(
        &self,
        name: &str,
        policies: Vec<String>,
        management: bool,
        expires_ms: u64,
        secret: &str,
        now: u64,
    ) -> pb::AclToken {
        pb::AclToken {
            accessor_id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            management,
            policies,
            created_ms: now,
            expires_ms,
            revoked_ms: 0,
            secret_sha256: acl::hash_secret(secret),
        }
    }
}
