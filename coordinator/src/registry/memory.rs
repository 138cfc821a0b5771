//! The embedded, in-process registry: a revisioned ordered map, the single-machine default.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Compare, Op, Registry, RegistryError, Txn, Versioned};

#[derive(Debug, Default)]
struct Inner {
    revision: i64,
    data: BTreeMap<String, Versioned>,
}

/// In-memory registry with etcd's revision semantics (every commit bumps one global revision).
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    inner: Mutex<Inner>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied txn (we apply after checking),
        // so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RegistryError> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RegistryError> {
        let inner = self.lock();
        Ok(inner
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn commit(&self, txn: Txn) -> Result<i64, RegistryError> {
        let mut inner = self.lock();
        for compare in &txn.compares {
            let Compare::ModRevision { key, revision } = compare;
            let current = inner.data.get(key).map_or(0, |v| v.mod_revision);
            if current != *revision {
                return Err(RegistryError::Conflict { key: key.clone() });
            }
        }
        inner.revision += 1;
        let revision = inner.revision;
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    inner.data.insert(key, Versioned { value, mod_revision: revision });
                }
                Op::Delete { key } => {
                    inner.data.remove(&key);
                }
            }
        }
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap() {
        let reg = MemoryRegistry::new();
        let rev1 = reg.commit(Txn::new().if_mod_revision("a", 0).put("a", "1")).await.unwrap();
        assert_eq!(reg.get("a").await.unwrap().unwrap().mod_revision, rev1);

        // Creating it again fails: it exists now.
        let err = reg.commit(Txn::new().if_mod_revision("a", 0).put("a", "x")).await.unwrap_err();
        assert_eq!(err, RegistryError::Conflict { key: "a".into() });
        assert_eq!(&reg.get("a").await.unwrap().unwrap().value[..], b"1");

        // An update at the right revision succeeds and is atomic with the other ops.
        let rev2 = reg
            .commit(Txn::new().if_mod_revision("a", rev1).put("a", "2").put("b/1", "x").put("b/2", "y"))
            .await
            .unwrap();
        assert!(rev2 > rev1);
        let range = reg.range("b/").await.unwrap();
        assert_eq!(range.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b/1", "b/2"]);

        // A stale revision fails and writes none of its ops.
        let err = reg.commit(Txn::new().if_mod_revision("a", rev1).put("a", "3").delete("b/1")).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }));
        assert_eq!(reg.range("b/").await.unwrap().len(), 2);

        reg.commit(Txn::new().delete("b/1")).await.unwrap();
        assert_eq!(reg.range("b/").await.unwrap().len(), 1);
        assert!(reg.get("b/1").await.unwrap().is_none());
    }
}
