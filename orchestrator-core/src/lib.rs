#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used)]
//!
//! # Layout
//!
//! - [`state`]: the five states, the triggers, and the transition table as data.
//! - [`values`]: validated values (`FeatureId`, `Description`, …), built only by parsing.
//! - [`workflow`]: the `Workflow` aggregate, its pure `decide` (and `apply`), history
//!   records, progress.
//! - [`repository`]: the `WorkflowRepository` trait every store implements.
//! - [`gate`]: a workflow's gate policy and its current stay at the gate.
//! - [`hub`]: the `AgentHub` trait and its types.
//! - [`principal`]: who acts — kinds (human, agent, system), roles, and what each may do.
//! - [`consultation`]: questions asked of the hub, and how an escalation's outcome is folded in.
//! - [`event`]: the event log's records (`NewEvent`, `Event`, `EventFilter`, `EventType`).
//! - [`service`]: the `Orchestrator`, where the rules meet the repository.
//! - [`webhook`]: webhook signatures (and [`webhook::verify`] for receivers), the retry
//!   schedule, delivery status.
//! - [`api`]: wire types and route paths shared by server and client.
//! - `memory` and `fake_hub` (feature `test-util`): `InMemoryWorkflowRepository` and
//!   `ScriptedAgentHub`, for tests, examples and embedding.

pub mod api;
pub mod consultation;
pub mod event;
#[cfg(feature = "test-util")]
pub mod fake_hub;
pub mod gate;
pub mod hub;
#[cfg(feature = "test-util")]
pub mod memory;
pub mod principal;
pub mod repository;
pub mod service;
pub mod state;
pub mod values;
pub mod webhook;
pub mod workflow;

pub use consultation::{Consult, Consultation, ConsultationId, Question};
pub use event::{Event, EventFilter, EventSlice, EventType, NewEvent};
#[cfg(feature = "test-util")]
pub use fake_hub::ScriptedAgentHub;
pub use gate::{Approval, GateChoice, GatePolicy, GateStay, OnExpiry};
pub use hub::{AgentHub, HubError};
#[cfg(feature = "test-util")]
pub use memory::InMemoryWorkflowRepository;
pub use principal::{Action, ActorKind, Principal, Role};
pub use repository::{
    Decision, Expiry, IdempotencyKey, Judge, KeyClaim, ListQuery, OverdueNote, Page, PageLimit,
    Receipt, RepositoryError, StateCounts, Summary, WorkflowRepository,
};
#[cfg(feature = "test-util")]
pub use service::ManualClock;
pub use service::{
    Advance, Clock, Error, EventPage, Expired, ExpiryObserver, Orchestrator, Respond, Result, Seal,
    StartWorkflow, Started, SystemClock,
};
pub use state::{TRANSITIONS, Trigger, WorkflowState, next_state};
pub use values::{Actor, Description, FeatureId, Metadata, Reason, ValidationError};
pub use workflow::{
    GateFacts, Progress, ReplayError, Snapshot, Timestamp, Transition, TransitionContext,
    TransitionError, Version, Workflow,
};
