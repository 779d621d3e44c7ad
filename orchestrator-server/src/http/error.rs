//! `ApiError`: every way a request can fail, and the one mapping from failure to status and
//! error envelope (docs/API.md, "Errors").
//!
//! Internal failures are logged here, once, and their text never reaches the client.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use orchestrator_core::api::{ApiErrorBody, ErrorCode, ErrorEnvelope};
use orchestrator_core::{Error as CoreError, HubError, RepositoryError, ValidationError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field breaks a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The body is not JSON or not the expected shape.
    #[error("request body is not valid JSON for this endpoint")]
    InvalidJson(String),
    /// The body's framing is broken (a bad chunk, the connection ended mid-body): HTTP, not
    /// JSON, is at fault. The HTTP library's words go to the log.
    #[error("the request body could not be read: it is not well-formed HTTP")]
    UnreadableBody,
    /// A body sent without the content type the route reads (`application/json` for the
    /// API, a form for the board's).
    #[error("request body must be sent with Content-Type: {0}")]
    UnsupportedMediaType(&'static str),
    /// A body sent with a `Content-Encoding` (gzip, …): the server reads bodies as sent.
    #[error("request body must not be encoded (Content-Encoding: {0}); send it as it is")]
    UnsupportedEncoding(String),
    /// The body is over the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A token is configured and the request lacks it or has another.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A token is configured and the request has more than one `Authorization` header.
    #[error("more than one Authorization header: send one")]
    TwoAuthorizations,
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists, not with this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method asked.
        method: String,
        /// The methods the route serves, comma-separated.
        allow: String,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The request could not be answered in time.
    #[error("the request could not be answered in time; retry later")]
    Deadline,
    /// The request's body waited too long for memory to be read into: other requests' bodies
    /// were holding it.
    #[error("too many request bodies are being read at once; retry later")]
    BodiesBusy,
    /// A request with an idempotency key was not answered in time. It runs on (it is not cut
    /// off when its answer is given up on), so its change may still be made, and its answer is
    /// then kept for the key.
    #[error(
        "the request could not be answered in time and may still be carried out; send it again with the same Idempotency-Key for its answer"
    )]
    KeyedDeadline,
    /// The caller is known but may not do this; the text says why.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The caller's principal lacks the role this needs.
    #[error("forbidden: role needed: {0}")]
    RoleNeeded(orchestrator_core::Role),
    /// As many consultations as allowed are being asked already.
    #[error("too many consultations are being asked at once; retry later")]
    TooManyAsks,
    /// A new webhook's host waited too long for a turn to be looked up (other lookups hold
    /// every turn, waiting on the system's resolver).
    #[error(
        "the webhook's host could not be looked up yet: other lookups are waiting on the name servers; retry later"
    )]
    LookupsBusy,
    /// A new webhook's host could not be looked up: its name servers did not answer (in
    /// time), or said to try again.
    #[error(
        "the webhook's host '{0}' could not be looked up: its name servers did not answer; retry later"
    )]
    LookupFailed(String),
    /// As many event streams as this server keeps open are open already.
    #[error(
        "as many event streams as this server keeps are open; retry later, or raise MAX_CONNECTIONS"
    )]
    TooManyStreams,
    /// The caller holds as many event streams as one may (a quarter of the server's).
    #[error(
        "this caller holds {0} event streams, as many as one may on this server; close one, or retry later"
    )]
    CallersStreams(usize),
    /// A request with this idempotency key is still being answered.
    #[error("a request with this Idempotency-Key is still being answered; retry later")]
    IdempotencyKeyInUse,
    /// This idempotency key was used for another request.
    #[error(
        "this Idempotency-Key was used for a different request (method, path, If-Match or body)"
    )]
    IdempotencyKeyReused,
    /// No webhook with this id.
    #[error("webhook '{0}' not found")]
    WebhookNotFound(String),
    /// The webhook has no delivery with this id.
    #[error("delivery '{0}' not found")]
    DeliveryNotFound(String),
    /// What the orchestrator refused or failed at.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The Agent Hub failed while an answer to an escalation was forwarded to it: as
    /// [`ApiError::Core`], but its details say the answer may have reached the hub all the
    /// same.
    #[error(transparent)]
    Forwarded(CoreError),
    /// A bug; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<RepositoryError> for ApiError {
    fn from(error: RepositoryError) -> Self {
        ApiError::Core(CoreError::Storage(error))
    }
}

/// The details of an [`ApiError::Forwarded`].
pub const FORWARDED: &str = "the answer may have reached the agent hub all the same: read the consultation before answering again";

/// `Result` with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// A handler that panicked (a bug), with the message it panicked with: 500, logged.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        ApiError::Internal(format!(
            "the request's handler panicked: {}",
            crate::panic_message(payload)
        ))
    }

    /// The error body: code, message, details.
    pub fn body(&self) -> ApiErrorBody {
        let (code, details) = match self {
            ApiError::Validation(e) => (ErrorCode::ValidationError, Some(field_detail(e))),
            ApiError::InvalidJson(detail) => (ErrorCode::InvalidJson, Some(vec![detail.clone()])),
            ApiError::UnreadableBody => (ErrorCode::BadRequest, None),
            ApiError::UnsupportedMediaType(_) | ApiError::UnsupportedEncoding(_) => {
                (ErrorCode::UnsupportedMediaType, None)
            }
            ApiError::PayloadTooLarge { .. } => (ErrorCode::PayloadTooLarge, None),
            ApiError::Unauthorized | ApiError::TwoAuthorizations => (ErrorCode::Unauthorized, None),
            ApiError::NotFound(_) => (ErrorCode::NotFound, None),
            ApiError::MethodNotAllowed { .. } => (ErrorCode::MethodNotAllowed, None),
            ApiError::RequestTimeout => (ErrorCode::RequestTimeout, None),
            ApiError::Deadline | ApiError::KeyedDeadline => (ErrorCode::ServiceUnavailable, None),
            ApiError::BodiesBusy
            | ApiError::TooManyAsks
            | ApiError::LookupsBusy
            | ApiError::LookupFailed(_)
            | ApiError::TooManyStreams
            | ApiError::CallersStreams(_) => (ErrorCode::ServiceUnavailable, None),
            ApiError::Forbidden(why) => (ErrorCode::Forbidden, Some(vec![why.clone()])),
            ApiError::RoleNeeded(role) => (
                ErrorCode::Forbidden,
                Some(vec![format!("role needed: {role}")]),
            ),
            ApiError::IdempotencyKeyInUse => (ErrorCode::IdempotencyKeyInUse, None),
            ApiError::IdempotencyKeyReused => (ErrorCode::IdempotencyKeyReused, None),
            ApiError::WebhookNotFound(_) => (ErrorCode::WebhookNotFound, None),
            ApiError::DeliveryNotFound(_) => (ErrorCode::DeliveryNotFound, None),
            ApiError::Core(e) => core_code(e),
            // Not "nothing was stored": the hub may have taken the answer.
            ApiError::Forwarded(e) => (core_code(e).0, Some(vec![FORWARDED.to_owned()])),
            ApiError::Internal(_) => (ErrorCode::Internal, None),
        };
        let message = match code {
            ErrorCode::Internal => "internal error".to_owned(),
            ErrorCode::DatabaseUnavailable => "the database is unavailable".to_owned(),
            ErrorCode::AgentHubUnavailable => {
                "the agent hub cannot be reached or did not answer in time".to_owned()
            }
            ErrorCode::AgentHubError => "the agent hub answered with an error".to_owned(),
            // The hub's message about the topic stays in the log.
            _ if matches!(
                self,
                ApiError::Core(CoreError::Hub(_)) | ApiError::Forwarded(CoreError::Hub(_))
            ) =>
            {
                "the agent hub has no expert for this topic".to_owned()
            }
            _ => self.to_string(),
        };
        ApiErrorBody {
            code,
            message,
            details,
        }
    }

    /// The response: status, envelope, and the headers some statuses require.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = self.body();
        match &body.code {
            ErrorCode::Internal | ErrorCode::DatabaseUnavailable => {
                tracing::error!(error = %self, detail = ?self, "request failed");
            }
            ErrorCode::AgentHubError | ErrorCode::AgentHubUnavailable => {
                tracing::warn!(error = %self, "agent hub call failed");
            }
            // A decision the gate's rules refused (an agent's, an author's own, one given
            // twice) is on the log with its caller (the request's span names the principal).
            ErrorCode::Forbidden | ErrorCode::SelfApproval | ErrorCode::AlreadyApproved => {
                tracing::info!(code = body.code.as_str(), error = %self, "request refused");
            }
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let status = status_of(body.code);
        let mut response = super::body::json_response(status, &ErrorEnvelope { error: body });
        self.add_headers(response.headers_mut());
        response
    }

    /// The headers that go with this error whatever the body's form (`Allow`, `Retry-After`,
    /// `WWW-Authenticate`): the board's error pages send them too.
    pub fn add_headers(&self, headers: &mut http::HeaderMap) {
        match self {
            ApiError::Unauthorized | ApiError::TwoAuthorizations => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::BodiesBusy
            | ApiError::TooManyAsks
            | ApiError::LookupsBusy
            | ApiError::LookupFailed(_)
            | ApiError::TooManyStreams
            | ApiError::CallersStreams(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::KeyedDeadline => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // Whether the key's first request is still being answered or this request
            // outlived its lease and a retry took the key over, the answer will be kept for a
            // next try.
            ApiError::IdempotencyKeyInUse
            | ApiError::Core(CoreError::Storage(RepositoryError::KeyTakenOver(_))) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
    }
}

/// The HTTP status an error code answers with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn core_code(error: &CoreError) -> (ErrorCode, Option<Vec<String>>) {
    match error {
        CoreError::Validation(e) => (ErrorCode::ValidationError, Some(field_detail(e))),
        CoreError::NotFound(_) => (ErrorCode::WorkflowNotFound, None),
        CoreError::AlreadyExists(_) => (ErrorCode::WorkflowAlreadyExists, None),
        CoreError::Transition(orchestrator_core::TransitionError::AgentMayNotDecide { .. }) => (
            ErrorCode::Forbidden,
            Some(vec!["actor_kind: agent".to_owned()]),
        ),
        CoreError::Transition(orchestrator_core::TransitionError::OverrideNeedsAdmin) => (
            ErrorCode::Forbidden,
            Some(vec!["role needed: admin".to_owned()]),
        ),
        CoreError::Transition(orchestrator_core::TransitionError::ReasonRequired) => (
            ErrorCode::ValidationError,
            Some(vec!["reason: a rejection or an override needs a reason".to_owned()]),
        ),
        CoreError::Transition(orchestrator_core::TransitionError::ActorRequired { required }) => (
            ErrorCode::ValidationError,
            Some(vec![format!(
                "actor: this gate needs {required} distinct approvals, so an approval must name its actor"
            )]),
        ),
        CoreError::Transition(orchestrator_core::TransitionError::AlreadyApproved { actor }) => (
            ErrorCode::AlreadyApproved,
            Some(vec![format!("actor: {actor} approved this stay at the gate already")]),
        ),
        CoreError::Transition(orchestrator_core::TransitionError::SelfApproval { actor }) => (
            ErrorCode::SelfApproval,
            Some(vec![format!("actor: {actor} made the work at this gate")]),
        ),
        // Converted to `GateBlocked` by the core; made so by hand, it is answered the same.
        CoreError::Transition(orchestrator_core::TransitionError::GateBlocked {
            escalations,
            asking,
        }) => core_code(&CoreError::GateBlocked {
            escalations: escalations.clone(),
            asking: asking.clone(),
        }),
        CoreError::Transition(e @ orchestrator_core::TransitionError::NotAllowed { state, .. }) => {
            let allowed: Vec<&str> = e.allowed().iter().map(|t| t.as_str()).collect();
            (
                ErrorCode::InvalidTransition,
                Some(vec![
                    format!("state: {state}"),
                    format!("allowed_triggers: {}", allowed.join(", ")),
                ]),
            )
        }
        CoreError::VersionConflict { expected, actual } => (
            ErrorCode::VersionConflict,
            Some(vec![
                format!("expected_version: {expected}"),
                format!("current_version: {actual}"),
            ]),
        ),
        CoreError::DeadlineFirst { due_at, .. } => (
            ErrorCode::VersionConflict,
            Some(vec![format!(
                "the gate passed its deadline ({}) and the workflow changed meanwhile; read it again",
                due_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )]),
        ),
        CoreError::GateBlocked {
            escalations,
            asking,
        } => (
            ErrorCode::GateBlocked,
            // Escalation ids as they are; consultations the hub has not answered yet named so.
            Some(
                escalations
                    .iter()
                    .map(ToString::to_string)
                    .chain(asking.iter().map(|id| format!("consultation {id} is still being asked")))
                    .collect(),
            ),
        ),
        CoreError::ConsultationNotFound { .. } => (ErrorCode::ConsultationNotFound, None),
        CoreError::AgentMayNotRespond => (
            ErrorCode::Forbidden,
            Some(vec![
                "actor_kind: agent; only a human answers an escalation".to_owned(),
            ]),
        ),
        CoreError::NotPending { status, .. } => (
            ErrorCode::ConsultationNotPending,
            Some(vec![format!("status: {}", status.as_str())]),
        ),
        CoreError::AlreadyResolved { .. } => (
            ErrorCode::AlreadyResolved,
            Some(vec![
                "a human answered this escalation at the agent hub already; the consultation shows that answer"
                    .to_owned(),
            ]),
        ),
        CoreError::NotActive { state, .. } => (
            ErrorCode::WorkflowNotActive,
            Some(vec![format!("state: {state}")]),
        ),
        // The hub's own words (its URL, its messages, a transport library's text) stay in the
        // log; the client is told what happened in ours.
        CoreError::Hub(HubError::UnknownTopic { topic, .. }) => (
            ErrorCode::ValidationError,
            Some(vec![format!(
                "topic: the agent hub has no expert for topic '{topic}'"
            )]),
        ),
        CoreError::Hub(HubError::Unavailable(_)) => (
            ErrorCode::AgentHubUnavailable,
            Some(vec![
                "nothing was stored; try again once the agent hub answers"
                    .to_owned(),
            ]),
        ),
        CoreError::Hub(_) => (
            ErrorCode::AgentHubError,
            Some(vec![
                "nothing was stored; the agent hub's words are in the server's log"
                    .to_owned(),
            ]),
        ),
        CoreError::EventsExpired { .. } => (
            ErrorCode::EventsExpired,
            Some(vec![
                "resume after the id the message names, or read the list without `after` (it starts at the oldest event kept; a stream without one starts from now)"
                    .to_owned(),
            ]),
        ),
        CoreError::EventsAhead { last_id, .. } => (
            ErrorCode::EventsCursorAhead,
            Some(vec![
                format!("last_id: {last_id}"),
                "read again with `after` (or `Last-Event-ID`) at most last_id, or without it (from the oldest event kept); the events after last_id are new, whatever ids you saw before"
                    .to_owned(),
            ]),
        ),
        CoreError::Storage(RepositoryError::KeyTakenOver(_)) => (
            ErrorCode::IdempotencyKeyInUse,
            Some(vec![
                "this request outlived its hold on the Idempotency-Key and a retry with the key took it over; nothing was stored: the retry's answer is the key's"
                    .to_owned(),
            ]),
        ),
        CoreError::Storage(RepositoryError::Unavailable(_)) => {
            (ErrorCode::DatabaseUnavailable, None)
        }
        CoreError::Storage(_) => (ErrorCode::Internal, None),
    }
}

/// The details of a validation error: the field first, so clients can find it.
fn field_detail(error: &ValidationError) -> Vec<String> {
    vec![format!("{}: {}", error.field, error.rule)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyed request past its bound says it may still be carried out, and when to ask again
    /// with its key; one without a key is only told to retry later.
    #[test]
    fn a_keyed_request_past_its_deadline_is_told_to_ask_again_with_its_key() {
        let keyed = ApiError::KeyedDeadline.into_response();
        assert_eq!(keyed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(keyed.headers()[header::RETRY_AFTER], "1");
        assert!(
            ApiError::KeyedDeadline
                .to_string()
                .contains("same Idempotency-Key")
        );
        let plain = ApiError::Deadline.into_response();
        assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!plain.headers().contains_key(header::RETRY_AFTER));
    }

    /// A body that waited too long for memory is told when to come back: nothing was done.
    #[test]
    fn a_body_that_found_no_memory_is_told_to_retry() {
        let busy = ApiError::BodiesBusy.into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "5");
    }
}
