//! The `Orchestrator` service: the one place where the rules meet the repository.
//!
//! Each method reads the clock once, loads what it needs, lets [`Workflow`] judge, and
//! commits through [`WorkflowRepository`]. It knows nothing of HTTP: callers turn
//! [`Error`] into their own answers (the server's mapping is in its `http::error`).

use std::sync::Arc;

use chrono::SubsecRound;

use async_trait::async_trait;

use crate::api::{AdvanceRequest, ConsultRequest, StartWorkflowRequest};
use crate::consultation::{Consult, Consultation, ConsultationId, Question, parse_context};
use crate::hub::{
    AgentHub, Escalation, EscalationId, HubError, HubHealth, HubQuestion, HubSessionId, Topic,
};
use crate::repository::{ListQuery, Page, RepositoryError, StateCounts, WorkflowRepository};
use crate::state::{Trigger, WorkflowState};
use crate::values::{
    Actor, Description, FeatureId, Metadata, Reason, ValidationError, parse_optional,
};
use crate::workflow::{
    Timestamp, Transition, TransitionContext, TransitionError, Version, Workflow,
};

/// A source of the current time, so tests can fix it.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock, truncated to microseconds (what storage keeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now().trunc_subsecs(6)
    }
}

/// A clock that stands still until told to move; for tests and examples.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: Timestamp) -> Self {
        ManualClock(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why an orchestrator call failed. Each variant is one answer a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input breaks a rule (HTTP 400 `VALIDATION_ERROR`).
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// No such workflow (HTTP 404 `WORKFLOW_NOT_FOUND`).
    #[error("workflow '{0}' not found")]
    NotFound(FeatureId),
    /// The feature id is taken (HTTP 409 `WORKFLOW_ALREADY_EXISTS`).
    #[error("workflow '{0}' already exists")]
    AlreadyExists(FeatureId),
    /// The trigger is not allowed now (HTTP 409 `INVALID_TRANSITION`).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The caller's expected version is not the current one, or a concurrent change won
    /// (HTTP 409 `VERSION_CONFLICT`).
    #[error("version conflict: expected {expected}, current {actual}")]
    VersionConflict {
        /// The version the caller expected.
        expected: Version,
        /// The version stored now.
        actual: Version,
    },
    /// `human_approved` while consultations still wait for a human (HTTP 409 `GATE_BLOCKED`).
    #[error("the gate is blocked by {} consultation(s) awaiting a human", escalations.len())]
    GateBlocked {
        /// The escalations a human must act on.
        escalations: Vec<EscalationId>,
    },
    /// A consultation for a workflow in IDLE or DONE (HTTP 409 `WORKFLOW_NOT_ACTIVE`).
    #[error("workflow '{feature_id}' is {state}; consultations need PHASE_1, GATE_1 or PHASE_2")]
    NotActive {
        /// The workflow.
        feature_id: FeatureId,
        /// Its state.
        state: WorkflowState,
    },
    /// The Agent Hub failed (HTTP 400 for an unknown topic, 502 `AGENT_HUB_ERROR`, or
    /// 503 `AGENT_HUB_UNAVAILABLE`).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Storage failed (HTTP 503 `DATABASE_UNAVAILABLE` or 500 `INTERNAL`).
    #[error(transparent)]
    Storage(RepositoryError),
}

impl From<RepositoryError> for Error {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound(id) => Error::NotFound(id),
            RepositoryError::AlreadyExists(id) => Error::AlreadyExists(id),
            RepositoryError::VersionConflict { expected, actual } => {
                Error::VersionConflict { expected, actual }
            }
            other => Error::Storage(other),
        }
    }
}

/// `Result` with the orchestrator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

impl TryFrom<StartWorkflowRequest> for StartWorkflow {
    type Error = ValidationError;

    fn try_from(request: StartWorkflowRequest) -> Result<Self, ValidationError> {
        Ok(StartWorkflow {
            feature_id: FeatureId::parse(request.feature_id)?,
            description: Description::parse(request.description)?,
            metadata: Metadata::parse(request.metadata.unwrap_or_default())?,
            use_existing: request.use_existing.unwrap_or(false),
        })
    }
}

/// Move a workflow by one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// What happened.
    pub trigger: Trigger,
    /// Who says so.
    pub actor: Option<Actor>,
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
            reason: None,
            metadata: Metadata::default(),
            expected_version: None,
        }
    }

    /// The same advance, only if the workflow is at `version`.
    pub fn expecting(mut self, version: Version) -> Self {
        self.expected_version = Some(version);
        self
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
            actor: parse_optional(request.actor, Actor::parse)?,
            reason: parse_optional(request.reason, Reason::parse)?,
            metadata: Metadata::parse(request.metadata.unwrap_or_default())?,
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

/// The orchestrator: workflows kept by a repository, judged by the rules, timed by a clock,
/// advised by an Agent Hub.
#[derive(Clone)]
pub struct Orchestrator {
    repository: Arc<dyn WorkflowRepository>,
    hub: Arc<dyn AgentHub>,
    clock: Arc<dyn Clock>,
}

/// The hub of an orchestrator built without one: every call is unavailable.
struct NoAgentHub;

#[async_trait]
impl AgentHub for NoAgentHub {
    async fn create_session(&self, _: &FeatureId) -> Result<HubSessionId, HubError> {
        Err(Self::unavailable())
    }
    async fn ask(&self, _: &HubQuestion) -> Result<crate::hub::HubAnswer, HubError> {
        Err(Self::unavailable())
    }
    async fn escalation(&self, _: &EscalationId) -> Result<Escalation, HubError> {
        Err(Self::unavailable())
    }
    async fn health(&self) -> Result<HubHealth, HubError> {
        Err(Self::unavailable())
    }
}

impl NoAgentHub {
    fn unavailable() -> HubError {
        HubError::Unavailable("no agent hub is configured".to_owned())
    }
}

impl Orchestrator {
    /// An orchestrator over `repository`, on the system clock, with no Agent Hub (every
    /// consultation answers `AGENT_HUB_UNAVAILABLE` until [`Orchestrator::with_hub`]).
    pub fn new(repository: Arc<dyn WorkflowRepository>) -> Self {
        Orchestrator {
            repository,
            hub: Arc::new(NoAgentHub),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same orchestrator on another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same orchestrator consulting `hub`.
    pub fn with_hub(mut self, hub: Arc<dyn AgentHub>) -> Self {
        self.hub = hub;
        self
    }

    /// The Agent Hub, for health checks.
    pub fn hub(&self) -> &Arc<dyn AgentHub> {
        &self.hub
    }

    /// The current time on the orchestrator's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The repository, for health checks.
    pub fn repository(&self) -> &Arc<dyn WorkflowRepository> {
        &self.repository
    }

    /// Creates a workflow and applies `start` (history entry 1 is IDLE → PHASE_1). An existing
    /// feature id is refused, or returned unchanged with `use_existing`.
    pub async fn start(&self, command: StartWorkflow) -> Result<Started> {
        let (workflow, first) = Workflow::start(
            command.feature_id,
            command.description,
            command.metadata.clone(),
            TransitionContext {
                metadata: command.metadata,
                ..TransitionContext::at(self.clock.now())
            },
        );
        match self.repository.create(&workflow, &first).await {
            Ok(()) => Ok(Started::Created(workflow)),
            Err(RepositoryError::AlreadyExists(id)) if command.use_existing => {
                Ok(Started::Existing(self.repository.get(&id).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The workflow of a feature.
    pub async fn get(&self, feature_id: &FeatureId) -> Result<Workflow> {
        Ok(self.repository.get(feature_id).await?)
    }

    /// Applies one trigger atomically: judged against the state read, committed only if
    /// nobody changed the workflow in between. Returns the workflow after it.
    pub async fn advance(&self, feature_id: &FeatureId, command: Advance) -> Result<Workflow> {
        let current = self.repository.get(feature_id).await?;
        if let Some(expected) = command.expected_version
            && expected != current.version
        {
            return Err(Error::VersionConflict {
                expected,
                actual: current.version,
            });
        }
        let ctx = TransitionContext {
            actor: command.actor,
            reason: command.reason,
            metadata: command.metadata,
            at: self.clock.now(),
        };
        let transition = current.apply(command.trigger, ctx)?;
        if transition.to == WorkflowState::Phase2 {
            self.guard_gate(feature_id).await?;
        }
        let next = Self::recorded(&current, &transition);
        self.repository
            .commit(current.version, &next, &transition)
            .await?;
        Ok(next)
    }

    /// The gate opens only when no consultation waits for a human: pending ones are refreshed
    /// from the hub first, and any still pending refuse the approval.
    async fn guard_gate(&self, feature_id: &FeatureId) -> Result<()> {
        let pending: Vec<Consultation> = self
            .repository
            .consultations(feature_id)
            .await?
            .into_iter()
            .filter(Consultation::is_pending)
            .collect();
        let mut blocking = Vec::new();
        for mut consultation in pending {
            self.refresh(&mut consultation).await?;
            if consultation.is_pending() {
                blocking.extend(consultation.escalation_id);
            }
        }
        if blocking.is_empty() {
            Ok(())
        } else {
            Err(Error::GateBlocked {
                escalations: blocking,
            })
        }
    }

    /// Asks the hub about a pending consultation's escalation and stores what changed.
    async fn refresh(&self, consultation: &mut Consultation) -> Result<()> {
        let Some(id) = consultation.escalation_id.clone() else {
            return Ok(());
        };
        let escalation = self.hub.escalation(&id).await?;
        if consultation.refresh(&escalation, self.clock.now()) {
            self.repository.update_consultation(consultation).await?;
        }
        Ok(())
    }

    /// Asks the Agent Hub's experts a question for a workflow in PHASE_1, GATE_1 or PHASE_2,
    /// within the workflow's hub session, and stores the answer. The workflow itself does not
    /// change; a failed ask stores nothing.
    pub async fn consult(&self, feature_id: &FeatureId, consult: Consult) -> Result<Consultation> {
        let workflow = self.repository.get(feature_id).await?;
        if !workflow.state.is_active() {
            return Err(Error::NotActive {
                feature_id: feature_id.clone(),
                state: workflow.state,
            });
        }
        let session = match self.repository.hub_session(feature_id).await? {
            Some(session) => session,
            None => self.open_session(feature_id, None).await?,
        };
        let mut question = HubQuestion {
            topic: consult.topic.clone(),
            question: consult.question.as_str().to_owned(),
            feature_id: feature_id.clone(),
            context: consult.context.clone(),
            session_id: session,
        };
        let answer = match self.hub.ask(&question).await {
            Err(HubError::SessionUnavailable(_) | HubError::SessionNotFound(_)) => {
                // The session expired or the hub forgot it: open a new one and ask once more.
                question.session_id = self
                    .open_session(feature_id, Some(&question.session_id))
                    .await?;
                self.hub.ask(&question).await?
            }
            other => other?,
        };
        let consultation = Consultation::answered(
            ConsultationId::new(),
            feature_id.clone(),
            workflow.state,
            consult,
            answer,
            self.clock.now(),
        );
        self.repository.add_consultation(&consultation).await?;
        Ok(consultation)
    }

    /// Opens a hub session and stores it in place of `replacing`; if another request stored
    /// one first, that one is used.
    async fn open_session(
        &self,
        feature_id: &FeatureId,
        replacing: Option<&HubSessionId>,
    ) -> Result<HubSessionId> {
        let new = self.hub.create_session(feature_id).await?;
        Ok(self
            .repository
            .swap_hub_session(feature_id, replacing, &new)
            .await?)
    }

    /// A workflow's consultations, oldest first. Pending ones are refreshed from the hub
    /// first; if the hub cannot be reached they are returned as stored.
    pub async fn consultations(&self, feature_id: &FeatureId) -> Result<Vec<Consultation>> {
        // Not-found is the workflow's, not the consultations'.
        self.repository.get(feature_id).await?;
        let mut consultations = self.repository.consultations(feature_id).await?;
        for consultation in consultations.iter_mut().filter(|c| c.is_pending()) {
            match self.refresh(consultation).await {
                Ok(()) => {}
                // The stored state is still true: answer with it, and stop asking a hub that
                // fails rather than wait for its timeout once per consultation.
                Err(Error::Hub(_)) => break,
                Err(other) => return Err(other),
            }
        }
        Ok(consultations)
    }

    fn recorded(current: &Workflow, transition: &Transition) -> Workflow {
        let mut next = current.clone();
        next.record(transition);
        next
    }

    /// One page of workflows ordered by feature id.
    pub async fn list(&self, query: &ListQuery) -> Result<Page> {
        let limit = query.limit.get();
        // One more than asked tells whether another page follows.
        let mut items = self
            .repository
            .list(query.state, query.after.as_ref(), limit + 1)
            .await?;
        let next_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|w| w.feature_id.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// How many workflows are in each state.
    pub async fn summary(&self) -> Result<StateCounts> {
        Ok(self.repository.summary().await?)
    }

    /// A workflow's transitions, oldest first.
    pub async fn history(&self, feature_id: &FeatureId) -> Result<Vec<Transition>> {
        Ok(self.repository.history(feature_id).await?)
    }
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}
