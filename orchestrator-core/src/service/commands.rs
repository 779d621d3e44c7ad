//! What callers ask the orchestrator, as validated commands built from wire requests.

use std::collections::BTreeSet;

use crate::api::{AdvanceRequest, ConsultRequest, RespondRequest, StartWorkflowRequest};
use crate::consultation::{Consult, parse_context};
use crate::gate::{GateChoice, GatePolicy};
use crate::hub::HumanAction;
use crate::principal::{Action, ActorKind, Principal, Role};
use crate::state::Trigger;
use crate::values::{
    Actor, Description, FeatureId, Metadata, Question, Reason, Topic, ValidationError,
    parse_optional,
};
use crate::workflow::{Version, Workflow};

/// Start a feature's workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartWorkflow {
    /// The feature.
    pub feature_id: FeatureId,
    /// What it is.
    pub description: Description,
    /// The caller's data.
    pub metadata: Metadata,
    /// When the feature exists already, return it unchanged instead of refusing.
    pub use_existing: bool,
    /// Its gate policy as asked; each part not named takes the orchestrator's default.
    pub gate: GateChoice,
    /// Who starts it: the actor of history entry 1 (none for a request without principals,
    /// whose start body names nobody).
    pub actor: Option<Actor>,
    /// What kind of actor starts it, when known.
    pub actor_kind: Option<ActorKind>,
}

impl StartWorkflow {
    /// Start `feature_id` with nothing else said: no metadata, the orchestrator's default gate
    /// policy, refused if the feature exists, nobody named as its starter. Set the other
    /// fields with struct update syntax (`StartWorkflow { gate, ..StartWorkflow::new(id, d) }`).
    pub fn new(feature_id: FeatureId, description: Description) -> Self {
        StartWorkflow {
            feature_id,
            description,
            metadata: Metadata::default(),
            use_existing: false,
            gate: GateChoice::default(),
            actor: None,
            actor_kind: None,
        }
    }

    /// The same start made by `principal`: it is the actor of the first history entry, of its
    /// kind.
    pub fn by(mut self, principal: &Principal) -> Self {
        self.actor = Some(principal.name.clone());
        self.actor_kind = Some(principal.kind);
        self
    }

    /// This start held to the rules of a request parsed now: a command built by hand could
    /// name a blank or padded starter, put the orchestrator's own `system` kind on the record,
    /// or carry metadata nested deeper than a store reads back.
    pub(crate) fn checked(mut self) -> Result<Self, ValidationError> {
        self.actor = name_given(self.actor, "actor")?;
        self.actor_kind = kind_given(self.actor_kind)?;
        self.metadata.check_given()?;
        Ok(self)
    }
}

impl TryFrom<StartWorkflowRequest> for StartWorkflow {
    type Error = ValidationError;

    fn try_from(request: StartWorkflowRequest) -> Result<Self, ValidationError> {
        // Checked in this order: the first bad field is the one the caller hears of.
        let feature_id = FeatureId::parse(request.feature_id)?;
        let description = Description::parse(request.description)?;
        Ok(StartWorkflow {
            metadata: Metadata::parse_given(request.metadata.unwrap_or_default())?,
            use_existing: request.use_existing.unwrap_or(false),
            gate: request
                .gate
                .map(parse_gate)
                .transpose()?
                .unwrap_or_default(),
            ..StartWorkflow::new(feature_id, description)
        })
    }
}

/// A gate policy request, each part checked on its own (the mix is completed over the
/// orchestrator's defaults when the workflow starts).
fn parse_gate(gate: crate::api::GateRequest) -> Result<GateChoice, ValidationError> {
    let choice = GateChoice {
        // Out of a u8's range is out of 1-10 too: let the policy say so.
        required_approvals: gate
            .required_approvals
            .map(|n| u8::try_from(n).unwrap_or(0)),
        allow_self_approval: gate.allow_self_approval,
        due_in_seconds: gate.due_in_seconds.map(|n| u32::try_from(n).unwrap_or(0)),
        on_expiry: gate.on_expiry.as_deref().map(str::parse).transpose()?,
    };
    // Every part asked for must be valid on its own.
    choice.over(GatePolicy::default())?;
    Ok(choice)
}

/// Move a workflow by one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// What happened.
    pub trigger: Trigger,
    /// Who says so.
    pub actor: Option<Actor>,
    /// What kind of actor says so, when known (an agent may not approve or reject).
    pub actor_kind: Option<ActorKind>,
    /// Whom the actor acts for, when somebody else.
    pub on_behalf_of: Option<Actor>,
    /// An admin's `human_approved` that passes the gate whatever is missing (needs a reason).
    pub override_gate: bool,
    /// The roles of the principal that makes it ([`Advance::by`]); `None`, every role, as in
    /// open mode. The gate's rules read them for an override, which is an admin's.
    pub roles: Option<BTreeSet<Role>>,
    /// Why.
    pub reason: Option<Reason>,
    /// Extra data kept with the history entry.
    pub metadata: Metadata,
    /// Refuse with a version conflict unless the workflow is at this version.
    pub expected_version: Option<Version>,
}

impl Advance {
    /// Advance by `trigger` with nothing else said.
    pub fn new(trigger: Trigger) -> Self {
        Advance {
            trigger,
            actor: None,
            actor_kind: None,
            on_behalf_of: None,
            override_gate: false,
            roles: None,
            reason: None,
            metadata: Metadata::default(),
            expected_version: None,
        }
    }

    /// What this advance needs the right to do: its trigger, and for an override
    /// [`Action::OverrideGate`] (an admin's). Roles are the caller's to check before the
    /// advance (`principal.may(action)` for each), as the HTTP server does; of them the
    /// transition rules check only the override's, and only for an advance made
    /// [`by`](Advance::by) a principal.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = vec![Action::Trigger(self.trigger)];
        if self.override_gate && self.trigger == Trigger::HumanApproved {
            actions.push(Action::OverrideGate);
        }
        actions
    }

    /// The same advance made by `principal`: it is the actor, of its kind, and an `actor` the
    /// caller named that is not the principal is recorded as whom it acts for. An approval or
    /// rejection that says it is an agent's stays an agent's, and is refused: agents never
    /// decide, whoever's credential carries the request (a shared token's board session is a
    /// person only by its sign-in's word). Carries the principal's roles, of which the core
    /// checks only an override's (an admin's); the caller checks the rest: see
    /// [`Advance::actions`].
    pub fn by(mut self, principal: &Principal) -> Self {
        self.on_behalf_of = self
            .actor
            .take()
            .filter(|named| !named.same_person(&principal.name));
        self.actor = Some(principal.name.clone());
        self.roles = Some(principal.roles.clone());
        let decides = self.trigger.is_human_decision();
        self.actor_kind = Some(kind_by(principal, self.actor_kind, decides));
        self
    }

    /// The same advance, only if the workflow is at `version`.
    pub fn expecting(mut self, version: Version) -> Self {
        self.expected_version = Some(version);
        self
    }
}

impl Advance {
    /// This advance held to the rules of a request parsed now: its names to the rule of a
    /// name given now ([`Actor::parse_name`]) — a command built by hand could name a blank
    /// actor, or `"alice "`, and count at the gate as another person than alice, a second
    /// approval of hers or an approval of her own work —, its kind not the orchestrator's own
    /// `system` (an approval on the record as the system's), and its metadata no deeper than
    /// a store reads back.
    pub(crate) fn checked(mut self) -> Result<Self, ValidationError> {
        self.actor = name_given(self.actor, "actor")?;
        self.on_behalf_of = name_given(self.on_behalf_of, "on_behalf_of")?;
        self.actor_kind = kind_given(self.actor_kind)?;
        self.metadata.check_given()?;
        // Acting for oneself is acting (`"alice "` by alice's principal: alice, twice).
        if let (Some(actor), Some(whom)) = (&self.actor, &self.on_behalf_of)
            && actor.same_person(whom)
        {
            self.on_behalf_of = None;
        }
        Ok(self)
    }
}

impl TryFrom<AdvanceRequest> for Advance {
    type Error = ValidationError;

    fn try_from(request: AdvanceRequest) -> Result<Self, ValidationError> {
        let trigger = request
            .trigger
            .parse::<Trigger>()
            .map_err(|e| ValidationError::new("trigger", e.to_string()))?;
        Ok(Advance {
            trigger,
            actor: parse_optional(request.actor, Actor::parse_name)?,
            actor_kind: parse_optional(request.actor_kind, requested_kind)?,
            on_behalf_of: None,
            // An override is of an approval only; with any other trigger it means nothing.
            override_gate: request.override_gate.unwrap_or(false)
                && trigger == Trigger::HumanApproved,
            roles: None,
            reason: parse_optional(request.reason, Reason::parse)?,
            metadata: Metadata::parse_given(request.metadata.unwrap_or_default())?,
            expected_version: request.expected_version,
        })
    }
}

impl TryFrom<ConsultRequest> for Consult {
    type Error = ValidationError;

    fn try_from(request: ConsultRequest) -> Result<Self, ValidationError> {
        Ok(Consult {
            topic: Topic::parse(request.topic)?,
            question: Question::parse(request.question)?,
            context: parse_context(request.context)?,
        })
    }
}

/// What `start` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new workflow was created.
    Created(Workflow),
    /// The feature existed and `use_existing` was set: it is returned unchanged.
    Existing(Workflow),
}

impl Started {
    /// The workflow, new or existing.
    pub fn workflow(&self) -> &Workflow {
        match self {
            Started::Created(w) | Started::Existing(w) => w,
        }
    }

    /// The workflow, new or existing.
    pub fn into_workflow(self) -> Workflow {
        match self {
            Started::Created(w) | Started::Existing(w) => w,
        }
    }
}

/// A human reviewer's answer to a consultation's escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    /// Confirm the expert's answer, correct it, or add context.
    pub action: HumanAction,
    /// The correction or the context: required for `correct` and `add_context`.
    pub response: Option<String>,
    /// Who answers; sent to the hub as the responder.
    pub actor: Option<Actor>,
    /// What kind of actor answers, when known: only a human may.
    pub actor_kind: Option<ActorKind>,
}

impl Respond {
    /// The same answer given by `principal`: it is the responder, of its kind, whatever
    /// name the caller gave. An answer that says it is an agent's stays an agent's, and is
    /// refused, as [`Advance::by`]'s decisions are.
    pub fn by(mut self, principal: &Principal) -> Self {
        self.actor = Some(principal.name.clone());
        self.actor_kind = Some(kind_by(principal, self.actor_kind, true));
        self
    }

    /// This answer held to the rules of a request parsed now, as [`Advance`]'s are: its
    /// responder's name and kind (an answer built by hand could name a blank or padded one,
    /// or the `system` kind), and its response's text rule and presence.
    pub(crate) fn checked(mut self) -> Result<Self, ValidationError> {
        self.actor = name_given(self.actor, "actor")?;
        self.actor_kind = kind_given(self.actor_kind)?;
        self.response = response_given(self.action, self.response)?;
        Ok(self)
    }
}

/// The kind a command made by `principal` is recorded with: the principal's, but for a
/// decision (an approval, a rejection, an escalation's answer) whose request `said` it was an
/// agent's, which stays one and is refused: agents never decide, whoever's credential carries
/// the request.
fn kind_by(principal: &Principal, said: Option<ActorKind>, decides: bool) -> ActorKind {
    if decides && said == Some(ActorKind::Agent) {
        ActorKind::Agent
    } else {
        principal.kind
    }
}

/// `name` held to [`Actor::parse_name`]'s rule, a refusal naming `field`: a command's fields
/// may be set by hand, past the parsing a request's go through.
fn name_given(name: Option<Actor>, field: &'static str) -> Result<Option<Actor>, ValidationError> {
    name.map(|n| Actor::parse_name(n.as_str()))
        .transpose()
        .map_err(|e| ValidationError { field, ..e })
}

impl TryFrom<RespondRequest> for Respond {
    type Error = ValidationError;

    fn try_from(request: RespondRequest) -> Result<Self, ValidationError> {
        let action = match request.action.as_str() {
            "confirm" => HumanAction::Confirm,
            "correct" => HumanAction::Correct,
            "add_context" => HumanAction::AddContext,
            other => {
                return Err(ValidationError::new(
                    "action",
                    format!(
                        "unknown action '{}' (expected one of confirm, correct, add_context)",
                        crate::values::shown(other)
                    ),
                ));
            }
        };
        let response = response_given(action, request.response)?;
        Ok(Respond {
            action,
            response,
            actor: parse_optional(request.actor, Actor::parse_name)?,
            actor_kind: parse_optional(request.actor_kind, requested_kind)?,
        })
    }
}

/// An answer's response held to its rules: not blank, the context's text rule, and required
/// for `correct` and `add_context`.
fn response_given(
    action: HumanAction,
    response: Option<String>,
) -> Result<Option<String>, ValidationError> {
    match response {
        Some(text) if crate::values::is_blank(&text) => {
            Err(ValidationError::new("response", "must not be blank"))
        }
        Some(text) => {
            crate::values::check_text(&text, crate::consultation::CONTEXT_MAX_CHARS)
                .map_err(|rule| ValidationError::new("response", rule))?;
            Ok(Some(text))
        }
        None if action != HumanAction::Confirm => Err(ValidationError::new(
            "response",
            "is required for correct and add_context",
        )),
        None => Ok(None),
    }
}

/// The `actor_kind` a request names: `human` or `agent`. `system` is the orchestrator's own
/// (a gate's expiry): no caller may put it on the record.
fn requested_kind(kind: String) -> Result<ActorKind, ValidationError> {
    // Said alike for an unknown kind and for `system`: a request may name only the two.
    match kind.parse::<ActorKind>() {
        Ok(ActorKind::System) | Err(_) => Err(kind_refused()),
        Ok(kind) => Ok(kind),
    }
}

/// `kind` held to the rule of a kind given now: not `system`, the orchestrator's own.
fn kind_given(kind: Option<ActorKind>) -> Result<Option<ActorKind>, ValidationError> {
    match kind {
        Some(ActorKind::System) => Err(kind_refused()),
        kind => Ok(kind),
    }
}

/// The refusal of a kind a caller may not give.
fn kind_refused() -> ValidationError {
    ValidationError::new(
        "actor_kind",
        "must be human or agent (system is the orchestrator's own)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            name: Actor::parse("alice").unwrap(),
            kind: ActorKind::Human,
            roles: BTreeSet::from([Role::Reviewer, Role::Agent]),
        }
    }

    /// A person's principal makes its decisions a person's, unless the request said it was
    /// an agent's: then it stays one (and is refused), whoever's credential carried it.
    #[test]
    fn a_principal_keeps_what_a_decision_says_of_an_agent() {
        let said = |trigger, kind| {
            let mut advance = Advance::new(trigger);
            advance.actor_kind = kind;
            advance.by(&alice()).actor_kind
        };
        let (human, agent) = (Some(ActorKind::Human), Some(ActorKind::Agent));
        assert_eq!(said(Trigger::HumanApproved, agent), agent);
        assert_eq!(said(Trigger::HumanRejected, agent), agent);
        assert_eq!(said(Trigger::HumanApproved, None), human);
        // Work that is not a decision is recorded as the principal's kind.
        assert_eq!(said(Trigger::AgentComplete, agent), human);

        let answer = |kind| {
            Respond {
                action: HumanAction::Confirm,
                response: None,
                actor: None,
                actor_kind: kind,
            }
            .by(&alice())
            .actor_kind
        };
        assert_eq!(answer(agent), agent);
        assert_eq!(answer(None), human);
    }
}
