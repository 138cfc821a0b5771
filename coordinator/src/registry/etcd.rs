//! The etcd registry: cluster state under a key prefix in etcd, every write fenced on leadership.
//!
//! A [`EtcdRegistry`] is either *fenced* — built by the replica that won the election, holding its
//! leader key and that key's create revision — or *read-only*. [`Registry::commit`] is the only way
//! to write, and it always adds `CreateRevision(leader_key) == epoch` to the transaction's compares,
//! so a paused or deposed leader cannot write: once its lease expired (or it resigned) the key is
//! gone or recreated at another revision, and etcd refuses the whole transaction.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Compare as EtcdCompare, CompareOp, GetOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse};

use super::{Compare, Op, Page, Registry, RegistryError, Txn, Versioned};
use crate::members::{Member, Members};

/// Time allowed for one registry request before it counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts of a request that failed on the way (a dead member's connection): the client balances
/// over the members, so a retry goes to a live one.
const ATTEMPTS: u32 = 4;

/// Range reads are paged by size: each page asks for as many keys as make about
/// [`PAGE_BYTES`] at the size of the records of the page before (the first asks for
/// [`FIRST_PAGE_KEYS`]), at most [`MAX_PAGE_KEYS`]. Few, large pages matter: etcd counts every key
/// left in the range on each page, so 100,000 task records took 4.6 s to read in pages of 500 and
/// 0.83 s in pages of 5,000 (measured here, the same takeover of the longevity benchmark). A page
/// that still does not decode (records much larger than the page before) is asked for again at
/// half the keys.
const PAGE_BYTES: usize = 4 << 20;
const FIRST_PAGE_KEYS: i64 = 500;
const MAX_PAGE_KEYS: i64 = 20_000;

/// What a range response may hold (etcd-client's default is 4 MiB).
const RANGE_MESSAGE_BYTES: usize = 16 << 20;

/// The first key after every key that starts with `prefix` (etcd's range end of a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The leadership a fenced registry writes under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader's election key (full etcd key).
    pub key: Vec<u8>,
    /// Its create revision: the leader epoch.
    pub revision: i64,
}

/// Registry on etcd. Keys are stored as `prefix + key`.
/// One page of a range as read.
struct Fetched {
    items: Page,
    /// Where the next page starts, if there is one.
    next: Option<Vec<u8>>,
    /// The revision the page was read at.
    revision: i64,
    /// Average bytes of a record of the page.
    each_bytes: Option<usize>,
}

#[derive(Clone)]
pub struct EtcdRegistry {
    members: Members,
    prefix: String,
    fence: Option<Fence>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry").field("prefix", &self.prefix).field("fence", &self.fence).finish()
    }
}

fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {err}"))
}

async fn bounded<T>(what: &str, fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, RegistryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(RegistryError::Unavailable(format!("etcd: {what} timed out after {REQUEST_TIMEOUT:?}"))),
    }
}

impl EtcdRegistry {
    /// A registry that can read but whose every write fails with [`RegistryError::Fenced`].
    pub fn read_only(members: Members, prefix: impl Into<String>) -> Self {
        Self { members, prefix: prefix.into(), fence: None }
    }

    /// A registry whose writes succeed only while `fence` holds.
    pub fn fenced(members: Members, prefix: impl Into<String>, fence: Fence) -> Self {
        Self { members, prefix: prefix.into(), fence: Some(fence) }
    }

    /// Reports an unavailable member so the next attempt uses another.
    fn check<T>(&self, member: &Member, result: Result<T, RegistryError>) -> Result<T, RegistryError> {
        if matches!(result, Err(RegistryError::Unavailable(_))) {
            self.members.failed(member);
        }
        result
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Runs `op` until it succeeds, fails other than by unavailability, or [`ATTEMPTS`] are spent.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, RegistryError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Err(RegistryError::Unavailable(why)) if attempt + 1 < ATTEMPTS => {
                tracing::debug!(%why, attempt, "etcd request failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RegistryError> {
        retried(|_| self.get_once(key)).await
    }

    async fn range(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RegistryError> {
        let mut out = Vec::new();
        self.range_pages(prefix, &mut |page| out.extend(page)).await?;
        Ok(out)
    }

    /// All of `prefix`, in pages sized by the records before them (halved while a page is too
    /// large to decode), every page at the revision of the first: one consistent snapshot, and no
    /// response near a message limit however large the range. Each page is retried on its own,
    /// so `each` never sees a page twice; while it runs, the next page is being read.
    async fn range_pages(&self, prefix: &str, each: &mut (dyn FnMut(Page) + Send)) -> Result<(), RegistryError> {
        let full = self.full(prefix);
        let end = prefix_end(full.as_bytes());
        let mut limit = FIRST_PAGE_KEYS;
        let mut fetched = self.page(full.as_bytes(), &end, &mut limit, 0).await?;
        let revision = fetched.revision;
        loop {
            let Some(next) = fetched.next.take() else {
                each(fetched.items);
                return Ok(());
            };
            let items = std::mem::take(&mut fetched.items);
            let (following, ()) = tokio::join!(self.page(&next, &end, &mut limit, revision), async {
                // Off the worker (when there are others), so the connection's tasks keep
                // running and the next page arrives meanwhile.
                if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                    tokio::task::block_in_place(|| each(items));
                } else {
                    each(items);
                }
            });
            fetched = following?;
        }
    }

    async fn commit(&self, txn: Txn) -> Result<i64, RegistryError> {
        retried(|attempt| {
            let txn = txn.clone();
            async move {
                match self.commit_once(txn.clone()).await {
                    // An earlier attempt may have been applied with only its answer lost: if every put
                    // of this transaction is in place, that attempt is the one that counted.
                    Err(RegistryError::Conflict { key }) if attempt > 0 => match self.applied(&txn).await {
                        Some(revision) => Ok(revision),
                        None => Err(RegistryError::Conflict { key }),
                    },
                    other => other,
                }
            }
        })
        .await
    }
}

impl EtcdRegistry {
    /// Everything under `prefix` and the revision it was read at (one snapshot, read in pages).
    pub(super) async fn range_at(&self, prefix: &str) -> Result<(Page, i64), RegistryError> {
        let full = self.full(prefix);
        let end = prefix_end(full.as_bytes());
        let mut limit = FIRST_PAGE_KEYS;
        let mut fetched = self.page(full.as_bytes(), &end, &mut limit, 0).await?;
        let revision = fetched.revision;
        let mut items = std::mem::take(&mut fetched.items);
        while let Some(next) = fetched.next.take() {
            fetched = self.page(&next, &end, &mut limit, revision).await?;
            items.append(&mut fetched.items);
        }
        Ok((items, revision))
    }

    /// The key prefix of this registry.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision of `txn`'s puts when all of them hold exactly its values (and it has puts).
    async fn applied(&self, txn: &Txn) -> Option<i64> {
        let mut revision = None;
        for op in &txn.ops {
            let Op::Put { key, value } = op else { return None };
            let current = self.get_once(key).await.ok()??;
            if current.value != *value {
                return None;
            }
            revision = Some(revision.unwrap_or(0).max(current.mod_revision));
        }
        revision
    }

    async fn get_once(&self, key: &str) -> Result<Option<Versioned>, RegistryError> {
        let member = self.members.current();
        let mut kv = member.client.kv_client();
        let resp = self.check(&member, bounded("get", kv.get(self.full(key), None)).await)?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| Versioned { value: kv.value().to_vec().into(), mod_revision: kv.mod_revision() }))
    }

    /// One page of `[start, end)` at `revision` (0: the current one), or `None` if it is too
    /// large to decode.
    async fn page_once(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<Option<Fetched>, RegistryError> {
        let member = self.members.current();
        let mut kv = member.client.kv_client().max_decoding_message_size(RANGE_MESSAGE_BYTES);
        let options = GetOptions::new().with_range(end.to_vec()).with_limit(limit).with_revision(revision);
        let resp = match bounded("range", kv.get(start.to_vec(), Some(options))).await {
            Err(RegistryError::Unavailable(why)) if limit > 1 && why.contains("too large") => return Ok(None),
            other => self.check(&member, other)?,
        };
        let bytes: usize = resp.kvs().iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = kv.key_str().map_err(unavailable)?;
            let key = key.strip_prefix(&self.prefix).unwrap_or(key).to_owned();
            items.push((key, Versioned { value: kv.value().to_vec().into(), mod_revision: kv.mod_revision() }));
        }
        let next = match resp.kvs().last() {
            Some(last) if resp.more() => {
                let mut next = last.key().to_vec();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        Ok(Some(Fetched {
            each_bytes: bytes.checked_div(items.len()),
            items,
            next,
            revision: resp.header().map_or(0, |h| h.revision()),
        }))
    }

    /// The page from `start`, its size halved while it is too large to decode.
    async fn page(&self, start: &[u8], end: &[u8], limit: &mut i64, revision: i64) -> Result<Fetched, RegistryError> {
        loop {
            if let Some(fetched) = retried(|_| self.page_once(start, end, *limit, revision)).await? {
                // The next page is sized by the records of this one.
                if let Some(each) = fetched.each_bytes {
                    *limit = ((PAGE_BYTES / each.max(1)) as i64).clamp(1, MAX_PAGE_KEYS);
                }
                return Ok(fetched);
            }
            *limit /= 2;
            tracing::debug!(page = *limit, "a registry page was too large to decode; reading smaller pages");
        }
    }

    async fn commit_once(&self, txn: Txn) -> Result<i64, RegistryError> {
        let Some(fence) = &self.fence else {
            return Err(RegistryError::Fenced);
        };
        let mut compares = vec![EtcdCompare::create_revision(fence.key.clone(), CompareOp::Equal, fence.revision)];
        let first_key = txn.compares.first().map(|Compare::ModRevision { key, .. }| key.clone());
        for Compare::ModRevision { key, revision } in txn.compares {
            compares.push(EtcdCompare::mod_revision(self.full(&key), CompareOp::Equal, revision));
        }
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(self.full(&key), value.to_vec(), None),
                Op::Delete { key } => TxnOp::delete(self.full(&key), None),
            })
            .collect();
        // On failure, read the leader key back to tell "deposed" from "record changed".
        let etxn = EtcdTxn::new().when(compares).and_then(ops).or_else([TxnOp::get(fence.key.clone(), None)]);
        let member = self.members.current();
        let mut kv = member.client.kv_client();
        let resp = self.check(&member, bounded("txn", kv.txn(etxn)).await)?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let still_leader = resp.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().is_some_and(|kv| kv.create_revision() == fence.revision),
            _ => false,
        });
        if still_leader {
            Err(RegistryError::Conflict { key: first_key.unwrap_or_default() })
        } else {
            Err(RegistryError::Fenced)
        }
    }
}
