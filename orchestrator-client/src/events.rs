//! The event log from the client's side: [`EventStream`], a stream of events that reconnects
//! and resumes after the last id it delivered.

use std::time::Duration;

use orchestrator_core::api::{CloudEvent, EventsQuery, paths};
use reqwest::Method;

use crate::{Client, ClientError, Result};

/// How long a stream waits for any byte (an event or the server's heartbeat) before it
/// reconnects: four default heartbeats.
const IDLE: Duration = Duration::from_secs(60);
/// Longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The events of `GET /events/stream`, one at a time, resumed by id across disconnects and
/// server restarts. Made by [`Client::stream_events`].
///
/// [`EventStream::next`] gives each event once, in id order. A transport failure or a 5xx
/// comes back as an `Err` item and the next call reconnects (after a pause, sending
/// `Last-Event-ID`); an error the server means (400, 401, 409 `EVENTS_CURSOR_AHEAD`, 410
/// `EVENTS_EXPIRED`) ends the stream after it is returned.
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
    buffer: Vec<u8>,
    failures: u32,
    ended: bool,
}

impl EventStream {
    pub(crate) fn new(client: Client, query: EventsQuery) -> Self {
        EventStream {
            client,
            last: query.after,
            query,
            response: None,
            buffer: Vec::new(),
            failures: 0,
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
        if self.failures > 0 {
            let pause = Duration::from_millis(200 * 2_u64.pow(self.failures.min(5)));
            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
        }
        match self.connect().await {
            Ok(response) => {
                self.response = Some(response);
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
    /// id at the next connection; a transport failure is recorded and returned.
    async fn read_more(&mut self) -> Result<()> {
        let Some(response) = self.response.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(IDLE, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                self.failures = 0;
                self.buffer.extend_from_slice(&bytes);
            }
            Ok(Ok(None)) | Err(_) => self.response = None,
            Ok(Err(e)) => {
                self.response = None;
                self.failures += 1;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Whether the buffer holds a whole first message; if that is the server's opening
    /// message (only `id:`, where the stream starts), it is taken and its id noted.
    fn first_message_read(&mut self) -> bool {
        let Some(end) = message_end(&self.buffer) else {
            return false;
        };
        if let Some(start) = start_id(&String::from_utf8_lossy(&self.buffer[..end])) {
            self.buffer.drain(..end + 2);
            self.note_start(start);
        }
        true
    }

    /// Resumes after `start` unless the stream already delivered later events.
    fn note_start(&mut self, start: u64) {
        if self.last.is_none_or(|last| start > last) {
            self.last = Some(start);
        }
    }

    async fn connect(&self) -> Result<reqwest::Response> {
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
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.client.error_of(response).await)
    }

    /// Parses the next whole message in the buffer, skipping comments and heartbeats.
    fn take_buffered(&mut self) -> Option<Result<CloudEvent>> {
        loop {
            let end = message_end(&self.buffer)?;
            let message: Vec<u8> = self.buffer.drain(..end + 2).collect();
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
            let event: CloudEvent = match serde_json::from_str(&data.join("\n")) {
                Ok(event) => event,
                Err(source) => {
                    return Some(Err(ClientError::Decode {
                        status: reqwest::StatusCode::OK,
                        source,
                    }));
                }
            };
            // A resumed stream never repeats an event; this guards against a server that would.
            if self.last.is_some_and(|last| event.seq() <= last) {
                continue;
            }
            self.last = Some(event.seq());
            return Some(Ok(event));
        }
    }
}

/// Where the first whole SSE message in `buffer` ends (before its blank line).
fn message_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n")
}

/// The id of a message with an `id:` line and no `data:` (the server's opening message).
fn start_id(message: &str) -> Option<u64> {
    if message.lines().any(|line| line.starts_with("data:")) {
        return None;
    }
    message
        .lines()
        .find_map(|line| line.strip_prefix("id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// Whether a failed connection is worth trying again: transport failures and 5xx are; the
/// server's refusals (400, 401, 403, 410) are not.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Api { status, .. } | ClientError::UnexpectedBody { status, .. } => {
            status.is_server_error()
        }
        ClientError::Transport(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::start_id;

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
