//! Consultations: a question a workflow put to the Agent Hub's experts, the answer, and — when
//! the hub escalated it — what the human reviewer decided.
//!
//! [`Consultation::refresh`] is the one rule for folding an escalation's news into a
//! consultation; it is pure, like the workflow's rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hub::{
    AnswerStatus, Escalation, EscalationId, EscalationStatus, HubAnswer, HubError, HumanAction,
    Topic,
};
use crate::state::WorkflowState;
use crate::values::{FeatureId, ValidationError, check_text};
pub use crate::values::{QUESTION_MAX_CHARS, QUESTION_MIN_CHARS, Question};
use crate::workflow::Timestamp;

/// A consultation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct ConsultationId(pub uuid::Uuid);

impl ConsultationId {
    /// A fresh random id.
    pub fn new() -> Self {
        ConsultationId(uuid::Uuid::new_v4())
    }
}

impl Default for ConsultationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::str::FromStr for ConsultationId {
    type Err = ValidationError;

    /// Only the hyphenated form (`6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f`), the one the API
    /// writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ValidationError::new("consultation_id", "must be a UUID");
        if s.len() != 36 {
            return Err(invalid());
        }
        uuid::Uuid::parse_str(s)
            .map(ConsultationId)
            .map_err(|_| invalid())
    }
}

impl fmt::Display for ConsultationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a consultation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsultationStatus {
    /// The hub has not answered yet; blocks the gate like `pending_human`.
    Asking,
    /// The answer stands.
    Resolved,
    /// Below the topic's threshold: a human must act on the escalation (blocks the gate).
    PendingHuman,
    /// Ask again (elsewhere, or with the context a human added).
    NeedsReroute,
    /// The ask ended without an answer; `error` says why.
    Failed,
}

impl ConsultationStatus {
    /// The status as the API spells it (`pending_human`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsultationStatus::Asking => "asking",
            ConsultationStatus::Resolved => "resolved",
            ConsultationStatus::PendingHuman => "pending_human",
            ConsultationStatus::NeedsReroute => "needs_reroute",
            ConsultationStatus::Failed => "failed",
        }
    }
}

impl From<AnswerStatus> for ConsultationStatus {
    fn from(status: AnswerStatus) -> Self {
        match status {
            AnswerStatus::Resolved => ConsultationStatus::Resolved,
            AnswerStatus::PendingHuman => ConsultationStatus::PendingHuman,
            AnswerStatus::NeedsReroute => ConsultationStatus::NeedsReroute,
        }
    }
}

/// Why a consultation `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsultationError {
    /// `agent_hub_unavailable` (unreachable or too slow), `agent_hub_error` (it answered
    /// with an error), `unknown_topic`, `interrupted` (the server stopped first),
    /// `workflow_not_active` (the workflow was cancelled or finished while the hub was
    /// asked), or `internal` (the orchestrator could not keep the hub session).
    pub code: String,
    /// What happened, in the orchestrator's words.
    pub message: String,
}

impl ConsultationError {
    /// Every code a failed consultation may carry.
    pub const CODES: [&'static str; 6] = [
        "agent_hub_unavailable",
        "agent_hub_error",
        "unknown_topic",
        Self::INTERRUPTED,
        Self::WORKFLOW_NOT_ACTIVE,
        Self::INTERNAL,
    ];

    /// The code of a consultation whose workflow was cancelled or finished while the hub was
    /// asked.
    pub const WORKFLOW_NOT_ACTIVE: &'static str = "workflow_not_active";

    /// The code of a consultation the orchestrator itself could not carry on (its hub
    /// session could not be kept).
    pub const INTERNAL: &'static str = "internal";

    /// The code of a consultation whose ask the server could not finish.
    pub const INTERRUPTED: &'static str = "interrupted";

    /// The ask was cut short by the server stopping or crashing.
    pub fn interrupted() -> Self {
        ConsultationError {
            code: Self::INTERRUPTED.to_owned(),
            message: "the server stopped before the Agent Hub answered; ask again".to_owned(),
        }
    }

    /// The workflow was no longer active, `state`, when the hub answered (a consultation is
    /// stored only while it is): a cancel or the work's end wins, and the answer is not kept.
    pub fn not_active(state: WorkflowState) -> Self {
        let became = match state {
            WorkflowState::Done => "finished",
            _ => "cancelled",
        };
        ConsultationError {
            code: Self::WORKFLOW_NOT_ACTIVE.to_owned(),
            message: format!(
                "the workflow was {became} before the Agent Hub answered; its answer was not kept"
            ),
        }
    }

    /// The failure of an ask that went on in the background, without the hub's own words
    /// (those go to the log).
    pub fn from_hub(error: &HubError) -> Self {
        let (code, message) = match error {
            HubError::UnknownTopic { topic, .. } => (
                "unknown_topic",
                format!("the Agent Hub has no expert for topic '{topic}'"),
            ),
            HubError::Unavailable(_) => (
                "agent_hub_unavailable",
                "the Agent Hub could not be reached or did not answer in time".to_owned(),
            ),
            _ => (
                "agent_hub_error",
                "the Agent Hub answered with an error".to_owned(),
            ),
        };
        ConsultationError {
            code: code.to_owned(),
            message,
        }
    }
}

/// Longest context, in characters.
pub const CONTEXT_MAX_CHARS: usize = 10_000;

/// Parses optional context for a question: at most 10 000 characters.
pub fn parse_context(context: Option<String>) -> Result<Option<String>, ValidationError> {
    if let Some(text) = &context {
        check_text(text, CONTEXT_MAX_CHARS)
            .map_err(|rule| ValidationError::new("context", rule))?;
    }
    Ok(context)
}

/// A question a workflow asked the Agent Hub, with everything known about its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Consultation {
    /// Its id.
    pub id: ConsultationId,
    /// The workflow that asked.
    pub feature_id: FeatureId,
    /// The expert area.
    pub topic: Topic,
    /// The question.
    pub question: Question,
    /// Extra context sent with it.
    pub context: Option<String>,
    /// The expert's answer; tentative while a human has not acted; null while `asking` and
    /// when `failed`.
    pub answer: Option<String>,
    /// The expert's reasoning, when given.
    pub rationale: Option<String>,
    /// 0–100; null while `asking` and when `failed`.
    pub confidence: Option<u8>,
    /// `asking` and `pending_human` block the gate; `resolved`, `needs_reroute` (ask again)
    /// and `failed` do not.
    pub status: ConsultationStatus,
    /// The hub's escalation, when a human was asked.
    pub escalation_id: Option<EscalationId>,
    /// The answer that stands, once known: the expert's, the human-confirmed one, or the
    /// human's correction; null after `add_context` (ask again with the added context).
    pub final_answer: Option<String>,
    /// What the human did, once they did.
    pub human_action: Option<HumanAction>,
    /// The human's correction, or the context they added (ask again with it).
    pub human_response: Option<String>,
    /// Why the expert was unsure, when it said.
    #[serde(default)]
    pub uncertainty_reasons: Vec<String>,
    /// Who answered the escalation.
    #[serde(default)]
    pub human_responder: Option<String>,
    /// When the human answered.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub resolved_at: Option<Timestamp>,
    /// Why it `failed`; null otherwise.
    #[serde(default)]
    pub error: Option<ConsultationError>,
    /// The workflow's state when the question was asked.
    pub asked_in_state: WorkflowState,
    /// When it was asked.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub created_at: Timestamp,
    /// When it last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub updated_at: Timestamp,
}

/// What a workflow asks: the command behind `POST /workflow/{id}/consultations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consult {
    /// The expert area.
    pub topic: Topic,
    /// The question.
    pub question: Question,
    /// Extra context.
    pub context: Option<String>,
}

impl Consultation {
    /// The hub no longer knows this consultation's escalation (it lost its database, say): the
    /// question must be asked again, so a pending consultation becomes `needs_reroute` and no
    /// longer blocks the gate. Returns whether anything changed.
    pub fn escalation_lost(&mut self, at: Timestamp) -> bool {
        if !self.is_pending() {
            return false;
        }
        self.status = ConsultationStatus::NeedsReroute;
        self.updated_at = at;
        true
    }

    /// A question being asked at `at`, before the hub answered: `asking`, with no answer.
    pub fn asking(
        id: ConsultationId,
        feature_id: FeatureId,
        state: WorkflowState,
        consult: Consult,
        at: Timestamp,
    ) -> Self {
        Consultation {
            id,
            feature_id,
            topic: consult.topic,
            question: consult.question,
            context: consult.context,
            answer: None,
            rationale: None,
            confidence: None,
            status: ConsultationStatus::Asking,
            escalation_id: None,
            final_answer: None,
            human_action: None,
            human_response: None,
            uncertainty_reasons: Vec::new(),
            human_responder: None,
            resolved_at: None,
            error: None,
            asked_in_state: state,
            created_at: at,
            updated_at: at,
        }
    }

    /// What this question is, to ask it (again).
    pub fn consult(&self) -> Consult {
        Consult {
            topic: self.topic.clone(),
            question: self.question.clone(),
            context: self.context.clone(),
        }
    }

    /// Folds the hub's answer into an `asking` consultation at `at`.
    pub fn answer_with(&mut self, answer: HubAnswer, at: Timestamp) {
        self.final_answer =
            (answer.status == AnswerStatus::Resolved).then(|| answer.answer.clone());
        self.answer = Some(answer.answer);
        self.rationale = answer.rationale;
        self.confidence = Some(answer.confidence);
        self.status = answer.status.into();
        self.escalation_id = answer.escalation_id;
        self.uncertainty_reasons = answer.uncertainty_reasons;
        self.error = None;
        self.updated_at = at;
    }

    /// An `asking` consultation whose ask ended without an answer at `at`.
    pub fn fail(&mut self, error: ConsultationError, at: Timestamp) {
        self.status = ConsultationStatus::Failed;
        self.error = Some(error);
        self.updated_at = at;
    }

    /// The record of `answer` to `consult`, asked by `feature_id` in `state` at `at`.
    pub fn answered(
        id: ConsultationId,
        feature_id: FeatureId,
        state: WorkflowState,
        consult: Consult,
        answer: HubAnswer,
        at: Timestamp,
    ) -> Self {
        let mut consultation = Consultation::asking(id, feature_id, state, consult, at);
        consultation.answer_with(answer, at);
        consultation
    }

    /// Whether it waits for a human.
    pub fn is_pending(&self) -> bool {
        self.status == ConsultationStatus::PendingHuman
    }

    /// Whether it holds the gate: it waits for a human, or the hub has not answered yet.
    pub fn blocks_gate(&self) -> bool {
        matches!(
            self.status,
            ConsultationStatus::PendingHuman | ConsultationStatus::Asking
        )
    }

    /// Folds what the hub now says about this consultation's escalation into it. Returns
    /// whether anything changed: a confirmed or corrected escalation resolves the consultation
    /// with its final answer (a confirmed one whose escalation left the tentative answer out:
    /// the answer the expert gave when asked, if there was one); added context makes it `needs_reroute` with the
    /// context in `human_response` (ask again with it), and so does a correction that came
    /// without its corrected answer, and a resolution naming no action (nothing to stand on);
    /// an expired one makes it `needs_reroute`; a pending one changes nothing.
    pub fn refresh(&mut self, escalation: &Escalation, at: Timestamp) -> bool {
        if !self.is_pending() {
            return false;
        }
        match escalation.status {
            EscalationStatus::Pending => return false,
            EscalationStatus::Resolved => {
                let final_answer = match escalation.final_answer() {
                    Some(answer) if answer.trim().is_empty() => match escalation.human_action {
                        Some(HumanAction::Confirm) => {
                            self.answer.clone().filter(|a| !a.trim().is_empty())
                        }
                        _ => None,
                    },
                    answer => answer,
                };
                self.status = if final_answer.is_some() {
                    ConsultationStatus::Resolved
                } else {
                    ConsultationStatus::NeedsReroute
                };
                self.final_answer = final_answer;
                self.human_action = escalation.human_action;
                self.human_response = escalation.human_response.clone();
                self.human_responder = escalation.human_responder.clone();
                // A hub that did not say when (or said it unreadably): when this learnt of it.
                self.resolved_at = escalation.resolved_at.or(Some(at));
            }
            EscalationStatus::Expired => self.status = ConsultationStatus::NeedsReroute,
        }
        self.updated_at = at;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn every_failure_code_is_one_of_the_codes_listed() {
        let failed = [
            HubError::UnknownTopic {
                topic: "t".into(),
                message: "m".into(),
            },
            HubError::SessionUnavailable("x".into()),
            HubError::SessionNotFound("x".into()),
            HubError::EscalationNotFound("x".into()),
            HubError::AlreadyResolved("x".into()),
            HubError::Failed("x".into()),
            HubError::Unavailable("x".into()),
        ];
        for error in &failed {
            let code = ConsultationError::from_hub(error).code;
            assert!(ConsultationError::CODES.contains(&code.as_str()), "{code}");
        }
        for own in [
            ConsultationError::interrupted(),
            ConsultationError::not_active(WorkflowState::Idle),
        ] {
            assert!(
                ConsultationError::CODES.contains(&own.code.as_str()),
                "{own:?}"
            );
        }
    }

    #[test]
    fn status_names_are_the_wire_names() {
        use ConsultationStatus::*;
        for status in [Asking, Resolved, PendingHuman, NeedsReroute, Failed] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }

    fn t(minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 24, 10, minute, 0).unwrap()
    }

    fn pending() -> Consultation {
        Consultation::answered(
            ConsultationId::new(),
            FeatureId::parse("f").unwrap(),
            WorkflowState::Phase1,
            Consult {
                topic: Topic::parse("security").unwrap(),
                question: Question::parse("Is this encryption scheme sound?").unwrap(),
                context: None,
            },
            HubAnswer {
                answer: "probably".into(),
                rationale: None,
                confidence: 40,
                uncertainty_reasons: vec!["novel scheme".into()],
                status: AnswerStatus::PendingHuman,
                escalation_id: Some(EscalationId("e-1".into())),
            },
            t(0),
        )
    }

    fn escalation(
        status: EscalationStatus,
        action: Option<HumanAction>,
        response: Option<&str>,
    ) -> Escalation {
        Escalation {
            id: EscalationId("e-1".into()),
            status,
            tentative_answer: "probably".into(),
            human_action: action,
            human_response: response.map(str::to_owned),
            human_responder: action.map(|_| "reviewer".to_owned()),
            resolved_at: None,
        }
    }

    #[test]
    fn a_question_must_be_ten_to_ten_thousand_characters() {
        assert!(Question::parse("short").is_err());
        assert!(Question::parse("         x").is_err());
        assert!(Question::parse("ten chars!").is_ok());
        assert!(Question::parse("q".repeat(10_001)).is_err());
        assert_eq!(Question::parse("").unwrap_err().field, "question");
    }

    #[test]
    fn a_resolved_answer_is_final_at_once() {
        let answer = pending();
        let resolved = Consultation::answered(
            answer.id,
            answer.feature_id.clone(),
            WorkflowState::Gate1,
            Consult {
                topic: answer.topic.clone(),
                question: answer.question.clone(),
                context: None,
            },
            HubAnswer {
                answer: "yes".into(),
                rationale: Some("standard".into()),
                confidence: 92,
                uncertainty_reasons: vec![],
                status: AnswerStatus::Resolved,
                escalation_id: None,
            },
            t(0),
        );
        assert_eq!(resolved.final_answer.as_deref(), Some("yes"));
        assert!(!resolved.is_pending());
        assert_eq!(pending().final_answer, None);
    }

    #[test]
    fn a_confirmed_escalation_makes_the_tentative_answer_final() {
        let mut c = pending();
        assert!(c.refresh(
            &escalation(EscalationStatus::Resolved, Some(HumanAction::Confirm), None),
            t(5)
        ));
        assert_eq!(
            (c.status, c.final_answer.as_deref()),
            (ConsultationStatus::Resolved, Some("probably"))
        );
        assert_eq!(
            (c.human_action, c.updated_at),
            (Some(HumanAction::Confirm), t(5))
        );
        // The hub did not say when it was answered: when this learnt of it.
        assert_eq!(c.resolved_at, Some(t(5)));
        let mut dated = pending();
        let mut said = escalation(EscalationStatus::Resolved, Some(HumanAction::Confirm), None);
        said.resolved_at = Some(t(3));
        dated.refresh(&said, t(5));
        assert_eq!(dated.resolved_at, Some(t(3)));
    }

    #[test]
    fn a_corrected_escalation_makes_the_human_answer_final() {
        let mut c = pending();
        c.refresh(
            &escalation(
                EscalationStatus::Resolved,
                Some(HumanAction::Correct),
                Some("no: use AES-GCM"),
            ),
            t(5),
        );
        assert_eq!(c.final_answer.as_deref(), Some("no: use AES-GCM"));
    }

    #[test]
    fn a_confirmation_without_its_tentative_answer_keeps_the_experts_answer() {
        let mut c = pending();
        let mut confirmed =
            escalation(EscalationStatus::Resolved, Some(HumanAction::Confirm), None);
        confirmed.tentative_answer = String::new();
        assert!(c.refresh(&confirmed, t(5)));
        assert_eq!(
            (c.status, c.final_answer.as_deref()),
            (ConsultationStatus::Resolved, Some("probably"))
        );
        // Nothing to confirm anywhere: nothing to stand on, as after a correction without text.
        let mut c = pending();
        c.answer = Some(" ".to_owned());
        assert!(c.refresh(&confirmed, t(5)));
        assert_eq!(
            (c.status, c.final_answer.as_deref()),
            (ConsultationStatus::NeedsReroute, None)
        );
    }

    #[test]
    fn a_correction_without_its_answer_asks_for_a_reroute() {
        for response in [None, Some(" ")] {
            let mut c = pending();
            let corrected = escalation(
                EscalationStatus::Resolved,
                Some(HumanAction::Correct),
                response,
            );
            assert!(c.refresh(&corrected, t(5)));
            assert_eq!(
                (c.status, c.final_answer.as_deref()),
                (ConsultationStatus::NeedsReroute, None),
                "{response:?}"
            );
            assert!(!c.blocks_gate());
        }
    }

    #[test]
    fn added_context_asks_for_a_reroute_with_the_context_and_no_final_answer() {
        let mut c = pending();
        c.refresh(
            &escalation(
                EscalationStatus::Resolved,
                Some(HumanAction::AddContext),
                Some("it is for backups"),
            ),
            t(5),
        );
        assert_eq!(
            (c.status, c.final_answer.as_deref()),
            (ConsultationStatus::NeedsReroute, None)
        );
        assert!(!c.is_pending());
        assert_eq!(c.human_response.as_deref(), Some("it is for backups"));
        assert_eq!(c.human_responder.as_deref(), Some("reviewer"));
    }

    #[test]
    fn a_lost_escalation_asks_for_a_reroute_and_blocks_nothing() {
        let mut c = pending();
        assert!(c.escalation_lost(t(5)));
        assert_eq!(
            (c.status, c.updated_at),
            (ConsultationStatus::NeedsReroute, t(5))
        );
        assert!(!c.is_pending());
        // Only a pending consultation changes.
        assert!(!c.escalation_lost(t(6)));
    }

    #[test]
    fn the_experts_doubts_are_kept() {
        assert_eq!(
            pending().uncertainty_reasons,
            vec!["novel scheme".to_owned()]
        );
    }

    #[test]
    fn an_expired_escalation_needs_a_reroute_and_a_pending_one_changes_nothing() {
        let mut c = pending();
        assert!(!c.refresh(&escalation(EscalationStatus::Pending, None, None), t(5)));
        assert_eq!(
            (c.status, c.updated_at),
            (ConsultationStatus::PendingHuman, t(0))
        );
        assert!(c.refresh(&escalation(EscalationStatus::Expired, None, None), t(6)));
        assert_eq!(c.status, ConsultationStatus::NeedsReroute);
        // Only a pending consultation is refreshed.
        assert!(!c.refresh(
            &escalation(EscalationStatus::Resolved, Some(HumanAction::Confirm), None),
            t(7)
        ));
        assert_eq!(c.status, ConsultationStatus::NeedsReroute);
    }
}
