//! The event log from the client's side: [`EventStream`], a stream of events that reconnects
//! and resumes after the last id it delivered.

use std::time::Duration;

use orchestrator_core::EventType;
use orchestrator_core::api::{CloudEvent, EventsQuery, HEARTBEAT_HEADER, paths};
use reqwest::Method;

use crate::{Client, ClientError, Result};

/// The least a stream waits for any byte (an event or the server's heartbeat) before it
/// reconnects, four default heartbeats (more when the server says its heartbeats are further
/// apart: [`idle_for`]); also how long it waits for a connection's answer to begin.
const IDLE: Duration = Duration::from_secs(60);
/// The longest silence a stream waits out, whatever the server says of its heartbeats.
const MOST_IDLE: Duration = Duration::from_secs(4 * 3600);
/// Longest pause between reconnection attempts, unless the server asks for a longer one.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Longest pause a server's `Retry-After` is followed for.
const MAX_ASKED_PAUSE: Duration = Duration::from_secs(60);
/// How long a connection must have lasted, if it delivered no event, for its end to be
/// taken as a normal one (reconnect at once) rather than as a failure (reconnect after a
/// pause that grows): a server or proxy that closes every stream as soon as it opens is not
/// asked again ten times a second.
const HEALTHY: Duration = Duration::from_secs(10);
/// The most bytes one message may hold. The server's longest event (a consultation whose
/// answer, rationale and reviewer's text are at their limits) is a few MiB at most.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The events of `GET /events/stream`, one at a time, resumed by id across disconnects and
/// server restarts. Made by [`Client::stream_events`].
///
/// [`EventStream::next`] gives each event once, in id order. A transport failure, a 5xx, a 408
/// or a 429 comes back as an `Err` item and the next call reconnects (after a pause, sending
/// `Last-Event-ID`; at least as long as the answer's `Retry-After` asked, up to a minute); an
/// error the server means (400, 401, 409 `EVENTS_CURSOR_AHEAD`, 410
/// `EVENTS_EXPIRED`) ends the stream after it is returned. An event of a type this version does
/// not know (one a newer server added) comes back once as a [`ClientError::UnreadableEvent`]
/// item naming its id, and the stream goes on after it; an event of a known type that does not
/// decode is a [`ClientError::Decode`] that ends the stream (as it fails a page).
///
/// A stream made without `after` starts "from now": at its connection, which happens at the
/// first [`EventStream::next`], or earlier with [`EventStream::attach`] when what follows
/// must be seen (open the stream, attach, then act). The server's first message names the id
/// it starts after, so a stream disconnected before its first event resumes from there too.
pub struct EventStream {
    client: Client,
    query: EventsQuery,
    /// The last id delivered; where a reconnection resumes.
    last: Option<u64>,
    response: Option<reqwest::Response>,
    /// When the current connection was made, and whether it delivered an event yet.
    connected_at: std::time::Instant,
    delivered: bool,
    buffer: Messages,
    failures: u32,
    /// How long the current connection may stay silent: [`IDLE`], or four of the server's
    /// heartbeats when it says they are further apart.
    idle: Duration,
    /// Until when the last refused connection's `Retry-After` asked to wait.
    asked_until: Option<tokio::time::Instant>,
    /// When the next connection is to be made, once its pause began: a call to
    /// [`EventStream::next`] given up during the pause (a caller's timeout) leaves it as it
    /// was, and the next call waits out the rest.
    resume_at: Option<tokio::time::Instant>,
    ended: bool,
}

impl EventStream {
    pub(crate) fn new(client: Client, query: EventsQuery) -> Self {
        EventStream {
            client,
            last: query.after,
            query,
            response: None,
            connected_at: std::time::Instant::now(),
            delivered: false,
            buffer: Messages::default(),
            failures: 0,
            idle: IDLE,
            asked_until: None,
            resume_at: None,
            ended: false,
        }
    }

    /// The id of the last event delivered, or else where the stream starts: its `after`, or
    /// the id the server named when it connected (see [`EventStream::attach`]).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last
    }

    /// Connects now, if the stream is not connected, and learns where it starts: every event
    /// committed after this returns `Ok` is delivered by [`EventStream::next`], even if the
    /// stream was made without `after` ("from now on"). A failure is returned as `next` would
    /// return it, and `next` tries again.
    ///
    /// ```no_run
    /// # use orchestrator_core::api::{AdvanceRequest, EventsQuery};
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let mut events = client.stream_events(EventsQuery::default());
    /// events.attach().await?;
    /// let id = "checkout-redesign".parse().expect("a valid feature id");
    /// client.advance_workflow(&id, &AdvanceRequest::new("agent_complete")).await?;
    /// let transitioned = events.next().await; // the advance's event, not missed
    /// # Ok(()) }
    /// ```
    pub async fn attach(&mut self) -> Result<()> {
        loop {
            if self.ended {
                return Ok(());
            }
            if self.response.is_none() {
                self.reconnect().await?;
            }
            // Without a start of its own, the stream learns it from the server's first
            // message; what follows that stays buffered for `next`.
            if self.last.is_some() || self.first_message_read() {
                return Ok(());
            }
            self.read_more().await?;
        }
    }

    /// The next event; `None` once the stream ended (after an error the server meant).
    pub async fn next(&mut self) -> Option<Result<CloudEvent>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(event) = self.take_buffered() {
                return Some(event);
            }
            if self.response.is_none()
                && let Err(error) = self.reconnect().await
            {
                return Some(Err(error));
            }
            if let Err(error) = self.read_more().await {
                return Some(Err(error));
            }
        }
    }

    /// Turns the stream into a `futures` `Stream`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<CloudEvent>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            stream.next().await.map(|item| (item, stream))
        })
    }

    /// Connects (after a pause if the last attempts failed), or records the failure.
    async fn reconnect(&mut self) -> Result<()> {
        // (A `Retry-After` is kept even when the call that heard it was given up before the
        // failure was counted.)
        if self.failures > 0 || self.asked_until.is_some() {
            let pause = Duration::from_millis(200 * 2_u64.pow(self.failures.min(5))).min(MAX_PAUSE);
            let now = tokio::time::Instant::now();
            let asked = self.asked_until.unwrap_or(now);
            let resume_at = *self.resume_at.get_or_insert((now + pause).max(asked));
            tokio::time::sleep_until(resume_at).await;
        }
        self.resume_at = None;
        self.asked_until = None;
        match self.connect().await {
            Ok(response) => {
                self.response = Some(response);
                self.connected_at = std::time::Instant::now();
                self.delivered = false;
                self.buffer.clear();
                Ok(())
            }
            Err(error) => {
                self.failures += 1;
                self.ended = !retryable(&error);
                Err(error)
            }
        }
    }

    /// Reads the next chunk of the connection into the buffer. A connection the server closed
    /// (it stopped, or this consumer fell behind) or one idle too long is dropped, to resume by
    /// id at the next connection; a transport failure is recorded and returned, and so is a
    /// message too long to hold, which ends the stream.
    async fn read_more(&mut self) -> Result<()> {
        let Some(response) = self.response.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(self.idle, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                self.buffer.push(&bytes);
                if self.buffer.overflowed() {
                    self.response = None;
                    self.ended = true;
                    return Err(ClientError::MessageTooLong { limit: MAX_MESSAGE });
                }
            }
            Ok(Ok(None)) | Err(_) => self.dropped(false),
            Ok(Err(e)) => {
                self.dropped(true);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Forgets a connection that ended (`failed`: with a transport error). One that delivered
    /// an event or lasted [`HEALTHY`] ended normally, and the next is made at once (after a
    /// short pause if it failed); any other counts as one failure more, and the pause before
    /// the next grows.
    fn dropped(&mut self, failed: bool) {
        self.response = None;
        let healthy = self.delivered || self.connected_at.elapsed() >= HEALTHY;
        self.failures = match (healthy, failed) {
            (true, false) => 0,
            (true, true) => 1,
            (false, _) => self.failures + 1,
        };
    }

    /// Whether the buffer holds a whole first message; if that is the server's opening
    /// message (only `id:`, where the stream starts), it is taken and its id noted.
    fn first_message_read(&mut self) -> bool {
        while let Some(first) = self.buffer.peek() {
            let text = String::from_utf8_lossy(first).into_owned();
            if let Some(start) = start_id(&text) {
                self.buffer.take();
                self.note_start(start);
                return true;
            }
            // An event: `next` takes it, and with it where the stream is.
            if text.lines().any(|line| line.starts_with("data:")) {
                return true;
            }
            // A comment or an empty message (something in between that greets first): it
            // says nothing of where the stream starts, so the server's message is waited for.
            self.buffer.take();
        }
        false
    }

    /// Resumes after `start` unless the stream already delivered later events.
    fn note_start(&mut self, start: u64) {
        if self.last.is_none_or(|last| start > last) {
            self.last = Some(start);
        }
    }

    async fn connect(&mut self) -> Result<reqwest::Response> {
        let mut query = self.query.clone();
        query.after = None;
        query.limit = 0;
        let mut path = paths::EVENT_STREAM.to_owned();
        let filters = query.to_query();
        if !filters.is_empty() {
            path = format!("{path}?{filters}");
        }
        let mut request = self
            .client
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            // The whole-request timeout of the client does not fit a stream that never ends.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(last) = self.last {
            request = request.header("last-event-id", last.to_string());
        }
        // The idle bound holds while the answer's head is awaited too: a server out of
        // connections, or a half-open one, is asked again rather than waited for forever.
        let response = tokio::time::timeout(IDLE, request.send())
            .await
            .map_err(|_| ClientError::NoAnswer { waited: IDLE })??;
        if !response.status().is_success() {
            self.asked_until = crate::asked_pause(&response)
                .map(|asked| tokio::time::Instant::now() + asked.min(MAX_ASKED_PAUSE));
            // The refusal's body is read within the idle bound too (a proxy's page that stalls).
            return Err(tokio::time::timeout(IDLE, self.client.error_of(response))
                .await
                .unwrap_or(ClientError::NoAnswer { waited: IDLE }));
        }
        // A wrong URL whose server answers every path (a web app's page, a proxy's sign-in)
        // is no stream: said once, not reconnected to forever.
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if kind.starts_with("text/event-stream") {
            self.idle = idle_for(&response);
            return Ok(response);
        }
        Err(ClientError::UnexpectedBody {
            status: response.status(),
            text: format!(
                "not an event stream (content type '{kind}'): is the URL the orchestrator's?"
            ),
        })
    }

    /// Parses the next whole message in the buffer, skipping comments and heartbeats.
    fn take_buffered(&mut self) -> Option<Result<CloudEvent>> {
        loop {
            let message = self.buffer.take()?;
            let text = String::from_utf8_lossy(&message);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                if let Some(start) = start_id(&text) {
                    self.note_start(start);
                }
                continue;
            }
            let data = data.join("\n");
            let decoded = match serde_json::from_str::<CloudEvent>(&data) {
                // An event of a type this version knows that does not decode is a misfit (a
                // bug on one side): it ends the stream, as it fails a page, rather than being
                // passed over with a warning.
                Err(source)
                    if !serde_json::from_str(&data).is_ok_and(|event| of_unknown_type(&event)) =>
                {
                    self.response = None;
                    self.ended = true;
                    return Some(Err(ClientError::Decode {
                        status: reqwest::StatusCode::OK,
                        source,
                    }));
                }
                decoded => decoded,
            };
            // An event of a type this version does not know (a newer server's) is passed over
            // once: its id comes from the message's `id:` line.
            let id = match &decoded {
                Ok(event) => Some(event.seq()),
                Err(_) => message_id(&text),
            };
            // A resumed stream never repeats an event; this guards against a server that would.
            if id.is_some_and(|id| self.last.is_some_and(|last| id <= last)) {
                continue;
            }
            if id.is_some() {
                self.last = id;
            }
            self.delivered = true;
            return Some(decoded.map_err(|source| ClientError::UnreadableEvent { id, source }));
        }
    }
}

/// The bytes of a stream not yet taken as whole messages, with every line ending (`\r\n`,
/// `\r` or `\n`: the event-stream format allows all three) stored as `\n`, so a message ends
/// at the first `\n\n`.
#[derive(Debug, Default)]
struct Messages {
    bytes: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` opening the next belongs to it.
    after_cr: bool,
    /// How far the search for a message's end has looked without finding one.
    searched: usize,
}

impl Messages {
    /// Appends a chunk as it came off the connection.
    fn push(&mut self, chunk: &[u8]) {
        if !self.after_cr && !chunk.contains(&b'\r') {
            self.bytes.extend_from_slice(chunk);
            return;
        }
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' => {
                    self.bytes.push(b'\n');
                    self.after_cr = true;
                }
                other => {
                    self.bytes.push(other);
                    self.after_cr = false;
                }
            }
        }
    }

    /// Where the first whole message ends (before its blank line), looking only at bytes not
    /// searched before.
    fn end(&mut self) -> Option<usize> {
        let from = self.searched.saturating_sub(1);
        match self.bytes[from..].windows(2).position(|w| w == b"\n\n") {
            Some(at) => Some(from + at),
            None => {
                self.searched = self.bytes.len();
                None
            }
        }
    }

    /// The first whole message, left in place.
    fn peek(&mut self) -> Option<&[u8]> {
        let end = self.end()?;
        Some(&self.bytes[..end])
    }

    /// Takes the first whole message.
    fn take(&mut self) -> Option<Vec<u8>> {
        let end = self.end()?;
        let mut message: Vec<u8> = self.bytes.drain(..end + 2).collect();
        message.truncate(end);
        self.searched = 0;
        Some(message)
    }

    /// Whether an unfinished message outgrew [`MAX_MESSAGE`].
    fn overflowed(&mut self) -> bool {
        self.bytes.len() > MAX_MESSAGE && self.end().is_none()
    }

    fn clear(&mut self) {
        *self = Messages::default();
    }
}

/// How long a stream may stay silent before it is given up: four of the heartbeats the server
/// says it sends (`Event-Heartbeat-Seconds`), never less than [`IDLE`] (a server that does not
/// say, or says something else, is given that) nor more than [`MOST_IDLE`] (four of the
/// longest heartbeat a server may be set to: a header saying more is not believed).
fn idle_for(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(HEARTBEAT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(IDLE, |seconds| {
            Duration::from_secs(seconds.saturating_mul(4)).clamp(IDLE, MOST_IDLE)
        })
}

/// The id of a message with an `id:` line and no `data:` (the server's opening message).
fn start_id(message: &str) -> Option<u64> {
    if message.lines().any(|line| line.starts_with("data:")) {
        return None;
    }
    message_id(message)
}

/// The number on a message's `id:` line.
fn message_id(message: &str) -> Option<u64> {
    message
        .lines()
        .find_map(|line| line.strip_prefix("id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// Whether an event (as JSON) names a type this version does not know (a newer server's): the
/// one misfit a page leaves out and a stream passes over, where any other fails them.
pub(crate) fn of_unknown_type(event: &serde_json::Value) -> bool {
    event
        .get("type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|kind| EventType::parse(kind).is_none())
}

/// Whether a failed connection is worth trying again: transport failures, 5xx, 408 and 429
/// (a proxy's timeout or rate limit) are; the server's refusals (400, 401, 403, 410) are not.
pub(crate) fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Api { status, .. } | ClientError::UnexpectedBody { status, .. } => {
            status.is_server_error()
                || *status == reqwest::StatusCode::REQUEST_TIMEOUT
                || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
        }
        ClientError::Transport(_) | ClientError::NoAnswer { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{MAX_MESSAGE, Messages, start_id};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A server that answers every request with `body` (an event stream when `stream`, else
    /// JSON) and closes the connection.
    fn closing_server_with(body: String, stream: bool) -> (String, Arc<AtomicUsize>) {
        let kind = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        crate::tests::scripted(vec![(200, kind, body)])
    }

    /// A server that answers every stream with its opening message and closes it at once.
    fn closing_server() -> (String, Arc<AtomicUsize>) {
        closing_server_with("id: 5\n\n".to_owned(), true)
    }

    /// An event of `type` as the server sends it, with id `id`.
    pub(crate) fn event_json(id: u64, kind: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"orchestrator","type":"{kind}","subject":"f","time":"2026-12-06T00:00:00Z","datacontenttype":"application/json","data":{{}}}}"#
        )
    }

    /// A server that answers every stream with its opening message, saying its heartbeats are
    /// `heartbeat` seconds apart, and then holds the connection open, silent.
    async fn silent_server(heartbeat: u64) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     event-heartbeat-seconds: {heartbeat}\r\ntransfer-encoding: chunked\r\n\r\n\
                     7\r\nid: 5\n\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                held.push(socket);
            }
        });
        (address, connections)
    }

    /// A server whose heartbeats are further apart than the stream's own idle bound says so,
    /// and the stream waits for four of them before it takes the silence for a dead
    /// connection; a server with the default heartbeat keeps the minute.
    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_for_the_heartbeats_the_server_says_it_sends() {
        // Ninety seconds apart: six minutes of silence is waited out. Five: not less than a
        // minute still. Absurdly far apart: four hours at most.
        for (heartbeat, silent_for, connections_then) in [
            (90, 300, 1),
            (15, 70, 2),
            (5, 50, 1),
            (5, 70, 2),
            (u64::MAX, 4 * 3600 + 60, 2),
        ] {
            let (address, connections) = silent_server(heartbeat).await;
            let client = crate::Client::new(address).unwrap();
            let mut stream = client.stream_events(Default::default());
            let next = tokio::time::timeout(Duration::from_secs(silent_for), stream.next()).await;
            assert!(next.is_err(), "no event ever comes: {next:?}");
            assert_eq!(
                connections.load(Ordering::SeqCst),
                connections_then,
                "heartbeats {heartbeat} s apart, {silent_for} s of silence"
            );
            assert_eq!(stream.last_event_id(), Some(5));
        }
    }

    #[tokio::test]
    async fn a_server_that_closes_every_stream_at_once_is_asked_again_after_growing_pauses() {
        let (address, connections) = closing_server();
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        let next = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
        assert!(next.is_err(), "no event ever comes");
        // At once, then after 0.4 s and 1.2 s (the pauses double): not a connection a moment.
        let made = connections.load(Ordering::SeqCst);
        assert!((2..=4).contains(&made), "{made} connections in 1.5 s");
        assert_eq!(stream.last_event_id(), Some(5));
    }

    #[tokio::test]
    async fn a_proxy_s_rate_limit_is_waited_out_as_long_as_it_asks_and_the_stream_goes_on() {
        let (address, connections) = crate::tests::scripted(vec![
            (
                429,
                "text/html\r\nretry-after: 4",
                "<html>slow down</html>".to_owned(),
            ),
            (200, "text/event-stream", "id: 5\n\n".to_owned()),
        ]);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        let limited = stream.next().await.unwrap();
        let refused_at = std::time::Instant::now();
        assert!(
            matches!(&limited, Err(crate::ClientError::UnexpectedBody { status, .. }) if status.as_u16() == 429),
            "{limited:?}"
        );
        // Not before the 4 s asked for (the stream's own first pause is 0.4 s), also when the
        // caller gives up waiting in between and calls again. (Judged only while under 4 s
        // have passed: a machine too busy to wake this test in time says nothing either way.)
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
            let count = connections.load(Ordering::SeqCst);
            assert!(next.is_err(), "nothing comes");
            if refused_at.elapsed() < Duration::from_millis(3900) {
                assert_eq!(count, 1, "not asked again yet");
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(2500), stream.next()).await;
        assert!(next.is_err(), "no event ever comes");
        assert!(
            connections.load(Ordering::SeqCst) >= 2,
            "asked again: the stream goes on"
        );
        assert_eq!(stream.last_event_id(), Some(5));
    }

    #[tokio::test]
    async fn a_growing_pause_is_waited_out_across_callers_that_give_up_sooner() {
        let (address, connections) =
            crate::tests::scripted(vec![(503, "text/html", "<html>busy</html>".to_owned())]);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        // A caller that waits 1 s at a time: the pauses (0.4, 0.8, 1.6, 3.2 s) go on across
        // its calls, so the fifth connection is made about 6 s in (not never: a pause longer
        // than the caller's wait, begun anew at each call, would never end).
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_secs(8) {
            let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            if let Ok(item) = next {
                assert!(item.is_some_and(|item| item.is_err()), "503s only");
            }
        }
        let made = connections.load(Ordering::SeqCst);
        assert!(made >= 5, "{made} connections in 8 s");
    }

    #[tokio::test]
    async fn an_answer_that_is_no_event_stream_ends_the_stream_at_once() {
        let (address, connections) = closing_server_with("<html>sign in</html>".to_owned(), false);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        let refused = stream.next().await.unwrap();
        assert!(
            matches!(&refused, Err(crate::ClientError::UnexpectedBody { text, .. }) if text.contains("not an event stream")),
            "{refused:?}"
        );
        assert!(stream.next().await.is_none(), "the stream ended");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not asked again");
    }

    /// Something in between that greets with a comment first: `attach` still waits for the
    /// server's message naming where the stream starts, so a reconnect before the first event
    /// resumes from there, not from "now".
    #[tokio::test]
    async fn attach_passes_over_a_comment_before_the_servers_first_message() {
        let body = format!(
            ": proxy says hello\n\nid: 5\n\nid: 6\ndata: {}\n\n",
            event_json(6, "gate.overdue")
        );
        let (address, _) = closing_server_with(body, true);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        stream.attach().await.unwrap();
        assert_eq!(stream.last_event_id(), Some(5));
        assert_eq!(stream.next().await.unwrap().unwrap().seq(), 6);
    }

    #[tokio::test]
    async fn an_event_of_a_type_this_version_does_not_know_is_reported_once_and_passed() {
        let body = [
            (1, "gate.overdue"),
            (2, "workflow.archived"),
            (3, "gate.overdue"),
        ]
        .map(|(id, kind)| format!("id: {id}\ndata: {}\n\n", event_json(id, kind)))
        .concat();
        let (address, connections) = closing_server_with(body, true);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        assert_eq!(stream.next().await.unwrap().unwrap().seq(), 1);
        let unreadable = stream.next().await.unwrap();
        assert!(
            matches!(
                unreadable,
                Err(crate::ClientError::UnreadableEvent { id: Some(2), .. })
            ),
            "{unreadable:?}"
        );
        let said = unreadable.unwrap_err().to_string();
        assert!(
            said.starts_with("cannot read event 2 of the stream"),
            "{said}"
        );
        assert_eq!(stream.last_event_id(), Some(2));
        assert_eq!(stream.next().await.unwrap().unwrap().seq(), 3);
        // Every reconnection sends the three again: none is reported a second time.
        let next = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
        assert!(next.is_err(), "nothing more comes: {next:?}");
        assert!(connections.load(Ordering::SeqCst) >= 2, "it reconnected");
    }

    #[tokio::test]
    async fn an_event_of_a_known_type_that_does_not_decode_ends_the_stream() {
        let broken = event_json(2, "gate.overdue").replace(r#""subject":"f""#, r#""subject":7"#);
        let body = format!(
            "id: 1\ndata: {}\n\nid: 2\ndata: {broken}\n\nid: 3\ndata: {}\n\n",
            event_json(1, "gate.overdue"),
            event_json(3, "gate.overdue")
        );
        let (address, _) = closing_server_with(body, true);
        let client = crate::Client::new(address).unwrap();
        let mut stream = client.stream_events(Default::default());
        assert_eq!(stream.next().await.unwrap().unwrap().seq(), 1);
        let failed = stream.next().await.unwrap();
        assert!(
            matches!(failed, Err(crate::ClientError::Decode { .. })),
            "{failed:?}"
        );
        assert!(stream.next().await.is_none(), "the stream ended");
        assert_eq!(stream.last_event_id(), Some(1), "not passed over");
    }

    #[tokio::test]
    async fn a_page_leaves_out_the_events_this_version_cannot_read_and_pages_past_them() {
        let items = [
            (7, "consultation.created"),
            (8, "workflow.archived"),
            (9, "gate.overdue"),
        ]
        .map(|(id, kind)| event_json(id, kind))
        .join(",");
        let (address, _) =
            closing_server_with(format!(r#"{{"items":[{items}],"next_after":"9"}}"#), false);
        let client = crate::Client::new(address).unwrap();
        let query = Default::default();
        let (page, unreadable) = client.list_events_reporting(&query).await.unwrap();
        let ids: Vec<u64> = page.items.iter().map(|e| e.seq()).collect();
        assert_eq!(ids, [7, 9]);
        assert_eq!(unreadable, ["8"]);
        assert_eq!(page.next_after, "9");
        assert_eq!(client.list_events(&query).await.unwrap(), page);
        // A known type that does not decode is the page's error, not left out.
        let broken = event_json(7, "gate.overdue").replace(r#""subject":"f""#, r#""subject":7"#);
        let (address, _) =
            closing_server_with(format!(r#"{{"items":[{broken}],"next_after":"7"}}"#), false);
        let client = crate::Client::new(address).unwrap();
        let failed = client.list_events(&query).await;
        assert!(
            matches!(failed, Err(crate::ClientError::Decode { .. })),
            "{failed:?}"
        );
    }

    fn messages(chunks: &[&[u8]]) -> Vec<String> {
        let mut buffer = Messages::default();
        let mut taken = Vec::new();
        for chunk in chunks {
            buffer.push(chunk);
            while let Some(message) = buffer.take() {
                taken.push(String::from_utf8(message).unwrap());
            }
        }
        taken
    }

    #[test]
    fn every_line_ending_the_format_allows_ends_a_message() {
        let expected = ["id: 1\ndata: a", ": heartbeat", "id: 2\ndata: b\ndata: c"];
        for ending in ["\n", "\r\n", "\r"] {
            let stream = format!(
                "id: 1{e}data: a{e}{e}: heartbeat{e}{e}id: 2{e}data: b{e}data: c{e}{e}",
                e = ending
            );
            // Whole, and cut at every byte (a CR and its LF in different chunks included).
            assert_eq!(messages(&[stream.as_bytes()]), expected, "{ending:?}");
            for cut in 1..stream.len() {
                let (head, tail) = stream.as_bytes().split_at(cut);
                assert_eq!(messages(&[head, tail]), expected, "{ending:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_message_that_never_ends_is_noticed_once_it_is_too_long() {
        let mut buffer = Messages::default();
        buffer.push(b"data: ");
        let chunk = vec![b'x'; 64 * 1024];
        while buffer.bytes.len() <= MAX_MESSAGE {
            assert!(!buffer.overflowed());
            buffer.push(&chunk);
        }
        assert!(buffer.overflowed());
        // One that long but whole is taken.
        buffer.push(b"\n\n");
        assert!(!buffer.overflowed());
        assert!(buffer.take().is_some_and(|m| m.len() > MAX_MESSAGE));
    }

    #[test]
    fn only_a_message_with_an_id_and_no_data_names_the_start() {
        assert_eq!(start_id("id: 41"), Some(41));
        assert_eq!(start_id("id:41"), Some(41));
        assert_eq!(
            start_id("id: 42\nevent: workflow.transitioned\ndata: {}"),
            None
        );
        assert_eq!(start_id(": heartbeat"), None);
        assert_eq!(start_id("id: soon"), None);
    }
}
