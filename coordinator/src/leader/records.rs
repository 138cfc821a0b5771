//! Registry records read back at a takeover: decoded and checked against the domain model once,
//! here. A record that does not decode or validate is moved aside to `quarantine/<key>` (its bytes
//! kept for an operator to look at) and logged; it is never a reason to step down, so no record —
//! written by a bug, a newer version, or someone with access to etcd — can leave a fleet without a
//! leader.

use prost::Message;
use skiff_core::{JobSpec, TaskSpec, id};
use skiff_proto as pb;
use tracing::{error, warn};

use super::Leader;
use crate::registry::{Page, Txn, Versioned, keys};

/// Decodes a record, or says why it cannot be used.
pub(super) trait Record: Message + Default + Sized {
    /// Checks what the leader relies on; `key` is the record's key without its prefix directory.
    fn check(&self, key: &str) -> Result<(), String>;
}

fn same(what: &str, key: &str, id: &str) -> Result<(), String> {
    if key == id { Ok(()) } else { Err(format!("its {what} {id:?} is not its key {key:?}")) }
}

impl Record for pb::TaskRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        let status = self.status.as_ref().ok_or("it has no status")?;
        id::check_task_id(&status.task_id).map_err(|e| e.to_string())?;
        same("task id", key, &status.task_id)?;
        if !status.agent_id.is_empty() {
            id::check_agent_id(&status.agent_id).map_err(|e| e.to_string())?;
        }
        if !self.job_id.is_empty() {
            id::check_job_id(&self.job_id).map_err(|e| e.to_string())?;
        }
        let spec = self.spec.as_ref().ok_or("it has no spec")?;
        TaskSpec::check(spec).map_err(|e| e.to_string())?;
        same("spec's task id", key, &spec.task_id)?;
        if pb::TaskState::try_from(status.state).is_err() {
            return Err(format!("its state {} is not a task state", status.state));
        }
        Ok(())
    }
}

impl Record for pb::JobRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        let spec = self.spec.as_ref().ok_or("it has no spec")?;
        id::check_job_id(&spec.job_id).map_err(|e| e.to_string())?;
        same("job id", key, &spec.job_id)?;
        JobSpec::check(spec).map_err(|e| e.to_string())
    }
}

impl Record for pb::AgentRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        id::check_agent_id(&self.agent_id).map_err(|e| e.to_string())?;
        same("agent id", key, &self.agent_id)
    }
}

impl Record for pb::FrameworkRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        let info = self.info.as_ref().ok_or("it has no framework info")?;
        id::check_framework_id(&info.framework_id).map_err(|e| e.to_string())?;
        same("framework id", key, &info.framework_id)
    }
}

impl Record for pb::ArtifactRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        if !crate::artifacts::valid_sha256(&self.sha256) {
            return Err("its sha256 is not 64 lower-case hex digits".into());
        }
        same("sha256", key, &self.sha256)
    }
}

impl Record for pb::AclPolicy {
    fn check(&self, key: &str) -> Result<(), String> {
        crate::acl::check_policy(self)?;
        same("name", key, &self.name)
    }
}

impl Record for pb::AclToken {
    fn check(&self, key: &str) -> Result<(), String> {
        if self.secret_sha256.is_empty() {
            return Err("it has no secret hash".into());
        }
        same("accessor id", key, &self.accessor_id)
    }
}

impl Record for pb::CollectedRecord {
    fn check(&self, key: &str) -> Result<(), String> {
        same("id", key, &self.id)
    }
}

/// Records below this are decoded on the calling thread; a takeover's large ranges are decoded
/// on every core (the leader does nothing else until it has them).
const PARALLEL_FROM: usize = 4096;

/// Decodes and checks every record (in order), on as many threads as there are cores.
fn decode_all<R: Record>(prefix: &str, records: &[(String, Versioned)]) -> Vec<Result<R, String>> {
    let one = |(key, value): &(String, Versioned)| {
        let name = key.strip_prefix(prefix).unwrap_or(key);
        R::decode(&value.value[..])
            .map_err(|e| format!("it does not decode: {e}"))
            .and_then(|r| r.check(name).map(|()| r))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if records.len() < PARALLEL_FROM || threads < 2 {
        return records.iter().map(one).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> =
            records.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>())).collect();
        parts.into_iter().flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// A record that decoded and checked, with its key and revision.
#[derive(Debug)]
pub(super) struct Loaded<R> {
    pub(super) record: R,
    pub(super) mod_revision: i64,
}

impl Leader {
    /// Where a takeover reads: the snapshot it was given, or else the registry.
    pub(super) fn reads(&self) -> std::sync::Arc<dyn crate::registry::Registry> {
        self.source.clone().unwrap_or_else(|| self.registry.clone())
    }

    /// Every record under `prefix`, decoded and checked; the others are quarantined.
    pub(super) async fn load<R: Record>(&mut self, prefix: &str) -> crate::error::Result<Vec<Loaded<R>>> {
        let mut loaded = Vec::new();
        self.load_each(prefix, |_, record| loaded.push(record)).await?;
        Ok(loaded)
    }

    /// Hands every record under `prefix` that decodes and checks to `handle` as its page arrives
    /// (pages are decoded on every core, and indexed while the next one is read); the others are
    /// quarantined once all are read. Answers how many were handled.
    pub(super) async fn load_each<R: Record>(
        &mut self,
        prefix: &str,
        mut handle: impl FnMut(&mut Self, Loaded<R>) + Send,
    ) -> crate::error::Result<usize> {
        let started = std::time::Instant::now();
        let registry = self.reads();
        let mut bad = Vec::new();
        let mut handled = 0;
        let mut each = |page: Page| {
            let checked = decode_all::<R>(prefix, &page);
            for ((key, value), checked) in page.into_iter().zip(checked) {
                match checked {
                    Ok(record) => {
                        handled += 1;
                        handle(self, Loaded { record, mod_revision: value.mod_revision });
                    }
                    Err(why) => bad.push((key, value, why)),
                }
            }
        };
        registry.range_pages(prefix, &mut each).await?;
        tracing::debug!(prefix, handled, ms = started.elapsed().as_millis() as u64, "registry range loaded");
        for (key, value, why) in bad {
            self.quarantine(&key, value, &why).await?;
        }
        Ok(handled)
    }

    /// Moves a bad record to `quarantine/<key>`, its bytes as they were.
    async fn quarantine(&mut self, key: &str, value: Versioned, why: &str) -> crate::error::Result<()> {
        error!(key, why, aside = %keys::quarantined(key), "a registry record is unusable; quarantined");
        let txn =
            Txn::new().if_mod_revision(key, value.mod_revision).delete(key).put(keys::quarantined(key), value.value);
        if let Err(err) = self.commit(txn).await {
            if self.stop.is_cancelled() {
                return Err(err);
            }
            // Changed under us (cannot happen while we lead) or etcd is down: skip it this time.
            warn!(key, %err, "could not quarantine a record; skipped");
        }
        self.quarantined += 1;
        Ok(())
    }
}
