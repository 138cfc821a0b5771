//! A follower's copy of the registry, kept current by an etcd watch, so that a replica that wins
//! the election reads the state it takes over from memory instead of from etcd (as a Nomad or
//! Raft follower already holds the state it applies).
//!
//! [`Mirror::run`] reads everything under the fleet's prefix at one revision, then watches from the
//! next one and applies every put and delete. [`Mirror::freeze`], called once elected, reads etcd's
//! current revision, waits (asking etcd for a progress notification) until the watch has delivered
//! everything up to it, and hands the copy over as a [`Snapshot`]. Every write of the previous
//! leader was fenced on its election key, which was gone before this replica was elected, so the
//! snapshot holds all of them. A mirror that cannot catch up in time (its watch was compacted
//! away, etcd is slow) answers `None`, and the new leader reads etcd as before: the mirror only
//! ever makes a takeover faster, never different.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{EtcdRegistry, Page, Registry, RegistryError, Txn, Versioned};
use crate::members::Members;

/// What one watch response may hold: etcd batches up to 1,000 revisions into one while a watcher
/// catches up. A larger one breaks the watch, and the mirror reads everything again.
const WATCH_MESSAGE_BYTES: usize = 64 << 20;

/// The state a mirror holds.
#[derive(Debug, Default)]
struct State {
    kvs: BTreeMap<String, Versioned>,
    /// The revision `kvs` is complete up to.
    revision: i64,
    /// Handed over by [`Mirror::freeze`]: nothing is applied any more.
    frozen: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The revision the copy is complete up to (`0`: not complete, being read again).
    revision: watch::Sender<i64>,
    /// Asks the watch for a progress notification.
    progress: Notify,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Freezes the copy and hands it over once it is complete up to `current`, asking the watch
    /// for progress meanwhile; `None` if it is being read again or not complete by `deadline`.
    async fn hand_over(&self, current: i64, deadline: tokio::time::Instant) -> Option<Snapshot> {
        let mut revision = self.revision.subscribe();
        loop {
            let have = *revision.borrow_and_update();
            // 0: still reading everything (or again), which is no quicker than reading etcd.
            if have == 0 {
                break;
            }
            if have >= current {
                let mut state = self.state();
                state.frozen = true;
                return Some(Snapshot { kvs: std::mem::take(&mut state.kvs), revision: state.revision });
            }
            self.progress.notify_one();
            let step = tokio::time::Instant::now() + Duration::from_millis(20);
            let _ = tokio::time::timeout_at(step.min(deadline), revision.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.state().frozen = true;
        None
    }
}

/// A copy of everything under the fleet's prefix, kept by a watch. Clones share the copy.
#[derive(Debug, Clone)]
pub struct Mirror {
    members: Members,
    registry: EtcdRegistry,
    shared: Arc<Shared>,
}

impl Mirror {
    pub fn new(members: Members, prefix: impl Into<String>) -> Self {
        let registry = EtcdRegistry::read_only(members.clone(), prefix);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            revision: watch::Sender::new(0),
            progress: Notify::new(),
        });
        Self { members, registry, shared }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Keeps the copy until `shutdown` (or until it is frozen), reading everything again whenever
    /// the watch breaks.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while !shutdown.is_cancelled() && !self.state().frozen {
            let followed = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.follow() => r,
            };
            self.shared.revision.send_replace(0);
            match followed {
                Ok(()) => return,
                Err(why) => warn!(%why, "the registry mirror broke off; reading the registry again"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Reads everything, then applies the watch until it breaks (`Err`) or the copy is frozen.
    async fn follow(&self) -> Result<(), String> {
        let (items, revision) = self.registry.range_at("").await.map_err(|e| e.to_string())?;
        let keys = items.len();
        {
            let mut state = self.state();
            if state.frozen {
                return Ok(());
            }
            state.kvs = items.into_iter().collect();
            state.revision = revision;
        }
        let prefix = self.registry.prefix().to_owned();
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_progress_notify();
        let member = self.members.current();
        let mut client = member.client.watch_client().max_decoding_message_size(WATCH_MESSAGE_BYTES);
        let mut stream = client.watch(prefix.as_bytes(), Some(options)).await.map_err(|e| e.to_string())?;
        self.shared.revision.send_replace(revision);
        debug!(keys, revision, "registry mirror read; following the watch");
        loop {
            let message = tokio::select! {
                _ = self.shared.progress.notified() => {
                    stream.request_progress().await.map_err(|e| e.to_string())?;
                    continue;
                }
                m = stream.message() => m.map_err(|e| e.to_string())?,
            };
            let Some(response) = message else { return Err("the watch ended".into()) };
            if response.compact_revision() > 0 {
                return Err(format!("the watch fell behind a compaction (at {})", response.compact_revision()));
            }
            if response.canceled() {
                return Err(format!("the watch was cancelled: {}", response.cancel_reason()));
            }
            let mut latest = None;
            let complete = {
                let mut state = self.state();
                if state.frozen {
                    return Ok(());
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    let key = key.strip_prefix(&prefix).unwrap_or(key).to_owned();
                    match event.event_type() {
                        EventType::Put => {
                            let value =
                                Versioned { value: kv.value().to_vec().into(), mod_revision: kv.mod_revision() };
                            state.kvs.insert(key, value);
                        }
                        EventType::Delete => {
                            state.kvs.remove(&key);
                        }
                    }
                    latest = Some(kv.mod_revision());
                }
                // A response without events (a progress notification) is complete up to its
                // header's revision; one with events, up to its last event.
                let complete = match latest {
                    Some(revision) => revision,
                    None if !response.created() => response.header().map_or(0, |h| h.revision()),
                    None => 0,
                };
                state.revision = state.revision.max(complete);
                state.revision
            };
            self.shared.revision.send_if_modified(|r| {
                let newer = complete > *r;
                if newer {
                    *r = complete;
                }
                newer
            });
        }
    }

    /// The revision the copy is complete up to (`0` while it reads everything).
    pub fn revision(&self) -> i64 {
        *self.shared.revision.borrow()
    }

    /// Hands the copy over once it holds everything written up to now, waiting at most `wait`;
    /// `None` if it does not catch up by then (the caller reads etcd). Either way the mirror stops.
    pub async fn freeze(&self, wait: Duration) -> Option<Snapshot> {
        let started = std::time::Instant::now();
        let current = match self.current_revision(wait).await {
            Ok(revision) => revision,
            Err(why) => {
                warn!(%why, "cannot read etcd's revision; the takeover reads the registry");
                self.state().frozen = true;
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + wait.saturating_sub(started.elapsed());
        let snapshot = self.shared.hand_over(current, deadline).await;
        match &snapshot {
            Some(s) => info!(
                keys = s.kvs.len(),
                revision = s.revision,
                waited_ms = started.elapsed().as_millis() as u64,
                "taking over from the registry mirror"
            ),
            None => warn!(
                mirror = self.revision(),
                etcd = current,
                ?wait,
                "the registry mirror did not catch up; the takeover reads the registry"
            ),
        }
        snapshot
    }

    async fn current_revision(&self, wait: Duration) -> Result<i64, String> {
        let member = self.members.current();
        let mut kv = member.client.kv_client();
        let options = GetOptions::new().with_count_only();
        let get = kv.get(self.registry.prefix().as_bytes(), Some(options));
        let resp =
            tokio::time::timeout(wait, get).await.map_err(|_| "timed out".to_owned())?.map_err(|e| e.to_string())?;
        resp.header().map(|h| h.revision()).ok_or_else(|| "no header".to_owned())
    }
}

/// The registry as a mirror held it when frozen: reads only (a takeover's loads).
#[derive(Debug, Default)]
pub struct Snapshot {
    kvs: BTreeMap<String, Versioned>,
    revision: i64,
}

impl Snapshot {
    /// The etcd revision it holds the registry at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }
}

#[async_trait]
impl Registry for Snapshot {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, RegistryError> {
        Ok(self.kvs.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<Page, RegistryError> {
        Ok(self
            .kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    /// A snapshot is read back, never written.
    async fn commit(&self, _txn: Txn) -> Result<i64, RegistryError> {
        Err(RegistryError::Fenced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(revision: i64) -> Arc<Shared> {
        let mut kvs = BTreeMap::new();
        kvs.insert("tasks/1".to_owned(), Versioned { value: "one".into(), mod_revision: 3 });
        Arc::new(Shared {
            state: Mutex::new(State { kvs, revision, frozen: false }),
            revision: watch::Sender::new(revision),
            progress: Notify::new(),
        })
    }

    fn in_ms(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn hands_over_only_what_is_complete_up_to_etcd() {
        // Complete already.
        let s = shared(7).hand_over(7, in_ms(500)).await.expect("complete");
        assert_eq!((s.revision(), s.len()), (7, 1));

        // Behind: it asks for progress and waits for the watch to deliver.
        let behind = shared(5);
        let catch_up = {
            let behind = behind.clone();
            async move {
                let asked = tokio::time::timeout(Duration::from_secs(1), behind.progress.notified()).await;
                assert!(asked.is_ok(), "a mirror behind asks the watch for progress");
                tokio::time::sleep(Duration::from_millis(100)).await;
                behind.state().revision = 8;
                behind.revision.send_replace(8);
            }
        };
        let (snapshot, ()) = tokio::join!(behind.hand_over(7, in_ms(500)), catch_up);
        assert_eq!(snapshot.expect("caught up in time").revision(), 8);
        assert!(behind.state().frozen && behind.state().kvs.is_empty(), "handed over, not copied");

        // Behind for good: nothing by the deadline, and the copy stops.
        let stuck = shared(5);
        let started = tokio::time::Instant::now();
        assert!(stuck.hand_over(7, in_ms(300)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(stuck.state().frozen);

        // Being read again: no waiting at all.
        let reading = shared(0);
        let started = tokio::time::Instant::now();
        assert!(reading.hand_over(7, in_ms(300)).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
