//! Slow experts: a consultation answers 202 `asking` once the wait runs out, blocks the gate
//! while it is asked (from then: inside the wait no listing, event or gate sees it), and ends
//! as the hub said or `failed`; nothing is seen of an ask that fails inside the wait, and an ask whose
//! client hangs up still runs to its end; asks past the cap are refused before anything is
//! stored; a stop or a crash leaves `failed` / `interrupted`, never `asking` forever.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_client::Client;
use orchestrator_core::api::{AdvanceRequest, ConsultRequest, ErrorCode, StartWorkflowRequest};
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::{Consultation, FeatureId, WorkflowState};
use orchestrator_server::hub::stand_in::{Fault, StandInHub};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{
    TestApp, ask_held, ask_in_task, free_port, id, server_on, spawn_app_with, sqlite_server,
    wait_healthy,
};

/// Asks `question` over raw HTTP, returning the status and the body.
async fn ask_raw(app: &TestApp, f: &FeatureId, question: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.url(&format!("/workflow/{f}/consultations")))
        .json(&serde_json::json!({"topic": "architecture", "question": question}))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn listed(client: &Client, f: &FeatureId) -> Vec<Consultation> {
    client
        .list_consultations(f)
        .await
        .expect("listing works")
        .items
}

/// Waits (up to `limit`) until the workflow's consultations are no longer `asking`.
async fn settled(client: &Client, f: &FeatureId, limit: Duration) -> Vec<Consultation> {
    let deadline = Instant::now() + limit;
    loop {
        let items = listed(client, f).await;
        if items.iter().all(|c| c.status != ConsultationStatus::Asking) {
            return items;
        }
        assert!(Instant::now() < deadline, "still asking: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn started(app: &TestApp, name: &str) -> FeatureId {
    app.start_workflow(name).await;
    id(name)
}

/// A server whose consultation requests wait `wait` seconds (the hub's timeout 30), with
/// workflow `name` at the gate.
async fn at_the_gate(name: &str, wait: u64) -> (TestApp, FeatureId) {
    let app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = wait;
        c.agent_hub_timeout_seconds = 30;
    })
    .await;
    let f = started(&app, name).await;
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    (app, f)
}

/// A server (5 s wait) with workflow `name` at the gate and an ask of it that the hub holds:
/// the ask's request, still waiting, runs in a task of its own.
async fn ask_held_at_the_gate(
    name: &str,
) -> (
    TestApp,
    FeatureId,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (app, f) = at_the_gate(name, 5).await;
    let asking = ask_held(&app, &f).await;
    (app, f, asking)
}

/// Another connection's write lock on the app's SQLite file, held until it is committed.
fn lock_database(app: &TestApp) -> diesel::SqliteConnection {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let path = app.dir.path().join("orchestrator.db");
    let mut other = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    other
}

fn unlock_database(mut other: diesel::SqliteConnection) {
    use diesel::connection::SimpleConnection;
    other.batch_execute("COMMIT").unwrap();
}

/// Waits (up to `limit`) until the one ask request sent is counted as abandoned by its client
/// (499): the server has let the request go.
async fn until_abandoned(app: &TestApp, limit: Duration) {
    let abandoned = r#"orchestrator_http_requests_total{route="/workflow/{feature_id}/consultations",method="POST",status="499"}"#;
    let deadline = Instant::now() + limit;
    while !app.metrics().await.contains(abandoned) {
        assert!(Instant::now() < deadline, "{}", app.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.metric(abandoned).await, 1.0);
}

/// The workflow's one ask lands (within 15 s) answered, and so holds the gate no longer: an
/// approval passes.
async fn landed_and_approved(client: &Client, f: &FeatureId) {
    let items = first_listed(client, f).await;
    assert_eq!(items[0].status, ConsultationStatus::Resolved);
    let approved = client
        .advance_workflow(f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    assert_eq!(approved.state, WorkflowState::Phase2);
}

/// Waits (up to 15 s) until the workflow has a consultation listed.
async fn first_listed(client: &Client, f: &FeatureId) -> Vec<Consultation> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let items = listed(client, f).await;
        if !items.is_empty() {
            return items;
        }
        assert!(Instant::now() < deadline, "the ask was left behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_expert_gets_202_asking_which_blocks_the_gate_until_the_answer_lands() {
    let (app, f) = at_the_gate("slow-expert", 1).await;

    let started_at = Instant::now();
    let (status, body) = ask_raw(&app, &f, "Which queue should orders use? [delay=3]").await;
    assert_eq!(status, 202, "{body}");
    assert!(
        started_at.elapsed() < Duration::from_secs(3),
        "answered after the wait only"
    );
    assert_eq!(body["status"], "asking");
    assert_eq!(
        (&body["answer"], &body["confidence"]),
        (&Value::Null, &Value::Null)
    );
    let id = body["id"].as_str().unwrap().to_owned();

    // Seen by every reader, and it holds the gate.
    let gated = app.client.get_workflow(&f).await.unwrap();
    assert_eq!(
        serde_json::to_value(&gated.gate.blocked_by).unwrap(),
        serde_json::json!([{"kind": "approvals", "have": 0, "need": 1},
                           {"kind": "asking", "consultation_id": id}])
    );
    let items = listed(&app.client, &f).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status, ConsultationStatus::Asking);
    let refused = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .expect_err("an ask in flight blocks the gate");
    assert_eq!(refused.code(), Some(ErrorCode::GateBlocked), "{refused}");
    let details = match &refused {
        orchestrator_client::ClientError::Api { body, .. } => body.details.clone(),
        other => panic!("not an API error: {other}"),
    };
    assert_eq!(
        details,
        Some(vec![format!("consultation {id} is still being asked")])
    );

    // The answer lands in the background; the gate opens.
    let items = settled(&app.client, &f, Duration::from_secs(15)).await;
    assert_eq!(items[0].status, ConsultationStatus::Resolved);
    assert!(items[0].answer.is_some() && items[0].confidence == Some(90));
    assert_eq!(items[0].id.to_string(), id);
    let approved = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    assert_eq!(approved.state, WorkflowState::Phase2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_that_fails_after_the_wait_is_failed_with_a_code_in_our_words() {
    let app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = 1;
        c.agent_hub_timeout_seconds = 3;
    })
    .await;
    let f = started(&app, "slow-then-gone").await;
    let (status, _) = ask_raw(&app, &f, "Will this ever be answered? [delay=20]").await;
    assert_eq!(status, 202);

    let items = settled(&app.client, &f, Duration::from_secs(15)).await;
    assert_eq!(items[0].status, ConsultationStatus::Failed);
    let error = items[0].error.as_ref().expect("a failed ask says why");
    assert_eq!(error.code, "agent_hub_unavailable");
    assert!(!error.message.contains("127.0.0.1"), "{error:?}");
    assert!(!error.message.contains("reqwest"), "{error:?}");
    assert_eq!(items[0].answer, None);
    // The board says why too.
    let page = app.text("/board/feature/slow-then-gone").await;
    assert!(
        page.contains(&format!(r#"<p class="text failure">{}</p>"#, error.message)),
        "{page}"
    );

    // A failed ask holds nothing.
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .expect("a failed consultation does not block the gate");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_inside_the_wait_is_seen_by_no_listing_or_gate_and_a_failure_keeps_nothing() {
    // While the expert thinks (inside the wait), the ask is a reservation: no listing shows
    // it, no event tells of it, and the gate does not see it.
    let (app, f, asking) = ask_held_at_the_gate("hidden").await;
    assert!(
        listed(&app.client, &f).await.is_empty(),
        "a reservation was seen"
    );
    let blocked_by = app.client.get_workflow(&f).await.unwrap().gate.blocked_by;
    assert_eq!(
        serde_json::to_value(&blocked_by).unwrap(),
        serde_json::json!([{"kind": "approvals", "have": 0, "need": 1}])
    );
    let approved = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .expect("an ask inside its wait does not hold the gate");
    assert_eq!(approved.state, WorkflowState::Phase2);
    // Answered after the approval, it is kept (the workflow is still active), asked at the
    // gate.
    app.hub.release();
    assert_eq!(asking.await.unwrap().unwrap().status(), 201);
    let items = listed(&app.client, &f).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].asked_in_state, WorkflowState::Gate1);
    // Told of once kept, after the approval.
    let events = app.client.list_events(&Default::default()).await.unwrap();
    let types: Vec<_> = events.items.iter().map(|e| e.event_type).collect();
    assert_eq!(
        &types[types.len() - 2..],
        [
            orchestrator_core::EventType::WorkflowTransitioned,
            orchestrator_core::EventType::ConsultationCreated
        ],
        "{types:?}"
    );

    // A failure inside the wait answers as before and keeps nothing.
    app.hub.inject(Fault::PlainText500);
    let (status, body) = ask_raw(&app, &f, "Will the hub fail on this one?").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(listed(&app.client, &f).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_whose_client_goes_away_inside_the_wait_still_runs_to_its_end() {
    let (app, f, asking) = ask_held_at_the_gate("gone").await;
    // The client hangs up while the hub thinks; the hub answers afterwards.
    asking.abort();
    assert!(asking.await.is_err(), "the request was cut off");
    // Counted as abandoned by its client (499), not left out of the request counts.
    until_abandoned(&app, Duration::from_secs(15)).await;
    app.hub.release();

    // Stored with its answer as if the request had waited, so it holds the gate no longer.
    landed_and_approved(&app.client, &f).await;
}

/// A client that hangs up while its ask's reservation waits for the database: the reservation
/// is written once the database lets it, and the ask then runs to its end — it is not left
/// behind, unseen, until the sweep of abandoned asks.
#[tokio::test(flavor = "multi_thread")]
async fn an_ask_whose_client_goes_away_before_its_reservation_is_written_still_runs_to_its_end() {
    let (app, f) = at_the_gate("gone-early", 5).await;
    let other = lock_database(&app);
    let asking = ask_in_task(&app, &f);
    // The request is in, its reservation waiting for the lock (the database waits 5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    asking.abort();
    until_abandoned(&app, Duration::from_secs(3)).await;
    unlock_database(other);

    landed_and_approved(&app.client, &f).await;
}

/// A background ask whose answer comes while the database is locked past its wait: the
/// answer is stored once the lock is gone, not lost with the ask left `asking`.
#[tokio::test(flavor = "multi_thread")]
async fn a_background_asks_answer_is_stored_once_the_database_is_free_again() {
    let (app, f) = at_the_gate("locked-out", 1).await;
    let asking = ask_held(&app, &f).await;
    let accepted = asking.await.unwrap().unwrap();
    assert_eq!(accepted.status(), 202);
    let other = lock_database(&app);
    app.hub.release();
    // The first try to store the answer waits the database's 5 s in vain.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        listed(&app.client, &f).await[0].status,
        ConsultationStatus::Asking
    );
    unlock_database(other);

    let items = settled(&app.client, &f, Duration::from_secs(20)).await;
    assert_eq!(items[0].status, ConsultationStatus::Resolved);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_cap_an_ask_is_refused_before_anything_is_stored() {
    let app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = 1;
        c.agent_hub_timeout_seconds = 30;
        c.agent_hub_max_asks = 1;
    })
    .await;
    let f = started(&app, "capped").await;
    let (first, _) = ask_raw(&app, &f, "A long one, please [delay=4]").await;
    assert_eq!(first, 202);

    let response = reqwest::Client::new()
        .post(app.url(&format!("/workflow/{f}/consultations")))
        .json(&serde_json::json!({"topic": "architecture", "question": "And one more, quickly?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(
        listed(&app.client, &f).await.len(),
        1,
        "the refused ask was stored"
    );
    // An ask that could never succeed is told why, not to try again later.
    for (feature, status, code) in [
        ("nobody", 404, "WORKFLOW_NOT_FOUND"),
        ("ended", 409, "WORKFLOW_NOT_ACTIVE"),
    ] {
        if feature == "ended" {
            let ended = started(&app, "ended").await;
            app.client
                .advance_workflow(&ended, &AdvanceRequest::new("cancel"))
                .await
                .unwrap();
        }
        let (got, body) = ask_raw(&app, &id(feature), "Is there any use in asking?").await;
        assert_eq!(got, status, "{feature}: {body}");
        assert_eq!(body["error"]["code"], code, "{feature}");
    }

    // Once the first ends, asking works again.
    settled(&app.client, &f, Duration::from_secs(15)).await;
    let (again, _) = ask_raw(&app, &f, "And one more, quickly?").await;
    assert_eq!(again, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_a_background_ask_leaves_it_failed_interrupted() {
    let app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = 1;
        c.agent_hub_timeout_seconds = 120;
    })
    .await;
    let f = started(&app, "stopped").await;
    let (status, _) = ask_raw(&app, &f, "This takes a minute [delay=60]").await;
    assert_eq!(status, 202);

    // The graceful stop gives background asks a few seconds, then records them interrupted.
    let app = app.restart().await;
    let items = listed(&app.client, &f).await;
    assert_eq!(items[0].status, ConsultationStatus::Failed);
    assert_eq!(items[0].error.as_ref().unwrap().code, "interrupted");
}

/// An ask still inside a wait as long as the hub's timeout when the server stops is not left
/// behind as a hidden reservation: it is published and recorded `interrupted` by the
/// stop itself (found so in the store before any restart could recover it).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_a_long_wait_records_the_ask_interrupted() {
    let mut app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = 120;
        c.agent_hub_timeout_seconds = 120;
    })
    .await;
    let f = started(&app, "waiting").await;
    let asking = ask_held(&app, &f).await;
    asking.abort();
    let _ = asking.await;
    app.stop().await;

    let database = app.dir.path().join("orchestrator.db");
    let store = orchestrator_server::storage::connect(
        &orchestrator_server::storage::DatabaseUrl::SqliteFile(database),
        1,
    )
    .await
    .unwrap();
    let items = store.consultations(&f).await.unwrap();
    assert_eq!(items.len(), 1, "published, not a hidden reservation");
    assert_eq!(items[0].status, ConsultationStatus::Failed);
    assert_eq!(items[0].error.as_ref().unwrap().code, "interrupted");
    assert!(store.gate_blockers(&[f]).await.unwrap().is_empty());
}

/// Starts feature `name` through `client` and leaves a question to the stand-in hub under way
/// (two minutes long; the server waits 1 s for it).
async fn asking_on(client: &Client, name: &str) -> FeatureId {
    client
        .start_workflow(&StartWorkflowRequest::new(name, "a feature"))
        .await
        .unwrap();
    let f = id(name);
    let asking = client
        .create_consultation(&f, &ConsultRequest::new("architecture", "Slow [delay=120]"))
        .await
        .unwrap();
    assert_eq!(asking.status, ConsultationStatus::Asking);
    f
}

fn launch(database: &Path, port: u16, hub: &str) -> Child {
    sqlite_server(database, port)
        .env("AGENT_HUB_URL", hub)
        .env("AGENT_HUB_WAIT_SECONDS", "1")
        .spawn()
        .expect("server binary starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_an_ask_leaves_it_failed_interrupted_after_restart() {
    let hub = StandInHub::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hub.serve(listener, std::future::pending()));

    let dir = TempDir::new().unwrap();
    let database = dir.path().join("crash.db");
    let port = free_port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let mut server = launch(&database, port, &hub_url);
    wait_healthy(&client).await;
    let f = asking_on(&client, "crashed").await;

    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = launch(&database, port, &hub_url);
    wait_healthy(&client).await;
    let items = listed(&client, &f).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status, ConsultationStatus::Failed);
    assert_eq!(items[0].error.as_ref().unwrap().code, "interrupted");
}

/// Whether any session but the asker's is connected to the PostgreSQL database at `url`.
async fn others_connected(url: &str) -> bool {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Others {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        others: i64,
    }
    let mut conn = diesel_async::AsyncPgConnection::establish(url)
        .await
        .unwrap();
    let others: Vec<Others> = diesel::sql_query(
        "SELECT count(*) AS others FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database()",
    )
    .load(&mut conn)
    .await
    .unwrap();
    others[0].others > 0
}

/// On PostgreSQL a server that finds nothing else connected to its database fails every ask it
/// finds at start-up, however young, as a SQLite server does; one that starts beside a running
/// replica leaves a young ask alone (it may be the replica's).
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_postgres_server_fails_every_left_over_ask_and_one_beside_a_replica_does_not() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let hub = StandInHub::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hub.serve(listener, std::future::pending()));
    let port = free_port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let launch = || {
        server_on(port, &db.url)
            .env("AGENT_HUB_URL", &hub_url)
            .env("AGENT_HUB_WAIT_SECONDS", "1")
            .spawn()
            .expect("server binary starts")
    };
    let crash = |mut server: Child| {
        server.kill().unwrap();
        server.wait().unwrap();
    };
    let mut server = launch();
    wait_healthy(&client).await;
    let f = asking_on(&client, "alone").await;

    // A replica runs beside it; the server crashes and starts again: the ask may be the
    // replica's, and it is young, so it is left alone.
    let mut replica = spawn_app_with(|c| {
        c.database_url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    })
    .await;
    crash(server);
    server = launch();
    wait_healthy(&client).await;
    assert_eq!(
        listed(&client, &f).await[0].status,
        ConsultationStatus::Asking
    );

    // Alone: the replica stopped, the server crashes again and starts again.
    replica.stop().await;
    crash(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while others_connected(&db.url).await {
        assert!(
            Instant::now() < deadline,
            "the stopped servers' sessions end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server = launch();
    wait_healthy(&client).await;
    let items = listed(&client, &f).await;
    crash(server);
    assert_eq!(items[0].status, ConsultationStatus::Failed);
    assert_eq!(items[0].error.as_ref().unwrap().code, "interrupted");
}

/// The sweep's two rules, on a clock the test moves: a server alone on its database (SQLite)
/// fails every ask it finds at start-up; a server sharing it (PostgreSQL replicas) fails only
/// the asks older than any live one could be, since a younger one may be another replica's.
#[tokio::test(flavor = "multi_thread")]
async fn leftover_asks_are_failed_by_age_when_replicas_share_the_database() {
    use chrono::TimeZone;
    use orchestrator_core::{InMemoryWorkflowRepository, ManualClock, Orchestrator};
    use orchestrator_server::http::{AskPolicy, Limits};

    let t0 = chrono::Utc
        .with_ymd_and_hms(2026, 11, 24, 10, 0, 0)
        .unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let orchestrator =
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_clock(clock.clone());
    let f = id("left-over");
    orchestrator
        .start(
            orchestrator_core::api::StartWorkflowRequest::new("left-over", "x")
                .try_into()
                .unwrap(),
        )
        .await
        .unwrap();
    let ask = |question: &str| orchestrator_core::Consult {
        topic: orchestrator_core::hub::Topic::parse("architecture").unwrap(),
        question: orchestrator_core::Question::parse(question).unwrap(),
        context: None,
    };
    let old = orchestrator
        .reserve_consultation(&f, ask("Asked two hours ago, by a server that stopped"))
        .await
        .unwrap();
    orchestrator.publish(old.clone()).await.unwrap();
    clock.advance(chrono::Duration::hours(2));
    let young = orchestrator
        .reserve_consultation(&f, ask("Asked just now, maybe by a live replica"))
        .await
        .unwrap();
    orchestrator.publish(young.clone()).await.unwrap();

    let limits = Limits {
        asks: AskPolicy {
            abandoned_after: Duration::from_secs(3600),
            ..AskPolicy::default()
        },
        ..Limits::default()
    };
    let app = crate::helpers::open_app(orchestrator.clone(), limits);
    let status = |id| {
        let orchestrator = orchestrator.clone();
        let f = f.clone();
        async move {
            let items = orchestrator.consultations(&f).await.unwrap();
            let c = items.into_iter().find(|c| c.id == id).unwrap();
            (c.status, c.error.map(|e| e.code))
        }
    };

    app.recover_asks(false).await;
    assert_eq!(
        status(old.id).await,
        (ConsultationStatus::Failed, Some("interrupted".to_owned()))
    );
    assert_eq!(status(young.id).await, (ConsultationStatus::Asking, None));

    // A server alone on its database, starting a moment later: every ask is left over.
    clock.advance(chrono::Duration::seconds(1));
    app.recover_asks(true).await;
    assert_eq!(
        status(young.id).await,
        (ConsultationStatus::Failed, Some("interrupted".to_owned()))
    );
}
