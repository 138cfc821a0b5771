//! Garbage collection of artifacts: the leader forgets (deletes the registry record of) every
//! artifact that no live task refers to and that nobody has used for the grace period; each
//! replica's sweeper then removes blobs without a record from its disk (see
//! [`crate::artifacts::sweep`]).

use std::collections::HashSet;

use skiff_proto as pb;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Leader;
use crate::registry::{Txn, keys};
use crate::task;

/// The artifacts a task spec refers to: its module and its input files.
pub(super) fn referenced(spec: &pb::TaskSpec) -> impl Iterator<Item = &str> {
    let module = match &spec.kind {
        Some(pb::task_spec::Kind::Wasm(w)) => Some(w.module_sha256.as_str()),
        _ => None,
    };
    module
        .into_iter()
        .chain(spec.files.iter().map(|f| f.sha256.as_str()))
        .chain(spec.dirs.iter().flat_map(|d| d.files.iter().map(|f| f.sha256.as_str())))
}

impl Leader {
    /// Marks artifacts as used now (they stay at least a grace period longer).
    pub(super) fn touch_artifacts<'a>(&mut self, shas: impl Iterator<Item = &'a str>) {
        let now = Instant::now();
        for sha in shas {
            self.artifact_used.insert(sha.to_owned(), now);
        }
    }

    pub(super) async fn collect_garbage(&mut self) {
        let live: HashSet<&str> = self
            .tasks
            .values()
            .filter(|t| !task::is_terminal(t.state()))
            .filter_map(|t| t.record.spec.as_ref())
            .flat_map(referenced)
            .collect();
        let grace = self.config.artifact_grace;
        let now = Instant::now();
        let mut expired: Vec<String> = self
            .artifacts
            .keys()
            .filter(|sha| !live.contains(sha.as_str()))
            .filter(|sha| self.artifact_used.get(*sha).is_none_or(|used| now.duration_since(*used) >= grace))
            .cloned()
            .collect();
        expired.sort();
        for sha in expired {
            if let Err(err) = self.commit(Txn::new().delete(keys::artifact(&sha))).await {
                warn!(%sha, %err, "could not forget an unused artifact");
                return;
            }
            self.artifacts.remove(&sha);
            self.artifact_used.remove(&sha);
            info!(%sha, ?grace, "unused artifact forgotten");
        }
    }
}
