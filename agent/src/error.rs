//! The agent's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),
    #[error("invalid coordinator address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("{path} does not hold {what}: remove it only if you know no newer leader has run")]
    Corrupt { path: PathBuf, what: &'static str },
    #[error("executor process: {0}")]
    Executor(String),
    #[error("the work directory {} is in use by another agent{}: one agent per work directory", path.display(), holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    WorkDirInUse { path: PathBuf, holder: Option<u32> },
    #[error("{} says this work directory is agent {kept}'s, but the certificate is agent {named}'s: give each agent its own work directory", path.display())]
    WrongAgent { path: PathBuf, kept: String, named: String },
    #[error("no coordinator address configured")]
    NoCoordinators,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
