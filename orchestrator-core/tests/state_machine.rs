//! Property test of the whole life cycle: random trigger sequences, refused triggers and
//! stale expected versions, driven through `Orchestrator` over the in-memory repository and
//! checked against a deliberately dumb reference model: the product's transition table, written out again.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orchestrator_core::{
    Advance, Description, Error, FeatureId, InMemoryWorkflowRepository, ManualClock, Metadata,
    Orchestrator, StartWorkflow, Transition, Trigger, Workflow, WorkflowState,
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
}

#[derive(Debug, Clone)]
struct Model {
    state: WorkflowState,
    version: u64,
    rework_count: u32,
}

struct Lifecycle;

impl ReferenceStateMachine for Lifecycle {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        // The system under test starts every workflow with `start`: PHASE_1 at version 1.
        Just(Model {
            state: Phase1,
            version: 1,
            rework_count: 0,
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
        (trigger, expectation, 0i64..5000)
            .prop_map(|(trigger, expectation, elapse)| Step {
                trigger,
                expectation,
                elapse,
            })
            .boxed()
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        if let Expectation::Stale(_) = step.expectation {
            return model;
        }
        if let Some(to) = spec_table(model.state, step.trigger) {
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

    fn init_test(_: &Model) -> System {
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
                feature_id: id.clone(),
                description: Description::parse("property test").unwrap(),
                metadata: Metadata::default(),
                use_existing: false,
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
        };
        system.clock.advance(Duration::seconds(step.elapse));
        let mut advance = Advance::new(step.trigger);
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

        match (&result, step.expectation, expected) {
            (Err(Error::VersionConflict { actual, .. }), Expectation::Stale(_), _) => {
                assert_eq!(*actual, before.version);
            }
            (Ok(workflow), Expectation::Unconditional | Expectation::Current, Some(to)) => {
                assert_eq!(workflow.state(), to);
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
            assert_eq!(spec_table(entry.from, entry.trigger), Some(entry.to));
            // PHASE_2 is entered only by `human_approved` from GATE_1.
            if entry.to == Phase2 {
                assert_eq!((entry.from, entry.trigger), (Gate1, HumanApproved));
            }
            previous = entry.to;
        }

        // Replaying the history reproduces the snapshot, progress included.
        let replayed = Workflow::replay(
            workflow.feature_id().clone(),
            workflow.description().clone(),
            workflow.metadata().clone(),
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
