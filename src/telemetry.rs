//! Logging setup. Library code only uses `tracing` macros; this is the one place output is
//! configured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr with the given filter (validated by `config`).
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
