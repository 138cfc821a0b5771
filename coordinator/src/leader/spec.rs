//! Task specs as the leader accepts them: checked field by field, and against the artifact store.

use skiff_proto as pb;

use super::{Leader, gc};
use crate::error::{Error, Result};

impl Leader {
    /// Checks a task spec against the artifact store (its module and files must be there) and fills
    /// in the module size.
    pub(super) fn check_artifacts(&mut self, spec: &mut pb::TaskSpec) -> Result<()> {
        validate_spec(spec)?;
        if let Some(pb::task_spec::Kind::Wasm(wasm)) = spec.kind.as_mut() {
            let record = self.artifacts.get(&wasm.module_sha256).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "module {} is not in the artifact store: upload it first (skiff run does)",
                    wasm.module_sha256
                ))
            })?;
            wasm.module_size = record.size;
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

/// Checks a submitted spec; the error names what is wrong.
fn validate_spec(spec: &pb::TaskSpec) -> Result<()> {
    let bad = |msg: &str| Err(Error::InvalidArgument(msg.to_owned()));
    skiff_core::limits::check_spec(spec).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    match &spec.kind {
        None => return bad("task has neither a wasm module nor a native command"),
        Some(pb::task_spec::Kind::Wasm(w)) if !w.module.is_empty() => {
            return bad(
                "wasm tasks name their module by sha256 (upload it to the artifact store); inline module bytes are for agent-local use",
            );
        }
        Some(pb::task_spec::Kind::Wasm(w)) if !crate::artifacts::valid_sha256(&w.module_sha256) => {
            return bad("wasm task: module_sha256 must be 64 lower-case hex digits");
        }
        Some(pb::task_spec::Kind::Native(n)) if n.command.is_empty() => {
            return bad("native task has an empty command");
        }
        Some(_) => {}
    }
    let res = spec.resources.unwrap_or_default();
    if !(res.cpus.is_finite() && res.cpus >= 0.001) {
        return bad("cpus must be a number of at least 0.001 (one milli-CPU)");
    }
    if res.mem_bytes == 0 {
        return bad("mem must be positive");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Option<pb::task_spec::Kind>, cpus: f64, mem_bytes: u64) -> pb::TaskSpec {
        pb::TaskSpec {
            resources: Some(pb::Resources { cpus, mem_bytes, ..Default::default() }),
            kind,
            ..Default::default()
        }
    }

    #[test]
    fn spec_validation() {
        let sha = "a".repeat(64);
        let wasm = |m: &[u8], sha: &str| {
            Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
                module: m.to_vec(),
                module_sha256: sha.into(),
                ..Default::default()
            }))
        };
        let cases = [
            (spec(wasm(b"", &sha), 0.5, 1), None),
            (spec(None, 0.5, 1), Some("neither")),
            (spec(wasm(b"\0asm", &sha), 0.5, 1), Some("by sha256")),
            (spec(wasm(b"", "abc"), 0.5, 1), Some("64 lower-case hex")),
            (spec(wasm(b"", &sha.to_uppercase()), 0.5, 1), Some("64 lower-case hex")),
            (spec(wasm(b"", &sha), 0.0, 1), Some("cpus")),
            (spec(wasm(b"", &sha), f64::NAN, 1), Some("cpus")),
            (spec(wasm(b"", &sha), 0.0004, 1), Some("milli-CPU")),
            (spec(wasm(b"", &sha), 1.0, 0), Some("mem")),
        ];
        for (spec, want) in cases {
            match (validate_spec(&spec), want) {
                (Ok(()), None) => {}
                (Err(err), Some(text)) => assert!(err.to_string().contains(text), "{err} should mention {text}"),
                (got, want) => panic!("got {got:?}, want error containing {want:?}"),
            }
        }
    }
}
