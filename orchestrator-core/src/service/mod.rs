//! The `Orchestrator` service: the one place where the rules meet the repository.
//!
//! Each method reads the clock once, loads what it needs, lets [`crate::Workflow`] judge, and
//! commits through [`WorkflowRepository`]. It knows nothing of HTTP: callers turn [`Error`]
//! into their own answers (the server's mapping is in its `http::error`).
//!
//! - `commands`: what callers ask (`StartWorkflow`, `Advance`, `Respond`), parsed from wire
//!   requests.
//! - `workflows`: starting, reading, advancing and listing workflows.
//! - `gates`: gate deadlines — noting a stay past its `due_at` and applying its policy.
//! - `consultations`: asking the Agent Hub, and the gate's wait for humans.
//! - `events`: reading the event log, and its retention.
//! - `clock`: the `Clock` seam, and `ManualClock` for tests (feature `test-util`).

mod clock;
mod commands;
mod consultations;
mod events;
mod gates;
mod workflows;

use std::sync::Arc;

use async_trait::async_trait;

use crate::gate::GatePolicy;
use crate::hub::{
    AgentHub, Escalation, EscalationId, HubError, HubHealth, HubQuestion, HubSessionId,
};
use crate::repository::{RepositoryError, WorkflowRepository};
use crate::state::WorkflowState;
use crate::values::{FeatureId, ValidationError};
use crate::workflow::{Timestamp, TransitionError, Version};

#[cfg(feature = "test-util")]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use commands::{Advance, Respond, StartWorkflow, Started};
pub use events::EventPage;
pub use gates::Expired;

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
    /// The trigger is not allowed now (HTTP 409 `INVALID_TRANSITION`). A blocked gate converts
    /// to [`Error::GateBlocked`] instead (with `?` as with [`Error::from_transition`]).
    #[error(transparent)]
    Transition(TransitionError),
    /// The caller's expected version is not the current one, or a concurrent change won
    /// (HTTP 409 `VERSION_CONFLICT`).
    #[error("version conflict: expected {expected}, current {actual}")]
    VersionConflict {
        /// The version the caller expected.
        expected: Version,
        /// The version stored now.
        actual: Version,
    },
    /// `human_approved` while consultations still wait for a human or for the hub (HTTP 409
    /// `GATE_BLOCKED`).
    #[error("{}", crate::workflow::gate_blocked(escalations.len(), asking.len()))]
    GateBlocked {
        /// The escalations a human must act on.
        escalations: Vec<EscalationId>,
        /// The consultations the hub has not answered yet.
        asking: Vec<crate::consultation::ConsultationId>,
    },
    /// A consultation for a workflow in IDLE or DONE (HTTP 409 `WORKFLOW_NOT_ACTIVE`).
    #[error("workflow '{feature_id}' is {state}; consultations need PHASE_1, GATE_1 or PHASE_2")]
    NotActive {
        /// The workflow.
        feature_id: FeatureId,
        /// Its state.
        state: WorkflowState,
    },
    /// No consultation with this id belongs to the workflow (HTTP 404 `CONSULTATION_NOT_FOUND`).
    #[error("workflow '{feature_id}' has no consultation {id}")]
    ConsultationNotFound {
        /// The workflow.
        feature_id: FeatureId,
        /// The consultation asked for.
        id: crate::consultation::ConsultationId,
    },
    /// The consultation waits for no human, so there is nothing to answer (HTTP 409
    /// `CONSULTATION_NOT_PENDING`).
    #[error("consultation {id} is {}, not waiting for a human", .status.as_str())]
    NotPending {
        /// The consultation.
        id: crate::consultation::ConsultationId,
        /// Its status.
        status: crate::consultation::ConsultationStatus,
    },
    /// An agent tried to answer an escalation: only a human does (HTTP 403 `FORBIDDEN`).
    #[error("only a human answers an escalation")]
    AgentMayNotRespond,
    /// A human answered the escalation already, outside the orchestrator (HTTP 409
    /// `ALREADY_RESOLVED`); the consultation now shows that answer.
    #[error("consultation {id}'s escalation was answered already")]
    AlreadyResolved {
        /// The consultation.
        id: crate::consultation::ConsultationId,
    },
    /// The Agent Hub failed (HTTP 400 for an unknown topic, 502 `AGENT_HUB_ERROR`, or
    /// 503 `AGENT_HUB_UNAVAILABLE`).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Events after the reader's id were deleted by retention (HTTP 410 `EVENTS_EXPIRED`).
    #[error(
        "the events after {after} up to {purged_through} were deleted (retention); resume after {purged_through} (`after` or `Last-Event-ID`) to skip them"
    )]
    EventsExpired {
        /// The id the reader asked to resume after.
        after: u64,
        /// Every event up to this id was deleted.
        purged_through: u64,
    },
    /// The reader's id is past the newest event: the log never had it, so the store was
    /// restored from an older copy or replaced, and the log's ids go on from `last_id` (HTTP
    /// 409 `EVENTS_CURSOR_AHEAD`). Resuming there would skip the new events up to the old id.
    #[error(
        "the event log ends at {last_id}, before {after}: it has no such id (a mistyped id, or a store restored from an older copy or replaced); start again after {last_id}, or from the start"
    )]
    EventsAhead {
        /// The id the reader asked to resume after.
        after: u64,
        /// The newest event's id.
        last_id: u64,
    },
    /// A decision dated after its gate's deadline, whose `gate.overdue` note is not written
    /// yet: a decision after the deadline comes after the note and the policy's change. The
    /// orchestrator's judge refuses so inside the store's write; the orchestrator then notes
    /// the deadline and judges the decision again, so a caller sees this only when the
    /// workflow kept changing meanwhile (HTTP 409 `VERSION_CONFLICT`).
    #[error(
        "workflow '{feature_id}' passed its gate's deadline ({due_at}) meanwhile; read it again"
    )]
    DeadlineFirst {
        /// The workflow.
        feature_id: FeatureId,
        /// When its stay at the gate was due.
        due_at: Timestamp,
    },
    /// Storage failed (HTTP 503 `DATABASE_UNAVAILABLE` or 500 `INTERNAL`), or refused a write
    /// whose idempotency key a retry took over ([`RepositoryError::KeyTakenOver`], HTTP 409
    /// `IDEMPOTENCY_KEY_IN_USE`).
    #[error(transparent)]
    Storage(RepositoryError),
}

impl From<TransitionError> for Error {
    /// [`Error::from_transition`]: `?` converts a blocked gate as the service answers it.
    fn from(error: TransitionError) -> Self {
        Error::from_transition(error)
    }
}

impl Error {
    /// A refusal of the rules, as the service answers it: a blocked gate is its own answer.
    pub fn from_transition(error: TransitionError) -> Self {
        match error {
            TransitionError::GateBlocked {
                escalations,
                asking,
            } => Error::GateBlocked {
                escalations,
                asking,
            },
            other => Error::Transition(other),
        }
    }
}

impl From<RepositoryError> for Error {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound(id) => Error::NotFound(id),
            RepositoryError::AlreadyExists(id) => Error::AlreadyExists(id),
            RepositoryError::NotActive { feature_id, state } => {
                Error::NotActive { feature_id, state }
            }
            RepositoryError::VersionConflict { expected, actual } => {
                Error::VersionConflict { expected, actual }
            }
            // Only an approval's commit is refused so, and the service judges it again, which
            // names what blocks; this is the answer when no judgement is left to make.
            RepositoryError::GateBlocked(_) => Error::GateBlocked {
                escalations: Vec::new(),
                asking: Vec::new(),
            },
            other => Error::Storage(other),
        }
    }
}

/// `Result` with the orchestrator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Makes the answer to a request with an idempotency key from what its change produced, so
/// the store keeps the answer in the change's own transaction.
/// Owned, so the store may make the answer where it judges the change (a writer thread).
pub type Seal<T> = Arc<dyn Fn(&T) -> crate::repository::Receipt + Send + Sync>;

/// The orchestrator: workflows kept by a repository, judged by the rules, timed by a clock,
/// advised by an Agent Hub.
#[derive(Clone)]
pub struct Orchestrator {
    repository: Arc<dyn WorkflowRepository>,
    hub: Arc<dyn AgentHub>,
    clock: Arc<dyn Clock>,
    gate_defaults: GatePolicy,
    expiries: Option<ExpiryObserver>,
    /// The gates deadline sweeps could not note: later sweeps try them after the others.
    sweep_failed: Arc<std::sync::Mutex<Vec<FeatureId>>>,
}

/// Told of each stay at the gate this orchestrator noted past its deadline, once, whether a
/// sweep noted it or a decision that came after the deadline ([`Orchestrator::observing_expiries`]).
pub type ExpiryObserver = Arc<dyn Fn(&Expired) + Send + Sync>;

/// The hub of an orchestrator built without one: every call is unavailable.
struct NoAgentHub;

#[async_trait]
impl AgentHub for NoAgentHub {
    async fn create_session(&self, _: &FeatureId) -> Result<HubSessionId, HubError> {
        Err(Self::unavailable())
    }
    async fn close_session(&self, _: &HubSessionId) -> Result<(), HubError> {
        Err(Self::unavailable())
    }
    async fn ask(&self, _: &HubQuestion) -> Result<crate::hub::HubAnswer, HubError> {
        Err(Self::unavailable())
    }
    async fn escalation(&self, _: &EscalationId) -> Result<Escalation, HubError> {
        Err(Self::unavailable())
    }
    async fn respond(
        &self,
        _: &EscalationId,
        _: &crate::hub::HumanResponse,
    ) -> Result<Escalation, HubError> {
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
            gate_defaults: GatePolicy::default(),
            expiries: None,
            sweep_failed: Arc::default(),
        }
    }

    /// The same orchestrator on another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same orchestrator, starting workflows whose start names no gate policy with
    /// `defaults`; refused if they break a policy's rules (a policy's fields may be set by
    /// hand: 1–10 approvals, a deadline of 1 s to a year).
    pub fn with_gate_defaults(mut self, defaults: GatePolicy) -> Result<Self, ValidationError> {
        self.gate_defaults = crate::gate::GateChoice::default().over(defaults)?;
        Ok(self)
    }

    /// The gate policy a workflow gets for what its start leaves out.
    pub fn gate_defaults(&self) -> GatePolicy {
        self.gate_defaults
    }

    /// The same orchestrator, telling `observer` of each stay at the gate it notes past its
    /// deadline (for metrics and logs: a sweep's and a late decision's alike).
    pub fn observing_expiries(mut self, observer: ExpiryObserver) -> Self {
        self.expiries = Some(observer);
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
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}
