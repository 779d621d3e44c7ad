//! Wire types: every request and response body of the HTTP API, the error envelope, the
//! paging cursor, and the route paths.
//!
//! **API boundary.** The server encodes these and the client decodes them; neither defines
//! a body of its own, so the two cannot drift apart. Request bodies carry raw strings so the
//! server can tell a malformed body (`INVALID_JSON`) from a field that breaks a rule
//! (`VALIDATION_ERROR`); responses carry validated core types.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::consultation::{Consultation, ConsultationId, ConsultationStatus};
use crate::event::{Event, EventFilter, EventType};
use crate::gate::Approval;
use crate::hub::EscalationId;
use crate::repository::{ListQuery, PageLimit, Summary};
use crate::state::WorkflowState;
use crate::values::{Actor, Description, FeatureId, Metadata, ValidationError};
use crate::workflow::{Progress, Timestamp, Transition, Version, Workflow};

/// The service name `/health` and `/` report.
pub const SERVICE_NAME: &str = "orchestrator";

/// The header of an event stream's answer that says how many seconds apart its heartbeats
/// are (`EVENTS_HEARTBEAT_SECONDS`): a consumer waits a few of them before it takes a silent
/// stream for a dead one.
pub const HEARTBEAT_HEADER: &str = "event-heartbeat-seconds";

/// A stable, machine-readable error code; on the wire in SCREAMING_SNAKE_CASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: a field breaks a rule; details name the field.
    ValidationError,
    /// 400: the body is not JSON or not the expected shape.
    InvalidJson,
    /// 415: a body sent without a JSON content type.
    UnsupportedMediaType,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 401: a token is configured and the request lacks it or has another.
    Unauthorized,
    /// 403: the caller is known but may not do this (details say why: the role it needs, or
    /// that an agent may not approve or reject).
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 404: no workflow for that feature id.
    WorkflowNotFound,
    /// 409: `/workflow/start` for a feature id that has one.
    WorkflowAlreadyExists,
    /// 409: the trigger is not allowed in the current state.
    InvalidTransition,
    /// 409: the expected version differs from the current one.
    VersionConflict,
    /// 409: `human_approved` while a consultation awaits a human.
    GateBlocked,
    /// 409: `human_approved` by the author of the work at the gate.
    SelfApproval,
    /// 409: the same actor approving twice in one stay at the gate.
    AlreadyApproved,
    /// 409: a consultation asked for a workflow in IDLE or DONE.
    WorkflowNotActive,
    /// 503: the Agent Hub cannot be reached or timed out.
    AgentHubUnavailable,
    /// 502: the Agent Hub answered with an error or a malformed body.
    AgentHubError,
    /// 404: the workflow has no consultation with this id.
    ConsultationNotFound,
    /// 409: the consultation waits for no human, so there is nothing to answer.
    ConsultationNotPending,
    /// 409: a human answered the escalation already, outside the orchestrator.
    AlreadyResolved,
    /// 409: a request with this `Idempotency-Key` is still being answered, or (to a request
    /// that outlived its hold on the key) a retry took the key over and nothing was stored;
    /// retry later to get the kept answer.
    IdempotencyKeyInUse,
    /// 422: this `Idempotency-Key` was used for another request (method, path, `If-Match` or
    /// body).
    IdempotencyKeyReused,
    /// 410: the events after the given id were deleted by retention; start again from the
    /// oldest retained event (omit `after`).
    EventsExpired,
    /// 409: the given event id is past the newest event: the log never had it (the store was
    /// restored from an older copy, or replaced); start again after the newest id, or from
    /// the oldest retained event.
    EventsCursorAhead,
    /// 404: no webhook with this id.
    WebhookNotFound,
    /// 404: the webhook has no delivery with this id.
    DeliveryNotFound,
    /// 503: storage cannot be reached, or refuses to write (disk full, read-only).
    DatabaseUnavailable,
    /// 400: the request is not well-formed HTTP (a bad header, a broken chunk).
    BadRequest,
    /// 408: the request's body did not arrive in time.
    RequestTimeout,
    /// 414: the request's URI is too long.
    UriTooLong,
    /// 431: the request's headers are too large or too many.
    HeadersTooLarge,
    /// 503: the request could not be answered in time; retry later.
    ServiceUnavailable,
    /// 500: a bug; the message says nothing internal.
    Internal,
    /// A code this version of the library does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as the wire spells it (`WORKFLOW_NOT_FOUND`), as serde writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::WorkflowNotFound => "WORKFLOW_NOT_FOUND",
            ErrorCode::WorkflowAlreadyExists => "WORKFLOW_ALREADY_EXISTS",
            ErrorCode::InvalidTransition => "INVALID_TRANSITION",
            ErrorCode::VersionConflict => "VERSION_CONFLICT",
            ErrorCode::GateBlocked => "GATE_BLOCKED",
            ErrorCode::SelfApproval => "SELF_APPROVAL",
            ErrorCode::AlreadyApproved => "ALREADY_APPROVED",
            ErrorCode::WorkflowNotActive => "WORKFLOW_NOT_ACTIVE",
            ErrorCode::AgentHubUnavailable => "AGENT_HUB_UNAVAILABLE",
            ErrorCode::AgentHubError => "AGENT_HUB_ERROR",
            ErrorCode::ConsultationNotFound => "CONSULTATION_NOT_FOUND",
            ErrorCode::ConsultationNotPending => "CONSULTATION_NOT_PENDING",
            ErrorCode::AlreadyResolved => "ALREADY_RESOLVED",
            ErrorCode::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::EventsExpired => "EVENTS_EXPIRED",
            ErrorCode::EventsCursorAhead => "EVENTS_CURSOR_AHEAD",
            ErrorCode::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            ErrorCode::DeliveryNotFound => "DELIVERY_NOT_FOUND",
            ErrorCode::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::UriTooLong => "URI_TOO_LONG",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::ValidationError | ErrorCode::InvalidJson | ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound
            | ErrorCode::WorkflowNotFound
            | ErrorCode::ConsultationNotFound
            | ErrorCode::WebhookNotFound
            | ErrorCode::DeliveryNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::WorkflowAlreadyExists
            | ErrorCode::InvalidTransition
            | ErrorCode::VersionConflict
            | ErrorCode::GateBlocked
            | ErrorCode::SelfApproval
            | ErrorCode::AlreadyApproved
            | ErrorCode::WorkflowNotActive
            | ErrorCode::ConsultationNotPending
            | ErrorCode::AlreadyResolved
            | ErrorCode::IdempotencyKeyInUse
            | ErrorCode::EventsCursorAhead => 409,
            ErrorCode::EventsExpired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UriTooLong => 414,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::AgentHubError => 502,
            ErrorCode::AgentHubUnavailable
            | ErrorCode::DatabaseUnavailable
            | ErrorCode::ServiceUnavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ApiErrorBody,
}

/// What went wrong, for machines (`code`) and people (`message`, `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// Stable code to match on.
    pub code: ErrorCode,
    /// One lowercase sentence.
    pub message: String,
    /// Specifics: the field broken, the allowed triggers, the blocking escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<String>>,
}

/// `POST /workflow/start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartWorkflowRequest {
    /// 1–128 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    pub feature_id: String,
    /// Not blank, at most 10 000 characters.
    pub description: String,
    /// A JSON object of at most 64 KiB, nested at most 32 levels (the object itself is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// When the feature exists, answer 200 with it unchanged instead of 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_existing: Option<bool>,
    /// How the gate is passed; each field defaults to the server's settings
    /// (`GATE_REQUIRED_APPROVALS`, `GATE_DUE_SECONDS`), `on_expiry` `flag` and
    /// `allow_self_approval` false. Fixed for the workflow's life.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_object"
    )]
    pub gate: Option<GateRequest>,
}

/// An optional nested object of a body, refused unless it is written as one: serde's derive
/// also takes a struct as an array of its fields in order (`"gate": [1, true]`), rules given
/// without their names, which no client means. Read as it streams, so a field given twice is
/// refused as the derive refuses it, not taken at its last value.
fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOnly<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(ObjectOnly(std::marker::PhantomData))
}

impl StartWorkflowRequest {
    /// A request with the two required fields.
    pub fn new(feature_id: impl Into<String>, description: impl Into<String>) -> Self {
        StartWorkflowRequest {
            feature_id: feature_id.into(),
            description: description.into(),
            ..Self::default()
        }
    }
}

/// A workflow's gate policy as `POST /workflow/start` takes it. Unlike the rest of a body, it
/// holds no field it does not know: a misspelt rule (`required_aprovals`) would leave the gate
/// weaker than asked without a word, so it is 400 `INVALID_JSON` naming the field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// Distinct people who must approve, 1–10 (any other whole number is 400
    /// `VALIDATION_ERROR` naming `gate.required_approvals`); `2.0` is read as `2`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "clamped_whole_number"
    )]
    pub required_approvals: Option<u64>,
    /// Whether whoever completed the work may approve it (default false). With principals,
    /// `true` (unless the server's default allows it) and fewer approvals than the server's
    /// default are an admin's to ask for: 403 `FORBIDDEN` for anyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
    /// Seconds a stay at the gate may last before it is overdue, 1–31 536 000 (any other
    /// whole number is 400 `VALIDATION_ERROR` naming `gate.due_in_seconds`); `60.0` is read
    /// as `60`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "clamped_whole_number"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31_536_000))]
    pub due_in_seconds: Option<u64>,
    /// What happens past the deadline: `flag` (marked overdue only; the default), `reject`
    /// (back to PHASE_1) or `cancel`, by actor `system` with reason `gate expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::gate::OnExpiry>))]
    pub on_expiry: Option<String>,
}

/// `POST /workflow/{feature_id}/advance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdvanceRequest {
    /// `start`, `agent_complete`, `human_approved`, `human_rejected` or `cancel`; anything
    /// else is 400 `VALIDATION_ERROR` (a string here, so the server can say which field broke).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::state::Trigger))]
    pub trigger: String,
    /// Who triggers it: not blank, at most 128 characters, no invisible characters
    /// (zero-width, direction marks, soft hyphen), not `system` (the orchestrator's own name);
    /// compared without regard to case. With
    /// principals, the token's principal is the actor, and an `actor` naming somebody else
    /// is recorded as `on_behalf_of`. Without principals, an approval at a gate that needs several distinct
    /// approvals must name its actor (else 400 naming `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `human` or `agent` (`system` is the orchestrator's own): trusted without principals;
    /// with principals the token's principal says, but for an approval or rejection that says
    /// `agent`, which is refused whoever sends it. An agent may not approve or reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::principal::ActorKind>))]
    pub actor_kind: Option<String>,
    /// Why, at most 10 000 characters. Required (not blank: more than white space and
    /// invisible characters) for `human_rejected` and for an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `human_approved`: pass the gate whatever is missing (approvals, escalations).
    /// Admins only (anyone without principals); needs a `reason`; recorded as `override: true`.
    /// With any other trigger it is ignored (and needs no admin).
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub override_gate: Option<bool>,
    /// A JSON object of at most 64 KiB, nested at most 32 levels (the object itself is one),
    /// kept with the history entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// Refuse with `VERSION_CONFLICT` unless the workflow is at this version
    /// (the `If-Match` header says the same). A whole number; `3.0` is read as `3`, as JSON
    /// makes no difference between the two.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub expected_version: Option<Version>,
}

/// Where a JSON number stands as a whole number (`3` and `3.0` are both 3); `None` for a
/// fraction.
enum Whole {
    Exact(u64),
    Negative,
    TooLarge,
}

fn whole(number: &serde_json::Number) -> Option<Whole> {
    if let Some(n) = number.as_u64() {
        return Some(Whole::Exact(n));
    }
    if number.as_i64().is_some() {
        return Some(Whole::Negative);
    }
    let f = number.as_f64()?;
    if f.fract() != 0.0 {
        return None;
    }
    Some(if f < 0.0 {
        Whole::Negative
    } else if f < 9_007_199_254_740_992.0 {
        // Below 2^53 every whole float is exact.
        Whole::Exact(f as u64)
    } else {
        Whole::TooLarge
    })
}

/// Reads an optional unsigned whole number that may be written as a float without a fraction
/// (`3` or `3.0`); a fraction, a negative number or one too large is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    optional_whole(deserializer, false)
}

/// Reads an optional whole number (`3` or `3.0`) for a field whose range starts above 0: a
/// negative one reads as 0 and one beyond `u64` as `u64::MAX`, so the field's range check
/// refuses it by name (400 `VALIDATION_ERROR`) rather than the body as unreadable JSON; a
/// fraction is refused.
fn clamped_whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    optional_whole(deserializer, true)
}

/// An optional whole number: exactly as written, or (`clamp`) out of range read as the
/// nearest `u64`.
fn optional_whole<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    clamp: bool,
) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    match (whole(&number), clamp) {
        (Some(Whole::Exact(n)), _) => Ok(Some(n)),
        (Some(Whole::Negative), true) => Ok(Some(0)),
        (Some(Whole::TooLarge), true) => Ok(Some(u64::MAX)),
        _ => Err(D::Error::custom(format!(
            "invalid value {number}, expected a whole number of at least 0"
        ))),
    }
}

impl AdvanceRequest {
    /// A request with only a trigger.
    pub fn new(trigger: impl Into<String>) -> Self {
        AdvanceRequest {
            trigger: trigger.into(),
            ..Self::default()
        }
    }
}

/// A workflow as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowResponse {
    /// The feature.
    pub feature_id: FeatureId,
    /// What it is.
    pub description: Description,
    /// Where it stands.
    pub state: WorkflowState,
    /// Transitions accepted so far; send it back as `expected_version` or `If-Match`.
    pub version: Version,
    /// How far it has come, as of the answer.
    pub progress: Progress,
    /// The data given at start.
    #[serde(default)]
    pub metadata: Metadata,
    /// First start.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub created_at: Timestamp,
    /// Last transition.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub updated_at: Timestamp,
    /// Entry into DONE.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub completed_at: Option<Timestamp>,
    /// Its gate: the policy, and the current stay at GATE_1 (null / empty elsewhere).
    pub gate: GateView,
}

/// A workflow's gate as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateView {
    /// Distinct people who must approve.
    pub required_approvals: u8,
    /// Whether whoever completed the work may approve it.
    pub allow_self_approval: bool,
    /// Seconds a stay at the gate may last before it is overdue; null: no deadline.
    pub due_in_seconds: Option<u32>,
    /// What happens past the deadline.
    pub on_expiry: crate::gate::OnExpiry,
    /// When the current stay at GATE_1 began; null elsewhere.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub entered_at: Option<Timestamp>,
    /// When the current stay is due (`entered_at` + `due_in_seconds`); null elsewhere or
    /// without a deadline.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub due_at: Option<Timestamp>,
    /// Whether the current stay is past `due_at`.
    pub overdue: bool,
    /// Who made the work at the gate (the `actor` and `on_behalf_of` of the entry that entered
    /// it): they may not approve it unless `allow_self_approval`.
    #[serde(default)]
    pub authors: Vec<Actor>,
    /// The approvals of the current stay, oldest first.
    pub approvals: Vec<Approval>,
    /// What still holds the gate: approvals missing (`{"kind": "approvals", "have": 1, "need":
    /// 2}`) and consultations waiting for a human (`{"kind": "escalation", …}`) or for the hub
    /// (`{"kind": "asking", …}`), as stored (an approval asks the hub about them first). The
    /// answer to the `agent_complete` that enters the gate lists them as read just before the
    /// change; an approval is refused while one holds the gate, so its answer lists only the
    /// approvals missing.
    pub blocked_by: Vec<Blocker>,
}

/// One thing that holds a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Blocker {
    /// Fewer approvals than the policy needs.
    Approvals {
        /// Approvals so far.
        have: u8,
        /// Approvals needed.
        need: u8,
    },
    /// A consultation whose escalation waits for a human.
    Escalation {
        /// The consultation.
        consultation_id: ConsultationId,
        /// Its escalation at the hub.
        escalation_id: EscalationId,
    },
    /// A consultation the hub has not answered yet.
    Asking {
        /// The consultation.
        consultation_id: ConsultationId,
    },
    /// A kind this version of the library does not know (sent by a newer server): read so that
    /// the rest of the answer still is. The server never sends it (written back, it is
    /// `{"kind": "unknown"}`).
    #[serde(other)]
    Unknown,
}

impl GateView {
    /// Adds to what holds the gate those of the workflow's `consultations` that wait for a
    /// human or for the hub (nothing is added away from the gate).
    pub fn hold(&mut self, consultations: &[Consultation]) {
        if self.entered_at.is_none() {
            return;
        }
        for c in consultations {
            match (c.status, &c.escalation_id) {
                (ConsultationStatus::PendingHuman, Some(escalation)) => {
                    self.blocked_by.push(Blocker::Escalation {
                        consultation_id: c.id,
                        escalation_id: escalation.clone(),
                    });
                }
                (ConsultationStatus::Asking, _) => {
                    self.blocked_by.push(Blocker::Asking {
                        consultation_id: c.id,
                    });
                }
                _ => {}
            }
        }
    }

    /// The gate of `workflow` as of `now`.
    pub fn new(workflow: &Workflow, now: Timestamp) -> Self {
        let policy = workflow.gate_policy();
        let stay = workflow
            .gate_stay()
            .filter(|_| workflow.state() == WorkflowState::Gate1);
        let approvals = stay.map(|s| s.approvals.clone()).unwrap_or_default();
        let have = u8::try_from(approvals.len()).unwrap_or(u8::MAX);
        let blocked_by = if stay.is_some() && have < policy.required_approvals {
            vec![Blocker::Approvals {
                have,
                need: policy.required_approvals,
            }]
        } else {
            Vec::new()
        };
        let due_at = stay.and_then(|s| policy.due_at(s.entered_at));
        GateView {
            required_approvals: policy.required_approvals,
            allow_self_approval: policy.allow_self_approval,
            due_in_seconds: policy.due_in_seconds,
            on_expiry: policy.on_expiry,
            entered_at: stay.map(|s| s.entered_at),
            due_at,
            overdue: due_at.is_some_and(|due| now > due),
            authors: stay.map(|s| s.authors.clone()).unwrap_or_default(),
            approvals,
            blocked_by,
        }
    }
}

impl WorkflowResponse {
    /// Adds to the gate of each of `views` its own consultations among `blockers` (those of
    /// any of the workflows, as [`crate::WorkflowRepository::gate_blockers`] reads them for a
    /// page at once): see [`GateView::hold`].
    pub fn hold_gates(views: &mut [WorkflowResponse], blockers: Vec<Consultation>) {
        let mut by_feature: BTreeMap<FeatureId, Vec<Consultation>> = BTreeMap::new();
        for consultation in blockers {
            by_feature
                .entry(consultation.feature_id.clone())
                .or_default()
                .push(consultation);
        }
        for view in views {
            if let Some(own) = by_feature.get(&view.feature_id) {
                view.gate.hold(own);
            }
        }
    }

    /// The representation of `workflow` as of `now`.
    pub fn new(workflow: &Workflow, now: Timestamp) -> Self {
        WorkflowResponse {
            feature_id: workflow.feature_id().clone(),
            description: workflow.description().clone(),
            state: workflow.state(),
            version: workflow.version(),
            progress: workflow.progress(now),
            metadata: workflow.metadata().clone(),
            created_at: workflow.created_at(),
            updated_at: workflow.updated_at(),
            completed_at: workflow.completed_at(),
            gate: GateView::new(workflow, now),
        }
    }
}

/// `GET /workflow/{feature_id}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryResponse {
    /// The feature.
    pub feature_id: FeatureId,
    /// Oldest first.
    pub transitions: Vec<Transition>,
}

/// `GET /workflows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListWorkflowsResponse {
    /// This page, ordered by feature id.
    pub items: Vec<WorkflowResponse>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// One event of the log as a CloudEvents 1.0 JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "specversion": "1.0", "id": "42", "source": "orchestrator",
    "type": "workflow.transitioned", "subject": "checkout-v2",
    "time": "2026-11-30T12:00:00Z", "datacontenttype": "application/json",
    "data": {"feature_id": "checkout-v2", "version": 2, "state": "GATE_1", "seq": 2,
             "from": "PHASE_1", "to": "GATE_1", "trigger": "agent_complete",
             "actor": "planner-bot", "actor_kind": "agent", "on_behalf_of": null,
             "reason": null, "override": false, "metadata": {},
             "at": "2026-11-30T12:00:00Z"}
})))]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// The event's place in the log, a decimal number that only grows; resume after it.
    pub id: String,
    /// Always `orchestrator`.
    pub source: String,
    /// `workflow.transitioned`, `gate.overdue`, `consultation.created` or
    /// `consultation.updated`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The feature id of the workflow it happened to.
    pub subject: FeatureId,
    /// When the change was made.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub time: crate::workflow::Timestamp,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// `workflow.transitioned`: the history entry plus `feature_id`, `version` and `state`;
    /// `gate.overdue`: `feature_id`, `due_at`, `approvals` (the stay's, `[{actor, at}]` as in
    /// the workflow's gate), `on_expiry`; `consultation.*`:
    /// the consultation.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// The id as a number; 0 for an id this log did not give.
    pub fn seq(&self) -> u64 {
        self.id.parse().unwrap_or(0)
    }

    /// A `workflow.transitioned` event's history entry, typed (its `seq` is the workflow's
    /// version after it, `to` its state, `subject` its feature id); `None` for an event of
    /// another type, or data that is not a history entry.
    pub fn transition(&self) -> Option<Transition> {
        match self.event_type {
            EventType::WorkflowTransitioned => Transition::deserialize(&self.data).ok(),
            _ => None,
        }
    }
}

impl From<&Event> for CloudEvent {
    fn from(event: &Event) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: event.id.to_string(),
            source: "orchestrator".into(),
            event_type: event.event.event_type,
            subject: event.event.subject.clone(),
            time: event.event.time,
            datacontenttype: "application/json".into(),
            data: event.event.data_value(),
        }
    }
}

/// The query's pairs, refused if one of `once` comes twice (`?limit=5&limit=50`): neither
/// is taken for the other, as with a header given twice. Other keys pass as they are (an
/// unknown one is ignored; events' `type` adds its values up).
fn given_once<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    once: &[&'static str],
) -> Result<Vec<(&'a str, &'a str)>, ValidationError> {
    let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    for (index, (name, _)) in pairs.iter().enumerate() {
        if let Some(field) = once.iter().find(|known| *known == name)
            && pairs[..index].iter().any(|(earlier, _)| earlier == name)
        {
            return Err(ValidationError::new(field, "must be given once, not twice"));
        }
    }
    Ok(pairs)
}

/// `GET /events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsResponse {
    /// In id order.
    pub items: Vec<CloudEvent>,
    /// The last item's id, or past it when rows this server cannot read were passed over, or
    /// when a read filtered by `type` alone looked at its 10 000 ids and found fewer items
    /// (the given `after` on an empty page at the end of the log, or, for a page filtered by
    /// `type` alone that read on through ranges holding none of its types, the start of the
    /// last range it looked through): pass it as `after` next, until it comes back equal to
    /// the `after` sent.
    pub next_after: String,
}

/// What a reader of the log asks for (`GET /events` and `GET /events/stream`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Only events with a greater id; `None`: from the oldest retained event (a page) or from
    /// now on (a stream).
    pub after: Option<u64>,
    /// Which events.
    pub filter: EventFilter,
    /// Page size, 1–1000.
    pub limit: u32,
}

impl EventsQuery {
    /// The largest page.
    pub const MAX_LIMIT: u32 = 1000;
    /// The page size when the caller names none.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// Parses a query string's `(name, value)` pairs; unknown names are ignored. `type` may
    /// repeat or list types separated by commas.
    pub fn parse_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<EventsQuery, ValidationError> {
        let mut query = EventsQuery {
            limit: Self::DEFAULT_LIMIT,
            ..EventsQuery::default()
        };
        let pairs = given_once(pairs, &["after", "limit", "feature_id"])?;
        for (name, value) in pairs {
            match name {
                "after" => {
                    query.after = Some(value.parse().map_err(|_| {
                        ValidationError::new("after", "must be an event id (a whole number)")
                    })?)
                }
                "limit" => {
                    query.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=Self::MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ValidationError::new(
                                "limit",
                                format!("must be between 1 and {}", Self::MAX_LIMIT),
                            )
                        })?
                }
                "feature_id" => query.filter.feature_id = Some(FeatureId::parse(value)?),
                "type" => {
                    for name in value.split(',') {
                        let event_type = EventType::parse_field("type", name)?;
                        if !query.filter.types.contains(&event_type) {
                            query.filter.types.push(event_type);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(query)
    }

    /// The query string for these parameters (without `?`).
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(after) = self.after {
            parts.push(format!("after={after}"));
        }
        if self.limit != 0 {
            parts.push(format!("limit={}", self.limit));
        }
        if let Some(id) = &self.filter.feature_id {
            parts.push(format!("feature_id={id}"));
        }
        if !self.filter.types.is_empty() {
            let types: Vec<&str> = self.filter.types.iter().map(|t| t.as_str()).collect();
            parts.push(format!("type={}", types.join(",")));
        }
        parts.join("&")
    }
}

/// The query of `GET /workflows`, as a client builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListWorkflowsParams {
    /// Only this state.
    pub state: Option<WorkflowState>,
    /// Page size, 1–500 (50 when absent).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only gates past their deadline.
    pub overdue: bool,
}

impl ListWorkflowsParams {
    /// Parses a query string's `(name, value)` pairs; unknown names are ignored.
    pub fn parse_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ListQuery, ValidationError> {
        let mut query = ListQuery {
            state: None,
            overdue: false,
            after: None,
            limit: PageLimit::DEFAULT,
        };
        let pairs = given_once(pairs, &["state", "limit", "cursor", "overdue"])?;
        for (name, value) in pairs {
            match name {
                "state" => {
                    query.state = Some(value.parse().map_err(|e: crate::state::UnknownState| {
                        ValidationError::new("state", e.to_string())
                    })?)
                }
                "limit" => {
                    let limit = value.parse::<u32>().map_err(|_| {
                        ValidationError::new("limit", "must be a whole number between 1 and 500")
                    })?;
                    query.limit = PageLimit::parse(limit)?;
                }
                "cursor" => query.after = Some(cursor::decode(value)?),
                "overdue" => {
                    query.overdue = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(ValidationError::new("overdue", "must be true or false")),
                    }
                }
                _ => {}
            }
        }
        Ok(query)
    }

    /// The query string, without the leading `?`; empty when nothing is set.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(state) = self.state {
            parts.push(format!("state={state}"));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if self.overdue {
            parts.push("overdue=true".to_owned());
        }
        if let Some(cursor) = &self.cursor {
            // Cursors are URL-safe base64; anything else the server refuses anyway.
            parts.push(format!("cursor={}", escape(cursor)));
        }
        parts.join("&")
    }
}

/// Percent-encodes everything but URL-safe characters, for a path segment or a query value.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST /webhooks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebhookRequest {
    /// An absolute `http` or `https` URL without credentials or port 0, at most 2048
    /// characters as given and once percent-encoded (as it is stored and sent). A host that
    /// resolves to a loopback, private or link-local address is refused unless the server
    /// allows private networks.
    pub url: String,
    /// The event types to send; absent or empty: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// Free text for people, at most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CreateWebhookRequest {
    /// A subscription of `url` to every event.
    pub fn new(url: impl Into<String>) -> Self {
        CreateWebhookRequest {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// A webhook: where events are POSTed, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// `wh_` and 32 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The types sent; empty: every type.
    pub event_types: Vec<EventType>,
    /// Free text for people.
    pub description: Option<String>,
    /// When it was created.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub created_at: Timestamp,
}

/// `201` of `POST /webhooks`: the webhook and its signing secret, shown only here. Its
/// `Debug` leaves the secret out, so a logged answer does not give it away.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` and the base64 of 32 random bytes: the key of every delivery's
    /// `webhook-signature`. Keep it; it is never shown again.
    pub secret: String,
}

impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("webhook", &self.webhook)
            .field("secret", &"whsec_…")
            .finish()
    }
}

/// `GET /webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhooksResponse {
    /// Every webhook, oldest first.
    pub items: Vec<Webhook>,
}

/// One event sent (or to be sent) to one webhook. The same delivery keeps its id on every
/// attempt; it is the `webhook-id` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// `msg_` and 32 hex digits; the `webhook-id` header of every attempt.
    pub id: String,
    /// The event's id in the log.
    pub event_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// `pending` (attempted again at `next_attempt_at`), `delivered` or `failed`.
    pub status: crate::webhook::DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it is attempted next (pending only).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub next_attempt_at: Option<Timestamp>,
    /// When a 2xx answer last arrived: kept through a redelivery, whatever its attempts get.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339_option")]
    pub delivered_at: Option<Timestamp>,
    /// When the event was turned into this delivery (within about a second of the event's
    /// commit, later while a backlog is worked through); it is deleted
    /// `EVENTS_RETENTION_SECONDS` after, once delivered or failed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "crate::workflow::rfc3339")]
    pub created_at: Timestamp,
}

/// `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveriesResponse {
    /// Newest event first.
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// The query of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveriesQuery {
    /// Only deliveries in this status.
    pub status: Option<crate::webhook::DeliveryStatus>,
    /// Page size, 1–500 (50 when absent).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of deliveries as the server reads the query: only events below `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveriesPage {
    /// Only deliveries in this status.
    pub status: Option<crate::webhook::DeliveryStatus>,
    /// Only deliveries of events with a smaller id.
    pub before: Option<u64>,
    /// Page size.
    pub limit: PageLimit,
}

impl DeliveriesQuery {
    /// Parses a query string's `(name, value)` pairs; unknown names are ignored.
    pub fn parse_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<DeliveriesPage, ValidationError> {
        let mut page = DeliveriesPage {
            status: None,
            before: None,
            limit: PageLimit::DEFAULT,
        };
        let pairs = given_once(pairs, &["status", "limit", "cursor"])?;
        for (name, value) in pairs {
            match name {
                "status" => {
                    page.status =
                        Some(crate::webhook::DeliveryStatus::parse(value).ok_or_else(|| {
                            ValidationError::new(
                                "status",
                                "must be one of pending, delivered, failed",
                            )
                        })?)
                }
                "limit" => {
                    let limit = value.parse::<u32>().map_err(|_| {
                        ValidationError::new("limit", "must be a whole number between 1 and 500")
                    })?;
                    page.limit = PageLimit::parse(limit)?;
                }
                "cursor" => page.before = Some(cursor::decode_event(value)?),
                _ => {}
            }
        }
        Ok(page)
    }

    /// The query string, without the leading `?`; empty when nothing is set.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            parts.push(format!("status={status}"));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(cursor) = &self.cursor {
            parts.push(format!("cursor={}", escape(cursor)));
        }
        parts.join("&")
    }
}

/// The opaque paging cursor: URL-safe base64 of a versioned position.
pub mod cursor {
    use super::*;

    const PREFIX: &str = "v1:";

    /// The cursor that continues after `last`.
    pub fn encode(last: &FeatureId) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{PREFIX}{last}"))
    }

    /// The position a cursor names, or a `cursor` validation error.
    pub fn decode(cursor: &str) -> Result<FeatureId, ValidationError> {
        let malformed = || ValidationError::new("cursor", "malformed cursor");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let id = text.strip_prefix(PREFIX).ok_or_else(malformed)?;
        FeatureId::parse(id).map_err(|_| malformed())
    }

    /// The cursor that continues below the event `last` (a page of deliveries): `e` and the
    /// event's id, no leading zero.
    pub fn encode_event(last: u64) -> String {
        format!("e{last}")
    }

    /// The event id a deliveries cursor names, or a `cursor` validation error.
    pub fn decode_event(cursor: &str) -> Result<u64, ValidationError> {
        let malformed = || ValidationError::new("cursor", "malformed cursor");
        let digits = cursor.strip_prefix('e').ok_or_else(malformed)?;
        let well_formed = (1..=18).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return Err(malformed());
        }
        digits.parse().map_err(|_| malformed())
    }
}

/// `POST /workflow/{feature_id}/consultations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsultRequest {
    /// The expert area: `architecture`, `testing`, `frontend`, `backend`, `devops`, `security`.
    pub topic: String,
    /// The question, 10–10 000 characters.
    pub question: String,
    /// Extra context for the expert, at most 10 000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl ConsultRequest {
    /// A question on a topic, without context.
    pub fn new(topic: impl Into<String>, question: impl Into<String>) -> Self {
        ConsultRequest {
            topic: topic.into(),
            question: question.into(),
            context: None,
        }
    }
}

/// `POST /workflow/{feature_id}/consultations/{consultation_id}/respond`: a human reviewer's
/// answer to the consultation's escalation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RespondRequest {
    /// `confirm` (the expert's answer stands), `correct` (yours replaces it) or `add_context`
    /// (ask again with it).
    pub action: String,
    /// The correction or the context: required for `correct` and `add_context`, at most
    /// 10 000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Who answers (sent to the hub as the responder): not blank, at most 128 characters, no
    /// invisible characters, not `system` (the orchestrator's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `human` or `agent`: trusted without principals; with principals the token's principal
    /// says, but `agent` is refused whoever sends it. Only a human answers an escalation: an
    /// agent is 403 `FORBIDDEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::principal::ActorKind>))]
    pub actor_kind: Option<String>,
}

impl RespondRequest {
    /// An answer with an action only.
    pub fn new(action: impl Into<String>) -> Self {
        RespondRequest {
            action: action.into(),
            ..Self::default()
        }
    }
}

/// `GET /workflow/{feature_id}/consultations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsultationsResponse {
    /// Oldest first; pending ones refreshed from the Agent Hub when it answers.
    pub items: Vec<crate::consultation::Consultation>,
}

/// `GET /workflows/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SummaryResponse {
    /// Every state, with how many workflows are in it.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, u64>))]
    pub counts: BTreeMap<WorkflowState, u64>,
    /// All workflows.
    pub total: u64,
    /// Workflows whose stay at the gate is past its deadline.
    #[serde(default)]
    pub overdue: u64,
}

impl From<&Summary> for SummaryResponse {
    fn from(summary: &Summary) -> Self {
        SummaryResponse {
            counts: summary.counts.as_map().clone(),
            total: summary.counts.total(),
            overdue: summary.overdue,
        }
    }
}

/// Overall health: `healthy`, `degraded` (still serving; a dependency such as the Agent Hub
/// is unreachable) or `unhealthy` (storage unreachable; answered with 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// All checks pass.
    Healthy,
    /// Serving, but a non-essential dependency fails.
    Degraded,
    /// Cannot serve: storage fails.
    Unhealthy,
}

/// One dependency's check in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    /// `ok` or `error`.
    pub status: String,
    /// What failed, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// Overall status.
    pub status: HealthStatus,
    /// The service's version.
    pub version: String,
    /// Always `orchestrator`.
    pub service: String,
    /// Whole seconds since the process started serving.
    pub uptime_seconds: u64,
    /// Each dependency by name (`database`, …).
    pub checks: BTreeMap<String, HealthCheck>,
}

/// `GET /`: what this service is and where to look next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceInfo {
    /// Always `orchestrator`.
    pub service: String,
    /// The service's version.
    pub version: String,
    /// Swagger UI.
    pub docs: String,
    /// ReDoc.
    pub redoc: String,
    /// The OpenAPI document.
    pub openapi: String,
    /// The health check.
    pub health: String,
    /// The reviewer board's overview (a web page). Empty from a server before it was named
    /// here.
    #[serde(default)]
    pub board: String,
    /// The event log (a page of it; `/events/stream` follows it).
    #[serde(default)]
    pub events: String,
    /// The metrics (OpenMetrics text).
    #[serde(default)]
    pub metrics: String,
}

/// Route paths, built in one place for the router and the client.
pub mod paths {
    use crate::values::FeatureId;

    /// `POST`: start a workflow.
    pub const WORKFLOW_START: &str = "/workflow/start";
    /// Router pattern of one workflow.
    pub const WORKFLOW: &str = "/workflow/{feature_id}";
    /// Router pattern of an advance.
    pub const ADVANCE: &str = "/workflow/{feature_id}/advance";
    /// Router pattern of a history.
    pub const HISTORY: &str = "/workflow/{feature_id}/history";
    /// Router pattern of a workflow's consultations.
    pub const CONSULTATIONS: &str = "/workflow/{feature_id}/consultations";
    /// Router pattern of a reviewer's answer to a consultation's escalation.
    pub const RESPOND: &str = "/workflow/{feature_id}/consultations/{consultation_id}/respond";
    /// `GET`: list workflows.
    pub const WORKFLOWS: &str = "/workflows";
    /// `GET`: counts by state.
    pub const SUMMARY: &str = "/workflows/summary";
    /// `GET`: a page of the event log.
    pub const EVENTS: &str = "/events";
    /// `GET`: the event log as a server-sent event stream.
    pub const EVENT_STREAM: &str = "/events/stream";
    /// `POST`: subscribe a URL to events; `GET`: every subscription.
    pub const WEBHOOKS: &str = "/webhooks";
    /// Router pattern of one webhook.
    pub const WEBHOOK: &str = "/webhooks/{webhook_id}";
    /// Router pattern of a webhook's deliveries.
    pub const DELIVERIES: &str = "/webhooks/{webhook_id}/deliveries";
    /// Router pattern of a delivery attempted again.
    pub const REDELIVER: &str = "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver";
    /// `GET`: health.
    pub const HEALTH: &str = "/health";
    /// `GET`: Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// `GET`: the OpenAPI document.
    pub const OPENAPI: &str = "/openapi.json";
    /// `GET`: Swagger UI.
    pub const DOCS: &str = "/docs";
    /// `GET`: ReDoc.
    pub const REDOC: &str = "/redoc";
    /// `GET`: service info.
    pub const ROOT: &str = "/";
    /// `GET`: the reviewer board's overview (a web page).
    pub const BOARD: &str = "/board";

    /// `/workflow/{feature_id}`; feature ids are URL-safe by construction.
    pub fn workflow(id: &FeatureId) -> String {
        format!("/workflow/{id}")
    }

    /// `/workflow/{feature_id}/advance`.
    pub fn advance(id: &FeatureId) -> String {
        format!("/workflow/{id}/advance")
    }

    /// `/workflow/{feature_id}/history`.
    pub fn history(id: &FeatureId) -> String {
        format!("/workflow/{id}/history")
    }

    /// `/workflow/{feature_id}/consultations`.
    pub fn consultations(id: &FeatureId) -> String {
        format!("/workflow/{id}/consultations")
    }

    /// `/webhooks/{webhook_id}`; ids are URL-safe by construction, anything else is escaped.
    pub fn webhook(id: &str) -> String {
        format!("/webhooks/{}", super::escape(id))
    }

    /// `/webhooks/{webhook_id}/deliveries`.
    pub fn deliveries(id: &str) -> String {
        format!("/webhooks/{}/deliveries", super::escape(id))
    }

    /// `/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver`.
    pub fn redeliver(id: &str, delivery: &str) -> String {
        format!(
            "/webhooks/{}/deliveries/{}/redeliver",
            super::escape(id),
            super::escape(delivery)
        )
    }

    /// `/workflow/{feature_id}/consultations/{consultation_id}/respond`.
    pub fn respond(id: &FeatureId, consultation: &crate::consultation::ConsultationId) -> String {
        format!("/workflow/{id}/consultations/{consultation}/respond")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transitioned_event_reads_back_as_its_history_entry_and_no_other_does() {
        let entry: Transition = serde_json::from_value(json!({
            "seq": 2, "from": "PHASE_1", "to": "GATE_1", "trigger": "agent_complete",
            "actor": "planner-bot", "actor_kind": "agent", "on_behalf_of": null,
            "reason": null, "override": false, "metadata": {"pr": 7},
            "at": "2026-11-30T12:00:00Z"
        }))
        .unwrap();
        let id = FeatureId::parse("checkout-v2").unwrap();
        let event = Event {
            id: 41,
            event: crate::event::NewEvent {
                event_type: EventType::WorkflowTransitioned,
                subject: id.clone(),
                time: entry.at,
                data: crate::event::NewEvent::transitioned_data(&id, &entry),
            },
        };
        // As a webhook receiver or a stream reader gets it: JSON text.
        let text = serde_json::to_string(&CloudEvent::from(&event)).unwrap();
        let read: CloudEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(read.transition(), Some(entry));

        let mut overdue = read.clone();
        overdue.event_type = EventType::GateOverdue;
        assert_eq!(overdue.transition(), None);
        let mut unreadable = read;
        unreadable.data = json!({"feature_id": "checkout-v2"});
        assert_eq!(unreadable.transition(), None);
    }

    #[test]
    fn a_blocker_of_a_kind_this_version_does_not_know_is_read_as_unknown() {
        let blocked: Vec<Blocker> = serde_json::from_value(json!([
            {"kind": "approvals", "have": 0, "need": 2},
            {"kind": "deadline", "at": "2026-12-06T00:00:00Z"},
        ]))
        .unwrap();
        assert_eq!(
            blocked,
            [Blocker::Approvals { have: 0, need: 2 }, Blocker::Unknown]
        );
        assert_eq!(
            serde_json::to_value(Blocker::Unknown).unwrap(),
            json!({"kind": "unknown"})
        );
    }

    #[test]
    fn a_created_webhook_s_debug_leaves_its_secret_out() {
        let created: CreatedWebhook = serde_json::from_value(json!({
            "id": "wh_1",
            "url": "https://example.com/hook",
            "event_types": [],
            "created_at": "2026-12-06T00:00:00Z",
            "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        }))
        .unwrap();
        let shown = format!("{created:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("wh_1"), "{shown}");
    }

    #[test]
    fn error_codes_serialise_as_the_spec_spells_them() {
        let body = ErrorEnvelope {
            error: ApiErrorBody {
                code: ErrorCode::WorkflowNotFound,
                message: "workflow 'x' not found".into(),
                details: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": "WORKFLOW_NOT_FOUND", "message": "workflow 'x' not found"}})
        );
        for (code, text, status) in [
            (ErrorCode::InvalidJson, "INVALID_JSON", 400),
            (
                ErrorCode::UnsupportedMediaType,
                "UNSUPPORTED_MEDIA_TYPE",
                415,
            ),
            (ErrorCode::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
            (ErrorCode::MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
            (ErrorCode::GateBlocked, "GATE_BLOCKED", 409),
            (ErrorCode::SelfApproval, "SELF_APPROVAL", 409),
            (ErrorCode::AlreadyApproved, "ALREADY_APPROVED", 409),
            (
                ErrorCode::IdempotencyKeyInUse,
                "IDEMPOTENCY_KEY_IN_USE",
                409,
            ),
            (
                ErrorCode::IdempotencyKeyReused,
                "IDEMPOTENCY_KEY_REUSED",
                422,
            ),
            (ErrorCode::EventsExpired, "EVENTS_EXPIRED", 410),
            (ErrorCode::EventsCursorAhead, "EVENTS_CURSOR_AHEAD", 409),
            (ErrorCode::WebhookNotFound, "WEBHOOK_NOT_FOUND", 404),
            (ErrorCode::DeliveryNotFound, "DELIVERY_NOT_FOUND", 404),
            (ErrorCode::AgentHubError, "AGENT_HUB_ERROR", 502),
            (ErrorCode::DatabaseUnavailable, "DATABASE_UNAVAILABLE", 503),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(text));
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
            assert_eq!(code.status(), status);
        }
    }

    #[test]
    fn every_error_code_is_named_as_serde_writes_it() {
        for code in [
            ErrorCode::ValidationError,
            ErrorCode::InvalidJson,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::WorkflowNotFound,
            ErrorCode::WorkflowAlreadyExists,
            ErrorCode::InvalidTransition,
            ErrorCode::VersionConflict,
            ErrorCode::GateBlocked,
            ErrorCode::SelfApproval,
            ErrorCode::AlreadyApproved,
            ErrorCode::WorkflowNotActive,
            ErrorCode::AgentHubUnavailable,
            ErrorCode::AgentHubError,
            ErrorCode::ConsultationNotFound,
            ErrorCode::ConsultationNotPending,
            ErrorCode::AlreadyResolved,
            ErrorCode::IdempotencyKeyInUse,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::EventsExpired,
            ErrorCode::EventsCursorAhead,
            ErrorCode::WebhookNotFound,
            ErrorCode::DeliveryNotFound,
            ErrorCode::DatabaseUnavailable,
            ErrorCode::BadRequest,
            ErrorCode::RequestTimeout,
            ErrorCode::UriTooLong,
            ErrorCode::HeadersTooLarge,
            ErrorCode::ServiceUnavailable,
            ErrorCode::Internal,
            ErrorCode::Unknown,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn gate_numbers_may_be_whole_floats_but_nothing_else() {
        let gate: GateRequest =
            serde_json::from_str(r#"{"required_approvals":2.0,"due_in_seconds":60}"#).unwrap();
        assert_eq!(gate.required_approvals, Some(2));
        assert_eq!(gate.due_in_seconds, Some(60));
        assert!(serde_json::from_str::<GateRequest>(r#"{"due_in_seconds":1.5}"#).is_err());
        // Whole numbers out of range read as numbers the range check refuses by name.
        let out: GateRequest =
            serde_json::from_str(r#"{"required_approvals":-1,"due_in_seconds":-5.0}"#).unwrap();
        assert_eq!(
            (out.required_approvals, out.due_in_seconds),
            (Some(0), Some(0))
        );
        let huge: GateRequest =
            serde_json::from_str(r#"{"due_in_seconds":18446744073709551616}"#).unwrap();
        assert_eq!(huge.due_in_seconds, Some(u64::MAX));
    }

    #[test]
    fn an_expected_version_may_be_a_whole_float_but_nothing_else() {
        let read =
            |json: &str| serde_json::from_str::<AdvanceRequest>(json).map(|r| r.expected_version);
        assert_eq!(
            read(r#"{"trigger":"x","expected_version":1}"#).unwrap(),
            Some(1)
        );
        assert_eq!(
            read(r#"{"trigger":"x","expected_version":1.0}"#).unwrap(),
            Some(1)
        );
        assert_eq!(
            read(r#"{"trigger":"x","expected_version":null}"#).unwrap(),
            None
        );
        assert_eq!(read(r#"{"trigger":"x"}"#).unwrap(), None);
        for bad in ["1.5", "-1", "-1.0", "1e300", "\"1\""] {
            assert!(
                read(&format!(r#"{{"trigger":"x","expected_version":{bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unknown_error_code_from_a_newer_server_still_decodes() {
        let code: ErrorCode = serde_json::from_value(json!("SOMETHING_NEW")).unwrap();
        assert_eq!(code, ErrorCode::Unknown);
    }

    #[test]
    fn a_deliveries_cursor_round_trips_and_a_malformed_one_is_refused() {
        assert_eq!(cursor::decode_event(&cursor::encode_event(42)), Ok(42));
        for bad in [
            "",
            "e",
            "e0",
            "e042",
            "42",
            "e4x",
            "e1234567890123456789",
            "E42",
        ] {
            assert_eq!(
                cursor::decode_event(bad).unwrap_err().field,
                "cursor",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cursor_round_trips_and_a_malformed_one_is_refused() {
        let id = FeatureId::parse("008-services-architecture").unwrap();
        assert_eq!(cursor::decode(&cursor::encode(&id)), Ok(id));
        for bad in ["", "!!", "Zm9v", "djE6IGJhZA"] {
            assert_eq!(cursor::decode(bad).unwrap_err().field, "cursor", "{bad}");
        }
    }

    #[test]
    fn list_parameters_are_parsed_with_defaults_and_named_errors() {
        let query = ListWorkflowsParams::parse_query([("state", "GATE_1"), ("x", "y")]).unwrap();
        assert_eq!(
            (query.state, query.limit.get()),
            (Some(WorkflowState::Gate1), 50)
        );
        for (name, value) in [
            ("limit", "0"),
            ("limit", "501"),
            ("limit", "ten"),
            ("state", "gate"),
            ("overdue", "yes"),
        ] {
            let err = ListWorkflowsParams::parse_query([(name, value)]).unwrap_err();
            assert_eq!(err.field, name);
        }
    }

    #[test]
    fn list_parameters_build_the_query_the_server_parses() {
        let id = FeatureId::parse("a.b").unwrap();
        let params = ListWorkflowsParams {
            state: Some(WorkflowState::Done),
            limit: Some(7),
            cursor: Some(cursor::encode(&id)),
            overdue: true,
        };
        let query = params.to_query();
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        let parsed = ListWorkflowsParams::parse_query(pairs).unwrap();
        assert_eq!(parsed.after, Some(id));
        assert!(parsed.overdue);
        assert_eq!(
            (parsed.state, parsed.limit.get()),
            (Some(WorkflowState::Done), 7)
        );
    }

    #[test]
    fn a_query_key_given_twice_is_refused_but_events_types_add_up() {
        let twice = ListWorkflowsParams::parse_query([("limit", "5"), ("limit", "50")]);
        assert_eq!(twice.unwrap_err().field, "limit");
        let twice = EventsQuery::parse_query([("feature_id", "a"), ("feature_id", "b")]);
        assert_eq!(twice.unwrap_err().field, "feature_id");
        let twice = DeliveriesQuery::parse_query([("status", "failed"), ("status", "pending")]);
        assert_eq!(twice.unwrap_err().field, "status");
        let types =
            EventsQuery::parse_query([("type", "gate.overdue"), ("type", "workflow.transitioned")])
                .unwrap();
        assert_eq!(types.filter.types.len(), 2);
        // An unknown key, even twice, is ignored.
        assert!(EventsQuery::parse_query([("x", "1"), ("x", "2")]).is_ok());
    }

    #[test]
    fn the_workflow_representation_matches_the_spec() {
        use crate::workflow::TransitionContext;
        use chrono::{Duration, TimeZone, Utc};
        let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        let (workflow, _) = Workflow::start(
            FeatureId::parse("008-services-architecture").unwrap(),
            Description::parse("Refactor to microservices").unwrap(),
            Metadata::default(),
            TransitionContext::at(t0),
        );
        let body = WorkflowResponse::new(&workflow, t0 + Duration::seconds(12));
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "feature_id": "008-services-architecture",
                "description": "Refactor to microservices",
                "state": "PHASE_1",
                "version": 1,
                "progress": {"percent": 25, "rework_count": 0,
                             "time_in_state_seconds": {"PHASE_1": 12}},
                "metadata": {},
                "created_at": "2026-11-24T10:00:00Z",
                "updated_at": "2026-11-24T10:00:00Z",
                "completed_at": null,
                "gate": {"required_approvals": 1, "allow_self_approval": false,
                         "due_in_seconds": null, "on_expiry": "flag",
                         "entered_at": null, "due_at": null, "overdue": false,
                         "authors": [], "approvals": [], "blocked_by": []}
            })
        );
        let back: WorkflowResponse =
            serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
        assert_eq!(back, body);
        // A newer server's blocker of another kind, and a field this version does not know:
        // the answer is still read.
        let mut newer = serde_json::to_value(&body).unwrap();
        newer["gate"]["blocked_by"] = json!([{"kind": "deadline", "at": "2026-11-25T10:00:00Z"}]);
        newer["labels"] = json!(["payments"]);
        let read: WorkflowResponse = serde_json::from_value(newer).unwrap();
        assert_eq!(read.gate.blocked_by, [Blocker::Unknown]);
    }

    #[test]
    fn the_summary_lists_all_five_states() {
        let counts =
            crate::StateCounts::from_pairs([(WorkflowState::Phase1, 3), (WorkflowState::Done, 2)]);
        assert_eq!(
            serde_json::to_value(SummaryResponse::from(&Summary { counts, overdue: 1 })).unwrap(),
            json!({"counts": {"IDLE": 0, "PHASE_1": 3, "GATE_1": 0, "PHASE_2": 0, "DONE": 2}, "total": 5, "overdue": 1})
        );
    }
}
