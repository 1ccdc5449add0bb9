//! Logging setup: `tracing`, JSON lines by default, human-readable text on request, always on
//! stdout (where container runtimes and log shippers read a process's log). Pingora's own `log`
//! records are bridged into the same output.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides `level`. Safe to call once per process;
/// later calls are ignored. Colours only when stdout is a terminal: escape codes in a log file or
/// a log pipeline are noise that breaks searching.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
