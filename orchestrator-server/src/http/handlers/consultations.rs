//! Consultation endpoints: ask the Agent Hub for a workflow, list what it asked, answer an
//! escalation as a reviewer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use orchestrator_core::api::{ConsultRequest, ConsultationsResponse, RespondRequest};
use orchestrator_core::consultation::{Consultation, ConsultationId};
use orchestrator_core::{Consult, Error as CoreError, Respond};

use super::workflows::feature_id;
use crate::http::App;
use crate::http::asks::Asked;
use crate::http::auth::Caller;
use crate::http::body::{json_response, parse_json};
use crate::http::error::{ApiError, Result};
use crate::http::idempotency::{Answer, Claimed};
use orchestrator_core::Action;

type HttpResponse = Response<Full<Bytes>>;

/// Ask the Agent Hub's experts a question for a workflow.
#[utoipa::path(
    post, path = "/workflow/{feature_id}/consultations", tag = "consultations", operation_id = "create_consultation",
    params(("feature_id" = String, Path, description = "the feature id")),
    request_body(content = ConsultRequest, example = json!(crate::http::openapi::examples::consult_request())),
    responses(
        (status = 201, description = "the hub answered within the wait (`AGENT_HUB_WAIT_SECONDS`); `pending_human` answers block the gate until a human acts", body = Consultation,
         example = json!(crate::http::openapi::examples::consultation())),
        (status = 202, description = "the hub has not answered within the wait: the consultation is stored as `asking` (it blocks the gate) and the ask goes on in the background, up to `AGENT_HUB_TIMEOUT_SECONDS`; list the consultations to see how it ended (`failed` carries `error`)", body = Consultation,
         example = json!(crate::http::openapi::examples::asking())),
    ),
)]
pub async fn create_consultation(
    app: &App,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    caller.may(Action::Consult)?;
    let id = feature_id(id)?;
    let request: ConsultRequest = parse_json(headers, body)?;
    let consult = Consult::try_from(request)?;
    let asked = app
        .asks()
        .consult(app.orchestrator(), &id, consult, claimed.as_ref())
        .await?;
    // The answer went in with the published consultation.
    claimed.iter().for_each(Claimed::kept);
    Ok(match asked {
        Asked::Answered(consultation) => consultation_answer(StatusCode::CREATED, &consultation),
        Asked::Accepted(consultation) => consultation_answer(StatusCode::ACCEPTED, &consultation),
    }
    .into_response())
}

/// A consultation as an answer, as sent and as kept for an idempotency key.
pub(crate) fn consultation_answer(status: StatusCode, consultation: &Consultation) -> Answer {
    // A consultation always serialises.
    Answer::json(
        status,
        serde_json::to_string(consultation).unwrap_or_default(),
    )
}

/// How long a listing waits for the hub's word on pending escalations before it answers with
/// what is stored (a hub that does not answer would hold every listing for its call timeout,
/// 30 s, and one that answers just under it, that long per eight escalations).
pub const REFRESH_WAIT: Duration = Duration::from_secs(3);

/// A workflow's consultations, oldest first; pending ones are refreshed from the hub.
#[utoipa::path(
    get, path = "/workflow/{feature_id}/consultations", tag = "consultations", operation_id = "list_consultations",
    params(("feature_id" = String, Path, description = "the feature id")),
    responses(
        (status = 200, description = "the consultations; pending ones as the hub says, or as stored if the hub is unreachable or has not answered within 3 s", body = ConsultationsResponse,
         example = json!(crate::http::openapi::examples::consultations())),
    ),
)]
pub async fn list_consultations(app: &App, id: &str) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let mut items = app.orchestrator().consultations_as_stored(&id).await?;
    // The stored list is read outside the bound; the hub's look-ups, and the writes of what
    // they changed, within it.
    let refresh = app.orchestrator().refresh_consultations(&mut items);
    let items = match tokio::time::timeout(REFRESH_WAIT, refresh).await {
        Ok(refreshed) => refreshed.map(|()| items)?,
        Err(_) => {
            tracing::warn!(feature_id = %id, "the hub did not answer about pending escalations in time; listed as stored");
            // Read again rather than kept from before: what the look-ups that did answer
            // stored is shown (and the list is held once, not twice).
            app.orchestrator().consultations_as_stored(&id).await?
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &ConsultationsResponse { items },
    ))
}

/// Answer a consultation's escalation as a human reviewer: the answer goes to the Agent Hub,
/// and the consultation comes back as it stands afterwards.
#[utoipa::path(
    post, path = "/workflow/{feature_id}/consultations/{consultation_id}/respond", tag = "consultations",
    operation_id = "respond_to_consultation",
    params(
        ("feature_id" = String, Path, description = "the feature id"),
        ("consultation_id" = String, Path, description = "the consultation's id (a UUID)"),
    ),
    request_body(content = RespondRequest, example = json!(crate::http::openapi::examples::respond_request())),
    responses(
        (status = 200, description = "the hub took the answer; `confirm` and `correct` resolve the consultation, `add_context` makes it `needs_reroute`",
         body = Consultation, example = json!(crate::http::openapi::examples::responded())),
    ),
)]
pub async fn respond_to_consultation(
    app: &App,
    caller: &Caller,
    id: &str,
    consultation: &str,
    headers: &HeaderMap,
    body: &Bytes,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let consultation: ConsultationId = consultation.parse()?;
    let request: RespondRequest = parse_json(headers, body)?;
    caller.may(Action::Respond)?;
    let mut respond = Respond::try_from(request)?;
    if let Some(principal) = caller.principal() {
        respond = respond.by(principal);
    }
    // Kept with the refreshed consultation, in the write that stores it; if nothing changed
    // (nothing is written), right after.
    let seal = claimed
        .as_ref()
        .map(|claimed| claimed.seal(|c: &Consultation| consultation_answer(StatusCode::OK, c)));
    let answered = app
        .orchestrator()
        .respond_sealed(&id, consultation, respond, seal)
        .await
        .map_err(|e| match e {
            CoreError::Hub(_) => ApiError::Forwarded(e),
            e => e.into(),
        })?;
    claimed.iter().for_each(Claimed::kept_if_sealed);
    Ok(consultation_answer(StatusCode::OK, &answered).into_response())
}
