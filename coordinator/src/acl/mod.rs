//! ACL tokens and policies, as in Nomad: a token's policies grant capabilities per role.
//!
//! The leader keeps the [`Book`] (loaded from the registry when it takes over, so tokens survive a
//! failover) and answers every authorization there, in order with the writes that change it. The
//! services only read what a request carries: its peer's certificate ([`gate`]) and its token.
//!
//! Layout:
//! - this file: [`Capability`], [`Need`], the [`Book`] of policies and tokens, and its checks;
//! - [`gate`]: what a request's TLS peer may call at all (its certificate's role), and its token;
//! - [`service`]: `AclService` (bootstrap, policies, tokens).

pub mod gate;
pub mod service;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use skiff_proto as pb;

use crate::error::Error;

/// What a token may be allowed to do, per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Submit Wasm tasks and jobs (and upload their artifacts).
    Submit,
    /// Submit native tasks (with `submit`'s other rights; agents must allow native tasks too).
    SubmitNative,
    /// Read jobs, tasks, their output and artifacts.
    Read,
    /// Kill tasks and jobs.
    Kill,
    /// Subscribe a framework in the role, and make its calls.
    Framework,
    /// Fleet-wide: list agents, administer ACLs (only in a `*` rule).
    Operator,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Submit,
        Capability::SubmitNative,
        Capability::Read,
        Capability::Kill,
        Capability::Framework,
        Capability::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Submit => "submit",
            Capability::SubmitNative => "submit-native",
            Capability::Read => "read",
            Capability::Kill => "kill",
            Capability::Framework => "framework",
            Capability::Operator => "operator",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
            format!("unknown capability {s:?} (capabilities: {})", names.join(", "))
        })
    }
}

/// What a call needs: a capability, on one role or on the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One role's tasks, jobs or frameworks.
    Role(String),
    /// Some role (e.g. uploading an artifact: it is used by whichever task names it).
    AnyRole,
    /// The whole fleet (only `*` rules grant it).
    Fleet,
}

impl Need {
    pub fn on_role(capability: Capability, role: &str) -> Self {
        Self { capability, scope: Scope::Role(role.to_owned()) }
    }
    pub fn any_role(capability: Capability) -> Self {
        Self { capability, scope: Scope::AnyRole }
    }
    pub const fn fleet(capability: Capability) -> Self {
        Self { capability, scope: Scope::Fleet }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Role(role) => write!(f, "{} for role {role}", self.capability),
            Scope::AnyRole => write!(f, "{} for any role", self.capability),
            Scope::Fleet => write!(f, "{} (in a rule for role \"*\")", self.capability),
        }
    }
}

/// What the leader is asked to authorize: a [`Need`] outright, or one it works out from the
/// role of the task, job or framework named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Need(Need),
    /// `capability` on the task's role (its framework's; the job scheduler's for jobs' tasks).
    Task(Capability, String),
    /// `capability` on a job of the built-in scheduler (its role).
    Jobs(Capability),
    /// A call of a framework: `framework` on its role, by the token that subscribed it.
    Framework(String),
}

/// What a request presented, as the services read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// ACLs are off (a plaintext fleet): everything is allowed.
    Open,
    /// The secret of the `authorization: Bearer` metadata, if any.
    Token(Option<String>),
}

/// Who a request acts as, once authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's accessor id ("anonymous" with ACLs off).
    pub accessor: String,
    pub management: bool,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self { accessor: ANONYMOUS.into(), management: true }
    }
}

/// The accessor recorded on what is submitted with ACLs off.
pub const ANONYMOUS: &str = "anonymous";

/// Hex sha256 of a token secret: what the registry keeps.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret (256 bits of the OS's randomness through v4 UUIDs: 244 random bits).
pub fn new_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("skiff_{a}{b}")
}

/// Checks a policy's name and rules (at the edge, before it is written).
pub fn check_policy(policy: &pb::AclPolicy) -> Result<(), String> {
    check_name("policy", &policy.name)?;
    if policy.rules.is_empty() {
        return Err(format!("policy {}: it has no rules", policy.name));
    }
    for rule in &policy.rules {
        if rule.role.is_empty() {
            return Err(format!("policy {}: a rule names no role (use \"*\" for every role)", policy.name));
        }
        if rule.capabilities.is_empty() {
            return Err(format!("policy {}: the rule for role {} grants nothing", policy.name, rule.role));
        }
        for cap in &rule.capabilities {
            let cap: Capability = cap.parse().map_err(|e| format!("policy {}: {e}", policy.name))?;
            if cap == Capability::Operator && rule.role != "*" {
                return Err(format!(
                    "policy {}: operator is fleet-wide and goes in the rule for role \"*\", not {}",
                    policy.name, rule.role
                ));
            }
        }
    }
    Ok(())
}

/// Token and policy names: 1–128 of `[A-Za-z0-9._-]`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok =
        !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(format!("{what} name {name:?}: use 1-128 letters, digits, '.', '_' or '-'")) }
}

/// Every policy and token of the fleet, as the leader holds them.
#[derive(Debug, Default)]
pub struct Book {
    pub policies: HashMap<String, pb::AclPolicy>,
    pub tokens: HashMap<String, pb::AclToken>,
    /// Accessor id by secret hash.
    by_hash: HashMap<String, String>,
    /// Whether the fleet was bootstrapped (a first management token was made once).
    pub bootstrapped: bool,
}

impl Book {
    pub fn insert_token(&mut self, token: pb::AclToken) {
        self.by_hash.insert(token.secret_sha256.clone(), token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
    }

    /// The token whose secret this is, valid at `now_ms`.
    pub fn token(&self, caller: &Caller, now_ms: u64) -> Result<Option<&pb::AclToken>, Error> {
        let secret = match caller {
            Caller::Open => return Ok(None),
            Caller::Token(None) => {
                return Err(Error::Unauthenticated(
                    "no ACL token: set SKIFF_TOKEN or SKIFF_TOKEN_FILE (or send `authorization: Bearer <secret>`)"
                        .into(),
                ));
            }
            Caller::Token(Some(secret)) => secret,
        };
        let token = self
            .by_hash
            .get(&hash_secret(secret))
            .and_then(|accessor| self.tokens.get(accessor))
            .ok_or_else(|| Error::Unauthenticated("unknown ACL token".into()))?;
        if token.revoked_ms != 0 {
            return Err(Error::Unauthenticated(format!("ACL token {} was revoked", token.accessor_id)));
        }
        if token.expires_ms != 0 && token.expires_ms <= now_ms {
            return Err(Error::Unauthenticated(format!(
                "ACL token {} expired {} ago",
                token.accessor_id,
                humantime::format_duration(std::time::Duration::from_secs((now_ms - token.expires_ms) / 1000))
            )));
        }
        Ok(Some(token))
    }

    /// Who `caller` is, if its token grants `need`.
    pub fn authorize(&self, caller: &Caller, need: &Need, now_ms: u64) -> Result<Principal, Error> {
        let Some(token) = self.token(caller, now_ms)? else { return Ok(Principal::anonymous()) };
        let principal = Principal { accessor: token.accessor_id.clone(), management: token.management };
        if token.management || self.grants(token, need) {
            return Ok(principal);
        }
        Err(Error::PermissionDenied(format!("ACL token {} ({}) lacks {need}", token.accessor_id, token.name)))
    }

    fn grants(&self, token: &pb::AclToken, need: &Need) -> bool {
        let rules = token.policies.iter().filter_map(|p| self.policies.get(p)).flat_map(|p| &p.rules);
        let wanted = need.capability.as_str();
        // submit-native includes submit's rights.
        let has = |rule: &pb::AclRule| {
            rule.capabilities
                .iter()
                .any(|c| c == wanted || (need.capability == Capability::Submit && c == "submit-native"))
        };
        rules.filter(|rule| has(rule)).any(|rule| match &need.scope {
            Scope::Role(role) => rule.role == "*" || &rule.role == role,
            Scope::AnyRole => true,
            Scope::Fleet => rule.role == "*",
        })
    }

    /// Policies a token names that do not exist.
    pub fn missing_policies<'a>(&self, names: &'a [String]) -> BTreeSet<&'a str> {
        names.iter().filter(|n| !self.policies.contains_key(*n)).map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (Book, String) {
        let mut book = Book::default();
        let rule = |role: &str, caps: &[&str]| pb::AclRule {
            role: role.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        };
        let policy = pb::AclPolicy {
            name: "batch-dev".into(),
            rules: vec![rule("batch", &["submit", "read"]), rule("*", &["read"])],
            ..Default::default()
        };
        check_policy(&policy).unwrap();
        book.policies.insert(policy.name.clone(), policy);
        let secret = new_secret();
        book.insert_token(pb::AclToken {
            accessor_id: "acc-1".into(),
            name: "dev".into(),
            policies: vec!["batch-dev".into()],
            secret_sha256: hash_secret(&secret),
            expires_ms: 2_000,
            ..Default::default()
        });
        (book, secret)
    }

    #[test]
    fn tokens_grant_what_their_policies_say() {
        let (book, secret) = book();
        let caller = Caller::Token(Some(secret));
        let ok = book.authorize(&caller, &Need::on_role(Capability::Submit, "batch"), 1_000).unwrap();
        assert_eq!(ok.accessor, "acc-1");
        book.authorize(&caller, &Need::on_role(Capability::Read, "web"), 1_000).unwrap();
        let denied = book.authorize(&caller, &Need::on_role(Capability::SubmitNative, "batch"), 1_000).unwrap_err();
        assert!(
            matches!(&denied, Error::PermissionDenied(m) if m.ends_with("lacks submit-native for role batch")),
            "{denied}"
        );
        assert!(book.authorize(&caller, &Need::on_role(Capability::Submit, "web"), 1_000).is_err());
        assert!(book.authorize(&caller, &Need::fleet(Capability::Operator), 1_000).is_err());
        let expired = book.authorize(&caller, &Need::on_role(Capability::Read, "batch"), 2_000).unwrap_err();
        assert!(matches!(&expired, Error::Unauthenticated(m) if m.contains("expired")), "{expired}");
        let unknown = book.authorize(&Caller::Token(Some("x".into())), &Need::any_role(Capability::Read), 0);
        assert!(matches!(unknown, Err(Error::Unauthenticated(m)) if m == "unknown ACL token"));
        assert!(matches!(
            book.authorize(&Caller::Token(None), &Need::any_role(Capability::Read), 0),
            Err(Error::Unauthenticated(_))
        ));
        assert_eq!(
            book.authorize(&Caller::Open, &Need::fleet(Capability::Operator), 0).unwrap(),
            Principal::anonymous()
        );
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let policy = |role: &str, cap: &str| pb::AclPolicy {
            name: "p".into(),
            rules: vec![pb::AclRule { role: role.into(), capabilities: vec![cap.into()] }],
            ..Default::default()
        };
        assert!(check_policy(&policy("batch", "launch")).unwrap_err().contains("unknown capability \"launch\""));
        assert!(check_policy(&policy("batch", "operator")).unwrap_err().contains("fleet-wide"));
        assert!(check_policy(&policy("", "read")).unwrap_err().contains("names no role"));
        check_policy(&policy("*", "operator")).unwrap();
    }
}
