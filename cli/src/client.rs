//! Finding and dialing the leading coordinator, with the caller's [`Access`] (TLS credentials
//! and ACL token).

use std::time::Duration;

use skiff_proto as pb;
use tonic::service::interceptor::InterceptedService;

pub use crate::access::{Access, Bearer};
use crate::exit::CliError;

/// Largest gRPC message sent or received (a submit carries its module).
pub const MAX_MESSAGE_BYTES: usize = skiff_core::limits::RESPONSE_BYTES;

/// A connection to a coordinator whose every call carries the caller's token.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

pub type Operator = pb::operator_service_client::OperatorServiceClient<Channel>;

/// An operator client on `channel`.
pub fn operator(channel: Channel) -> Operator {
    Operator::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

async fn dial(access: &Access, addr: &str) -> Result<Channel, String> {
    let endpoint =
        skiff_tls::coordinator_endpoint(addr, access.tls())?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
    // A paused coordinator accepts the TCP connection but never answers: bound the whole handshake.
    let channel = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| format!("{addr}: no answer within {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("{addr}: {}", crate::access::explain(&with_causes(&e), access)))?;
    Ok(InterceptedService::new(channel, access.bearer()))
}

/// An error with its chain of causes ("transport error: tcp connect error: Connection refused").
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Marks an error that is a refusal of the caller's credentials (it ends the search at once).
const DENIED_MARK: &str = "\u{0}denied:";

/// Time allowed for dialing a coordinator and for asking it who leads.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a coordinator who leads, within [`CALL_TIMEOUT`].
async fn ask_leader(access: &Access, channel: &Channel, addr: &str) -> Result<pb::GetLeaderResponse, String> {
    let mut client = operator(channel.clone());
    match tokio::time::timeout(CALL_TIMEOUT, client.get_leader(pb::GetLeaderRequest {})).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
            Err(format!("{DENIED_MARK}{addr}: {}", status.message()))
        }
        Ok(Err(status)) => Err(format!("{addr}: {}", crate::access::explain(&with_causes(&status), access))),
        Err(_) => Err(format!("{addr}: no answer within {CALL_TIMEOUT:?}")),
    }
}

/// How long the CLI waits for a leader while coordinators answer but none leads (a failover).
pub const AWAIT_LEADER: Duration = Duration::from_secs(10);

/// Dials the leader: tries each address in turn and follows a follower's pointer to the leader.
/// While some coordinator answers but no leader can be reached (an election is under way), tries
/// again for up to [`AWAIT_LEADER`]; when none answers at all, fails at once.
pub async fn connect_leader(addresses: &[String]) -> Result<Operator, CliError> {
    Ok(operator(leader_channel(addresses).await?))
}

/// A channel to the leader (see [`connect_leader`]), with the access the environment gives.
pub async fn leader_channel(addresses: &[String]) -> Result<Channel, CliError> {
    let access = Access::from_env(addresses)?;
    leader_channel_with(&access, addresses).await
}

/// [`connect_leader`] with `access`.
pub async fn connect_leader_with(access: &Access, addresses: &[String]) -> Result<Operator, CliError> {
    Ok(operator(leader_channel_with(access, addresses).await?))
}

/// [`leader_channel`] with `access`.
pub async fn leader_channel_with(access: &Access, addresses: &[String]) -> Result<Channel, CliError> {
    let deadline = tokio::time::Instant::now() + AWAIT_LEADER;
    loop {
        let (errors, some_answered) = match try_leader(access, addresses).await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        if let Some(denied) = errors.iter().find_map(|e| e.strip_prefix(DENIED_MARK)) {
            return Err(CliError::Denied(denied.to_owned()));
        }
        if !some_answered {
            return Err(CliError::Unavailable(format!("no coordinator reachable ({})", errors.join("; "))));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Unavailable(format!(
                "no leader reachable within {AWAIT_LEADER:?} ({})",
                errors.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One pass over `addresses`: the leader, or the errors and whether any coordinator answered.
async fn try_leader(access: &Access, addresses: &[String]) -> Result<Channel, (Vec<String>, bool)> {
    let mut errors = Vec::new();
    let mut answered = false;
    for addr in addresses {
        let client = match dial(access, addr).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match ask_leader(access, &client, addr).await {
            Ok(r) => {
                answered = true;
                if r.is_leader {
                    return Ok(client);
                }
                if r.leader_address.is_empty() {
                    errors.push(format!("{addr}: no leader elected yet"));
                    continue;
                }
                let leader = match dial(access, &r.leader_address).await {
                    Ok(leader) => leader,
                    Err(e) => {
                        errors.push(format!("leader {e}"));
                        continue;
                    }
                };
                // The follower's view may be stale: make sure the leader still leads.
                match ask_leader(access, &leader, &r.leader_address).await {
                    Ok(again) if again.is_leader => return Ok(leader),
                    Ok(_) => errors.push(format!("{}: no longer the leader", r.leader_address)),
                    Err(e) => errors.push(e),
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Err((errors, answered))
}
