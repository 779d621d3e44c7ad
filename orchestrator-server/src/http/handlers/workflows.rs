//! Workflow endpoints: start, get, advance, history, list, summary.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::Full;
use orchestrator_core::api::{
    AdvanceRequest, HistoryResponse, ListWorkflowsParams, ListWorkflowsResponse,
    StartWorkflowRequest, SummaryResponse, WorkflowResponse, cursor, paths,
};
use orchestrator_core::{
    ActorKind, Advance, FeatureId, StartWorkflow, Started, Timestamp, Trigger, ValidationError,
    Workflow,
};

use crate::http::App;
use crate::http::auth::Caller;
use crate::http::body::{json_response, parse_json};
use crate::http::error::{ApiError, Result};
use crate::http::idempotency::{Answer, Claimed};
use orchestrator_core::Action;

type HttpResponse = Response<Full<Bytes>>;

/// The feature id from the path, recorded on the request's span.
pub fn feature_id(raw: &str) -> Result<FeatureId> {
    let id = FeatureId::parse(raw)?;
    tracing::Span::current().record("feature_id", id.as_str());
    Ok(id)
}

/// A workflow as a read answers it: with the consultations that hold its gate.
async fn read_answer(app: &App, workflow: &Workflow) -> Result<HttpResponse> {
    let mut body = [WorkflowResponse::new(workflow, app.now())];
    held(app, &mut body).await?;
    Ok(representation_answer(StatusCode::OK, &body[0]).into_response())
}

/// A workflow as an answer, as sent and as kept for an idempotency key.
fn workflow_answer(status: StatusCode, workflow: &Workflow, now: Timestamp) -> Answer {
    representation_answer(status, &WorkflowResponse::new(workflow, now))
}

/// A workflow's representation as an answer, with its version as the `ETag` (quoted).
fn representation_answer(status: StatusCode, body: &WorkflowResponse) -> Answer {
    // A workflow's representation always serialises.
    let json = serde_json::to_string(body).unwrap_or_default();
    Answer::json(status, json).with_header(header::ETAG, format!("\"{}\"", body.version))
}

/// A new workflow as an answer: 201 with its `Location`.
fn created_answer(workflow: &Workflow, now: Timestamp) -> Answer {
    workflow_answer(StatusCode::CREATED, workflow, now)
        .with_header(header::LOCATION, paths::workflow(workflow.feature_id()))
}

/// Start a feature's workflow.
#[utoipa::path(
    post, path = "/workflow/start", tag = "workflows", operation_id = "create_workflow",
    request_body(content = StartWorkflowRequest, example = json!(crate::http::openapi::examples::start_request())),
    responses(
        (status = 201, description = "created; history entry 1 is IDLE → PHASE_1", body = WorkflowResponse,
         headers(("Location" = String, description = "the workflow's URL"),
                 ("ETag" = String, description = "the version, quoted; send it back as If-Match")),
         example = json!(crate::http::openapi::examples::workflow("PHASE_1", 1))),
        (status = 200, description = "existed and `use_existing` was set: returned unchanged", body = WorkflowResponse,
         headers(("ETag" = String, description = "the version, quoted; send it back as If-Match")),
         example = json!(crate::http::openapi::examples::workflow("GATE_1", 3))),
    ),
)]
pub async fn create_workflow(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    caller.may(Action::StartWorkflow)?;
    let request: StartWorkflowRequest = parse_json(headers, body)?;
    let mut command = StartWorkflow::try_from(request)?;
    // The server's gate defaults are the team's policy: below them is an admin's call.
    if let Some(weaker) = command.gate.weakening(app.orchestrator().gate_defaults()) {
        caller
            .may(Action::WeakenGate)
            .map_err(|refused| match refused {
                ApiError::RoleNeeded(role) => {
                    ApiError::Forbidden(format!("role needed: {role}: {weaker}"))
                }
                ApiError::Forbidden(why) => ApiError::Forbidden(format!("{why}: {weaker}")),
                other => other,
            })?;
    }
    if let Some(principal) = caller.principal() {
        command = command.by(principal);
    }
    tracing::Span::current().record("feature_id", command.feature_id.as_str());
    // The answer is made once, at one `now`, so the one kept with the change is the one sent.
    let now = app.now();
    let seal = claimed
        .as_ref()
        .map(|claimed| claimed.seal(move |workflow: &Workflow| created_answer(workflow, now)));
    let started = app.orchestrator().start_sealed(command, seal).await?;
    match started {
        Started::Created(workflow) => {
            // The answer went in with the new workflow.
            claimed.iter().for_each(Claimed::kept);
            app.metrics().transition(orchestrator_core::Trigger::Start);
            Ok(created_answer(&workflow, now).into_response())
        }
        // Nothing changed: answered as a read is.
        Started::Existing(workflow) => read_answer(app, &workflow).await,
    }
}

/// Read a workflow.
#[utoipa::path(
    get, path = "/workflow/{feature_id}", tag = "workflows", operation_id = "get_workflow",
    params(("feature_id" = String, Path, description = "the feature id")),
    responses(
        (status = 200, description = "the workflow", body = WorkflowResponse,
         headers(("ETag" = String, description = "the version, quoted; send it back as If-Match")),
         example = json!(crate::http::openapi::examples::workflow("GATE_1", 3))),
    ),
)]
pub async fn get_workflow(app: &App, id: &str) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let workflow = app.orchestrator().get(&id).await?;
    read_answer(app, &workflow).await
}

/// Read the workflow of the feature named `start`: `/workflow/start` is the start's path, and
/// a GET there reads that feature (its start's `Location` names the path), as
/// `GET /workflow/{feature_id}` reads any other.
#[utoipa::path(
    get, path = "/workflow/start", tag = "workflows", operation_id = "get_workflow_named_start",
    responses(
        (status = 200, description = "the workflow of the feature named `start`", body = WorkflowResponse,
         headers(("ETag" = String, description = "the version, quoted; send it back as If-Match")),
         example = json!(crate::http::openapi::examples::workflow("GATE_1", 3))),
    ),
)]
pub async fn get_workflow_named_start(app: &App) -> Result<HttpResponse> {
    get_workflow(app, "start").await
}

/// Adds to each gate among `views` the consultations that hold it (as stored: one read for
/// them all, and no hub call on a read).
pub(crate) async fn held(app: &App, views: &mut [WorkflowResponse]) -> Result<()> {
    let gates: Vec<FeatureId> = views
        .iter()
        .filter(|view| view.gate.entered_at.is_some())
        .map(|view| view.feature_id.clone())
        .collect();
    if !gates.is_empty() {
        let blockers = app.orchestrator().stored_blockers(&gates).await?;
        WorkflowResponse::hold_gates(views, blockers);
    }
    Ok(())
}

/// Apply one trigger atomically.
#[utoipa::path(
    post, path = "/workflow/{feature_id}/advance", tag = "workflows", operation_id = "advance_workflow",
    params(
        ("feature_id" = String, Path, description = "the feature id"),
        ("If-Match" = Option<String>, Header, description = "the expected version as the ETag gave it (`\"3\"`, `W/\"3\"` or `3`), or `*` for any; one header, one version (twice, or a list, is 400); if `expected_version` is given too, both must agree"),
    ),
    request_body(content = AdvanceRequest, example = json!(crate::http::openapi::examples::advance_request())),
    responses(
        (status = 200, description = "the workflow after the transition", body = WorkflowResponse,
         headers(("ETag" = String, description = "the new version, quoted")),
         example = json!(crate::http::openapi::examples::workflow("GATE_1", 2))),
    ),
)]
pub async fn advance_workflow(
    app: &App,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    claimed: Option<Claimed>,
) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let request: AdvanceRequest = parse_json(headers, body)?;
    let if_match = if_match_version(headers)?;
    let mut command = Advance::try_from(request)?;
    command.expected_version = match (command.expected_version, if_match) {
        (Some(body), Some(header)) if body != header => {
            return Err(ValidationError::new(
                "expected_version",
                format!("is {body} but If-Match says {header}"),
            )
            .into());
        }
        (body, header) => body.or(header),
    };
    // Checked before the key too (`may_advance`); here as well, for a caller of the handler
    // that did not go through it.
    for action in command.actions() {
        caller.may(action)?;
    }
    if let Some(principal) = caller.principal() {
        command = command.by(principal);
    }
    // Agents never decide, nor does a person in an agent's name: the record would show an
    // approval or rejection given for an agent.
    if command.trigger.is_human_decision()
        && let Some(whom) = &command.on_behalf_of
        && app
            .auth()
            .principal_named(whom)
            .is_some_and(|named| named.kind == ActorKind::Agent)
    {
        return Err(ApiError::Forbidden(format!(
            "actor: {whom} is an agent, and an approval or rejection is a person's, given in no agent's name"
        )));
    }
    let trigger = command.trigger;
    // An agent may finish its work while a consultation of it waits for a human: the gate it
    // enters is held from the start, and its answer (and the one kept for a key) says so, as
    // read just before the change. Any other change that leaves the gate closed is an
    // approval, refused while a consultation holds it.
    let held_by = if trigger == Trigger::AgentComplete {
        app.orchestrator()
            .stored_blockers(std::slice::from_ref(&id))
            .await?
    } else {
        Vec::new()
    };
    let now = app.now();
    let answer = Arc::new(move |workflow: &Workflow| {
        let mut body = [WorkflowResponse::new(workflow, now)];
        WorkflowResponse::hold_gates(&mut body, held_by.clone());
        representation_answer(StatusCode::OK, &body[0])
    });
    let seal = claimed.as_ref().map(|claimed| {
        let answer = answer.clone();
        claimed.seal(move |workflow: &Workflow| answer(workflow))
    });
    let workflow = app
        .orchestrator()
        .advance_sealed(&id, command, seal)
        .await?;
    // The answer went in with the commit.
    claimed.iter().for_each(Claimed::kept);
    app.metrics().transition(trigger);
    Ok(answer(&workflow).into_response())
}

/// The rights the advance in `body` needs (its trigger's, an override's), checked before its
/// idempotency key is looked at, as the other routes' are: the refusal is not kept as the
/// key's answer, and a kept answer goes back only to a caller who may still make the request.
/// A body that does not parse is let through, for the handler's 400.
pub fn may_advance(caller: &Caller, headers: &HeaderMap, body: &Bytes) -> Result<()> {
    let Ok(request) = parse_json::<AdvanceRequest>(headers, body) else {
        return Ok(());
    };
    let Ok(command) = Advance::try_from(request) else {
        return Ok(());
    };
    for action in command.actions() {
        caller.may(action)?;
    }
    Ok(())
}

/// Refuses `If-Match` given twice (a proxy's beside the client's): neither is taken for the
/// other. Checked before the request's idempotency key, as a repeated `Idempotency-Key` is,
/// so the refusal is not kept as the key's answer.
pub(crate) fn if_match_once(headers: &HeaderMap) -> Result<()> {
    if headers.get_all(header::IF_MATCH).iter().nth(1).is_some() {
        return Err(ValidationError::new("If-Match", "must be given once, not twice").into());
    }
    Ok(())
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`; `*` names none. Given
/// twice, the request was refused before it reached the handler ([`if_match_once`]).
fn if_match_version(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ValidationError::new(
            "If-Match",
            "must be a version as the ETag gives it, e.g. \"3\"",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some).map_err(|_| bad().into())
}

/// A workflow's transitions, oldest first.
#[utoipa::path(
    get, path = "/workflow/{feature_id}/history", tag = "workflows", operation_id = "get_history",
    params(("feature_id" = String, Path, description = "the feature id")),
    responses(
        (status = 200, description = "the history", body = HistoryResponse,
         example = json!(crate::http::openapi::examples::history())),
    ),
)]
pub async fn get_history(app: &App, id: &str) -> Result<HttpResponse> {
    let id = feature_id(id)?;
    let transitions = app.orchestrator().history(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &HistoryResponse {
            feature_id: id,
            transitions,
        },
    ))
}

/// One page of workflows, ordered by feature id.
#[utoipa::path(
    get, path = "/workflows", tag = "workflows", operation_id = "list_workflows",
    params(
        ("state" = Option<String>, Query, description = "only this state"),
        ("limit" = Option<u32>, Query, description = "page size, 1–500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (opaque)"),
        ("overdue" = Option<bool>, Query, description = "`true`: only gates past their deadline (with `state`, only if it is GATE_1); `false` filters nothing, as without it (it does not mean \"not overdue\"); `true` or `false`, anything else is 400"),
    ),
    responses(
        (status = 200, description = "a page", body = ListWorkflowsResponse,
         example = json!(crate::http::openapi::examples::list())),
    ),
)]
pub async fn list_workflows(app: &App, query: Option<&str>) -> Result<HttpResponse> {
    let pairs = crate::http::body::query_pairs(query);
    let query =
        ListWorkflowsParams::parse_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let page = app.orchestrator().list(&query).await?;
    let now = app.now();
    let mut items: Vec<WorkflowResponse> = page
        .items
        .iter()
        .map(|w| WorkflowResponse::new(w, now))
        .collect();
    held(app, &mut items).await?;
    Ok(json_response(
        StatusCode::OK,
        &ListWorkflowsResponse {
            items,
            next_cursor: page.next_after.as_ref().map(cursor::encode),
        },
    ))
}

/// How many workflows are in each state.
#[utoipa::path(
    get, path = "/workflows/summary", tag = "workflows", operation_id = "get_summary",
    responses((status = 200, description = "counts; all five states always present, and `overdue`: the gates past their deadline", body = SummaryResponse,
               example = json!(crate::http::openapi::examples::summary()))),
)]
pub async fn get_summary(app: &App) -> Result<HttpResponse> {
    let counts = app.orchestrator().summary().await?;
    Ok(json_response(
        StatusCode::OK,
        &SummaryResponse::from(&counts),
    ))
}
