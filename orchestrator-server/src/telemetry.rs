//! Tracing set-up: one subscriber, JSON or pretty, filtered by `RUST_LOG`'s syntax, and the
//! process's panic hook, which logs a panic through it.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// A subscriber writing to `writer`; tests pass a sink.
pub fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        // Colours only on a terminal: escape codes in a log file or a pipe are noise.
        LogFormat::Pretty => Box::new(
            builder
                .pretty()
                .with_ansi(std::io::stdout().is_terminal())
                .finish(),
        ),
    }
}

/// Installs the subscriber for the whole process, and a panic hook that logs a panic (a bug)
/// through it, with its location and the span it happened in (a request's id), instead of
/// printing plain text to stderr beside the JSON log; call once. Rust's own hook still
/// prints it when `RUST_BACKTRACE` asks for a backtrace, or when the filter would drop the
/// log line.
pub fn init(filter: &str, format: LogFormat) {
    let _ = tracing::subscriber::set_global_default(subscriber(filter, format, std::io::stdout));
    let rusts = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if tracing::enabled!(tracing::Level::ERROR) {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            tracing::error!(
                panic = crate::panic_message(info.payload()),
                location = location.as_deref().unwrap_or("unknown"),
                "panicked (a bug)"
            );
            if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
                return;
            }
        }
        rusts(info);
    }));
}
