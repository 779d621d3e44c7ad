//! Consultation endpoints: ask the Agent Hub for a workflow, list what it asked.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use orchestrator_core::Consult;
use orchestrator_core::api::{ConsultRequest, ConsultationsResponse, ErrorEnvelope};
use orchestrator_core::consultation::Consultation;

use super::workflows::feature_id;
use crate::http::App;
use crate::http::body::{json_response, read_json};
use crate::http::error::Result;

type HttpResponse = Response<Full<Bytes>>;

/// Ask the Agent Hub's experts a question for a workflow.
#[utoipa::path(
    post, path = "/workflow/{feature_id}/consultations", tag = "consultations", operation_id = "create_consultation",
    params(("feature_id" = String, Path, description = "the feature id")),
    request_body = ConsultRequest,
    responses(
        (status = 201, description = "the hub answered; `pending_human` answers block the gate until a human acts", body = Consultation),
        (status = 400, description = "VALIDATION_ERROR (question length, unknown topic) or INVALID_JSON", body = ErrorEnvelope),
        (status = 404, description = "WORKFLOW_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "WORKFLOW_NOT_ACTIVE: the workflow is IDLE or DONE", body = ErrorEnvelope),
        (status = 502, description = "AGENT_HUB_ERROR: the hub answered with an error or garbage", body = ErrorEnvelope),
        (status = 503, description = "AGENT_HUB_UNAVAILABLE: the hub is down or too slow", body = ErrorEnvelope),
    ),
    security((), ("bearer" = [])),
)]
pub async fn create_consultation(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let request: ConsultRequest = read_json(headers, body, app.bodies()).await?;
    let consult = Consult::try_from(request)?;
    let consultation = app.orchestrator().consult(&id, consult).await?;
    Ok(json_response(StatusCode::CREATED, &consultation))
}

/// A workflow's consultations, oldest first; pending ones are refreshed from the hub.
#[utoipa::path(
    get, path = "/workflow/{feature_id}/consultations", tag = "consultations", operation_id = "list_consultations",
    params(("feature_id" = String, Path, description = "the feature id")),
    responses(
        (status = 200, description = "the consultations; if the hub is unreachable, as stored", body = ConsultationsResponse),
        (status = 404, description = "WORKFLOW_NOT_FOUND", body = ErrorEnvelope),
    ),
    security((), ("bearer" = [])),
)]
pub async fn list_consultations(app: &App, id: &str) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let items = app.orchestrator().consultations(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &ConsultationsResponse { items },
    ))
}
