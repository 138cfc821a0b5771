#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

/// The task's arguments, without argv[0] (which is the task's name).
pub fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// The task's name (argv[0]), as Skiff set it.
pub fn name() -> String {
    std::env::args().next().unwrap_or_default()
}

/// An environment variable given to the task with `--env KEY=VALUE`.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// All of the task's input (its stdin).
pub fn input() -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

/// All of the task's input as UTF-8 text.
pub fn input_string() -> io::Result<String> {
    let mut buf = String::new();
    io::stdin().read_to_string(&mut buf)?;
    Ok(buf)
}

/// Writes bytes to the task's output (stdout). Output past the agent's bound is dropped, and the
/// task's status says so; writing never fails because of it.
pub fn output(bytes: &[u8]) {
    let mut out = io::stdout();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Writes one line of text to the task's output.
pub fn output_line(line: &str) {
    let mut out = io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected the task recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Formats a log line the way [`log`] writes it.
pub fn format_log(level: Level, message: &str) -> String {
    format!("[{}] {}\n", level.as_str(), message)
}

/// Writes a log line to the task's stderr, prefixed with its level.
pub fn log(level: Level, message: &str) {
    let _ = io::stderr().write_all(format_log(level, message).as_bytes());
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Formats a progress line the way [`progress`] writes it.
pub fn format_progress(done: u64, total: u64) -> String {
    let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
    format!("[PROGRESS] {done}/{total} ({percent:.0}%)\n")
}

/// Reports progress (`done` of `total` units) on stderr, where `skiff run` and `skiff logs` show
/// it. Cheap enough to call often; a task that reports progress is easy to tell from a stuck one.
pub fn progress(done: u64, total: u64) {
    let _ = io::stderr().write_all(format_progress(done, total).as_bytes());
}

/// Reads a file of the task's sandbox (its `/`), e.g. an input file placed there for it.
pub fn read_file(path: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Writes a file into the task's sandbox, e.g. a result to collect when the task ends.
pub fn write_file(path: &str, contents: &[u8]) -> io::Result<()> {
    std::fs::write(path, contents)
}

/// Ends the task with an exit code (0 = success); `skiff run` exits with the same code.
pub fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format() {
        assert_eq!(format_log(Level::Info, "hi"), "[INFO] hi\n");
        assert_eq!(format_log(Level::Error, "x"), "[ERROR] x\n");
        assert_eq!(format_progress(3, 12), "[PROGRESS] 3/12 (25%)\n");
        assert_eq!(format_progress(0, 0), "[PROGRESS] 0/0 (100%)\n");
    }
}
