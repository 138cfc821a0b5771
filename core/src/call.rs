//! What frameworks send, checked once where it arrives: a subscription and the calls made under
//! it. A [`FrameworkCall`] carries checked [`TaskSpec`]s, checked ids and durations; what depends
//! on the leader's state (is the offer outstanding, is a task id free) is the leader's to check.

use std::ops::Deref;
use std::time::Duration;

use skiff_proto as pb;
use skiff_proto::scheduler_call::Call;

use crate::id;
use crate::limits::{LimitError, MAX_FAILOVER_TIMEOUT_MS, MAX_RECONCILE_TASKS};
use crate::spec::TaskSpec;

/// Most offers one accept or decline names, and the longest offer id.
pub const MAX_OFFERS_PER_CALL: usize = 1024;
pub const MAX_OFFER_ID_BYTES: usize = 128;
/// Most launches in one accept.
pub const MAX_LAUNCHES_PER_ACCEPT: usize = 10_000;
/// Longest a framework may keep an agent's offers away (`refuse_seconds`): a day.
pub const MAX_REFUSE_SECONDS: f64 = 86_400.0;
/// Longest framework name or role.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a framework's subscription or call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Invalid(String),
    /// Past a limit (answered as resource exhausted).
    #[error("{0}")]
    Limit(String),
}

fn invalid<T>(why: impl Into<String>) -> Result<T, CallError> {
    Err(CallError::Invalid(why.into()))
}

/// A framework's info as it subscribes: named, its id (if it has one) following the rule, its
/// role defaulted, its failover timeout bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription(pb::FrameworkInfo);

impl Deref for Subscription {
    type Target = pb::FrameworkInfo;
    fn deref(&self) -> &pb::FrameworkInfo {
        &self.0
    }
}

impl Subscription {
    pub fn into_inner(self) -> pb::FrameworkInfo {
        self.0
    }
}

impl TryFrom<pb::FrameworkInfo> for Subscription {
    type Error = CallError;

    fn try_from(mut info: pb::FrameworkInfo) -> Result<Self, CallError> {
        if info.name.is_empty() {
            return invalid("subscribe: framework name is empty");
        }
        if info.name.len() > MAX_NAME_BYTES || info.role.len() > MAX_NAME_BYTES {
            return invalid(format!("subscribe: framework name and role are at most {MAX_NAME_BYTES} bytes"));
        }
        if info.role.is_empty() {
            info.role = "default".into();
        }
        if !info.framework_id.is_empty() {
            id::check_framework_id(&info.framework_id).map_err(|e| CallError::Invalid(e.to_string()))?;
        }
        if info.failover_timeout_ms > MAX_FAILOVER_TIMEOUT_MS {
            let err = LimitError::count("failover_timeout_ms", info.failover_timeout_ms, MAX_FAILOVER_TIMEOUT_MS);
            return invalid(err.to_string());
        }
        Ok(Self(info))
    }
}

/// A call of a subscribed framework.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkCall {
    pub framework_id: String,
    /// The leader epoch it was made under.
    pub epoch: u64,
    pub kind: CallKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    /// Launch `launches` on the offers; keep the agent away for `refuse` (zero: not at all).
    Accept {
        offer_ids: Vec<String>,
        launches: Vec<TaskSpec>,
        refuse: Duration,
    },
    /// `refuse`: `None` for the leader's default.
    Decline {
        offer_ids: Vec<String>,
        refuse: Option<Duration>,
    },
    Kill {
        task_id: String,
    },
    Acknowledge {
        task_id: String,
        update_id: String,
    },
    /// Empty: every live task of the framework.
    Reconcile {
        task_ids: Vec<String>,
    },
    Suppress,
    Revive,
    Teardown,
}

fn offer_ids(ids: Vec<String>) -> Result<Vec<String>, CallError> {
    if ids.len() > MAX_OFFERS_PER_CALL {
        let err = LimitError::count("the number of offers in one call", ids.len() as u64, MAX_OFFERS_PER_CALL as u64);
        return Err(CallError::Limit(err.to_string()));
    }
    if ids.iter().any(|o| o.is_empty() || o.len() > MAX_OFFER_ID_BYTES) {
        return invalid(format!("an offer id must be 1-{MAX_OFFER_ID_BYTES} bytes"));
    }
    Ok(ids)
}

fn refuse(seconds: f64) -> Result<Duration, CallError> {
    if !seconds.is_finite() || seconds < 0.0 {
        return invalid(format!("refuse_seconds {seconds} is not a number of seconds ≥ 0"));
    }
    if seconds > MAX_REFUSE_SECONDS {
        return invalid(format!("refuse_seconds {seconds} is more than the limit of {MAX_REFUSE_SECONDS} (a day)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn task_id(task_id: String) -> Result<String, CallError> {
    id::check_task_id(&task_id).map_err(|e| CallError::Invalid(e.to_string()))?;
    Ok(task_id)
}

impl TryFrom<pb::SchedulerCall> for FrameworkCall {
    type Error = CallError;

    fn try_from(call: pb::SchedulerCall) -> Result<Self, CallError> {
        id::check_framework_id(&call.framework_id).map_err(|e| CallError::Invalid(e.to_string()))?;
        let kind = match call.call {
            None => return invalid("call: no call given"),
            Some(Call::Accept(accept)) => {
                if accept.launches.len() > MAX_LAUNCHES_PER_ACCEPT {
                    let err = LimitError::count(
                        "the number of launches in one accept",
                        accept.launches.len() as u64,
                        MAX_LAUNCHES_PER_ACCEPT as u64,
                    );
                    return Err(CallError::Limit(err.to_string()));
                }
                let launches = accept
                    .launches
                    .into_iter()
                    .map(|launch| {
                        let named = if launch.task_id.is_empty() {
                            String::new()
                        } else {
                            format!("task {}: ", launch.task_id)
                        };
                        TaskSpec::try_from(launch).map_err(|err| CallError::Invalid(format!("{named}{err}")))
                    })
                    .collect::<Result<_, _>>()?;
                CallKind::Accept {
                    offer_ids: offer_ids(accept.offer_ids)?,
                    launches,
                    refuse: refuse(accept.refuse_seconds)?,
                }
            }
            Some(Call::Decline(decline)) => CallKind::Decline {
                offer_ids: offer_ids(decline.offer_ids)?,
                refuse: decline.refuse_seconds.map(refuse).transpose()?,
            },
            Some(Call::Kill(kill)) => CallKind::Kill { task_id: task_id(kill.task_id)? },
            Some(Call::Acknowledge(ack)) => {
                if ack.update_id.len() > crate::report::MAX_UPDATE_ID_BYTES {
                    return invalid("acknowledge: update_id is not one the leader sent");
                }
                CallKind::Acknowledge { task_id: task_id(ack.task_id)?, update_id: ack.update_id }
            }
            Some(Call::Reconcile(reconcile)) => {
                if reconcile.task_ids.len() > MAX_RECONCILE_TASKS {
                    let err = LimitError::count(
                        "the number of task ids in one reconcile",
                        reconcile.task_ids.len() as u64,
                        MAX_RECONCILE_TASKS as u64,
                    );
                    return Err(CallError::Limit(format!("{err}: reconcile them in several calls")));
                }
                CallKind::Reconcile { task_ids: reconcile.task_ids.into_iter().map(task_id).collect::<Result<_, _>>()? }
            }
            Some(Call::Suppress(_)) => CallKind::Suppress,
            Some(Call::Revive(_)) => CallKind::Revive,
            Some(Call::Teardown(_)) => CallKind::Teardown,
        };
        Ok(Self { framework_id: call.framework_id, epoch: call.epoch, kind })
    }
}

#[cfg(test)]
mod tests;
