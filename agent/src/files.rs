//! Task files: inputs put into place (by hash, from the artifact store) before a task starts, and
//! outputs collected into the store after it ends.
//!
//! Read-only inputs of a Wasm guest live outside its sandbox, under `<work_dir>/inputs/<task>/`,
//! and each top-level directory holding them is preopened read-only: the guest cannot write them by
//! any path, since its writable preopen (`/`, the sandbox) does not contain them. A native task gets
//! them inside its sandbox as root-owned 0444 files in root-owned directories (it runs as another
//! user). Writable inputs are plain copies in the sandbox. The agent places and reads files as
//! root where a task writes: never through a link ([`crate::beneath`]).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use skiff_proto as pb;

use crate::artifacts::Artifacts;
use crate::beneath::Dir;

/// The file part of a spec.
#[derive(Debug, Default, Clone)]
pub struct TaskIo {
    pub files: Vec<pb::TaskFile>,
    pub dirs: Vec<pb::TaskDir>,
    pub outputs: Vec<String>,
}

impl TaskIo {
    /// Takes the file part out of `spec`.
    pub fn take(spec: &mut pb::TaskSpec) -> Self {
        Self {
            files: std::mem::take(&mut spec.files),
            dirs: std::mem::take(&mut spec.dirs),
            outputs: std::mem::take(&mut spec.outputs),
        }
    }

    pub fn has_inputs(&self) -> bool {
        !self.files.is_empty() || !self.dirs.is_empty()
    }
}

/// A sandbox path as components: absolute, no `.`/`..`, not the root itself.
pub fn sandbox_path(path: &str) -> Result<Vec<String>, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?}: sandbox paths are absolute (like /input/data.csv)"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => return Err(format!("{path:?}: no . or .. in sandbox paths")),
        }
    }
    if parts.is_empty() {
        return Err(format!("{path:?}: names a directory, not a file"));
    }
    Ok(parts)
}

/// Read-only directories to preopen for a Wasm guest: (host directory, guest path).
pub type Preopens = Vec<(PathBuf, String)>;

/// Puts the inputs of `io` into place; `inputs_root` is this task's own directory for read-only
/// Wasm inputs (created as needed).
pub async fn place(
    artifacts: &Artifacts,
    io: &TaskIo,
    sandbox: &Path,
    inputs_root: &Path,
    wasm: bool,
) -> Result<Preopens, String> {
    let mut all: Vec<(Vec<String>, &pb::TaskFile, bool)> = Vec::new();
    for f in &io.files {
        all.push((sandbox_path(&f.path)?, f, f.writable));
    }
    for d in &io.dirs {
        let base = sandbox_path(&d.path)?;
        for f in &d.files {
            let rel = sandbox_path(&format!("/{}", f.path.trim_start_matches('/')))?;
            all.push((base.iter().chain(&rel).cloned().collect(), f, false));
        }
    }
    let read_only_tops: BTreeSet<String> =
        all.iter().filter(|(_, _, w)| !w).filter(|(p, _, _)| p.len() > 1).map(|(p, _, _)| p[0].clone()).collect();
    for (parts, file, writable) in &all {
        if wasm && !writable && parts.len() == 1 {
            return Err(format!(
                "{}: a read-only input needs a directory (like /input/{}), or ask for a writable copy",
                file.path, parts[0]
            ));
        }
        if wasm && *writable && read_only_tops.contains(&parts[0]) {
            return Err(format!("{}: writable, but /{} holds read-only inputs", file.path, parts[0]));
        }
    }
    // Nothing is written through a link (see `beneath`): a sandbox is fresh, but the task may run
    // before its outputs are read, and a writable input's directory is also the task's.
    let sandbox_dir = Dir::open(sandbox).map_err(|e| format!("cannot open the sandbox {}: {e}", sandbox.display()))?;
    let inputs_dir = if wasm && !read_only_tops.is_empty() {
        std::fs::create_dir_all(inputs_root).map_err(|e| format!("cannot create {}: {e}", inputs_root.display()))?;
        Some(Dir::open(inputs_root).map_err(|e| format!("cannot open {}: {e}", inputs_root.display()))?)
    } else {
        None
    };
    for (parts, file, writable) in &all {
        let bytes = artifacts.get(&file.sha256, file.size).await?;
        let dir = match &inputs_dir {
            Some(inputs) if !writable => inputs,
            _ => &sandbox_dir,
        };
        let mode = if *writable { 0o666 } else { 0o444 };
        dir.create_file(parts, &bytes, mode).map_err(|why| format!("cannot place {}: {why}", file.path))?;
    }
    Ok(if wasm {
        read_only_tops.into_iter().map(|top| (inputs_root.join(&top), format!("/{top}"))).collect()
    } else {
        Vec::new()
    })
}

/// Collects the outputs a task left in `sandbox` into the artifact store: regular files only, read
/// without following a link (see `beneath`).
pub async fn collect(artifacts: &Artifacts, outputs: &[String], sandbox: &Path) -> Vec<pb::OutputFile> {
    let dir = Dir::open(sandbox);
    let mut collected = Vec::new();
    for path in outputs {
        let mut out = pb::OutputFile { path: path.clone(), ..Default::default() };
        let bytes = match &dir {
            Ok(dir) => sandbox_path(path).and_then(|parts| dir.read_regular(&parts, artifacts.max_blob_bytes())),
            Err(e) => Err(format!("cannot open the sandbox: {e}")),
        };
        match bytes {
            Ok(bytes) => match artifacts.upload(bytes).await {
                Ok((sha256, size)) => {
                    out.sha256 = sha256;
                    out.size = size;
                }
                Err(why) => out.error = why,
            },
            Err(why) => out.error = why,
        }
        collected.push(out);
    }
    collected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths() {
        let cases = [
            ("/input/a.csv", Ok(vec!["input", "a.csv"])),
            ("/a", Ok(vec!["a"])),
            ("input/a", Err("absolute")),
            ("/input/../etc/passwd", Err("no . or ..")),
            ("/", Err("directory")),
        ];
        for (path, want) in cases {
            match (sandbox_path(path), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{path}"),
                (Err(err), Err(text)) => assert!(err.contains(text), "{path}: {err}"),
                (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }
}
