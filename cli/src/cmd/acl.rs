//! `skiff acl`: bootstrap the ACLs, and manage policies and tokens (as `nomad acl`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skiff_proto as pb;

use crate::client::{self, Channel};
use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct AclArgs {
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070", global = true)]
    pub coordinators: Vec<String>,
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Makes the fleet's first management token (once per fleet); prints its secret, once.
    Bootstrap {
        /// Also write the secret to this file (mode 0600), e.g. for SKIFF_TOKEN_FILE.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Policies: capabilities per role.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Tokens: secrets that carry policies.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Creates or replaces a policy.
    Apply {
        name: String,
        /// ROLE=CAP[,CAP...] (repeatable): capabilities submit, submit-native, read, kill,
        /// framework, operator (operator only with ROLE `*`).
        #[arg(long = "rule", value_name = "ROLE=CAPS", required = true)]
        rules: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Creates a token; prints its secret, once.
    Create {
        #[arg(long)]
        name: String,
        /// A policy the token carries (repeatable).
        #[arg(long = "policy", value_name = "POLICY")]
        policies: Vec<String>,
        /// A management token: may do everything.
        #[arg(long, conflicts_with = "policies")]
        management: bool,
        /// The token expires after this long (e.g. 8h); default never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Also write the secret to this file (mode 0600).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    List,
    /// Revokes a token by its accessor id: it is refused from then on.
    Revoke {
        accessor_id: String,
    },
    /// The token this CLI uses.
    #[command(name = "self")]
    Whoami,
}

type AclClient = pb::acl_service_client::AclServiceClient<Channel>;

fn status(s: tonic::Status) -> CliError {
    CliError::from_status(&s)
}

pub async fn run(args: AclArgs) -> Result<ExitCode, CliError> {
    let mut acl = AclClient::new(client::leader_channel(&args.coordinators).await?);
    match args.command {
        AclCommand::Bootstrap { token_file } => {
            let secret = acl.bootstrap(pb::AclBootstrapRequest {}).await.map_err(status)?.into_inner();
            print_secret(&secret, token_file)?;
        }
        AclCommand::Policy { command: PolicyCommand::Apply { name, rules, description } } => {
            let rules = rules.iter().map(|r| parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
            let policy = pb::AclPolicy { name, description, rules, modified_ms: 0 };
            let policy = acl
                .upsert_policy(pb::AclUpsertPolicyRequest { policy: Some(policy) })
                .await
                .map_err(status)?
                .into_inner();
            println!("policy {} written", policy.name);
        }
        AclCommand::Policy { command: PolicyCommand::List } => {
            for p in acl.list_policies(pb::AclListPoliciesRequest {}).await.map_err(status)?.into_inner().policies {
                let rules: Vec<String> =
                    p.rules.iter().map(|r| format!("{}={}", r.role, r.capabilities.join(","))).collect();
                println!("{}\t{}\t{}", p.name, rules.join(" "), p.description);
            }
        }
        AclCommand::Policy { command: PolicyCommand::Delete { name } } => {
            acl.delete_policy(pb::AclDeletePolicyRequest { name: name.clone() }).await.map_err(status)?;
            println!("policy {name} deleted");
        }
        AclCommand::Token { command: TokenCommand::Create { name, policies, management, ttl, token_file } } => {
            let ttl_ms = ttl.map_or(0, |t| t.as_millis() as u64);
            let request = pb::AclCreateTokenRequest { name, policies, management, ttl_ms };
            let secret = acl.create_token(request).await.map_err(status)?.into_inner();
            print_secret(&secret, token_file)?;
        }
        AclCommand::Token { command: TokenCommand::List } => {
            for t in acl.list_tokens(pb::AclListTokensRequest {}).await.map_err(status)?.into_inner().tokens {
                println!("{}", describe(&t));
            }
        }
        AclCommand::Token { command: TokenCommand::Revoke { accessor_id } } => {
            let token = acl.revoke_token(pb::AclRevokeTokenRequest { accessor_id }).await.map_err(status)?.into_inner();
            println!("revoked {}", describe(&token));
        }
        AclCommand::Token { command: TokenCommand::Whoami } => {
            let token = acl.who_am_i(pb::AclWhoAmIRequest {}).await.map_err(status)?.into_inner();
            println!("{}", describe(&token));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ROLE=cap,cap`.
fn parse_rule(text: &str) -> Result<pb::AclRule, CliError> {
    let (role, caps) =
        text.split_once('=').ok_or_else(|| CliError::BadInput(format!("--rule {text}: expected ROLE=CAP[,CAP...]")))?;
    Ok(pb::AclRule {
        role: role.trim().to_owned(),
        capabilities: caps.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect(),
    })
}

fn describe(t: &pb::AclToken) -> String {
    let kind = if t.management { "management".to_owned() } else { format!("policies={}", t.policies.join(",")) };
    let mut text = format!("{}\t{}\t{kind}", t.accessor_id, t.name);
    if t.expires_ms != 0 {
        text.push_str(&format!("\texpires_ms={}", t.expires_ms));
    }
    if t.revoked_ms != 0 {
        text.push_str("\trevoked");
    }
    text
}

fn print_secret(secret: &pb::AclTokenSecret, token_file: Option<PathBuf>) -> Result<(), CliError> {
    let token = secret.token.clone().unwrap_or_default();
    println!("accessor_id: {}", token.accessor_id);
    println!("secret:      {}", secret.secret);
    println!("(the secret is shown only now: keep it; use it as SKIFF_TOKEN or in SKIFF_TOKEN_FILE)");
    if let Some(path) = token_file {
        super::tls::write_new(&path, &format!("{}\n", secret.secret), 0o600)?;
    }
    Ok(())
}
