//! Task specs as the leader accepts them: already checked field by field at the edge
//! ([`skiff_core::spec`]); here against the artifact store.

use skiff_core::TaskSpec;
use skiff_proto as pb;

use super::{Leader, gc};
use crate::error::{Error, Result};

impl Leader {
    /// Checks a task spec against the artifact store (its module and files must be there) and fills
    /// in the module size.
    pub(super) fn check_artifacts(&mut self, spec: &mut TaskSpec) -> Result<()> {
        spec.module_by_digest().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if let Some(pb::task_spec::Kind::Wasm(wasm)) = spec.kind.as_ref() {
            let record = self.artifacts.get(&wasm.module_sha256).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "module {} is not in the artifact store: upload it first (skiff run does)",
                    wasm.module_sha256
                ))
            })?;
            let size = record.size;
            spec.set_module_size(size);
        }
        for file in spec.files.iter().chain(spec.dirs.iter().flat_map(|d| d.files.iter())) {
            if !self.artifacts.contains_key(&file.sha256) {
                return Err(Error::InvalidArgument(format!(
                    "file {} ({}) is not in the artifact store: upload it first (skiff run does)",
                    file.path, file.sha256
                )));
            }
        }
        self.touch_artifacts(gc::referenced(spec));
        Ok(())
    }
}
