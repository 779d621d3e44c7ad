//! Deadlines at the gate through the real server: a stay past `due_at` is overdue on the
//! workflow, in `?overdue=true`, in the summary and the gauge; it is noted once (on two
//! replicas too), and `on_expiry` sends the work back or cancels it as `system`.

use std::time::Duration;

use orchestrator_client::Client;
use orchestrator_core::api::{
    AdvanceRequest, ErrorCode, GateRequest, ListWorkflowsParams, StartWorkflowRequest,
    WorkflowResponse,
};
use orchestrator_core::{ActorKind, Trigger, WorkflowState};

use crate::helpers::{id, spawn_app};

/// Starts `name` with a one-second deadline and `on_expiry`, and brings it to the gate.
async fn at_gate(client: &Client, name: &str, on_expiry: &str) -> WorkflowResponse {
    let mut start = StartWorkflowRequest::new(name, "a feature with a deadline");
    start.gate = Some(GateRequest {
        due_in_seconds: Some(1),
        on_expiry: Some(on_expiry.to_owned()),
        ..GateRequest::default()
    });
    let started = client.start_workflow(&start).await.unwrap();
    assert_eq!(started.gate.due_in_seconds, Some(1));
    assert_eq!(started.gate.due_at, None, "not at the gate yet");
    client
        .advance_workflow(&id(name), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap()
}

/// Waits (up to 6 s: the deadline plus the sweep's 5 s promise) until `done` holds.
async fn within_six_seconds<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 6 seconds"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const FLAGGED: &str = "orchestrator_gate_expiries_total{on_expiry=\"flag\"}";
const REJECTED: &str = "orchestrator_gate_expiries_total{on_expiry=\"reject\"}";

#[tokio::test(flavor = "multi_thread")]
async fn a_gate_past_its_deadline_is_overdue_everywhere_and_noted_once() {
    let app = spawn_app().await;
    let entered = at_gate(&app.client, "late", "flag").await;
    let entered_at = entered.gate.entered_at.unwrap();
    assert_eq!(
        entered.gate.due_at,
        Some(entered_at + chrono::Duration::seconds(1))
    );
    assert!(!entered.gate.overdue);
    app.start_workflow("on-time").await;

    within_six_seconds(|| async { app.metric(FLAGGED).await == 1.0 }).await;
    let late = app.client.get_workflow(&id("late")).await.unwrap();
    assert!(late.gate.overdue);
    assert_eq!(late.state, WorkflowState::Gate1, "flag changes nothing");
    assert_eq!(late.version, 2);

    let overdue = ListWorkflowsParams {
        overdue: true,
        ..ListWorkflowsParams::default()
    };
    let listed = app.client.list_workflows(&overdue).await.unwrap();
    let ids: Vec<_> = listed.items.iter().map(|w| w.feature_id.as_str()).collect();
    assert_eq!(ids, ["late"]);
    let at_the_gate = ListWorkflowsParams {
        state: Some(WorkflowState::Gate1),
        ..overdue.clone()
    };
    assert_eq!(
        app.client
            .list_workflows(&at_the_gate)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let in_phase_1 = ListWorkflowsParams {
        state: Some(WorkflowState::Phase1),
        ..overdue
    };
    assert!(
        app.client
            .list_workflows(&in_phase_1)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(app.client.get_summary().await.unwrap().overdue, 1);
    // A scrape reads the workflows at most once a second: the gauge follows within one.
    within_six_seconds(|| async { app.metric("orchestrator_gates_overdue").await == 1.0 }).await;

    // Noted once: more sweeps pass without a second note.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.metric(FLAGGED).await, 1.0);

    // A decision ends the stay, and with it the overdue count.
    let mut approve = AdvanceRequest::new("human_approved");
    approve.actor = Some("alice".into());
    app.client
        .advance_workflow(&id("late"), &approve)
        .await
        .unwrap();
    assert_eq!(app.client.get_summary().await.unwrap().overdue, 0);
    assert!(
        !app.client
            .get_workflow(&id("late"))
            .await
            .unwrap()
            .gate
            .overdue
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_gate_is_rejected_or_cancelled_by_the_system() {
    let app = spawn_app().await;
    at_gate(&app.client, "sent-back", "reject").await;
    at_gate(&app.client, "called-off", "cancel").await;
    within_six_seconds(|| async {
        let a = app.client.get_workflow(&id("sent-back")).await.unwrap();
        let b = app.client.get_workflow(&id("called-off")).await.unwrap();
        a.state == WorkflowState::Phase1 && b.state == WorkflowState::Idle
    })
    .await;
    for (name, trigger) in [
        ("sent-back", Trigger::HumanRejected),
        ("called-off", Trigger::Cancel),
    ] {
        let history = app.client.get_history(&id(name)).await.unwrap().transitions;
        assert_eq!(history.len(), 3, "{name}: exactly one system entry");
        let last = &history[2];
        assert_eq!(last.trigger, trigger);
        assert_eq!(last.actor.as_ref().unwrap().as_str(), "system");
        assert_eq!(last.actor_kind, Some(ActorKind::System));
        assert_eq!(last.reason.as_ref().unwrap().as_str(), "gate expired");
    }
    assert_eq!(app.metric(REJECTED).await, 1.0);
    assert_eq!(
        app.metric("orchestrator_transitions_total{trigger=\"human_rejected\"}")
            .await,
        1.0
    );
    assert_eq!(app.client.get_summary().await.unwrap().overdue, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_out_of_range_or_an_unknown_on_expiry_is_refused() {
    let app = spawn_app().await;
    for (due, on_expiry, field) in [
        (Some(0), None, "gate.due_in_seconds"),
        (Some(31_536_001), None, "gate.due_in_seconds"),
        (None, Some("later"), "gate.on_expiry"),
    ] {
        let mut start = StartWorkflowRequest::new("refused", "x");
        start.gate = Some(GateRequest {
            due_in_seconds: due,
            on_expiry: on_expiry.map(str::to_owned),
            ..GateRequest::default()
        });
        let error = app.client.start_workflow(&start).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::ValidationError));
        assert!(error.to_string().contains(field), "{error}");
    }
    let status = reqwest::get(app.url("/workflows?overdue=maybe"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    assert_eq!(app.client.get_summary().await.unwrap().total, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_default_deadline_applies_when_a_start_names_none() {
    let app = crate::helpers::spawn_app_with(|c| c.gate_due_seconds = Some(3600)).await;
    let workflow = app.start_workflow("defaulted").await;
    assert_eq!(workflow.gate.due_in_seconds, Some(3600));
    assert_eq!(workflow.gate.on_expiry, orchestrator_core::OnExpiry::Flag);
}

/// Two replicas on one PostgreSQL database sweep the same gates: each stay is noted once
/// and acted on once, whichever replica gets there first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_note_each_overdue_gate_once() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    let (a, b) = tokio::join!(
        crate::helpers::spawn_app_with(|c| c.database_url = url.clone()),
        crate::helpers::spawn_app_with(|c| c.database_url = url.clone()),
    );
    for n in 0..6 {
        at_gate(&a.client, &format!("flagged-{n}"), "flag").await;
    }
    for n in 0..4 {
        at_gate(&b.client, &format!("rejected-{n}"), "reject").await;
    }
    let noted = || async {
        (
            a.metric(FLAGGED).await + b.metric(FLAGGED).await,
            a.metric(REJECTED).await + b.metric(REJECTED).await,
        )
    };
    within_six_seconds(|| async { noted().await == (6.0, 4.0) }).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(noted().await, (6.0, 4.0));
    for n in 0..4 {
        let history = a
            .client
            .get_history(&id(&format!("rejected-{n}")))
            .await
            .unwrap()
            .transitions;
        let rejections = history
            .iter()
            .filter(|t| t.trigger == Trigger::HumanRejected)
            .count();
        assert_eq!(rejections, 1);
    }
}

/// A gate whose note cannot be written (its workflow's row held by another transaction past
/// longer than the note waits for it) does not hold up the gates due after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_that_cannot_be_noted_does_not_hold_up_the_next() {
    use diesel_async::RunQueryDsl;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    let app = crate::helpers::spawn_app_with(|c| c.database_url = url).await;
    at_gate(&app.client, "stuck", "flag").await;
    at_gate(&app.client, "next", "flag").await;
    // Held before either is due (in a second); the sweep reaches `stuck` first.
    let mut other = crate::postgres::in_open_transaction(
        &db.url,
        "SELECT 1 FROM workflows WHERE feature_id = 'stuck' FOR UPDATE",
    )
    .await;
    assert_eq!(app.metric(FLAGGED).await, 0.0);
    // A sweep waits a second for `stuck`, then notes `next` (the second sweep, if the first
    // ran between the two deadlines; from then on `next` would be tried first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while app.metric(FLAGGED).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "`next` was not noted while `stuck` was held"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let next = app.client.get_workflow(&id("next")).await.unwrap();
    assert!(next.gate.overdue);
    diesel::sql_query("COMMIT")
        .execute(&mut other)
        .await
        .unwrap();
    within_six_seconds(|| async { app.metric(FLAGGED).await == 2.0 }).await;
}
