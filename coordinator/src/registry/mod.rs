//! The registry: where the coordinator keeps agents and tasks.
//!
//! Every write is a [`Txn`]: a set of compares that must all hold and a set of puts and deletes that
//! are then applied atomically. This is the shape of an etcd transaction, so the etcd backend (which
//! adds the leader's fencing compare to every transaction) plugs in behind the same trait; the
//! embedded [`MemoryRegistry`] is the single-machine default, [`EtcdRegistry`] the replicated one.

mod etcd;
mod memory;

use async_trait::async_trait;
use bytes::Bytes;

pub use etcd::{EtcdRegistry, Fence};
pub use memory::MemoryRegistry;

/// A value and the revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub mod_revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at exactly this revision (`0`: the key does not exist).
    ModRevision { key: String, revision: i64 },
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

/// A compare-and-swap set of writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.ops.push(Op::Put { key: key.into(), value: value.into() });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn if_mod_revision(mut self, key: impl Into<String>, revision: i64) -> Self {
        self.compares.push(Compare::ModRevision { key: key.into(), revision });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A compare failed; nothing was written.
    #[error("registry conflict on {key}: it changed since it was read")]
    Conflict { key: String },
    /// This coordinator is no longer the leader (its fencing compare failed); nothing was written.
    #[error("registry write fenced off: this coordinator is no longer the leader")]
    Fenced,
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// Storage of the coordinator's state.
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RegistryError>;

    /// All keys starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RegistryError>;

    /// Applies `txn` atomically if all its compares hold; returns the new revision.
    async fn commit(&self, txn: Txn) -> Result<i64, RegistryError>;
}

/// Registry keys.
pub mod keys {
    pub fn task(task_id: &str) -> String {
        format!("tasks/{task_id}")
    }

    pub fn agent(agent_id: &str) -> String {
        format!("agents/{agent_id}")
    }

    pub fn artifact(sha256: &str) -> String {
        format!("artifacts/{sha256}")
    }

    pub fn framework(framework_id: &str) -> String {
        format!("frameworks/{framework_id}")
    }

    pub fn job(job_id: &str) -> String {
        format!("jobs/{job_id}")
    }

    pub const ACL_POLICIES: &str = "acl/policies/";
    pub const ACL_TOKENS: &str = "acl/tokens/";
    /// Written once, by the first `skiff acl bootstrap`.
    pub const ACL_BOOTSTRAPPED: &str = "acl/bootstrapped";

    pub fn acl_policy(name: &str) -> String {
        format!("{ACL_POLICIES}{name}")
    }

    pub fn acl_token(accessor_id: &str) -> String {
        format!("{ACL_TOKENS}{accessor_id}")
    }
}
