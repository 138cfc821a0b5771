//! Finding and dialing the leading coordinator.

use std::time::Duration;

use skiff_proto as pb;
use tonic::transport::{Channel, Endpoint};

use crate::exit::CliError;

/// Largest gRPC message sent or received (a submit carries its module).
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

pub type Operator = pb::operator_service_client::OperatorServiceClient<Channel>;

async fn dial(addr: &str) -> Result<Operator, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: invalid address: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| format!("{addr}: {}", with_causes(&e)))?;
    Ok(Operator::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
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

/// Dials the leader: tries each address in turn and follows a follower's pointer to the leader.
pub async fn connect_leader(addresses: &[String]) -> Result<Operator, CliError> {
    let mut errors = Vec::new();
    for addr in addresses {
        let mut client = match dial(addr).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match client.get_leader(pb::GetLeaderRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.is_leader {
                    return Ok(client);
                }
                if !r.leader_address.is_empty() {
                    match dial(&r.leader_address).await {
                        Ok(leader) => return Ok(leader),
                        Err(e) => errors.push(format!("leader {e}")),
                    }
                } else {
                    errors.push(format!("{addr}: no leader elected yet"));
                }
            }
            Err(status) => errors.push(format!("{addr}: {}", status.message())),
        }
    }
    Err(CliError::Unavailable(format!("no coordinator reachable ({})", errors.join("; "))))
}
