//! The Agent Hub's JSON, as the deployed hub speaks it, quirks included: naive timestamps,
//! three error shapes. Written once for the HTTP client and the stand-in hub.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use orchestrator_core::hub::{AnswerStatus, EscalationStatus, HumanAction};
use orchestrator_core::values::scrub_text;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `POST /sessions` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    /// Who opens the session.
    pub agent_id: String,
    /// The feature the conversation is about.
    pub feature_id: Option<String>,
}

/// A session as the hub returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Its id (a UUID).
    pub id: String,
    /// Who opened it.
    #[serde(default)]
    pub agent_id: String,
    /// The feature.
    #[serde(default)]
    pub feature_id: Option<String>,
    /// `active` or `closed`.
    #[serde(default)]
    pub status: String,
    /// Naive UTC; not used (absent or unreadable: none).
    #[serde(default, with = "hub_time_lenient")]
    pub created_at: Option<DateTime<Utc>>,
    /// Naive UTC; not used (absent or unreadable: none).
    #[serde(default, with = "hub_time_lenient")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `POST /ask/{topic}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    /// At least 10 characters.
    pub question: String,
    /// The asking feature.
    pub feature_id: String,
    /// Extra context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `POST /ask/{topic}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The (tentative) answer: absent or null only in a `needs_reroute` answer (no expert
    /// answered), refused in any other (see `client::answer_of`).
    #[serde(default)]
    pub answer: Option<String>,
    /// Reasoning, if any.
    #[serde(default)]
    pub rationale: Option<String>,
    /// 0–100; an integer by contract, read leniently. Absent or null as `answer` may be.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Why unsure.
    #[serde(default)]
    pub uncertainty_reasons: Option<Vec<String>>,
    /// `resolved`, `pending_human` or `needs_reroute`.
    pub status: AnswerStatus,
    /// The session used.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Set when escalated.
    #[serde(default)]
    pub escalation_id: Option<String>,
}

/// `GET /escalations/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    /// Its id.
    pub id: String,
    /// `pending`, `resolved` or `expired`.
    pub status: EscalationStatus,
    /// The question asked (absent or null: empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub question: String,
    /// The expert's answer (absent or null: empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub tentative_answer: String,
    /// 0–100 (absent or null: 0).
    #[serde(default, deserialize_with = "null_as_default")]
    pub confidence: f64,
    /// Why unsure.
    #[serde(default)]
    pub uncertainty_reasons: Option<Vec<String>>,
    /// What the human did.
    #[serde(default)]
    pub human_action: Option<HumanAction>,
    /// Correction or context.
    #[serde(default)]
    pub human_response: Option<String>,
    /// Who acted.
    #[serde(default)]
    pub human_responder: Option<String>,
    /// Naive UTC; not used (absent or unreadable: none).
    #[serde(default, with = "hub_time_lenient")]
    pub created_at: Option<DateTime<Utc>>,
    /// Naive UTC (unreadable: none; the orchestrator then keeps when it learnt of it).
    #[serde(default, with = "hub_time_lenient")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The escalation, its text scrubbed of control characters (a NUL from the hub would make it
/// unstorable on PostgreSQL, and every refresh of it fail).
impl From<Escalation> for orchestrator_core::hub::Escalation {
    fn from(escalation: Escalation) -> Self {
        orchestrator_core::hub::Escalation {
            id: orchestrator_core::hub::EscalationId(escalation.id),
            status: escalation.status,
            tentative_answer: scrub_text(escalation.tentative_answer),
            human_action: escalation.human_action,
            human_response: escalation.human_response.map(scrub_text),
            human_responder: escalation.human_responder.map(scrub_text),
            resolved_at: escalation.resolved_at,
        }
    }
}

/// `POST /escalations/{id}` body: what a human reviewer sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HumanResponse {
    /// `confirm`, `correct` or `add_context`.
    pub action: HumanAction,
    /// Who.
    pub responder: String,
    /// The correction or the context.
    #[serde(default)]
    pub response: Option<String>,
}

/// `GET /health` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `healthy` when all is well.
    pub status: String,
    /// The hub's version.
    #[serde(default)]
    pub version: String,
    /// Seconds up.
    #[serde(default)]
    pub uptime_seconds: f64,
    /// Expert agents connected.
    #[serde(default)]
    pub connected_agents: Vec<String>,
}

/// The hub's error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `UNKNOWN_TOPIC`, `SESSION_NOT_FOUND`, …
    pub code: String,
    /// What went wrong (absent or null: empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
    /// Specifics: strings, or (from another version of the hub) any JSON, kept as its text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "details_as_text"
    )]
    pub details: Option<Vec<String>>,
}

/// A value that may come as `null`: its default then.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An error's `details` as text, whatever JSON they come as: a list of strings, a list of
/// anything else (each kept as its JSON text), or one value. The error's code is what counts;
/// its details must never make it unreadable.
fn details_as_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let text = |value: serde_json::Value| match value {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None => None,
            Some(serde_json::Value::Array(items)) => Some(items.into_iter().map(text).collect()),
            Some(one) => Some(vec![text(one)]),
        },
    )
}

/// `{"error": {…}}`, the hub's documented error form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// Every error shape the hub sends besides plain text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ErrorShape {
    /// `{"detail": {"error": {…}}}`: what the deployed hub sends.
    Nested {
        /// The wrapper.
        detail: ErrorEnvelope,
    },
    /// `{"error": {…}}`: the form the hub documents, and its future versions'.
    TopLevel(ErrorEnvelope),
    /// `{"detail": [{"type", "loc", "msg", …}]}`: a body that failed validation (422).
    Validation {
        /// One entry per problem.
        detail: Vec<serde_json::Value>,
    },
}

impl ErrorShape {
    /// The code and message, when the shape carries them.
    pub fn into_error(self) -> Option<ErrorBody> {
        match self {
            ErrorShape::Nested { detail } => Some(detail.error),
            ErrorShape::TopLevel(envelope) => Some(envelope.error),
            ErrorShape::Validation { .. } => None,
        }
    }
}

/// Timestamps as the hub writes them: ISO 8601 without an offset, meaning UTC. Offsets are
/// accepted too, for hubs that send them.
pub mod hub_time {
    use super::*;

    /// Parses a hub timestamp: RFC 3339, or naive UTC with a `T` or (as Python prints a
    /// `datetime`) a space between date and time. Cut to microseconds, as every store keeps
    /// times, so an answer and a later read of what it stored say the same time.
    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                    .into_iter()
                    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                    .map(|naive| naive.and_utc())
            })
            .map(|at| at.trunc_subsecs(6))
    }

    /// Writes a timestamp the way the hub does (naive).
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
    }

    /// Reads a naive or offset timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {text}")))
    }
}

/// An optional timestamp, read leniently: a hub that leaves it out, sends null or changes its
/// format fails no call over it (an escalation whose `resolved_at` could not be read would
/// otherwise be unreadable as a whole, and its gate held for ever).
pub mod hub_time_lenient {
    use super::*;

    /// Writes an optional timestamp, as the hub does.
    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => hub_time::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads anything: a timestamp, else none.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(value.as_str().and_then(hub_time::parse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_timestamps_are_utc_and_offsets_are_honoured() {
        let naive = hub_time::parse("2026-11-24T10:29:57.876034").unwrap();
        assert_eq!(naive.to_rfc3339(), "2026-11-24T10:29:57.876034+00:00");
        let offset = hub_time::parse("2026-11-24T12:29:57+02:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-11-24T10:29:57+00:00");
        let spaced = hub_time::parse("2026-11-24 10:29:57.876034").unwrap();
        assert_eq!(spaced, naive);
        assert!(hub_time::parse("yesterday").is_none());
        // Nanoseconds are cut to the microseconds every store keeps, with or without offset.
        for nanos in [
            "2026-11-24T10:29:57.876034999",
            "2026-11-24T10:29:57.876034999Z",
        ] {
            assert_eq!(hub_time::parse(nanos), Some(naive), "{nanos}");
        }
    }

    /// The hub's answers byte for byte as it sends them (an integer confidence, nulls where
    /// nothing is said), not as these types would write them: the stand-in hub writes its
    /// answers with these very types, so a field the real hub names otherwise would pass
    /// every other test.
    #[test]
    fn answers_as_the_hub_writes_them_read() {
        let resolved: Answer = serde_json::from_str(
            r#"{"answer": "Use a queue", "rationale": null, "confidence": 92,
                "uncertainty_reasons": null, "status": "resolved",
                "session_id": "37b84e94-1", "escalation_id": null}"#,
        )
        .unwrap();
        assert_eq!(resolved.confidence, Some(92.0));
        assert_eq!(resolved.status, AnswerStatus::Resolved);
        assert_eq!(resolved.escalation_id, None);
        let escalated: Answer = serde_json::from_str(
            r#"{"answer": "Probably a queue", "rationale": null, "confidence": 40,
                "uncertainty_reasons": ["load unknown"], "status": "pending_human",
                "session_id": "7429b477-1", "escalation_id": "6f782cbc-1"}"#,
        )
        .unwrap();
        assert_eq!(escalated.status, AnswerStatus::PendingHuman);
        assert_eq!(escalated.escalation_id.as_deref(), Some("6f782cbc-1"));
        assert_eq!(
            escalated.uncertainty_reasons,
            Some(vec!["load unknown".to_owned()])
        );
        let rerouted: Answer =
            serde_json::from_str(r#"{"answer": "", "confidence": 0, "status": "needs_reroute"}"#)
                .unwrap();
        assert_eq!(rerouted.status, AnswerStatus::NeedsReroute);
        // Its published spec says nothing of the answer of a reroute: none is read as none.
        let rerouted: Answer = serde_json::from_str(
            r#"{"answer": null, "rationale": null, "confidence": null,
                "uncertainty_reasons": ["no expert for this"], "status": "needs_reroute",
                "session_id": "7429b477-1", "escalation_id": null}"#,
        )
        .unwrap();
        assert_eq!((rerouted.answer, rerouted.confidence), (None, None));

        let pending: Escalation = serde_json::from_str(
            r#"{"id": "6f782cbc-1", "status": "pending", "question": "Which queue?",
                "tentative_answer": "Probably a queue", "confidence": 40,
                "uncertainty_reasons": ["load unknown"], "human_action": null,
                "human_response": null, "human_responder": null,
                "created_at": "2026-11-24T10:29:57.876034", "resolved_at": null}"#,
        )
        .unwrap();
        assert_eq!(pending.status, EscalationStatus::Pending);
        assert_eq!(pending.confidence, 40.0);
        assert_eq!(
            pending.created_at.map(|at| at.to_rfc3339()).as_deref(),
            Some("2026-11-24T10:29:57.876034+00:00")
        );
        assert_eq!(pending.resolved_at, None);
        let corrected: Escalation = serde_json::from_str(
            r#"{"id": "6f782cbc-1", "status": "resolved", "question": "Which queue?",
                "tentative_answer": "Probably a queue", "confidence": 40,
                "uncertainty_reasons": null, "human_action": "correct",
                "human_response": "A log", "human_responder": "rita",
                "created_at": "2026-11-24T10:29:57.876034",
                "resolved_at": "2026-11-24T10:31:02.000001"}"#,
        )
        .unwrap();
        assert_eq!(corrected.status, EscalationStatus::Resolved);
        assert_eq!(corrected.human_action, Some(HumanAction::Correct));
        assert_eq!(corrected.human_response.as_deref(), Some("A log"));
        assert!(corrected.resolved_at.is_some());
    }

    /// A resolution time the hub wrote in a form of its own leaves the escalation readable:
    /// the human's answer is what matters, and an unreadable one would hold the gate for ever.
    #[test]
    fn an_escalation_with_an_unreadable_resolution_time_is_still_read() {
        let escalation: Escalation = serde_json::from_str(
            r#"{"id": "6f782cbc-1", "status": "resolved", "question": "Which queue?",
                "tentative_answer": "A queue", "confidence": 40, "human_action": "confirm",
                "created_at": "2026-11-24T10:29:57", "resolved_at": "yesterday"}"#,
        )
        .unwrap();
        assert_eq!(escalation.status, EscalationStatus::Resolved);
        assert_eq!(escalation.resolved_at, None);
    }

    #[test]
    fn all_three_error_shapes_are_read() {
        let nested: ErrorShape = serde_json::from_str(
            r#"{"detail": {"error": {"code": "UNKNOWN_TOPIC", "message": "no", "details": ["x"]}}}"#,
        )
        .unwrap();
        assert_eq!(nested.into_error().unwrap().code, "UNKNOWN_TOPIC");
        let top: ErrorShape =
            serde_json::from_str(r#"{"error": {"code": "SESSION_NOT_FOUND", "message": "gone"}}"#)
                .unwrap();
        assert_eq!(top.into_error().unwrap().code, "SESSION_NOT_FOUND");
        let validation: ErrorShape = serde_json::from_str(
            r#"{"detail": [{"type": "string_too_short", "loc": ["body", "question"], "msg": "short"}]}"#,
        )
        .unwrap();
        assert!(validation.into_error().is_none());
        assert!(serde_json::from_str::<ErrorShape>("Internal Server Error").is_err());
    }

    /// The hub's session, as its published API shows it; the times the orchestrator does not
    /// use may be missing, null or in a format of the hub's choosing.
    #[test]
    fn a_session_is_read_from_the_hubs_json_whatever_its_unused_times() {
        let session: Session = serde_json::from_str(
            r#"{"id": "7429b477-1", "agent_id": "orchestrator", "feature_id": "f-1",
                "status": "active", "created_at": "2026-11-24T10:29:57.876034",
                "updated_at": "2026-11-24T10:29:57.876034"}"#,
        )
        .unwrap();
        assert_eq!(session.id, "7429b477-1");
        assert!(session.created_at.is_some());
        for times in [
            "",
            r#", "created_at": null, "updated_at": null"#,
            r#", "created_at": "yesterday", "updated_at": 1764000000"#,
        ] {
            let session: Session =
                serde_json::from_str(&format!(r#"{{"id": "7429b477-1"{times}}}"#)).expect(times);
            assert_eq!(
                (session.id.as_str(), session.created_at),
                ("7429b477-1", None)
            );
        }
        let escalation: Escalation =
            serde_json::from_str(r#"{"id": "e-1", "status": "pending", "created_at": null}"#)
                .unwrap();
        assert_eq!(escalation.status, EscalationStatus::Pending);
        let health: Health = serde_json::from_str(
            r#"{"status": "healthy", "version": "0.1.0", "uptime_seconds": 12.5,
                "connected_agents": ["architect", "security"]}"#,
        )
        .unwrap();
        assert_eq!(
            (health.status.as_str(), health.connected_agents.len()),
            ("healthy", 2)
        );
    }

    #[test]
    fn details_of_any_shape_leave_the_error_readable() {
        for details in [r#"[{"id": 1}]"#, r#""one""#, "null", "[2, \"two\"]"] {
            let body = format!(
                r#"{{"error": {{"code": "ESCALATION_NOT_FOUND", "message": "m", "details": {details}}}}}"#
            );
            let shape: ErrorShape = serde_json::from_str(&body).expect(details);
            assert_eq!(shape.into_error().unwrap().code, "ESCALATION_NOT_FOUND");
        }
        let unexplained: ErrorShape =
            serde_json::from_str(r#"{"error": {"code": "ALREADY_RESOLVED", "message": null}}"#)
                .unwrap();
        assert_eq!(unexplained.into_error().unwrap().code, "ALREADY_RESOLVED");
        let listed: ErrorEnvelope =
            serde_json::from_str(r#"{"error": {"code": "C", "details": [{"id": 1}, "text"]}}"#)
                .unwrap();
        assert_eq!(
            listed.error.details.unwrap(),
            [r#"{"id":1}"#.to_owned(), "text".to_owned()]
        );
    }

    #[test]
    fn an_escalation_with_null_texts_reads() {
        let escalation: Escalation = serde_json::from_str(
            r#"{"id": "e1", "status": "pending", "question": null, "tentative_answer": null,
                "confidence": null, "created_at": "2026-11-24T10:29:57"}"#,
        )
        .unwrap();
        assert_eq!(escalation.tentative_answer, "");
    }
}
