//! The event log over HTTP: `GET /events` (a page) and `GET /events/stream` (server-sent
//! events), and the feed behind every stream.
//!
//! One task per server (`Feed::run`) reads the log every [`POLL_EVERY`] after the last id it
//! saw and broadcasts what it read once, as batches already encoded as SSE messages (a stream
//! writes a batch as one chunk, not one write per event); the log gives
//! ids in commit order with no gaps, so reading "after the last id" never skips one, whichever
//! replica wrote it. A stream waits for the feed's first read of the log (where the
//! broadcast starts), then subscribes to the broadcast, sends its start point (a
//! message with only `id:`), then reads the log from there until it is caught up (beating,
//! with its position, while that takes long), then forwards the broadcast, skipping ids it
//! sent. Each stream has a small queue toward its connection (bounded in chunks and in bytes,
//! `stream_queue`); a consumer that falls behind the
//! broadcast (a slow reader) is told its position and disconnected, and resumes by id, so
//! memory stays bounded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Frame};
use orchestrator_core::api::{CloudEvent, EventsQuery, EventsResponse};
use orchestrator_core::{Event, EventFilter, EventType, FeatureId, Orchestrator};
use tokio::sync::{broadcast, watch};

use super::stream_queue;

use super::App;
use super::body::json_response;
use super::error::{ApiError, Result};

/// How often the feed reads the log: a stream delivers an event committed through any replica
/// within this (plus the read's own time).
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// The least time between two reads of the log: a change this server made wakes the feed,
/// which reads it no sooner than this after its last read, so a burst of changes is read (and
/// written to each stream) together.
pub const MIN_GAP: Duration = Duration::from_millis(20);
/// How long a stream opened before the feed knows where the log ends (the server just
/// started, and its first read of the log is still failing or slow) waits for it before it is
/// answered 503 `DATABASE_UNAVAILABLE`.
const FEED_START_WAIT: Duration = Duration::from_secs(5);
/// Events one read of the log takes; the feed reads again at once while pages are full.
const READ_BATCH: u32 = 1000;
/// Most events the feed broadcasts as one batch.
const BATCH_EVENTS: usize = 256;
/// About the most bytes of event data in one batch the feed broadcasts, or one chunk of a
/// stream's catch-up, besides their counts: events may be hundreds of kilobytes each (a
/// hub's answer, a transition's metadata), and the broadcast keeps [`BROADCAST_CAPACITY`]
/// batches, a stream [`STREAM_QUEUE`] chunks. A run stops after the event that reaches it.
const RUN_BYTES: usize = 256 * 1024;
/// Batches the broadcast keeps for streams that are behind (a few seconds of events of
/// ordinary size at any rate, less of large ones, whose batches are smaller; the batches are
/// shared, so this bounds memory whatever the number of streams); a stream further behind is
/// disconnected, and resumes from the log.
const BROADCAST_CAPACITY: usize = 64;
/// Chunks (each one or more messages) queued toward one connection.
const STREAM_QUEUE: usize = 64;
/// Streams' own reads of the log (the first page of one that resumes, and catch-up) run at
/// once, server-wide: a crowd of streams resuming from far back (consumers back after a
/// while, the streams of a replica that restarted) takes at most this many of the database's
/// connections, and leaves the rest to requests, the feed and the background work (each read
/// takes up to 1 000 events, megabytes where events carry large metadata).
const CATCH_UP_READS: usize = 2;
/// About the most bytes queued toward one connection (a chunk of more takes it all): a slow
/// reader of the largest events holds this, not [`STREAM_QUEUE`] runs of [`RUN_BYTES`].
const STREAM_BYTES: u32 = 1024 * 1024;
/// Longest a stream disconnected for falling behind waits for room to tell its position.
const PART_WAIT: Duration = Duration::from_secs(1);
/// Most events in one chunk of a stream's catch-up from the log. Those chunks are the
/// stream's own (encoded for it, unlike the feed's shared batches), so they are small: a slow
/// reader resuming from far back holds at most [`STREAM_QUEUE`] of them (about 2 000 small
/// events; of large ones, [`STREAM_BYTES`] at most) besides the page being
/// sent (about 4 MiB, more only when its events grow much larger as it reads them), where
/// chunks of [`BATCH_EVENTS`] let it hold 16 000.
const CATCH_UP_CHUNK: usize = 32;

/// `events` in runs of at most `most` events and about [`RUN_BYTES`] of data (each run holds
/// one event at least).
fn runs(events: &[Event], most: usize) -> impl Iterator<Item = &[Event]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len().min(most.max(1)) && bytes < RUN_BYTES {
            bytes += rest[end].event.data.len();
            end += 1;
        }
        let (run, after) = rest.split_at(end);
        rest = after;
        Some(run)
    })
}

/// Events the feed read together, encoded once for every stream: their SSE messages back to
/// back in one buffer, and what a stream's filters need of each (id, type, subject, where its
/// message lies). A stream without filters sends the whole buffer (a shared, zero-copy
/// chunk); one with filters sends slices of it.
#[derive(Debug)]
pub struct FeedBatch {
    messages: Bytes,
    events: Vec<FeedEvent>,
    /// Which of the feed's reads the batch comes from (counted from 1; 0 for a stream's own
    /// read), and the log's newest id as that read found it.
    read: u64,
    log_last: u64,
    /// Set on the batch that says retention deleted events before the feed read them: the
    /// last deleted id.
    purged_through: Option<u64>,
}

#[derive(Debug)]
struct FeedEvent {
    id: u64,
    event_type: EventType,
    subject: FeatureId,
    end: usize,
}

impl FeedBatch {
    fn new(events: &[Event]) -> Self {
        let mut messages = BytesMut::new();
        let events = events
            .iter()
            .map(|event| {
                messages.extend_from_slice(&sse_message(event));
                FeedEvent {
                    id: event.id,
                    event_type: event.event.event_type,
                    subject: event.event.subject.clone(),
                    end: messages.len(),
                }
            })
            .collect();
        FeedBatch {
            messages: messages.freeze(),
            events,
            read: 0,
            log_last: 0,
            purged_through: None,
        }
    }

    /// The same batch, from the feed's read number `read`, which found the log's newest id at
    /// `log_last`.
    fn read_by(mut self, read: u64, log_last: u64) -> Self {
        self.read = read;
        self.log_last = log_last;
        self
    }

    /// The batch that says the events through `purged_through` were deleted before the feed
    /// read them (retention overtook a feed that could not read the log for that long).
    fn purged(purged_through: u64) -> Self {
        FeedBatch {
            purged_through: Some(purged_through),
            ..FeedBatch::new(&[])
        }
    }

    /// Why a stream that has sent up to `sent` must end with this batch, if it must; `settled`
    /// is how many reads the feed had started when the stream had caught up from the log.
    ///
    /// - It missed events retention deleted: its client resumes by id to the 410 that says so.
    /// - The log went back below `sent` (its store restored from an older copy, or replaced):
    ///   the ids the stream waits for are given again, to new events it would skip; its resume
    ///   gets the 409 that says so. A read started after the stream caught up found a log at
    ///   least as long as the stream's, unless the log went back; an earlier read may have
    ///   found a shorter one (it is why the stream skips what it sent already), so only later
    ///   reads tell.
    fn ends(&self, sent: u64, settled: u64) -> Option<&'static str> {
        if self.purged_through.is_some_and(|through| through > sent) {
            return Some("a stream missed events retention deleted; disconnected to resume by id");
        }
        if self.read > settled && self.log_last < sent {
            return Some("a stream is past the newest event of a log that went back; disconnected");
        }
        None
    }

    /// The chunks a stream that has sent up to `sent` and keeps what `filter` admits sends
    /// of this batch (runs of admitted events as slices of the shared buffer), and the last
    /// id it covers, the events its filter left out included.
    fn chunks(&self, sent: u64, filter: &EventFilter) -> (Vec<Bytes>, u64) {
        let mut chunks = Vec::new();
        let mut run: Option<(usize, usize)> = None;
        let mut last = sent;
        let mut start = 0;
        for event in &self.events {
            let new = event.id > sent;
            if new {
                last = event.id;
            }
            if new && filter.admits(event.event_type, &event.subject) {
                run = Some(run.map_or((start, event.end), |(from, _)| (from, event.end)));
            } else if let Some((from, to)) = run.take() {
                chunks.push(self.messages.slice(from..to));
            }
            start = event.end;
        }
        if let Some((from, to)) = run {
            chunks.push(self.messages.slice(from..to));
        }
        (chunks, last)
    }
}

/// The message that opens every stream: only `id:`, the id the stream starts after. It carries
/// no data, so it is no event (an `EventSource` only takes it as its last event id). The end
/// of the catch-up from the log and a heartbeat send one too when the stream has read past
/// events its filter left out (see [`forward`]), so a filtered stream resumes from where it
/// read, not from its last matching event (which retention may have passed: a 410).
fn position_message(position: u64) -> Bytes {
    Bytes::from(format!("id: {position}\n\n"))
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
    sender: broadcast::Sender<Arc<FeedBatch>>,
    /// Set when this server changed something: the feed reads the log without waiting for its
    /// next poll.
    wake: tokio::sync::Notify,
    /// The reads of the log the feed has started (see `FeedBatch::ends`).
    reads: AtomicU64,
    /// The furthest id a stream's own catch-up sent, which may be past the feed's position:
    /// a read that finds nothing new but a log ending before it still says where the log
    /// ends, or a stream past that end would wait for ids the log gives again.
    furthest: AtomicU64,
    /// Turns true once the feed has read where the log ends. Streams subscribe only after: the
    /// feed broadcasts every event after that read, and a stream's own catch-up reads the log
    /// to at least there. (One subscribed before would be caught up to an id the feed's first
    /// read might pass: the events between would reach it from neither.)
    started: watch::Sender<bool>,
    /// The id the feed has broadcast through, once started: a feed started again (after a
    /// panic) goes on from here, not from the log's end, which would skip the events between.
    position: AtomicU64,
    /// Held by a stream's own read of the log ([`CATCH_UP_READS`] at once).
    catch_up: tokio::sync::Semaphore,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            sender: broadcast::channel(BROADCAST_CAPACITY).0,
            wake: tokio::sync::Notify::new(),
            reads: AtomicU64::new(0),
            furthest: AtomicU64::new(0),
            started: watch::Sender::new(false),
            position: AtomicU64::new(0),
            catch_up: tokio::sync::Semaphore::new(CATCH_UP_READS),
        }
    }
}

impl Feed {
    /// Says this server wrote events: the feed reads the log within [`MIN_GAP`] of its last
    /// read instead of at its next poll (other replicas' events wait for the poll).
    pub fn wake(&self) {
        if self.sender.receiver_count() > 0 {
            self.wake.notify_one();
        }
    }

    /// Keeps `last`, which the feed has broadcast through, as where a restart goes on from.
    fn moved_to(&self, last: u64) -> u64 {
        self.position.store(last, Ordering::SeqCst);
        last
    }

    /// Reads the log every [`POLL_EVERY`], and soon after [`Feed::wake`], and broadcasts what
    /// is new, until `stop` turns true. Started again, it goes on from where it was.
    pub async fn run(&self, orchestrator: Orchestrator, mut stop: watch::Receiver<bool>) {
        let mut last = if *self.started.borrow() {
            self.position.load(Ordering::SeqCst)
        } else {
            loop {
                match orchestrator.last_event_id().await {
                    Ok(last) => break self.moved_to(last),
                    Err(e) => {
                        tracing::warn!(error = %e, "the event feed cannot read the log yet");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        };
        self.started.send_replace(true);
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut read_at = tokio::time::Instant::now();
        loop {
            let woken = tokio::select! {
                _ = tick.tick() => false,
                () = self.wake.notified() => true,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            if woken {
                tokio::time::sleep_until(read_at + MIN_GAP).await;
            }
            read_at = tokio::time::Instant::now();
            if self.sender.receiver_count() == 0 {
                // Nobody streams: skip ahead instead of reading and encoding every event. A
                // stream that subscribes after the newest id was read reads the log itself up
                // to at least that id; one that subscribed meanwhile keeps the feed where it
                // was (checked again after the read), so nothing between is skipped.
                match orchestrator.last_event_id().await {
                    Ok(newest) if self.sender.receiver_count() == 0 => {
                        last = self.moved_to(newest);
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
                let read = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
                let page = match orchestrator
                    .events(Some(last), &EventFilter::default(), READ_BATCH)
                    .await
                {
                    Ok(page) => page,
                    Err(orchestrator_core::Error::EventsExpired { purged_through, .. }) => {
                        // Retention overtook the feed (it could not read the log for longer
                        // than the retention): the streams behind the deleted events end, to
                        // resume by id and get 410; the feed goes on after them.
                        tracing::warn!(
                            purged_through,
                            "events were deleted before the event feed read them; the streams behind them end"
                        );
                        let _ = self
                            .sender
                            .send(Arc::new(FeedBatch::purged(purged_through)));
                        last = self.moved_to(purged_through);
                        continue;
                    }
                    Err(orchestrator_core::Error::EventsAhead { last_id, .. }) => {
                        // The log is behind the feed: its store was restored from an older
                        // copy, or replaced, under the running server. The feed follows from
                        // the log's newest id; the streams past it end (their resume gets
                        // 409): this batch says where the log ends.
                        tracing::warn!(
                            feed_at = last,
                            last_id,
                            "the event log went back (its store restored from an older copy, or replaced); the event feed follows from its newest id, and the streams past it end"
                        );
                        let _ = self
                            .sender
                            .send(Arc::new(FeedBatch::new(&[]).read_by(read, last_id)));
                        last = self.moved_to(last_id);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the event feed could not read the log");
                        break;
                    }
                };
                let full = page.full;
                for batch in runs(&page.events, BATCH_EVENTS) {
                    // No receiver is fine: nobody is streaming.
                    let batch = FeedBatch::new(batch).read_by(read, page.last_id);
                    let _ = self.sender.send(Arc::new(batch));
                }
                if page.events.is_empty() && page.last_id < self.furthest.load(Ordering::SeqCst) {
                    // Nothing new for the feed, but a stream caught up past the log's end. Said
                    // on every such read until the log passes that id again (after a restore,
                    // an empty batch ten times a second): a stream that caught up while this
                    // read ran takes only a later read's word, so it is never said just once.
                    let end = FeedBatch::new(&[]).read_by(read, page.last_id);
                    let _ = self.sender.send(Arc::new(end));
                }
                last = self.moved_to(page.next_after);
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
        ("type" = Option<String>, Query, description = "only these types, comma-separated (or the parameter repeated: the types add up): workflow.transitioned, gate.overdue, consultation.created, consultation.updated"),
    ),
    responses(
        (status = 200, description = "the page, in id order; `next_after` is the last item's id, or past it when rows this server cannot read were passed over, or when a read filtered by `type` alone looked at its 10 000 ids and found fewer items, or when the page stopped at about 4 MiB of events (then more may follow: read on until `next_after` comes back equal to the `after` sent); on an empty page at the end of the log, the given `after` (without one, the last id retention deleted, 0 if none) — but for a page filtered by `type` alone that read on through ranges holding none of its types: the start of the last range it looked through, so the next poll does not read them again", body = EventsResponse,
         example = json!(crate::http::openapi::examples::events())),
    ),
)]
pub async fn list_events(
    app: &App,
    query: Option<&str>,
) -> Result<Response<http_body_util::Full<Bytes>>> {
    let query = parse_query(query, false)?;
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

/// The query of a page, or with `stream` of a stream, which has no pages: it ignores `limit`
/// as it does any parameter it does not take.
fn parse_query(query: Option<&str>, stream: bool) -> Result<EventsQuery> {
    let pairs = super::body::query_pairs(query);
    Ok(EventsQuery::parse_query(
        pairs
            .iter()
            .filter(|(k, _)| !(stream && k == "limit"))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

/// The events as server-sent events, from after `Last-Event-ID` (or `?after=`), else from now.
#[utoipa::path(
    get, path = "/events/stream", tag = "events", operation_id = "stream_events",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this id (wins over `after`, which must still be a whole number if given); empty, it names nothing; given once (two of the header are 400)"),
        ("after" = Option<String>, Query, description = "resume after this id; with neither, only events from now on"),
        ("feature_id" = Option<String>, Query, description = "only this workflow's events"),
        ("type" = Option<String>, Query, description = "only these types, comma-separated (or the parameter repeated: the types add up)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: first a message with only `id:`, the id the stream starts after (the newest id when neither `after` nor `Last-Event-ID` is given, so a consumer disconnected before its first event knows where to resume); then one message per event (`id:` its id, `event:` its type, `data:` the CloudEvent on one line), and a comment line every EVENTS_HEARTBEAT_SECONDS, followed, when the stream has read events since its last `id:` (ones its filter left out included), by another message with only `id:`, the last id it read, to resume after. A consumer that falls too far behind is disconnected and resumes by id.", content_type = "text/event-stream", body = String,
         headers(("Event-Heartbeat-Seconds" = u64, description = "seconds between heartbeats (EVENTS_HEARTBEAT_SECONDS): a stream silent for a few of them is a dead one, to resume by id")),
         example = json!(crate::http::openapi::examples::stream())),
    ),
)]
pub async fn stream_events(
    app: &App,
    headers: &HeaderMap,
    query: Option<&str>,
    holder: Option<Holder>,
    share_key: Option<String>,
) -> Result<Response<SseBody>> {
    // `holder` is asked at every heartbeat whether it may still read (the stream ends when
    // not); `share_key` names the share of the stream slots the stream counts in
    // (`App::stream_share`; `None`: none, only the server's bound).
    // First of all: a right to read lost from here on ends the stream, also while it starts
    // and catches up.
    let revocations = app.revocations();
    let mut query = parse_query(query, true)?;
    // Judged before a stream slot is taken: a malformed header is told as such on a full
    // server too, not 503.
    if let Some(id) = last_event_id(headers)? {
        query.after = Some(id);
    }
    let slot = app.stream_slot(share_key)?;
    let feed = app.feed();
    let mut started = feed.started.subscribe();
    match tokio::time::timeout(FEED_START_WAIT, started.wait_for(|started| *started)).await {
        Ok(Ok(_)) => {}
        // The feed cannot read the log (or has stopped): neither could this stream.
        Ok(Err(_)) | Err(_) => {
            return Err(orchestrator_core::RepositoryError::Unavailable(
                "the event feed has not read the log yet".into(),
            )
            .into());
        }
    }
    // A stream that resumes takes its turn for its reads of the log (a stream from now reads
    // next to nothing), before it subscribes: a long wait would otherwise fill its share of
    // the feed's broadcast, and it would be dropped as behind as soon as it caught up.
    let reading = match query.after {
        Some(_) => Some(feed.catch_up.acquire().await),
        None => None,
    };
    // Subscribe before reading the log: whatever the feed broadcasts from now on is seen here,
    // and whatever it broadcast before is in the log read below.
    let live = feed.sender.subscribe();
    let start = match query.after {
        Some(after) => after,
        None => app.orchestrator().last_event_id().await?,
    };
    let floor = match query.after {
        Some(_) if !query.filter.admits_all() => app.orchestrator().last_event_id().await?,
        _ => start,
    };
    // The first page is read now, so a resume point retention passed is a 410, not a stream.
    let first = app
        .orchestrator()
        .events(Some(start), &query.filter, READ_BATCH)
        .await?;
    drop(reading);
    let (queue, messages) = stream_queue::channel(STREAM_QUEUE, STREAM_BYTES);
    tokio::spawn(forward(
        app.clone(),
        query.filter,
        start,
        (first, floor),
        live,
        queue,
        (holder, revocations),
    ));
    let mut response = Response::new(SseBody {
        messages,
        _slot: slot,
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // So that a consumer knows how long a silence means a dead stream.
    headers.insert(
        HeaderName::from_static(orchestrator_core::api::HEARTBEAT_HEADER),
        HeaderValue::from(app.limits().events.heartbeat.as_secs()),
    );
    // A proxy that buffers answers (nginx does, unless told) would hold the events back until
    // its buffer filled, and the consumer, hearing nothing, would reconnect over and over.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// Sends one stream's messages until its consumer leaves, falls behind, or the server stops
/// — or until its holder (a board session, a principal) may no longer read: checked at each
/// live heartbeat, and at once when a session ends or the principals file is re-read on this
/// server (during the catch-up from the log, before each page and each chunk of it sent).
///
/// `first` is the first page of the catch-up from the log, and `floor` the log's newest id
/// read before it: a filtered page that comes back short has read every matching event up to
/// there (committed before the read began), so the stream's position is at least `floor`, and
/// the end of the catch-up tells a filtered consumer so even if nothing else ever happens
/// (as each heartbeat does for what the live part left out): resuming from its last matching
/// event, long ago, could be refused once retention passed it (410).
async fn forward(
    app: App,
    filter: EventFilter,
    start: u64,
    (first, floor): (orchestrator_core::EventPage, u64),
    mut live: broadcast::Receiver<Arc<FeedBatch>>,
    queue: stream_queue::Sender,
    (holder, mut revocations): (Option<Holder>, watch::Receiver<u64>),
) {
    let mut out = Outlet {
        queue,
        stop: app.closing(),
        told: start,
    };
    // First, where the stream starts: a consumer that asked for "from now on" learns the id
    // to resume after if it is disconnected before its first event.
    if !out.send(position_message(start)).await {
        return;
    }
    if lost_since(&app, holder.as_ref(), &mut revocations).await {
        return;
    }
    let heartbeat_every = app.limits().events.heartbeat;
    // Catch up from the log.
    let pages = LogPages {
        app: &app,
        filter: &filter,
        holder: holder.as_ref(),
        revocations: &mut revocations,
    };
    let Some(mut sent) = catch_up((first, floor), pages, &mut out, heartbeat_every).await else {
        return;
    };
    // The feed's reads from now on found a log at least as long as the one just read, unless
    // it went back.
    let settled = app.feed().reads.load(Ordering::SeqCst);
    app.feed().furthest.fetch_max(sent, Ordering::SeqCst);
    // Then live.
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    // A stream that waited long for room beats once after, not once for every beat it missed
    // (each a holder check and a message ahead of the batches waiting).
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    // A session signed out on another replica, or past its time, is learned of only by
    // asking (at each heartbeat, below): at least every 15 s, however long the heartbeat is
    // set. (A principal's token is re-checked at once where the file is re-read.)
    let sessions_recheck =
        matches!(holder, Some(Holder::Session(_))) && heartbeat_every > HOLDER_RECHECK;
    let mut recheck = tokio::time::interval(HOLDER_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    if lost_since(&app, holder.as_ref(), &mut revocations).await {
        return;
    }
    let mut revoked = false;
    loop {
        if std::mem::take(&mut revoked) && !still_held(&app, holder.as_ref()).await {
            return;
        }
        let received = tokio::select! {
            // A lost right, the server's stop and a gone consumer before the next batch: a
            // batch that came with them is not sent. The heartbeat (where a session's holder
            // is asked again) before it too: a stream always behind by a batch or two would
            // otherwise never beat.
            biased;
            _ = out.stop.wait_for(|stop| *stop) => return,
            // The consumer left (its connection let the body go): end now, not at the next
            // event or heartbeat.
            () = out.queue.closed() => return,
            // Someone lost the right to read on this server: the holder is asked now (below,
            // outside the select).
            Ok(()) = revocations.changed(), if holder.is_some() => {
                revoked = true;
                continue;
            }
            _ = recheck.tick(), if sessions_recheck => {
                revoked = true;
                continue;
            }
            _ = heartbeat.tick() => Live::Beat,
            received = live.recv() => match received {
                Ok(batch) => Live::Batch(batch),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(
                        missed_batches = missed,
                        "a stream fell behind; disconnected to resume by id"
                    );
                    Live::Behind
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let batch = match received {
            Live::Batch(batch) => batch,
            Live::Beat => {
                if !still_held(&app, holder.as_ref()).await || !out.heartbeat(sent).await {
                    return;
                }
                continue;
            }
            Live::Behind => {
                out.part(sent).await;
                return;
            }
        };
        if let Some(why) = batch.ends(sent, settled) {
            tracing::info!("{why}");
            return;
        }
        let (chunks, last) = batch.chunks(sent, &filter);
        sent = last;
        let share = slice_weight(batch.messages.len(), chunks.len());
        for chunk in chunks {
            let weight = share.max(chunk.len());
            if !out.send_weighing(chunk, weight).await {
                return;
            }
        }
    }
}

/// What each of a broadcast batch's `slices` weighs in a stream's queue at least (its length,
/// if more): queued, a slice (a filter's few events) keeps the whole batch alive after the
/// broadcast let it go, so the slices weigh the batch between them, not only their lengths —
/// shared with every other stream, not copied for each. (Once the first of them are sent, the
/// rest may hold more than they weigh: a stream holds up to about twice its budget.)
fn slice_weight(batch_bytes: usize, slices: usize) -> usize {
    batch_bytes.div_ceil(slices.max(1))
}

/// A stream's catch-up from the log: sends the first page's events, then reads the page after
/// the last one sent ([`Pages::after`], with the log's newest id read before it; `None`: the
/// stream ends) while pages come back full. Returns the position reached — every event up to
/// it sent or left out by the filter — or `None` once the stream is to end.
///
/// A catch-up through a long log, filtered, may send nothing for long: every `heartbeat` it
/// sends a heartbeat and the position reached, so neither the consumer nor a proxy takes the
/// stream for dead, and a stream cut off meanwhile resumes from there, not from its start.
/// Those never wait for room in the queue (a full queue holds messages the consumer has yet to
/// read): the page being read meanwhile holds a database connection.
///
/// `floor` is the log's newest id read before the first page: a filtered page that comes
/// back short has read every matching event up to there (committed before the read began),
/// so the stream's position is at least `floor`.
async fn catch_up(
    (first, mut floor): (orchestrator_core::EventPage, u64),
    mut pages: impl Pages,
    out: &mut Outlet,
    heartbeat: Duration,
) -> Option<u64> {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.reset();
    let mut page = first;
    // The last event sent: its `id:` told the consumer where the stream is.
    let mut shown = out.told;
    loop {
        for batch in runs(&page.events, CATCH_UP_CHUNK) {
            // A page may take long to send to a slow reader: a holder who lost the right to
            // read meanwhile is not sent the rest of it.
            if pages.lost().await || !out.send(FeedBatch::new(batch).messages).await {
                return None;
            }
        }
        shown = page.events.last().map_or(shown, |event| event.id);
        let sent = page.next_after;
        if !page.full {
            let reached = sent.max(floor);
            // Events the filter left out at the log's end: the consumer is told where it has
            // read to now, not at the first heartbeat (a proxy that cuts streams sooner would
            // keep it resuming from its last match, which retention may pass: a 410).
            if reached != shown && reached != out.told {
                if !out.send(position_message(reached)).await {
                    return None;
                }
                out.told = reached;
            }
            return Some(reached);
        }
        // Sent: not held while the next page is read.
        drop(std::mem::take(&mut page.events));
        let read = pages.after(sent);
        let mut read = std::pin::pin!(read);
        (page, floor) = loop {
            tokio::select! {
                biased;
                read = &mut read => break read?,
                _ = beat.tick() => if !out.beat_now(sent) {
                    return None;
                },
            }
        };
    }
}

/// What a live stream waited for.
enum Live {
    /// The feed's next batch.
    Batch(Arc<FeedBatch>),
    /// The heartbeat's time.
    Beat,
    /// The stream fell behind the feed's broadcast.
    Behind,
}

/// The pages of a stream's catch-up after the first.
trait Pages {
    /// The page after `sent`, with the log's newest id read before it; `None`: the stream
    /// ends (its holder may no longer read, or the log could not be read).
    async fn after(&mut self, sent: u64) -> Option<(orchestrator_core::EventPage, u64)>;

    /// Whether the stream's holder lost the right to read (asked only when someone did).
    async fn lost(&mut self) -> bool;
}

/// The catch-up's pages from the log, for a stream with `filter` held by `holder`.
struct LogPages<'a> {
    app: &'a App,
    filter: &'a EventFilter,
    holder: Option<&'a Holder>,
    revocations: &'a mut watch::Receiver<u64>,
}

impl Pages for LogPages<'_> {
    async fn after(&mut self, sent: u64) -> Option<(orchestrator_core::EventPage, u64)> {
        if self.lost().await {
            return None;
        }
        let orchestrator = self.app.orchestrator();
        let _reading = self.app.feed().catch_up.acquire().await;
        let read = async {
            // A filtered page ends at its last matching event, maybe long before the log's
            // newest: the newest id, read first, is where the stream is at least.
            let floor = if self.filter.admits_all() {
                0
            } else {
                orchestrator.last_event_id().await?
            };
            let page = orchestrator
                .events(Some(sent), self.filter, READ_BATCH)
                .await?;
            Ok::<_, orchestrator_core::Error>((page, floor))
        };
        read.await
            .inspect_err(|e| tracing::debug!(error = %e, "a stream could not catch up; it ends"))
            .ok()
    }

    async fn lost(&mut self) -> bool {
        lost_since(self.app, self.holder, self.revocations).await
    }
}

/// Where a stream's messages go: its queue toward the connection, watched for the server's
/// stop, and the last position the consumer was told in an `id:`-only message.
struct Outlet {
    queue: stream_queue::Sender,
    stop: watch::Receiver<bool>,
    told: u64,
}

impl Outlet {
    /// Queues `message` (see [`deliver`]): false when the stream is to end.
    async fn send(&mut self, message: Bytes) -> bool {
        let weight = message.len();
        self.send_weighing(message, weight).await
    }

    /// Queues `message` as `weight` bytes of the stream's budget (see [`deliver`]): false
    /// when the stream is to end.
    async fn send_weighing(&mut self, message: Bytes, weight: usize) -> bool {
        deliver(&self.queue, &mut self.stop, message, weight).await
    }

    /// A heartbeat, and the stream's position `sent` if the consumer has not been told it
    /// (events a filter left out move it on too): false when the stream is to end.
    async fn heartbeat(&mut self, sent: u64) -> bool {
        for message in self.beat(sent) {
            if !self.send(message).await {
                return false;
            }
        }
        self.told = sent;
        true
    }

    /// A heartbeat's messages: the comment, and the position `sent` if it is news.
    fn beat(&self, sent: u64) -> impl Iterator<Item = Bytes> + use<> {
        std::iter::once(Bytes::from_static(b": heartbeat\n\n"))
            .chain((sent != self.told).then(|| position_message(sent)))
    }

    /// [`Outlet::heartbeat`] if the queue has room now, without waiting for it: false when
    /// the consumer is gone.
    fn beat_now(&mut self, sent: u64) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        let all = self
            .beat(sent)
            .try_for_each(|message| self.queue.try_send(message));
        match all {
            Ok(()) => self.told = sent,
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Closed(_)) => return false,
        }
        true
    }

    /// The position `sent` for a consumer about to be disconnected, if it has not been told
    /// it, waiting up to [`PART_WAIT`] for room: a filtered stream resumes from there, not
    /// from the last event it matched (and, long behind, falls behind again).
    async fn part(&mut self, sent: u64) {
        if sent != self.told
            && let Ok(true) =
                tokio::time::timeout(PART_WAIT, self.send(position_message(sent))).await
        {
            self.told = sent;
        }
    }
}

/// Puts `message` in the stream's queue, waiting for room as long as the consumer reads and
/// the server is not stopping: false when the stream is to end (its consumer gone, or the
/// server stopping — a consumer that stopped reading, or one catching up on a long log, would
/// otherwise hold the stop until its drain gave up).
async fn deliver(
    queue: &stream_queue::Sender,
    stop: &mut watch::Receiver<bool>,
    message: Bytes,
    weight: usize,
) -> bool {
    tokio::select! {
        sent = queue.send_weighing(message, weight) => sent,
        _ = stop.wait_for(|stop| *stop) => false,
    }
}

/// The id a `Last-Event-ID` header resumes after, which wins over `after`: `None` without
/// one, or for an empty one (a browser's `EventSource` that has seen no event sends nothing).
/// Given twice, empty ones too, it is refused: which would win is a guess (as with two
/// `Idempotency-Key`s).
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>> {
    let bad = |rule: &str| {
        ApiError::Validation(orchestrator_core::ValidationError::new(
            "Last-Event-ID",
            rule,
        ))
    };
    let mut given = headers.get_all("last-event-id").iter();
    let value = given.next();
    if given.next().is_some() {
        return Err(bad("must be given once, not twice"));
    }
    value
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("must be an event id (a whole number)"))
        })
        .transpose()
}

/// Whether the stream's holder lost the right to read since `revocations` was last seen (then
/// seen now).
async fn lost_since(
    app: &App,
    holder: Option<&Holder>,
    revocations: &mut watch::Receiver<u64>,
) -> bool {
    if holder.is_none() || !revocations.has_changed().unwrap_or(false) {
        return false;
    }
    revocations.mark_unchanged();
    !still_held(app, holder).await
}

/// Whether the stream's holder (if it has one) may still read the events; logged when not.
async fn still_held(app: &App, holder: Option<&Holder>) -> bool {
    let held = match holder {
        Some(holder) => holder.holds(app).await,
        None => true,
    };
    if !held {
        tracing::info!("a stream's holder may no longer read the events; it ends");
    }
    held
}

/// How many event streams a server serving `max_connections` connections keeps open at once:
/// three quarters of them, so that streams, which stay open, never take every connection and
/// the rest of the API (`/health` included) always has a quarter. Past it a new stream is
/// refused 503 with `Retry-After`.
pub fn stream_slots(max_connections: usize) -> usize {
    (max_connections / 4 * 3).max(1)
}

/// How many of the stream slots one share may take — with principals, a person's token
/// streams, or their board pages': a quarter (at least one), so that one consumer that leaks
/// connections, or one token shared by too many, cannot take the streams the board and the
/// other consumers need.
pub fn streams_per_holder(max_connections: usize) -> usize {
    (stream_slots(max_connections) / 4).max(1)
}

/// How many streams each share has open, by its key (`token <person>` or `board <person>`:
/// `App::stream_share`).
pub(crate) type Holders = Arc<std::sync::Mutex<HashMap<String, usize>>>;

/// A stream's place: one of the server's slots and, for a caller the server can tell apart,
/// one of its share; both free again when the stream's body is let go.
pub(crate) struct StreamSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    held: Option<(String, Holders)>,
}

/// The share has all its streams open already.
#[derive(Debug)]
pub(crate) struct ShareTaken;

impl StreamSlot {
    /// `permit`, and one of the `most` streams of the share `key` in `holders` (refused when
    /// it has them all; `None`: counted in no share).
    pub(crate) fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        key: Option<String>,
        holders: &Holders,
        most: usize,
    ) -> std::result::Result<Self, ShareTaken> {
        let Some(key) = key else {
            return Ok(StreamSlot {
                _permit: permit,
                held: None,
            });
        };
        {
            // Counting cannot panic while the lock is held; a poisoned map is still right.
            let mut open = holders.lock().unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(key.clone()).or_insert(0);
            if *count >= most {
                return Err(ShareTaken);
            }
            *count += 1;
        }
        Ok(StreamSlot {
            _permit: permit,
            held: Some((key, holders.clone())),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some((key, holders)) = self.held.take() {
            let mut open = holders.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

/// Longest a stream held by a board session goes without asking whether the session holds.
const HOLDER_RECHECK: Duration = Duration::from_secs(15);

/// Who holds a stream, asked again at every heartbeat (and at least every
/// `HOLDER_RECHECK`): the stream ends once they could no longer open it.
pub enum Holder {
    /// A board session, by its key: ends when it is signed out, expires, or outlives the
    /// token or principal that made it.
    Session(String),
    /// A principal who opened it with a token: ends when the principals file no longer gives
    /// that token to that name, whatever its case (removed, or renamed: a new person).
    Principal {
        /// The token's SHA-256, hex.
        token_sha256: String,
        /// The name it was opened as.
        name: orchestrator_core::Actor,
    },
}

impl Holder {
    async fn holds(&self, app: &App) -> bool {
        match self {
            Holder::Session(key) => super::board::still_signed_in(app, key).await,
            Holder::Principal { token_sha256, name } => app
                .auth()
                .principal_with_token_hash(token_sha256)
                .is_some_and(|principal| principal.name.same_person(name)),
        }
    }
}

/// The body of a stream: the messages its task sends, as they come.
pub struct SseBody {
    messages: stream_queue::Receiver,
    /// The stream's slot, free again when the connection lets the body go.
    _slot: StreamSlot,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_waiting_for_room_gives_up_when_the_server_stops() {
        let (queue, mut unread) = stream_queue::channel(1, STREAM_BYTES);
        let (closing, mut stop) = watch::channel(false);
        assert!(deliver(&queue, &mut stop, Bytes::from_static(b"one"), 3).await);
        // The consumer reads nothing more: the next message waits for room until the stop.
        let waiting =
            tokio::spawn(
                async move { deliver(&queue, &mut stop, Bytes::from_static(b"two"), 3).await },
            );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits for room");
        closing.send_replace(true);
        let delivered = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the stop ends the wait")
            .unwrap();
        assert!(!delivered, "the stream is to end");
        assert_eq!(unread.recv().await.as_deref(), Some(&b"one"[..]));
    }

    /// Pages of a log `step` ids at a time, up to `last`, each read taking `took`; none with
    /// an event (a filter matching nothing there).
    struct SlowPages {
        step: u64,
        last: u64,
        took: Duration,
    }

    impl Pages for SlowPages {
        async fn after(&mut self, sent: u64) -> Option<(orchestrator_core::EventPage, u64)> {
            tokio::time::sleep(self.took).await;
            let next_after = (sent + self.step).min(self.last);
            let page = orchestrator_core::EventPage {
                events: Vec::new(),
                next_after,
                last_id: self.last,
                full: next_after < self.last,
            };
            Some((page, self.last))
        }

        async fn lost(&mut self) -> bool {
            false
        }
    }

    /// A holder who loses the right to read after `held` asks, and a log with no more pages.
    struct RevokedAfter {
        held: usize,
    }

    impl Pages for RevokedAfter {
        async fn after(&mut self, _: u64) -> Option<(orchestrator_core::EventPage, u64)> {
            None
        }

        async fn lost(&mut self) -> bool {
            self.held = self.held.saturating_sub(1);
            self.held == 0
        }
    }

    /// A page sent chunk by chunk stops at the chunk after its holder lost the right to read:
    /// a slow reader is not sent the rest of a thousand events it may no longer see.
    #[tokio::test]
    async fn a_catch_up_stops_within_its_page_when_its_holder_loses_the_right() {
        let (mut out, mut unread, _closing) = outlet(64, 0);
        let events: Vec<Event> = (1..=100)
            .map(|id| event(id, "a", EventType::WorkflowTransitioned))
            .collect();
        let page = orchestrator_core::EventPage {
            events,
            next_after: 100,
            last_id: 100,
            full: false,
        };
        let pages = RevokedAfter { held: 3 };
        assert_eq!(
            catch_up((page, 100), pages, &mut out, Duration::from_secs(60)).await,
            None
        );
        // Chunks of 32 events: two went out before the third ask found the right lost.
        assert_eq!(queued(&mut unread).len(), 2);
    }

    /// An outlet with a queue of `capacity` whose consumer was told `told`; its queue's
    /// other end, and the server's stop.
    fn outlet(capacity: usize, told: u64) -> (Outlet, stream_queue::Receiver, watch::Sender<bool>) {
        let (queue, unread) = stream_queue::channel(capacity, STREAM_BYTES);
        let (closing, stop) = watch::channel(false);
        let out = Outlet { queue, stop, told };
        (out, unread, closing)
    }

    /// What the stream's queue holds, as text.
    fn queued(unread: &mut stream_queue::Receiver) -> Vec<String> {
        std::iter::from_fn(|| unread.try_recv())
            .map(|message| String::from_utf8(message.to_vec()).unwrap())
            .collect()
    }

    /// A filtered catch-up through a long log finds nothing for seconds: it beats and tells
    /// how far it read, so the consumer does not take it for dead, and resumes from there.
    #[tokio::test(start_paused = true)]
    async fn a_long_catch_up_that_sends_nothing_beats_with_its_position() {
        let (mut out, mut unread, _closing) = outlet(64, 0);
        let first = orchestrator_core::EventPage {
            events: Vec::new(),
            next_after: 10_000,
            last_id: 50_000,
            full: true,
        };
        let pages = SlowPages {
            step: 10_000,
            last: 50_000,
            took: Duration::from_millis(1500),
        };
        let reached = catch_up((first, 50_000), pages, &mut out, Duration::from_secs(1)).await;
        assert_eq!(reached, Some(50_000));
        let messages = queued(&mut unread);
        assert!(
            messages.contains(&": heartbeat\n\n".to_owned()),
            "{messages:?}"
        );
        let told: Vec<u64> = messages
            .iter()
            .filter_map(|m| m.strip_prefix("id: ")?.trim().parse().ok())
            .collect();
        // Each beat while a page is read, and where it ended once the last page is in.
        assert_eq!(
            told,
            [10_000, 20_000, 30_000, 40_000, 50_000],
            "{messages:?}"
        );
        assert_eq!(out.told, 50_000);
    }

    /// A stream disconnected for falling behind says how far it got, once, waiting a little
    /// for room: a filtered consumer resumes from there, not from the last event it matched.
    #[tokio::test(start_paused = true)]
    async fn a_stream_that_fell_behind_parts_with_its_position() {
        let (mut out, mut unread, _closing) = outlet(1, 5);
        out.part(5).await;
        assert!(queued(&mut unread).is_empty(), "told already");
        out.part(9).await;
        assert_eq!(queued(&mut unread), ["id: 9\n\n"]);
        // A consumer that reads within the wait is told.
        assert!(out.send(Bytes::from_static(b"event")).await);
        let reading = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let first = unread.recv().await;
            (first, unread)
        });
        out.part(12).await;
        let (first, mut unread) = reading.await.unwrap();
        assert_eq!(first.as_deref(), Some(&b"event"[..]));
        assert_eq!(queued(&mut unread), ["id: 12\n\n"]);
        // One that does not is left after the wait.
        assert!(out.send(Bytes::from_static(b"event")).await);
        out.part(20).await;
        assert_eq!(queued(&mut unread), ["event"]);
        assert_eq!(out.told, 12);
    }

    /// A live stream's slices of one batch weigh the batch between them, however small they
    /// are: each keeps it alive while it waits in the queue.
    #[test]
    fn the_slices_of_a_batch_weigh_the_batch() {
        assert_eq!(slice_weight(1000, 1), 1000);
        assert_eq!(slice_weight(1000, 3), 334);
        assert!(slice_weight(1000, 3) * 3 >= 1000);
        assert_eq!(slice_weight(0, 0), 0);
    }

    /// A catch-up's heartbeat never waits for room: the page read meanwhile holds a
    /// connection. A full queue skips it; a closed one ends the stream.
    #[tokio::test]
    async fn a_catch_up_beat_does_not_wait_for_room() {
        let (mut out, mut unread, _closing) = outlet(1, 5);
        assert!(out.send(Bytes::from_static(b"event")).await);
        assert!(out.beat_now(9), "skipped, not waited for");
        assert_eq!(out.told, 5);
        assert_eq!(queued(&mut unread), ["event"]);
        drop(unread);
        assert!(!out.beat_now(9), "the consumer is gone");
    }

    fn event(id: u64, subject: &str, event_type: EventType) -> Event {
        Event {
            id,
            event: orchestrator_core::NewEvent {
                event_type,
                subject: FeatureId::parse(subject).unwrap(),
                time: chrono::DateTime::UNIX_EPOCH,
                data: "{}".to_owned(),
            },
        }
    }

    fn text(chunks: &[Bytes]) -> Vec<String> {
        chunks
            .iter()
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_holder_may_take_a_quarter_of_the_stream_slots_and_one_at_least() {
        assert_eq!(streams_per_holder(1024), 192);
        assert_eq!(streams_per_holder(16), 3);
        for small in 1..16 {
            assert_eq!(streams_per_holder(small), (stream_slots(small) / 4).max(1));
            assert!(streams_per_holder(small) >= 1, "{small}");
        }
    }

    #[test]
    fn events_go_in_runs_bounded_by_count_and_by_bytes() {
        let sized = |id, size| {
            let mut event = event(id, "a", EventType::ConsultationUpdated);
            event.event.data = "x".repeat(size);
            event
        };
        let lengths =
            |events: &[Event], most| runs(events, most).map(<[Event]>::len).collect::<Vec<_>>();
        let small: Vec<Event> = (1..=70).map(|id| sized(id, 10)).collect();
        assert_eq!(lengths(&small, 32), [32, 32, 6]);
        assert_eq!(lengths(&[], 32), Vec::<usize>::new());
        // Large ones: a run stops after the event that reaches the bytes.
        let large: Vec<Event> = (1..=10).map(|id| sized(id, 100 * 1024)).collect();
        assert_eq!(lengths(&large, 32), [3, 3, 3, 1]);
        // One larger than the bytes goes alone, and is sent.
        let huge = [sized(1, 1 << 20), sized(2, 10)];
        assert_eq!(lengths(&huge, 32), [1, 1]);
        let ids: Vec<u64> = runs(&large, 32).flatten().map(|e| e.id).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_sent_whole_or_in_runs_of_what_the_stream_keeps() {
        use EventType::{GateOverdue, WorkflowTransitioned};
        let events = [
            event(4, "a", WorkflowTransitioned),
            event(5, "b", WorkflowTransitioned),
            event(6, "a", GateOverdue),
            event(7, "a", WorkflowTransitioned),
        ];
        let batch = FeedBatch::new(&events);
        let whole = events
            .iter()
            .map(sse_message)
            .fold(Vec::new(), |mut all, m| {
                all.extend_from_slice(&m);
                all
            });

        // No filter, nothing sent yet: the shared buffer itself, once.
        let (chunks, last) = batch.chunks(3, &EventFilter::default());
        assert_eq!(chunks, vec![Bytes::from(whole)]);
        assert_eq!(last, 7);

        // What was sent already is skipped.
        let (chunks, last) = batch.chunks(5, &EventFilter::default());
        assert_eq!(
            text(&chunks),
            vec![format!(
                "{}{}",
                text(&[sse_message(&events[2])])[0],
                text(&[sse_message(&events[3])])[0]
            )]
        );
        assert_eq!(last, 7);

        // A filter keeps runs: 4, then 6–7 (5 is another feature's).
        let only_a = EventFilter {
            feature_id: Some(FeatureId::parse("a").unwrap()),
            types: Vec::new(),
        };
        let (chunks, last) = batch.chunks(0, &only_a);
        assert_eq!(chunks.len(), 2);
        assert!(text(&chunks)[0].starts_with("id: 4\n"));
        assert!(text(&chunks)[1].starts_with("id: 6\n") && text(&chunks)[1].contains("id: 7\n"));
        assert_eq!(last, 7);

        // Nothing admitted: no chunk, but the stream has read through the batch (its next
        // heartbeat says so); past the batch, the position stays.
        let overdue_of_b = EventFilter {
            feature_id: Some(FeatureId::parse("b").unwrap()),
            types: vec![GateOverdue],
        };
        assert_eq!(batch.chunks(0, &overdue_of_b), (Vec::new(), 7));
        assert_eq!(batch.chunks(9, &overdue_of_b), (Vec::new(), 9));
    }

    /// Retention that deletes events before the feed read them (a feed that could not read
    /// the log for that long) is broadcast, and ends the streams that had not sent them.
    // One thread: the feed runs only where this test awaits, so the writes and the purge
    // below (in memory: nothing in them waits) all land between two of its reads.
    #[tokio::test(flavor = "current_thread")]
    async fn events_deleted_before_the_feed_read_them_end_the_streams_behind_them() {
        use orchestrator_core::{InMemoryWorkflowRepository, StartWorkflow};
        let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()));
        let feed = Arc::new(Feed::default());
        let mut live = feed.sender.subscribe();
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn({
            let (feed, orchestrator) = (feed.clone(), orchestrator.clone());
            async move { feed.run(orchestrator, stopped).await }
        });
        // The feed has read the (empty) log and waits for its next poll.
        tokio::time::sleep(Duration::from_millis(5)).await;
        for name in ["a", "b"] {
            let start = StartWorkflow::new(FeatureId::parse(name).unwrap(), "d".parse().unwrap());
            orchestrator.start(start).await.unwrap();
        }
        let deleted = orchestrator
            .purge_events(chrono::Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        let start = StartWorkflow::new(FeatureId::parse("c").unwrap(), "d".parse().unwrap());
        orchestrator.start(start).await.unwrap();

        let batch = tokio::time::timeout(Duration::from_secs(1), live.recv())
            .await
            .expect("the feed polls")
            .unwrap();
        assert_eq!(batch.purged_through, Some(2));
        assert!(
            batch.ends(0, 0).is_some() && batch.ends(1, 0).is_some(),
            "streams behind end"
        );
        assert!(
            batch.ends(2, 0).is_none(),
            "a stream that sent them goes on"
        );
        stop.send(true).unwrap();
        running.await.unwrap();
    }

    /// A stream waits for the feed to know where the log ends before it subscribes, and is
    /// answered 503 when the feed cannot read the log: subscribed before the feed's first
    /// read, it could catch up to an id that read passes, and miss the events between.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_stream_waits_for_the_feed_to_start() {
        use orchestrator_core::InMemoryWorkflowRepository;
        let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()));
        let app = App::new(
            orchestrator.clone(),
            None,
            Arc::new(crate::metrics::Metrics::default()),
        );
        // No feed runs yet: the stream gives up after its wait, subscribed to nothing.
        let refused = stream_events(&app, &HeaderMap::new(), None, None, None).await;
        let Err(error) = refused else {
            panic!("a stream opened before the feed started");
        };
        assert_eq!(
            error.body().code,
            orchestrator_core::api::ErrorCode::DatabaseUnavailable
        );
        assert_eq!(app.feed().sender.receiver_count(), 0);

        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn({
            let app = app.clone();
            async move { app.feed().run(orchestrator, stopped).await }
        });
        let stream = stream_events(&app, &HeaderMap::new(), None, None, None).await;
        assert!(
            stream.is_ok(),
            "once the feed has read the log, streams open"
        );
        stop.send(true).unwrap();
        running.await.unwrap();
    }

    /// A feed started again (by its supervisor, after a panic) goes on from where it was: the
    /// events written while it was down reach the streams, not only those after.
    #[tokio::test(flavor = "current_thread")]
    async fn a_feed_started_again_goes_on_from_where_it_was() {
        use orchestrator_core::{InMemoryWorkflowRepository, StartWorkflow};
        let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()));
        let feed = Arc::new(Feed::default());
        let run = |stopped| {
            let (feed, orchestrator) = (feed.clone(), orchestrator.clone());
            tokio::spawn(async move { feed.run(orchestrator, stopped).await })
        };
        let start = |name: &str| {
            let start = StartWorkflow::new(FeatureId::parse(name).unwrap(), "d".parse().unwrap());
            let orchestrator = orchestrator.clone();
            async move { orchestrator.start(start).await.unwrap() }
        };
        let ids = |batch: &Arc<FeedBatch>| batch.events.iter().map(|e| e.id).collect::<Vec<_>>();
        let mut live = feed.sender.subscribe();
        let next = async |live: &mut broadcast::Receiver<Arc<FeedBatch>>| {
            tokio::time::timeout(Duration::from_secs(1), live.recv())
                .await
                .expect("the feed broadcasts")
                .unwrap()
        };
        // The first run broadcasts the log's first two events, then ends.
        let (stop, stopped) = watch::channel(false);
        let first = run(stopped);
        tokio::time::sleep(Duration::from_millis(5)).await;
        start("a").await;
        start("b").await;
        feed.wake();
        assert_eq!(ids(&next(&mut live).await), [1, 2]);
        stop.send(true).unwrap();
        first.await.unwrap();

        // Written while no feed runs: the next run broadcasts it, and nothing sent before.
        start("c").await;
        let (stop, stopped) = watch::channel(false);
        let again = run(stopped);
        assert_eq!(ids(&next(&mut live).await), [3]);
        stop.send(true).unwrap();
        again.await.unwrap();
    }

    #[test]
    fn a_log_that_went_back_ends_the_streams_past_its_end() {
        // The feed's 7th read found the log ending at 5.
        let batch = FeedBatch::new(&[]).read_by(7, 5);
        assert!(batch.ends(6, 6).is_some(), "a stream past the end ends");
        assert!(
            batch.ends(5, 6).is_none() && batch.ends(0, 6).is_none(),
            "streams at the end or behind it go on"
        );
        assert!(
            batch.ends(6, 7).is_none(),
            "a read begun before the stream caught up may have found a shorter log"
        );
    }
}
