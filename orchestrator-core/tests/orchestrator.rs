//! The `Orchestrator` service over the in-memory repository: starting, advancing with and
//! without an expected version, paging, summary, and many tasks racing on one workflow.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orchestrator_core::api::{AdvanceRequest, StartWorkflowRequest};
use orchestrator_core::{
    Advance, Clock, Error, FeatureId, InMemoryWorkflowRepository, ListQuery, ManualClock,
    Orchestrator, PageLimit, StartWorkflow, Started, Trigger, WorkflowRepository, WorkflowState,
};
use serde_json::json;

fn orchestrator() -> (Orchestrator, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
    ));
    let orchestrator =
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_clock(clock.clone());
    (orchestrator, clock)
}

fn start(id: &str) -> StartWorkflow {
    StartWorkflowRequest::new(id, "a feature")
        .try_into()
        .unwrap()
}

fn id(id: &str) -> FeatureId {
    FeatureId::parse(id).unwrap()
}

#[tokio::test]
async fn starting_twice_is_refused_unless_use_existing_is_set() {
    let (orchestrator, clock) = orchestrator();
    let created = orchestrator.start(start("f")).await.unwrap();
    assert!(matches!(created, Started::Created(_)));

    let again = orchestrator.start(start("f")).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists(ref f) if f.as_str() == "f"));

    clock.advance(Duration::seconds(5));
    let mut retry = start("f");
    retry.use_existing = true;
    match orchestrator.start(retry).await.unwrap() {
        Started::Existing(existing) => assert_eq!(&existing, created.workflow()),
        other => panic!("expected the existing workflow, got {other:?}"),
    }
    assert_eq!(orchestrator.history(&id("f")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn start_metadata_is_kept_on_the_workflow_and_its_first_entry() {
    let (orchestrator, _) = orchestrator();
    let mut request = StartWorkflowRequest::new("f", "a feature");
    request.metadata = Some(json!({"team": "core"}));
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    let workflow = orchestrator.get(&id("f")).await.unwrap();
    let history = orchestrator.history(&id("f")).await.unwrap();
    assert_eq!(workflow.metadata().as_map()["team"], "core");
    assert_eq!(&history[0].metadata, workflow.metadata());
}

#[tokio::test]
async fn a_request_breaking_a_rule_names_the_field() {
    let err = StartWorkflow::try_from(StartWorkflowRequest::new("bad id", "d")).unwrap_err();
    assert_eq!(err.field, "feature_id");
    let err = StartWorkflow::try_from(StartWorkflowRequest::new("ok", " ")).unwrap_err();
    assert_eq!(err.field, "description");
    let err = Advance::try_from(AdvanceRequest::new("approve")).unwrap_err();
    assert_eq!(err.field, "trigger");
    let mut request = AdvanceRequest::new("cancel");
    request.metadata = Some(json!([1]));
    assert_eq!(Advance::try_from(request).unwrap_err().field, "metadata");
}

#[tokio::test]
async fn advancing_an_unknown_workflow_is_not_found() {
    let (orchestrator, _) = orchestrator();
    let err = orchestrator
        .advance(&id("nope"), Advance::new(Trigger::Cancel))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_changes_nothing() {
    let (orchestrator, _) = orchestrator();
    orchestrator.start(start("f")).await.unwrap();
    let err = orchestrator
        .advance(&id("f"), Advance::new(Trigger::AgentComplete).expecting(7))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::VersionConflict {
            expected: 7,
            actual: 1
        }
    ));
    let workflow = orchestrator
        .advance(&id("f"), Advance::new(Trigger::AgentComplete).expecting(1))
        .await
        .unwrap();
    assert_eq!(
        (workflow.state(), workflow.version()),
        (WorkflowState::Gate1, 2)
    );
}

#[tokio::test]
async fn a_cancelled_workflow_is_restarted_with_the_start_trigger() {
    let (orchestrator, _) = orchestrator();
    orchestrator.start(start("f")).await.unwrap();
    orchestrator
        .advance(&id("f"), Advance::new(Trigger::Cancel))
        .await
        .unwrap();
    assert!(matches!(
        orchestrator.start(start("f")).await,
        Err(Error::AlreadyExists(_))
    ));
    let restarted = orchestrator
        .advance(&id("f"), Advance::new(Trigger::Start))
        .await
        .unwrap();
    assert_eq!(
        (restarted.state(), restarted.version()),
        (WorkflowState::Phase1, 3)
    );
}

#[tokio::test]
async fn listing_pages_through_every_workflow_in_feature_id_order() {
    let (orchestrator, _) = orchestrator();
    for n in [5, 3, 9, 1, 7, 2, 8, 4, 6] {
        orchestrator.start(start(&format!("f{n}"))).await.unwrap();
    }
    orchestrator
        .advance(&id("f4"), Advance::new(Trigger::AgentComplete))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut query = ListQuery {
        state: None,
        overdue: false,
        after: None,
        limit: PageLimit::parse(4).unwrap(),
    };
    loop {
        let page = orchestrator.list(&query).await.unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|w| w.feature_id().to_string()));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=9).map(|n| format!("f{n}")).collect();
    assert_eq!(seen, expected);

    let gate = orchestrator
        .list(&ListQuery {
            state: Some(WorkflowState::Gate1),
            overdue: false,
            after: None,
            limit: PageLimit::DEFAULT,
        })
        .await
        .unwrap();
    assert_eq!(gate.items.len(), 1);
    assert_eq!(gate.next_after, None);
}

#[tokio::test]
async fn an_exactly_full_last_page_has_no_next_cursor() {
    let (orchestrator, _) = orchestrator();
    for n in 1..=4 {
        orchestrator.start(start(&format!("f{n}"))).await.unwrap();
    }
    let page = orchestrator
        .list(&ListQuery {
            state: None,
            overdue: false,
            after: None,
            limit: PageLimit::parse(4).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_after), (4, None));
}

#[tokio::test]
async fn the_summary_counts_every_state() {
    let (orchestrator, _) = orchestrator();
    for n in 1..=3 {
        orchestrator.start(start(&format!("f{n}"))).await.unwrap();
    }
    orchestrator
        .advance(&id("f1"), Advance::new(Trigger::Cancel))
        .await
        .unwrap();
    let counts = orchestrator.summary().await.unwrap().counts;
    assert_eq!(counts.get(WorkflowState::Idle), 1);
    assert_eq!(counts.get(WorkflowState::Phase1), 2);
    assert_eq!(counts.get(WorkflowState::Done), 0);
    assert_eq!(counts.total(), 3);
    assert_eq!(counts.as_map().len(), 5);
}

/// Many tasks advance one workflow at once, round after round. In each round exactly one
/// wins; the others lose with a version conflict (they read the old version) or an invalid
/// transition (they read the new state), and the history stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_advances_of_one_workflow_have_exactly_one_winner_per_version() {
    const TASKS: usize = 32;
    let (orchestrator, _) = orchestrator();
    orchestrator.start(start("race")).await.unwrap();
    // PHASE_1 -agent_complete-> GATE_1 -human_rejected-> PHASE_1 … : each trigger is valid
    // exactly once in a row, so a loser re-reading the new state is refused.
    let rounds = [Trigger::AgentComplete, Trigger::HumanRejected].repeat(10);
    for (round, trigger) in rounds.iter().enumerate() {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let orchestrator = orchestrator.clone();
                let barrier = barrier.clone();
                let trigger = *trigger;
                tokio::spawn(async move {
                    barrier.wait().await;
                    let advance = Advance {
                        reason: orchestrator_core::Reason::parse("rework").ok(),
                        ..Advance::new(trigger)
                    };
                    orchestrator.advance(&id("race"), advance).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => winners += 1,
                Err(Error::VersionConflict { .. } | Error::Transition(_)) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let history = orchestrator.history(&id("race")).await.unwrap();
    assert_eq!(history.len(), rounds.len() + 1);
    for (index, entry) in history.iter().enumerate() {
        assert_eq!(entry.seq, index as u64 + 1);
    }
}

/// The repository's compare-and-set itself: of many commits against one version, one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_against_one_version_let_exactly_one_land() {
    let repository = Arc::new(InMemoryWorkflowRepository::new());
    let (orchestrator, _) = orchestrator();
    let base = orchestrator
        .start(start("cas"))
        .await
        .unwrap()
        .into_workflow();
    let first = orchestrator.history(&id("cas")).await.unwrap().remove(0);
    repository.create(&base, &first).await.unwrap();

    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let repository = repository.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let trigger = if n % 2 == 0 {
                    Trigger::AgentComplete
                } else {
                    Trigger::Cancel
                };
                let at = base.updated_at() + Duration::seconds(n);
                let transition = base
                    .apply(trigger, orchestrator_core::TransitionContext::at(at))
                    .unwrap();
                let mut next = base.clone();
                next.record(&transition);
                repository.commit(base.version(), &next, &transition).await
            })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            landed += 1;
        }
    }
    assert_eq!(landed, 1);
    let stored = repository.get(&id("cas")).await.unwrap();
    let history = repository.history(&id("cas")).await.unwrap();
    assert_eq!(stored.version(), 2);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].to, stored.state());
}

/// A feature started with a one-minute gate deadline and `on_expiry`, brought to the gate by
/// `spec-agent`.
async fn at_gate_with_deadline(orchestrator: &Orchestrator, f: &str, on_expiry: &str) {
    let mut request = StartWorkflowRequest::new(f, "a feature");
    request.gate = Some(orchestrator_core::api::GateRequest {
        due_in_seconds: Some(60),
        on_expiry: Some(on_expiry.to_owned()),
        ..Default::default()
    });
    orchestrator
        .start(request.try_into().unwrap())
        .await
        .unwrap();
    let mut complete = Advance::new(Trigger::AgentComplete);
    complete.actor = Some(orchestrator_core::Actor::parse("spec-agent").unwrap());
    orchestrator.advance(&id(f), complete).await.unwrap();
}

fn overdue_only() -> ListQuery {
    ListQuery {
        state: None,
        overdue: true,
        after: None,
        limit: PageLimit::DEFAULT,
    }
}

#[tokio::test]
async fn a_gate_past_its_deadline_is_listed_counted_and_noted_once() {
    let (orchestrator, clock) = orchestrator();
    at_gate_with_deadline(&orchestrator, "late", "flag").await;
    at_gate_with_deadline(&orchestrator, "early", "flag").await;
    clock.advance(Duration::seconds(30));
    // `early` enters a new stay later, so it is due later.
    orchestrator
        .advance(&id("early"), Advance::new(Trigger::Cancel))
        .await
        .unwrap();

    let workflow = orchestrator.get(&id("late")).await.unwrap();
    let due = workflow.gate_due_at().unwrap();
    assert_eq!(
        due - workflow.gate_stay().unwrap().entered_at,
        Duration::seconds(60)
    );
    assert!(
        orchestrator
            .list(&overdue_only())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());

    clock.advance(Duration::seconds(31));
    let listed = orchestrator.list(&overdue_only()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].feature_id().as_str(), "late");
    assert_eq!(orchestrator.summary().await.unwrap().overdue, 1);
    // Only a gate can be overdue: another state with `overdue` lists nothing.
    let mut phase_1 = overdue_only();
    phase_1.state = Some(WorkflowState::Phase1);
    assert!(orchestrator.list(&phase_1).await.unwrap().items.is_empty());

    // The sweep notes a stay a second after its deadline, not at once: a decision dated just
    // before it may still be on its way to the store.
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    clock.advance(Duration::seconds(1));
    let expired = orchestrator.sweep_gates().await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].due_at, due);
    assert_eq!(expired[0].workflow.state(), WorkflowState::Gate1);
    // Noted once: later sweeps leave it alone, and `flag` changes nothing.
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    assert_eq!(orchestrator.history(&id("late")).await.unwrap().len(), 2);
    assert_eq!(orchestrator.summary().await.unwrap().overdue, 1);
}

/// The observer hears of each stay noted past its deadline once: one a sweep noted, and one
/// noted before a decision that came after its deadline (which the sweep then passes over).
#[tokio::test]
async fn every_expiry_noted_is_told_once_whoever_noted_it() {
    let (orchestrator, clock) = orchestrator();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hears = told.clone();
    let orchestrator = orchestrator.observing_expiries(Arc::new(move |e| {
        hears
            .lock()
            .unwrap()
            .push((e.feature_id.to_string(), e.workflow.state()));
    }));
    at_gate_with_deadline(&orchestrator, "swept", "flag").await;
    at_gate_with_deadline(&orchestrator, "decided-late", "reject").await;
    clock.advance(Duration::seconds(62));
    // A late approval: the deadline first (rejected by the system), so nothing left to approve.
    let mut approve = Advance::new(Trigger::HumanApproved);
    approve.actor = Some(orchestrator_core::Actor::parse("alice").unwrap());
    assert!(
        orchestrator
            .advance(&id("decided-late"), approve)
            .await
            .is_err()
    );
    assert_eq!(orchestrator.sweep_gates().await.unwrap().len(), 1);
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    assert_eq!(
        *told.lock().unwrap(),
        vec![
            ("decided-late".to_owned(), WorkflowState::Phase1),
            ("swept".to_owned(), WorkflowState::Gate1),
        ]
    );
}

#[tokio::test]
async fn one_sweep_notes_hundreds_of_gates_due_at_once() {
    let (orchestrator, clock) = orchestrator();
    for n in 0..250 {
        at_gate_with_deadline(&orchestrator, &format!("bulk-{n:03}"), "flag").await;
    }
    clock.advance(Duration::seconds(62));
    // Read in rounds of a hundred, noted in one sweep (not one hundred a second).
    assert_eq!(orchestrator.sweep_gates().await.unwrap().len(), 250);
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_gate_is_rejected_or_cancelled_by_the_system() {
    let (orchestrator, clock) = orchestrator();
    at_gate_with_deadline(&orchestrator, "rejected", "reject").await;
    at_gate_with_deadline(&orchestrator, "cancelled", "cancel").await;
    clock.advance(Duration::seconds(62));

    let expired = orchestrator.sweep_gates().await.unwrap();
    assert_eq!(expired.len(), 2);
    for (f, state, trigger) in [
        ("rejected", WorkflowState::Phase1, Trigger::HumanRejected),
        ("cancelled", WorkflowState::Idle, Trigger::Cancel),
    ] {
        assert_eq!(orchestrator.get(&id(f)).await.unwrap().state(), state);
        let history = orchestrator.history(&id(f)).await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(last.trigger, trigger);
        assert_eq!(last.actor.as_ref().unwrap().as_str(), "system");
        assert_eq!(last.actor_kind, Some(orchestrator_core::ActorKind::System));
        assert_eq!(last.reason.as_ref().unwrap().as_str(), "gate expired");
    }
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    assert_eq!(orchestrator.summary().await.unwrap().overdue, 0);

    // Back at the gate after the rework, the new stay has a new deadline of its own.
    orchestrator
        .advance(&id("rejected"), Advance::new(Trigger::AgentComplete))
        .await
        .unwrap();
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    clock.advance(Duration::seconds(62));
    assert_eq!(orchestrator.sweep_gates().await.unwrap().len(), 1);
    assert_eq!(
        orchestrator
            .get(&id("rejected"))
            .await
            .unwrap()
            .rework_count(),
        2
    );
}

#[tokio::test]
async fn a_sweep_that_loses_to_a_person_changes_nothing_and_notes_nothing() {
    let repository = Arc::new(InMemoryWorkflowRepository::new());
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap(),
    ));
    let orchestrator = Orchestrator::new(repository.clone()).with_clock(clock.clone());
    at_gate_with_deadline(&orchestrator, "f", "reject").await;
    let stale = orchestrator.get(&id("f")).await.unwrap();
    // A person's approval, dated before the deadline, commits after the sweep read the
    // workflow and before the sweep commits.
    clock.advance(Duration::seconds(59));
    let mut approve = Advance::new(Trigger::HumanApproved);
    approve.actor = Some(orchestrator_core::Actor::parse("alice").unwrap());
    orchestrator.advance(&id("f"), approve).await.unwrap();
    clock.advance(Duration::seconds(2));

    let mut next = stale.clone();
    let transition = stale
        .decide(
            Trigger::HumanRejected,
            orchestrator_core::TransitionContext {
                reason: orchestrator_core::Reason::parse("gate expired").ok(),
                ..orchestrator_core::TransitionContext::at(clock.now())
            },
            &orchestrator_core::GateFacts::default(),
        )
        .unwrap();
    next.record(&transition);
    let note = orchestrator_core::OverdueNote {
        feature_id: id("f"),
        due_at: stale.gate_due_at().unwrap(),
        noted_at: clock.now(),
        on_expiry: orchestrator_core::OnExpiry::Reject,
        approvals: Vec::new(),
    };
    let lost = repository
        .note_overdue(
            &note,
            Some(orchestrator_core::Expiry {
                expected_version: stale.version(),
                workflow: &next,
                transition: &transition,
            }),
        )
        .await;
    // The stay ended in time: nothing is noted, with or without the change.
    assert!(!lost.unwrap());
    assert_eq!(
        orchestrator.get(&id("f")).await.unwrap().state(),
        WorkflowState::Phase2
    );
    assert!(!repository.note_overdue(&note, None).await.unwrap());
    assert!(
        !event_types(&orchestrator, "f")
            .await
            .contains(&"gate.overdue")
    );
}

/// The events of a workflow started, brought to the gate, noted overdue, and then changed
/// (by a person's decision or by its policy).
const NOTED_THEN_CHANGED: [&str; 4] = [
    "workflow.transitioned",
    "workflow.transitioned",
    "gate.overdue",
    "workflow.transitioned",
];

/// The types of `f`'s events, oldest first.
async fn event_types(orchestrator: &Orchestrator, f: &str) -> Vec<&'static str> {
    let filter = orchestrator_core::EventFilter {
        feature_id: Some(id(f)),
        types: Vec::new(),
    };
    let page = orchestrator.events(None, &filter, 100).await.unwrap();
    page.events
        .iter()
        .map(|event| event.event.event_type.as_str())
        .collect()
}

fn by(trigger: Trigger, actor: &str) -> Advance {
    let mut advance = Advance::new(trigger);
    advance.actor = Some(orchestrator_core::Actor::parse(actor).unwrap());
    advance.reason = orchestrator_core::Reason::parse("not yet").ok();
    advance
}

#[tokio::test]
async fn a_decision_after_the_deadline_comes_after_its_note_even_before_a_sweep() {
    let (orchestrator, clock) = orchestrator();
    for f in ["approved", "rejected"] {
        at_gate_with_deadline(&orchestrator, f, "flag").await;
    }
    clock.advance(Duration::seconds(62));

    // No sweep ran: each decision notes the deadline first (an approval, judged on a read;
    // a rejection, judged inside the store's write).
    let approved = orchestrator
        .advance(&id("approved"), by(Trigger::HumanApproved, "alice"))
        .await
        .unwrap();
    assert_eq!(approved.state(), WorkflowState::Phase2);
    let rejected = orchestrator
        .advance(&id("rejected"), by(Trigger::HumanRejected, "alice"))
        .await
        .unwrap();
    assert_eq!(rejected.state(), WorkflowState::Phase1);
    for f in ["approved", "rejected"] {
        assert_eq!(
            event_types(&orchestrator, f).await,
            NOTED_THEN_CHANGED,
            "{f}"
        );
    }
    // Noted once: the sweep finds nothing left.
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_decision_after_an_expiring_deadline_is_judged_on_what_the_policy_did() {
    let (orchestrator, clock) = orchestrator();
    at_gate_with_deadline(&orchestrator, "rejected", "reject").await;
    at_gate_with_deadline(&orchestrator, "cancelled", "cancel").await;
    clock.advance(Duration::seconds(62));

    // The gate expired before alice approved: it is back in PHASE_1, which takes no approval;
    // the same for a rejection of a gate that expired with `cancel` (IDLE takes none).
    for (f, trigger, now_in) in [
        ("rejected", Trigger::HumanApproved, WorkflowState::Phase1),
        ("cancelled", Trigger::HumanRejected, WorkflowState::Idle),
    ] {
        let refused = orchestrator
            .advance(&id(f), by(trigger, "alice"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::Transition(orchestrator_core::TransitionError::NotAllowed { state, .. }) if state == now_in),
            "{refused:?}"
        );
    }
    for (f, trigger) in [
        ("rejected", Trigger::HumanRejected),
        ("cancelled", Trigger::Cancel),
    ] {
        let history = orchestrator.history(&id(f)).await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(last.trigger, trigger, "{f}");
        assert_eq!(last.actor.as_ref().unwrap().as_str(), "system");
        // The note, then the system's change, in one commit; the refused decision added
        // nothing.
        assert_eq!(
            event_types(&orchestrator, f).await,
            NOTED_THEN_CHANGED,
            "{f}"
        );
    }
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_decision_dated_at_the_deadline_notes_nothing() {
    let (orchestrator, clock) = orchestrator();
    at_gate_with_deadline(&orchestrator, "f", "reject").await;
    // Due at entry + 60 s; overdue only after that instant.
    clock.advance(Duration::seconds(60));
    let approved = orchestrator
        .advance(&id("f"), by(Trigger::HumanApproved, "alice"))
        .await
        .unwrap();
    assert_eq!(approved.state(), WorkflowState::Phase2);
    clock.advance(Duration::seconds(1));
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
    assert!(
        !event_types(&orchestrator, "f")
            .await
            .contains(&"gate.overdue")
    );
}

#[test]
fn gate_deadlines_out_of_range_name_their_field() {
    for (due, on_expiry, field) in [
        (Some(0), None, "gate.due_in_seconds"),
        (Some(31_536_001), None, "gate.due_in_seconds"),
        (None, Some("later"), "gate.on_expiry"),
    ] {
        let mut request = StartWorkflowRequest::new("f", "a feature");
        request.gate = Some(orchestrator_core::api::GateRequest {
            due_in_seconds: due,
            on_expiry: on_expiry.map(str::to_owned),
            ..Default::default()
        });
        let error = StartWorkflow::try_from(request).unwrap_err();
        assert_eq!(error.field, field);
    }
}

/// A clock set to any time, also back: two replicas' clocks, or a decision asked for before
/// the one it waited behind was committed.
struct SetClock(std::sync::Mutex<orchestrator_core::Timestamp>);

impl Clock for SetClock {
    fn now(&self) -> orchestrator_core::Timestamp {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn an_entry_is_never_dated_before_the_one_it_follows() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
    let clock = Arc::new(SetClock(std::sync::Mutex::new(t0 + Duration::seconds(10))));
    let orchestrator =
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())).with_clock(clock.clone());
    orchestrator.start(start("f")).await.unwrap();
    orchestrator
        .advance(&id("f"), Advance::new(Trigger::AgentComplete))
        .await
        .unwrap();
    *clock.0.lock().unwrap() = t0;
    orchestrator
        .advance(&id("f"), by(Trigger::HumanRejected, "carol"))
        .await
        .unwrap();
    let history = orchestrator.history(&id("f")).await.unwrap();
    let times: Vec<_> = history.iter().map(|t| t.at).collect();
    assert!(times.is_sorted(), "{times:?}");
    assert_eq!(times[2], t0 + Duration::seconds(10));
}

/// An agent hears that it never decides at the gate, not that the state or its version is
/// wrong: fixing either would get it no further.
#[tokio::test]
async fn an_agent_deciding_is_refused_as_an_agent_before_state_and_version() {
    let (orchestrator, _) = orchestrator();
    orchestrator.start(start("f")).await.unwrap();
    let agent = |trigger| Advance {
        actor_kind: Some(orchestrator_core::ActorKind::Agent),
        ..by(trigger, "build-bot")
    };
    for trigger in [Trigger::HumanApproved, Trigger::HumanRejected] {
        // In PHASE_1, with no version named and with a stale one.
        for advance in [agent(trigger), agent(trigger).expecting(7)] {
            let refused = orchestrator.advance(&id("f"), advance).await;
            assert!(
                matches!(
                    refused,
                    Err(Error::Transition(
                        orchestrator_core::TransitionError::AgentMayNotDecide { .. }
                    ))
                ),
                "{refused:?}"
            );
        }
    }
}

/// A command built by hand is held to the rules of a request's names: `"alice "` is alice
/// (her own work, not another person's approval), and a blank name or `system` is refused
/// rather than counted as somebody at the gate.
#[tokio::test]
async fn names_in_a_command_built_by_hand_are_held_to_the_rules_of_a_requests() {
    let (orchestrator, _) = orchestrator();
    orchestrator.start(start("f")).await.unwrap();
    let completed = orchestrator
        .advance(&id("f"), by(Trigger::AgentComplete, "alice"))
        .await
        .unwrap();
    assert_eq!(completed.state(), WorkflowState::Gate1);
    let own = orchestrator
        .advance(&id("f"), by(Trigger::HumanApproved, "alice "))
        .await;
    assert!(
        matches!(
            own,
            Err(Error::Transition(
                orchestrator_core::TransitionError::SelfApproval { .. }
            ))
        ),
        "{own:?}"
    );
    for name in ["", " ", "SYSTEM"] {
        let refused = orchestrator
            .advance(&id("f"), by(Trigger::HumanApproved, name))
            .await;
        assert!(
            matches!(&refused, Err(Error::Validation(e)) if e.field == "actor"),
            "{name:?}: {refused:?}"
        );
    }
    let for_nobody = Advance {
        on_behalf_of: Some(orchestrator_core::Actor::parse(" ").unwrap()),
        ..by(Trigger::HumanApproved, "bob")
    };
    let refused = orchestrator.advance(&id("f"), for_nobody).await;
    assert!(
        matches!(&refused, Err(Error::Validation(e)) if e.field == "on_behalf_of"),
        "{refused:?}"
    );
    // Spaces around a name are dropped from the record as from a request's, and acting for
    // oneself is acting.
    let for_himself = Advance {
        on_behalf_of: Some(orchestrator_core::Actor::parse("bob").unwrap()),
        ..by(Trigger::HumanApproved, " bob ")
    };
    let approved = orchestrator.advance(&id("f"), for_himself).await.unwrap();
    let history = orchestrator.history(&id("f")).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.actor.as_ref().map(|a| a.as_str()), Some("bob"));
    assert_eq!(last.on_behalf_of, None);
    assert_eq!(approved.state(), WorkflowState::Phase2);
}

/// An embedder that names the principal of an advance gets the override rule from the core:
/// a reviewer's override is refused before anything is stored, an admin's passes the gate.
#[tokio::test]
async fn an_override_made_by_a_principal_is_an_admins() {
    use orchestrator_core::{Actor, ActorKind, Principal, Reason, Role, TransitionError};
    let (orchestrator, _clock) = orchestrator();
    orchestrator.start(start("f")).await.unwrap();
    let mut complete = Advance::new(Trigger::AgentComplete);
    complete.actor = Some(Actor::parse("spec-agent").unwrap());
    orchestrator.advance(&id("f"), complete).await.unwrap();
    let person = |name: &str, role: Role| Principal {
        name: Actor::parse(name).unwrap(),
        kind: ActorKind::Human,
        roles: [role].into(),
    };
    let mut override_ = Advance::new(Trigger::HumanApproved);
    override_.override_gate = true;
    override_.reason = Some(Reason::parse("release blocker").unwrap());

    // Refused whatever version it names: no version makes it an admin's.
    for version in [None, Some(1)] {
        let mut asked = override_.clone().by(&person("rev", Role::Reviewer));
        asked.expected_version = version;
        let refused = orchestrator.advance(&id("f"), asked).await.unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Transition(TransitionError::OverrideNeedsAdmin)
            ),
            "{refused:?}"
        );
    }
    assert_eq!(orchestrator.get(&id("f")).await.unwrap().version(), 2);

    let passed = orchestrator
        .advance(&id("f"), override_.by(&person("boss", Role::Admin)))
        .await
        .unwrap();
    assert_eq!(passed.state(), WorkflowState::Phase2);
}

/// Metadata nested `levels` deep (`{"k": {"k": … 1}}`), made with the parser that reads kept
/// metadata back (which takes any depth).
fn nested_metadata(levels: usize) -> orchestrator_core::Metadata {
    let mut value = json!(1);
    for _ in 0..levels {
        value = json!({ "k": value });
    }
    orchestrator_core::Metadata::parse(value).unwrap()
}

/// A start or an advance built by hand is held to a request's rules: a starter's name, the
/// orchestrator's own `system` kind (never a caller's, so no approval is on the record as the
/// system's), and metadata deeper than a store reads back are refused before anything is
/// stored; a gate policy whose fields were set out of range is refused as the defaults.
#[tokio::test]
async fn a_start_or_advance_built_by_hand_is_held_to_a_requests_rules() {
    use orchestrator_core::{Actor, ActorKind, GatePolicy};
    let (orchestrator, _) = orchestrator();
    let refused_field = |result: Result<_, Error>| match result {
        Err(Error::Validation(e)) => e.field,
        other => panic!("{:?}", other.map(|_: ()| ())),
    };
    let deep = orchestrator_core::values::METADATA_MAX_DEPTH + 1;
    for (start, field) in [
        (
            StartWorkflow {
                actor: Some(Actor::parse(" ").unwrap()),
                ..start("f")
            },
            "actor",
        ),
        (
            StartWorkflow {
                actor_kind: Some(ActorKind::System),
                ..start("f")
            },
            "actor_kind",
        ),
        (
            StartWorkflow {
                metadata: nested_metadata(deep),
                ..start("f")
            },
            "metadata",
        ),
    ] {
        let started = orchestrator.start(start).await.map(|_| ());
        assert_eq!(refused_field(started), field);
    }
    assert!(matches!(
        orchestrator.get(&id("f")).await,
        Err(Error::NotFound(_))
    ));

    orchestrator.start(start("f")).await.unwrap();
    orchestrator
        .advance(&id("f"), by(Trigger::AgentComplete, "spec-agent"))
        .await
        .unwrap();
    let as_system = Advance {
        actor_kind: Some(ActorKind::System),
        ..by(Trigger::HumanApproved, "bob")
    };
    let deep_note = Advance {
        metadata: nested_metadata(deep),
        ..by(Trigger::HumanApproved, "bob")
    };
    for (advance, field) in [(as_system, "actor_kind"), (deep_note, "metadata")] {
        let advanced = orchestrator.advance(&id("f"), advance).await.map(|_| ());
        assert_eq!(refused_field(advanced), field);
    }
    assert_eq!(
        orchestrator.get(&id("f")).await.unwrap().state(),
        WorkflowState::Gate1
    );
    let within = Advance {
        metadata: nested_metadata(deep - 1),
        ..by(Trigger::HumanApproved, "bob")
    };
    orchestrator.advance(&id("f"), within).await.unwrap();

    let out_of_range = GatePolicy {
        required_approvals: 0,
        ..GatePolicy::default()
    };
    let (orchestrator, _) = self::orchestrator();
    assert!(orchestrator.with_gate_defaults(out_of_range).is_err());
}

/// A gate blocked by consultations is [`Error::GateBlocked`] however a [`TransitionError`] is
/// converted: with `?` as with [`Error::from_transition`].
#[test]
fn a_blocked_gate_converts_to_its_own_error() {
    use orchestrator_core::TransitionError;
    let blocked = || TransitionError::GateBlocked {
        escalations: vec![],
        asking: vec![],
    };
    assert!(matches!(Error::from(blocked()), Error::GateBlocked { .. }));
    assert!(matches!(
        Error::from_transition(blocked()),
        Error::GateBlocked { .. }
    ));
}
