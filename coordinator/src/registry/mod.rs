//! The registry: where the coordinator keeps agents and tasks.
//!
//! Every write is a [`Txn`]: a set of compares that must all hold and a set of puts and deletes that
//! are then applied atomically. This is the shape of an etcd transaction, so the etcd backend (which
//! adds the leader's fencing compare to every transaction) plugs in behind the same trait; the
//! embedded [`MemoryRegistry`] is the single-machine default, [`EtcdRegistry`] the replicated one.

mod etcd;
mod memory;
mod mirror;

use async_trait::async_trait;
use bytes::Bytes;

pub use etcd::{EtcdRegistry, Fence};
pub use memory::MemoryRegistry;
pub use mirror::{Mirror, Snapshot};

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

/// Most writes in one transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS: usize = 100;

/// Most bytes of keys and values in one transaction (etcd's default `--max-request-bytes` is
/// 1.5 MiB; a single larger write still goes, alone).
pub const TXN_BYTES: usize = 1 << 20;

/// Splits `items` into runs (index ranges) that each fit one transaction, given the writes of one
/// item and the bytes they take (an estimate from above: the record's encoded size and its key).
pub fn batches<T>(items: &[T], writes_each: usize, bytes: impl Fn(&T) -> usize) -> Vec<std::ops::Range<usize>> {
    let per_txn = (TXN_OPS / writes_each.max(1)).max(1);
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let b = bytes(item);
        if i > start && (i - start >= per_txn || size + b > TXN_BYTES) {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += b;
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
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

/// Keys (without the registry's own prefix) and values, in key order.
pub type Page = Vec<(String, Versioned)>;

/// Storage of the coordinator's state.
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RegistryError>;

    /// All keys starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RegistryError>;

    /// The same snapshot as [`Registry::range`], handed to `each` a page at a time, in key order.
    /// A registry that reads in pages reads the next one while `each` runs (a takeover decodes
    /// and indexes what it has while etcd serves the rest).
    async fn range_pages(&self, prefix: &str, each: &mut (dyn FnMut(Page) + Send)) -> Result<(), RegistryError> {
        each(self.range(prefix).await?);
        Ok(())
    }

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

    /// What is left of collected jobs and tasks.
    pub const COLLECTED: &str = "collected/";

    pub fn collected(id: &str) -> String {
        format!("{COLLECTED}{id}")
    }

    /// Records that did not decode or validate, moved aside (under their original key).
    pub const QUARANTINE: &str = "quarantine/";

    pub fn quarantined(key: &str) -> String {
        format!("{QUARANTINE}{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_bound_writes_and_bytes() {
        let small = vec![10usize; 250];
        let runs = batches(&small, 1, |b| *b);
        assert_eq!(runs.iter().map(ExactSizeIterator::len).collect::<Vec<_>>(), [100, 100, 50]);
        let runs = batches(&small, 2, |b| *b);
        assert!(runs.iter().all(|r| r.len() == 50), "two writes each: 50 per transaction");
        // 20 KiB records: 51 fit in 1 MiB.
        let large = vec![20 << 10; 100];
        let runs = batches(&large, 1, |b| *b);
        assert_eq!(runs.iter().map(ExactSizeIterator::len).collect::<Vec<_>>(), [51, 49]);
        // One record larger than the byte bound goes alone.
        let huge = [10, 2 << 20, 10];
        assert_eq!(batches(&huge, 1, |b| *b).iter().map(ExactSizeIterator::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(batches(&[] as &[usize], 1, |b| *b).is_empty());
    }
}
