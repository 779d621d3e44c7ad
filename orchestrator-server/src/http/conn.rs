//! The connection's byte stream, seen from below hyper: `EnvelopeIo` gives the answers hyper
//! writes on its own the same error envelope as every other answer.
//!
//! When a request cannot be parsed (a malformed header, a URI over hyper's limit, headers too
//! large), hyper answers it itself — 400, 414 or 431 with an empty body — and closes the
//! connection; the service never sees the request. Those answers are recognised here (an error
//! status with `content-length: 0`, which no handler of ours ever sends) and rewritten into
//! the envelope, so clients can rely on `{"error": …}` for every failure.
//!
//! Reads are handed to hyper at most [`MAX_READ`] bytes at a time. Hyper refuses a head once
//! its read buffer holds [`MAX_HEAD`] without a complete one, but it checks only after a read
//! that left the head incomplete: given one large read (a slow server, a client that wrote
//! everything at once), a head of twice that size could arrive whole and be served. With reads
//! bounded, any head over [`MAX_HEAD`] + [`MAX_READ`] is refused, however the bytes arrive, and
//! a connection holds at most that much of an unfinished head (hyper's own default, about
//! 400 KiB, let a stranger's thousand idle connections hold 400 MiB before any token is read).
//!
//! A write the client does not take fails the connection after the write timeout
//! (`WRITE_TIMEOUT_SECONDS`), and after at most [`STOPPING_WRITE_TIMEOUT`] once the server is
//! stopping, so that a client that stopped reading never holds a slot, nor the stop.
//!
//! Hyper writes a connection's answers in the version of its requests: after an HTTP/1.0
//! request, its own error answers start `HTTP/1.0`, and are rewritten as well.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use orchestrator_core::api::{ApiErrorBody, ErrorCode, ErrorEnvelope};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read hands to hyper.
pub const MAX_READ: usize = 16 * 1024;

/// The most of an unfinished request head hyper keeps (its read buffer's bound): enough for a
/// URI past hyper's 64 KiB limit to be answered 414 rather than 431.
pub const MAX_HEAD: usize = 80 * 1024;

/// Whether `bytes` starts the head of an HTTP/1 answer in the 4xx class.
fn client_error_head(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HTTP/1.1 4") || bytes.starts_with(b"HTTP/1.0 4")
}

/// How long a write may wait for the client once the server is stopping: a client that
/// stopped reading (an event stream's, most often, whose end is queued behind what it did not
/// read) would otherwise hold the drain for the whole write timeout.
pub const STOPPING_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves once the server is stopping.
type Stopping = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A stream whose writes pass through unchanged, except hyper's own bodiless error answers;
/// a write the client does not take within the write timeout fails the connection (a client
/// that does not read its answers would otherwise hold a connection slot for ever), within
/// [`STOPPING_WRITE_TIMEOUT`] once the server is stopping.
pub struct EnvelopeIo<T> {
    inner: T,
    /// How long a write may wait for the client.
    write_timeout: std::time::Duration,
    /// A rewritten answer still being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
    /// Running while a write waits for the client.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Until the server is stopping (then `None`, and `write_timeout` the shorter one).
    stopping: Option<Stopping>,
}

impl<T> EnvelopeIo<T> {
    /// Wraps a connection's stream; writes wait at most `write_timeout` for the client.
    pub fn new(inner: T, write_timeout: std::time::Duration) -> Self {
        EnvelopeIo {
            inner,
            write_timeout,
            pending: None,
            stalled: None,
            stopping: None,
        }
    }

    /// Writes wait at most [`STOPPING_WRITE_TIMEOUT`] (if shorter) once `stop` says true — a
    /// write already waiting then too, from that moment.
    pub fn stopping_with(mut self, mut stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(Box::pin(async move {
            // A dropped sender (the server gone) is a stop too.
            let _ = stop.wait_for(|stopping| *stopping).await;
        }));
        self
    }

    /// Tracks how long writes have been waiting: `Pending` while the client has some time
    /// left, an error once it has had the write timeout. Progress (a write or flush that
    /// completed) resets the clock; the server stopping only brings its end nearer.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if let Some(stopping) = &mut self.stopping
            && stopping.as_mut().poll(cx).is_ready()
        {
            self.stopping = None;
            self.write_timeout = self.write_timeout.min(STOPPING_WRITE_TIMEOUT);
            let sooner = tokio::time::Instant::now() + self.write_timeout;
            if sooner < timer.deadline() {
                timer.as_mut().reset(sooner);
            }
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The envelope answer for hyper's bodiless error head `head`, or `None` for anything else.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let (code, message) = match status {
        "400" => (ErrorCode::BadRequest, "the request is not well-formed HTTP"),
        "414" => (ErrorCode::UriTooLong, "the request URI is too long"),
        "431" => (
            ErrorCode::HeadersTooLarge,
            "the request headers are too large or too many",
        ),
        _ => return None,
    };
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = serde_json::to_vec(&ErrorEnvelope {
        error: ApiErrorBody {
            code,
            message: message.to_owned(),
            details: None,
        },
    })
    .ok()?;
    let mut out = format!("{status_line}\r\n");
    // Hyper's own `connection: close` (it closes after these answers) is written once, below.
    for header in headers {
        let name = header.to_ascii_lowercase();
        if !name.starts_with("content-length:") && !name.starts_with("connection:") {
            out.push_str(header);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    Some(bytes)
}

impl<T: AsyncWrite + Unpin> EnvelopeIo<T> {
    /// Writes out what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EnvelopeIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut self.get_mut().inner;
        if buf.remaining() <= MAX_READ {
            return Pin::new(inner).poll_read(cx, buf);
        }
        // A smaller buffer over the front of the caller's. Zeroing it first keeps this safe
        // code: up to 16 KiB zeroed per read into a buffer with more room than that (hyper
        // hands a fresh, uninitialised view of its buffer to every read).
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(MAX_READ));
        ready!(Pin::new(inner).poll_read(cx, &mut limited))?;
        let read = limited.filled().len();
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EnvelopeIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            let pending = this.poll_pending(cx);
            ready!(this.watch(cx, pending))?;
        }
        if client_error_head(buf)
            && let Some(replacement) = rewrite(buf)
        {
            // hyper closes the connection after this answer, so nothing follows it; the
            // replacement takes the place of all of `buf`.
            // Whatever of it cannot go out now goes out on the flush that follows.
            this.pending = Some((replacement, 0));
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, written)
    }

    /// Vectored writes let hyper send a body's chunks as they are (shared buffers, such as an
    /// event stream's) instead of copying them into one buffer per connection.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        let Some(first) = first else {
            return Poll::Ready(Ok(0));
        };
        if this.pending.is_some() || client_error_head(first) {
            // The rewrite looks at an answer's head alone: one slice at a time here.
            return Pin::new(this).poll_write(cx, first);
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            let pending = this.poll_pending(cx);
            ready!(this.watch(cx, pending))?;
        }
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_errors_become_envelopes() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.contains("date: Mon, 30 Nov 2026 12:00:00 GMT\r\n"));
        assert_eq!(out.matches("connection: close\r\n").count(), 1, "{out}");
        assert!(out.contains("content-type: application/json\r\n"));
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let envelope: ErrorEnvelope = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.error.code, ErrorCode::HeadersTooLarge);
        assert!(out.contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn hypers_bodiless_errors_on_an_http_1_0_connection_become_envelopes() {
        let head = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let envelope: ErrorEnvelope = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.error.code, ErrorCode::BadRequest);
        assert!(client_error_head(head));
    }

    /// A write the client does not take fails after the write timeout; once the server is
    /// stopping, after [`STOPPING_WRITE_TIMEOUT`] — a write already waiting too.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_waits_less_once_the_server_is_stopping() {
        use tokio::io::AsyncWriteExt;
        let long = std::time::Duration::from_secs(600);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        // The client reads nothing: 64 bytes fill the pipe.
        let (_client, server) = tokio::io::duplex(64);
        let mut io = EnvelopeIo::new(server, long).stopping_with(stopping.clone());
        io.write_all(&[b'x'; 64]).await.unwrap();
        let write = tokio::spawn(async move { io.write_all(b"more").await });
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert!(!write.is_finished(), "a minute of a ten-minute timeout");
        stop.send_replace(true);
        let started = tokio::time::Instant::now();
        let failed = write.await.unwrap().unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), STOPPING_WRITE_TIMEOUT);
        // A write that starts waiting after the stop waits as little.
        let (_client, server) = tokio::io::duplex(64);
        let mut io = EnvelopeIo::new(server, long).stopping_with(stopping);
        io.write_all(&[b'x'; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let failed = io.write_all(b"more").await.unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), STOPPING_WRITE_TIMEOUT);
    }

    #[tokio::test]
    async fn reads_are_handed_over_at_most_max_read_at_a_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4 * MAX_READ);
        let sent = vec![b'x'; 3 * MAX_READ];
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut io = EnvelopeIo::new(server, std::time::Duration::from_secs(1));
        let mut buf = vec![0u8; 4 * MAX_READ];
        let mut received = Vec::new();
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= MAX_READ, "one read handed over {n} bytes");
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(received, sent);
        // A small buffer is filled as it is.
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut io = EnvelopeIo::new(server, std::time::Duration::from_secs(1));
        let mut small = [0u8; 64];
        assert_eq!(io.read(&mut small).await.unwrap(), 16);
    }

    /// As hyper reads: into an uninitialised buffer, partly filled already.
    #[tokio::test]
    async fn a_read_into_an_uninitialised_partly_filled_buffer_appends_at_most_max_read() {
        use std::mem::MaybeUninit;
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(4 * MAX_READ);
        client.write_all(&vec![b'y'; 3 * MAX_READ]).await.unwrap();
        let mut io = EnvelopeIo::new(server, std::time::Duration::from_secs(1));
        let mut memory = vec![MaybeUninit::<u8>::uninit(); 4 * MAX_READ];
        let mut buf = ReadBuf::uninit(&mut memory);
        buf.put_slice(b"head");
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf))
            .await
            .unwrap();
        assert_eq!(buf.filled().len(), 4 + MAX_READ);
        assert_eq!(&buf.filled()[..4], b"head");
        assert!(buf.filled()[4..].iter().all(|&b| b == b'y'));
    }

    #[test]
    fn answers_with_a_body_pass_unchanged() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n";
        assert!(rewrite(ours).is_none());
        let redirect = b"HTTP/1.1 308 Permanent Redirect\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite(redirect).is_none());
    }
}
