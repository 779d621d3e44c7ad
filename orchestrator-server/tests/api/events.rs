//! The event log through the real server: `GET /events` (pages, filters, 400s, 409, 410), the SSE
//! stream through the typed client (new events, resume after a disconnect and after a
//! restart, heartbeats), `gate.overdue`, and two replicas on one PostgreSQL database whose
//! streams each see every change of both, in order, with no gap.

use std::time::Duration;

use orchestrator_client::{Client, EventStream};
use orchestrator_core::api::StartWorkflowRequest;
use orchestrator_core::api::{AdvanceRequest, CloudEvent, ErrorCode, EventsQuery, GateRequest};
use orchestrator_core::{EventFilter, EventType};
use orchestrator_server::storage::{DatabaseUrl, connect};

use crate::helpers::{free_port, id, silent_server, spawn_app, spawn_app_with};

/// The next event of `stream`, failing the test after 5 s.
async fn next(stream: &mut EventStream) -> CloudEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Some(Ok(event)) => return event,
                // A transient failure (a restart): the stream reconnects.
                Some(Err(_)) => continue,
                None => panic!("the stream ended"),
            }
        }
    })
    .await
    .expect("an event within 5 s")
}

async fn advance(client: &Client, name: &str, trigger: &str) {
    client
        .advance_workflow(&id(name), &AdvanceRequest::new(trigger))
        .await
        .unwrap();
}

fn query(after: Option<u64>) -> EventsQuery {
    EventsQuery {
        after,
        ..EventsQuery::default()
    }
}

#[tokio::test]
async fn the_log_pages_and_filters_every_change() {
    let app = spawn_app().await;
    app.start_workflow("log-a").await;
    advance(&app.client, "log-a", "agent_complete").await;
    app.start_workflow("log-b").await;

    let all = app.client.list_events(&query(None)).await.unwrap();
    let seen: Vec<(&str, EventType, &str)> = all
        .items
        .iter()
        .map(|e| (e.id.as_str(), e.event_type, e.subject.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("1", EventType::WorkflowTransitioned, "log-a"),
            ("2", EventType::WorkflowTransitioned, "log-a"),
            ("3", EventType::WorkflowTransitioned, "log-b"),
        ]
    );
    assert_eq!(all.next_after, "3");
    let event = &all.items[1];
    assert_eq!(
        (event.specversion.as_str(), event.source.as_str()),
        ("1.0", "orchestrator")
    );
    assert_eq!(event.datacontenttype, "application/json");
    assert_eq!(event.data["state"], "GATE_1");
    assert_eq!(event.data["version"], 2);
    assert_eq!(event.data["trigger"], "agent_complete");

    // Paging: after and limit; an empty page keeps the given `after`.
    let page = app
        .client
        .list_events(&EventsQuery {
            after: Some(1),
            limit: 1,
            ..EventsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        (page.items[0].id.as_str(), page.next_after.as_str()),
        ("2", "2")
    );
    let empty = app.client.list_events(&query(Some(3))).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_after, "3");

    // Filters.
    let of_b = EventsQuery {
        filter: EventFilter {
            feature_id: Some(id("log-b")),
            types: vec![EventType::WorkflowTransitioned],
        },
        ..EventsQuery::default()
    };
    let only_b = app.client.list_events(&of_b).await.unwrap();
    assert_eq!(only_b.items.len(), 1);
    assert_eq!(only_b.items[0].subject.as_str(), "log-b");
    let overdue_only = EventsQuery {
        filter: EventFilter {
            feature_id: None,
            types: vec![EventType::GateOverdue],
        },
        ..EventsQuery::default()
    };
    assert!(
        app.client
            .list_events(&overdue_only)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Bad queries are 400 naming the parameter; nothing else happens.
    for (bad, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("type=workflow.started", "type"),
        ("feature_id=no%20spaces", "feature_id"),
    ] {
        let response = reqwest::get(app.url(&format!("/events?{bad}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{bad}");
        let detail = body["error"]["details"][0].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{bad}: {detail}");
    }
}

#[tokio::test]
async fn a_stream_delivers_new_events_and_resumes_after_a_disconnect_and_a_restart() {
    let port = free_port();
    let app = spawn_app_with(|c| c.port = port).await;
    app.start_workflow("before").await;

    // Without a resume point, only what happens from now on: from the newest id when the
    // stream attaches.
    let mut stream = app.client.stream_events(query(None));
    stream.attach().await.unwrap();
    assert_eq!(stream.last_event_id(), Some(1));
    app.start_workflow("live").await;
    let event = next(&mut stream).await;
    assert_eq!((event.id.as_str(), event.subject.as_str()), ("2", "live"));
    assert_eq!(stream.last_event_id(), Some(2));
    drop(stream);

    // Disconnected: changes meanwhile arrive after a resume, once each, in order.
    advance(&app.client, "live", "agent_complete").await;
    advance(&app.client, "before", "agent_complete").await;
    let mut resumed = app.client.stream_events(query(Some(2)));
    let ids: Vec<String> = vec![next(&mut resumed).await.id, next(&mut resumed).await.id];
    assert_eq!(ids, ["3", "4"]);

    // The server restarts on the same port: the same stream reconnects and resumes by id.
    let app = app.restart().await;
    advance(&app.client, "live", "human_approved").await;
    let after_restart = next(&mut resumed).await;
    assert_eq!(after_restart.id, "5");
    assert_eq!(after_restart.data["state"], "PHASE_2");
    let filtered = EventsQuery {
        after: Some(0),
        filter: EventFilter {
            feature_id: Some(id("before")),
            types: vec![],
        },
        ..EventsQuery::default()
    };
    let mut of_before = app.client.stream_events(filtered);
    assert_eq!(next(&mut of_before).await.id, "1");
    assert_eq!(next(&mut of_before).await.id, "4");
}

#[tokio::test]
async fn a_stream_from_now_disconnected_before_its_first_event_resumes_where_it_started() {
    let port = free_port();
    let app = spawn_app_with(|c| c.port = port).await;
    app.start_workflow("before").await;
    let mut attached = app.client.stream_events(query(None));
    attached.attach().await.unwrap();
    // A stream read without `attach` learns its start from the same opening message, while
    // `next` waits for a first event.
    let mut read = app.client.stream_events(query(None));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while read.last_event_id().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no start within 5 s"
        );
        let nothing = tokio::time::timeout(Duration::from_millis(50), read.next()).await;
        assert!(nothing.is_err(), "no event yet: {nothing:?}");
    }
    assert_eq!(
        (attached.last_event_id(), read.last_event_id()),
        (Some(1), Some(1))
    );

    // The connections drop before any event; what happens meanwhile is not lost.
    let app = app.restart().await;
    app.start_workflow("meanwhile").await;
    for stream in [&mut attached, &mut read] {
        let event = next(stream).await;
        assert_eq!(
            (event.id.as_str(), event.subject.as_str()),
            ("2", "meanwhile")
        );
    }
}

#[tokio::test]
async fn a_quiet_stream_hears_heartbeats_and_the_wire_format_is_sse() {
    let app = spawn_app_with(|c| c.events_heartbeat_seconds = 1).await;
    app.start_workflow("wire").await;
    // A stream has no pages: it ignores `limit`, even one a page would refuse.
    let mut response = reqwest::Client::new()
        .get(app.url("/events/stream?limit=0"))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    // How far apart its heartbeats are, so that a consumer knows how long a silence may be.
    assert_eq!(response.headers()["event-heartbeat-seconds"], "1");
    let mut text = String::new();
    read_until(&mut response, &mut text, |t| t.contains(": heartbeat")).await;
    assert!(
        text.starts_with("id: 0\n\nid: 1\nevent: workflow.transitioned\ndata: {"),
        "{text}"
    );
    assert!(text.contains(": heartbeat\n\n"), "{text}");

    let bad = reqwest::Client::new()
        .get(app.url("/events/stream"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]["details"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("Last-Event-ID")
    );
    // Given twice, which one was meant is not guessed.
    let twice = reqwest::Client::new()
        .get(app.url("/events/stream"))
        .header("last-event-id", "0")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let body: serde_json::Value = twice.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0],
        "Last-Event-ID: must be given once, not twice"
    );
    // Told so on a full server too, not 503 as a well-formed stream would be.
    let full = spawn_app_with(|c| c.max_connections = 4).await;
    let mut open = Vec::new();
    for _ in 0..orchestrator_server::http::events::stream_slots(4) {
        let stream = reqwest::Client::new()
            .get(full.url("/events/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    for (first, second) in [("0", Some("1")), ("yesterday", None)] {
        let mut request = reqwest::Client::new()
            .get(full.url("/events/stream"))
            .header("last-event-id", first);
        if let Some(second) = second {
            request = request.header("last-event-id", second);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 400, "{first} {second:?}");
        let body: serde_json::Value = refused.json().await.unwrap();
        let detail = body["error"]["details"][0].as_str().unwrap_or_default();
        assert!(detail.starts_with("Last-Event-ID: must be"), "{detail}");
    }
    drop(open);
    // Empty, it names nothing: the query's `after` holds.
    let mut empty = reqwest::Client::new()
        .get(app.url("/events/stream?after=0"))
        .header("last-event-id", "")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 200);
    let mut text = String::new();
    read_until(&mut empty, &mut text, |t| t.contains("id: 1\n")).await;
    assert!(text.starts_with("id: 0\n\nid: 1\n"), "{text}");
}

/// A filtered stream learns, at a heartbeat, the position it has read to: a consumer that
/// resumes from there does not resume from its last matching event, which retention may
/// have deleted since (a 410 that would end the stream).
#[tokio::test]
async fn a_filtered_stream_moves_its_resume_id_past_events_it_leaves_out() {
    let app = spawn_app_with(|c| c.events_heartbeat_seconds = 1).await;
    app.start_workflow("watched").await;
    let mut response = watched_from_the_start(&app).await;
    let mut text = String::new();
    read_until(&mut response, &mut text, |t| t.contains("id: 1\nevent:")).await;
    assert!(text.starts_with("id: 0\n\nid: 1\nevent: "), "{text}");
    // Others' events, live: none is sent, but the next heartbeat names the last of them.
    for n in 0..3 {
        app.start_workflow(&format!("other-{n}")).await;
    }
    read_until(&mut response, &mut text, |t| t.contains("\n\nid: 4\n\n")).await;
    assert!(!text.contains("other-"), "{text}");
    assert!(!text.contains("id: 2\nevent:"), "{text}");
}

/// The same for events its catch-up from the log leaves out: a filtered stream resumed long
/// after its feature's last event, on a log that is quiet from then on, learns the log's
/// newest id as soon as it has caught up, not only its feature's last one — and not at its
/// first heartbeat, which a proxy that cuts streams sooner would never let it hear.
#[tokio::test]
async fn a_filtered_stream_moves_its_resume_id_past_the_log_it_caught_up_from() {
    let app = spawn_app_with(|c| c.events_heartbeat_seconds = 60).await;
    app.start_workflow("watched").await;
    for n in 0..3 {
        app.start_workflow(&format!("other-{n}")).await;
    }
    // The server's feed reads the log every 100 ms: past this, it has broadcast those events,
    // and the stream opened next finds them only in the log.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut response = watched_from_the_start(&app).await;
    let mut text = String::new();
    read_until(&mut response, &mut text, |t| t.contains("\n\nid: 4\n\n")).await;
    assert!(text.starts_with("id: 0\n\nid: 1\nevent: "), "{text}");
    assert!(!text.contains(": heartbeat"), "{text}");
    assert!(!text.contains("other-"), "{text}");
    assert!(
        !text.contains("\n\nid: 1\n\n"),
        "never told 1 alone: {text}"
    );
}

/// A stream of workflow "watched"'s events, from the log's start.
async fn watched_from_the_start(app: &crate::helpers::TestApp) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(app.url("/events/stream?feature_id=watched"))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Reads the stream into `text` until `done` holds for it (within 10 s).
async fn read_until(
    response: &mut reqwest::Response,
    text: &mut String,
    done: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(text) {
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        let chunk = tokio::time::timeout(Duration::from_secs(3), response.chunk())
            .await
            .expect("a chunk within 3 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// `gate.overdue` carries the stay's approvals as the workflow's gate shows them.
#[tokio::test]
async fn an_overdue_gate_is_an_event() {
    let app = spawn_app().await;
    let mut start = StartWorkflowRequest::new("late", "a feature with a deadline");
    start.gate = Some(GateRequest {
        required_approvals: Some(2),
        due_in_seconds: Some(5),
        ..GateRequest::default()
    });
    app.client.start_workflow(&start).await.unwrap();
    let mut stream = app.client.stream_events(EventsQuery {
        after: Some(0),
        filter: EventFilter {
            feature_id: None,
            types: vec![EventType::GateOverdue],
        },
        ..EventsQuery::default()
    });
    advance(&app.client, "late", "agent_complete").await;
    let mut approve = AdvanceRequest::new("human_approved");
    approve.actor = Some("alice".into());
    let approved = app
        .client
        .advance_workflow(&id("late"), &approve)
        .await
        .unwrap();
    let gate = serde_json::to_value(&approved.gate).unwrap();
    let overdue = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("the sweep notes the stay within its promise")
        .expect("the stream goes on")
        .unwrap();
    assert_eq!(overdue.event_type, EventType::GateOverdue);
    assert_eq!(overdue.subject.as_str(), "late");
    assert_eq!(overdue.data["approvals"][0]["actor"], "alice");
    assert_eq!(overdue.data["approvals"], gate["approvals"]);
    assert_eq!(overdue.data["on_expiry"], "flag");
    assert!(overdue.data["due_at"].is_string());
}

#[tokio::test]
async fn resuming_where_retention_deleted_events_is_410() {
    let app = spawn_app().await;
    for n in 0..3 {
        app.start_workflow(&format!("old-{n}")).await;
    }
    // Retention, run on the same database as the server's once-a-minute sweep would.
    let store = connect(
        &DatabaseUrl::SqliteFile(app.dir.path().join("orchestrator.db")),
        1,
    )
    .await
    .unwrap();
    let cut = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.purge_events(cut).await.unwrap(), 3);
    app.start_workflow("new").await;

    let expired = app.client.list_events(&query(Some(1))).await.unwrap_err();
    assert_eq!(expired.code(), Some(ErrorCode::EventsExpired));
    let mut stream = app.client.stream_events(query(Some(2)));
    let refused = stream.next().await.expect("an answer").unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::EventsExpired));
    assert!(stream.next().await.is_none(), "a 410 ends the stream");

    // From the oldest kept event, and after the last deleted one, all is well.
    let kept = app.client.list_events(&query(None)).await.unwrap();
    assert_eq!(kept.items.len(), 1);
    assert_eq!(kept.items[0].id, "4");
    assert_eq!(
        app.client
            .list_events(&query(Some(3)))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // A filter nothing kept passes: the empty page resumes where retention ended, not at 0,
    // which would be refused as expired.
    let nothing = EventsQuery {
        filter: EventFilter {
            feature_id: Some(id("old-0")),
            types: Vec::new(),
        },
        ..EventsQuery::default()
    };
    let empty = app.client.list_events(&nothing).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_after, "3");
    let again = EventsQuery {
        after: Some(3),
        ..nothing
    };
    assert!(
        app.client
            .list_events(&again)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_stream_catches_up_from_far_back_in_order() {
    let app = spawn_app().await;
    // More events than several chunks of the catch-up hold.
    for n in 0..70 {
        app.start_workflow(&format!("early-{n}")).await;
    }
    let mut stream = app.client.stream_events(query(Some(0)));
    for expected in 1..=70 {
        let event = next(&mut stream).await;
        assert_eq!(event.id, expected.to_string());
    }
    app.start_workflow("late").await;
    assert_eq!(next(&mut stream).await.subject.as_str(), "late");
}

/// A stream whose reader stops reading falls behind the live feed: once the feed's broadcast
/// has moved past what it could hold for it, the stream ends with its position (it does not
/// skip what it missed), and a stream resumed from there gets every event after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_falls_behind_ends_at_its_position_and_resumes_with_nothing_missed() {
    let app = spawn_app().await;
    let mut stalled = reqwest::Client::new()
        .get(app.url("/events/stream"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    read_until(&mut stalled, &mut text, |t| t.contains("\n\n")).await;
    // A stream that is read, to see each event broadcast before the next write: so each is
    // a batch of its own, whatever the machine's pace.
    let mut reading = app.client.stream_events(query(None));
    reading.attach().await.unwrap();
    // Large events, far more than the stalled connection's queue and socket buffers hold
    // (about 24 MB against a few): its writer waits, and the broadcast, which keeps 64
    // batches, passes it by.
    const STARTS: u64 = 400;
    let metadata = serde_json::json!({ "notes": "x".repeat(60_000) });
    for n in 0..STARTS {
        let mut request = StartWorkflowRequest::new(format!("bulky-{n}"), "a bulky feature");
        request.metadata = Some(metadata.clone());
        app.client.start_workflow(&request).await.unwrap();
        assert_eq!(next(&mut reading).await.seq(), n + 1);
    }
    // Read now: what was queued comes, and then the stream ends, its last message an id alone.
    let mut body = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        // (A connection cut instead of ended would fail the position checks below.)
        while let Ok(Some(chunk)) = stalled.chunk().await {
            body.extend_from_slice(&chunk);
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream that fell behind was not ended");
    let body = String::from_utf8_lossy(&body);
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    let position = *ids.last().expect("the stream tells its position");
    assert!(position < STARTS, "it fell behind: {position}");
    let mut delivered: Vec<u64> = ids.clone();
    delivered.dedup();
    assert_eq!(
        delivered,
        (1..=position).collect::<Vec<_>>(),
        "what it sent has no gap"
    );
    let mut resumed = app.client.stream_events(query(Some(position)));
    for expected in position + 1..=STARTS {
        assert_eq!(next(&mut resumed).await.seq(), expected);
    }
}

/// A stream of a rare type catches up through a long log ten thousand ids at a time, reading
/// on after each range it looked at, and finds the event at its end.
#[tokio::test]
async fn a_stream_of_a_rare_type_catches_up_through_a_long_log() {
    let app = spawn_app().await;
    crate::helpers::run_sql(
        &app.config.database_url,
        &crate::contract::rare_type_log(20_000),
    )
    .await;
    // The live feed (polling ten times a second, with no stream open) passes the new events
    // first, so only the stream's catch-up from the log can find the one it wants.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rare = query(Some(0));
    rare.filter.types = vec![EventType::ConsultationCreated];
    let mut stream = app.client.stream_events(rare);
    let event = next(&mut stream).await;
    assert_eq!(
        (event.id.as_str(), event.subject.as_str()),
        ("20001", "quiet")
    );
}

/// The error that ends `stream`: what it returns before it ends, transient failures (its
/// reconnections) skipped. Fails the test on an event, or after 10 s.
async fn refusal(stream: &mut EventStream) -> orchestrator_client::ClientError {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(event)) => panic!("an event, {event:?}, where the stream should end"),
                Some(Err(e)) if e.code().is_some() => return e,
                Some(Err(_)) => continue,
                None => panic!("the stream ended without saying why"),
            }
        }
    })
    .await
    .expect("the stream ends within 10 s")
}

#[tokio::test]
async fn resuming_after_an_id_the_log_never_had_is_409() {
    let app = spawn_app().await;
    for n in 0..2 {
        app.start_workflow(&format!("only-{n}")).await;
    }
    let ahead = app.client.list_events(&query(Some(5))).await.unwrap_err();
    assert_eq!(ahead.code(), Some(ErrorCode::EventsCursorAhead));
    assert_eq!(ahead.status().map(|s| s.as_u16()), Some(409));
    let orchestrator_client::ClientError::Api { body, .. } = &ahead else {
        panic!("{ahead:?}");
    };
    assert_eq!(body.details.as_deref().unwrap_or_default()[0], "last_id: 2");
    let mut stream = app.client.stream_events(query(Some(5)));
    assert_eq!(
        refusal(&mut stream).await.code(),
        Some(ErrorCode::EventsCursorAhead)
    );
    assert!(stream.next().await.is_none(), "a 409 ends the stream");

    // At the newest id, and before it, all is well.
    assert!(
        app.client
            .list_events(&query(Some(2)))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        app.client
            .list_events(&query(Some(1)))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// On PostgreSQL an event id is taken under the event log's row lock, held until the write
/// commits: a write that took id 2 and has not committed holds back every later id, so no
/// reader is shown 3 before 2 (and then passes 2 over for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_in_a_write_not_yet_committed_holds_back_the_later_ones() {
    use diesel_async::RunQueryDsl;
    let Some((db, app)) = crate::postgres::app().await else {
        return;
    };
    let mut stream = app.client.stream_events(query(Some(0)));
    app.start_workflow("first").await;
    assert_eq!(next(&mut stream).await.seq(), 1);
    // Another writer (a replica, here a session of the test's) takes id 2 and writes its
    // event, and has not committed yet.
    let mut writer =
        crate::postgres::in_open_transaction(&db.url, "SELECT take_event_ids(1)").await;
    diesel::sql_query(
        "INSERT INTO events (id, event_type, subject, time, data) \
         SELECT 2, event_type, subject, time, data FROM events WHERE id = 1",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    let client = app.client.clone();
    let later = tokio::spawn(async move {
        client
            .start_workflow(&StartWorkflowRequest::new("second", "started meanwhile"))
            .await
    });
    let early = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
    assert!(
        early.is_err(),
        "nothing is shown before 2 commits: {early:?}"
    );
    diesel::sql_query("COMMIT")
        .execute(&mut writer)
        .await
        .unwrap();
    assert_eq!(next(&mut stream).await.seq(), 2);
    let third = next(&mut stream).await;
    assert_eq!((third.seq(), third.subject.as_str()), (3, "second"));
    later
        .await
        .unwrap()
        .expect("the later write went on once 2 committed");
}

/// A PostgreSQL database restored from an older copy under running servers (every replica
/// takes event ids from the database; SQLite's writer numbers them itself, so a SQLite
/// restore needs the server stopped): the log's ids go back. A stream past the new end ends
/// and its resume is 409, and the new events, given those ids again, reach a stream from the
/// new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_went_back_ends_the_streams_past_its_end() {
    let Some((db, app)) = crate::postgres::app().await else {
        return;
    };
    let mut ahead = app.client.stream_events(query(Some(0)));
    for n in 0..3 {
        app.start_workflow(&format!("before-{n}")).await;
    }
    for expected in 1..=3 {
        assert_eq!(next(&mut ahead).await.id, expected.to_string());
    }
    // The copy: the log as it was after its first event.
    crate::postgres::restore_older_copy(&db.url, 1, "before-0").await;
    let page = app.client.list_events(&query(Some(3))).await.unwrap_err();
    assert_eq!(page.code(), Some(ErrorCode::EventsCursorAhead));
    app.start_workflow("after").await;

    assert_eq!(
        refusal(&mut ahead).await.code(),
        Some(ErrorCode::EventsCursorAhead)
    );
    let mut from_the_end = app.client.stream_events(query(Some(1)));
    let event = next(&mut from_the_end).await;
    assert_eq!((event.id.as_str(), event.subject.as_str()), ("2", "after"));
}

/// Two replicas on one PostgreSQL database, several writers on both at once: a stream on each
/// replica, live while they write, receives every change made through either, each once, in id
/// order with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_on_two_replicas_see_every_change_of_both_in_order() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    let (a, b) = tokio::join!(
        spawn_app_with(|c| c.database_url = url.clone()),
        spawn_app_with(|c| c.database_url = url.clone()),
    );
    const WRITERS_PER_REPLICA: usize = 3;
    const PER_WRITER: usize = 4;
    let total = (2 * WRITERS_PER_REPLICA * PER_WRITER * 2) as u64;
    // Both streams are open and caught up (an empty log) before anyone writes: what they
    // receive comes live, from each replica's feed, while commits land on both.
    let mut readers = Vec::new();
    // Each replica also streams to a raw reader: the typed client passes over an id it has
    // seen, so only the raw text shows an event sent twice.
    let mut raw = Vec::new();
    for app in [&a, &b] {
        let mut stream = app.client.stream_events(query(Some(0)));
        stream.attach().await.unwrap();
        readers.push(tokio::spawn(async move {
            for expected in 1..=total {
                assert_eq!(next(&mut stream).await.seq(), expected);
            }
        }));
        let response = reqwest::Client::new()
            .get(app.url("/events/stream"))
            .header("last-event-id", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        raw.push(response);
    }
    let writers = [a.client.clone(), b.client.clone()]
        .into_iter()
        .enumerate()
        .flat_map(|(replica, client)| {
            (0..WRITERS_PER_REPLICA).map(move |writer| {
                let client = client.clone();
                tokio::spawn(async move {
                    for n in 0..PER_WRITER {
                        let name = format!("r{replica}-w{writer}-{n}");
                        client
                            .start_workflow(&StartWorkflowRequest::new(&name, "raced"))
                            .await
                            .unwrap();
                        advance(&client, &name, "agent_complete").await;
                    }
                })
            })
        })
        .collect::<Vec<_>>();
    for writer in writers {
        writer.await.unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
    for mut response in raw {
        let mut text = String::new();
        let last = format!("id: {total}\nevent: ");
        read_until(&mut response, &mut text, |t| t.contains(&last)).await;
        // The events' messages (a message with only an id is a position), each id once.
        let sent: Vec<u64> = text
            .split("\n\n")
            .filter(|message| message.contains("\nevent: "))
            .filter_map(|message| {
                message
                    .strip_prefix("id: ")?
                    .split('\n')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(sent, (1..=total).collect::<Vec<_>>(), "{text}");
    }
    // Both saw the same log.
    let log = a
        .client
        .list_events(&EventsQuery {
            limit: 1000,
            ..EventsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(log.items.len() as u64, total);
}

/// Streams stay open, so they may take only three quarters of the connections: past that a
/// new one is refused with `Retry-After`, the rest of the API still answers, and a slot frees
/// when a stream's consumer leaves.
#[tokio::test(flavor = "multi_thread")]
async fn streams_leave_a_quarter_of_the_connections_to_the_rest_of_the_api() {
    let app = spawn_app_with(|c| {
        c.max_connections = 4;
        c.events_heartbeat_seconds = 1;
    })
    .await;
    let open = async || {
        reqwest::Client::new()
            .get(app.url("/events/stream"))
            .send()
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = open().await;
        assert_eq!(stream.status(), reqwest::StatusCode::OK);
        streams.push(stream);
    }
    let refused = open().await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    drop(refused);
    // Each on a connection of its own, closed after it: four connections at most.
    assert_eq!(app.metric("orchestrator_event_streams").await, 3.0);
    assert_eq!(app.client.get_summary().await.unwrap().total, 0);

    drop(streams.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = open().await;
        if again.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot of a stream whose consumer left was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server that takes the stream's connection and never answers (one out of connections, or a
/// half-open connection) is not waited for forever: after the stream's idle bound the stream
/// says so and tries again. (The clock is paused: the minute passes at once.)
#[tokio::test(start_paused = true)]
async fn a_stream_whose_server_never_answers_says_so_and_tries_again() {
    let client = Client::new(silent_server().await).unwrap();
    let mut events = client.stream_events(EventsQuery::default());
    for _ in 0..2 {
        // Bounded, so that a stream that waits forever fails the test instead of hanging it.
        let item = tokio::time::timeout(Duration::from_secs(600), events.next())
            .await
            .expect("the stream gives up on the silent server")
            .expect("the stream goes on");
        assert!(
            matches!(item, Err(orchestrator_client::ClientError::NoAnswer { .. })),
            "{item:?}"
        );
    }
}

/// One principal may hold a quarter of the stream slots: past it their next stream is
/// refused, another principal's still opens, and a slot of theirs frees when a stream ends.
#[tokio::test(flavor = "multi_thread")]
async fn one_principal_holds_a_quarter_of_the_streams_at_most() {
    use orchestrator_core::{ActorKind, Role};
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let leaky = crate::helpers::mint(&file, "leaky", ActorKind::Agent, &[Role::Viewer]);
    let other = crate::helpers::mint(&file, "other", ActorKind::Human, &[Role::Viewer]);
    // 16 connections: 12 stream slots, 3 for each share.
    let app = spawn_app_with(|c| {
        c.max_connections = 16;
        c.principals_file = Some(file.clone());
    })
    .await;
    let open = async |token: &str| {
        reqwest::Client::new()
            .get(app.url("/events/stream"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = open(&leaky).await;
        assert_eq!(stream.status(), reqwest::StatusCode::OK);
        held.push(stream);
    }
    let refused = open(&leaky).await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("as many as one may")),
        "{body}"
    );
    assert_eq!(open(&other).await.status(), reqwest::StatusCode::OK);

    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = open(&leaky).await;
        if again.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the share of a stream whose consumer left was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Without principals callers cannot be told apart: only the server's bound holds, not a
/// share per caller.
#[tokio::test(flavor = "multi_thread")]
async fn without_principals_streams_are_not_shared_out() {
    // 16 connections: 12 stream slots, of which a share would be 3.
    let app = spawn_app_with(|c| c.max_connections = 16).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        let stream = reqwest::Client::new()
            .get(app.url("/events/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), reqwest::StatusCode::OK);
        held.push(stream);
    }
}
