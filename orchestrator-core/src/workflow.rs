//! The `Workflow` aggregate: one feature's life cycle, its rules, and its history records.
//!
//! [`Workflow::decide`] is the only place a trigger is judged ([`Workflow::apply`] is it
//! without gate facts); it is pure (the time arrives in the [`TransitionContext`]) and returns
//! the [`Transition`] to persist.
//! [`Workflow::record`] folds an accepted transition into the snapshot and holds no rules.
//! [`Workflow::replay`] rebuilds a snapshot from its history by the same fold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::consultation::ConsultationId;
use crate::gate::{Approval, GatePolicy, GateStay};
use crate::hub::EscalationId;
use crate::principal::{Action, ActorKind, Role};
use crate::state::{Trigger, WorkflowState, next_state};
use crate::values::{Actor, Description, FeatureId, Metadata, Reason, is_blank};

/// An instant, in UTC. Values from the system clock are truncated to microseconds, the
/// resolution every storage back end keeps.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Writes a [`Timestamp`] as chrono's `Serialize` does (RFC 3339 in UTC, `Z`, as many
/// fraction digits as it has), in one piece. Chrono's own writes it a few characters at a
/// time, and serde_json escapes each piece on its own: that was a third of the instructions
/// spent serialising a workflow's representation. Every timestamp the crate serialises goes
/// through here (`#[serde(serialize_with = …)]`).
pub(crate) fn rfc3339<S: serde::Serializer>(
    at: &Timestamp,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// [`rfc3339`] of an optional timestamp, `None` as serde writes it (`null`).
pub(crate) fn rfc3339_option<S: serde::Serializer>(
    at: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    struct Rfc3339<'a>(&'a Timestamp);
    impl Serialize for Rfc3339<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            rfc3339(self.0, serializer)
        }
    }
    match at {
        Some(at) => serializer.serialize_some(&Rfc3339(at)),
        None => serializer.serialize_none(),
    }
}

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
    /// Whether an admin passed the gate whatever was missing (`human_approved` with
    /// `override`).
    #[serde(rename = "override", default)]
    pub override_gate: bool,
    /// Caller's data for this step (an object; empty when none was given).
    #[serde(default)]
    pub metadata: Metadata,
    /// When it was accepted.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub at: Timestamp,
}

impl Transition {
    /// An approval judged by the gate's rules (`human_approved` without `override`): it may
    /// land only while no consultation blocks the gate.
    pub fn is_gated_approval(&self) -> bool {
        self.trigger == Trigger::HumanApproved && !self.override_gate
    }
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
    /// Pass the gate whatever is missing (an admin's `human_approved`, with a reason).
    pub override_gate: bool,
    /// The roles the actor holds, when a principal acts; `None` is every role, as in open
    /// mode. Only an override reads them: it is an admin's.
    pub roles: Option<BTreeSet<Role>>,
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
            override_gate: false,
            roles: None,
            reason: None,
            metadata: Metadata::default(),
            at,
        }
    }
}

/// "the gate is blocked by 1 escalation waiting for a human and 2 consultations the Agent Hub
/// has not answered": what holds a gate, in a sentence a person reads (the board shows it).
pub(crate) fn gate_blocked(escalations: usize, asking: usize) -> String {
    let mut holds = Vec::new();
    match escalations {
        0 => {}
        1 => holds.push("1 escalation waiting for a human".to_owned()),
        n => holds.push(format!("{n} escalations waiting for a human")),
    }
    match asking {
        0 => {}
        1 => holds.push("1 consultation the Agent Hub has not answered".to_owned()),
        n => holds.push(format!("{n} consultations the Agent Hub has not answered")),
    }
    if holds.is_empty() {
        // Judged blocked, found free when read again: what held it settled meanwhile.
        return "the gate was blocked by a consultation that has settled since; try again"
            .to_owned();
    }
    format!("the gate is blocked by {}", holds.join(" and "))
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
    /// An override by someone who is not an admin (HTTP 403 `FORBIDDEN`, `role needed:
    /// admin`).
    #[error("role needed: admin (only an admin overrides the gate)")]
    OverrideNeedsAdmin,
    /// `human_rejected` without a reason (the author must learn what to change), or an
    /// override without one (HTTP 400 `VALIDATION_ERROR` naming `reason`).
    #[error("reason: a rejection or an override needs a reason")]
    ReasonRequired,
    /// An approval without an actor at a gate that needs several distinct people (HTTP 400
    /// `VALIDATION_ERROR` naming `actor`).
    #[error(
        "actor: this gate needs {required} distinct approvals, so an approval must name its actor"
    )]
    ActorRequired {
        /// The approvals the gate needs.
        required: u8,
    },
    /// The same actor approving twice in one stay at the gate (HTTP 409 `ALREADY_APPROVED`).
    #[error("'{actor}' approved this gate already")]
    AlreadyApproved {
        /// The one who approved already, as recorded, whom the approval speaks for.
        actor: Actor,
    },
    /// `human_approved` while consultations wait for a human or for the hub (HTTP 409
    /// `GATE_BLOCKED`).
    #[error("{}", gate_blocked(escalations.len(), asking.len()))]
    GateBlocked {
        /// The escalations a human must act on.
        escalations: Vec<EscalationId>,
        /// The consultations the hub has not answered yet.
        asking: Vec<ConsultationId>,
    },
    /// `human_approved` by the author of the work at the gate (HTTP 409 `SELF_APPROVAL`).
    #[error("'{actor}' made the work at this gate and may not approve it")]
    SelfApproval {
        /// The author, as recorded, whom the approval speaks for.
        actor: Actor,
    },
}

/// What the gate rule needs to know beyond the workflow itself, supplied by the caller of
/// [`Workflow::decide`] from storage and the Agent Hub. Empty facts block nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateFacts {
    /// Escalations still waiting for a human.
    pub escalations: Vec<EscalationId>,
    /// Consultations the hub has not answered yet.
    pub asking: Vec<ConsultationId>,
}

/// Who made the work `entry` brought to the gate: its `actor` and `on_behalf_of`. An author
/// without a name is unknown and blocks no one.
fn authors_of(entry: &Transition) -> Vec<Actor> {
    entry
        .actor
        .iter()
        .chain(entry.on_behalf_of.iter())
        .cloned()
        .collect()
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
    gate_policy: GatePolicy,
    gate_stay: Option<GateStay>,
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
    /// How its gate is passed.
    pub gate_policy: GatePolicy,
    /// The current stay at GATE_1, while there.
    pub gate_stay: Option<GateStay>,
}

/// The gate's rules about who decides, before any other check of a decision (the state, the
/// version): an agent never approves or rejects, and an override is an admin's (when `roles`
/// names the actor's: `None` is every role, as in open mode).
pub(crate) fn may_decide(
    trigger: Trigger,
    actor_kind: Option<ActorKind>,
    override_gate: bool,
    roles: Option<&BTreeSet<Role>>,
) -> Result<(), TransitionError> {
    let admin =
        |roles: &BTreeSet<Role>| roles.iter().any(|role| role.permits(Action::OverrideGate));
    if trigger.is_human_decision() && actor_kind == Some(ActorKind::Agent) {
        Err(TransitionError::AgentMayNotDecide { trigger })
    } else if override_gate
        && trigger == Trigger::HumanApproved
        && roles.is_some_and(|roles| !admin(roles))
    {
        Err(TransitionError::OverrideNeedsAdmin)
    } else {
        Ok(())
    }
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
            gate_policy,
            gate_stay,
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
            gate_policy,
            gate_stay,
        }
    }

    /// How its gate is passed.
    pub fn gate_policy(&self) -> GatePolicy {
        self.gate_policy
    }

    /// When its current stay at the gate is due: at GATE_1 with a deadline only.
    pub fn gate_due_at(&self) -> Option<Timestamp> {
        self.gate_stay
            .as_ref()
            .filter(|_| self.state == WorkflowState::Gate1)
            .and_then(|stay| self.gate_policy.due_at(stay.entered_at))
    }

    /// Whether its stay at the gate is past its deadline at `now`.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.gate_due_at().is_some_and(|due| now > due)
    }

    /// The current stay at GATE_1, while there: since when, who made the work, who approved.
    pub fn gate_stay(&self) -> Option<&GateStay> {
        self.gate_stay.as_ref()
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
        Self::start_with(
            feature_id,
            description,
            metadata,
            GatePolicy::default(),
            ctx,
        )
    }

    /// [`Workflow::start`] with its own gate policy.
    pub fn start_with(
        feature_id: FeatureId,
        description: Description,
        metadata: Metadata,
        gate_policy: GatePolicy,
        ctx: TransitionContext,
    ) -> (Workflow, Transition) {
        let mut workflow = Workflow::idle(feature_id, description, metadata, ctx.at);
        workflow.gate_policy = gate_policy;
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
            gate_policy: GatePolicy::default(),
            gate_stay: None,
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

    /// Judges `trigger`: an agent never approves or rejects, and only an admin overrides (when
    /// `ctx.roles` names the actor's roles), in any state; then the table, then the gate's
    /// rules in this order — an admin's override (with a reason) passes
    /// whatever is missing; a rejection needs a reason; an approval waits for no escalation
    /// and no consultation still being asked, names its actor when several are needed, is not
    /// the author's (unless the policy allows) and not a second one by the same actor. On
    /// success, the transition to persist (GATE_1 → GATE_1 for an approval that is not yet the
    /// last one needed), dated `ctx.at` or, if that is earlier, when the snapshot last changed;
    /// the snapshot itself is unchanged until [`Workflow::record`].
    pub fn decide(
        &self,
        trigger: Trigger,
        ctx: TransitionContext,
        facts: &GateFacts,
    ) -> Result<Transition, TransitionError> {
        // Who decides comes before when: an agent hears that it never approves or rejects,
        // not that this state does not take the trigger.
        // So is an override by someone who is not an admin, as over HTTP, where the role is
        // checked first.
        may_decide(
            trigger,
            ctx.actor_kind,
            ctx.override_gate,
            ctx.roles.as_ref(),
        )?;
        let to = next_state(self.state, trigger).ok_or(TransitionError::NotAllowed {
            state: self.state,
            trigger,
        })?;
        let reasoned = ctx.reason.as_ref().is_some_and(|r| !is_blank(r.as_str()));
        if trigger == Trigger::HumanRejected && !reasoned {
            return Err(TransitionError::ReasonRequired);
        }
        let mut to = to;
        if trigger == Trigger::HumanApproved {
            if ctx.override_gate {
                // An admin's decision, on the record with its reason; nothing else is checked.
                if !reasoned {
                    return Err(TransitionError::ReasonRequired);
                }
            } else {
                to = self.judge_approval(&ctx, facts)?;
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
            override_gate: ctx.override_gate && trigger == Trigger::HumanApproved,
            metadata: ctx.metadata,
            // Never before the entry it follows (one committed while this one waited its
            // turn, or dated by another replica's clock).
            at: ctx.at.max(self.updated_at),
        })
    }

    /// The gate's rules for an approval, in order: nothing may still block it, the approver
    /// must be named when several are needed, may not be an author (unless the policy allows)
    /// and may not approve twice. Returns where the approval leads: PHASE_2 with the last
    /// approval needed, else GATE_1 again (the approval recorded).
    fn judge_approval(
        &self,
        ctx: &TransitionContext,
        facts: &GateFacts,
    ) -> Result<WorkflowState, TransitionError> {
        if !facts.escalations.is_empty() || !facts.asking.is_empty() {
            return Err(TransitionError::GateBlocked {
                escalations: facts.escalations.clone(),
                asking: facts.asking.clone(),
            });
        }
        let policy = self.gate_policy;
        let (authors, approvals) = self.gate_stay.as_ref().map_or((&[][..], &[][..]), |stay| {
            (stay.authors.as_slice(), stay.approvals.as_slice())
        });
        let Some(actor) = &ctx.actor else {
            if policy.required_approvals > 1 {
                return Err(TransitionError::ActorRequired {
                    required: policy.required_approvals,
                });
            }
            // Nobody named, but whom the approval is for (a library caller may say only that):
            // an author still may not approve through it.
            if let Some(author) = ctx
                .on_behalf_of
                .as_ref()
                .filter(|_| !policy.allow_self_approval)
                .filter(|person| authors.iter().any(|a| a.same_person(person)))
            {
                return Err(TransitionError::SelfApproval {
                    actor: author.clone(),
                });
            }
            return Ok(WorkflowState::Phase2);
        };
        // An approval speaks for the approver and for whom they act: the first of `people`
        // who is one of them, whatever the case of the names, named as recorded (`spec-agent`
        // made the work, though `SPEC-AGENT` approves).
        let among = |people: &[&Actor]| {
            std::iter::once(actor)
                .chain(ctx.on_behalf_of.iter())
                .find_map(|a| people.iter().find(|p| p.same_person(a)))
                .map(|p| (*p).clone())
        };
        if !policy.allow_self_approval {
            let authors: Vec<&Actor> = authors.iter().collect();
            if let Some(author) = among(&authors) {
                return Err(TransitionError::SelfApproval { actor: author });
            }
        }
        // One person approves once in a stay, in their own name or through whoever acts for
        // them: otherwise one person's consent could count twice.
        let approved: Vec<&Actor> = approvals.iter().flat_map(Approval::people).collect();
        if let Some(again) = among(&approved) {
            return Err(TransitionError::AlreadyApproved { actor: again });
        }
        if approvals.len() + 1 >= usize::from(policy.required_approvals) {
            Ok(WorkflowState::Phase2)
        } else {
            Ok(WorkflowState::Gate1)
        }
    }

    /// Folds an accepted transition into the snapshot. Holds no rules and cannot fail; the
    /// transition must come from [`Workflow::apply`] on this very snapshot.
    pub fn record(&mut self, transition: &Transition) {
        debug_assert_eq!(transition.seq, self.version + 1);
        debug_assert_eq!(transition.from, self.state);
        if self.version > 0 {
            *self.time_in_state.entry(self.state).or_default() +=
                self.seconds_since_last_change(transition.at);
        }
        self.time_in_state.entry(transition.to).or_default();
        if transition.trigger == Trigger::HumanRejected {
            self.rework_count += 1;
        }
        if transition.to == WorkflowState::Done {
            self.completed_at = Some(transition.at);
        }
        self.gate_stay = match (transition.from, transition.to) {
            // An approval that does not pass the gate yet.
            (WorkflowState::Gate1, WorkflowState::Gate1) => {
                self.gate_stay.take().map(|mut stay| {
                    stay.approvals
                        .extend(transition.actor.clone().map(|actor| Approval {
                            actor,
                            on_behalf_of: transition.on_behalf_of.clone(),
                            at: transition.at,
                        }));
                    stay
                })
            }
            (_, WorkflowState::Gate1) => Some(GateStay {
                entered_at: transition.at,
                authors: authors_of(transition),
                approvals: Vec::new(),
            }),
            _ => None,
        };
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
        Self::replay_with(
            feature_id,
            description,
            metadata,
            GatePolicy::default(),
            history,
        )
    }

    /// [`Workflow::replay`] of a workflow started with `gate_policy`.
    pub fn replay_with(
        feature_id: FeatureId,
        description: Description,
        metadata: Metadata,
        gate_policy: GatePolicy,
        history: &[Transition],
    ) -> Result<Workflow, ReplayError> {
        let first = history.first().ok_or(ReplayError::Empty)?;
        let mut workflow = Workflow::idle(feature_id, description, metadata, first.at);
        workflow.gate_policy = gate_policy;
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
                override_gate: entry.override_gate,
                // Judged when it was made: a history records no roles.
                roles: None,
                reason: entry.reason.clone(),
                metadata: entry.metadata.clone(),
                at: entry.at,
            };
            let accepted = workflow
                .decide(entry.trigger, ctx, &GateFacts::default())
                .map_err(|e| inconsistent(e.to_string()))?;
            if accepted.to != entry.to {
                return Err(inconsistent(format!(
                    "to {} but the table leads to {}",
                    entry.to, accepted.to
                )));
            }
            workflow.record(&accepted);
        }
        Ok(workflow)
    }

    /// Progress as of `now`: the current stay counts towards the current state.
    pub fn progress(&self, now: Timestamp) -> Progress {
        let mut time_in_state_seconds = self.time_in_state.clone();
        if self.version > 0 {
            *time_in_state_seconds.entry(self.state).or_default() +=
                self.seconds_since_last_change(now);
        }
        Progress {
            percent: self.state.percent(),
            rework_count: self.rework_count,
            time_in_state_seconds,
        }
    }

    /// The whole seconds of the current stay from the last change to `at`, reckoned from the
    /// stay's start: an approval that does not pass the gate yet changes the workflow, not its
    /// state, and the pieces such approvals cut a stay into add up to the stay's whole seconds
    /// (each piece rounded down on its own lost up to a second per approval). A piece stored
    /// by a version that counted the old way is kept as it is, not counted again.
    fn seconds_since_last_change(&self, at: Timestamp) -> u64 {
        let since = match &self.gate_stay {
            Some(stay) if self.state == WorkflowState::Gate1 => stay.entered_at,
            _ => self.updated_at,
        };
        whole_seconds_between(since, at)
            .saturating_sub(whole_seconds_between(since, self.updated_at))
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
    fn a_blocked_gate_says_what_holds_it_in_words() {
        assert_eq!(
            gate_blocked(1, 2),
            "the gate is blocked by 1 escalation waiting for a human and 2 consultations the \
             Agent Hub has not answered"
        );
        assert_eq!(
            gate_blocked(2, 0),
            "the gate is blocked by 2 escalations waiting for a human"
        );
        assert_eq!(
            gate_blocked(0, 1),
            "the gate is blocked by 1 consultation the Agent Hub has not answered"
        );
        assert!(gate_blocked(0, 0).contains("settled since"));
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
    fn approvals_on_the_way_do_not_cut_the_time_at_the_gate() {
        // At the gate from t0, approved at +0.6 s and +1.2 s, passed at +1.8 s: one stay of
        // 1.8 s, so one whole second, not three pieces each rounded down to none.
        let mut gate = at_gate(GatePolicy::new(3, false).unwrap());
        let open = GateFacts::default();
        for (name, after) in [("alice", 600), ("bo", 1200)] {
            let at = t0() + Duration::milliseconds(after);
            let approval = gate
                .decide(
                    HumanApproved,
                    TransitionContext {
                        at,
                        ..by(name, None)
                    },
                    &open,
                )
                .unwrap();
            assert_eq!(approval.to, Gate1);
            gate.record(&approval);
        }
        let later = t0() + Duration::milliseconds(1800);
        assert_eq!(gate.progress(later).time_in_state_seconds[&Gate1], 1);
        let passed = gate
            .decide(
                HumanApproved,
                TransitionContext {
                    at: later,
                    ..by("cy", None)
                },
                &open,
            )
            .unwrap();
        assert_eq!(passed.to, Phase2);
        gate.record(&passed);
        assert_eq!(gate.time_in_state()[&Gate1], 1);

        // Each approval stores its piece (as earlier versions did), so a stay an earlier
        // version counted in part is not counted twice: 8 h, then 16 h more, makes 24 h.
        let mut gate = at_gate(GatePolicy::new(2, false).unwrap());
        let approve = |gate: &Workflow, name, at| {
            gate.decide(
                HumanApproved,
                TransitionContext {
                    at,
                    ..by(name, None)
                },
                &open,
            )
            .unwrap()
        };
        let first = approve(&gate, "alice", t0() + Duration::hours(8));
        gate.record(&first);
        assert_eq!(gate.time_in_state()[&Gate1], 8 * 3600);
        let passed = approve(&gate, "bo", t0() + Duration::hours(24));
        gate.record(&passed);
        assert_eq!(gate.time_in_state()[&Gate1], 24 * 3600);
    }

    /// Whatever path judges it (an advance that waited its turn, an approval after the hub,
    /// a gate's expiry on another replica's clock), an entry is never dated before the one it
    /// follows.
    #[test]
    fn a_transition_is_never_dated_before_the_last_change() {
        let workflow = given(&[AgentComplete]);
        let late = t0() + Duration::minutes(1);
        for asked in [t0(), late, late + Duration::seconds(5)] {
            let t = workflow.apply(HumanRejected, ctx(asked)).unwrap();
            assert_eq!(t.at, asked.max(late), "asked at {asked}");
        }
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

    /// A workflow at the gate with `policy`, the work completed by `spec-agent`.
    fn at_gate(policy: GatePolicy) -> Workflow {
        let (mut workflow, _) = Workflow::start_with(
            FeatureId::parse("f-1").unwrap(),
            Description::parse("a feature").unwrap(),
            Metadata::default(),
            policy,
            ctx(t0()),
        );
        let done = workflow
            .apply(
                AgentComplete,
                TransitionContext {
                    actor: Some(Actor::parse("spec-agent").unwrap()),
                    ..ctx(t0())
                },
            )
            .unwrap();
        workflow.record(&done);
        workflow
    }

    fn by(name: &str, kind: Option<ActorKind>) -> TransitionContext {
        TransitionContext {
            actor: Some(Actor::parse(name).unwrap()),
            actor_kind: kind,
            ..TransitionContext::at(t0())
        }
    }

    #[test]
    fn the_gate_rules_apply_in_order_agent_reason_blocked_author() {
        let gate = at_gate(GatePolicy::default());
        let blocked = GateFacts {
            escalations: vec![EscalationId("esc-1".into())],
            asking: vec![],
        };
        let open = GateFacts::default();
        // An agent, first of all, whatever else holds.
        assert_eq!(
            gate.decide(
                HumanApproved,
                by("spec-agent", Some(ActorKind::Agent)),
                &blocked
            ),
            Err(TransitionError::AgentMayNotDecide {
                trigger: HumanApproved
            })
        );
        // A rejection without a reason, or a blank one.
        assert_eq!(
            gate.decide(HumanRejected, by("alice", None), &blocked),
            Err(TransitionError::ReasonRequired)
        );
        let blank = TransitionContext {
            reason: Some(Reason::parse("  ").unwrap()),
            ..by("alice", None)
        };
        assert_eq!(
            gate.decide(HumanRejected, blank, &blocked),
            Err(TransitionError::ReasonRequired)
        );
        let invisible = TransitionContext {
            reason: Some(Reason::parse("\u{200b}\u{feff} ").unwrap()),
            ..by("alice", None)
        };
        assert_eq!(
            gate.decide(HumanRejected, invisible, &blocked),
            Err(TransitionError::ReasonRequired)
        );
        // A blocked gate before the author's own approval.
        assert!(matches!(
            gate.decide(HumanApproved, by("spec-agent", None), &blocked),
            Err(TransitionError::GateBlocked { .. })
        ));
        assert_eq!(
            gate.decide(HumanApproved, by("spec-agent", None), &open),
            Err(TransitionError::SelfApproval {
                actor: Actor::parse("spec-agent").unwrap()
            })
        );
        // Acting for the author is the author's approval too.
        let for_author = TransitionContext {
            on_behalf_of: Some(Actor::parse("spec-agent").unwrap()),
            ..by("alice", None)
        };
        assert!(matches!(
            gate.decide(HumanApproved, for_author, &open),
            Err(TransitionError::SelfApproval { .. })
        ));
        // Also when the approval names nobody but whom it is for.
        let only_for_author = TransitionContext {
            on_behalf_of: Some(Actor::parse("spec-agent").unwrap()),
            ..TransitionContext::at(t0())
        };
        assert!(matches!(
            gate.decide(HumanApproved, only_for_author, &open),
            Err(TransitionError::SelfApproval { .. })
        ));
        // The author's name in another case is the author still, named as recorded.
        assert_eq!(
            gate.decide(HumanApproved, by("Spec-Agent", None), &open),
            Err(TransitionError::SelfApproval {
                actor: Actor::parse("spec-agent").unwrap()
            })
        );
        // Somebody else, or nobody named, approves; the policy may allow the author.
        assert!(gate.decide(HumanApproved, by("alice", None), &open).is_ok());
        assert!(
            gate.decide(HumanApproved, TransitionContext::at(t0()), &open)
                .is_ok()
        );
        let lenient = at_gate(GatePolicy::new(1, true).unwrap());
        assert!(
            lenient
                .decide(HumanApproved, by("spec-agent", None), &open)
                .is_ok()
        );
    }

    #[test]
    fn several_approvals_are_recorded_until_the_last_one_passes_the_gate() {
        let mut gate = at_gate(GatePolicy::new(2, false).unwrap());
        let open = GateFacts::default();
        assert_eq!(
            gate.decide(HumanApproved, TransitionContext::at(t0()), &open),
            Err(TransitionError::ActorRequired { required: 2 })
        );
        let first = gate
            .decide(HumanApproved, by("alice", None), &open)
            .unwrap();
        assert_eq!((first.from, first.to), (Gate1, Gate1));
        gate.record(&first);
        assert_eq!(gate.gate_stay().unwrap().approvals.len(), 1);
        for again in ["alice", "ALICE"] {
            assert_eq!(
                gate.decide(HumanApproved, by(again, None), &open),
                // Named as recorded, whatever the spelling of the second try.
                Err(TransitionError::AlreadyApproved {
                    actor: Actor::parse("alice").unwrap()
                })
            );
        }
        let second = gate.decide(HumanApproved, by("bo", None), &open).unwrap();
        assert_eq!(second.to, Phase2);
        gate.record(&second);
        assert_eq!(gate.gate_stay(), None);

        // A rejection discards the round's approvals; the next stay starts afresh.
        let mut gate = at_gate(GatePolicy::new(2, false).unwrap());
        let first = gate
            .decide(HumanApproved, by("alice", None), &open)
            .unwrap();
        gate.record(&first);
        let back = gate.decide(HumanRejected, ctx(t0()), &open).unwrap();
        gate.record(&back);
        let again = gate.apply(AgentComplete, by("spec-agent", None)).unwrap();
        gate.record(&again);
        assert!(gate.gate_stay().unwrap().approvals.is_empty());
        let retry = gate
            .decide(HumanApproved, by("alice", None), &open)
            .unwrap();
        assert_eq!(retry.to, Gate1);
    }

    #[test]
    fn one_persons_approval_counts_once_whoever_gives_it() {
        let three = GatePolicy::new(3, false).unwrap();
        let open = GateFacts::default();
        let acting = |actor: &str, for_whom: &str| TransitionContext {
            on_behalf_of: Some(Actor::parse(for_whom).unwrap()),
            ..by(actor, None)
        };
        // Alice approves herself; then nobody may approve for her, nor she again through
        // someone else.
        let mut gate = at_gate(three);
        gate.record(
            &gate
                .decide(HumanApproved, by("alice", None), &open)
                .unwrap(),
        );
        assert_eq!(
            gate.decide(HumanApproved, acting("proxy", "Alice"), &open),
            Err(TransitionError::AlreadyApproved {
                actor: Actor::parse("alice").unwrap()
            })
        );
        // A proxy approves for bo: the approval is kept as both, and neither approves again.
        let mut gate = at_gate(three);
        gate.record(
            &gate
                .decide(HumanApproved, acting("proxy", "bo"), &open)
                .unwrap(),
        );
        let approval = &gate.gate_stay().unwrap().approvals[0];
        assert_eq!(
            approval.people().map(Actor::as_str).collect::<Vec<_>>(),
            vec!["proxy", "bo"]
        );
        for again in [by("bo", None), by("proxy", None), acting("cy", "bo")] {
            assert!(matches!(
                gate.decide(HumanApproved, again, &open),
                Err(TransitionError::AlreadyApproved { .. })
            ));
        }
        // Two other people still make the three.
        gate.record(&gate.decide(HumanApproved, by("cy", None), &open).unwrap());
        let last = gate.decide(HumanApproved, by("dee", None), &open).unwrap();
        assert_eq!(last.to, Phase2);
    }

    #[test]
    fn an_override_passes_whatever_is_missing_but_needs_a_reason() {
        let gate = at_gate(GatePolicy::new(3, false).unwrap());
        let blocked = GateFacts {
            escalations: vec![EscalationId("esc-1".into())],
            asking: vec![],
        };
        let mut override_ = TransitionContext {
            override_gate: true,
            ..by("spec-agent", None)
        };
        assert_eq!(
            gate.decide(HumanApproved, override_.clone(), &blocked),
            Err(TransitionError::ReasonRequired)
        );
        override_.reason = Some(Reason::parse("release blocker, approved by the CTO").unwrap());
        let passed = gate
            .decide(HumanApproved, override_.clone(), &blocked)
            .unwrap();
        assert_eq!((passed.to, passed.override_gate), (Phase2, true));
        // A principal's roles are read: an admin's override passes, anyone else's is refused
        // (before its reason is looked at).
        override_.roles = Some(BTreeSet::from([Role::Admin]));
        assert!(
            gate.decide(HumanApproved, override_.clone(), &blocked)
                .is_ok()
        );
        override_.roles = Some(BTreeSet::from([Role::Reviewer, Role::Agent]));
        assert_eq!(
            gate.decide(HumanApproved, override_.clone(), &blocked),
            Err(TransitionError::OverrideNeedsAdmin)
        );
        override_.reason = None;
        assert_eq!(
            gate.decide(HumanApproved, override_, &blocked),
            Err(TransitionError::OverrideNeedsAdmin)
        );
    }

    #[test]
    fn replay_refuses_a_history_where_the_author_approved() {
        let (mut workflow, first) = Workflow::start(
            FeatureId::parse("f-1").unwrap(),
            Description::parse("a feature").unwrap(),
            Metadata::default(),
            ctx(t0()),
        );
        let done = workflow.apply(AgentComplete, by("bob", None)).unwrap();
        workflow.record(&done);
        let mut approved = workflow.apply(HumanApproved, by("alice", None)).unwrap();
        let replay = |history: &[Transition]| {
            Workflow::replay(
                FeatureId::parse("f-1").unwrap(),
                Description::parse("a feature").unwrap(),
                Metadata::default(),
                history,
            )
        };
        assert!(replay(&[first.clone(), done.clone(), approved.clone()]).is_ok());
        // A forged entry: the author approving their own work.
        approved.actor = Some(Actor::parse("bob").unwrap());
        assert!(matches!(
            replay(&[first, done, approved]),
            Err(ReplayError::Inconsistent { seq: 3, .. })
        ));
    }

    /// A field written through [`rfc3339`] or [`rfc3339_option`], beside chrono's own.
    #[derive(Serialize)]
    struct Written {
        #[serde(serialize_with = "rfc3339")]
        at: Timestamp,
        #[serde(serialize_with = "rfc3339_option")]
        maybe: Option<Timestamp>,
    }

    #[derive(Serialize)]
    struct Chrono {
        at: Timestamp,
        maybe: Option<Timestamp>,
    }

    proptest::proptest! {
        #[test]
        fn timestamps_are_written_as_chrono_writes_them(
            // Year 0 to 9999 (RFC 3339's range) and a little past it either way.
            seconds in -62_200_000_000_i64..253_500_000_000,
            // Whole seconds, milliseconds, microseconds (what the clock keeps), nanoseconds:
            // 0, 3, 6 and 9 fraction digits.
            nanos in proptest::prop_oneof![
                proptest::strategy::Just(0_u32),
                proptest::strategy::Strategy::prop_map(1..1_000_u32, |ms| ms * 1_000_000),
                proptest::strategy::Strategy::prop_map(1..1_000_000_u32, |us| us * 1_000),
                1..1_000_000_000_u32,
            ],
            some in proptest::bool::ANY,
        ) {
            let at = chrono::DateTime::from_timestamp(seconds, nanos).unwrap();
            let maybe = some.then_some(at);
            proptest::prop_assert_eq!(
                serde_json::to_string(&Written { at, maybe }).unwrap(),
                serde_json::to_string(&Chrono { at, maybe }).unwrap()
            );
        }
    }
}
