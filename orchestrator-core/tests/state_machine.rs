//! Property test of the whole life cycle: random trigger sequences by random actors (named or
//! not, human or agent, with or without a reason), refused triggers and stale expected
//! versions, driven through `Orchestrator` over the in-memory repository and checked against a
//! deliberately dumb reference model: the product's transition table and gate rules, written
//! out again. No agent ever approves or rejects, nobody approves the work they completed
//! (unless the policy allows it), no rejection goes without a reason, replaying the history
//! reproduces the state, and the event log holds one event per history entry and no more.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orchestrator_core::{
    Actor, ActorKind, Advance, Description, Error, EventFilter, EventType, FeatureId, GateChoice,
    InMemoryWorkflowRepository, ManualClock, NewEvent, Orchestrator, Reason, StartWorkflow,
    Transition, TransitionError, Trigger, Workflow, WorkflowState,
};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use Trigger::*;
use WorkflowState::*;

/// The transition table as the product defines it, restated independently of the library's `TRANSITIONS`.
fn spec_table(state: WorkflowState, trigger: Trigger) -> Option<WorkflowState> {
    match (state, trigger) {
        (Idle, Start) => Some(Phase1),
        (Phase1, AgentComplete) => Some(Gate1),
        (Gate1, HumanApproved) => Some(Phase2),
        (Gate1, HumanRejected) => Some(Phase1),
        (Phase2, AgentComplete) => Some(Done),
        (Phase1 | Gate1 | Phase2, Cancel) => Some(Idle),
        _ => None,
    }
}

fn spec_percent(state: WorkflowState) -> u8 {
    match state {
        Idle => 0,
        Phase1 => 25,
        Gate1 => 50,
        Phase2 => 75,
        Done => 100,
    }
}

/// The model's name for a stored actor, if it is one of the names steps use.
fn known(name: &str) -> Option<&'static str> {
    ["ana", "bo", "cy"].into_iter().find(|n| *n == name)
}

/// Which version the caller claims to have seen.
#[derive(Debug, Clone, Copy)]
enum Expectation {
    /// None given.
    Unconditional,
    /// The current version.
    Current,
    /// A version that is not current: this far below it (or above, near zero).
    Stale(u64),
}

#[derive(Debug, Clone)]
struct Step {
    trigger: Trigger,
    expectation: Expectation,
    /// Seconds the clock moves before the step.
    elapse: i64,
    /// Who says so: one of a few names, or nobody named.
    actor: Option<&'static str>,
    /// Whom they act for (a principal naming somebody else), if anyone.
    behalf: Option<&'static str>,
    /// Whether the caller says it is an agent.
    agent: bool,
    /// Whether a reason is given.
    reasoned: bool,
    /// Whether an approval overrides the gate.
    override_gate: bool,
}

/// What the gate rules say about a step the table allows: `None` if it stands, else the
/// refusal the model expects.
fn gate_refusal(model: &Model, step: &Step) -> Option<&'static str> {
    let decision = matches!(step.trigger, HumanApproved | HumanRejected);
    let approval = step.trigger == HumanApproved;
    if decision && step.agent {
        Some("agent")
    } else if decision && (step.trigger == HumanRejected || step.override_gate) && !step.reasoned {
        Some("reason")
    } else if !approval || step.override_gate {
        None
    } else if step.actor.is_none() {
        (model.required > 1).then_some("actor")
    } else if !model.allow_self && step.people().any(|p| model.authors.contains(&p)) {
        Some("self")
    } else if step
        .people()
        .any(|p| model.approvals.iter().flatten().any(|a| *a == p))
    {
        Some("already")
    } else {
        None
    }
}

impl Step {
    /// Who the step speaks for: the actor and whom they act for.
    fn people(&self) -> impl Iterator<Item = &'static str> {
        self.actor.into_iter().chain(self.behalf)
    }
}

/// Where an accepted step leads: an approval that is not the last one needed stays at the
/// gate.
fn destination(model: &Model, step: &Step, table: WorkflowState) -> WorkflowState {
    let counted = step.trigger == HumanApproved && !step.override_gate && step.actor.is_some();
    if counted && model.approvals.len() + 1 < usize::from(model.required) {
        Gate1
    } else {
        table
    }
}

#[derive(Debug, Clone)]
struct Model {
    state: WorkflowState,
    version: u64,
    rework_count: u32,
    /// Who completed the work at the gate (its actor and whom they acted for), while at the
    /// gate.
    authors: Vec<&'static str>,
    /// The approvals of this stay at the gate, each the people it speaks for.
    approvals: Vec<Vec<&'static str>>,
    /// The policy: distinct approvals needed.
    required: u8,
    /// The policy: whether whoever completed the work may approve it.
    allow_self: bool,
}

struct Lifecycle;

impl ReferenceStateMachine for Lifecycle {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        // The system under test starts every workflow with `start`: PHASE_1 at version 1,
        // with a gate needing one to three approvals, the author allowed to approve or not.
        (1u8..=3, prop::bool::weighted(0.25))
            .prop_map(|(required, allow_self)| Model {
                state: Phase1,
                version: 1,
                rework_count: 0,
                authors: Vec::new(),
                approvals: Vec::new(),
                required,
                allow_self,
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        let trigger = prop::sample::select(Trigger::ALL.to_vec());
        let expectation = prop_oneof![
            3 => Just(Expectation::Unconditional),
            3 => Just(Expectation::Current),
            1 => (1u64..4).prop_map(Expectation::Stale),
        ];
        let actor = prop::sample::select(vec![None, Some("ana"), Some("bo"), Some("cy")]);
        let behalf = prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(vec![Some("ana"), Some("bo"), Some("cy")]),
        ];
        (
            (trigger, expectation, 0i64..5000),
            (
                actor,
                behalf,
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.8),
                prop::bool::weighted(0.1),
            ),
        )
            .prop_map(
                |(
                    (trigger, expectation, elapse),
                    (actor, behalf, agent, reasoned, override_gate),
                )| {
                    Step {
                        trigger,
                        expectation,
                        elapse,
                        actor,
                        // Somebody else, as a principal naming another person is recorded.
                        behalf: behalf.filter(|b| actor.is_some_and(|a| a != *b)),
                        agent,
                        reasoned,
                        override_gate,
                    }
                },
            )
            .boxed()
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        if let Expectation::Stale(_) = step.expectation {
            return model;
        }
        if let Some(to) = spec_table(model.state, step.trigger) {
            if gate_refusal(&model, step).is_some() {
                return model;
            }
            let to = destination(&model, step, to);
            if model.state == Gate1 && to == Gate1 {
                model.approvals.push(step.people().collect());
            } else if to == Gate1 {
                model.authors = step.people().collect();
                model.approvals.clear();
            } else {
                model.authors.clear();
                model.approvals.clear();
            }
            model.state = to;
            model.version += 1;
            if step.trigger == HumanRejected {
                model.rework_count += 1;
            }
        }
        model
    }
}

struct System {
    runtime: tokio::runtime::Runtime,
    clock: Arc<ManualClock>,
    orchestrator: Orchestrator,
    id: FeatureId,
}

impl System {
    fn load(&self) -> (Workflow, Vec<Transition>) {
        self.runtime.block_on(async {
            (
                self.orchestrator.get(&self.id).await.unwrap(),
                self.orchestrator.history(&self.id).await.unwrap(),
            )
        })
    }
}

impl StateMachineTest for Lifecycle {
    type SystemUnderTest = System;
    type Reference = Lifecycle;

    fn init_test(initial: &Model) -> System {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()))
            .with_clock(clock.clone());
        let id = FeatureId::parse("prop-1").unwrap();
        runtime
            .block_on(orchestrator.start(StartWorkflow {
                gate: GateChoice {
                    required_approvals: Some(initial.required),
                    allow_self_approval: Some(initial.allow_self),
                    ..GateChoice::default()
                },
                ..StartWorkflow::new(id.clone(), Description::parse("property test").unwrap())
            }))
            .unwrap();
        System {
            runtime,
            clock,
            orchestrator,
            id,
        }
    }

    fn apply(system: System, after: &Model, step: Step) -> System {
        let (workflow_before, history_before) = system.load();
        let before = Model {
            state: workflow_before.state(),
            version: workflow_before.version(),
            rework_count: workflow_before.rework_count(),
            // The stay at the gate, as the workflow keeps it.
            authors: workflow_before
                .gate_stay()
                .map(|stay| {
                    stay.authors
                        .iter()
                        .filter_map(|name| known(name.as_str()))
                        .collect()
                })
                .unwrap_or_default(),
            approvals: workflow_before
                .gate_stay()
                .map(|stay| {
                    stay.approvals
                        .iter()
                        .map(|a| a.people().filter_map(|p| known(p.as_str())).collect())
                        .collect()
                })
                .unwrap_or_default(),
            required: workflow_before.gate_policy().required_approvals,
            allow_self: workflow_before.gate_policy().allow_self_approval,
        };
        system.clock.advance(Duration::seconds(step.elapse));
        let mut advance = Advance::new(step.trigger);
        advance.actor = step.actor.map(|name| Actor::parse(name).unwrap());
        advance.on_behalf_of = step.behalf.map(|name| Actor::parse(name).unwrap());
        advance.actor_kind = step.agent.then_some(ActorKind::Agent);
        advance.override_gate = step.override_gate;
        advance.reason = step
            .reasoned
            .then(|| Reason::parse("the tests do not cover retries").unwrap());
        advance.expected_version = match step.expectation {
            Expectation::Unconditional => None,
            Expectation::Current => Some(before.version),
            Expectation::Stale(k) => {
                Some(before.version.checked_sub(k).unwrap_or(before.version + k))
            }
        };
        let result = system
            .runtime
            .block_on(system.orchestrator.advance(&system.id, advance));
        let expected = spec_table(before.state, step.trigger);
        let refusal = expected.and(gate_refusal(&before, &step));

        let agent_deciding = matches!(step.trigger, HumanApproved | HumanRejected) && step.agent;
        match (&result, step.expectation, expected) {
            // An agent deciding is refused first: in any state, at any version.
            (Err(Error::Transition(TransitionError::AgentMayNotDecide { .. })), _, _)
                if agent_deciding => {}
            (result, _, _) if agent_deciding => {
                panic!(
                    "{step:?} from {:?}: an agent decided: {result:?}",
                    before.state
                )
            }
            (Err(Error::VersionConflict { actual, .. }), Expectation::Stale(_), _) => {
                assert_eq!(*actual, before.version);
            }
            (
                Err(Error::Transition(e)),
                Expectation::Unconditional | Expectation::Current,
                Some(_),
            ) if refusal.is_some() => {
                let kind = match e {
                    TransitionError::AgentMayNotDecide { .. } => "agent",
                    TransitionError::ReasonRequired => "reason",
                    TransitionError::SelfApproval { .. } => "self",
                    TransitionError::ActorRequired { .. } => "actor",
                    TransitionError::AlreadyApproved { .. } => "already",
                    other => panic!("unexpected refusal {other:?}"),
                };
                assert_eq!(Some(kind), refusal, "{step:?}");
            }
            (Ok(workflow), Expectation::Unconditional | Expectation::Current, Some(to))
                if refusal.is_none() =>
            {
                assert_eq!(workflow.state(), destination(&before, &step, to));
                assert_eq!(workflow.version(), before.version + 1);
            }
            (
                Err(Error::Transition(e)),
                Expectation::Unconditional | Expectation::Current,
                None,
            ) => {
                let allowed: Vec<Trigger> = Trigger::ALL
                    .into_iter()
                    .filter(|t| spec_table(before.state, *t).is_some())
                    .collect();
                let mut reported = e.allowed();
                reported.sort();
                assert_eq!(reported, allowed);
            }
            (result, expectation, expected) => {
                panic!(
                    "{:?} with {expectation:?} from {:?}: got {result:?}, table says {expected:?}",
                    step.trigger, before.state
                )
            }
        }

        if let Ok(workflow) = &result {
            assert_eq!(
                (workflow.state(), workflow.version()),
                (after.state, after.version)
            );
        }
        if result.is_err() {
            // A refused trigger leaves state, version and history untouched.
            let (workflow_after, history_after) = system.load();
            assert_eq!(workflow_after, workflow_before);
            assert_eq!(history_after, history_before);
        }
        system
    }

    fn check_invariants(system: &System, model: &Model) {
        let (workflow, history) = system.load();
        assert_eq!(workflow.state(), model.state);
        assert_eq!(workflow.rework_count(), model.rework_count);

        // The version equals the number of accepted transitions.
        assert_eq!(workflow.version(), model.version);
        assert_eq!(workflow.version(), history.len() as u64);

        // seq runs 1, 2, 3… and each `from` is the previous `to`, starting from IDLE.
        let mut previous = Idle;
        for (index, entry) in history.iter().enumerate() {
            assert_eq!(entry.seq, index as u64 + 1);
            assert_eq!(entry.from, previous);
            let recorded_approval =
                (entry.from, entry.trigger, entry.to) == (Gate1, HumanApproved, Gate1);
            assert!(recorded_approval || spec_table(entry.from, entry.trigger) == Some(entry.to));
            // PHASE_2 is entered only by `human_approved` from GATE_1, never by an agent and
            // never by whoever completed the work; every rejection says why.
            if entry.to == Phase2 {
                assert_eq!((entry.from, entry.trigger), (Gate1, HumanApproved));
                assert_ne!(entry.actor_kind, Some(ActorKind::Agent));
                // The entry that entered this stay at the gate.
                let author = history[..index]
                    .iter()
                    .rev()
                    .find(|t| t.from != Gate1 && t.to == Gate1)
                    .unwrap();
                let people = |t: &Transition| -> Vec<Actor> {
                    t.actor
                        .iter()
                        .chain(t.on_behalf_of.iter())
                        .cloned()
                        .collect()
                };
                let authors = people(author);
                assert!(
                    entry.override_gate
                        || entry.actor.is_none()
                        || model.allow_self
                        || !people(entry).iter().any(|p| authors.contains(p))
                );
            }
            if entry.trigger == HumanRejected {
                assert_ne!(entry.actor_kind, Some(ActorKind::Agent));
                assert!(entry.reason.is_some());
            }
            previous = entry.to;
        }

        // Replaying the history reproduces the snapshot, progress included.
        let replayed = Workflow::replay_with(
            workflow.feature_id().clone(),
            workflow.description().clone(),
            workflow.metadata().clone(),
            workflow.gate_policy(),
            &history,
        )
        .unwrap();
        assert_eq!(replayed, workflow);

        let now = system.orchestrator.now();
        let progress = workflow.progress(now);
        assert_eq!(progress.percent, spec_percent(workflow.state()));
        let rejections = history
            .iter()
            .filter(|t| t.trigger == HumanRejected)
            .count();
        assert_eq!(progress.rework_count as usize, rejections);
        let elapsed = (now - workflow.created_at()).num_seconds() as u64;
        assert_eq!(
            progress.time_in_state_seconds.values().sum::<u64>(),
            elapsed
        );

        // One `workflow.transitioned` event per history entry, in order, carrying the entry: a
        // refused step wrote none.
        let filter = EventFilter {
            feature_id: Some(system.id.clone()),
            types: Vec::new(),
        };
        let events = system
            .runtime
            .block_on(system.orchestrator.events(None, &filter, 1000))
            .unwrap()
            .events;
        assert_eq!(events.len(), history.len());
        assert!(events.windows(2).all(|pair| pair[0].id < pair[1].id));
        for (event, entry) in events.iter().zip(&history) {
            assert_eq!(event.event.event_type, EventType::WorkflowTransitioned);
            assert_eq!(
                event.event.data,
                NewEvent::transitioned_data(&system.id, entry)
            );
        }

        // DONE accepts nothing; IDLE accepts only start.
        match workflow.state() {
            Done => assert!(workflow.state().allowed_triggers().is_empty()),
            Idle => assert_eq!(workflow.state().allowed_triggers(), vec![Start]),
            _ => {}
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_life_cycle_follows_the_table(sequential 1..40 => Lifecycle);
}
