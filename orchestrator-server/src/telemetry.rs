//! Tracing set-up: one subscriber, JSON or pretty, filtered by `RUST_LOG`'s syntax; the queue
//! its lines take to standard output; and the process's panic hook, which logs a panic
//! through it.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

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
    // Set once per process; a second call keeps the first subscriber.
    let _ = match LogQueue::spawn(std::io::stdout(), LOG_QUEUE_LINES) {
        Ok(queue) => {
            let _ = STDOUT_QUEUE.set(queue.clone());
            tracing::subscriber::set_global_default(subscriber(filter, format, queue))
        }
        // No thread for it: lines are written where they are made, as they were before.
        Err(_) => {
            tracing::subscriber::set_global_default(subscriber(filter, format, std::io::stdout))
        }
    };
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
            // A panic out of `main` ends the process before its line would be written: wait
            // for it a moment (not on the writing thread itself, which would wait for itself).
            if std::thread::current().name() != Some(LOG_WRITER) {
                flush(Duration::from_secs(1));
            }
            if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
                return;
            }
        }
        rusts(info);
    }));
}

/// Log lines the queue to standard output holds at most (a few MiB at the usual few hundred
/// bytes a line): a burst waits there while the output is slow; past it, lines are dropped.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// The name of the thread that writes the log out.
const LOG_WRITER: &str = "log-writer";

/// The queue [`init`] installed, if it did.
static STDOUT_QUEUE: OnceLock<LogQueue> = OnceLock::new();

/// Log lines on their way to an output (standard output), written by a thread of their own.
/// A reader of the output that stops reading (a log shipper stuck, a full pipe) stalls that
/// thread only, never a request nor `/health`, which used to wait on the write; lines that
/// find the queue full are dropped and counted ([`dropped_log_lines`]).
#[derive(Debug, Clone)]
pub struct LogQueue {
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug)]
enum Message {
    Line(Vec<u8>),
    /// Answered once every line sent before it is written.
    Flush(SyncSender<()>),
}

impl LogQueue {
    /// A queue of at most `capacity` lines, and the thread that writes them to `output`.
    pub fn spawn(output: impl Write + Send + 'static, capacity: usize) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name(LOG_WRITER.to_owned())
            .spawn(move || write_out(receiver, output))?;
        Ok(LogQueue {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits, `within` at most, until every line queued so far is written; whether they were.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (done, written) = std::sync::mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            match self.sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        written
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Writes each line as it comes, until every sender is gone.
fn write_out(lines: Receiver<Message>, mut output: impl Write) {
    for message in lines {
        match message {
            // A line the output refused is lost, as it would be written in place.
            Message::Line(line) => {
                let _ = output.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = output.flush();
                let _ = done.send(());
            }
        }
    }
}

/// The subscriber's writer: a line is queued whole (the formatter writes each in one call).
impl Write for LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.sender.try_send(Message::Line(buf.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writing thread is gone (the process is ending): nowhere to write.
            Err(TrySendError::Disconnected(_)) => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Log lines dropped so far because standard output took them slower than they came
/// (`orchestrator_log_lines_dropped`); 0 before [`init`].
pub fn dropped_log_lines() -> u64 {
    STDOUT_QUEUE.get().map_or(0, LogQueue::dropped)
}

/// Waits, `within` at most, until the lines logged so far are written to standard output: call
/// before the process ends (they would be lost with the writing thread).
pub fn flush(within: Duration) {
    if let Some(queue) = STDOUT_QUEUE.get() {
        queue.flush(within);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that takes nothing until it is let go, then collects what it is given.
    struct Stuck {
        go: std::sync::mpsc::Receiver<()>,
        taken: Arc<std::sync::Mutex<Vec<u8>>>,
        waited: bool,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.waited {
                let _ = self.go.recv();
                self.waited = true;
            }
            self.taken.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_never_holds_up_the_logger_and_lines_past_the_queue_are_counted() {
        let (go, wait) = std::sync::mpsc::channel();
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let queue = LogQueue::spawn(
            Stuck {
                go: wait,
                taken: taken.clone(),
                waited: false,
            },
            8,
        )
        .unwrap();
        // Twenty lines while the output takes nothing: each write returns at once (were it
        // to wait for the output, this thread would never finish).
        let (finished, logged) = std::sync::mpsc::channel();
        let mut writer = queue.clone();
        std::thread::spawn(move || {
            for n in 0..20 {
                writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
            }
            finished.send(()).unwrap();
        });
        logged
            .recv_timeout(Duration::from_secs(10))
            .expect("a write waited for the output");
        // The output holds one line (taken before it stuck), the queue eight; the rest went.
        assert!(
            (11..=12).contains(&queue.dropped()),
            "dropped {}",
            queue.dropped()
        );
        assert!(
            !queue.flush(Duration::from_millis(50)),
            "flushed while stuck"
        );

        go.send(()).unwrap();
        assert!(queue.flush(Duration::from_secs(10)));
        let written = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        assert!(written.starts_with("line 0\n"), "{written}");
        assert_eq!(written.lines().count() as u64 + queue.dropped(), 20);
    }
}
