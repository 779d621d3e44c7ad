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
/// `Last-Event-ID`); an error the server means (400, 401, 410 `EVENTS_EXPIRED`) ends the
/// stream after it is returned.
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

    /// The id of the last event delivered (or the `after` the stream started from).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last
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
            if self.response.is_none() {
                if self.failures > 0 {
                    let pause = Duration::from_millis(200 * 2_u64.pow(self.failures.min(5)));
                    tokio::time::sleep(pause.min(MAX_PAUSE)).await;
                }
                match self.connect().await {
                    Ok(response) => {
                        self.response = Some(response);
                        self.buffer.clear();
                    }
                    Err(error) => {
                        self.failures += 1;
                        self.ended = !retryable(&error);
                        return Some(Err(error));
                    }
                }
            }
            let Some(response) = self.response.as_mut() else {
                continue;
            };
            match tokio::time::timeout(IDLE, response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    self.failures = 0;
                    self.buffer.extend_from_slice(&bytes);
                }
                // The server closed the stream (it stopped, or this consumer fell behind):
                // resume by id.
                Ok(Ok(None)) | Err(_) => self.response = None,
                Ok(Err(e)) => {
                    self.response = None;
                    self.failures += 1;
                    return Some(Err(e.into()));
                }
            }
        }
    }

    /// Turns the stream into a `futures` `Stream`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<CloudEvent>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            stream.next().await.map(|item| (item, stream))
        })
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
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let message: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&message);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
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
