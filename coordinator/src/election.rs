//! Leader election on etcd: a lease kept alive against a local deadline, a campaign, and an observer.
//!
//! etcd-client does not re-establish a keep-alive or observe stream when the etcd member behind it
//! dies, so both loops here reopen their streams themselves, with backoff. Leadership is only as good
//! as the lease: [`keep_alive`] cancels `lost` as soon as it cannot confirm the lease before a local
//! monotonic deadline (the confirmed TTL, counted from when the keep-alive was *sent*, minus a margin),
//! which is always earlier than the moment etcd itself expires the lease.

use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::members::{Member, Members};
use crate::replica::{LeaderInfo, Role, publish_leader};

/// Time allowed for one etcd call of the election (campaign excepted: it waits for leadership).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A granted lease and when it was asked for (its TTL runs from no earlier than that).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub id: i64,
    pub ttl: Duration,
    pub requested_at: Instant,
}

/// The leadership won by a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// The election key this replica owns while it leads.
    pub key: Vec<u8>,
    /// The key's create revision: the leader epoch.
    pub epoch: i64,
}

/// The margin by which the local lease deadline precedes the TTL (clock rate differences, scheduling).
pub fn deadline_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(150))
}

pub async fn grant(members: &Members, ttl: Duration) -> Result<Lease, String> {
    let requested_at = Instant::now();
    let secs = ttl.as_secs().max(1) as i64;
    let member = members.current();
    let resp = timeout(CALL_TIMEOUT, member.client.lease_client().grant(secs, None))
        .await
        .map_err(|_| "lease grant timed out".to_owned())
        .and_then(|r| r.map_err(|e| format!("lease grant: {e}")))
        .inspect_err(|_| members.failed(&member))?;
    Ok(Lease { id: resp.id(), ttl: Duration::from_secs(resp.ttl().max(0) as u64), requested_at })
}

/// Revokes a lease (deleting the election key it holds); best effort.
pub async fn revoke(members: &Members, lease: &Lease) {
    match timeout(CALL_TIMEOUT, members.current().client.lease_client().revoke(lease.id)).await {
        Ok(Ok(_)) => debug!(lease = lease.id, "lease revoked"),
        Ok(Err(err)) => debug!(lease = lease.id, %err, "lease revoke failed (it expires on its own)"),
        Err(_) => debug!(lease = lease.id, "lease revoke timed out (it expires on its own)"),
    }
}

/// Keeps `lease` alive every TTL/3 until `lost` or `stop` is cancelled; cancels `lost` when the lease
/// is not confirmed before its local deadline or etcd says it expired.
pub async fn keep_alive(
    members: Members,
    lease: Lease,
    lost: CancellationToken,
    stop: CancellationToken,
    lag: prometheus_client::metrics::histogram::Histogram,
) {
    let margin = deadline_margin(lease.ttl);
    let mut valid_until = lease.requested_at + lease.ttl.saturating_sub(margin);
    let period = lease.ttl / 3;
    let mut stream: Option<(Member, LeaseKeeper, LeaseKeepAliveStream)> = None;
    loop {
        let sent = Instant::now();
        let confirmed = tokio::select! {
            _ = lost.cancelled() => return,
            _ = stop.cancelled() => return,
            _ = sleep_until(valid_until) => {
                warn!(lease = lease.id, "lease not confirmed before its deadline");
                lost.cancel();
                return;
            }
            r = keep_alive_once(&members, &lease, &mut stream) => r,
        };
        match confirmed {
            Ok(ttl) if ttl > 0 => {
                lag.observe(sent.elapsed().as_secs_f64());
                valid_until = sent + Duration::from_secs(ttl as u64).saturating_sub(margin);
            }
            Ok(_) => {
                warn!(lease = lease.id, "etcd says the lease expired");
                lost.cancel();
                return;
            }
            Err(err) => {
                debug!(lease = lease.id, %err, "keep-alive failed; reopening the stream");
                if let Some((member, _, _)) = stream.take() {
                    members.failed(&member);
                }
            }
        }
        let next = (sent + period).min(valid_until);
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = stop.cancelled() => return,
            _ = sleep_until(next) => {}
        }
    }
}

/// One keep-alive round trip on the (re)opened stream; returns the TTL etcd confirmed.
async fn keep_alive_once(
    members: &Members,
    lease: &Lease,
    stream: &mut Option<(Member, LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<i64, String> {
    let Some((_, keeper, responses)) = stream.as_mut() else {
        // Opening the stream sends a keep-alive and reads its answer (a lease that is gone fails here).
        let member = members.current();
        let opened = timeout(CALL_TIMEOUT, member.client.lease_client().keep_alive(lease.id))
            .await
            .map_err(|_| "opening the keep-alive stream timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .inspect_err(|_| members.failed(&member))?;
        *stream = Some((member, opened.0, opened.1));
        return Ok(lease.ttl.as_secs() as i64);
    };
    keeper.keep_alive().await.map_err(|e| e.to_string())?;
    match timeout(CALL_TIMEOUT, responses.message()).await {
        Ok(Ok(Some(resp))) => Ok(resp.ttl()),
        Ok(Ok(None)) => Err("keep-alive stream closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("keep-alive answer timed out".into()),
    }
}

/// Campaigns for leadership of `name` under `lease`, with `value` (the advertised address) as the
/// leader's value; waits until elected.
pub async fn campaign(members: &Members, name: &str, value: &str, lease: &Lease) -> Result<Elected, String> {
    let member = members.current();
    let resp = member
        .client
        .election_client()
        .campaign(name, value, lease.id)
        .await
        .map_err(|e| format!("campaign: {e}"))
        .inspect_err(|_| members.failed(&member))?;
    let leader = resp.leader().ok_or("campaign answered without a leader key")?;
    Ok(Elected { key: leader.key().to_vec(), epoch: leader.rev() })
}

/// Every replica campaigning in `name` (the addresses they advertise), the leader first: etcd's
/// election puts each candidate's key under `name/`, and the oldest one leads.
pub async fn candidates(members: &Members, name: &str) -> Result<Vec<String>, String> {
    let member = members.current();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_sort(etcd_client::SortTarget::Create, etcd_client::SortOrder::Ascend);
    let resp = timeout(CALL_TIMEOUT, member.client.kv_client().get(format!("{name}/"), Some(options)))
        .await
        .map_err(|_| "reading the election's candidates timed out".to_owned())
        .and_then(|r| r.map_err(|e| format!("reading the election's candidates: {e}")))
        .inspect_err(|_| members.failed(&member))?;
    Ok(resp.kvs().iter().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).collect())
}

/// Who leads `name` right now, if anyone (one read; [`observe`] follows changes).
pub async fn current_leader(members: &Members, name: &str) -> Option<LeaderInfo> {
    let member = members.current();
    let resp = match timeout(CALL_TIMEOUT, member.client.election_client().leader(name)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) if err.to_string().contains("no leader") => return None,
        _ => {
            members.failed(&member);
            return None;
        }
    };
    let kv = resp.kv()?;
    Some(LeaderInfo { address: String::from_utf8_lossy(kv.value()).into_owned(), epoch: kv.create_revision() as u64 })
}

/// Follows who leads `name` and publishes it into `roles` while this replica does not lead; reopens
/// the observe stream with backoff until `stop`.
pub async fn observe(members: Members, name: String, roles: watch::Sender<Role>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let member = members.current();
        let mut election = member.client.election_client();
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            o = timeout(CALL_TIMEOUT, election.observe(name.clone())) => o,
        };
        match opened {
            Ok(Ok(mut stream)) => loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = stream.message() => n,
                };
                match next {
                    Ok(Some(resp)) => {
                        backoff = Duration::from_millis(50);
                        let Some(kv) = resp.kv() else { continue };
                        let info = LeaderInfo {
                            address: String::from_utf8_lossy(kv.value()).into_owned(),
                            epoch: kv.create_revision() as u64,
                        };
                        publish_leader(&roles, info);
                    }
                    Ok(None) => {
                        debug!("observe stream ended");
                        members.failed(&member);
                        break;
                    }
                    Err(err) => {
                        debug!(%err, "observe stream failed");
                        members.failed(&member);
                        break;
                    }
                }
            },
            Ok(Err(err)) => {
                debug!(%err, "cannot observe the election");
                members.failed(&member);
            }
            Err(_) => {
                debug!("observe timed out");
                members.failed(&member);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
