//! Structured logs with `tracing`: human-readable or JSON lines, filtered by `log.level`
//! (or `RUST_LOG`). Each request's lines carry its trace id (see `portico_core::trace`).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests, repeated commands) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
