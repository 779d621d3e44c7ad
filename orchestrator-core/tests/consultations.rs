//! Consultations and the gate guard through `Orchestrator`, against a scripted Agent Hub.

use std::sync::Arc;

use orchestrator_core::api::{ConsultRequest, StartWorkflowRequest};
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::hub::{AnswerStatus, EscalationStatus, HubAnswer, HubError, HumanAction};
use orchestrator_core::{
    Advance, Consult, Consultation, Error, FeatureId, InMemoryWorkflowRepository, Orchestrator,
    ScriptedAgentHub, Trigger, WorkflowState,
};

async fn setup() -> (Orchestrator, Arc<ScriptedAgentHub>, FeatureId) {
    let hub = Arc::new(ScriptedAgentHub::new());
    let orchestrator =
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_hub(hub.clone());
    let request = StartWorkflowRequest::new("f", "a feature");
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    (orchestrator, hub, FeatureId::parse("f").unwrap())
}

fn ask(topic: &str) -> Consult {
    ConsultRequest::new(topic, "How should we shard the orders table?")
        .try_into()
        .unwrap()
}

async fn to_gate(orchestrator: &Orchestrator, id: &FeatureId) {
    orchestrator
        .advance(id, Advance::new(Trigger::AgentComplete))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_confident_answer_is_stored_resolved_and_the_workflow_does_not_change() {
    let (orchestrator, _, id) = setup().await;
    let before = orchestrator.get(&id).await.unwrap();
    let consultation = orchestrator
        .consult(&id, ask("architecture"))
        .await
        .unwrap();
    assert_eq!(consultation.status, ConsultationStatus::Resolved);
    assert_eq!(
        consultation.final_answer.as_deref(),
        consultation.answer.as_deref()
    );
    assert_eq!(consultation.asked_in_state, WorkflowState::Phase1);
    assert_eq!(orchestrator.get(&id).await.unwrap(), before);
    assert_eq!(
        orchestrator.consultations(&id).await.unwrap(),
        vec![consultation]
    );
}

#[tokio::test]
async fn consultations_need_an_active_workflow() {
    let (orchestrator, hub, id) = setup().await;
    orchestrator
        .advance(&id, Advance::new(Trigger::Cancel))
        .await
        .unwrap();
    let err = orchestrator
        .consult(&id, ask("architecture"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::NotActive {
            state: WorkflowState::Idle,
            ..
        }
    ));
    assert_eq!(hub.sessions_created(), 0, "the hub was called");
    assert!(orchestrator.consultations(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_ask_of_a_workflow_uses_its_one_hub_session() {
    let (orchestrator, hub, id) = setup().await;
    for topic in ["architecture", "testing", "security"] {
        orchestrator.consult(&id, ask(topic)).await.unwrap();
    }
    assert_eq!(hub.sessions_created(), 1);
    let sessions = hub.asked_with();
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|s| *s == sessions[0]));
}

#[tokio::test]
async fn an_expired_session_is_replaced_and_the_question_asked_once_more() {
    let (orchestrator, hub, id) = setup().await;
    orchestrator.consult(&id, ask("testing")).await.unwrap();
    let first = hub.asked_with()[0].clone();
    hub.expire_session(&first);
    orchestrator.consult(&id, ask("testing")).await.unwrap();
    orchestrator.consult(&id, ask("testing")).await.unwrap();
    assert_eq!(hub.sessions_created(), 2);
    let sessions = hub.asked_with();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert_ne!(sessions[1], first);
    assert_eq!(sessions[1], sessions[2], "the new session is kept");
}

#[tokio::test]
async fn a_failed_ask_stores_nothing() {
    let (orchestrator, hub, id) = setup().await;
    for failure in [
        HubError::Failed("plain-text 500".into()),
        HubError::Unavailable("timed out".into()),
        HubError::UnknownTopic {
            topic: "astrology".into(),
            message: "no expert".into(),
        },
    ] {
        hub.push_answer(Err(failure.clone()));
        let err = orchestrator
            .consult(&id, ask("architecture"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Hub(ref e) if *e == failure), "{err}");
    }
    assert!(orchestrator.consultations(&id).await.unwrap().is_empty());
}

/// An answer waiting for a human must name the escalation it waits on, whatever hub sent it:
/// without one, nothing could answer it and the gate would not wait for it.
#[tokio::test]
async fn an_answer_waiting_for_a_human_without_its_escalation_is_not_an_answer() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_answer(Ok(HubAnswer {
        answer: "Shard by customer".into(),
        rationale: None,
        confidence: 40,
        uncertainty_reasons: Vec::new(),
        status: AnswerStatus::PendingHuman,
        escalation_id: None,
    }));
    let err = orchestrator
        .consult(&id, ask("architecture"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Hub(HubError::Failed(_))), "{err}");
    assert!(orchestrator.consultations(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pending_escalation_blocks_the_gate_until_a_human_confirms() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-1");
    let pending = orchestrator.consult(&id, ask("security")).await.unwrap();
    assert!(pending.is_pending());
    to_gate(&orchestrator, &id).await;

    let err = orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap_err();
    match err {
        Error::GateBlocked { escalations, .. } => assert_eq!(escalations[0].0, "esc-1"),
        other => panic!("expected a blocked gate, got {other}"),
    }
    assert_eq!(
        orchestrator.get(&id).await.unwrap().state(),
        WorkflowState::Gate1
    );
    // Other triggers are not guarded.
    assert_eq!(orchestrator.history(&id).await.unwrap().len(), 2);

    hub.set_escalation(
        "esc-1",
        EscalationStatus::Resolved,
        Some(HumanAction::Confirm),
        None,
    );
    let open = orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap();
    assert_eq!(open.state(), WorkflowState::Phase2);
    let stored = &orchestrator.consultations(&id).await.unwrap()[0];
    assert_eq!(stored.status, ConsultationStatus::Resolved);
    assert_eq!(stored.final_answer.as_deref(), Some("tentative answer"));
    assert_eq!(stored.human_action, Some(HumanAction::Confirm));
}

#[tokio::test]
async fn a_correction_becomes_the_final_answer_when_listing() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-2");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    hub.set_escalation(
        "esc-2",
        EscalationStatus::Resolved,
        Some(HumanAction::Correct),
        Some("use mTLS"),
    );
    let listed = orchestrator.consultations(&id).await.unwrap();
    assert_eq!(listed[0].final_answer.as_deref(), Some("use mTLS"));
    assert_eq!(listed[0].status, ConsultationStatus::Resolved);
}

#[tokio::test]
async fn an_expired_escalation_needs_a_reroute_and_no_longer_blocks() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-3");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    to_gate(&orchestrator, &id).await;
    hub.set_escalation("esc-3", EscalationStatus::Expired, None, None);
    orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap();
    let listed = orchestrator.consultations(&id).await.unwrap();
    assert_eq!(listed[0].status, ConsultationStatus::NeedsReroute);
}

#[tokio::test]
async fn listing_while_the_hub_is_down_returns_what_is_stored() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-4");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    hub.set_down(true);
    let listed = orchestrator.consultations(&id).await.unwrap();
    assert!(listed[0].is_pending());
}

#[tokio::test]
async fn one_unreadable_escalation_does_not_keep_the_others_from_being_refreshed() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-odd");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    hub.push_escalation("esc-fine");
    orchestrator.consult(&id, ask("testing")).await.unwrap();
    // The older one's escalation answers with something this hub client cannot read.
    hub.fail_escalation(
        "esc-odd",
        HubError::Failed("unknown status 'cancelled'".into()),
    );
    hub.set_escalation(
        "esc-fine",
        EscalationStatus::Resolved,
        Some(HumanAction::Confirm),
        None,
    );
    let listed = orchestrator.consultations(&id).await.unwrap();
    assert_eq!(
        (listed[0].status, listed[1].status),
        (
            ConsultationStatus::PendingHuman,
            ConsultationStatus::Resolved
        )
    );
}

#[tokio::test]
async fn a_gate_that_cannot_reach_the_hub_stays_closed() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-5");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    to_gate(&orchestrator, &id).await;
    hub.set_down(true);
    let err = orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Hub(HubError::Unavailable(_))), "{err}");
    assert_eq!(
        orchestrator.get(&id).await.unwrap().state(),
        WorkflowState::Gate1
    );
    // Rejection and cancellation do not need the hub.
    orchestrator
        .advance(
            &id,
            Advance {
                reason: orchestrator_core::Reason::parse("rework").ok(),
                ..Advance::new(Trigger::HumanRejected)
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_is_refused_at_a_blocked_gate_without_asking_the_hub() {
    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-6");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    to_gate(&orchestrator, &id).await;
    hub.set_down(true);
    let by_agent = Advance {
        actor_kind: Some(orchestrator_core::ActorKind::Agent),
        ..Advance::new(Trigger::HumanApproved)
    };
    let err = orchestrator.advance(&id, by_agent).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transition(orchestrator_core::TransitionError::AgentMayNotDecide { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn without_pending_consultations_the_gate_never_calls_the_hub() {
    let (orchestrator, hub, id) = setup().await;
    hub.set_down(true);
    to_gate(&orchestrator, &id).await;
    orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap();
}

/// A scripted hub whose escalation look-ups take `lag` of a manual clock, with `together`
/// answer only once that many look-ups are running at once, and with `meanwhile` have
/// another person's decision made (through that orchestrator) while the first look-up runs.
struct SlowLookups {
    hub: Arc<ScriptedAgentHub>,
    clock: Arc<orchestrator_core::ManualClock>,
    lag: chrono::Duration,
    together: Option<tokio::sync::Barrier>,
    meanwhile: std::sync::Mutex<Option<(Orchestrator, FeatureId, Advance)>>,
}

#[async_trait::async_trait]
impl orchestrator_core::hub::AgentHub for SlowLookups {
    async fn create_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<orchestrator_core::hub::HubSessionId, HubError> {
        self.hub.create_session(feature_id).await
    }
    async fn close_session(
        &self,
        id: &orchestrator_core::hub::HubSessionId,
    ) -> Result<(), HubError> {
        self.hub.close_session(id).await
    }
    async fn ask(
        &self,
        question: &orchestrator_core::hub::HubQuestion,
    ) -> Result<orchestrator_core::hub::HubAnswer, HubError> {
        self.hub.ask(question).await
    }
    async fn escalation(
        &self,
        id: &orchestrator_core::hub::EscalationId,
    ) -> Result<orchestrator_core::hub::Escalation, HubError> {
        let decision = self.meanwhile.lock().unwrap().take();
        if let Some((orchestrator, feature_id, advance)) = decision {
            orchestrator.advance(&feature_id, advance).await.unwrap();
        }
        self.clock.advance(self.lag);
        if let Some(together) = &self.together {
            together.wait().await;
        }
        self.hub.escalation(id).await
    }
    async fn respond(
        &self,
        id: &orchestrator_core::hub::EscalationId,
        response: &orchestrator_core::hub::HumanResponse,
    ) -> Result<orchestrator_core::hub::Escalation, HubError> {
        self.hub.respond(id, response).await
    }
    async fn health(&self) -> Result<orchestrator_core::hub::HubHealth, HubError> {
        self.hub.health().await
    }
}

/// An orchestrator (over memory, on a manual clock an hour back) whose hub's escalation
/// look-ups take `lag_seconds` of that clock.
fn with_slow_lookups(
    lag_seconds: i64,
) -> (
    Orchestrator,
    Arc<ScriptedAgentHub>,
    Arc<orchestrator_core::ManualClock>,
    Arc<SlowLookups>,
) {
    let clock = Arc::new(orchestrator_core::ManualClock::new(
        chrono::Utc::now() - chrono::Duration::hours(1),
    ));
    let hub = Arc::new(ScriptedAgentHub::new());
    let slow = Arc::new(SlowLookups {
        hub: hub.clone(),
        clock: clock.clone(),
        lag: chrono::Duration::seconds(lag_seconds),
        together: None,
        meanwhile: Default::default(),
    });
    let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()))
        .with_hub(slow.clone())
        .with_clock(clock.clone());
    (orchestrator, hub, clock, slow)
}

/// Feature `f` (with `gate`), its one question escalated and brought to the gate, and the
/// escalation since answered at the hub itself (the store still has it pending).
async fn at_gate_after_an_answered_escalation(
    orchestrator: &Orchestrator,
    hub: &ScriptedAgentHub,
    gate: Option<orchestrator_core::api::GateRequest>,
) -> FeatureId {
    let mut request = StartWorkflowRequest::new("f", "a feature");
    request.gate = gate;
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    let id = FeatureId::parse("f").unwrap();
    hub.push_escalation("esc-answered");
    orchestrator.consult(&id, ask("security")).await.unwrap();
    to_gate(orchestrator, &id).await;
    hub.set_escalation(
        "esc-answered",
        EscalationStatus::Resolved,
        Some(HumanAction::Confirm),
        None,
    );
    id
}

#[tokio::test]
async fn an_approval_is_dated_when_it_is_judged_after_the_hub_answered() {
    use orchestrator_core::Clock;
    let (orchestrator, hub, clock, _) = with_slow_lookups(20);
    let id = at_gate_after_an_answered_escalation(&orchestrator, &hub, None).await;
    let before = clock.now();
    orchestrator
        .advance(&id, Advance::new(Trigger::HumanApproved))
        .await
        .unwrap();
    let history = orchestrator.history(&id).await.unwrap();
    let approval = history.last().unwrap();
    assert_eq!(approval.trigger, Trigger::HumanApproved);
    assert_eq!(approval.at, clock.now());
    assert!(approval.at > before, "dated before the hub answered");
}

#[tokio::test]
async fn the_hub_is_asked_about_every_pending_escalation_at_once() {
    let hub = Arc::new(ScriptedAgentHub::new());
    // Each look-up answers only when all three run at the same time: asked one after another,
    // the first would wait for ever.
    let together = Arc::new(SlowLookups {
        hub: hub.clone(),
        clock: Arc::new(orchestrator_core::ManualClock::new(chrono::Utc::now())),
        lag: chrono::Duration::zero(),
        together: Some(tokio::sync::Barrier::new(3)),
        meanwhile: Default::default(),
    });
    let orchestrator =
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_hub(together);
    let request = StartWorkflowRequest::new("f", "a feature");
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    let id = FeatureId::parse("f").unwrap();
    for (escalation, topic) in [("esc-1", "security"), ("esc-2", "testing"), ("esc-3", "ux")] {
        hub.push_escalation(escalation);
        orchestrator.consult(&id, ask(topic)).await.unwrap();
    }
    to_gate(&orchestrator, &id).await;
    hub.set_escalation(
        "esc-2",
        EscalationStatus::Resolved,
        Some(HumanAction::Confirm),
        None,
    );

    let in_time = std::time::Duration::from_secs(10);
    let listed = tokio::time::timeout(in_time, orchestrator.consultations(&id))
        .await
        .expect("the look-ups ran one after another")
        .unwrap();
    let statuses: Vec<_> = listed.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [
            ConsultationStatus::PendingHuman,
            ConsultationStatus::Resolved,
            ConsultationStatus::PendingHuman
        ]
    );
    // The approval's facts too (three pending again): they block the gate, in order.
    hub.push_escalation("esc-4");
    orchestrator.consult(&id, ask("data")).await.unwrap();
    let refused = tokio::time::timeout(
        in_time,
        orchestrator.advance(&id, Advance::new(Trigger::HumanApproved)),
    )
    .await
    .expect("the look-ups ran one after another")
    .unwrap_err();
    match refused {
        Error::GateBlocked { escalations, .. } => assert_eq!(
            escalations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["esc-1", "esc-3", "esc-4"]
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_approval_notes_no_deadline_of_a_stay_that_ended_in_time_while_the_hub_was_asked() {
    use orchestrator_core::api::GateRequest;
    let (orchestrator, hub, clock, slow) = with_slow_lookups(2);
    let gate = GateRequest {
        due_in_seconds: Some(60),
        ..GateRequest::default()
    };
    let id = at_gate_after_an_answered_escalation(&orchestrator, &hub, Some(gate)).await;
    // Alice approves a second before the deadline; while the hub is asked (2 s), Bob sends
    // the work back, in time.
    clock.advance(chrono::Duration::seconds(59));
    let mut reject = Advance::new(Trigger::HumanRejected);
    reject.actor = orchestrator_core::Actor::parse("bob").ok();
    reject.reason = orchestrator_core::Reason::parse("not yet").ok();
    *slow.meanwhile.lock().unwrap() = Some((orchestrator.clone(), id.clone(), reject));
    let mut approve = Advance::new(Trigger::HumanApproved);
    approve.actor = orchestrator_core::Actor::parse("alice").ok();
    let refused = orchestrator.advance(&id, approve).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Transition(orchestrator_core::TransitionError::NotAllowed {
                state: WorkflowState::Phase1,
                ..
            })
        ),
        "{refused:?}"
    );
    // The stay ended before its deadline: nothing is overdue, now or for the sweep.
    let filter = orchestrator_core::EventFilter::default();
    let events = orchestrator
        .events(None, &filter, 100)
        .await
        .unwrap()
        .events;
    assert!(
        events
            .iter()
            .all(|e| e.event.event_type != orchestrator_core::EventType::GateOverdue),
        "{events:?}"
    );
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

/// A consultation escalated as `esc-1`, which `responder` then confirmed at the hub itself.
async fn answered_at_the_hub(
    orchestrator: &Orchestrator,
    hub: &ScriptedAgentHub,
    id: &FeatureId,
    responder: &str,
) -> Consultation {
    use orchestrator_core::hub::{AgentHub, EscalationId, HumanResponse};
    hub.push_escalation("esc-1");
    let pending = orchestrator.consult(id, ask("security")).await.unwrap();
    hub.respond(
        &EscalationId("esc-1".into()),
        &HumanResponse {
            action: HumanAction::Confirm,
            responder: responder.into(),
            response: None,
        },
    )
    .await
    .unwrap();
    pending
}

/// Two answers without a name are two people's as far as anyone can tell: the second, finding
/// the escalation answered at the hub, is told so rather than taken for the first sent again.
#[tokio::test]
async fn an_unnamed_answer_is_never_taken_for_another_sent_again() {
    use orchestrator_core::Respond;

    let (orchestrator, hub, id) = setup().await;
    // Somebody unnamed confirmed it at the hub (as the orchestrator would have sent it).
    let pending = answered_at_the_hub(&orchestrator, &hub, &id, "unknown reviewer").await;
    let confirm = Respond {
        action: HumanAction::Confirm,
        response: None,
        actor: None,
        actor_kind: None,
    };
    let err = orchestrator
        .respond(&id, pending.id, confirm)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyResolved { .. }), "{err}");
    // The consultation shows the answer that stands.
    let stored = &orchestrator.consultations(&id).await.unwrap()[0];
    assert_eq!(stored.status, ConsultationStatus::Resolved);
}

/// An answer the hub refuses as given already, about an escalation it then no longer knows:
/// the consultation needs a reroute (409, not a 502), as when the answer itself finds it gone.
#[tokio::test]
async fn an_escalation_lost_after_a_refused_answer_needs_a_reroute() {
    use orchestrator_core::Respond;

    let (orchestrator, hub, id) = setup().await;
    let pending = answered_at_the_hub(&orchestrator, &hub, &id, "someone at the hub").await;
    // Refused as answered already, and gone when the orchestrator reads what it holds.
    hub.fail_look_ups("esc-1", HubError::EscalationNotFound("esc-1".into()));
    let confirm = Respond {
        action: HumanAction::Confirm,
        response: None,
        actor: orchestrator_core::Actor::parse("alice").ok(),
        actor_kind: None,
    };
    let err = orchestrator
        .respond(&id, pending.id, confirm)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotPending {
                status: ConsultationStatus::NeedsReroute,
                ..
            }
        ),
        "{err}"
    );
    let stored = &orchestrator.consultations(&id).await.unwrap()[0];
    assert_eq!(stored.status, ConsultationStatus::NeedsReroute);
}

/// An ask of `id` published `asking`, as one the wait ran out on.
async fn published_ask(orchestrator: &Orchestrator, id: &FeatureId) -> Consultation {
    let reserved = orchestrator
        .reserve_consultation(id, ask("architecture"))
        .await
        .unwrap();
    orchestrator.publish(reserved).await.unwrap()
}

/// Another server ended this ask as one a crash left (its hub timeout shorter than this
/// one's): the answer that comes later is not stored, and the caller is told what is.
#[tokio::test]
async fn an_answer_to_an_ask_ended_elsewhere_is_not_taken_for_stored() {
    let (orchestrator, _, id) = setup().await;
    let asking = published_ask(&orchestrator, &id).await;
    let later = orchestrator.now() + chrono::Duration::hours(1);
    assert_eq!(orchestrator.interrupt_asks(later).await.unwrap(), 1);
    let answer = HubAnswer {
        answer: "Shard by customer".into(),
        rationale: None,
        confidence: 95,
        uncertainty_reasons: Vec::new(),
        status: AnswerStatus::Resolved,
        escalation_id: None,
    };
    let ended = orchestrator.finish(asking, Ok(answer)).await.unwrap();
    assert_eq!(ended.status, ConsultationStatus::Failed);
    assert_eq!(orchestrator.consultations(&id).await.unwrap(), vec![ended]);
}

/// The hub's answer that a human must look at, with escalation `id`.
fn escalated(id: &str) -> HubAnswer {
    HubAnswer {
        answer: "Ask the team".into(),
        rationale: None,
        confidence: 40,
        uncertainty_reasons: Vec::new(),
        status: AnswerStatus::PendingHuman,
        escalation_id: Some(orchestrator_core::hub::EscalationId(id.into())),
    }
}

/// A background ask's ending stored again (a try whose answer was lost landed all the same):
/// it is not written twice, so its `consultation.updated` event is not repeated.
#[tokio::test]
async fn an_ending_stored_again_is_written_once() {
    let (orchestrator, _, id) = setup().await;
    let asking = published_ask(&orchestrator, &id).await;
    let ended = orchestrator.ending(asking, Ok(escalated("esc-9")));
    let first = orchestrator.store_ending(ended.clone()).await.unwrap();
    let again = orchestrator.store_ending(ended).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(again.status, ConsultationStatus::PendingHuman);
    let filter = orchestrator_core::EventFilter::default();
    let updates = orchestrator
        .events(None, &filter, 100)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.event.event_type == orchestrator_core::EventType::ConsultationUpdated)
        .count();
    assert_eq!(updates, 1);
}

/// The hub answers a background ask after its workflow was cancelled: the cancel wins, the
/// answer (an escalation here) is not kept, and it holds no gate when the feature is started
/// again.
#[tokio::test]
async fn an_answer_that_finds_its_workflow_cancelled_is_not_kept() {
    let (orchestrator, _, id) = setup().await;
    let asking = published_ask(&orchestrator, &id).await;
    orchestrator
        .advance(&id, Advance::new(Trigger::Cancel))
        .await
        .unwrap();
    let ended = orchestrator
        .finish(asking, Ok(escalated("esc-late")))
        .await
        .unwrap();
    assert_eq!(ended.status, ConsultationStatus::Failed);
    assert_eq!(
        ended.error.as_ref().map(|e| e.code.as_str()),
        Some("workflow_not_active")
    );
    assert_eq!(
        (ended.answer.as_deref(), ended.escalation_id.as_ref()),
        (None, None)
    );
    assert_eq!(orchestrator.consultations(&id).await.unwrap(), vec![ended]);
    for trigger in [
        Trigger::Start,
        Trigger::AgentComplete,
        Trigger::HumanApproved,
    ] {
        orchestrator
            .advance(&id, Advance::new(trigger))
            .await
            .unwrap();
    }
    assert_eq!(
        orchestrator.get(&id).await.unwrap().state(),
        WorkflowState::Phase2
    );
}

/// A scripted hub where first questions race (each session is made only once two are being
/// made) and closing a session never ends (a hub that does not answer a `DELETE`).
struct StuckCloses {
    hub: Arc<ScriptedAgentHub>,
    together: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl orchestrator_core::hub::AgentHub for StuckCloses {
    async fn create_session(
        &self,
        feature_id: &FeatureId,
    ) -> Result<orchestrator_core::hub::HubSessionId, HubError> {
        self.together.wait().await;
        self.hub.create_session(feature_id).await
    }
    async fn close_session(
        &self,
        _: &orchestrator_core::hub::HubSessionId,
    ) -> Result<(), HubError> {
        std::future::pending().await
    }
    async fn ask(
        &self,
        question: &orchestrator_core::hub::HubQuestion,
    ) -> Result<orchestrator_core::hub::HubAnswer, HubError> {
        self.hub.ask(question).await
    }
    async fn escalation(
        &self,
        id: &orchestrator_core::hub::EscalationId,
    ) -> Result<orchestrator_core::hub::Escalation, HubError> {
        self.hub.escalation(id).await
    }
    async fn respond(
        &self,
        id: &orchestrator_core::hub::EscalationId,
        response: &orchestrator_core::hub::HumanResponse,
    ) -> Result<orchestrator_core::hub::Escalation, HubError> {
        self.hub.respond(id, response).await
    }
    async fn health(&self) -> Result<orchestrator_core::hub::HubHealth, HubError> {
        self.hub.health().await
    }
}

/// The session a racing first question made and lost is closed beside its question, not
/// before it: a hub slow to close it does not hold the answer (a close is worth nothing to
/// the caller; an idle session expires at the hub by itself).
#[tokio::test]
async fn closing_a_session_lost_to_a_race_does_not_hold_the_answer() {
    let hub = Arc::new(StuckCloses {
        hub: Arc::new(ScriptedAgentHub::new()),
        together: tokio::sync::Barrier::new(2),
    });
    let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_hub(hub);
    let request = StartWorkflowRequest::new("f", "a feature");
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    let id = FeatureId::parse("f").unwrap();
    let both = futures_util::future::join(
        orchestrator.consult(&id, ask("architecture")),
        orchestrator.consult(&id, ask("security")),
    );
    let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
        .await
        .expect("both questions answered while the lost session's close hangs");
    assert_eq!(first.unwrap().status, ConsultationStatus::Resolved);
    assert_eq!(second.unwrap().status, ConsultationStatus::Resolved);
}

/// A question built by hand is held to a request's rules: a context with a NUL (which
/// PostgreSQL cannot store) is refused before the hub is asked, and nothing is kept.
#[tokio::test]
async fn a_context_built_by_hand_is_held_to_a_requests_rules() {
    let (orchestrator, _hub, id) = setup().await;
    let question = Consult {
        context: Some("line one\0".to_owned()),
        ..ask("security")
    };
    let err = orchestrator.consult(&id, question).await.unwrap_err();
    assert!(
        matches!(&err, Error::Validation(e) if e.field == "context"),
        "{err}"
    );
    assert!(orchestrator.consultations(&id).await.unwrap().is_empty());
}

/// An answer built by hand is held to the rule of a request's names: a blank responder is
/// refused before the hub is asked.
#[tokio::test]
async fn a_blank_responder_built_by_hand_is_refused() {
    use orchestrator_core::Respond;

    let (orchestrator, hub, id) = setup().await;
    hub.push_escalation("esc-blank");
    let pending = orchestrator.consult(&id, ask("security")).await.unwrap();
    let blank = Respond {
        action: HumanAction::Confirm,
        response: None,
        actor: Some(orchestrator_core::Actor::parse("  ").unwrap()),
        actor_kind: None,
    };
    let err = orchestrator
        .respond(&id, pending.id, blank)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(e) if e.field == "actor"),
        "{err}"
    );
    // So are the system's kind and a correction without its text.
    for (answer, field) in [
        (
            Respond {
                action: HumanAction::Confirm,
                response: None,
                actor: Some(orchestrator_core::Actor::parse("alice").unwrap()),
                actor_kind: Some(orchestrator_core::ActorKind::System),
            },
            "actor_kind",
        ),
        (
            Respond {
                action: HumanAction::Correct,
                response: None,
                actor: Some(orchestrator_core::Actor::parse("alice").unwrap()),
                actor_kind: None,
            },
            "response",
        ),
    ] {
        let err = orchestrator
            .respond(&id, pending.id, answer)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Validation(e) if e.field == field),
            "{err}"
        );
    }
    let stored = &orchestrator.consultations(&id).await.unwrap()[0];
    assert!(stored.is_pending(), "nothing was answered");
}
