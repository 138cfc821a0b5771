//! The log format of every daemon: human-readable lines, or one JSON object per line for a log
//! pipeline (`--log-format json`, as Nomad's `log_json`).

use tracing_subscriber::EnvFilter;

/// How a daemon writes its logs (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`), `spans`.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG` filters it (default: `default_filter`).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Colour only on a terminal (an executor process's log goes to a file).
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}
