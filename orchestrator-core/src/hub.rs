//! The Agent Hub as the orchestrator needs it: sessions, asking an expert, reading and
//! answering an escalation, health.
//!
//! **API boundary.** This module holds the trait and its types only. The HTTP implementation
//! lives in the server (it copes with the hub's quirks: nested error bodies, naive
//! timestamps); tests use scripted fakes.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::values::FeatureId;
pub use crate::values::Topic;
use crate::workflow::Timestamp;

/// A hub session id; the hub keeps a conversation's context per session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HubSessionId(pub String);

/// A hub escalation id: a question waiting for a human.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct EscalationId(pub String);

impl fmt::Display for HubSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for EscalationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A question for the hub's experts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubQuestion {
    /// The expert area.
    pub topic: Topic,
    /// The question, at least 10 characters.
    pub question: String,
    /// The feature it is about.
    pub feature_id: FeatureId,
    /// Extra context for the expert.
    pub context: Option<String>,
    /// The session that carries the conversation.
    pub session_id: HubSessionId,
}

/// How the hub settled a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    /// Confident enough: the answer stands.
    Resolved,
    /// Below the topic's threshold: a human must act on the escalation.
    PendingHuman,
    /// The question should be asked again (elsewhere, or with more context).
    NeedsReroute,
}

/// The hub's answer to a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAnswer {
    /// The (possibly tentative) answer.
    pub answer: String,
    /// The expert's reasoning, when given.
    pub rationale: Option<String>,
    /// 0–100.
    pub confidence: u8,
    /// Why the expert is unsure, when it is.
    pub uncertainty_reasons: Vec<String>,
    /// Resolved, or waiting for a human.
    pub status: AnswerStatus,
    /// Set exactly when `status` is `PendingHuman`.
    pub escalation_id: Option<EscalationId>,
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationStatus {
    /// Waiting for a human.
    Pending,
    /// A human acted.
    Resolved,
    /// Nobody acted in time; the question must be asked again.
    Expired,
}

/// What the human reviewer did with an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HumanAction {
    /// The tentative answer stands.
    Confirm,
    /// The human's response replaces the answer.
    Correct,
    /// The human added context; the question should be asked again with it.
    AddContext,
}

/// An escalation as the hub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// Its id.
    pub id: EscalationId,
    /// Where it stands.
    pub status: EscalationStatus,
    /// The expert's tentative answer.
    pub tentative_answer: String,
    /// What the human did, once resolved.
    pub human_action: Option<HumanAction>,
    /// The human's correction or extra context.
    pub human_response: Option<String>,
    /// Who acted.
    pub human_responder: Option<String>,
    /// When the human acted.
    pub resolved_at: Option<Timestamp>,
}

impl Escalation {
    /// The answer that stands after the human acted: the tentative answer after `confirm`,
    /// the human's response after `correct`, none after `add_context` (ask again) or while
    /// nobody has acted.
    pub fn final_answer(&self) -> Option<String> {
        match self.human_action? {
            HumanAction::Confirm => Some(self.tentative_answer.clone()),
            HumanAction::Correct => self.human_response.clone(),
            HumanAction::AddContext => None,
        }
    }
}

/// A human reviewer's answer to an escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanResponse {
    /// Confirm, correct or add context.
    pub action: HumanAction,
    /// Who answers.
    pub responder: String,
    /// The correction or the context; required for both.
    pub response: Option<String>,
}

/// The hub's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubHealth {
    /// `healthy` when all is well.
    pub status: String,
    /// The hub's version.
    pub version: String,
}

/// Why a hub call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The hub routes no expert for this topic (HTTP 400 `VALIDATION_ERROR` naming the topic).
    #[error("unknown topic '{topic}': {message}")]
    UnknownTopic {
        /// The topic asked.
        topic: String,
        /// The hub's message.
        message: String,
    },
    /// The session expired or was closed; open a new one.
    #[error("hub session unavailable: {0}")]
    SessionUnavailable(String),
    /// The hub does not know the session; open a new one.
    #[error("hub session not found: {0}")]
    SessionNotFound(String),
    /// The escalation is unknown to the hub.
    #[error("escalation not found: {0}")]
    EscalationNotFound(String),
    /// A human already answered the escalation.
    #[error("escalation already resolved: {0}")]
    AlreadyResolved(String),
    /// The hub answered with an error or a body that does not parse (HTTP 502 `AGENT_HUB_ERROR`).
    #[error("agent hub error: {0}")]
    Failed(String),
    /// The hub could not be reached or did not answer in time (HTTP 503 `AGENT_HUB_UNAVAILABLE`).
    #[error("agent hub unavailable: {0}")]
    Unavailable(String),
}

/// The Agent Hub's operations the orchestrator uses.
#[async_trait]
pub trait AgentHub: Send + Sync {
    /// Opens a session for a feature's conversation.
    async fn create_session(&self, feature_id: &FeatureId) -> Result<HubSessionId, HubError>;

    /// Closes a session nobody will use (one opened by a lost race). The orchestrator closes
    /// it beside the question it asks in the session that won, and drops the close unfinished
    /// if the answer comes first: one that must reach the hub whatever happens is sent on a
    /// task of its own (as the HTTP client does).
    async fn close_session(&self, id: &HubSessionId) -> Result<(), HubError>;

    /// Asks an expert a question within a session.
    async fn ask(&self, question: &HubQuestion) -> Result<HubAnswer, HubError>;

    /// Reads an escalation.
    async fn escalation(&self, id: &EscalationId) -> Result<Escalation, HubError>;

    /// Answers an escalation as a human reviewer; returns it as it stands afterwards.
    async fn respond(
        &self,
        id: &EscalationId,
        response: &HumanResponse,
    ) -> Result<Escalation, HubError>;

    /// Reads the hub's health.
    async fn health(&self) -> Result<HubHealth, HubError>;
}
