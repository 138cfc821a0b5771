//! The exit codes of `skiff`. A task's own exit code (0-255) passes through `skiff run` unchanged.

use std::process::ExitCode;

/// Bad input: usage, a missing file, a file that is not Wasm, a bad size or duration.
pub const BAD_INPUT: u8 = 64;
/// No coordinator reachable, or it went away.
pub const UNAVAILABLE: u8 = 69;
/// Refused: no or a wrong certificate, a missing, unknown, revoked or expired token, or a token
/// that lacks the capability (sysexits' EX_NOPERM).
pub const DENIED: u8 = 77;
/// The task ended without an exit code of its own (trap, limit, invalid module, lost).
pub const TASK_FAILED: u8 = 70;
/// The task was killed (as a shell reports SIGKILL: 128 + 9).
pub const TASK_KILLED: u8 = 137;

/// A failure of the CLI itself, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// A coordinator's refusal: what the request named is wrong or unknown (bad input), or the
    /// coordinator could not serve it (unavailable).
    pub fn from_status(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::NotFound | tonic::Code::InvalidArgument => CliError::BadInput(status.message().to_owned()),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                CliError::Denied(status.message().to_owned())
            }
            _ => CliError::Unavailable(status.message().to_owned()),
        }
    }

    pub fn code(&self) -> ExitCode {
        match self {
            CliError::BadInput(_) => ExitCode::from(BAD_INPUT),
            CliError::Unavailable(_) => ExitCode::from(UNAVAILABLE),
            CliError::Denied(_) => ExitCode::from(DENIED),
            CliError::Other(_) => ExitCode::FAILURE,
        }
    }
}

/// Maps a guest's exit code to the process exit code (codes outside 0-255 become 1).
pub fn from_task_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
