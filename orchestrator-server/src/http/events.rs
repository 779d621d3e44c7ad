//! The event log over HTTP: `GET /events` (a page) and `GET /events/stream` (server-sent
//! events), and the feed behind every stream.
//!
//! One task per server (`Feed::run`) reads the log every [`POLL_EVERY`] after the last id it
//! saw and broadcasts each new event once, already encoded as an SSE message; the log gives
//! ids in commit order with no gaps, so reading "after the last id" never skips one, whichever
//! replica wrote it. A stream first subscribes to the broadcast, then reads the log from its
//! resume point until it is caught up, then forwards the broadcast, skipping ids it sent. Each
//! stream has a small queue toward its connection; a consumer that falls behind the broadcast
//! (a slow reader) is disconnected and resumes by id, so memory stays bounded.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Frame};
use orchestrator_core::api::{CloudEvent, EventsQuery, EventsResponse};
use orchestrator_core::{Event, EventFilter, EventType, FeatureId, Orchestrator};
use tokio::sync::{broadcast, mpsc, watch};

use super::App;
use super::body::json_response;
use super::error::{ApiError, Result};

/// How often the feed reads the log: a stream delivers an event committed through any replica
/// within this (plus the read's own time).
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// Events one read of the log takes; the feed reads again at once while pages are full.
const READ_BATCH: u32 = 1000;
/// Events the broadcast keeps for streams that are behind; a stream further behind is
/// disconnected.
const BROADCAST_CAPACITY: usize = 4096;
/// Encoded messages queued toward one connection.
const STREAM_QUEUE: usize = 64;

/// What a stream and its filters need of a new event: its id, type, subject and its SSE
/// message, encoded once for every stream.
#[derive(Debug)]
pub struct FeedEvent {
    id: u64,
    event_type: EventType,
    subject: FeatureId,
    message: Bytes,
}

impl FeedEvent {
    fn new(event: &Event) -> Self {
        FeedEvent {
            id: event.id,
            event_type: event.event.event_type,
            subject: event.event.subject.clone(),
            message: sse_message(event),
        }
    }

    fn passes(&self, filter: &EventFilter) -> bool {
        filter.admits(self.event_type, &self.subject)
    }
}

/// One SSE message: `id:`, `event:`, and the CloudEvent on one `data:` line.
fn sse_message(event: &Event) -> Bytes {
    let json = serde_json::to_string(&CloudEvent::from(event)).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        event.id, event.event.event_type
    ))
}

/// The broadcast of new events every stream of this server listens to.
pub struct Feed {
    sender: broadcast::Sender<Arc<FeedEvent>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            sender: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }
}

impl Feed {
    /// Reads the log every [`POLL_EVERY`] and broadcasts what is new, until `stop` turns true.
    pub async fn run(&self, orchestrator: Orchestrator, mut stop: watch::Receiver<bool>) {
        let mut last = loop {
            match orchestrator.last_event_id().await {
                Ok(last) => break last,
                Err(e) => tracing::warn!(error = %e, "the event feed cannot read the log yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        };
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if self.sender.receiver_count() == 0 {
                // Nobody streams: skip ahead instead of reading and encoding every event. A
                // stream that subscribes after the newest id was read reads the log itself up
                // to at least that id; one that subscribed meanwhile keeps the feed where it
                // was (checked again after the read), so nothing between is skipped.
                match orchestrator.last_event_id().await {
                    Ok(newest) if self.sender.receiver_count() == 0 => {
                        last = newest;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the event feed could not read the log");
                        continue;
                    }
                }
            }
            loop {
                let page = match orchestrator
                    .events(Some(last), &EventFilter::default(), READ_BATCH)
                    .await
                {
                    Ok(page) => page,
                    Err(orchestrator_core::Error::EventsExpired { purged_through, .. }) => {
                        // Retention overtook the feed (it was stopped for longer than the
                        // retention): streams resume by id and get 410 themselves.
                        last = purged_through;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the event feed could not read the log");
                        break;
                    }
                };
                let full = page.events.len() == READ_BATCH as usize;
                for event in &page.events {
                    // No receiver is fine: nobody is streaming.
                    let _ = self.sender.send(Arc::new(FeedEvent::new(event)));
                }
                last = page.next_after;
                if !full {
                    break;
                }
            }
        }
    }
}

/// The events after `after` (or from the oldest retained one), filtered, one page.
#[utoipa::path(
    get, path = "/events", tag = "events", operation_id = "list_events",
    params(
        ("after" = Option<String>, Query, description = "only events with a greater id (a whole number); absent: from the oldest retained event"),
        ("limit" = Option<u32>, Query, description = "page size, 1–1000 (100 when absent)"),
        ("feature_id" = Option<String>, Query, description = "only this workflow's events"),
        ("type" = Option<String>, Query, description = "only these types, comma-separated: workflow.transitioned, gate.overdue, consultation.created, consultation.updated"),
    ),
    responses(
        (status = 200, description = "the page, in id order; `next_after` is the last item's id (the given `after` on an empty page)", body = EventsResponse,
         example = json!(crate::http::openapi::examples::events())),
    ),
)]
pub async fn list_events(
    app: &App,
    query: Option<&str>,
) -> Result<Response<http_body_util::Full<Bytes>>> {
    let query = parse_query(query)?;
    let page = app
        .orchestrator()
        .events(query.after, &query.filter, query.limit)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &EventsResponse {
            items: page.events.iter().map(CloudEvent::from).collect(),
            next_after: page.next_after.to_string(),
        },
    ))
}

fn parse_query(query: Option<&str>) -> Result<EventsQuery> {
    let pairs = super::body::query_pairs(query);
    Ok(EventsQuery::parse_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

/// The events as server-sent events, from after `Last-Event-ID` (or `?after=`), else from now.
#[utoipa::path(
    get, path = "/events/stream", tag = "events", operation_id = "stream_events",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this id (wins over `after`)"),
        ("after" = Option<String>, Query, description = "resume after this id; with neither, only events from now on"),
        ("feature_id" = Option<String>, Query, description = "only this workflow's events"),
        ("type" = Option<String>, Query, description = "only these types, comma-separated"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: one message per event (`id:` its id, `event:` its type, `data:` the CloudEvent on one line), and a comment line every EVENTS_HEARTBEAT_SECONDS. A consumer that falls too far behind is disconnected and resumes by id.", content_type = "text/event-stream", body = String,
         example = json!(crate::http::openapi::examples::stream())),
    ),
)]
pub async fn stream_events(
    app: &App,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<SseBody>> {
    let mut query = parse_query(query)?;
    if let Some(value) = headers.get("last-event-id") {
        let id = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::Validation(orchestrator_core::ValidationError::new(
                    "Last-Event-ID",
                    "must be an event id (a whole number)",
                ))
            })?;
        query.after = Some(id);
    }
    let feed = app.feed();
    // Subscribe before reading the log: whatever the feed broadcasts from now on is seen here,
    // and whatever it broadcast before is in the log read below.
    let live = feed.sender.subscribe();
    let start = match query.after {
        Some(after) => after,
        None => app.orchestrator().last_event_id().await?,
    };
    // The first page is read now, so a resume point retention passed is a 410, not a stream.
    let first = app
        .orchestrator()
        .events(Some(start), &query.filter, READ_BATCH)
        .await?;
    let (queue, messages) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(forward(app.clone(), query.filter, first, live, queue));
    let mut response = Response::new(SseBody { messages });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Sends one stream's messages until its consumer leaves, falls behind, or the server stops.
async fn forward(
    app: App,
    filter: EventFilter,
    first: orchestrator_core::EventPage,
    mut live: broadcast::Receiver<Arc<FeedEvent>>,
    queue: mpsc::Sender<Bytes>,
) {
    let mut stop = app.closing();
    let orchestrator = app.orchestrator().clone();
    // Catch up from the log.
    let mut sent = first.next_after;
    let mut page = first;
    loop {
        let full = page.events.len() == READ_BATCH as usize;
        for event in &page.events {
            if queue.send(sse_message(event)).await.is_err() {
                return;
            }
        }
        if !full {
            break;
        }
        page = match orchestrator.events(Some(sent), &filter, READ_BATCH).await {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(error = %e, "a stream could not catch up; it ends");
                return;
            }
        };
        sent = page.next_after;
    }
    // Then live.
    let mut heartbeat = tokio::time::interval(app.limits().events.heartbeat);
    heartbeat.reset();
    loop {
        let message = tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.id > sent && event.passes(&filter) => {
                    sent = event.id;
                    event.message.clone()
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a stream fell behind; disconnected to resume by id");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            _ = stop.wait_for(|stop| *stop) => return,
        };
        if queue.send(message).await.is_err() {
            return;
        }
    }
}

/// The body of a stream: the messages its task sends, as they come.
pub struct SseBody {
    messages: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.messages
            .poll_recv(cx)
            .map(|message| message.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// How long events are kept and how often a quiet stream hears a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPolicy {
    /// Events older than this are deleted (the sweep runs once a minute).
    pub retention: Duration,
    /// A comment line is sent on a quiet stream this often.
    pub heartbeat: Duration,
}

impl Default for EventPolicy {
    fn default() -> Self {
        EventPolicy {
            retention: Duration::from_secs(604_800),
            heartbeat: Duration::from_secs(15),
        }
    }
}
