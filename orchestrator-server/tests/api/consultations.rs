//! Consultations against the stand-in Agent Hub on port 0: answers, escalations and the gate,
//! hub sessions, and every way the hub can fail — each with its status, and nothing changed.

use std::time::Duration;

use orchestrator_client::ClientError;
use orchestrator_core::api::{
    AdvanceRequest, ConsultRequest, ErrorCode, HealthStatus, ListWorkflowsParams, RespondRequest,
    StartWorkflowRequest, WorkflowResponse,
};
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::hub::HumanAction;
use orchestrator_core::{FeatureId, WorkflowState};
use orchestrator_server::hub::stand_in::Fault;

use crate::helpers::{TestApp, dead_url, id, silent_server, spawn_app, spawn_app_with};

const QUESTION: &str = "How should we split the orders service?";

fn ask(topic: &str, question: &str) -> ConsultRequest {
    ConsultRequest::new(topic, question)
}

async fn started(app: &TestApp, name: &str) -> FeatureId {
    app.start_workflow(name).await;
    id(name)
}

async fn to_gate(app: &TestApp, f: &FeatureId) {
    app.client
        .advance_workflow(f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
}

/// The request failed with `status` and `code`, no consultation was stored, and the workflow
/// is as it was `before` the request. At the gate, nothing of the ask is left holding it: a
/// human's approval passes (so the workflow moves on, and is not asked again).
async fn assert_refused(
    app: &TestApp,
    f: &FeatureId,
    before: &WorkflowResponse,
    result: Result<impl std::fmt::Debug, ClientError>,
    status: u16,
    code: ErrorCode,
) {
    let err = result.expect_err("the ask should fail");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
    assert_eq!(err.code(), Some(code), "{err}");
    assert!(
        app.client
            .list_consultations(f)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let after = app.client.get_workflow(f).await.unwrap();
    assert_eq!(
        (after.version, after.updated_at),
        (before.version, before.updated_at)
    );
    if after.state == WorkflowState::Gate1 {
        app.client
            .advance_workflow(f, &AdvanceRequest::new("human_approved"))
            .await
            .expect("nothing of a failed ask holds the gate");
    }
}

/// Asks the testing expert [`QUESTION`] about `f` and asserts the ask is refused with `status`
/// and `code`, leaving nothing behind ([`assert_refused`]).
async fn ask_refused(app: &TestApp, f: &FeatureId, status: u16, code: ErrorCode) {
    let before = app.client.get_workflow(f).await.unwrap();
    let result = app
        .client
        .create_consultation(f, &ask("testing", QUESTION))
        .await;
    assert_refused(app, f, &before, result, status, code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confident_answer_is_stored_resolved_and_changes_no_workflow() {
    let app = spawn_app().await;
    let f = started(&app, "resolved").await;
    let before = app.client.get_workflow(&f).await.unwrap();

    let consultation = app
        .client
        .create_consultation(&f, &ask("architecture", QUESTION))
        .await
        .unwrap();
    assert_eq!(consultation.status, ConsultationStatus::Resolved);
    assert_eq!(consultation.confidence, Some(90));
    assert_eq!(
        consultation.final_answer.as_deref(),
        consultation.answer.as_deref()
    );
    assert_eq!(
        (
            consultation.asked_in_state,
            consultation.escalation_id.clone()
        ),
        (WorkflowState::Phase1, None)
    );

    let after = app.client.get_workflow(&f).await.unwrap();
    assert_eq!(
        (after.version, after.updated_at),
        (before.version, before.updated_at)
    );
    let listed = app.client.list_consultations(&f).await.unwrap();
    assert_eq!(listed.items, vec![consultation]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_blocks_the_gate_until_a_human_confirms() {
    let app = spawn_app().await;
    let f = started(&app, "gated").await;
    let pending = app
        .client
        .create_consultation(
            &f,
            &ask("security", "Is our token signing safe? [confidence=40]"),
        )
        .await
        .unwrap();
    assert_eq!(pending.status, ConsultationStatus::PendingHuman);
    let escalation = pending.escalation_id.clone().expect("escalated");
    // The answer to the change that enters the gate says what holds it, and so does that
    // answer kept for its key.
    let keyed = app.client.with_idempotency_key("complete-gated");
    let entered = keyed
        .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    let replayed = keyed
        .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    let free = started(&app, "free").await;
    to_gate(&app, &free).await;
    // The workflow says what holds its gate, and so does a listing, each gate its own.
    let gated = app.client.get_workflow(&f).await.unwrap();
    assert_eq!(
        serde_json::to_value(&gated.gate.blocked_by).unwrap(),
        serde_json::json!([{"kind": "approvals", "have": 0, "need": 1},
                           {"kind": "escalation", "consultation_id": pending.id,
                            "escalation_id": escalation}])
    );
    assert_eq!(entered.gate.blocked_by, gated.gate.blocked_by);
    assert_eq!(replayed, entered);
    // A start that finds the workflow answers as a read does.
    let mut again = StartWorkflowRequest::new(f.as_str(), "feature gated");
    again.use_existing = Some(true);
    let existing = app.client.start_workflow(&again).await.unwrap();
    assert_eq!(existing.gate.blocked_by, gated.gate.blocked_by);
    let listed = app
        .client
        .list_workflows(&ListWorkflowsParams {
            state: Some(WorkflowState::Gate1),
            ..Default::default()
        })
        .await
        .unwrap();
    let holds: Vec<(String, serde_json::Value)> = listed
        .items
        .iter()
        .map(|w| {
            let held = serde_json::to_value(&w.gate.blocked_by).unwrap();
            (w.feature_id.to_string(), held)
        })
        .collect();
    assert_eq!(
        holds,
        vec![
            (
                "free".to_owned(),
                serde_json::json!([{"kind": "approvals", "have": 0, "need": 1}])
            ),
            (
                "gated".to_owned(),
                serde_json::to_value(&gated.gate.blocked_by).unwrap()
            ),
        ]
    );

    let err = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GateBlocked));
    let ClientError::Api { body, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        body.details.clone().unwrap_or_default(),
        vec![escalation.to_string()]
    );
    assert_eq!(
        app.client.get_workflow(&f).await.unwrap().state,
        WorkflowState::Gate1
    );

    assert!(app.hub.resolve(&escalation.0, HumanAction::Confirm, None));
    let open = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    assert_eq!(open.state, WorkflowState::Phase2);
    let stored = &app.client.list_consultations(&f).await.unwrap().items[0];
    assert_eq!(
        (stored.status, stored.human_action),
        (ConsultationStatus::Resolved, Some(HumanAction::Confirm))
    );
    assert_eq!(stored.final_answer.as_deref(), pending.answer.as_deref());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_raised_while_an_approval_asks_the_hub_refuses_that_approval() {
    let app = spawn_app().await;
    let f = started(&app, "raced").await;
    let first = app
        .client
        .create_consultation(
            &f,
            &ask("security", "Is the key store safe? [confidence=40]"),
        )
        .await
        .unwrap();
    to_gate(&app, &f).await;
    let settled = first.escalation_id.clone().expect("escalated");
    assert!(app.hub.resolve(&settled.0, HumanAction::Confirm, None));

    // The approval asks the hub about the first escalation (now settled); while the hub
    // holds that answer, the agent asks a question the hub escalates too.
    app.hub.hold_next_lookup();
    let approving = {
        let client = app.client.clone();
        let f = f.clone();
        tokio::spawn(async move {
            client
                .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), app.hub.until_held(1))
        .await
        .expect("the approval asks the hub");
    let second = app
        .client
        .create_consultation(&f, &ask("security", "And the backups? [confidence=40]"))
        .await
        .unwrap();
    let raised = second.escalation_id.clone().expect("escalated");
    app.hub.release();

    // Its judge saw no blocker, but its commit finds one; judged again, it names it.
    let err = approving
        .await
        .unwrap()
        .expect_err("the new escalation holds the gate");
    assert_eq!(err.code(), Some(ErrorCode::GateBlocked), "{err}");
    let ClientError::Api { body, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(body.details.clone(), Some(vec![raised.to_string()]));
    assert_eq!(
        app.client.get_workflow(&f).await.unwrap().state,
        WorkflowState::Gate1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_the_hub_forgot_needs_a_reroute_and_never_blocks_an_approval() {
    let app = spawn_app().await;
    let f = started(&app, "forgotten").await;
    let pending = app
        .client
        .create_consultation(&f, &ask("security", "Is the vault sealed? [confidence=30]"))
        .await
        .unwrap();
    assert_eq!(pending.status, ConsultationStatus::PendingHuman);
    to_gate(&app, &f).await;
    // The hub loses its database.
    app.hub.forget_escalations();
    let open = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    assert_eq!(open.state, WorkflowState::Phase2);
    let stored = &app.client.list_consultations(&f).await.unwrap().items[0];
    assert_eq!(stored.status, ConsultationStatus::NeedsReroute);
    assert_eq!(stored.final_answer, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn added_context_needs_a_reroute_and_carries_the_human_and_the_doubts() {
    let app = spawn_app().await;
    let f = started(&app, "context").await;
    let pending = app
        .client
        .create_consultation(
            &f,
            &ask("security", "Which cipher for backups? [confidence=20]"),
        )
        .await
        .unwrap();
    assert!(!pending.uncertainty_reasons.is_empty(), "{pending:?}");
    let escalation = pending.escalation_id.clone().expect("escalated");
    app.hub.resolve(
        &escalation.0,
        HumanAction::AddContext,
        Some("backups are kept for ten years"),
    );
    let stored = &app.client.list_consultations(&f).await.unwrap().items[0];
    assert_eq!(
        (stored.status, stored.human_action),
        (
            ConsultationStatus::NeedsReroute,
            Some(HumanAction::AddContext)
        )
    );
    assert_eq!(stored.final_answer, None);
    assert_eq!(
        stored.human_response.as_deref(),
        Some("backups are kept for ten years")
    );
    assert_eq!(stored.human_responder.as_deref(), Some("stand-in reviewer"));
    assert!(stored.resolved_at.is_some());
    // It no longer blocks the gate.
    to_gate(&app, &f).await;
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_questions_share_one_hub_session_and_close_the_others() {
    let app = spawn_app().await;
    let f = started(&app, "first").await;
    // Every asker opens a session before any has one stored: the race happens every time.
    app.hub.hold_next_sessions(4);
    let asks: Vec<_> = (0..4)
        .map(|n| {
            let client = app.client.clone();
            let f = f.clone();
            tokio::spawn(async move {
                client
                    .create_consultation(&f, &ask("testing", &format!("{QUESTION} (asker {n})")))
                    .await
            })
        })
        .collect();
    app.hub.until_held(4).await;
    for _ in 0..4 {
        app.hub.release();
    }
    for ask in asks {
        ask.await.unwrap().unwrap();
    }
    // Every ask that reached the hub used one session; every other session opened was closed.
    let sessions: std::collections::HashSet<_> =
        app.hub.asks().into_iter().map(|a| a.session_id).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(app.hub.sessions_created(), 4);
    // The closes are sent on tasks of their own, beside the questions.
    for _ in 0..100 {
        if app.hub.sessions_created() - app.hub.sessions_closed() <= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.hub.sessions_created() - app.hub.sessions_closed(),
        1,
        "opened {}, closed {}",
        app.hub.sessions_created(),
        app.hub.sessions_closed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consultation_racing_a_cancel_is_not_stored() {
    let app = spawn_app().await;
    let f = started(&app, "racing").await;
    for round in 0..3 {
        // The hub keeps the question until the cancel has landed, however slow the machine.
        app.hub.inject(Fault::Hold);
        let asking = {
            let client = app.client.clone();
            let f = f.clone();
            tokio::spawn(async move {
                client
                    .create_consultation(&f, &ask("testing", QUESTION))
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(30), app.hub.until_held(1))
            .await
            .expect("the question reaches the hub");
        app.client
            .advance_workflow(&f, &AdvanceRequest::new("cancel"))
            .await
            .unwrap();
        app.hub.release();
        let err = asking.await.unwrap().unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::WorkflowNotActive),
            "round {round}: {err}"
        );
        assert!(
            app.client
                .list_consultations(&f)
                .await
                .unwrap()
                .items
                .is_empty(),
            "round {round}"
        );
        app.client
            .advance_workflow(&f, &AdvanceRequest::new("start"))
            .await
            .unwrap();
    }
}

/// A workflow with one consultation escalated to a human.
async fn escalated(app: &TestApp, name: &str) -> (FeatureId, orchestrator_core::Consultation) {
    let f = started(app, name).await;
    let pending = app
        .client
        .create_consultation(
            &f,
            &ask(
                "security",
                "Are these keys rotated often enough? [confidence=30]",
            ),
        )
        .await
        .unwrap();
    assert_eq!(pending.status, ConsultationStatus::PendingHuman);
    (f, pending)
}

fn answer(action: &str, response: Option<&str>) -> RespondRequest {
    RespondRequest {
        action: action.to_owned(),
        response: response.map(str::to_owned),
        actor: Some("sec-team".to_owned()),
        actor_kind: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_says_so_may_not_answer_an_escalation() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "agent-answers").await;
    let by_agent = RespondRequest {
        actor_kind: Some("agent".to_owned()),
        ..answer("confirm", None)
    };
    let refused = app
        .client
        .respond_to_consultation(&f, &pending.id, &by_agent)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    // Still waiting for a human, who may answer.
    let listed = app.client.list_consultations(&f).await.unwrap().items;
    assert_eq!(listed[0].status, ConsultationStatus::PendingHuman);
    let human = RespondRequest {
        actor_kind: Some("human".to_owned()),
        ..answer("confirm", None)
    };
    let confirmed = app
        .client
        .respond_to_consultation(&f, &pending.id, &human)
        .await
        .unwrap();
    assert_eq!(confirmed.status, ConsultationStatus::Resolved);
    // A kind that is not one is the field's 400.
    let unknown = RespondRequest {
        actor_kind: Some("robot".to_owned()),
        ..answer("confirm", None)
    };
    let refused = app
        .client
        .respond_to_consultation(&f, &pending.id, &unknown)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::ValidationError),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_answers_an_escalation_through_the_orchestrator() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "reviewed").await;
    to_gate(&app, &f).await;
    let corrected = app
        .client
        .respond_to_consultation(&f, &pending.id, &answer("correct", Some("rotate monthly")))
        .await
        .unwrap();
    assert_eq!(
        (corrected.status, corrected.final_answer.as_deref()),
        (ConsultationStatus::Resolved, Some("rotate monthly"))
    );
    assert_eq!(corrected.human_responder.as_deref(), Some("sec-team"));
    // Stored, and the gate opens.
    assert_eq!(
        app.client.list_consultations(&f).await.unwrap().items[0],
        corrected
    );
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    // Nothing left to answer.
    let again = app
        .client
        .respond_to_consultation(&f, &pending.id, &answer("confirm", None))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Some(ErrorCode::ConsultationNotPending),
        "{again}"
    );
    // The status as the API spells it, in the message as in the details.
    let body = again.body().expect("an error envelope");
    assert_eq!(
        body.message,
        format!(
            "consultation {} is resolved, not waiting for a human",
            pending.id
        )
    );
    assert_eq!(body.details, Some(vec!["status: resolved".to_owned()]));
    // On the record: the ask's `consultation.created`, the answer's `consultation.updated`,
    // each carrying the consultation as it then stood; nothing for the refusals.
    let events = app
        .client
        .list_events(&orchestrator_core::api::EventsQuery {
            filter: orchestrator_core::EventFilter {
                feature_id: Some(f.clone()),
                types: vec![
                    orchestrator_core::EventType::ConsultationCreated,
                    orchestrator_core::EventType::ConsultationUpdated,
                ],
            },
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.event_type, e.data["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                orchestrator_core::EventType::ConsultationCreated,
                "pending_human".into()
            ),
            (
                orchestrator_core::EventType::ConsultationUpdated,
                "resolved".into()
            ),
        ]
    );
    assert_eq!(events[1].data, serde_json::to_value(&corrected).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn added_context_through_the_orchestrator_needs_a_reroute() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "context-answer").await;
    let rerouted = app
        .client
        .respond_to_consultation(
            &f,
            &pending.id,
            &answer("add_context", Some("keys live in an HSM")),
        )
        .await
        .unwrap();
    assert_eq!(rerouted.status, ConsultationStatus::NeedsReroute);
    assert_eq!(
        rerouted.human_response.as_deref(),
        Some("keys live in an HSM")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_answer_is_refused_before_the_hub_is_called() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "bad-answer").await;
    for (request, field) in [
        (answer("correct", None), "response"),
        (answer("add_context", Some("   ")), "response"),
        (answer("approve", None), "action"),
    ] {
        let err = app
            .client
            .respond_to_consultation(&f, &pending.id, &request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ValidationError), "{err}");
        assert!(format!("{err:?}").contains(field), "{err:?}");
    }
    // Still pending at the hub and here.
    assert_eq!(
        app.client.list_consultations(&f).await.unwrap().items[0].status,
        ConsultationStatus::PendingHuman
    );
    let unknown = app
        .client
        .respond_to_consultation(
            &f,
            &orchestrator_core::ConsultationId::new(),
            &answer("confirm", None),
        )
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        Some(ErrorCode::ConsultationNotFound),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_answered_at_the_hub_first_is_already_resolved() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "raced-answer").await;
    let escalation = pending.escalation_id.clone().expect("escalated");
    app.hub.resolve(&escalation.0, HumanAction::Confirm, None);
    let err = app
        .client
        .respond_to_consultation(&f, &pending.id, &answer("correct", Some("too late")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyResolved), "{err}");
    // The consultation shows the answer that was given at the hub.
    let stored = &app.client.list_consultations(&f).await.unwrap().items[0];
    assert_eq!(
        (stored.status, stored.human_action),
        (ConsultationStatus::Resolved, Some(HumanAction::Confirm))
    );
}

/// An answer the hub took whose reply was lost (or whose storing here failed), sent again:
/// the hub has it already, and the orchestrator answers as the first time would have.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_sent_again_after_the_hub_took_it_succeeds() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "answer-again").await;
    let escalation = pending.escalation_id.clone().expect("escalated");
    // The first attempt reached the hub: it holds this responder's confirmation.
    app.hub.resolve(&escalation.0, HumanAction::Confirm, None);
    let again = RespondRequest {
        actor: Some("stand-in reviewer".to_owned()),
        ..answer("confirm", None)
    };
    let answered = app
        .client
        .respond_to_consultation(&f, &pending.id, &again)
        .await
        .unwrap();
    assert_eq!(
        (answered.status, answered.human_action),
        (ConsultationStatus::Resolved, Some(HumanAction::Confirm))
    );
    assert_eq!(
        app.client.list_consultations(&f).await.unwrap().items[0],
        answered
    );

    // The same action by somebody else is not this answer: answered at the hub first.
    let (g, other) = escalated(&app, "answer-other").await;
    let escalation = other.escalation_id.clone().expect("escalated");
    app.hub.resolve(&escalation.0, HumanAction::Confirm, None);
    let by_another = RespondRequest {
        actor: Some("sec-team".to_owned()),
        ..answer("confirm", None)
    };
    let refused = app
        .client
        .respond_to_consultation(&g, &other.id, &by_another)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::AlreadyResolved),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_failures_are_told_in_the_orchestrators_words() {
    let app = spawn_app().await;
    let f = started(&app, "words").await;
    app.hub.inject(Fault::AgentUnavailable);
    let bad_gateway = app
        .client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap_err();
    app.hub.inject(Fault::PlainText500);
    let plain = app
        .client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap_err();
    let down = spawn_app_with(|c| c.agent_hub_url = dead_url()).await;
    let g = started(&down, "words").await;
    let unavailable = down
        .client
        .create_consultation(&g, &ask("testing", QUESTION))
        .await
        .unwrap_err();
    for err in [bad_gateway, plain, unavailable] {
        let ClientError::Api { body, .. } = &err else {
            panic!("{err}")
        };
        let text = format!("{} {:?}", body.message, body.details);
        for leak in [
            "AGENT_UNAVAILABLE",
            "Internal Server Error",
            "127.0.0.1",
            "http://",
            "expert agent is unreachable",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert!(
            body.details.as_ref().is_some_and(|d| !d.is_empty()),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_correction_becomes_the_final_answer_and_opens_the_gate() {
    let app = spawn_app().await;
    let f = started(&app, "corrected").await;
    to_gate(&app, &f).await;
    let pending = app
        .client
        .create_consultation(
            &f,
            &ask(
                "security",
                "May we log the session cookies? [confidence=10]",
            ),
        )
        .await
        .unwrap();
    assert_eq!(pending.asked_in_state, WorkflowState::Gate1);
    let escalation = pending.escalation_id.expect("escalated");
    app.hub.resolve(
        &escalation.0,
        HumanAction::Correct,
        Some("never log cookies"),
    );

    let listed = app.client.list_consultations(&f).await.unwrap();
    assert_eq!(
        listed.items[0].final_answer.as_deref(),
        Some("never log cookies")
    );
    assert_eq!(listed.items[0].status, ConsultationStatus::Resolved);
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ask_of_a_workflow_uses_the_same_hub_session() {
    let app = spawn_app().await;
    let a = started(&app, "one").await;
    let b = started(&app, "two").await;
    for topic in ["architecture", "testing", "backend"] {
        app.client
            .create_consultation(&a, &ask(topic, QUESTION))
            .await
            .unwrap();
    }
    app.client
        .create_consultation(&b, &ask("devops", QUESTION))
        .await
        .unwrap();

    let asks = app.hub.asks();
    assert_eq!(asks.len(), 4);
    assert!(
        asks.iter().all(|a| a.session_id.is_some()),
        "an ask went without a session"
    );
    assert!(asks[..3].iter().all(|a| a.session_id == asks[0].session_id));
    assert_ne!(
        asks[3].session_id, asks[0].session_id,
        "workflows share a session"
    );
    assert_eq!(app.hub.sessions_created(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_is_replaced_and_the_question_asked_again() {
    let app = spawn_app().await;
    let f = started(&app, "expiring").await;
    app.client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap();
    app.hub.expire_sessions();
    app.client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap();
    app.client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap();

    let sessions: Vec<_> = app.hub.asks().into_iter().map(|a| a.session_id).collect();
    // First ask, refused ask on the expired session, retry on a new one, next ask on it.
    assert_eq!(sessions.len(), 4);
    assert_eq!(sessions[0], sessions[1]);
    assert_ne!(sessions[2], sessions[1]);
    assert_eq!(sessions[2], sessions[3]);
    assert_eq!(
        app.client.list_consultations(&f).await.unwrap().items.len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_hub_forgot_is_replaced() {
    let app = spawn_app().await;
    let f = started(&app, "forgotten").await;
    app.client
        .create_consultation(&f, &ask("frontend", QUESTION))
        .await
        .unwrap();
    app.hub.forget_sessions();
    app.client
        .create_consultation(&f, &ask("frontend", QUESTION))
        .await
        .unwrap();
    assert_eq!(app.hub.sessions_created(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_topic_is_a_validation_error_naming_it() {
    let app = spawn_app().await;
    let f = started(&app, "topic").await;
    to_gate(&app, &f).await;
    let before = app.client.get_workflow(&f).await.unwrap();
    let result = app
        .client
        .create_consultation(&f, &ask("astrology", QUESTION))
        .await;
    let ClientError::Api { body, .. } = result.as_ref().unwrap_err() else {
        panic!()
    };
    let details = body.details.clone().unwrap_or_default();
    // Named in the orchestrator's words; the hub's own message stays in the log.
    assert_eq!(body.message, "the agent hub has no expert for this topic");
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].starts_with("topic: "), "{details:?}");
    assert!(details[0].contains("astrology"), "{details:?}");
    assert_refused(&app, &f, &before, result, 400, ErrorCode::ValidationError).await;
    assert_eq!(
        app.hub.sessions_created(),
        1,
        "no session renewed for a topic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_question_or_topic_is_refused_before_the_hub_is_called() {
    let app = spawn_app().await;
    let f = started(&app, "early").await;
    let before = app.client.get_workflow(&f).await.unwrap();
    for request in [
        ask("testing", "too short"),
        ask("no/slashes", QUESTION),
        ask("", QUESTION),
    ] {
        let result = app.client.create_consultation(&f, &request).await;
        assert_refused(&app, &f, &before, result, 400, ErrorCode::ValidationError).await;
    }
    assert!(app.hub.asks().is_empty());
    assert_eq!(app.hub.sessions_created(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn consultations_need_an_active_workflow_and_never_reach_the_hub_otherwise() {
    let app = spawn_app().await;
    let idle = started(&app, "idle").await;
    app.client
        .advance_workflow(&idle, &AdvanceRequest::new("cancel"))
        .await
        .unwrap();
    let done = started(&app, "done").await;
    for trigger in ["agent_complete", "human_approved", "agent_complete"] {
        app.client
            .advance_workflow(&done, &AdvanceRequest::new(trigger))
            .await
            .unwrap();
    }
    for f in [&idle, &done] {
        let before = app.client.get_workflow(f).await.unwrap();
        let result = app
            .client
            .create_consultation(f, &ask("testing", QUESTION))
            .await;
        assert_refused(&app, f, &before, result, 409, ErrorCode::WorkflowNotActive).await;
    }
    assert!(app.hub.asks().is_empty());
    let ghost = app
        .client
        .create_consultation(&id("ghost"), &ask("testing", QUESTION))
        .await
        .unwrap_err();
    assert_eq!(ghost.code(), Some(ErrorCode::WorkflowNotFound));
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_errors_and_garbage_are_bad_gateway() {
    let app = spawn_app().await;
    for (n, fault) in [
        Fault::Unprocessable,
        Fault::PlainText500,
        Fault::AgentUnavailable,
        Fault::NotJson,
    ]
    .into_iter()
    .enumerate()
    {
        let f = started(&app, &format!("garbage-{n}")).await;
        to_gate(&app, &f).await;
        app.hub.inject(fault);
        ask_refused(&app, &f, 502, ErrorCode::AgentHubError).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_hub_refuses_is_renewed_once_and_no_more() {
    let app = spawn_app().await;
    let f = started(&app, "renewed").await;
    app.hub.inject(Fault::SessionUnavailable);
    app.client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .expect("answered in a new session");
    assert_eq!(app.hub.sessions_created(), 2);

    // Refused in the new session too: the hub is not asked a third time.
    let f = started(&app, "refused").await;
    to_gate(&app, &f).await;
    app.hub.inject(Fault::SessionUnavailable);
    app.hub.inject(Fault::SessionUnavailable);
    ask_refused(&app, &f, 502, ErrorCode::AgentHubError).await;
    assert_eq!(app.hub.sessions_created(), 4);
}

/// Control characters in the hub's text (a NUL: PostgreSQL cannot store it in text) are kept
/// as U+FFFD, in an answer and in a human's correction; an escalation id no path may hold is
/// a bad answer, and nothing of it is stored.
async fn the_hubs_text_is_kept_whatever_it_holds(app: &TestApp) {
    let f = started(app, "garbled").await;
    to_gate(app, &f).await;
    app.hub.inject(Fault::ControlCharacters);
    let asked = app
        .client
        .create_consultation(
            &f,
            &ask("security", "May we log the cookies? [confidence=10]"),
        )
        .await
        .expect("a garbled answer is stored");
    let answer = asked.answer.clone().unwrap();
    assert!(answer.ends_with("\u{fffd}\u{fffd}"), "{answer:?}");
    assert_eq!(asked.rationale.as_deref(), Some("because\u{fffd}\u{fffd}"));
    assert!(asked.uncertainty_reasons[0].ends_with('\u{fffd}'));
    let escalation = asked.escalation_id.clone().expect("escalated");
    app.hub.resolve(
        &escalation.0,
        HumanAction::Correct,
        Some("never\0 log cookies"),
    );
    let listed = app.client.list_consultations(&f).await.unwrap();
    assert_eq!(listed.items[0].status, ConsultationStatus::Resolved);
    assert_eq!(
        listed.items[0].final_answer.as_deref(),
        Some("never\u{fffd} log cookies")
    );
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .expect("the gate opens");

    let f = started(app, "bad-escalation").await;
    to_gate(app, &f).await;
    app.hub.inject(Fault::MalformedEscalationId);
    ask_refused(app, &f, 502, ErrorCode::AgentHubError).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hubs_text_is_kept_whatever_it_holds_on_sqlite() {
    the_hubs_text_is_kept_whatever_it_holds(&spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hubs_text_is_kept_whatever_it_holds_on_postgres() {
    let Some((_db, app)) = crate::postgres::app().await else {
        return;
    };
    the_hubs_text_is_kept_whatever_it_holds(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_slower_than_the_timeout_is_unavailable() {
    let app = spawn_app_with(|c| c.agent_hub_timeout_seconds = 1).await;
    let f = started(&app, "slow").await;
    to_gate(&app, &f).await;
    app.hub.inject(Fault::Delay(Duration::from_secs(3)));
    ask_refused(&app, &f, 503, ErrorCode::AgentHubUnavailable).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_is_down_is_unavailable_and_health_degrades() {
    let app = spawn_app_with(|c| c.agent_hub_url = dead_url()).await;
    let f = started(&app, "down").await;
    ask_refused(&app, &f, 503, ErrorCode::AgentHubUnavailable).await;

    let health = app.client.get_health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert_eq!(health.checks["agent_hub"].status, "error");
    assert_eq!(health.checks["database"].status, "ok");
    let raw = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(raw.status(), 200);

    // The gate without pending consultations does not need the hub.
    to_gate(&app, &f).await;
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
}

/// A hub that takes connections and never answers: `/health` still answers within its
/// probes' bound, and a checker that hung up before that leaves the result for the next one
/// (which a load balancer with a short timeout needs, or every check would time out).
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_never_answers_leaves_health_answering_in_time() {
    let hub = silent_server().await;
    let app = spawn_app_with(|c| c.agent_hub_url = hub).await;
    let impatient = |limit: u64| {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(limit))
            .build()
            .unwrap()
            .get(app.url("/health"))
            .send()
    };
    assert!(impatient(300).await.is_err(), "the first checker gives up");
    // The probe it started ends (2 s) and is kept for 5 s: the next checker has it at once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = impatient(1000).await.expect("answered from the kept probe");
    assert_eq!(answer.status(), 200);
    let health: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["checks"]["agent_hub"]["message"],
        "the agent hub did not answer in time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_a_reachable_hub() {
    let app = spawn_app().await;
    let health = app.client.get_health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.checks["agent_hub"].status, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_while_the_hub_is_unreachable_returns_what_is_stored() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "stored").await;
    let escalation = pending.escalation_id.clone().expect("escalated");
    app.hub.resolve(&escalation.0, HumanAction::Confirm, None);

    // The same database, now with a hub that cannot be reached.
    let mut app = app;
    app.config.agent_hub_url = dead_url();
    let app = app.restart().await;
    let listed = app.client.list_consultations(&f).await.unwrap();
    assert_eq!(listed.items, vec![pending.clone()]);
    // …and the gate stays closed while the pending one cannot be refreshed.
    to_gate(&app, &f).await;
    let err = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AgentHubUnavailable));
    assert_eq!(
        app.client.get_workflow(&f).await.unwrap().state,
        WorkflowState::Gate1
    );
    // The details say what became of the request, not its message again; an answer to an
    // escalation is told instead that it may have reached the hub all the same.
    let details = |err: &ClientError| match err {
        ClientError::Api { body, .. } => body.details.clone().unwrap_or_default(),
        other => panic!("not an API error: {other}"),
    };
    assert_eq!(
        details(&err),
        ["nothing was stored; try again once the agent hub answers"]
    );
    let forwarded = app
        .client
        .respond_to_consultation(&f, &pending.id, &answer("confirm", None))
        .await
        .unwrap_err();
    assert_eq!(forwarded.code(), Some(ErrorCode::AgentHubUnavailable));
    assert_eq!(
        details(&forwarded),
        [orchestrator_server::http::error::FORWARDED]
    );
}

/// A hub that takes connections and never answers holds a listing a few seconds, not its
/// call timeout per eight escalations: the listing answers with what is stored.
#[tokio::test(flavor = "multi_thread")]
async fn listing_while_the_hub_does_not_answer_returns_what_is_stored_in_seconds() {
    let app = spawn_app().await;
    let (f, pending) = escalated(&app, "slow").await;
    let mut app = app;
    app.config.agent_hub_url = silent_server().await;
    app.config.agent_hub_timeout_seconds = 60;
    let app = app.restart().await;
    let asked = std::time::Instant::now();
    let listed = app.client.list_consultations(&f).await.unwrap();
    assert_eq!(listed.items, vec![pending]);
    let waited = asked.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(8),
        "{waited:?}: the call timeout is 30 s"
    );
}

/// An approval whose pending escalation a silent hub never says anything about is the hub's
/// failure, within the call's own timeout: 503 `AGENT_HUB_UNAVAILABLE`, not the request's
/// bound running out, and the workflow stays at the gate.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_a_silent_hub_holds_is_the_hubs_failure() {
    let app = spawn_app().await;
    let (f, _) = escalated(&app, "silent").await;
    to_gate(&app, &f).await;
    let mut app = app;
    app.config.agent_hub_url = silent_server().await;
    app.config.agent_hub_timeout_seconds = 2;
    let app = app.restart().await;
    let err = app
        .client
        .advance_workflow(&f, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AgentHubUnavailable), "{err}");
    assert_eq!(
        app.client.get_workflow(&f).await.unwrap().state,
        WorkflowState::Gate1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_calls_are_counted_in_metrics() {
    let app = spawn_app().await;
    let f = started(&app, "metered").await;
    app.client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap();
    app.hub.inject(Fault::PlainText500);
    let _ = app
        .client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await;
    let text = app.metrics().await;
    assert!(
        text.contains(r#"orchestrator_agent_hub_calls_total{operation="ask",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orchestrator_agent_hub_calls_total{operation="ask",outcome="error"} 1"#)
    );
    assert!(text.contains(
        r#"orchestrator_agent_hub_calls_total{operation="create_session",outcome="ok"} 1"#
    ));
    // An answer read but unusable is an error, not an ok call.
    app.hub.inject(Fault::ConfidenceOutOfRange);
    let unusable = app
        .client
        .create_consultation(&f, &ask("testing", QUESTION))
        .await
        .unwrap_err();
    assert_eq!(
        unusable.code(),
        Some(ErrorCode::AgentHubError),
        "{unusable}"
    );
    let text = app.metrics().await;
    assert!(
        text.contains(r#"orchestrator_agent_hub_calls_total{operation="ask",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orchestrator_agent_hub_calls_total{operation="ask",outcome="error"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_the_hub_at_most_once_in_five_seconds() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.client.get_health().await.unwrap();
    }
    let text = app.metrics().await;
    assert!(
        text.contains(r#"orchestrator_agent_hub_calls_total{operation="health",outcome="ok"} 1"#),
        "{text}"
    );
}
