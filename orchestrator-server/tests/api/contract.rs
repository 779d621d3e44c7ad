//! The repository contract: the same checks against every `WorkflowRepository` — in memory,
//! SQLite, and PostgreSQL (when `TEST_DATABASE_URL` is set) — each on a fresh store.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orchestrator_core::consultation::{ConsultationError, ConsultationStatus};
use orchestrator_core::hub::{
    AnswerStatus, EscalationId, HubAnswer, HubSessionId, HumanAction, Topic,
};
use orchestrator_core::{
    Consult, Consultation, ConsultationId, Description, EventFilter, EventType, FeatureId,
    Metadata, Question, Reason, RepositoryError, Timestamp, Transition, TransitionContext, Trigger,
    Workflow, WorkflowRepository, WorkflowState,
};

use orchestrator_server::storage::DatabaseUrl;

use crate::helpers::{id, run_sql};

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
}

pub fn new_workflow(name: &str) -> (Workflow, Transition) {
    let mut metadata = serde_json::Map::new();
    metadata.insert("team".into(), "core".into());
    Workflow::start(
        id(name),
        Description::parse(format!("feature {name}")).unwrap(),
        Metadata::parse(serde_json::Value::Object(metadata)).unwrap(),
        TransitionContext::at(t0()),
    )
}

/// The workflow after `trigger`, with the transition to commit.
fn step(workflow: &Workflow, trigger: Trigger, seconds: i64) -> (Workflow, Transition) {
    let ctx = TransitionContext {
        reason: Reason::parse("a rejection needs a reason").ok(),
        ..TransitionContext::at(workflow.updated_at() + Duration::seconds(seconds))
    };
    let transition = workflow.apply(trigger, ctx).unwrap();
    let mut next = workflow.clone();
    next.record(&transition);
    (next, transition)
}

pub async fn create_then_get_returns_the_same_workflow(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("alpha");
    repo.create(&workflow, &first).await.unwrap();
    assert_eq!(repo.get(&id("alpha")).await.unwrap(), workflow);
    assert_eq!(repo.history(&id("alpha")).await.unwrap(), vec![first]);
    assert!(matches!(
        repo.get(&id("beta")).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert!(matches!(
        repo.history(&id("beta")).await,
        Err(RepositoryError::NotFound(_))
    ));
}

pub async fn a_duplicate_create_is_refused_and_changes_nothing(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("dup");
    repo.create(&workflow, &first).await.unwrap();
    let (other, other_first) = Workflow::start(
        id("dup"),
        Description::parse("another").unwrap(),
        Metadata::default(),
        TransitionContext::at(t0()),
    );
    let err = repo.create(&other, &other_first).await.unwrap_err();
    assert!(
        matches!(err, RepositoryError::AlreadyExists(ref f) if f.as_str() == "dup"),
        "{err}"
    );
    assert_eq!(repo.get(&id("dup")).await.unwrap(), workflow);
    assert_eq!(repo.history(&id("dup")).await.unwrap().len(), 1);
}

pub async fn commit_is_a_compare_and_set_on_the_version(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("cas");
    repo.create(&workflow, &first).await.unwrap();
    let (gate, to_gate) = step(&workflow, Trigger::AgentComplete, 60);
    repo.commit(1, &gate, &to_gate).await.unwrap();
    assert_eq!(repo.get(&id("cas")).await.unwrap(), gate);

    // A second writer that also read version 1 loses, and nothing changes.
    let (cancelled, to_idle) = step(&workflow, Trigger::Cancel, 61);
    let err = repo.commit(1, &cancelled, &to_idle).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::VersionConflict {
                expected: 1,
                actual: 2
            }
        ),
        "{err}"
    );
    assert_eq!(repo.get(&id("cas")).await.unwrap(), gate);
    assert_eq!(
        repo.history(&id("cas")).await.unwrap(),
        vec![first, to_gate]
    );

    let (ghost, ghost_first) = new_workflow("ghost");
    let (_, ghost_step) = step(&ghost, Trigger::Cancel, 1);
    let err = repo.commit(1, &ghost, &ghost_step).await.unwrap_err();
    assert!(
        matches!(err, RepositoryError::NotFound(_)),
        "{err} {ghost_first:?}"
    );
}

pub async fn history_keeps_every_transition_in_order(repo: &dyn WorkflowRepository) {
    let (mut workflow, first) = new_workflow("hist");
    repo.create(&workflow, &first).await.unwrap();
    let mut expected = vec![first];
    for (n, trigger) in [
        Trigger::AgentComplete,
        Trigger::HumanRejected,
        Trigger::AgentComplete,
        Trigger::HumanApproved,
        Trigger::AgentComplete,
    ]
    .into_iter()
    .enumerate()
    {
        let (next, transition) = step(&workflow, trigger, 10 * (n as i64 + 1));
        repo.commit(workflow.version(), &next, &transition)
            .await
            .unwrap();
        workflow = next;
        expected.push(transition);
    }
    let history = repo.history(&id("hist")).await.unwrap();
    assert_eq!(history, expected);
    let stored = repo.get(&id("hist")).await.unwrap();
    assert_eq!(stored, workflow);
    assert_eq!(
        (stored.state(), stored.rework_count()),
        (WorkflowState::Done, 1)
    );
    assert!(stored.completed_at().is_some());
    let replayed = Workflow::replay(
        stored.feature_id().clone(),
        stored.description().clone(),
        stored.metadata().clone(),
        &history,
    )
    .unwrap();
    assert_eq!(replayed, stored);
}

pub async fn list_pages_in_feature_id_byte_order_with_a_state_filter(
    repo: &dyn WorkflowRepository,
) {
    // Mixed case and punctuation: byte order puts 'B' < 'a' and '-' < '.' < '_'.
    let names = ["b", "a.2", "B", "a_1", "a-3", "c", "a"];
    for name in names {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
    }
    let (workflow, _) = new_workflow("c");
    let (gate, t) = step(&workflow, Trigger::AgentComplete, 1);
    repo.commit(1, &gate, &t).await.unwrap();

    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let all: Vec<String> = repo
        .list(None, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|w| w.feature_id().to_string())
        .collect();
    assert_eq!(all, sorted);

    let mut paged = Vec::new();
    let mut after: Option<FeatureId> = None;
    loop {
        let page = repo.list(None, after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|w| w.feature_id().clone());
        paged.extend(page.into_iter().map(|w| w.feature_id().to_string()));
    }
    assert_eq!(paged, sorted);

    let gate_only = repo
        .list(Some(WorkflowState::Gate1), None, 100)
        .await
        .unwrap();
    assert_eq!(gate_only.len(), 1);
    assert_eq!(gate_only[0].feature_id().as_str(), "c");
    let after_c = repo
        .list(Some(WorkflowState::Phase1), Some(&id("b")), 100)
        .await
        .unwrap();
    assert!(after_c.is_empty(), "{after_c:?}");
}

pub async fn summary_counts_every_state(repo: &dyn WorkflowRepository) {
    let empty = repo.summary().await.unwrap();
    assert_eq!((empty.total(), empty.as_map().len()), (0, 5));
    for name in ["s1", "s2", "s3"] {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
    }
    let (workflow, _) = new_workflow("s1");
    let (idle, t) = step(&workflow, Trigger::Cancel, 1);
    repo.commit(1, &idle, &t).await.unwrap();
    let counts = repo.summary().await.unwrap();
    assert_eq!(counts.get(WorkflowState::Idle), 1);
    assert_eq!(counts.get(WorkflowState::Phase1), 2);
    assert_eq!(counts.total(), 3);
}

pub async fn hub_sessions_are_swapped_only_from_the_expected_one(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("hub");
    repo.create(&workflow, &first).await.unwrap();
    let s = |n: &str| HubSessionId(n.to_owned());
    assert_eq!(repo.hub_session(&id("hub")).await.unwrap(), None);
    assert_eq!(
        repo.swap_hub_session(&id("hub"), None, &s("one"))
            .await
            .unwrap(),
        s("one")
    );
    // A late first-opener finds the winner's session.
    assert_eq!(
        repo.swap_hub_session(&id("hub"), None, &s("two"))
            .await
            .unwrap(),
        s("one")
    );
    // Replacing needs the current one.
    assert_eq!(
        repo.swap_hub_session(&id("hub"), Some(&s("stale")), &s("three"))
            .await
            .unwrap(),
        s("one")
    );
    assert_eq!(
        repo.swap_hub_session(&id("hub"), Some(&s("one")), &s("four"))
            .await
            .unwrap(),
        s("four")
    );
    assert_eq!(repo.hub_session(&id("hub")).await.unwrap(), Some(s("four")));
    // The session does not disturb the workflow, nor a commit the session.
    assert_eq!(repo.get(&id("hub")).await.unwrap(), workflow);
    let (gate, t) = step(&workflow, Trigger::AgentComplete, 1);
    repo.commit(1, &gate, &t).await.unwrap();
    assert_eq!(repo.hub_session(&id("hub")).await.unwrap(), Some(s("four")));
    assert!(matches!(
        repo.hub_session(&id("nope")).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert!(matches!(
        repo.swap_hub_session(&id("nope"), None, &s("x")).await,
        Err(RepositoryError::NotFound(_))
    ));
}

pub fn consultation(feature: &str, minute: i64, pending: bool) -> Consultation {
    Consultation::answered(
        ConsultationId::new(),
        id(feature),
        WorkflowState::Phase1,
        Consult {
            topic: Topic::parse("security").unwrap(),
            question: Question::parse(format!("question number {minute}")).unwrap(),
            context: Some("context".into()),
        },
        HubAnswer {
            answer: format!("answer {minute}"),
            rationale: Some("because".into()),
            confidence: if pending { 40 } else { 97 },
            uncertainty_reasons: vec![],
            status: if pending {
                AnswerStatus::PendingHuman
            } else {
                AnswerStatus::Resolved
            },
            escalation_id: pending.then(|| EscalationId(format!("esc-{minute}"))),
        },
        t0() + Duration::minutes(minute),
    )
}

pub async fn consultations_are_kept_oldest_first_and_only_pending_ones_change(
    repo: &dyn WorkflowRepository,
) {
    let (workflow, first) = new_workflow("con");
    repo.create(&workflow, &first).await.unwrap();
    let later = consultation("con", 5, true);
    let earlier = consultation("con", 1, false);
    repo.add_consultation(&later).await.unwrap();
    repo.add_consultation(&earlier).await.unwrap();
    assert_eq!(
        repo.consultations(&id("con")).await.unwrap(),
        vec![earlier.clone(), later.clone()]
    );

    let mut resolved = later.clone();
    resolved.status = ConsultationStatus::Resolved;
    resolved.final_answer = Some("human answer".into());
    resolved.human_action = Some(HumanAction::Correct);
    resolved.human_response = Some("human answer".into());
    resolved.updated_at = later.updated_at + Duration::minutes(1);
    repo.update_consultation(&resolved).await.unwrap();
    // A resolved consultation is never changed again.
    let mut again = resolved.clone();
    again.final_answer = Some("overwritten".into());
    repo.update_consultation(&again).await.unwrap();
    assert_eq!(
        repo.consultations(&id("con")).await.unwrap(),
        vec![earlier, resolved]
    );

    assert!(matches!(
        repo.add_consultation(&consultation("nope", 1, false)).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(
        repo.get(&id("con")).await.unwrap(),
        workflow,
        "consultations changed the workflow"
    );
}

pub async fn concurrent_commits_against_one_version_let_exactly_one_land(
    repo: Arc<dyn WorkflowRepository>,
) {
    let (workflow, first) = new_workflow("race");
    repo.create(&workflow, &first).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let repo = repo.clone();
            let workflow = workflow.clone();
            tokio::spawn(async move {
                let trigger = if n % 2 == 0 {
                    Trigger::AgentComplete
                } else {
                    Trigger::Cancel
                };
                let (next, transition) = step(&workflow, trigger, n);
                repo.commit(1, &next, &transition).await
            })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => landed += 1,
            Err(RepositoryError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(landed, 1);
    let history = repo.history(&id("race")).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(repo.get(&id("race")).await.unwrap().state(), history[1].to);
}

/// A consultation is stored only while its workflow is active, and so is the hub's answer to
/// an ask: the check is part of the write, so a cancel (or the work's end) that landed first
/// wins. An ask may still fail, and an escalation be answered, once the workflow is not active.
pub async fn consultations_are_stored_only_for_active_workflows(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("inactive");
    repo.create(&workflow, &first).await.unwrap();
    let mut asking = consultation("inactive", 1, false);
    (asking.answer, asking.confidence, asking.final_answer) = (None, None, None);
    asking.status = ConsultationStatus::Asking;
    repo.add_consultation(&asking).await.unwrap();
    let pending = consultation("inactive", 2, true);
    repo.add_consultation(&pending).await.unwrap();
    let (cancelled, to_idle) = step(&workflow, Trigger::Cancel, 10);
    repo.commit(1, &cancelled, &to_idle).await.unwrap();
    for status in [
        ConsultationStatus::Resolved,
        ConsultationStatus::PendingHuman,
    ] {
        let mut answered = consultation("inactive", 1, status == ConsultationStatus::PendingHuman);
        answered.id = asking.id;
        let err = repo.update_consultation(&answered).await.unwrap_err();
        assert!(matches!(err, RepositoryError::NotActive { .. }), "{err}");
    }
    let mut resolved = pending.clone();
    resolved.status = ConsultationStatus::Resolved;
    repo.update_consultation(&resolved).await.unwrap();
    let mut failed = asking.clone();
    failed.fail(
        ConsultationError::not_active(WorkflowState::Idle),
        t0() + Duration::minutes(11),
    );
    repo.update_consultation(&failed).await.unwrap();
    assert_eq!(
        repo.consultations(&id("inactive")).await.unwrap(),
        vec![failed, resolved]
    );
    let err = repo
        .add_consultation(&consultation("inactive", 20, false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::NotActive {
                state: WorkflowState::Idle,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(repo.consultations(&id("inactive")).await.unwrap().len(), 2);

    // Asked in PHASE_2, and answered once the work is DONE.
    let (mut finished, first) = new_workflow("finished");
    repo.create(&finished, &first).await.unwrap();
    let mut asking = consultation("finished", 1, false);
    (asking.answer, asking.confidence, asking.final_answer) = (None, None, None);
    asking.status = ConsultationStatus::Asking;
    for (version, trigger) in [
        (1, Trigger::AgentComplete),
        (2, Trigger::HumanApproved),
        (3, Trigger::AgentComplete),
    ] {
        if version == 3 {
            repo.add_consultation(&asking).await.unwrap();
        }
        let (next, transition) = step(&finished, trigger, 10);
        repo.commit(version, &next, &transition).await.unwrap();
        finished = next;
    }
    assert_eq!(finished.state(), WorkflowState::Done);
    let mut answered = consultation("finished", 1, false);
    answered.id = asking.id;
    let err = repo.update_consultation(&answered).await.unwrap_err();
    assert!(
        matches!(
            err,
            RepositoryError::NotActive {
                state: WorkflowState::Done,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        repo.consultations(&id("finished")).await.unwrap(),
        vec![asking]
    );
    assert!(matches!(
        repo.add_consultation(&consultation("nobody", 1, false))
            .await,
        Err(RepositoryError::NotFound(_))
    ));
}

/// Many workflows committed at once (the stores may share one transaction among them): each
/// compare-and-set is judged on its own, and a loser fails alone.
pub async fn concurrent_commits_of_many_workflows_are_each_judged_on_their_own(
    repo: Arc<dyn WorkflowRepository>,
) {
    let mut workflows = Vec::new();
    for n in 0..24 {
        let (workflow, first) = new_workflow(&format!("many-{n:02}"));
        repo.create(&workflow, &first).await.unwrap();
        workflows.push(workflow);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(workflows.len() * 2));
    let mut tasks = Vec::new();
    for workflow in &workflows {
        // One writer that read the current version, and one that claims a stale one.
        for expected in [1, 7] {
            let repo = repo.clone();
            let barrier = barrier.clone();
            let (next, transition) = step(workflow, Trigger::AgentComplete, 1);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (expected, repo.commit(expected, &next, &transition).await)
            }));
        }
    }
    for task in tasks {
        match task.await.unwrap() {
            (1, Ok(())) => {}
            (
                7,
                Err(RepositoryError::VersionConflict {
                    expected: 7,
                    actual,
                }),
            ) => {
                assert!(actual == 1 || actual == 2, "{actual}");
            }
            (expected, other) => panic!("expected {expected}: {other:?}"),
        }
    }
    for workflow in &workflows {
        let stored = repo.get(workflow.feature_id()).await.unwrap();
        assert_eq!(
            (stored.version(), stored.state()),
            (2, WorkflowState::Gate1)
        );
        assert_eq!(repo.history(workflow.feature_id()).await.unwrap().len(), 2);
    }
}

/// Many workflows created at once (the stores may share one statement and one transaction
/// among them), some of them already there: each creation is answered on its own, a
/// duplicate changes nothing and fails alone, and each new workflow gets its history entry
/// and exactly one event.
pub async fn concurrent_creates_are_each_answered_on_their_own(repo: Arc<dyn WorkflowRepository>) {
    let name = |n: usize| format!("born-{n:02}");
    let mut existing = Vec::new();
    for n in 0..6 {
        let (workflow, first) = new_workflow(&name(n * 4));
        repo.create(&workflow, &first).await.unwrap();
        existing.push(workflow);
    }
    let before = all_events(repo.as_ref()).await.len();
    let barrier = Arc::new(tokio::sync::Barrier::new(24));
    let mut tasks = Vec::new();
    for n in 0..24 {
        let repo = repo.clone();
        let barrier = barrier.clone();
        let (workflow, first) = Workflow::start(
            id(&name(n)),
            Description::parse("created concurrently").unwrap(),
            Metadata::default(),
            TransitionContext::at(t0() + Duration::minutes(1)),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (n, repo.create(&workflow, &first).await)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (n, Err(RepositoryError::AlreadyExists(f))) if n % 4 == 0 => {
                assert_eq!(f.as_str(), name(n));
            }
            (n, Ok(())) if n % 4 != 0 => {}
            (n, other) => panic!("{}: {other:?}", name(n)),
        }
    }
    for workflow in &existing {
        assert_eq!(&repo.get(workflow.feature_id()).await.unwrap(), workflow);
    }
    for n in (0..24).filter(|n| n % 4 != 0) {
        let history = repo.history(&id(&name(n))).await.unwrap();
        assert_eq!(history.len(), 1, "{}", name(n));
    }
    let events = all_events(repo.as_ref()).await;
    let new: Vec<&str> = events[before..]
        .iter()
        .map(|e| e.event.subject.as_str())
        .collect();
    assert_eq!(new.len(), 18, "{new:?}");
    let distinct: std::collections::HashSet<&str> = new.iter().copied().collect();
    assert_eq!(distinct.len(), 18, "{new:?}");
    assert!(
        events.windows(2).all(|w| w[1].id == w[0].id + 1),
        "event ids have no gap"
    );
}

pub async fn reservations_are_seen_by_no_reader_until_published(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("res");
    repo.create(&workflow, &first).await.unwrap();
    let ask = |minute: i64| {
        let mut asking = consultation("res", minute, false);
        asking.answer = None;
        asking.confidence = None;
        asking.final_answer = None;
        asking.status = ConsultationStatus::Asking;
        asking
    };
    // A reservation is seen by no reader, and an update never reaches it.
    let hidden = ask(1);
    repo.reserve_consultation(&hidden).await.unwrap();
    let mut early = consultation("res", 1, false);
    early.id = hidden.id;
    repo.update_consultation(&early).await.unwrap();
    assert_eq!(repo.consultations(&id("res")).await.unwrap(), vec![]);

    // Published, it replaces its reservation; an `asking` one may then be updated once.
    repo.add_consultation(&hidden).await.unwrap();
    assert_eq!(
        repo.consultations(&id("res")).await.unwrap(),
        vec![hidden.clone()]
    );
    let mut answered = consultation("res", 1, true);
    answered.id = hidden.id;
    repo.update_consultation(&answered).await.unwrap();
    assert_eq!(
        repo.consultations(&id("res")).await.unwrap(),
        vec![answered.clone()]
    );
    // Dropping a published consultation's reservation removes nothing.
    repo.drop_reservation(&id("res"), hidden.id).await.unwrap();
    assert_eq!(
        repo.consultations(&id("res")).await.unwrap(),
        vec![answered.clone()]
    );

    // A dropped reservation is gone: publishing another id later shows only that one.
    let dropped = ask(2);
    repo.reserve_consultation(&dropped).await.unwrap();
    repo.drop_reservation(&id("res"), dropped.id).await.unwrap();
    assert_eq!(
        repo.consultations(&id("res")).await.unwrap(),
        vec![answered.clone()]
    );

    // Interrupting: reservations and published asks made before the cut-off end; later ones
    // and settled ones are left alone.
    let (old_hidden, old_asking, new_asking) = (ask(3), ask(4), ask(30));
    repo.reserve_consultation(&old_hidden).await.unwrap();
    repo.add_consultation(&old_asking).await.unwrap();
    repo.add_consultation(&new_asking).await.unwrap();
    let error = ConsultationError::interrupted();
    let at = t0() + Duration::minutes(40);
    let failed = repo
        .interrupt_asks(t0() + Duration::minutes(10), &error, at)
        .await
        .unwrap();
    assert_eq!(failed, 1);
    let mut interrupted = old_asking.clone();
    interrupted.fail(error, at);
    // Its event says so, as readers see it now.
    let last = all_events(repo).await.pop().expect("events");
    assert_eq!(last.event.event_type, EventType::ConsultationUpdated);
    assert_eq!(
        last.event.data_value(),
        serde_json::to_value(&interrupted).unwrap()
    );
    assert_eq!(
        repo.consultations(&id("res")).await.unwrap(),
        vec![answered, interrupted, new_asking]
    );
    // The interrupted reservation is gone for good: an update does not bring it back.
    repo.update_consultation(&old_hidden).await.unwrap();
    assert_eq!(repo.consultations(&id("res")).await.unwrap().len(), 3);

    // A cancelled workflow takes no reservation either.
    let (cancelled, transition) = step(&workflow, Trigger::Cancel, 60);
    repo.commit(workflow.version(), &cancelled, &transition)
        .await
        .unwrap();
    assert!(matches!(
        repo.reserve_consultation(&ask(50)).await,
        Err(RepositoryError::NotActive { .. })
    ));
}

/// An approval judged by the gate's rules lands only while no published consultation blocks
/// the gate: one published after its judge read the facts refuses the commit; a reservation
/// (an ask still inside its wait) holds nothing. Other changes
/// (a rejection) land whatever blocks.
pub async fn an_approval_lands_only_while_no_consultation_blocks_the_gate(
    repo: &dyn WorkflowRepository,
) {
    let (workflow, first) = new_workflow("gated");
    repo.create(&workflow, &first).await.unwrap();
    let (gate, to_gate) = step(&workflow, Trigger::AgentComplete, 60);
    repo.commit(1, &gate, &to_gate).await.unwrap();
    assert_eq!(repo.gate_blockers(&[id("gated")]).await.unwrap(), vec![]);
    let (approved, approval) = step(&gate, Trigger::HumanApproved, 60);
    assert!(approval.is_gated_approval());
    let refused = |result: Result<(), RepositoryError>| {
        assert!(
            matches!(result, Err(RepositoryError::GateBlocked(ref f)) if f.as_str() == "gated"),
            "{result:?}"
        );
    };

    // A reservation is seen by no gate, as by no listing; published, it holds the gate until
    // it is answered.
    let mut asking = consultation("gated", 1, false);
    (asking.answer, asking.confidence, asking.final_answer) = (None, None, None);
    asking.status = ConsultationStatus::Asking;
    repo.reserve_consultation(&asking).await.unwrap();
    assert_eq!(repo.consultations(&id("gated")).await.unwrap(), vec![]);
    assert_eq!(repo.gate_blockers(&[id("gated")]).await.unwrap(), vec![]);
    repo.add_consultation(&asking).await.unwrap();
    assert_eq!(
        repo.gate_blockers(&[id("gated")]).await.unwrap(),
        vec![asking.clone()]
    );
    refused(repo.commit(2, &approved, &approval).await);
    let mut answered = consultation("gated", 1, false);
    answered.id = asking.id;
    repo.update_consultation(&answered).await.unwrap();
    assert_eq!(repo.gate_blockers(&[id("gated")]).await.unwrap(), vec![]);

    // So does a published escalation, until it is settled; nothing lands meanwhile.
    let pending = consultation("gated", 2, true);
    repo.add_consultation(&pending).await.unwrap();
    assert_eq!(
        repo.gate_blockers(&[id("gated")]).await.unwrap(),
        vec![pending.clone()]
    );
    refused(repo.commit(2, &approved, &approval).await);
    assert_eq!(repo.get(&id("gated")).await.unwrap(), gate);
    assert_eq!(repo.history(&id("gated")).await.unwrap().len(), 2);
    let mut settled = consultation("gated", 2, false);
    settled.id = pending.id;
    repo.update_consultation(&settled).await.unwrap();
    assert_eq!(repo.gate_blockers(&[id("gated")]).await.unwrap(), vec![]);
    repo.commit(2, &approved, &approval).await.unwrap();
    assert_eq!(
        repo.get(&id("gated")).await.unwrap().state(),
        WorkflowState::Phase2
    );

    // A rejection is not held by what blocks an approval.
    let (workflow, first) = new_workflow("rejected");
    repo.create(&workflow, &first).await.unwrap();
    let (gate, to_gate) = step(&workflow, Trigger::AgentComplete, 60);
    repo.commit(1, &gate, &to_gate).await.unwrap();
    let held = consultation("rejected", 3, true);
    repo.add_consultation(&held).await.unwrap();

    // One read serves a page of gates, oldest first across them; an unknown id holds nothing.
    let earlier = consultation("gated", 1, true);
    repo.add_consultation(&earlier).await.unwrap();
    assert_eq!(
        repo.gate_blockers(&[id("rejected"), id("nobody"), id("gated")])
            .await
            .unwrap(),
        vec![earlier.clone(), held.clone()]
    );
    assert_eq!(repo.gate_blockers(&[]).await.unwrap(), vec![]);
    // A page longer than a statement may carry parameters (SQLite's bound is 32 766) is read
    // whole, still oldest first when its gates fall in different parts of it.
    let mut many: Vec<FeatureId> = (0..40_000).map(|n| id(&format!("nobody-{n}"))).collect();
    many[5] = id("rejected");
    many[35_000] = id("gated");
    assert_eq!(
        repo.gate_blockers(&many).await.unwrap(),
        vec![earlier, held]
    );

    let (rejected, rejection) = step(&gate, Trigger::HumanRejected, 60);
    repo.commit(2, &rejected, &rejection).await.unwrap();
}

/// An approval and a consultation of one workflow stored at the same moment are ordered:
/// the consultation lands first and the approval is refused, or the approval lands first (its
/// event precedes the consultation's in the log, which numbers events in commit order).
/// Never an approval committed after a blocking consultation was stored.
pub async fn concurrent_approvals_and_consultations_are_ordered(repo: Arc<dyn WorkflowRepository>) {
    let mut races = Vec::new();
    for round in 0..24 {
        let name = format!("race-{round}");
        let (workflow, first) = new_workflow(&name);
        repo.create(&workflow, &first).await.unwrap();
        let (gate, to_gate) = step(&workflow, Trigger::AgentComplete, 60);
        repo.commit(1, &gate, &to_gate).await.unwrap();
        let (approved, approval) = step(&gate, Trigger::HumanApproved, 60);
        let pending = consultation(&name, round, true);
        let (approving, asking) = (repo.clone(), repo.clone());
        let approve = tokio::spawn(async move { approving.commit(2, &approved, &approval).await });
        let ask = tokio::spawn(async move { asking.add_consultation(&pending).await });
        races.push((name, approve, ask));
    }
    for (name, approve, ask) in races {
        let approved = approve.await.unwrap();
        // Stored either way: after the approval the workflow is in PHASE_2, still active.
        ask.await.unwrap().unwrap();
        let kinds: Vec<EventType> = all_events(&*repo)
            .await
            .into_iter()
            .filter(|e| e.event.subject.as_str() == name)
            .map(|e| e.event.event_type)
            .collect();
        let asked = kinds
            .iter()
            .position(|&t| t == EventType::ConsultationCreated)
            .expect("the consultation's event");
        match approved {
            Ok(()) => assert_eq!(asked, 3, "{name}: approved after the ask: {kinds:?}"),
            Err(RepositoryError::GateBlocked(_)) => {
                assert_eq!(kinds.len(), 3, "{name}: {kinds:?}");
                let stored = repo.get(&id(&name)).await.unwrap();
                assert_eq!(stored.state(), WorkflowState::Gate1);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// A write that records several events (the interruption of several asks) numbers them one
/// after another, right after the log's last id: no gap, no id twice, one event per ask.
pub async fn several_events_of_one_write_take_consecutive_ids(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("many");
    repo.create(&workflow, &first).await.unwrap();
    let mut asks = Vec::new();
    for minute in 1..=3 {
        let mut asking = consultation("many", minute, false);
        asking.answer = None;
        asking.confidence = None;
        asking.final_answer = None;
        asking.status = ConsultationStatus::Asking;
        repo.add_consultation(&asking).await.unwrap();
        asks.push(asking.id.to_string());
    }
    let last = all_events(repo).await.pop().expect("events").id;
    let failed = repo
        .interrupt_asks(
            t0() + Duration::minutes(10),
            &ConsultationError::interrupted(),
            t0() + Duration::minutes(20),
        )
        .await
        .unwrap();
    assert_eq!(failed, 3);
    // The whole log reads 1, 2, … up to its last id, the three new ones last.
    let log = repo.events(0, &EventFilter::default(), 1000).await.unwrap();
    let ids: Vec<u64> = log.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=log.last_id).collect::<Vec<_>>());
    assert_eq!(log.last_id, last + 3);
    let added: Vec<_> = log.events.iter().filter(|e| e.id > last).collect();
    let mut interrupted: Vec<String> = added
        .iter()
        .map(|e| {
            e.event.data_value()["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    interrupted.sort();
    asks.sort();
    assert_eq!(interrupted, asks);
}

/// A workflow `name` started at `t0` with gate `policy`, stored.
async fn started_with(
    repo: &dyn WorkflowRepository,
    name: &str,
    policy: orchestrator_core::gate::GatePolicy,
) -> Workflow {
    let (workflow, first) = Workflow::start_with(
        id(name),
        Description::parse("x").unwrap(),
        Metadata::default(),
        policy,
        TransitionContext::at(t0()),
    );
    repo.create(&workflow, &first).await.unwrap();
    workflow
}

/// Gates by due: the earliest first, those without a deadline last in feature-id order, and
/// nothing outside the gate.
pub async fn gates_are_listed_earliest_due_first(repo: &dyn WorkflowRepository) {
    use orchestrator_core::gate::{GatePolicy, OnExpiry};
    let due_in = |seconds| {
        GatePolicy::default()
            .with_deadline(seconds, OnExpiry::Flag)
            .unwrap()
    };
    // Ids in the opposite order of their deadlines, so feature-id order would be wrong.
    for (name, policy, at_gate) in [
        ("a-none", due_in(None), true),
        ("b-late", due_in(Some(300)), true),
        ("c-soon", due_in(Some(60)), true),
        ("d-sooner", due_in(Some(30)), true),
        ("e-none", due_in(None), true),
        ("f-working", due_in(Some(1)), false),
    ] {
        let workflow = started_with(repo, name, policy).await;
        if at_gate {
            let (next, complete) = step(&workflow, Trigger::AgentComplete, 10);
            repo.commit(1, &next, &complete).await.unwrap();
        }
    }
    let names = |gates: Vec<Workflow>| -> Vec<String> {
        gates.iter().map(|w| w.feature_id().to_string()).collect()
    };
    assert_eq!(
        names(repo.gates_by_due(10).await.unwrap()),
        ["d-sooner", "c-soon", "b-late", "a-none", "e-none"]
    );
    assert_eq!(
        names(repo.gates_by_due(2).await.unwrap()),
        ["d-sooner", "c-soon"]
    );
}

pub async fn overdue_gates_are_listed_counted_and_noted_once(repo: &dyn WorkflowRepository) {
    use orchestrator_core::gate::{GatePolicy, OnExpiry};
    use orchestrator_core::{Expiry, OverdueNote};
    let policy = GatePolicy::default()
        .with_deadline(Some(60), OnExpiry::Reject)
        .unwrap();
    let mut at_gate = Vec::new();
    for (name, policy) in [("late", policy), ("no-deadline", GatePolicy::default())] {
        let workflow = started_with(repo, name, policy).await;
        // Enters the gate 10 s after the start: due 70 s after it.
        let (next, complete) = step(&workflow, Trigger::AgentComplete, 10);
        repo.commit(1, &next, &complete).await.unwrap();
        at_gate.push(next);
    }
    let late = &at_gate[0];
    let due = late.gate_due_at().unwrap();
    assert_eq!(due, t0() + Duration::seconds(70));
    assert_eq!(
        repo.get(&id("late")).await.unwrap().gate_due_at(),
        Some(due)
    );

    let before = due - Duration::seconds(1);
    assert!(
        repo.list_overdue(before, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(repo.count_overdue(before).await.unwrap(), 0);
    assert!(repo.unnoted_overdue(before, 10).await.unwrap().is_empty());

    let after = due + Duration::seconds(1);
    assert_eq!(
        repo.list_overdue(after, None, 10).await.unwrap(),
        vec![late.clone()]
    );
    assert!(
        repo.list_overdue(after, Some(&id("late")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(repo.count_overdue(after).await.unwrap(), 1);
    assert_eq!(
        repo.unnoted_overdue(after, 10).await.unwrap(),
        vec![late.clone()]
    );

    // The system's rejection, judged against a version that moved on: neither is kept.
    let (rejected, rejection) = step(late, Trigger::HumanRejected, 71);
    let note = OverdueNote {
        feature_id: id("late"),
        due_at: due,
        noted_at: after,
        on_expiry: OnExpiry::Reject,
        approvals: Vec::new(),
    };
    let stale = Expiry {
        expected_version: 1,
        workflow: &rejected,
        transition: &rejection,
    };
    assert!(matches!(
        repo.note_overdue(&note, Some(stale)).await,
        Err(RepositoryError::VersionConflict {
            expected: 1,
            actual: 2
        })
    ));
    assert_eq!(repo.unnoted_overdue(after, 10).await.unwrap().len(), 1);
    assert_eq!(repo.history(&id("late")).await.unwrap().len(), 2);

    // Against the current version: the note and the change land together, once.
    let current = Expiry {
        expected_version: 2,
        ..stale
    };
    assert!(repo.note_overdue(&note, Some(current)).await.unwrap());
    assert_eq!(repo.get(&id("late")).await.unwrap(), rejected);
    assert_eq!(repo.get(&id("late")).await.unwrap().gate_due_at(), None);
    assert_eq!(repo.history(&id("late")).await.unwrap().len(), 3);
    assert!(!repo.note_overdue(&note, None).await.unwrap());
    assert!(repo.unnoted_overdue(after, 10).await.unwrap().is_empty());
    assert_eq!(repo.count_overdue(after).await.unwrap(), 0);
    // A stay not at the gate with that deadline (one that ended in time, or none) is never
    // noted, whatever a stale read said.
    let elsewhere = OverdueNote {
        feature_id: id("no-deadline"),
        ..note
    };
    assert!(!repo.note_overdue(&elsewhere, None).await.unwrap());
    let overdue = all_events(repo)
        .await
        .into_iter()
        .filter(|e| e.event.event_type == EventType::GateOverdue)
        .count();
    assert_eq!(overdue, 1);
}

pub async fn unanswered_keys_are_forgotten_and_answered_ones_kept(repo: &dyn WorkflowRepository) {
    use orchestrator_core::{IdempotencyKey, KeyClaim, Receipt};
    let key = |name: &str| IdempotencyKey {
        scope: "*".to_owned(),
        key: name.to_owned(),
    };
    let now = t0();
    let lease = now + Duration::seconds(65);
    let claim = async |k: &IdempotencyKey| {
        repo.claim_key(k, "fp", now, lease, now - Duration::hours(24))
            .await
            .unwrap()
    };
    // A stopped server's two requests: one answered, one not.
    let (answered, left) = (key("answered"), key("left"));
    assert_eq!(claim(&answered).await, KeyClaim::Claimed);
    repo.answer_key(&Receipt {
        key: answered.clone(),
        lease_until: lease,
        answer: "kept".to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(claim(&left).await, KeyClaim::Claimed);
    assert_eq!(claim(&left).await, KeyClaim::InUse);

    assert_eq!(repo.forget_unanswered_keys().await.unwrap(), 1);
    // The retry of the unanswered one runs at once; the answered one is still replayed.
    assert_eq!(claim(&left).await, KeyClaim::Claimed);
    assert_eq!(
        claim(&answered).await,
        KeyClaim::Answered("kept".to_owned())
    );
    assert_eq!(repo.forget_unanswered_keys().await.unwrap(), 1);
    assert_eq!(repo.forget_unanswered_keys().await.unwrap(), 0);
}

/// A key a retry took over just before the key expired is that retry's until its lease ends:
/// a request with the key after the expiry waits, instead of running beside it.
pub async fn an_expired_key_a_retry_still_holds_is_not_claimed_anew(repo: &dyn WorkflowRepository) {
    use orchestrator_core::{IdempotencyKey, KeyClaim};
    let key = IdempotencyKey {
        scope: "*".to_owned(),
        key: "late-retry".to_owned(),
    };
    let lease = Duration::seconds(65);
    let claim = async |at: chrono::DateTime<Utc>| {
        repo.claim_key(&key, "fp", at, at + lease, at - Duration::hours(24))
            .await
            .unwrap()
    };
    let first = t0();
    assert_eq!(claim(first).await, KeyClaim::Claimed);
    // The first request's lease ended unanswered; a retry takes the key over 10 s before it
    // expires.
    let retry = first + Duration::hours(24) - Duration::seconds(10);
    assert_eq!(claim(retry).await, KeyClaim::Claimed);
    // Expired now, but held: in use.
    let after = first + Duration::hours(24) + Duration::seconds(1);
    assert_eq!(claim(after).await, KeyClaim::InUse);
    // Once the retry's lease has ended, the expired key is claimed anew.
    assert_eq!(
        claim(retry + lease + Duration::seconds(1)).await,
        KeyClaim::Claimed
    );
}

pub async fn idempotency_keys_are_claimed_once_and_answered_with_their_change(
    repo: &dyn WorkflowRepository,
) {
    use orchestrator_core::{IdempotencyKey, KeyClaim, Receipt};
    let key = |scope: &str, name: &str| IdempotencyKey {
        scope: scope.to_owned(),
        key: name.to_owned(),
    };
    let now = t0();
    let lease = now + Duration::seconds(65);
    let receipt = |k: &IdempotencyKey, answer: &str| Receipt {
        key: k.clone(),
        lease_until: lease,
        answer: answer.to_owned(),
    };
    let day_ago = now - Duration::hours(24);
    let claim = async |k: &IdempotencyKey, fingerprint: &str, at: Timestamp| {
        repo.claim_key(
            k,
            fingerprint,
            at,
            at + Duration::seconds(65),
            at - Duration::hours(24),
        )
        .await
        .unwrap()
    };

    // A new key is claimed; a repeat finds it in use, another request finds it reused.
    let start_key = key("*", "start");
    assert_eq!(claim(&start_key, "fp-start", now).await, KeyClaim::Claimed);
    assert_eq!(claim(&start_key, "fp-start", now).await, KeyClaim::InUse);
    assert_eq!(claim(&start_key, "fp-other", now).await, KeyClaim::Reused);
    // Another scope's key of the same name is another key.
    assert_eq!(
        claim(&key("alice", "start"), "fp-other", now).await,
        KeyClaim::Claimed
    );

    // The answer lands with the workflow it created; a later answer does not replace it.
    let (workflow, first) = new_workflow("keyed");
    repo.create_with(&workflow, &first, Some(&receipt(&start_key, "created")))
        .await
        .unwrap();
    assert!(matches!(
        repo.answer_key(&receipt(&start_key, "late")).await,
        Err(RepositoryError::KeyTakenOver(_))
    ));
    assert_eq!(
        claim(&start_key, "fp-start", now).await,
        KeyClaim::Answered("created".to_owned())
    );

    // A commit that loses keeps no answer; one that lands keeps it.
    let advance_key = key("*", "advance");
    assert_eq!(
        claim(&advance_key, "fp-advance", now).await,
        KeyClaim::Claimed
    );
    let (next, complete) = step(&workflow, Trigger::AgentComplete, 5);
    let lost = repo
        .commit_with(
            7,
            &next,
            &complete,
            Some(&receipt(&advance_key, "advanced")),
        )
        .await;
    assert!(matches!(lost, Err(RepositoryError::VersionConflict { .. })));
    assert_eq!(
        claim(&advance_key, "fp-advance", now).await,
        KeyClaim::InUse
    );
    repo.commit_with(
        1,
        &next,
        &complete,
        Some(&receipt(&advance_key, "advanced")),
    )
    .await
    .unwrap();
    assert_eq!(
        claim(&advance_key, "fp-advance", now).await,
        KeyClaim::Answered("advanced".to_owned())
    );

    // A consultation keeps its answer when it is stored, and none when it is refused.
    let ask_key = key("*", "ask");
    assert_eq!(claim(&ask_key, "fp-ask", now).await, KeyClaim::Claimed);
    let asked = consultation("keyed", 1, true);
    repo.add_consultation_with(&asked, Some(&receipt(&ask_key, "asked")))
        .await
        .unwrap();
    assert_eq!(
        claim(&ask_key, "fp-ask", now).await,
        KeyClaim::Answered("asked".to_owned())
    );
    let orphan_key = key("*", "orphan");
    assert_eq!(claim(&orphan_key, "fp", now).await, KeyClaim::Claimed);
    let refused = repo
        .add_consultation_with(
            &consultation("no-such-workflow", 1, false),
            Some(&receipt(&orphan_key, "never")),
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(claim(&orphan_key, "fp", now).await, KeyClaim::InUse);

    // An unanswered key past its lease is taken over; a released one is claimed anew.
    let abandoned = key("*", "abandoned");
    assert_eq!(claim(&abandoned, "fp", now).await, KeyClaim::Claimed);
    let after_lease = lease + Duration::seconds(1);
    assert_eq!(
        claim(&abandoned, "fp", after_lease).await,
        KeyClaim::Claimed
    );
    assert_eq!(claim(&abandoned, "fp", after_lease).await, KeyClaim::InUse);
    // The first claim's release leaves the key to the claim that took it over.
    repo.release_key(&abandoned, lease).await.unwrap();
    assert_eq!(claim(&abandoned, "fp", after_lease).await, KeyClaim::InUse);
    repo.release_key(&abandoned, after_lease + Duration::seconds(65))
        .await
        .unwrap();
    assert_eq!(
        claim(&abandoned, "fp-new", after_lease).await,
        KeyClaim::Claimed
    );
    // Releasing an answered key forgets nothing.
    repo.release_key(&start_key, lease).await.unwrap();
    assert!(matches!(
        claim(&start_key, "fp-start", now).await,
        KeyClaim::Answered(_)
    ));

    // A day later the key is free again, for any request; the purge forgets old keys.
    let tomorrow = now + Duration::hours(24) + Duration::seconds(1);
    assert_eq!(
        claim(&start_key, "fp-other", tomorrow).await,
        KeyClaim::Claimed
    );
    assert_eq!(repo.purge_keys(day_ago).await.unwrap(), 0);
    let purged = repo.purge_keys(now + Duration::seconds(1)).await.unwrap();
    assert_eq!(
        purged, 4,
        "the advance, ask and orphan keys and alice's, claimed at t0"
    );
    assert_eq!(
        claim(&advance_key, "fp-other", now).await,
        KeyClaim::Claimed
    );
}

/// A request outlives its key's lease and a retry takes the key over: whatever the first one
/// then writes with its answer is refused whole (`KeyTakenOver`), leaving the change and the
/// answer to the retry; its release leaves the key alone.
pub async fn a_change_whose_key_a_retry_took_over_is_refused_whole(repo: &dyn WorkflowRepository) {
    use orchestrator_core::{IdempotencyKey, KeyClaim, Receipt};
    let now = t0();
    let first_lease = now + Duration::seconds(65);
    let retried = first_lease + Duration::seconds(1);
    let retry_lease = retried + Duration::seconds(65);
    let day = Duration::hours(24);
    // Each key is claimed, then taken over by a retry after the first claim's lease.
    let taken_over = async |name: &str| {
        let key = IdempotencyKey {
            scope: "*".to_owned(),
            key: name.to_owned(),
        };
        let first = repo.claim_key(&key, "fp", now, first_lease, now - day);
        assert_eq!(first.await.unwrap(), KeyClaim::Claimed);
        let retry = repo.claim_key(&key, "fp", retried, retry_lease, retried - day);
        assert_eq!(retry.await.unwrap(), KeyClaim::Claimed);
        key
    };
    let late = |key: &IdempotencyKey| Receipt {
        key: key.clone(),
        lease_until: first_lease,
        answer: "the first request's".to_owned(),
    };
    // Refused, and the retry still holds the key, unanswered: a next request is told so.
    let refused = async |key: &IdempotencyKey, result: Result<(), RepositoryError>| {
        assert!(
            matches!(result, Err(RepositoryError::KeyTakenOver(_))),
            "{result:?}"
        );
        let next = repo.claim_key(key, "fp", retried, retry_lease, retried - day);
        assert_eq!(next.await.unwrap(), KeyClaim::InUse, "{key:?}");
    };
    let events = all_events(repo).await.len();

    // A creation: no workflow.
    let key = taken_over("create").await;
    let (workflow, first) = new_workflow("taken-over");
    let created = repo.create_with(&workflow, &first, Some(&late(&key))).await;
    refused(&key, created).await;
    assert!(matches!(
        repo.get(workflow.feature_id()).await,
        Err(RepositoryError::NotFound(_))
    ));
    repo.create(&workflow, &first).await.unwrap();

    // A commit and a judged advance: the workflow stays as it was.
    let key = taken_over("commit").await;
    let (next, complete) = step(&workflow, Trigger::AgentComplete, 5);
    let committed = repo
        .commit_with(1, &next, &complete, Some(&late(&key)))
        .await;
    refused(&key, committed).await;
    let key = taken_over("advance").await;
    let sealed = late(&key);
    let judged = repo
        .advance(
            workflow.feature_id(),
            Box::new(move |current: &Workflow| {
                let (_, transition) = step(current, Trigger::AgentComplete, 5);
                let mut decision = orchestrator_core::Decision::of(current, transition);
                decision.receipt = Some(sealed.clone());
                Ok(decision)
            }),
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            orchestrator_core::Error::Storage(e) => e,
            other => panic!("{other}"),
        });
    refused(&key, judged).await;
    assert_eq!(repo.get(workflow.feature_id()).await.unwrap(), workflow);
    assert_eq!(repo.history(workflow.feature_id()).await.unwrap().len(), 1);

    // A consultation, new or changed: not stored, not changed.
    let key = taken_over("ask").await;
    let asked = consultation("taken-over", 1, true);
    let added = repo.add_consultation_with(&asked, Some(&late(&key))).await;
    refused(&key, added).await;
    assert!(
        repo.consultations(workflow.feature_id())
            .await
            .unwrap()
            .is_empty()
    );
    repo.add_consultation(&asked).await.unwrap();
    let key = taken_over("respond").await;
    let mut answered = asked.clone();
    answered.status = ConsultationStatus::Resolved;
    let updated = repo
        .update_consultation_with(&answered, Some(&late(&key)))
        .await;
    refused(&key, updated).await;
    assert_eq!(
        repo.consultations(workflow.feature_id()).await.unwrap(),
        vec![asked]
    );

    // An approval at the gate: its key is judged first, before what blocks the gate (the
    // escalation above does), as every write with a receipt judges it.
    repo.commit(1, &next, &complete).await.unwrap();
    let (approved, approval) = step(&next, Trigger::HumanApproved, 5);
    assert!(approval.is_gated_approval());
    let key = taken_over("approve").await;
    let approving = repo
        .commit_with(2, &approved, &approval, Some(&late(&key)))
        .await;
    refused(&key, approving).await;
    assert_eq!(repo.get(workflow.feature_id()).await.unwrap(), next);

    // Only what was written without the keys made events.
    assert_eq!(all_events(repo).await.len(), events + 3);

    // The first request's answer alone, and its release, leave the key to the retry, whose
    // answer is the key's.
    let key = taken_over("answer").await;
    refused(&key, repo.answer_key(&late(&key)).await).await;
    repo.release_key(&key, first_lease).await.unwrap();
    let again = repo.claim_key(&key, "fp", retried, retry_lease, retried - day);
    assert_eq!(again.await.unwrap(), KeyClaim::InUse);
    let retry = Receipt {
        lease_until: retry_lease,
        answer: "the retry's".to_owned(),
        ..late(&key)
    };
    repo.answer_key(&retry).await.unwrap();
    let replay = repo.claim_key(&key, "fp", retried, retry_lease, retried - day);
    assert_eq!(
        replay.await.unwrap(),
        KeyClaim::Answered("the retry's".to_owned())
    );
}

/// The events of a store, all of them, from the first.
async fn all_events(repo: &dyn WorkflowRepository) -> Vec<orchestrator_core::Event> {
    repo.events(0, &EventFilter::default(), 1000)
        .await
        .unwrap()
        .events
}

pub async fn every_accepted_change_writes_one_event_in_commit_order(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("ev");
    repo.create(&workflow, &first).await.unwrap();
    let (next, complete) = step(&workflow, Trigger::AgentComplete, 10);
    repo.commit(1, &next, &complete).await.unwrap();
    // Refused writes write no event.
    assert!(repo.commit(1, &next, &complete).await.is_err());
    assert!(repo.create(&workflow, &first).await.is_err());
    let pending = consultation("ev", 1, true);
    repo.add_consultation(&pending).await.unwrap();
    repo.reserve_consultation(&consultation("ev", 2, false))
        .await
        .unwrap();
    let mut resolved = pending.clone();
    resolved.status = ConsultationStatus::Resolved;
    resolved.updated_at = t0() + Duration::minutes(3);
    repo.update_consultation(&resolved).await.unwrap();
    // A settled consultation does not change again, and writes no event.
    repo.update_consultation(&resolved).await.unwrap();
    let (other, other_first) = Workflow::start(
        id("ev-2"),
        Description::parse("later").unwrap(),
        Metadata::default(),
        TransitionContext::at(t0() + Duration::hours(1)),
    );
    repo.create(&other, &other_first).await.unwrap();

    let events = all_events(repo).await;
    let seen: Vec<(u64, EventType, &str)> = events
        .iter()
        .map(|e| (e.id, e.event.event_type, e.event.subject.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, EventType::WorkflowTransitioned, "ev"),
            (2, EventType::WorkflowTransitioned, "ev"),
            (3, EventType::ConsultationCreated, "ev"),
            (4, EventType::ConsultationUpdated, "ev"),
            (5, EventType::WorkflowTransitioned, "ev-2"),
        ]
    );
    let data = &events[1].event.data_value();
    assert_eq!(data["feature_id"], "ev");
    assert_eq!(data["version"], 2);
    assert_eq!(data["state"], "GATE_1");
    assert_eq!(data["trigger"], "agent_complete");
    assert_eq!(data["seq"], 2);
    assert_eq!(events[1].event.time, complete.at);
    assert_eq!(events[3].event.data_value()["status"], "resolved");
    assert_eq!(events[3].event.data_value()["id"], pending.id.to_string());

    // Filters, paging and bounds.
    let only = |feature: Option<&str>, types: Vec<EventType>| EventFilter {
        feature_id: feature.map(id),
        types,
    };
    let ids = |slice: orchestrator_core::EventSlice| {
        slice.events.iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(repo
            .events(0, &only(Some("ev-2"), vec![]), 10)
            .await
            .unwrap()),
        vec![5]
    );
    // One workflow's events: its transitions' and its other events, merged in id order, each
    // kind filtered and paged with the rest.
    let of_ev = async |after: u64, types: Vec<EventType>, limit: u32| {
        ids(repo
            .events(after, &only(Some("ev"), types), limit)
            .await
            .unwrap())
    };
    assert_eq!(of_ev(0, vec![], 10).await, vec![1, 2, 3, 4]);
    assert_eq!(of_ev(1, vec![], 2).await, vec![2, 3]);
    assert_eq!(
        of_ev(0, vec![EventType::WorkflowTransitioned], 10).await,
        vec![1, 2]
    );
    assert_eq!(
        of_ev(1, vec![EventType::ConsultationUpdated], 10).await,
        vec![4]
    );
    let merged = repo.events(0, &only(Some("ev"), vec![]), 10).await.unwrap();
    assert_eq!(
        merged.events[1].event.data_value()["trigger"],
        "agent_complete"
    );
    let consultations = only(
        None,
        vec![
            EventType::ConsultationCreated,
            EventType::ConsultationUpdated,
        ],
    );
    assert_eq!(
        ids(repo.events(0, &consultations, 10).await.unwrap()),
        vec![3, 4]
    );
    let page = repo.events(2, &EventFilter::default(), 2).await.unwrap();
    assert_eq!((page.last_id, page.purged_through), (5, 0));
    assert_eq!(ids(page), vec![3, 4]);

    // Retention deletes from the oldest up to the newest event made before the cut, never
    // leaving a hole, and says how far it went.
    assert_eq!(repo.purge_events(t0()).await.unwrap(), 0);
    assert_eq!(
        repo.purge_events(t0() + Duration::seconds(30))
            .await
            .unwrap(),
        2
    );
    let left = repo.events(0, &EventFilter::default(), 10).await.unwrap();
    assert_eq!((left.purged_through, left.last_id), (2, 5));
    assert_eq!(ids(left), vec![3, 4, 5]);
    assert_eq!(of_ev(0, vec![], 10).await, vec![3, 4]);
    let (third, third_first) = new_workflow("ev-3");
    repo.create(&third, &third_first).await.unwrap();
    assert_eq!(all_events(repo).await.last().map(|e| e.id), Some(6));
    // That event is dated t0 (its change's time), committed after newer ones: it waits for
    // them, and takes none of them along.
    assert_eq!(
        repo.purge_events(t0() + Duration::seconds(30))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        ids(repo.events(0, &EventFilter::default(), 10).await.unwrap()),
        vec![3, 4, 5, 6]
    );
}

/// `workflow` one step further round PHASE_1 ↔ GATE_1, committed: completed on even rounds,
/// rejected on odd ones.
async fn bounced(repo: &dyn WorkflowRepository, workflow: &Workflow, round: usize) -> Workflow {
    let trigger = if round.is_multiple_of(2) {
        Trigger::AgentComplete
    } else {
        Trigger::HumanRejected
    };
    let (next, transition) = step(workflow, trigger, 1);
    repo.commit(workflow.version(), &next, &transition)
        .await
        .unwrap();
    next
}

/// A reader following `repo`'s log from its start, page after page, that fails on any id but
/// the one after the last it met; once `stop` is set and a page comes back empty, it answers
/// the last id it met.
fn following_the_log(
    repo: Arc<dyn WorkflowRepository>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            let done = stop.load(std::sync::atomic::Ordering::Acquire);
            let page = repo
                .events(last, &EventFilter::default(), 1000)
                .await
                .unwrap();
            for event in &page.events {
                assert_eq!(event.id, last + 1, "a reader at {last} met {}", event.id);
                last = event.id;
            }
            if done && page.events.is_empty() {
                return last;
            }
            tokio::task::yield_now().await;
        }
    })
}

/// Writers race on many workflows while a reader follows the log: every read continues
/// exactly where the previous one ended (no gap, no repeat), and the log ends holding one
/// event per accepted change.
pub async fn a_reader_following_the_log_never_meets_a_gap(repo: Arc<dyn WorkflowRepository>) {
    const WORKFLOWS: usize = 12;
    const ROUNDS: usize = 8;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = following_the_log(repo.clone(), stop.clone());
    let mut writers = Vec::new();
    for n in 0..WORKFLOWS {
        let repo = repo.clone();
        writers.push(tokio::spawn(async move {
            let (mut workflow, first) = new_workflow(&format!("race-{n:02}"));
            repo.create(&workflow, &first).await.unwrap();
            for round in 0..ROUNDS {
                workflow = bounced(&*repo, &workflow, round).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let last = reader.await.unwrap();
    assert_eq!(last, (WORKFLOWS * (ROUNDS + 1)) as u64);
    let events = all_events(&*repo).await;
    assert_eq!(events.len(), WORKFLOWS * (ROUNDS + 1));
    for n in 0..WORKFLOWS {
        let versions: Vec<u64> = events
            .iter()
            .filter(|e| e.event.subject.as_str() == format!("race-{n:02}"))
            .map(|e| e.event.data_value()["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, (1..=ROUNDS as u64 + 1).collect::<Vec<_>>());
    }
}

/// The orchestrator over this store: a person's decision dated after a gate's deadline, made
/// before any sweep, writes the deadline's one `gate.overdue` event first, whether the store
/// judges it inside its write (a rejection) or commits it with a compare-and-set (an
/// approval), and is judged on what the policy did.
pub async fn decisions_after_a_deadline_come_after_its_note(repo: Arc<dyn WorkflowRepository>) {
    use orchestrator_core::api::{GateRequest, StartWorkflowRequest};
    use orchestrator_core::{Advance, Error, ManualClock, Orchestrator, TransitionError};

    let clock = Arc::new(ManualClock::new(t0()));
    let orchestrator = Orchestrator::new(repo.clone()).with_clock(clock.clone());
    for (name, on_expiry) in [
        ("approved", "flag"),
        ("rejected", "flag"),
        ("expired", "reject"),
    ] {
        let mut start = StartWorkflowRequest::new(name, "x");
        start.gate = Some(GateRequest {
            due_in_seconds: Some(60),
            on_expiry: Some(on_expiry.to_owned()),
            ..GateRequest::default()
        });
        orchestrator.start(start.try_into().unwrap()).await.unwrap();
        orchestrator
            .advance(&id(name), Advance::new(Trigger::AgentComplete))
            .await
            .unwrap();
    }
    clock.advance(Duration::seconds(61));
    let decision = |trigger| Advance {
        actor: orchestrator_core::Actor::parse("alice").ok(),
        reason: Reason::parse("not yet").ok(),
        ..Advance::new(trigger)
    };

    let approved = orchestrator
        .advance(&id("approved"), decision(Trigger::HumanApproved))
        .await
        .unwrap();
    assert_eq!(approved.state(), WorkflowState::Phase2);
    let rejected = orchestrator
        .advance(&id("rejected"), decision(Trigger::HumanRejected))
        .await
        .unwrap();
    assert_eq!(rejected.state(), WorkflowState::Phase1);
    // Expired with `reject` before the approval: back in PHASE_1 by the system.
    let refused = orchestrator
        .advance(&id("expired"), decision(Trigger::HumanApproved))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Transition(TransitionError::NotAllowed {
                state: WorkflowState::Phase1,
                ..
            })
        ),
        "{refused:?}"
    );

    let events = all_events(&*repo).await;
    for name in ["approved", "rejected", "expired"] {
        let of: Vec<_> = events
            .iter()
            .filter(|e| e.event.subject.as_str() == name)
            .map(|e| e.event.event_type)
            .collect();
        let overdue = of.iter().filter(|t| **t == EventType::GateOverdue).count();
        assert_eq!((of.len(), overdue), (4, 1), "{name}: {of:?}");
        // The note comes before the change after it: the person's decision, or (`expired`)
        // the system's rejection.
        assert_eq!(
            of[2..],
            [EventType::GateOverdue, EventType::WorkflowTransitioned],
            "{name}"
        );
    }
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

/// One test per contract and per store.
/// A judge that applies `trigger` to the workflow it is shown.
fn judge(trigger: Trigger) -> orchestrator_core::Judge {
    judge_by(move |_| trigger)
}

/// A judge that applies the trigger `choose` picks for the workflow it is shown (a rejection
/// with a reason), a second after its last change.
fn judge_by(
    choose: impl Fn(&Workflow) -> Trigger + Send + Sync + 'static,
) -> orchestrator_core::Judge {
    Box::new(move |current: &Workflow| {
        let ctx = TransitionContext {
            reason: Reason::parse("a rejection needs a reason").ok(),
            ..TransitionContext::at(current.updated_at() + Duration::seconds(1))
        };
        let transition = current.apply(choose(current), ctx)?;
        Ok(orchestrator_core::Decision::of(current, transition))
    })
}

pub async fn advance_stores_what_its_judge_decides_on_the_stored_workflow(
    repo: &dyn WorkflowRepository,
) {
    let (workflow, first) = new_workflow("judged");
    repo.create(&workflow, &first).await.unwrap();
    let before = all_events(repo).await.len();

    let gate = repo
        .advance(&id("judged"), judge(Trigger::AgentComplete))
        .await
        .unwrap();
    assert_eq!((gate.state(), gate.version()), (WorkflowState::Gate1, 2));
    assert_eq!(repo.get(&id("judged")).await.unwrap(), gate);
    let history = repo.history(&id("judged")).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].to, WorkflowState::Gate1);
    assert_eq!(all_events(repo).await.len(), before + 1);

    // The judge's refusal comes back as it is, and nothing is stored.
    let err = repo
        .advance(&id("judged"), judge(Trigger::AgentComplete))
        .await
        .unwrap_err();
    assert!(
        matches!(err, orchestrator_core::Error::Transition(_)),
        "{err}"
    );
    assert_eq!(repo.get(&id("judged")).await.unwrap(), gate);
    assert_eq!(repo.history(&id("judged")).await.unwrap().len(), 2);
    assert_eq!(all_events(repo).await.len(), before + 1);

    // A decision's receipt is kept with it: the key's claim then finds the answer.
    use orchestrator_core::{IdempotencyKey, KeyClaim, Receipt};
    let key = IdempotencyKey {
        scope: "*".to_owned(),
        key: "judged".to_owned(),
    };
    let claim = async || {
        let now = t0();
        let lease = now + Duration::seconds(65);
        repo.claim_key(&key, "fp", now, lease, now - Duration::hours(24))
            .await
            .unwrap()
    };
    assert_eq!(claim().await, KeyClaim::Claimed);
    let sealed = key.clone();
    let rejected = repo
        .advance(
            &id("judged"),
            Box::new(move |current: &Workflow| {
                let (_, transition) = step(current, Trigger::HumanRejected, 1);
                let mut decision = orchestrator_core::Decision::of(current, transition);
                decision.receipt = Some(Receipt {
                    key: sealed.clone(),
                    lease_until: t0() + Duration::seconds(65),
                    answer: format!("version {}", decision.next.version()),
                });
                Ok(decision)
            }),
        )
        .await
        .unwrap();
    assert_eq!(rejected.version(), 3);
    assert_eq!(claim().await, KeyClaim::Answered("version 3".to_owned()));

    let err = repo
        .advance(&id("nobody"), judge(Trigger::Cancel))
        .await
        .unwrap_err();
    assert!(
        matches!(err, orchestrator_core::Error::NotFound(ref f) if f.as_str() == "nobody"),
        "{err}"
    );
}

/// Eight callers advance one workflow at once, each judge taking whichever trigger fits the
/// state it is shown: every store here judges each on what the one before left, so all eight
/// land, in one unbroken history. (PostgreSQL judges again an advance whose workflow changed
/// before its batch committed, up to eight times: as many as there are rivals here.)
pub async fn concurrent_judged_advances_of_one_workflow_all_land_in_turn(
    repo: Arc<dyn WorkflowRepository>,
) {
    let (workflow, first) = new_workflow("turns");
    repo.create(&workflow, &first).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let judge = judge_by(|current| match current.state() {
                    WorkflowState::Phase1 => Trigger::AgentComplete,
                    _ => Trigger::HumanRejected,
                });
                repo.advance(&id("turns"), judge).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = repo.get(&id("turns")).await.unwrap();
    assert_eq!(stored.version(), 9);
    let history = repo.history(&id("turns")).await.unwrap();
    assert_eq!(history.len(), 9);
    for pair in history.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
    }
}

/// Caller-decided commits and judged advances of many workflows at once (a store may run
/// both kinds in one batch): each gets its own answer. Per workflow, a commit based on
/// version 1 lands only if it comes first; the judged advance always lands, on whatever it
/// finds, so the last change stored is the one it answered.
pub async fn concurrent_commits_and_judged_advances_each_get_their_own_answer(
    repo: Arc<dyn WorkflowRepository>,
) {
    let mut workflows = Vec::new();
    for n in 0..16 {
        let (workflow, first) = new_workflow(&format!("mixed-{n:02}"));
        repo.create(&workflow, &first).await.unwrap();
        workflows.push(workflow);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(workflows.len() * 2));
    let mut pairs = Vec::new();
    for workflow in &workflows {
        let (next, transition) = step(workflow, Trigger::AgentComplete, 1);
        let (repo_a, barrier_a) = (repo.clone(), barrier.clone());
        let commit = tokio::spawn(async move {
            barrier_a.wait().await;
            repo_a.commit(1, &next, &transition).await
        });
        let (repo_b, barrier_b, id_b) =
            (repo.clone(), barrier.clone(), workflow.feature_id().clone());
        let judged = tokio::spawn(async move {
            barrier_b.wait().await;
            let judge = judge_by(|current| match current.state() {
                WorkflowState::Phase1 => Trigger::AgentComplete,
                _ => Trigger::HumanRejected,
            });
            repo_b.advance(&id_b, judge).await
        });
        pairs.push((workflow.feature_id().clone(), commit, judged));
    }
    for (feature_id, commit, judged) in pairs {
        let committed = match commit.await.unwrap() {
            Ok(()) => true,
            Err(RepositoryError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => false,
            other => panic!("{feature_id}: {other:?}"),
        };
        let answered = judged.await.unwrap().unwrap();
        let stored = repo.get(&feature_id).await.unwrap();
        assert_eq!(stored, answered, "{feature_id}");
        assert_eq!(
            stored.version(),
            if committed { 3 } else { 2 },
            "{feature_id}"
        );
        assert_eq!(
            repo.history(&feature_id).await.unwrap().len() as u64,
            stored.version()
        );
    }
}

macro_rules! contract_suite {
    ($($contract:ident),* ; $($shared:ident),*) => {
        mod in_memory {
            use orchestrator_core::InMemoryWorkflowRepository;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $contract() {
                    super::$contract(&InMemoryWorkflowRepository::new()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $shared() {
                    super::$shared(std::sync::Arc::new(InMemoryWorkflowRepository::new())).await;
                }
            )*
        }

        mod sqlite {
            use orchestrator_server::storage::{connect, DatabaseUrl};
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $contract() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let repo = connect(&DatabaseUrl::SqliteFile(dir.path().join("c.db")), 4).await.unwrap();
                    super::$contract(&*repo).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $shared() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let repo = connect(&DatabaseUrl::SqliteFile(dir.path().join("c.db")), 4).await.unwrap();
                    super::$shared(repo).await;
                }
            )*
        }

        mod postgres {
            use orchestrator_server::storage::{connect, DatabaseUrl};
            use crate::postgres::TestDatabase;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $contract() {
                    let Some(db) = TestDatabase::create().await else { return };
                    let repo = connect(&DatabaseUrl::Postgres(db.url.clone()), 4).await.unwrap();
                    super::$contract(&*repo).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $shared() {
                    let Some(db) = TestDatabase::create().await else { return };
                    let repo = connect(&DatabaseUrl::Postgres(db.url.clone()), 8).await.unwrap();
                    super::$shared(repo).await;
                }
            )*
        }
    };
}

contract_suite!(
    create_then_get_returns_the_same_workflow,
    a_duplicate_create_is_refused_and_changes_nothing,
    commit_is_a_compare_and_set_on_the_version,
    advance_stores_what_its_judge_decides_on_the_stored_workflow,
    history_keeps_every_transition_in_order,
    list_pages_in_feature_id_byte_order_with_a_state_filter,
    summary_counts_every_state,
    hub_sessions_are_swapped_only_from_the_expected_one,
    consultations_are_kept_oldest_first_and_only_pending_ones_change,
    consultations_are_stored_only_for_active_workflows,
    reservations_are_seen_by_no_reader_until_published,
    an_approval_lands_only_while_no_consultation_blocks_the_gate,
    overdue_gates_are_listed_counted_and_noted_once,
    gates_are_listed_earliest_due_first,
    idempotency_keys_are_claimed_once_and_answered_with_their_change,
    unanswered_keys_are_forgotten_and_answered_ones_kept,
    an_expired_key_a_retry_still_holds_is_not_claimed_anew,
    a_change_whose_key_a_retry_took_over_is_refused_whole,
    every_accepted_change_writes_one_event_in_commit_order,
    several_events_of_one_write_take_consecutive_ids;
    concurrent_commits_against_one_version_let_exactly_one_land,
    concurrent_commits_of_many_workflows_are_each_judged_on_their_own,
    concurrent_creates_are_each_answered_on_their_own,
    concurrent_judged_advances_of_one_workflow_all_land_in_turn,
    concurrent_commits_and_judged_advances_each_get_their_own_answer,
    concurrent_approvals_and_consultations_are_ordered,
    a_reader_following_the_log_never_meets_a_gap,
    decisions_after_a_deadline_come_after_its_note
);

/// `import` (seeding, not part of the trait): all the workflows, or none.
async fn import_is_all_or_nothing(repo: &dyn orchestrator_server::storage::DurableRepository) {
    let batch: Vec<_> = ["i1", "i2", "i3"].iter().map(|n| new_workflow(n)).collect();
    repo.import(&batch).await.unwrap();
    assert_eq!(repo.get(&id("i2")).await.unwrap(), batch[1].0);
    assert_eq!(
        repo.history(&id("i3")).await.unwrap(),
        vec![batch[2].1.clone()]
    );

    let clash: Vec<_> = ["i4", "i1"].iter().map(|n| new_workflow(n)).collect();
    assert!(repo.import(&clash).await.is_err());
    assert!(matches!(
        repo.get(&id("i4")).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(repo.summary().await.unwrap().total(), 3);

    // More rows than one statement can carry (PostgreSQL takes 65 535 parameters at most).
    let many: Vec<_> = (0..7000).map(|n| new_workflow(&format!("m{n}"))).collect();
    repo.import(&many).await.unwrap();
    assert_eq!(repo.get(&id("m6999")).await.unwrap(), many[6999].0);
    assert_eq!(repo.summary().await.unwrap().total(), 7003);
    // A clash in the last rows undoes the first ones too.
    let mut clash: Vec<_> = (0..3000).map(|n| new_workflow(&format!("n{n}"))).collect();
    clash.push(new_workflow("m0"));
    assert!(repo.import(&clash).await.is_err());
    assert!(matches!(
        repo.get(&id("n0")).await,
        Err(RepositoryError::NotFound(_))
    ));
    assert_eq!(repo.summary().await.unwrap().total(), 7003);
}

/// Checks of what only the durable stores do (or promise), against SQLite and PostgreSQL.
macro_rules! durable_suite {
    ($($check:ident),*) => {
        mod durable_sqlite {
            use orchestrator_server::storage::{DatabaseUrl, connect};
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $check() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let url = DatabaseUrl::SqliteFile(dir.path().join("d.db"));
                    let repo = connect(&url, 2).await.unwrap();
                    super::$check(&*repo).await;
                }
            )*
        }

        mod durable_postgres {
            use orchestrator_server::storage::{DatabaseUrl, connect};
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $check() {
                    let Some(db) = crate::postgres::TestDatabase::create().await else { return };
                    let repo = connect(&DatabaseUrl::Postgres(db.url.clone()), 2).await.unwrap();
                    super::$check(&*repo).await;
                }
            )*
        }
    };
}

durable_suite!(
    import_is_all_or_nothing,
    large_events_come_in_pages_of_a_few_megabytes
);

/// The migration by which history entries name their `workflow.transitioned` events (which
/// the subject index no longer holds), undone by its own `down.sql` and forgotten, so that
/// the next start runs it again over rows written before it.
const UNDO_EVENT_IDS_SQLITE: &str =
    include_str!("../../migrations/sqlite/2026-12-02-000011_transition_event_ids/down.sql");
const UNDO_EVENT_IDS_POSTGRES: &str =
    include_str!("../../migrations/postgres/2026-12-02-000011_transition_event_ids/down.sql");
const FORGET_EVENT_IDS: &str =
    "DELETE FROM __diesel_schema_migrations WHERE version = '20261202000011';";

/// Writes events of both kinds for workflow `up`: transitions' and a consultation's.
async fn write_events_of_one_workflow(repo: &dyn WorkflowRepository) {
    let (workflow, first) = new_workflow("up");
    repo.create(&workflow, &first).await.unwrap();
    repo.add_consultation(&consultation("up", 1, false))
        .await
        .unwrap();
    let (next, complete) = step(&workflow, Trigger::AgentComplete, 10);
    repo.commit(1, &next, &complete).await.unwrap();
}

/// What a reader of workflow `up`'s events sees.
async fn events_of_one_workflow(repo: &dyn WorkflowRepository) -> Vec<orchestrator_core::Event> {
    let filter = EventFilter {
        feature_id: Some(id("up")),
        types: vec![],
    };
    repo.events(0, &filter, 10).await.unwrap().events
}

/// Events stored before the upgrade are read as before it: the migration names each history
/// entry's event. Without that, the transitions' events of a workflow would vanish from its
/// reads.
async fn upgrade_keeps_every_event_of_a_workflow(
    url: orchestrator_server::storage::DatabaseUrl,
    undo: impl AsyncFnOnce(),
) {
    use orchestrator_server::storage::connect;
    let repo = connect(&url, 2).await.unwrap();
    write_events_of_one_workflow(&*repo).await;
    let before = events_of_one_workflow(&*repo).await;
    assert_eq!(
        before.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    repo.close().await;
    drop(repo);
    undo().await;
    let repo = connect(&url, 2).await.unwrap();
    assert_eq!(events_of_one_workflow(&*repo).await, before);
}

/// An event row that does not decode (here: damaged by `damage`, its subject no feature id)
/// is passed over by every page of the log, counted toward the page's limit, and read past:
/// a page of only that row is empty but full, and moves on.
async fn a_damaged_event_is_read_past(
    url: orchestrator_server::storage::DatabaseUrl,
    damage: impl AsyncFnOnce(),
) {
    use orchestrator_core::{EventFilter, Orchestrator};
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    for name in ["one", "two", "three"] {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
    }
    damage().await;
    let orchestrator = Orchestrator::new(repo);
    let every = EventFilter::default();
    let page = orchestrator.events(Some(1), &every, 1).await.unwrap();
    assert!(page.events.is_empty() && page.full, "{page:?}");
    assert_eq!(page.next_after, 2);
    let page = orchestrator.events(Some(0), &every, 10).await.unwrap();
    let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
    assert_eq!((ids, page.next_after, page.full), (vec![1, 3], 3, false));
    let page = orchestrator.events(Some(0), &every, 2).await.unwrap();
    assert_eq!(
        (page.events.len(), page.next_after, page.full),
        (1, 2, true)
    );
}

const DAMAGE_EVENT_2: &str = "UPDATE events SET subject = 'not an id!' WHERE id = 2;";

/// Asks a crash cut off are failed, even when one of their rows no longer decodes: that one is
/// failed without its event, and the others' gates are no longer held.
async fn a_damaged_ask_does_not_keep_the_others_asking(url: DatabaseUrl) {
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    let mut asks = Vec::new();
    for name in ["sound", "damaged"] {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
        let mut asking = consultation(name, 1, false);
        (asking.answer, asking.confidence, asking.final_answer) = (None, None, None);
        asking.status = ConsultationStatus::Asking;
        repo.add_consultation(&asking).await.unwrap();
        asks.push(asking);
    }
    run_sql(
        &url,
        "UPDATE consultations SET topic = 'not a topic!' WHERE feature_id = 'damaged';",
    )
    .await;
    let error = ConsultationError::interrupted();
    let at = t0() + Duration::minutes(40);
    let failed = repo
        .interrupt_asks(t0() + Duration::minutes(10), &error, at)
        .await
        .unwrap();
    assert_eq!(failed, 2);
    let mut sound = asks[0].clone();
    sound.fail(error, at);
    assert_eq!(repo.consultations(&id("sound")).await.unwrap(), vec![sound]);
    // Neither holds its gate now (the damaged one, still asking, would fail this read).
    assert_eq!(
        repo.gate_blockers(&[id("sound"), id("damaged")])
            .await
            .unwrap(),
        vec![]
    );
    let last = all_events(&*repo).await.pop().expect("events");
    assert_eq!(
        (last.event.event_type, last.event.subject.as_str()),
        (EventType::ConsultationUpdated, "sound")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_damaged_ask_does_not_keep_the_others_asking() {
    let dir = tempfile::TempDir::new().unwrap();
    a_damaged_ask_does_not_keep_the_others_asking(DatabaseUrl::SqliteFile(dir.path().join("d.db")))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_damaged_ask_does_not_keep_the_others_asking() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    a_damaged_ask_does_not_keep_the_others_asking(DatabaseUrl::Postgres(db.url.clone())).await;
}

/// A gate past its deadline whose row no longer decodes (a value a newer version stored,
/// before a downgrade) is passed over by the sweep's read; the other overdue gates are read.
async fn a_damaged_gate_does_not_stop_the_other_deadlines(url: DatabaseUrl) {
    use orchestrator_core::gate::{GatePolicy, OnExpiry};
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    let policy = GatePolicy::default()
        .with_deadline(Some(60), OnExpiry::Flag)
        .unwrap();
    let mut at_gate = Vec::new();
    // The damaged one due first (70 s after the start), the sound one after it (80 s).
    for (name, after) in [("damaged", 10), ("sound", 20)] {
        let workflow = started_with(&*repo, name, policy).await;
        let (next, complete) = step(&workflow, Trigger::AgentComplete, after);
        repo.commit(1, &next, &complete).await.unwrap();
        at_gate.push(next);
    }
    run_sql(
        &url,
        "UPDATE workflows SET gate_policy = 'not a policy' WHERE feature_id = 'damaged';",
    )
    .await;
    let after = t0() + Duration::seconds(81);
    let sound = vec![at_gate[1].clone()];
    assert_eq!(repo.unnoted_overdue(after, 10).await.unwrap(), sound);
    // A page the damaged row would fill still holds the gate due after it.
    assert_eq!(repo.unnoted_overdue(after, 1).await.unwrap(), sound);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_damaged_gate_does_not_stop_the_other_deadlines() {
    let dir = tempfile::TempDir::new().unwrap();
    a_damaged_gate_does_not_stop_the_other_deadlines(DatabaseUrl::SqliteFile(
        dir.path().join("d.db"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_damaged_gate_does_not_stop_the_other_deadlines() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    a_damaged_gate_does_not_stop_the_other_deadlines(DatabaseUrl::Postgres(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_damaged_event_is_read_past() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("d.db"));
    a_damaged_event_is_read_past(url.clone(), async || run_sql(&url, DAMAGE_EVENT_2).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_damaged_event_is_read_past() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    a_damaged_event_is_read_past(url.clone(), async || run_sql(&url, DAMAGE_EVENT_2).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_upgrade_keeps_every_event_of_a_workflow() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("u.db");
    let url = orchestrator_server::storage::DatabaseUrl::SqliteFile(file.clone());
    upgrade_keeps_every_event_of_a_workflow(url, async || {
        let mut conn = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        conn.batch_execute(UNDO_EVENT_IDS_SQLITE).unwrap();
        conn.batch_execute(FORGET_EVENT_IDS).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_upgrade_keeps_every_event_of_a_workflow() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    upgrade_keeps_every_event_of_a_workflow(url, async || {
        let mut conn = diesel_async::AsyncPgConnection::establish(&db.url)
            .await
            .unwrap();
        conn.batch_execute(UNDO_EVENT_IDS_POSTGRES).await.unwrap();
        conn.batch_execute(FORGET_EVENT_IDS).await.unwrap();
    })
    .await;
}

/// A database as it was before the 2026-12-02 migration (000011), with a session that read
/// `events` in a transaction still open (as a replica's read of the log holds it), and a
/// store opening on it, whose migration of 000011 is seen waiting for that session's lock.
/// Answers a session to watch with, the reader, and the store's opening.
async fn migrating_beside_a_reader(
    db: &crate::postgres::TestDatabase,
) -> (
    diesel_async::AsyncPgConnection,
    diesel_async::AsyncPgConnection,
    tokio::task::JoinHandle<Result<(), orchestrator_server::storage::StorageError>>,
) {
    use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
    let url = DatabaseUrl::Postgres(db.url.clone());
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    write_events_of_one_workflow(&*repo).await;
    repo.close().await;
    drop(repo);
    let mut watch = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    watch.batch_execute(UNDO_EVENT_IDS_POSTGRES).await.unwrap();
    watch.batch_execute(FORGET_EVENT_IDS).await.unwrap();
    let reader = crate::postgres::in_open_transaction(&db.url, "SELECT count(*) FROM events").await;
    let migrating = tokio::spawn(async move {
        orchestrator_server::storage::connect(&url, 2)
            .await
            .map(|_| ())
    });
    let waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%transitions%' AND pid <> pg_backend_pid()";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while diesel::sql_query(waiting)
        .execute(&mut watch)
        .await
        .unwrap()
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the migration never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (watch, reader, migrating)
}

/// A replica of the older version reads the log (`events`, then the `transitions` it joins)
/// while a new one migrates beside it: the migration that touches both must not deadlock with
/// that read and fail the new replica's start (PostgreSQL ends one of two sessions waiting on
/// each other, and the migration was always the one). Here the read holds `events` in an open
/// transaction while the migration waits, then asks for `transitions`.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_migration_beside_a_replica_reading_the_log_does_not_deadlock() {
    use diesel_async::RunQueryDsl;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let (mut watch, mut reader, migrating) = migrating_beside_a_reader(&db).await;
    // Holding none of `transitions` meanwhile, which the reader is about to ask for.
    let held = "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                WHERE c.relname = 'transitions' AND l.granted AND l.mode = 'AccessExclusiveLock'";
    assert_eq!(
        diesel::sql_query(held).execute(&mut watch).await.unwrap(),
        0,
        "the migration holds transitions while it waits for events"
    );
    // The reader goes on to the table it joins, as the log's read does, then ends.
    let joined = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        diesel::sql_query("SELECT count(*) FROM transitions").execute(&mut reader),
    )
    .await;
    let _ = diesel::sql_query("COMMIT").execute(&mut reader).await;
    drop(reader);
    let migrated = tokio::time::timeout(std::time::Duration::from_secs(60), migrating)
        .await
        .expect("the migration ends")
        .unwrap();
    assert!(
        migrated.is_ok(),
        "{migrated:?} (the reader's join: {joined:?})"
    );
}

/// A start given up while a migration runs (a stop signal drops it) cancels the migration's
/// statement on the server at once: left running, it would hold its tables and the
/// migrations' lock until it ended (minutes, for one rewriting a large table), then be rolled
/// back. Here the migration waits for a table a session holds: given up, it is gone well
/// before its 2 s lock bound would end it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_migration_given_up_is_cancelled_on_the_server() {
    use diesel_async::RunQueryDsl;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let (mut watch, _reader, migrating) = migrating_beside_a_reader(&db).await;
    migrating.abort();
    let _ = migrating.await;
    // How long the statement has run, while it runs: left alone it would end at its 2 s lock
    // bound; cancelled, it ends well before.
    #[derive(diesel::QueryableByName)]
    struct Age {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ms: i64,
    }
    let age = "SELECT (extract(epoch FROM now() - query_start) * 1000)::bigint AS ms \
               FROM pg_stat_activity WHERE state = 'active' \
               AND query LIKE '%transitions%' AND pid <> pg_backend_pid()";
    let mut oldest = 0;
    loop {
        let ages: Vec<Age> = diesel::sql_query(age).load(&mut watch).await.unwrap();
        let Some(seen) = ages.iter().map(|a| a.ms).max() else {
            break;
        };
        oldest = oldest.max(seen);
        assert!(seen < 3_000, "the migration still runs on the server");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        oldest < 1_500,
        "the migration ran on for {oldest} ms: ended by its lock bound, not cancelled"
    );
}

/// A workflow at the gate when gate stays began to be kept had none: nobody was its author, so
/// whoever completed the work could approve it. The upgrade rebuilds its stay from the entry
/// that entered the gate (here: the stay taken away and its migration forgotten, so that the
/// next start runs it again), to the microsecond, and neither author may approve.
async fn upgrade_rebuilds_the_stay_of_a_workflow_at_the_gate(url: DatabaseUrl) {
    use orchestrator_core::{Actor, ActorKind, Advance, Error, Orchestrator, TransitionError};
    use orchestrator_server::storage::connect;
    let repo = connect(&url, 2).await.unwrap();
    // Made by two people, by one, and by nobody named.
    let mut stays = Vec::new();
    for (name, actor, on_behalf_of) in [
        ("waiting", Some("bob"), Some("carol")),
        ("solo", Some("bob"), None),
        ("unnamed", None, None),
    ] {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
        let ctx = TransitionContext {
            actor: actor.and_then(|a| Actor::parse(a).ok()),
            on_behalf_of: on_behalf_of.and_then(|a| Actor::parse(a).ok()),
            ..TransitionContext::at(t0() + Duration::microseconds(61_234_567))
        };
        let complete = workflow.apply(Trigger::AgentComplete, ctx).unwrap();
        let mut at_gate = workflow.clone();
        at_gate.record(&complete);
        repo.commit(1, &at_gate, &complete).await.unwrap();
        stays.push((name, at_gate.gate_stay().cloned()));
    }
    repo.close().await;
    drop(repo);
    run_sql(
        &url,
        "UPDATE workflows SET gate_stay = NULL; \
         DELETE FROM __diesel_schema_migrations WHERE version = '20261205000018';",
    )
    .await;
    let repo = connect(&url, 2).await.unwrap();
    for (name, stay) in stays {
        assert!(stay.is_some());
        assert_eq!(
            repo.get(&id(name)).await.unwrap().gate_stay(),
            stay.as_ref(),
            "{name}"
        );
    }
    let orchestrator = Orchestrator::new(repo);
    for author in ["bob", "Carol"] {
        let mut approve = Advance::new(Trigger::HumanApproved);
        approve.actor = Actor::parse(author).ok();
        approve.actor_kind = Some(ActorKind::Human);
        let refused = orchestrator.advance(&id("waiting"), approve).await;
        assert!(
            matches!(
                refused,
                Err(Error::Transition(TransitionError::SelfApproval { .. }))
            ),
            "{author}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_upgrade_rebuilds_the_stay_of_a_workflow_at_the_gate() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("u.db"));
    upgrade_rebuilds_the_stay_of_a_workflow_at_the_gate(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_upgrade_rebuilds_the_stay_of_a_workflow_at_the_gate() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    upgrade_rebuilds_the_stay_of_a_workflow_at_the_gate(DatabaseUrl::Postgres(db.url.clone()))
        .await;
}

/// The columns of `workflows` an advance writes. `gate_due_at` is not among them for this
/// purpose: it changes only when a stay at the gate with a deadline begins or ends, and its
/// partial index serves the deadline sweep.
const CHANGED_BY_EVERY_ADVANCE: [&str; 7] = [
    "state",
    "version",
    "rework_count",
    "time_in_state",
    "updated_at",
    "completed_at",
    "gate_stay",
];

/// On PostgreSQL an advance updates its workflow row in place (a heap-only update) only while
/// no index of `workflows` names a column the advance changes: one such index, and every
/// advance writes a new entry into each of the table's indexes again (docs/PERFORMANCE.md).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_no_index_of_workflows_names_a_column_every_advance_changes() {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    let repo = orchestrator_server::storage::connect(&url, 1)
        .await
        .unwrap();
    repo.close().await;
    drop(repo);
    let mut conn = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    let definitions: Vec<String> = diesel::select(diesel::dsl::sql::<diesel::sql_types::Array<Text>>(
        "ARRAY(SELECT indexdef FROM pg_indexes WHERE tablename = 'workflows' ORDER BY indexname)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(
        definitions.iter().any(|d| d.contains("gate_due_at")),
        "the deadline sweep's index is there: {definitions:?}"
    );
    for definition in &definitions {
        let words: Vec<&str> = definition
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for column in CHANGED_BY_EVERY_ADVANCE {
            assert!(
                !words.contains(&column),
                "`{definition}` names `{column}`, which every advance changes"
            );
        }
    }
}

/// Replicas starting together take turns at the migrations: one that waits longer than the
/// statement timeout (5 s) for another's still starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_replica_waits_for_another_replicas_migration_as_long_as_it_takes() {
    use diesel_async::RunQueryDsl;
    use orchestrator_server::storage::{DatabaseUrl, connect};
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let mut other = crate::postgres::migrating(&db.url).await;
    let url = db.url.clone();
    let starting = tokio::spawn(async move { connect(&DatabaseUrl::Postgres(url), 2).await });
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert!(!starting.is_finished(), "it waits for the lock");
    diesel::sql_query(format!(
        "SELECT pg_advisory_unlock({})",
        orchestrator_server::storage::postgres::MIGRATION_LOCK
    ))
    .execute(&mut other)
    .await
    .unwrap();
    let repo = starting
        .await
        .unwrap()
        .expect("started after the other replica");
    let (workflow, first) = new_workflow("after-wait");
    repo.create(&workflow, &first).await.unwrap();
}

/// A migration that waits for a table another session holds (an open write transaction; a
/// backup, for a migration that drops an index) gives up each wait after 2 s and tries again:
/// the running replicas' statements on that table, queued behind it, are held up for moments,
/// not for as long as that transaction lasts. The replica starts once the table is free.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_migration_waiting_for_a_table_lets_others_through_and_then_runs() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use orchestrator_server::storage::{DatabaseUrl, connect};
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    // A database migrated but for one migration (000019: two indexes).
    let migrated = connect(&DatabaseUrl::Postgres(db.url.clone()), 1)
        .await
        .unwrap();
    migrated.close().await;
    drop(migrated);
    let mut other = AsyncPgConnection::establish(&db.url).await.unwrap();
    for statement in [
        "DROP INDEX consultations_reserved",
        "DROP INDEX gate_overdue_notes_bytewise",
        "DELETE FROM __diesel_schema_migrations WHERE version = '20261205000019'",
    ] {
        diesel::sql_query(statement)
            .execute(&mut other)
            .await
            .unwrap();
    }
    // A transaction that writes to `consultations` and stays open: the index waits for it.
    let mut writer = crate::postgres::in_open_transaction(
        &db.url,
        "LOCK TABLE consultations IN ROW EXCLUSIVE MODE",
    )
    .await;
    let url = db.url.clone();
    let starting = tokio::spawn(async move { connect(&DatabaseUrl::Postgres(url), 2).await });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!starting.is_finished(), "the migration waits for the table");
    // Another writer of the table, queued behind the waiting migration, gets through.
    let write = async {
        for statement in [
            "BEGIN",
            "LOCK TABLE consultations IN ROW EXCLUSIVE MODE",
            "COMMIT",
        ] {
            diesel::sql_query(statement)
                .execute(&mut other)
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), write)
        .await
        .expect("a write is held up for moments, not until the open transaction ends");
    assert!(!starting.is_finished(), "the migration still waits");
    diesel::sql_query("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    let repo = tokio::time::timeout(std::time::Duration::from_secs(10), starting)
        .await
        .expect("it starts once the table is free")
        .unwrap()
        .expect("migrated");
    let (workflow, first) = new_workflow("after-migration");
    repo.create(&workflow, &first).await.unwrap();
}

/// A PostgreSQL repository (on the test database returned with it) holding new workflows
/// `names`, and another session whose open transaction holds the rows of `held` locked until
/// it rolls back; `None` without a test database.
async fn rows_held(
    names: &[&str],
    held: &[&str],
) -> Option<(
    crate::postgres::TestDatabase,
    Arc<dyn WorkflowRepository>,
    diesel_async::AsyncPgConnection,
)> {
    use orchestrator_server::storage::{DatabaseUrl, connect};
    let db = crate::postgres::TestDatabase::create().await?;
    let repo: Arc<dyn WorkflowRepository> = connect(&DatabaseUrl::Postgres(db.url.clone()), 8)
        .await
        .unwrap();
    for name in names {
        let (workflow, first) = new_workflow(name);
        repo.create(&workflow, &first).await.unwrap();
    }
    let held: Vec<String> = held.iter().map(|name| format!("'{name}'")).collect();
    let holder = crate::postgres::in_open_transaction(
        &db.url,
        &format!(
            "SELECT 1 FROM workflows WHERE feature_id IN ({}) FOR UPDATE",
            held.join(", ")
        ),
    )
    .await;
    Some((db, repo, holder))
}

/// PostgreSQL group commit: an advance whose workflow row another transaction holds waits
/// alone — the batch skips that row — while the advances that shared its batch, or came
/// after it, land at once; it lands once the row is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_batch_does_not_wait_on_one_held_row() {
    use diesel_async::RunQueryDsl;
    let others: Vec<String> = (0..24).map(|n| format!("c-{n:02}")).collect();
    let mut names = vec!["a-held", "b-held"];
    names.extend(others.iter().map(String::as_str));
    let Some((_db, repo, mut holder)) = rows_held(&names, &["a-held", "b-held"]).await else {
        return;
    };
    let advance = |name: String| {
        let repo = repo.clone();
        tokio::spawn(async move {
            repo.advance(&id(&name), judge(Trigger::AgentComplete))
                .await
        })
    };
    // All at once: the held rows' advances share batches with the others.
    let first = advance("a-held".to_owned());
    let held = advance("b-held".to_owned());
    let rest: Vec<_> = others.iter().cloned().map(advance).collect();
    for (name, task) in others.iter().zip(rest) {
        let landed = task.await.unwrap();
        assert!(
            matches!(&landed, Ok(w) if w.state() == WorkflowState::Gate1),
            "{name}: {landed:?}"
        );
    }
    // Landed while the two rows are still held: their advances still wait.
    assert!(!first.is_finished() && !held.is_finished());
    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    for task in [first, held] {
        let landed = task.await.unwrap();
        assert!(
            matches!(&landed, Ok(w) if w.state() == WorkflowState::Gate1),
            "{landed:?}"
        );
    }
}

/// An advance whose workflow row stays held longer than a statement may wait for a lock
/// (5 s) fails alone, 503, and the workflow is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_advance_whose_row_stays_held_fails_alone() {
    use diesel_async::RunQueryDsl;
    let Some((_db, repo, mut holder)) = rows_held(&["held", "free"], &["held"]).await else {
        return;
    };
    let refused = {
        let repo = repo.clone();
        tokio::spawn(async move {
            repo.advance(&id("held"), judge(Trigger::AgentComplete))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Alone: another workflow's advance lands while it waits.
    let free = repo
        .advance(&id("free"), judge(Trigger::AgentComplete))
        .await
        .unwrap();
    assert_eq!(free.state(), WorkflowState::Gate1);
    assert!(!refused.is_finished());
    let refused = refused.await.unwrap();
    assert!(
        matches!(
            &refused,
            Err(orchestrator_core::Error::Storage(
                RepositoryError::Unavailable(why)
            )) if why.to_string().contains("locked by another transaction")
        ),
        "{refused:?}"
    );
    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(
        repo.get(&id("held")).await.unwrap().state(),
        WorkflowState::Phase1
    );
}

/// Six overdue gates whose rows a stuck transaction holds, due before a seventh: each sweep
/// gives up after three failures in a row, and tries the gates earlier sweeps failed on after
/// the others, so the third notes the seventh; once the rows are let go, a sweep notes them
/// too, those tried longest ago first.
#[tokio::test(flavor = "multi_thread")]
async fn gates_whose_rows_are_held_do_not_keep_the_others_from_their_deadline() {
    use diesel_async::RunQueryDsl;
    use orchestrator_core::gate::{GatePolicy, OnExpiry};
    use orchestrator_core::{ManualClock, Orchestrator};
    use orchestrator_server::storage::{DatabaseUrl, connect};
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let repo: Arc<dyn WorkflowRepository> = connect(&DatabaseUrl::Postgres(db.url.clone()), 4)
        .await
        .unwrap();
    let policy = GatePolicy::default()
        .with_deadline(Some(60), OnExpiry::Flag)
        .unwrap();
    let gates = [
        ("held-1", 10),
        ("held-2", 11),
        ("held-3", 12),
        ("held-4", 13),
        ("held-5", 14),
        ("held-6", 15),
        ("free", 20),
    ];
    for (name, after) in gates {
        let workflow = started_with(&*repo, name, policy).await;
        let (next, complete) = step(&workflow, Trigger::AgentComplete, after);
        repo.commit(1, &next, &complete).await.unwrap();
    }
    let mut holder = crate::postgres::in_open_transaction(
        &db.url,
        "SELECT 1 FROM workflows WHERE feature_id LIKE 'held-%' FOR UPDATE",
    )
    .await;
    let clock = Arc::new(ManualClock::new(t0() + Duration::seconds(100)));
    let orchestrator = Orchestrator::new(repo.clone()).with_clock(clock);
    let noted = |expired: Vec<orchestrator_core::Expired>| -> Vec<String> {
        expired.iter().map(|e| e.feature_id.to_string()).collect()
    };

    // 1, 2, 3 fail; then 4, 5, 6 (and 1, 2, 3 after them); then `free` is reached.
    for _ in 0..2 {
        let sweep = orchestrator.sweep_gates().await;
        assert!(sweep.is_err(), "every gate tried failed: {sweep:?}");
    }
    assert_eq!(noted(orchestrator.sweep_gates().await.unwrap()), ["free"]);
    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    // 1, 2, 3 were not tried by the last sweep: first now.
    assert_eq!(
        noted(orchestrator.sweep_gates().await.unwrap()),
        ["held-1", "held-2", "held-3", "held-4", "held-5", "held-6"]
    );
    assert!(orchestrator.sweep_gates().await.unwrap().is_empty());
}

/// 10 005 idempotency keys past their day and as many settled deliveries past the retention,
/// then one of each that is newer and a pending delivery as old as the rest.
const BACKLOG: &str = "
INSERT INTO webhooks (id, url, event_types, description, secret, created_at, enqueued_through)
VALUES ('wh_backlog', 'http://127.0.0.1:9/', '[]', NULL, 'whsec_backlog', 0, 0);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10005)
INSERT INTO idempotency_keys (scope, name, fingerprint, answer, created_at, lease_until)
SELECT '*', 'old-' || i, 'fp', 'kept', i, i FROM n;
INSERT INTO idempotency_keys (scope, name, fingerprint, answer, created_at, lease_until)
VALUES ('*', 'new', 'fp', 'kept', 20000, 20000);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10005)
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts,
                                created_at, schedule_from, redeliveries)
SELECT 'msg_' || i, 'wh_backlog', i, 'workflow.transitioned', '{}', 'delivered', 1, i, 0, 0
FROM n;
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts,
                                next_attempt_at, created_at, schedule_from, redeliveries)
VALUES ('msg_pending', 'wh_backlog', 20001, 'workflow.transitioned', '{}', 'pending', 0, 1, 1,
        0, 0),
       ('msg_new', 'wh_backlog', 20002, 'workflow.transitioned', '{}', 'failed', 8, NULL, 20000,
        0, 0);
";

/// A backlog of keys and of settled deliveries (a retention lowered, a long pause) is deleted
/// by one purge, a chunk of 10 000 per transaction, oldest first: every row before the cut,
/// nothing after it, no pending delivery. (A chunk that stopped one row short would end the
/// purge there: 9 999.)
async fn backlogs_are_purged_in_full(url: DatabaseUrl, backlog: impl AsyncFnOnce()) {
    use orchestrator_core::{IdempotencyKey, KeyClaim};
    use orchestrator_server::storage::connect;
    let repo = connect(&url, 2).await.unwrap();
    backlog().await;
    let cut = Utc.timestamp_micros(20_000).unwrap();
    assert_eq!(repo.purge_keys(cut).await.unwrap(), 10_005);
    assert_eq!(repo.purge_keys(cut).await.unwrap(), 0);
    assert_eq!(repo.purge_deliveries(cut).await.unwrap(), 10_005);
    assert_eq!(repo.purge_deliveries(cut).await.unwrap(), 0);
    let key = |name: &str| IdempotencyKey {
        scope: "*".to_owned(),
        key: name.to_owned(),
    };
    let now = Utc.timestamp_micros(20_001).unwrap();
    let long_ago = Utc.timestamp_micros(0).unwrap();
    for (name, kept) in [("new", true), ("old-1", false), ("old-10005", false)] {
        let key = key(name);
        let claim = repo.claim_key(&key, "fp", now, now, long_ago);
        let expected = match kept {
            true => KeyClaim::Answered("kept".to_owned()),
            false => KeyClaim::Claimed,
        };
        assert_eq!(claim.await.unwrap(), expected, "{name}");
    }
    let later = Utc.timestamp_micros(30_000).unwrap();
    assert_eq!(
        repo.purge_deliveries(later).await.unwrap(),
        1,
        "the newer settled one; the pending one stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backlogs_are_purged_in_full() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("b.db"));
    backlogs_are_purged_in_full(url.clone(), async || run_sql(&url, BACKLOG).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backlogs_are_purged_in_full() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    backlogs_are_purged_in_full(url.clone(), async || run_sql(&url, BACKLOG).await).await;
}

/// `common` `gate.overdue` events, then one `consultation.created`, made in 2100 (so that a
/// running server's retention leaves them).
pub fn rare_type_log(common: u64) -> String {
    let rare = common + 1;
    format!(
        "
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {common})
INSERT INTO events (id, event_type, subject, time, data, seq)
SELECT i, 'gate.overdue', 'busy', 4102444800000000 + i, '{{}}', NULL FROM n;
INSERT INTO events (id, event_type, subject, time, data, seq)
VALUES ({rare}, 'consultation.created', 'quiet', 4102444800000000 + {rare}, '{{}}', NULL);
UPDATE event_log SET last_id = {rare} WHERE id = 1;
"
    )
}

/// A read of a rare type over the whole log looks at ten thousand ids at a time in the store;
/// a page reads on through ten such ranges while it has found nothing, so that an empty page
/// nearly always means there is nothing more. Past them it answers empty, saying how far it
/// looked (`next_after`) and that more may follow (`full`), so a reader pages on to the
/// event, and no request walks the whole log. A read of every type is not bounded.
async fn a_read_of_a_rare_type_looks_at_a_bounded_range_at_a_time(url: DatabaseUrl) {
    use orchestrator_core::{EventFilter, EventType, Orchestrator};
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    run_sql(&url, &rare_type_log(120_000)).await;
    let rare = EventFilter {
        feature_id: None,
        types: vec![EventType::ConsultationCreated],
    };
    let read = repo.events(0, &rare, 10).await.unwrap();
    assert_eq!((read.events.len(), read.scanned_through), (0, Some(10_000)));
    let orchestrator = Orchestrator::new(repo);
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = orchestrator.events(Some(after), &rare, 10).await.unwrap();
        let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
        pages.push((ids, page.next_after, page.full));
        if !page.full {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(
        pages,
        [(vec![], 100_000, true), (vec![120_001], 120_001, false)]
    );
    // A type the log does not hold, read to its end through ranges: empty, nothing more, and
    // the next poll starts at the last range looked at, not at the first again.
    let absent = EventFilter {
        feature_id: None,
        types: vec![EventType::ConsultationUpdated],
    };
    let page = orchestrator
        .events(Some(100_000), &absent, 10)
        .await
        .unwrap();
    assert_eq!(
        (page.events.len(), page.next_after, page.full),
        (0, 120_000, false)
    );
    let every = orchestrator
        .events(Some(0), &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!((every.events.len(), every.next_after), (10, 10));
    // Retention deleted far past the first window: a read from the oldest event kept looks
    // from there, not at ids that are gone.
    run_sql(
        &url,
        "DELETE FROM events WHERE id <= 95000; UPDATE event_log SET purged_through = 95000 WHERE id = 1;",
    )
    .await;
    let page = orchestrator.events(None, &rare, 10).await.unwrap();
    let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(
        (ids, page.next_after, page.full),
        (vec![120_001], 120_001, false)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_read_of_a_rare_type_looks_at_a_bounded_range_at_a_time() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("r.db"));
    a_read_of_a_rare_type_looks_at_a_bounded_range_at_a_time(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_read_of_a_rare_type_looks_at_a_bounded_range_at_a_time() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    a_read_of_a_rare_type_looks_at_a_bounded_range_at_a_time(DatabaseUrl::Postgres(db.url.clone()))
        .await;
}

/// A busy webhook (25 003 deliveries kept) and a quiet one (2, of events far past the log's
/// first ids, which a test may then write).
const BUSY_WEBHOOK: &str = "
INSERT INTO webhooks (id, url, event_types, description, secret, created_at, enqueued_through)
VALUES ('wh_busy', 'http://127.0.0.1:9/', '', NULL, 'whsec_busy', 0, 0),
       ('wh_quiet', 'http://127.0.0.1:9/', '', NULL, 'whsec_quiet', 0, 0);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25003)
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts,
                                created_at, schedule_from, redeliveries)
SELECT 'msg_' || i, 'wh_busy', i, 'workflow.transitioned', '{}', 'delivered', 1, i, 0, 0
FROM n;
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts,
                                created_at, schedule_from, redeliveries)
VALUES ('msg_q1', 'wh_quiet', 100001, 'workflow.transitioned', '{}', 'delivered', 1, 1, 0, 0),
       ('msg_q2', 'wh_quiet', 100002, 'workflow.transitioned', '{}', 'delivered', 1, 2, 0, 0);
";

/// A webhook with more deliveries than one transaction deletes goes whole, a chunk at a time
/// (on PostgreSQL one statement for all would outlast its statement timeout, and on SQLite hold
/// the one writer), and takes nothing of another webhook's.
async fn a_busy_webhook_is_deleted_with_all_its_deliveries(url: DatabaseUrl) {
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    run_sql(&url, BUSY_WEBHOOK).await;
    assert!(repo.delete_webhook("wh_busy").await.unwrap());
    assert!(!repo.delete_webhook("wh_busy").await.unwrap());
    // Every delivery of a webhook, as a listing without a query has them (up to 50).
    let page = orchestrator_core::api::DeliveriesQuery::parse_query([]).unwrap();
    assert_eq!(repo.deliveries("wh_busy", &page).await.unwrap(), []);
    assert_eq!(repo.deliveries("wh_quiet", &page).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_busy_webhook_is_deleted_with_all_its_deliveries() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("w.db"));
    a_busy_webhook_is_deleted_with_all_its_deliveries(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_busy_webhook_is_deleted_with_all_its_deliveries() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    a_busy_webhook_is_deleted_with_all_its_deliveries(DatabaseUrl::Postgres(db.url.clone())).await;
}

/// Fails the deletion of any delivery past the 15 000th event: a webhook's deletion stops
/// after its first chunk, as one cut short by a request's timeout or a failing database does.
/// The SQL that holds the deletes, and the SQL that lets them through again.
const HOLD_DELETES_SQLITE: [&str; 2] = [
    "CREATE TRIGGER held BEFORE DELETE ON webhook_deliveries WHEN OLD.event_id > 15000
     BEGIN SELECT RAISE(ABORT, 'held'); END;",
    "DROP TRIGGER held",
];
const HOLD_DELETES_POSTGRES: [&str; 2] = [
    "CREATE FUNCTION held() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN IF OLD.event_id > 15000 THEN RAISE EXCEPTION 'held'; END IF; RETURN OLD; END $$;
     CREATE TRIGGER held BEFORE DELETE ON webhook_deliveries
     FOR EACH ROW EXECUTE FUNCTION held();",
    "DROP TRIGGER held ON webhook_deliveries",
];

/// A webhook's deletion that stops part way leaves no live webhook short of the deliveries
/// already deleted: it is gone from every read and takes no new events, a second deletion
/// finds nothing, and the purge deletes what is left (and nothing of another webhook's).
async fn a_deletion_cut_short_is_gone_and_finished_by_the_purge(url: DatabaseUrl, sql: [&str; 2]) {
    let [hold, release] = sql;
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    run_sql(&url, BUSY_WEBHOOK).await;
    // Its last thousand deliveries wait for an attempt, due since the epoch.
    run_sql(
        &url,
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = 0
         WHERE webhook_id = 'wh_busy' AND event_id > 24003",
    )
    .await;
    run_sql(&url, hold).await;
    repo.delete_webhook("wh_busy")
        .await
        .expect_err("the second chunk fails");
    assert_eq!(repo.webhook("wh_busy").await.unwrap(), None);
    let listed: Vec<String> = repo
        .webhooks()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, ["wh_quiet"]);
    // A new event becomes the live webhook's delivery only, and only that one is claimed or
    // counted.
    let (workflow, first) = new_workflow("after-the-delete");
    repo.create(&workflow, &first).await.unwrap();
    let now = Utc::now();
    assert_eq!(
        repo.enqueue_deliveries("wh_busy", now, 100).await.unwrap(),
        0
    );
    assert_eq!(
        repo.enqueue_deliveries("wh_quiet", now, 100).await.unwrap(),
        1
    );
    let room = orchestrator_server::storage::ClaimRoom::up_to(10);
    let claimed = repo
        .claim_deliveries(now, now + Duration::seconds(60), &room)
        .await
        .unwrap();
    let claimed: Vec<&str> = claimed.iter().map(|d| d.webhook_id.as_str()).collect();
    assert_eq!(claimed, ["wh_quiet"]);
    let backlog = repo.backlog(now + Duration::hours(1)).await.unwrap();
    assert_eq!(backlog.pending, 1);
    // Its mark, left behind, holds back neither the gauge of events still to enqueue nor
    // (the same mark) retention.
    assert_eq!(backlog.oldest_unenqueued, std::time::Duration::ZERO);
    assert!(
        !repo.delete_webhook("wh_busy").await.unwrap(),
        "already gone"
    );

    run_sql(&url, release).await;
    // 15 003 deliveries were left, and the row; a settled delivery made at the epoch is not
    // past a retention that ends then.
    let epoch = chrono::DateTime::UNIX_EPOCH;
    assert_eq!(repo.purge_deliveries(epoch).await.unwrap(), 15_004);
    // Every delivery of a webhook, as a listing without a query has them (up to 50).
    let page = orchestrator_core::api::DeliveriesQuery::parse_query([]).unwrap();
    assert_eq!(repo.deliveries("wh_busy", &page).await.unwrap(), []);
    assert_eq!(repo.deliveries("wh_quiet", &page).await.unwrap().len(), 3);
    assert_eq!(
        repo.purge_deliveries(epoch).await.unwrap(),
        0,
        "nothing left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_deletion_cut_short_is_gone_and_finished_by_the_purge() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("w.db"));
    a_deletion_cut_short_is_gone_and_finished_by_the_purge(url, HOLD_DELETES_SQLITE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_deletion_cut_short_is_gone_and_finished_by_the_purge() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    a_deletion_cut_short_is_gone_and_finished_by_the_purge(url, HOLD_DELETES_POSTGRES).await;
}

/// A webhook's deliveries of events 1 to 3, the second of a type only a newer version knows.
const DELIVERY_OF_A_NEWER_TYPE: &str = "
INSERT INTO webhooks (id, url, event_types, description, secret, created_at, enqueued_through)
VALUES ('wh_mixed', 'http://127.0.0.1:9/', '[]', NULL, 'whsec_mixed', 0, 3);
INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status, attempts,
                                created_at, schedule_from, redeliveries)
VALUES ('msg_m1', 'wh_mixed', 1, 'workflow.transitioned', '{}', 'delivered', 1, 1, 0, 0),
       ('msg_m2', 'wh_mixed', 2, 'workflow.from_the_future', '{}', 'delivered', 1, 2, 0, 0),
       ('msg_m3', 'wh_mixed', 3, 'workflow.transitioned', '{}', 'delivered', 1, 3, 0, 0);
";

/// A delivery of an event type this version does not know (a newer replica enqueued it during
/// a rolling upgrade, or before a downgrade) is left out of its webhook's listing, rather than
/// failing every page of it; pages around it stay full and lead on.
async fn a_delivery_of_a_newer_type_is_left_out_of_the_listing(url: DatabaseUrl) {
    use orchestrator_core::api::DeliveriesPage;
    let repo = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    run_sql(&url, DELIVERY_OF_A_NEWER_TYPE).await;
    let listed = async |before: Option<u64>, limit: u32| {
        let page = DeliveriesPage {
            status: None,
            before,
            limit: orchestrator_core::PageLimit::parse(limit).unwrap(),
        };
        let items = repo.deliveries("wh_mixed", &page).await.unwrap();
        items.into_iter().map(|d| d.event_id).collect::<Vec<_>>()
    };
    // A page of one: one more than asked says another follows, read past the left-out row.
    assert_eq!(listed(None, 1).await, ["3", "1"]);
    assert_eq!(listed(Some(3), 1).await, ["1"]);
    assert_eq!(listed(None, 10).await, ["3", "1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_delivery_of_a_newer_type_is_left_out_of_the_listing() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("n.db"));
    a_delivery_of_a_newer_type_is_left_out_of_the_listing(url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_delivery_of_a_newer_type_is_left_out_of_the_listing() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    a_delivery_of_a_newer_type_is_left_out_of_the_listing(DatabaseUrl::Postgres(db.url.clone()))
        .await;
}

/// A PostgreSQL database restored without the function that hands out event ids (its tables
/// alone) refuses every write that records an event, as a schema fault (500, not a 503 to
/// retry): the health check finds it missing too.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_database_without_its_event_id_function_is_unhealthy() {
    use orchestrator_server::storage::connect;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    let repo = connect(&url, 2).await.unwrap();
    repo.ping().await.expect("healthy");
    run_sql(&url, "DROP FUNCTION take_event_ids(BIGINT)").await;
    let (workflow, first) = new_workflow("no-ids");
    let refused = repo.create(&workflow, &first).await;
    assert!(
        matches!(refused, Err(RepositoryError::Backend(_))),
        "writes fail as a schema fault: {refused:?}"
    );
    assert!(repo.ping().await.is_err(), "and the health check says so");
}

/// Workflow `name` started with 50 KiB of metadata (its `workflow.transitioned` event as
/// large), then rejected and sent back `steps` times with as much.
async fn large_events(repo: &dyn WorkflowRepository, name: &str, steps: usize) {
    let big = |n: usize| {
        let mut metadata = serde_json::Map::new();
        metadata.insert(
            "notes".into(),
            format!("{n}-{}", "x".repeat(50 * 1024)).into(),
        );
        Metadata::parse(serde_json::Value::Object(metadata)).unwrap()
    };
    let mut ctx = TransitionContext::at(t0());
    ctx.metadata = big(0);
    let description = Description::parse(format!("feature {name}")).unwrap();
    let (mut workflow, first) = Workflow::start(id(name), description, big(0), ctx);
    repo.create(&workflow, &first).await.unwrap();
    for n in 0..steps {
        for trigger in [Trigger::AgentComplete, Trigger::HumanRejected] {
            let mut ctx = TransitionContext::at(workflow.updated_at() + Duration::seconds(1));
            ctx.reason = Reason::parse("a rejection needs a reason").ok();
            ctx.metadata = big(n + 1);
            let transition = workflow.apply(trigger, ctx).unwrap();
            let mut next = workflow.clone();
            next.record(&transition);
            repo.commit(workflow.version(), &next, &transition)
                .await
                .unwrap();
            workflow = next;
        }
    }
}

/// A page of large events stops at a few megabytes, short of its limit, and says to read on
/// after its last event (`scanned_through`); paging on reads every event once, in order —
/// of every workflow, of some types only, and of one workflow.
async fn large_events_come_in_pages_of_a_few_megabytes(repo: &dyn WorkflowRepository) {
    large_events(repo, "big", 60).await;
    large_events(repo, "other", 0).await;
    let all = 2 * 60 + 2;
    let filters = [
        (EventFilter::default(), all),
        (
            EventFilter {
                types: vec![EventType::WorkflowTransitioned],
                ..EventFilter::default()
            },
            all,
        ),
        (
            EventFilter {
                feature_id: Some(id("big")),
                ..EventFilter::default()
            },
            all - 1,
        ),
    ];
    for (filter, expected) in filters {
        let (mut after, mut ids, mut pages) = (0, Vec::new(), 0);
        loop {
            let slice = repo.events(after, &filter, 1000).await.unwrap();
            let bytes: usize = slice.events.iter().map(|e| e.event.data.len()).sum();
            assert!(bytes < 16 << 20, "{filter:?}: a page of {bytes} bytes");
            ids.extend(slice.events.iter().map(|e| e.id));
            pages += 1;
            match slice.scanned_through {
                Some(through) => {
                    assert_eq!(Some(through), slice.events.last().map(|e| e.id));
                    after = through;
                }
                None => break,
            }
        }
        assert!(pages > 1, "{filter:?}: 6 MB of events in one page");
        let mut expected_ids = ids.clone();
        expected_ids.sort_unstable();
        expected_ids.dedup();
        assert_eq!(ids, expected_ids, "{filter:?}: in order, once each");
        assert_eq!(ids.len(), expected, "{filter:?}");
    }
}

/// Two stores over one PostgreSQL database (two pools and commit queues, as two replicas
/// have), each writing through every path that writes events — creations, batched commits,
/// and consultations stored and updated in writes of their own — while a reader on one of
/// them follows the log: it meets every id once, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_writing_every_way_never_leave_a_reader_a_gap() {
    use orchestrator_server::storage::{DatabaseUrl, connect};
    const WORKFLOWS: usize = 12;
    const ROUNDS: usize = 6;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    let replicas: Vec<Arc<dyn WorkflowRepository>> = vec![
        connect(&url, 4).await.unwrap(),
        connect(&url, 4).await.unwrap(),
    ];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = following_the_log(replicas[1].clone(), stop.clone());
    let mut writers = Vec::new();
    for n in 0..WORKFLOWS {
        let repo = replicas[n % 2].clone();
        let name = format!("both-{n:02}");
        writers.push(tokio::spawn(async move {
            let (mut workflow, first) = new_workflow(&name);
            repo.create(&workflow, &first).await.unwrap();
            let asked = consultation(&name, 1, true);
            for round in 0..ROUNDS {
                if round == 1 {
                    repo.add_consultation(&asked).await.unwrap();
                }
                if round == 3 {
                    let mut answered = asked.clone();
                    answered.status = ConsultationStatus::Resolved;
                    answered.final_answer = Some("human answer".into());
                    answered.human_action = Some(HumanAction::Correct);
                    answered.updated_at = asked.updated_at + Duration::minutes(1);
                    repo.update_consultation(&answered).await.unwrap();
                }
                workflow = bounced(&*repo, &workflow, round).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let last = reader.await.unwrap();
    let each = ROUNDS + 1 + 2;
    assert_eq!(last, (WORKFLOWS * each) as u64);
    let kinds = all_events(&*replicas[0]).await;
    for n in 0..WORKFLOWS {
        let name = format!("both-{n:02}");
        let mine: Vec<EventType> = kinds
            .iter()
            .filter(|e| e.event.subject.as_str() == name)
            .map(|e| e.event.event_type)
            .collect();
        assert_eq!(mine.len(), each, "{name}: {mine:?}");
    }
}
