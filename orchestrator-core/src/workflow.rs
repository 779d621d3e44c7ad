//! The `Workflow` aggregate: one feature's life cycle, its rules, and its history records.
//!
//! [`Workflow::apply`] is the only place a trigger is judged; it is pure (the time arrives in
//! the [`TransitionContext`]) and returns the [`Transition`] to persist.
//! [`Workflow::record`] folds an accepted transition into the snapshot and holds no rules.
//! [`Workflow::replay`] rebuilds a snapshot from its history by the same fold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consultation::ConsultationId;
use crate::hub::EscalationId;
use crate::principal::ActorKind;
use crate::state::{Trigger, WorkflowState, next_state};
use crate::values::{Actor, Description, FeatureId, Metadata, Reason};

/// An instant, in UTC. Values from the system clock are truncated to microseconds, the
/// resolution every storage back end keeps.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// A workflow's version: the number of transitions it has accepted.
pub type Version = u64;

/// One accepted transition: the history record of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    /// Position in the history: 1, 2, 3… without gaps. Equals the version it produced.
    pub seq: Version,
    /// State before.
    pub from: WorkflowState,
    /// State after.
    pub to: WorkflowState,
    /// What moved it.
    pub trigger: Trigger,
    /// Who moved it, when known: the caller's `actor`, or the principal whose token it used.
    pub actor: Option<Actor>,
    /// What kind of actor moved it (`human`, `agent`, `system`), when known.
    #[serde(default)]
    pub actor_kind: Option<ActorKind>,
    /// Whom the actor acted for: with principals, the body's `actor` when it differs from the
    /// principal's name.
    #[serde(default)]
    pub on_behalf_of: Option<Actor>,
    /// Why, when the caller said.
    pub reason: Option<Reason>,
    /// Caller's data for this step (an object; empty when none was given).
    #[serde(default)]
    pub metadata: Metadata,
    /// When it was accepted.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// Everything about a transition that is not the rule itself: who, why, extra data, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionContext {
    /// Who triggers it.
    pub actor: Option<Actor>,
    /// What kind of actor that is, when known.
    pub actor_kind: Option<ActorKind>,
    /// Whom the actor acts for, when that is somebody else.
    pub on_behalf_of: Option<Actor>,
    /// Why.
    pub reason: Option<Reason>,
    /// Extra data kept with the history record.
    pub metadata: Metadata,
    /// When; the caller reads the clock, not the rules.
    pub at: Timestamp,
}

impl TransitionContext {
    /// A context with only a time.
    pub fn at(at: Timestamp) -> Self {
        TransitionContext {
            actor: None,
            actor_kind: None,
            on_behalf_of: None,
            reason: None,
            metadata: Metadata::default(),
            at,
        }
    }
}

/// A trigger the current state does not accept.
///
/// Maps to HTTP 409 `INVALID_TRANSITION`, whose details give the state and the allowed triggers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The table has no row for this (state, trigger).
    #[error("trigger '{trigger}' is not allowed in state {state}")]
    NotAllowed {
        /// The workflow's current state.
        state: WorkflowState,
        /// The refused trigger.
        trigger: Trigger,
    },
    /// An agent tried to approve or reject: only people decide at the gate, whatever roles
    /// the agent holds (HTTP 403 `FORBIDDEN`).
    #[error("agents may not '{trigger}': only a human decides at the gate")]
    AgentMayNotDecide {
        /// `human_approved` or `human_rejected`.
        trigger: Trigger,
    },
    /// `human_rejected` without a reason: the author must learn what to change (HTTP 400
    /// `VALIDATION_ERROR` naming `reason`).
    #[error("reason: a rejection needs a reason (what must change)")]
    ReasonRequired,
    /// `human_approved` while consultations wait for a human or for the hub (HTTP 409
    /// `GATE_BLOCKED`).
    #[error("the gate is blocked by {} escalation(s) and {} consultation(s) being asked", escalations.len(), asking.len())]
    GateBlocked {
        /// The escalations a human must act on.
        escalations: Vec<EscalationId>,
        /// The consultations the hub has not answered yet.
        asking: Vec<ConsultationId>,
    },
    /// `human_approved` by the author of the work at the gate (HTTP 409 `SELF_APPROVAL`).
    #[error("'{actor}' made the work at this gate and may not approve it")]
    SelfApproval {
        /// The approver, who is also an author.
        actor: Actor,
    },
}

/// What the gate rule needs to know beyond the workflow itself, supplied by the caller of
/// [`Workflow::decide`] from storage and the Agent Hub. Empty facts block nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateFacts {
    /// Who made the work at the gate: the `actor` and `on_behalf_of` of the transition that
    /// entered it. An author without a name is unknown and blocks no one.
    pub authors: Vec<Actor>,
    /// Escalations still waiting for a human.
    pub escalations: Vec<EscalationId>,
    /// Consultations the hub has not answered yet.
    pub asking: Vec<ConsultationId>,
}

impl GateFacts {
    /// The authors of `entry`, the transition that entered the gate.
    pub fn authored_by(entry: &Transition) -> Vec<Actor> {
        entry
            .actor
            .iter()
            .chain(entry.on_behalf_of.iter())
            .cloned()
            .collect()
    }
}

impl TransitionError {
    /// The triggers the workflow's state would have accepted.
    pub fn allowed(&self) -> Vec<Trigger> {
        match self {
            TransitionError::NotAllowed { state, .. } => state.allowed_triggers(),
            _ => Vec::new(),
        }
    }
}

/// A history that cannot have been produced by the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The history has no entries; every stored workflow has at least its start.
    #[error("history is empty")]
    Empty,
    /// An entry's `seq` is not the next number.
    #[error("history entry {position} has seq {seq}, expected {expected}")]
    Gap {
        /// 1-based position in the history.
        position: usize,
        /// The seq found.
        seq: Version,
        /// The seq the position requires.
        expected: Version,
    },
    /// An entry does not follow from the state before it or breaks the table.
    #[error("history entry {seq} does not follow: {reason}")]
    Inconsistent {
        /// The entry's seq.
        seq: Version,
        /// What is wrong with it.
        reason: String,
    },
}

/// One feature's workflow: a snapshot of its state, kept consistent with its history.
///
/// Change it only through [`Workflow::record`] with a transition [`Workflow::apply`] returned;
/// the fields are private so no caller can break its invariants (the version counts the
/// history, the state is where the history leads). Stores rebuild a stored snapshot with
/// [`Workflow::from_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    feature_id: FeatureId,
    description: Description,
    metadata: Metadata,
    state: WorkflowState,
    version: Version,
    rework_count: u32,
    time_in_state: BTreeMap<WorkflowState, u64>,
    created_at: Timestamp,
    updated_at: Timestamp,
    completed_at: Option<Timestamp>,
}

/// Everything a stored workflow holds: what a store keeps, and gives back to
/// [`Workflow::from_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Which feature.
    pub feature_id: FeatureId,
    /// What the feature is.
    pub description: Description,
    /// The caller's data given at start.
    pub metadata: Metadata,
    /// Where it stands now.
    pub state: WorkflowState,
    /// The number of transitions accepted; the compare-and-set token.
    pub version: Version,
    /// How often the gate sent the work back (`human_rejected` transitions).
    pub rework_count: u32,
    /// Whole seconds spent in each state already left; the current stay is added by
    /// [`Workflow::progress`]. A state appears once the workflow has entered it.
    pub time_in_state: BTreeMap<WorkflowState, u64>,
    /// When the workflow was started the first time.
    pub created_at: Timestamp,
    /// When the last transition was accepted, which is also when the current state was entered.
    pub updated_at: Timestamp,
    /// When the workflow entered DONE.
    pub completed_at: Option<Timestamp>,
}

impl Workflow {
    /// Rebuilds a workflow a store kept. The snapshot must be one this library produced (a
    /// store's row of a workflow it was given); nothing else should call this.
    pub fn from_snapshot(snapshot: Snapshot) -> Workflow {
        let Snapshot {
            feature_id,
            description,
            metadata,
            state,
            version,
            rework_count,
            time_in_state,
            created_at,
            updated_at,
            completed_at,
        } = snapshot;
        Workflow {
            feature_id,
            description,
            metadata,
            state,
            version,
            rework_count,
            time_in_state,
            created_at,
            updated_at,
            completed_at,
        }
    }

    /// Which feature.
    pub fn feature_id(&self) -> &FeatureId {
        &self.feature_id
    }

    /// What the feature is.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The caller's data given at start.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Where it stands now.
    pub fn state(&self) -> WorkflowState {
        self.state
    }

    /// The number of transitions accepted; the compare-and-set token.
    pub fn version(&self) -> Version {
        self.version
    }

    /// How often the gate sent the work back (`human_rejected` transitions).
    pub fn rework_count(&self) -> u32 {
        self.rework_count
    }

    /// Whole seconds spent in each state already left; [`Workflow::progress`] adds the
    /// current stay.
    pub fn time_in_state(&self) -> &BTreeMap<WorkflowState, u64> {
        &self.time_in_state
    }

    /// When the workflow was started the first time.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the last transition was accepted, which is also when the current state was
    /// entered.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// When the workflow entered DONE.
    pub fn completed_at(&self) -> Option<Timestamp> {
        self.completed_at
    }
}

/// How far a workflow has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// IDLE 0, PHASE_1 25, GATE_1 50, PHASE_2 75, DONE 100.
    pub percent: u8,
    /// How often the gate sent the work back.
    pub rework_count: u32,
    /// Whole seconds spent in each state entered so far, the current stay included.
    pub time_in_state_seconds: BTreeMap<WorkflowState, u64>,
}

impl Workflow {
    /// Starts a new workflow: the snapshot after `start`, and history entry 1 (IDLE → PHASE_1).
    pub fn start(
        feature_id: FeatureId,
        description: Description,
        metadata: Metadata,
        ctx: TransitionContext,
    ) -> (Workflow, Transition) {
        let mut workflow = Workflow::idle(feature_id, description, metadata, ctx.at);
        let first = workflow
            .apply(Trigger::Start, ctx)
            .expect("the table lets IDLE accept start");
        workflow.record(&first);
        (workflow, first)
    }

    /// The workflow before its first transition: IDLE at version 0.
    fn idle(
        feature_id: FeatureId,
        description: Description,
        metadata: Metadata,
        at: Timestamp,
    ) -> Workflow {
        Workflow {
            feature_id,
            description,
            metadata,
            state: WorkflowState::Idle,
            version: 0,
            rework_count: 0,
            time_in_state: BTreeMap::new(),
            created_at: at,
            updated_at: at,
            completed_at: None,
        }
    }

    /// Judges `trigger` with no facts about the gate (nothing blocks it, no author is known):
    /// [`Workflow::decide`] with empty [`GateFacts`].
    pub fn apply(
        &self,
        trigger: Trigger,
        ctx: TransitionContext,
    ) -> Result<Transition, TransitionError> {
        self.decide(trigger, ctx, &GateFacts::default())
    }

    /// Judges `trigger`: the table, then the gate's rules in this order — an agent never
    /// approves or rejects; a rejection needs a reason; an approval waits for no escalation
    /// and no consultation still being asked; the work's author may not approve it. On
    /// success, the transition to persist; the snapshot itself is unchanged until
    /// [`Workflow::record`].
    pub fn decide(
        &self,
        trigger: Trigger,
        ctx: TransitionContext,
        facts: &GateFacts,
    ) -> Result<Transition, TransitionError> {
        let to = next_state(self.state, trigger).ok_or(TransitionError::NotAllowed {
            state: self.state,
            trigger,
        })?;
        if trigger.is_human_decision() && ctx.actor_kind == Some(ActorKind::Agent) {
            return Err(TransitionError::AgentMayNotDecide { trigger });
        }
        if trigger == Trigger::HumanRejected
            && ctx
                .reason
                .as_ref()
                .is_none_or(|r| r.as_str().trim().is_empty())
        {
            return Err(TransitionError::ReasonRequired);
        }
        if trigger == Trigger::HumanApproved {
            if !facts.escalations.is_empty() || !facts.asking.is_empty() {
                return Err(TransitionError::GateBlocked {
                    escalations: facts.escalations.clone(),
                    asking: facts.asking.clone(),
                });
            }
            let approvers = ctx.actor.iter().chain(ctx.on_behalf_of.iter());
            if let Some(author) = approvers
                .into_iter()
                .find(|approver| facts.authors.contains(approver))
            {
                return Err(TransitionError::SelfApproval {
                    actor: author.clone(),
                });
            }
        }
        Ok(Transition {
            seq: self.version + 1,
            from: self.state,
            to,
            trigger,
            actor: ctx.actor,
            actor_kind: ctx.actor_kind,
            on_behalf_of: ctx.on_behalf_of,
            reason: ctx.reason,
            metadata: ctx.metadata,
            at: ctx.at,
        })
    }

    /// Folds an accepted transition into the snapshot. Holds no rules and cannot fail; the
    /// transition must come from [`Workflow::apply`] on this very snapshot.
    pub fn record(&mut self, transition: &Transition) {
        debug_assert_eq!(transition.seq, self.version + 1);
        debug_assert_eq!(transition.from, self.state);
        if self.version > 0 {
            *self.time_in_state.entry(self.state).or_default() +=
                whole_seconds_between(self.updated_at, transition.at);
        }
        self.time_in_state.entry(transition.to).or_default();
        if transition.trigger == Trigger::HumanRejected {
            self.rework_count += 1;
        }
        if transition.to == WorkflowState::Done {
            self.completed_at = Some(transition.at);
        }
        self.state = transition.to;
        self.version = transition.seq;
        self.updated_at = transition.at;
    }

    /// Rebuilds a workflow from its history, checking that every entry follows the rules:
    /// seq runs 1, 2, 3…, each `from` is the previous `to`, and the table allows each step.
    pub fn replay(
        feature_id: FeatureId,
        description: Description,
        metadata: Metadata,
        history: &[Transition],
    ) -> Result<Workflow, ReplayError> {
        let first = history.first().ok_or(ReplayError::Empty)?;
        let mut workflow = Workflow::idle(feature_id, description, metadata, first.at);
        // Who made the work at the gate, known from the entry that entered it.
        let mut facts = GateFacts::default();
        for (index, entry) in history.iter().enumerate() {
            let expected = workflow.version + 1;
            if entry.seq != expected {
                return Err(ReplayError::Gap {
                    position: index + 1,
                    seq: entry.seq,
                    expected,
                });
            }
            let inconsistent = |reason: String| ReplayError::Inconsistent {
                seq: entry.seq,
                reason,
            };
            if entry.from != workflow.state {
                return Err(inconsistent(format!(
                    "from {} but the workflow was in {}",
                    entry.from, workflow.state
                )));
            }
            let ctx = TransitionContext {
                actor: entry.actor.clone(),
                actor_kind: entry.actor_kind,
                on_behalf_of: entry.on_behalf_of.clone(),
                reason: entry.reason.clone(),
                metadata: entry.metadata.clone(),
                at: entry.at,
            };
            let accepted = workflow
                .decide(entry.trigger, ctx, &facts)
                .map_err(|e| inconsistent(e.to_string()))?;
            if accepted.to != entry.to {
                return Err(inconsistent(format!(
                    "to {} but the table leads to {}",
                    entry.to, accepted.to
                )));
            }
            workflow.record(&accepted);
            facts.authors = if accepted.to == WorkflowState::Gate1 {
                GateFacts::authored_by(&accepted)
            } else {
                Vec::new()
            };
        }
        Ok(workflow)
    }

    /// Progress as of `now`: the current stay counts towards the current state.
    pub fn progress(&self, now: Timestamp) -> Progress {
        let mut time_in_state_seconds = self.time_in_state.clone();
        if self.version > 0 {
            *time_in_state_seconds.entry(self.state).or_default() +=
                whole_seconds_between(self.updated_at, now);
        }
        Progress {
            percent: self.state.percent(),
            rework_count: self.rework_count,
            time_in_state_seconds,
        }
    }
}

/// Whole seconds from `from` to `to`; zero if the clock went backwards.
fn whole_seconds_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Trigger::*;
    use WorkflowState::*;
    use chrono::{Duration, TimeZone, Utc};

    /// A context at `at`, with a reason (a rejection needs one).
    fn ctx(at: Timestamp) -> TransitionContext {
        TransitionContext {
            reason: Some(Reason::parse("because").unwrap()),
            ..TransitionContext::at(at)
        }
    }

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
    }

    /// Given a workflow started at `t0` and then moved by `triggers` one minute apart…
    fn given(triggers: &[Trigger]) -> Workflow {
        let (mut workflow, _) = Workflow::start(
            FeatureId::parse("f-1").unwrap(),
            Description::parse("a feature").unwrap(),
            Metadata::default(),
            ctx(t0()),
        );
        for (i, trigger) in triggers.iter().enumerate() {
            let at = t0() + Duration::minutes(i as i64 + 1);
            let t = workflow
                .apply(*trigger, ctx(at))
                .expect("given steps are valid");
            workflow.record(&t);
        }
        workflow
    }

    /// …when `trigger` arrives, then it is accepted into `expected`, or refused.
    fn check(triggers: &[Trigger], trigger: Trigger, expected: Option<WorkflowState>) {
        let workflow = given(triggers);
        let result = workflow.apply(trigger, ctx(t0() + Duration::hours(1)));
        match (result, expected) {
            (Ok(t), Some(to)) => {
                assert_eq!(
                    (t.from, t.to, t.seq),
                    (workflow.state, to, workflow.version + 1)
                );
            }
            (
                Err(TransitionError::NotAllowed {
                    state,
                    trigger: refused,
                }),
                None,
            ) => {
                assert_eq!((state, refused), (workflow.state, trigger));
            }
            (result, expected) => {
                panic!("{triggers:?} + {trigger}: got {result:?}, expected {expected:?}")
            }
        }
    }

    #[test]
    fn starting_a_workflow_enters_phase_1_with_history_entry_one() {
        let (workflow, first) = Workflow::start(
            FeatureId::parse("f").unwrap(),
            Description::parse("d").unwrap(),
            Metadata::default(),
            ctx(t0()),
        );
        assert_eq!((workflow.state, workflow.version), (Phase1, 1));
        assert_eq!(
            (first.seq, first.from, first.to, first.trigger),
            (1, Idle, Phase1, Start)
        );
        assert_eq!(workflow.created_at, t0());
    }

    #[test]
    fn phase_1_moves_to_the_gate_when_the_agent_completes() {
        check(&[], AgentComplete, Some(Gate1));
    }

    #[test]
    fn the_gate_opens_to_phase_2_on_human_approval() {
        check(&[AgentComplete], HumanApproved, Some(Phase2));
    }

    #[test]
    fn the_gate_sends_work_back_to_phase_1_on_human_rejection() {
        check(&[AgentComplete], HumanRejected, Some(Phase1));
    }

    #[test]
    fn phase_2_completes_to_done() {
        check(&[AgentComplete, HumanApproved], AgentComplete, Some(Done));
    }

    #[test]
    fn every_active_state_cancels_to_idle_and_idle_restarts() {
        check(&[], Cancel, Some(Idle));
        check(&[AgentComplete], Cancel, Some(Idle));
        check(&[AgentComplete, HumanApproved], Cancel, Some(Idle));
        check(&[Cancel], Start, Some(Phase1));
    }

    #[test]
    fn phase_1_cannot_skip_the_gate() {
        check(&[], HumanApproved, None);
        check(&[], HumanRejected, None);
        check(&[], Start, None);
    }

    #[test]
    fn the_gate_does_not_accept_agent_completion() {
        check(&[AgentComplete], AgentComplete, None);
    }

    #[test]
    fn completed_workflow_rejects_further_triggers() {
        for trigger in Trigger::ALL {
            check(
                &[AgentComplete, HumanApproved, AgentComplete],
                trigger,
                None,
            );
        }
    }

    #[test]
    fn idle_accepts_only_start() {
        for trigger in [AgentComplete, HumanApproved, HumanRejected, Cancel] {
            check(&[Cancel], trigger, None);
        }
    }

    #[test]
    fn a_refused_trigger_names_the_state_and_the_allowed_triggers() {
        let err = given(&[AgentComplete]).apply(Start, ctx(t0())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trigger 'start' is not allowed in state GATE_1"
        );
        assert_eq!(err.allowed(), vec![HumanApproved, HumanRejected, Cancel]);
    }

    #[test]
    fn rework_count_counts_human_rejections() {
        let workflow = given(&[AgentComplete, HumanRejected, AgentComplete, HumanRejected]);
        assert_eq!(workflow.rework_count, 2);
        assert_eq!(workflow.progress(t0()).rework_count, 2);
    }

    #[test]
    fn completion_sets_completed_at() {
        let workflow = given(&[AgentComplete, HumanApproved, AgentComplete]);
        assert_eq!(workflow.state, Done);
        assert_eq!(workflow.completed_at, Some(t0() + Duration::minutes(3)));
        assert_eq!(workflow.progress(t0()).percent, 100);
    }

    #[test]
    fn time_in_state_adds_the_current_stay_to_closed_ones() {
        // PHASE_1 for 60 s, GATE_1 for 60 s, PHASE_1 again since t0 + 2 min.
        let workflow = given(&[AgentComplete, HumanRejected]);
        let progress = workflow.progress(t0() + Duration::minutes(2) + Duration::seconds(30));
        let expected = BTreeMap::from([(Phase1, 90), (Gate1, 60)]);
        assert_eq!(progress.time_in_state_seconds, expected);
        assert_eq!(progress.percent, 25);
    }

    #[test]
    fn a_fresh_workflow_shows_only_phase_1_time() {
        let workflow = given(&[]);
        let progress = workflow.progress(t0() + Duration::seconds(12));
        assert_eq!(
            progress.time_in_state_seconds,
            BTreeMap::from([(Phase1, 12)])
        );
    }

    #[test]
    fn replay_rebuilds_the_same_snapshot() {
        let mut history = Vec::new();
        let (mut workflow, first) = Workflow::start(
            FeatureId::parse("f").unwrap(),
            Description::parse("d").unwrap(),
            Metadata::default(),
            ctx(t0()),
        );
        history.push(first);
        for (i, trigger) in [AgentComplete, HumanRejected, Cancel, Start]
            .into_iter()
            .enumerate()
        {
            let t = workflow
                .apply(trigger, ctx(t0() + Duration::seconds(7 * i as i64 + 7)))
                .unwrap();
            workflow.record(&t);
            history.push(t);
        }
        let replayed = Workflow::replay(
            workflow.feature_id.clone(),
            workflow.description.clone(),
            workflow.metadata.clone(),
            &history,
        );
        assert_eq!(replayed, Ok(workflow));
    }

    #[test]
    fn replay_refuses_a_history_with_a_gap_or_a_broken_step() {
        let id = || FeatureId::parse("f").unwrap();
        let desc = || Description::parse("d").unwrap();
        let (workflow, first) = Workflow::start(id(), desc(), Metadata::default(), ctx(t0()));
        let mut second = workflow.apply(AgentComplete, ctx(t0())).unwrap();

        assert_eq!(
            Workflow::replay(id(), desc(), Metadata::default(), &[]),
            Err(ReplayError::Empty)
        );
        second.seq = 3;
        let gap = Workflow::replay(
            id(),
            desc(),
            Metadata::default(),
            &[first.clone(), second.clone()],
        );
        assert!(matches!(gap, Err(ReplayError::Gap { position: 2, .. })));
        second.seq = 2;
        second.to = Done;
        let broken = Workflow::replay(id(), desc(), Metadata::default(), &[first, second]);
        assert!(matches!(
            broken,
            Err(ReplayError::Inconsistent { seq: 2, .. })
        ));
    }

    #[test]
    fn the_gate_rules_apply_in_order_agent_reason_blocked_author() {
        let gate = given(&[AgentComplete]);
        let actor = |name: &str| Some(Actor::parse(name).unwrap());
        let by = |name: &str, kind: Option<ActorKind>| TransitionContext {
            actor: actor(name),
            actor_kind: kind,
            ..TransitionContext::at(t0())
        };
        let facts = GateFacts {
            authors: vec![Actor::parse("spec-agent").unwrap()],
            escalations: vec![EscalationId("esc-1".into())],
            asking: vec![],
        };
        // An agent, first of all, whatever else holds.
        assert_eq!(
            gate.decide(
                HumanApproved,
                by("spec-agent", Some(ActorKind::Agent)),
                &facts
            ),
            Err(TransitionError::AgentMayNotDecide {
                trigger: HumanApproved
            })
        );
        // A rejection without a reason, or a blank one.
        assert_eq!(
            gate.decide(HumanRejected, by("alice", None), &facts),
            Err(TransitionError::ReasonRequired)
        );
        let blank = TransitionContext {
            reason: Some(Reason::parse("  ").unwrap()),
            ..by("alice", None)
        };
        assert_eq!(
            gate.decide(HumanRejected, blank, &facts),
            Err(TransitionError::ReasonRequired)
        );
        // A blocked gate before the author's own approval.
        assert!(matches!(
            gate.decide(HumanApproved, by("spec-agent", None), &facts),
            Err(TransitionError::GateBlocked { .. })
        ));
        let open = GateFacts {
            escalations: vec![],
            ..facts.clone()
        };
        assert_eq!(
            gate.decide(HumanApproved, by("spec-agent", None), &open),
            Err(TransitionError::SelfApproval {
                actor: Actor::parse("spec-agent").unwrap()
            })
        );
        // Acting for the author is the author's approval too.
        let for_author = TransitionContext {
            on_behalf_of: actor("spec-agent"),
            ..by("alice", None)
        };
        assert!(matches!(
            gate.decide(HumanApproved, for_author, &open),
            Err(TransitionError::SelfApproval { .. })
        ));
        // Somebody else, or nobody named, approves.
        assert!(gate.decide(HumanApproved, by("alice", None), &open).is_ok());
        assert!(
            gate.decide(HumanApproved, TransitionContext::at(t0()), &open)
                .is_ok()
        );
    }

    #[test]
    fn replay_refuses_a_history_where_the_author_approved() {
        let (mut workflow, first) = Workflow::start(
            FeatureId::parse("f-1").unwrap(),
            Description::parse("a feature").unwrap(),
            Metadata::default(),
            TransitionContext::at(t0()),
        );
        let by = |name: &str| TransitionContext {
            actor: Some(Actor::parse(name).unwrap()),
            ..TransitionContext::at(t0())
        };
        let done = workflow.apply(AgentComplete, by("bob")).unwrap();
        workflow.record(&done);
        // Judged without facts, as a store that lost them might.
        let approved = workflow.apply(HumanApproved, by("bob")).unwrap();
        let replayed = Workflow::replay(
            FeatureId::parse("f-1").unwrap(),
            Description::parse("a feature").unwrap(),
            Metadata::default(),
            &[first, done, approved],
        );
        assert!(matches!(
            replayed,
            Err(ReplayError::Inconsistent { seq: 3, .. })
        ));
    }
}
