//! The OpenAPI document: what the server answers, status by status, for the auth mode it runs in.
//!
//! The handlers' `#[utoipa::path]` annotations give each operation's parameters, request body
//! and successful answers (with examples). [`ApiDoc::for_server`] adds what no single handler
//! decides, from the tables below:
//!
//! - the field rules (docs/API.md) as JSON-schema keywords ([`field_rules`]), so data valid per
//!   the schema is accepted and data invalid per the schema is refused (the webhook URL's
//!   pattern excepted: it is a safe subset of the URLs taken, which the standard's grammar and
//!   a name lookup decide);
//! - every error an operation can answer ([`operation_errors`] plus the errors every
//!   operation, every body and every storage access can meet), grouped by status, each status
//!   with its codes as an `enum` and one example per code;
//! - the bearer scheme and 401 on protected operations when a token is configured, neither
//!   when the server is open;
//! - links from a created workflow to the operations on it, for clients and stateful fuzzers.

use std::collections::BTreeMap;

use orchestrator_core::api::{ErrorCode, paths};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::handlers::{consultations, docs, system, webhooks, workflows};
use super::router::Route;
use super::{board, events};

/// What the handlers' annotations say; [`ApiDoc::for_server`] completes it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orchestrator",
        description = "Carries each feature through IDLE → PHASE_1 → GATE_1 → PHASE_2 → DONE. \
                       Every error answers `{\"error\": {\"code\", \"message\", \"details\"?}}`; \
                       each operation lists the codes it can answer, with an example of each. \
                       A method a path does not list is 405 `METHOD_NOT_ALLOWED` with `Allow` \
                       naming those it serves (a board path: an HTML page); every `GET` but \
                       the event stream's also answers `HEAD`.",
    ),
    paths(
        workflows::create_workflow,
        workflows::get_workflow,
        workflows::get_workflow_named_start,
        workflows::advance_workflow,
        workflows::get_history,
        workflows::list_workflows,
        workflows::get_summary,
        consultations::create_consultation,
        consultations::list_consultations,
        consultations::respond_to_consultation,
        events::list_events,
        events::stream_events,
        webhooks::create_webhook,
        webhooks::list_webhooks,
        webhooks::get_webhook,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
        webhooks::redeliver,
        system::get_service_info,
        system::get_health,
        system::get_metrics,
        docs::get_openapi,
        board::overview,
        board::feature,
        board::sign_in,
        board::sign_out,
        board::asset,
    ),
    components(schemas(
        orchestrator_core::api::ErrorEnvelope,
        orchestrator_core::api::ApiErrorBody,
        orchestrator_core::api::ErrorCode,
        orchestrator_core::WorkflowState,
        orchestrator_core::Trigger,
        orchestrator_core::api::CloudEvent,
        orchestrator_core::EventType,
        board::SignInForm,
        board::SignOutForm,
    )),
    tags(
        (name = "workflows", description = "feature workflows and their history"),
        (name = "consultations", description = "questions to the Agent Hub's experts, kept per workflow"),
        (name = "events", description = "the event log: every accepted change, as a page or a live stream"),
        (name = "webhooks", description = "events POSTed to your URLs, signed (Standard Webhooks), retried on a schedule; admin only"),
        (name = "service", description = "service info, health, metrics"),
        (name = "board", description = "the reviewer board: HTML pages for people, signed in by a session cookie; its errors are pages too"),
    ),
)]
struct Annotated;

/// The API's OpenAPI 3.1 document.
pub struct ApiDoc;

impl ApiDoc {
    /// The document of a server that requires a bearer token (`auth_required`) or is open, as
    /// JSON. (It is not read back into `utoipa::openapi::OpenApi`, whose schema model cannot
    /// hold every JSON-schema keyword used here.)
    pub fn for_server(auth_required: bool) -> Value {
        Self::document(auth_required, false)
    }

    /// The document of a server in principals mode: a bearer token per principal, and 403
    /// `FORBIDDEN` on every write a role may not allow.
    pub fn for_principals() -> Value {
        Self::document(true, true)
    }

    fn document(auth_required: bool, principals: bool) -> Value {
        // The annotated document is made of plain data; it always serialises.
        let mut doc = serde_json::to_value(Annotated::openapi()).unwrap_or_else(|_| json!({}));
        apply_field_rules(&mut doc);
        require_what_answers_send(&mut doc);
        state_answer_values(&mut doc);
        drop_unknowns(&mut doc);
        let operations: Vec<(String, String)> = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| {
                paths.iter().flat_map(|(path, item)| {
                    item.as_object()
                        .into_iter()
                        .flat_map(|item| item.keys())
                        .map(move |method| (path.clone(), method.clone()))
                })
            })
            .collect();
        for (path, method) in operations {
            let operation = &mut doc["paths"][&path][&method];
            if path.starts_with("/board") {
                complete_board_operation(operation, &method, auth_required);
                continue;
            }
            // Every write checks a role, and every webhook operation needs admin; with a
            // token required, a write made with the board's session cookie needs its CSRF
            // token and the board's origin, and the cookie reaches no webhook operation.
            let role_checked = method == "post" || path.starts_with(paths::WEBHOOKS);
            let forbidden = (principals && role_checked)
                || (auth_required && (method != "get" || path.starts_with(paths::WEBHOOKS)));
            // The role a POST needs whatever its body says is checked before the key
            // ([`Route::post_action`]); a 403 its body brings about is the handler's, after it,
            // and may be a kept answer.
            let id = operation["operationId"].as_str().unwrap_or_default();
            let role_first = method == "post"
                && !forbidden_by_the_body(id, principals)
                && Route::with_pattern(&path).is_some_and(|route| route.post_action().is_some());
            complete_operation(
                operation,
                (auth_required, principals),
                forbidden,
                role_first,
            );
        }
        name_request_ids(&mut doc);
        if auth_required {
            doc["components"]["securitySchemes"] = json!({
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": if principals {
                        "a principal's token, minted by `orchestrator-server principal add`"
                    } else {
                        "the value of ORCHESTRATOR_API_TOKEN"
                    }
                }
            });
        }
        doc
    }
}

/// Says on every answer that it carries `X-Request-Id`, the id the server's log names the
/// request by (not required: the HTTP layer's own answers to requests too malformed to reach
/// the service, a 400, 414 or 431, have none).
fn name_request_ids(doc: &mut Value) {
    let header = json!({
        "description": "the id the server's log names this request by: the caller's own `X-Request-Id` when it sent one of at most 64 visible ASCII characters (no spaces), else a new one",
        "schema": { "type": "string" },
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in item.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for response in responses.values_mut() {
                response["headers"]["X-Request-Id"] = header.clone();
            }
        }
    }
}

/// Operations anyone may call even when a token is configured (`Route::is_public`).
const PUBLIC_OPERATIONS: [&str; 3] = ["get_health", "get_metrics", "get_openapi"];

/// Operations that answer without touching storage (public ones: no session is looked up),
/// or (health, metrics) that turn a storage failure into their own answer instead of
/// `DATABASE_UNAVAILABLE`.
const NO_STORAGE_ERRORS: [&str; 3] = ["get_health", "get_metrics", "get_openapi"];

/// Operations that touch storage only to look up a board session's cookie, which a server
/// that needs a token does for a request without a bearer token.
const SESSION_STORAGE_ONLY: [&str; 1] = ["get_service_info"];

/// The errors an operation answers because of what it does; those of every operation, of
/// every body and of storage are added by [`complete_operation`].
fn operation_errors(operation_id: &str) -> &'static [ErrorCode] {
    use ErrorCode::*;
    match operation_id {
        "create_workflow" => &[ValidationError, WorkflowAlreadyExists],
        "get_workflow" => &[ValidationError, WorkflowNotFound],
        "get_workflow_named_start" => &[WorkflowNotFound],
        "get_history" | "list_consultations" => &[ValidationError, WorkflowNotFound],
        "list_events" | "stream_events" => &[ValidationError, EventsExpired, EventsCursorAhead],
        "advance_workflow" => &[
            ValidationError,
            Forbidden,
            WorkflowNotFound,
            InvalidTransition,
            VersionConflict,
            GateBlocked,
            SelfApproval,
            AlreadyApproved,
            AgentHubError,
            AgentHubUnavailable,
        ],
        "list_workflows" => &[ValidationError],
        "create_webhook" => &[ValidationError],
        "get_webhook" | "delete_webhook" => &[WebhookNotFound],
        "list_deliveries" => &[ValidationError, WebhookNotFound],
        "redeliver" => &[WebhookNotFound, DeliveryNotFound],
        "create_consultation" => &[
            ValidationError,
            WorkflowNotFound,
            WorkflowNotActive,
            AgentHubError,
            AgentHubUnavailable,
        ],
        "respond_to_consultation" => &[
            ValidationError,
            Forbidden,
            WorkflowNotFound,
            ConsultationNotFound,
            ConsultationNotPending,
            AlreadyResolved,
            AgentHubError,
            AgentHubUnavailable,
        ],
        _ => &[],
    }
}

/// Whether the handler may answer 403 for what the body asks: an agent deciding or answering
/// (any mode: such operations list `FORBIDDEN` among their own errors), or, with principals, a
/// start whose gate is below the server's defaults.
fn forbidden_by_the_body(operation_id: &str, principals: bool) -> bool {
    operation_errors(operation_id).contains(&ErrorCode::Forbidden)
        || (principals && operation_id == "create_workflow")
}

/// Errors any request can meet: hyper's own answers to malformed HTTP, a bug, no answer in time.
const EVERY_OPERATION: [ErrorCode; 5] = [
    ErrorCode::BadRequest,
    ErrorCode::UriTooLong,
    ErrorCode::HeadersTooLarge,
    ErrorCode::Internal,
    ErrorCode::ServiceUnavailable,
];

/// Errors of reading a JSON body.
const EVERY_BODY: [ErrorCode; 4] = [
    ErrorCode::InvalidJson,
    ErrorCode::RequestTimeout,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
];

/// Errors of a request with an idempotency key (every POST takes one).
const IDEMPOTENT: [ErrorCode; 3] = [
    ErrorCode::ValidationError,
    ErrorCode::IdempotencyKeyInUse,
    ErrorCode::IdempotencyKeyReused,
];

/// Adds the `Idempotency-Key` request header and the `Idempotent-Replayed` header of every
/// answer that may be a replay. `right_first`: every 403 of the operation comes before the
/// key is looked at, so none is a kept answer.
fn add_idempotency(operation: &mut Value, right_first: bool) {
    let parameter = json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "1-255 printable ASCII characters (spaces inside a key, not around it: HTTP drops those), chosen by the client, given once (two of the header are 400). The first request with a key is answered and its answer kept for 24 h with the change it made; a repeat with the same method, path, `If-Match` and body gets that answer again with `Idempotent-Replayed: true` and changes nothing. Scoped to the principal (to every caller without principals). 5xx answers are not kept.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~](?:[ -~]*[!-~])?$" },
        "example": "4f7c2b9e-approve-008",
    });
    match operation["parameters"].as_array_mut() {
        Some(parameters) => parameters.push(parameter),
        None => operation["parameters"] = json!([parameter]),
    }
    if let Some(responses) = operation["responses"].as_object_mut() {
        // A kept answer may be a refusal (a 4xx the handler gave); not those that come before
        // the key is claimed (authentication, a body too slow or too large or not said to be
        // JSON, a request HTTP refuses) or are the claim's own (422 `IDEMPOTENCY_KEY_REUSED`).
        const BEFORE_THE_KEY: [&str; 7] = ["401", "408", "413", "414", "415", "422", "431"];
        for (status, response) in responses.iter_mut() {
            let before =
                BEFORE_THE_KEY.contains(&status.as_str()) || (right_first && status == "403");
            let kept = status.starts_with('2') || (status.starts_with('4') && !before);
            if kept {
                response["headers"]["Idempotent-Replayed"] = json!({
                    "description": "`true` when this is the kept answer of an earlier request with the same Idempotency-Key",
                    "schema": { "type": "string", "enum": ["true"] },
                });
            }
        }
    }
}

/// Adds the operation's error responses, its security, and its links.
fn complete_operation(
    operation: &mut Value,
    (auth_required, principals): (bool, bool),
    role_checked: bool,
    role_first: bool,
) {
    let id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let protected = !PUBLIC_OPERATIONS.contains(&id.as_str());
    let mut codes: Vec<ErrorCode> = operation_errors(&id).to_vec();
    let idempotent = operation.get("requestBody").is_some() || id == "redeliver";
    if operation.get("requestBody").is_some() {
        codes.extend(EVERY_BODY);
        codes.extend(IDEMPOTENT);
    } else if id == "redeliver" {
        // A POST without a body of its own: any body is read (and bounded), then ignored.
        codes.extend([ErrorCode::RequestTimeout, ErrorCode::PayloadTooLarge]);
        codes.extend(IDEMPOTENT);
    }
    let session_only = SESSION_STORAGE_ONLY.contains(&id.as_str());
    if !NO_STORAGE_ERRORS.contains(&id.as_str()) && (auth_required || !session_only) {
        codes.push(ErrorCode::DatabaseUnavailable);
    }
    if auth_required && protected {
        codes.push(ErrorCode::Unauthorized);
    }
    // An open server refuses a request addressed to a name it does not answer to.
    if (role_checked || !auth_required) && protected {
        codes.push(ErrorCode::Forbidden);
    }
    codes.extend(EVERY_OPERATION);

    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code.status()).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }
    let mut responses: Map<String, Value> = operation["responses"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    for (status, codes) in by_status {
        let key = status.to_string();
        let errors = error_response(&id, &codes, idempotent, principals);
        match responses.get_mut(&key) {
            // /health answers 503 with its own body when the database is down.
            Some(existing) => merge_alternative_body(existing, errors),
            None => {
                responses.insert(key, errors);
            }
        }
    }
    // Statuses in ascending order read best.
    let mut sorted: Vec<(String, Value)> = responses.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    operation["responses"] = Value::Object(sorted.into_iter().collect());
    if idempotent {
        add_idempotency(operation, role_first);
    }

    if let Some(operation) = operation.as_object_mut() {
        operation.remove("security");
    }
    if auth_required && protected {
        operation["security"] = json!([{ "bearer": [] }]);
    }

    if id == "create_workflow" {
        for status in ["200", "201"] {
            operation["responses"][status]["links"] = links_from_workflow();
        }
    }
    if id == "create_consultation" {
        operation["responses"]["201"]["links"] = json!({
            "RespondToConsultation": {
                "operationId": "respond_to_consultation",
                "parameters": {
                    "feature_id": "$response.body#/feature_id",
                    "consultation_id": "$response.body#/id",
                },
                "description": "answer the consultation's escalation as a reviewer",
            }
        });
    }
    if id == "advance_workflow" || id == "get_workflow" {
        operation["responses"]["200"]["links"] = links_from_workflow();
    }
}

/// Completes a board operation. The board answers its errors as pages, those met before its
/// handlers run too (a bug, the request deadline, a form too large or too slow): its
/// annotations list its own, and these are added. Only malformed HTTP, refused before any
/// route is known, comes as the JSON envelope. Board routes need no bearer token (a session
/// cookie, or nothing).
fn complete_board_operation(operation: &mut Value, method: &str, auth_required: bool) {
    let id = operation["operationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut responses: Map<String, Value> = operation["responses"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    // Malformed HTTP: the envelope, as on every path.
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in [
        ErrorCode::BadRequest,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
    ] {
        by_status.entry(code.status()).or_default().push(code);
    }
    for (status, codes) in by_status {
        let errors = error_response(&id, &codes, false, false);
        match responses.get_mut(&status.to_string()) {
            Some(page) => {
                page["content"]["application/json"] = errors["content"]["application/json"].clone();
                page["description"] = json!(format!(
                    "{}; or, malformed HTTP refused before the request is routed: {}",
                    page["description"].as_str().unwrap_or_default(),
                    errors["description"].as_str().unwrap_or_default()
                ));
            }
            None => {
                responses.insert(status.to_string(), errors);
            }
        }
    }
    // What fails around the page's handler: a page as well.
    let mut around = vec![ErrorCode::Internal, ErrorCode::ServiceUnavailable];
    if method == "post" {
        around.extend([ErrorCode::RequestTimeout, ErrorCode::PayloadTooLarge]);
    }
    let mut around: Vec<(ErrorCode, &str)> =
        around.into_iter().map(|c| (c, on_a_page(c))).collect();
    // The stylesheet and script answer any name: the refusal's page uses them.
    if !auth_required && id != "get_board_asset" {
        around.push((
            ErrorCode::Forbidden,
            "the request was addressed (`Host`) to a name other than an IP address, localhost \
             or one in ALLOWED_HOSTS (a server without a token)",
        ));
    }
    for (code, what) in around {
        let said = format!("a page: {what}");
        match responses.get_mut(&code.status().to_string()) {
            Some(page) => {
                let before = page["description"].as_str().unwrap_or_default().to_owned();
                if !before.contains(&said) {
                    page["description"] = json!(format!("{before}; or {said}"));
                }
            }
            None => {
                responses.insert(
                    code.status().to_string(),
                    json!({
                        "description": said,
                        "content": { "text/html": { "schema": { "type": "string" } } }
                    }),
                );
            }
        }
    }
    if method == "post"
        && let Some(busy) = responses.get_mut(&ErrorCode::ServiceUnavailable.status().to_string())
    {
        busy["headers"]["Retry-After"] = json!({
            "description": "seconds to wait: sent when too many request bodies were being read",
            "schema": { "type": "integer", "minimum": 1 },
        });
    }
    let mut sorted: Vec<(String, Value)> = responses.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    operation["responses"] = Value::Object(sorted.into_iter().collect());
    if let Some(operation) = operation.as_object_mut() {
        operation.remove("security");
    }
    // Where sign-in and sign-out lead: a board page (the workflow's `Location` rule is not it).
    if let Some(location) = operation
        .pointer_mut("/responses/303/headers")
        .and_then(|headers| headers.get_mut("Location"))
    {
        location["schema"] = json!({
            "type": "string",
            "pattern": "^/board(/feature/[A-Za-z0-9][A-Za-z0-9._-]*|\\?state=(IDLE|PHASE_1|GATE_1|PHASE_2|DONE)(&after=[A-Za-z0-9][A-Za-z0-9._-]*)?)?$",
            "example": "/board",
        });
        location["required"] = json!(true);
    }
    if id == "get_board_asset" {
        operation["responses"]["200"]["content"] = super::board::ASSETS
            .iter()
            .map(|(_, content_type, _)| {
                let media_type = content_type.split(';').next().unwrap_or_default();
                (
                    media_type.to_owned(),
                    json!({ "schema": { "type": "string" } }),
                )
            })
            .collect();
    }
    // Every answer of the board, a refusal's page included, carries its policy; malformed
    // HTTP (414, 431, and a 400 in the envelope) is refused before the board is reached.
    if let Some(responses) = operation["responses"].as_object_mut() {
        for (status, response) in responses.iter_mut() {
            if ["414", "431"].contains(&status.as_str()) {
                continue;
            }
            response["headers"]["Content-Security-Policy"] = json!({
                "description": "the board's content security policy: its own files, nothing \
                                else, and no framing (not on malformed HTTP's JSON envelope, \
                                refused before any page)",
                "schema": { "type": "string", "example": super::board::CSP },
            });
        }
    }
    // The overview's filter: a state, or empty (the form's "all but GATE_1").
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            match parameter["name"].as_str() {
                Some("state") => {
                    let mut states = vec![""];
                    states.extend(orchestrator_core::WorkflowState::ALL.map(|s| s.as_str()));
                    parameter["schema"] = json!({ "type": "string", "enum": states });
                }
                Some("file") => {
                    let names: Vec<&str> = super::board::ASSETS
                        .iter()
                        .map(|(name, ..)| *name)
                        .collect();
                    parameter["schema"] = json!({ "type": "string", "enum": names });
                }
                // A feature id, or empty (not given).
                Some("after") => {
                    parameter["schema"] = json!({
                        "type": "string",
                        "maxLength": orchestrator_core::values::FEATURE_ID_MAX_CHARS,
                        "pattern": "^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
                    });
                }
                _ => {}
            }
        }
    }
}

/// The operations on a workflow, reachable from any answer that carries one.
fn links_from_workflow() -> Value {
    let on = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": { "feature_id": "$response.body#/feature_id" },
            "description": description,
        })
    };
    json!({
        "GetWorkflow": on("get_workflow", "read the workflow"),
        "AdvanceWorkflow": on("advance_workflow", "apply a trigger to the workflow"),
        "GetHistory": on("get_history", "the workflow's transitions"),
        "ListConsultations": on("list_consultations", "the workflow's consultations"),
        "CreateConsultation": on("create_consultation", "ask the Agent Hub for the workflow"),
    })
}

/// One status's error response: its codes, an example of each. `idempotent`: the operation
/// takes an `Idempotency-Key`, so its 503 may be a keyed request that outlived the request bound;
/// `principals`: the server checks principals' roles.
fn error_response(
    operation_id: &str,
    codes: &[ErrorCode],
    idempotent: bool,
    principals: bool,
) -> Value {
    let names: Vec<Value> = codes.iter().map(|c| json!(c.as_str())).collect();
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), when(*c)))
        .collect::<Vec<_>>()
        .join("; ");
    let mut examples = Map::new();
    for code in codes {
        examples.insert(
            code.as_str().to_owned(),
            json!({ "summary": when(*code), "value": error_example(operation_id, *code, principals) }),
        );
    }
    let mut response = json!({
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        { "$ref": "#/components/schemas/ErrorEnvelope" },
                        {
                            "type": "object",
                            "properties": {
                                "error": {
                                    "type": "object",
                                    "properties": { "code": { "enum": names } }
                                }
                            }
                        }
                    ]
                },
                "examples": examples,
            }
        }
    });
    if codes.contains(&ErrorCode::MethodNotAllowed) {
        response["headers"] = json!({
            "Allow": {
                "description": "the methods the path serves",
                "required": true,
                "schema": { "type": "string" },
                "example": "POST",
            }
        });
    }
    if codes.contains(&ErrorCode::Unauthorized) {
        response["headers"] = json!({
            "WWW-Authenticate": {
                "description": "the scheme to authenticate with",
                "required": true,
                "schema": { "type": "string", "enum": ["Bearer"] },
                "example": "Bearer",
            }
        });
    }
    if codes.contains(&ErrorCode::IdempotencyKeyInUse)
        || ((idempotent || operation_id == "stream_events")
            && codes.contains(&ErrorCode::ServiceUnavailable))
    {
        response["headers"]["Retry-After"] = json!({
            "description": "seconds to wait before retrying: with IDEMPOTENCY_KEY_IN_USE (1); with SERVICE_UNAVAILABLE when a request with an Idempotency-Key outlived the request bound and may still be carried out (1: the retry with the same key gets its answer), and, asking the hub, when too many consultations are being asked (5), creating a webhook, when its host waited too long for a turn to be looked up or its name servers did not answer (5), and opening a stream, when as many streams as the server keeps are open, or the caller holds its share of them (5), and any request with a body, when too many request bodies are being read at once (5)",
            "required": false,
            "schema": { "type": "string", "pattern": "^[0-9]+$" },
            "example": "1",
        });
    }
    response
}

/// Adds an error body as an alternative to a response that has a body of its own.
fn merge_alternative_body(existing: &mut Value, errors: Value) {
    let error_content = &errors["content"]["application/json"];
    let content = &mut existing["content"]["application/json"];
    let own = content["schema"].take();
    content["schema"] = json!({ "oneOf": [own, error_content["schema"]] });
    let mut examples = Map::new();
    if let Some(single) = content.as_object_mut().and_then(|c| c.remove("example")) {
        examples.insert(
            "answer".to_owned(),
            json!({ "summary": "the answer", "value": single }),
        );
    }
    if let Some(own) = content["examples"].as_object() {
        examples.extend(own.clone());
    }
    if let Some(extra) = error_content["examples"].as_object() {
        examples.extend(extra.clone());
    }
    content["examples"] = Value::Object(examples);
    existing["description"] = json!(format!(
        "{}; or an error: {}",
        existing["description"].as_str().unwrap_or_default(),
        errors["description"].as_str().unwrap_or_default()
    ));
}

/// When a board page answers `code` for what fails around its handler (a page, not the
/// envelope; the API's wording names what pages never meet: keys, streams, the hub).
fn on_a_page(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Internal => "a bug",
        ErrorCode::ServiceUnavailable => {
            "the page could not be made in time, or (a form) too many request bodies are being read at once (with Retry-After: 5); retry later"
        }
        ErrorCode::PayloadTooLarge => "the form is over 8 KiB",
        other => when(other),
    }
}

/// When the server answers `code`, in a few words.
fn when(code: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        ValidationError => "a field or parameter breaks a rule; details[0] names it",
        InvalidJson => "the body is not JSON, or not this endpoint's shape",
        UnsupportedMediaType => {
            "the body was sent without a JSON content type, or encoded (`Content-Encoding`)"
        }
        PayloadTooLarge => "the body is over 256 KiB (a board form: over 8 KiB)",
        Unauthorized => {
            "the bearer token is missing or wrong, or the request has two `Authorization` headers"
        }
        Forbidden => {
            "the token's principal lacks the role this needs (details name it; a start whose gate asks fewer approvals than the server's default, or self-approval it does not allow, needs admin), an agent tried to approve, reject or answer an escalation, or a write with the board's session cookie lacked its CSRF token, came from another origin or was not one the board makes (it approves, rejects and answers escalations only), or (a server without a token) the request was addressed (`Host`) to a name other than an IP address, localhost or one in ALLOWED_HOSTS"
        }
        NotFound => "no such route",
        MethodNotAllowed => "the path does not serve this method (`Allow` names those it does)",
        WorkflowNotFound => "no workflow has this feature id",
        WorkflowAlreadyExists => "the feature id has a workflow and use_existing was not set",
        InvalidTransition => "the trigger is not allowed in the current state",
        VersionConflict => "the workflow is not at the expected version",
        GateBlocked => {
            "human_approved while a consultation awaits a human or is still being asked; details list the escalation ids and the consultations being asked"
        }
        SelfApproval => {
            "human_approved by the actor (or on_behalf_of) of the agent_complete that entered the gate"
        }
        AlreadyApproved => "the same actor approving twice in one stay at the gate",
        WorkflowNotActive => "the workflow is IDLE or DONE",
        ConsultationNotFound => "the workflow has no consultation with this id",
        WebhookNotFound => "no webhook has this id",
        DeliveryNotFound => "the webhook has no delivery with this id",
        ConsultationNotPending => "the consultation waits for no human",
        AlreadyResolved => "a human answered the escalation at the hub already",
        IdempotencyKeyInUse => {
            "a request with this Idempotency-Key is still being answered, or a retry took the key over from this request, which outlived its lease: nothing stored (with Retry-After)"
        }
        IdempotencyKeyReused => {
            "this Idempotency-Key was used within 24 h for a different method, path, If-Match or body"
        }
        AgentHubUnavailable => "the Agent Hub cannot be reached or did not answer in time",
        AgentHubError => "the Agent Hub answered with an error or garbage",
        EventsExpired => {
            "events after the resume point were deleted by retention; resume after the id the message names, or read the list without `after` (a stream without one starts from now)"
        }
        EventsCursorAhead => {
            "the resume point is past the newest event, an id this log never had (the store was restored from an older copy, or replaced); read again from at most `last_id` (in details), or without `after`"
        }
        DatabaseUnavailable => "storage cannot be reached or refuses to write",
        BadRequest => "the request is not well-formed HTTP",
        RequestTimeout => "the body did not arrive in time",
        UriTooLong => "the request URI is too long",
        HeadersTooLarge => "the request headers are too large or too many",
        ServiceUnavailable => {
            "the request could not be answered in time (with Retry-After: 1 when it carried an Idempotency-Key: it may still be carried out, and a retry with the key gets its answer), or (asking the hub) too many consultations are being asked at once, or (creating a webhook) its host could not get a turn to be looked up or its name servers did not answer, or (opening a stream) as many streams as the server keeps are open, or, with principals, the person's token streams or board pages hold their quarter of them, or (any request with a body) too many request bodies are being read at once (these with Retry-After: 5); retry later"
        }
        Internal => "a bug; the log has the detail",
        Unknown => "a code of a newer server",
    }
}

/// An error envelope as the server writes it for `code` on `operation_id`, on a server that
/// checks principals' roles or not.
fn error_example(operation_id: &str, code: ErrorCode, principals: bool) -> Value {
    use ErrorCode::*;
    let envelope = |message: &str, details: Option<Vec<&str>>| {
        let mut error = json!({ "code": code.as_str(), "message": message });
        if let Some(details) = details {
            error["details"] = json!(details);
        }
        json!({ "error": error })
    };
    let id = examples::FEATURE_ID;
    match code {
        ValidationError => {
            let (field, rule): (&str, String) = match operation_id {
                "advance_workflow" => (
                    "trigger",
                    "unknown trigger 'finish' (expected one of start, agent_complete, \
                     human_approved, human_rejected, cancel)"
                        .to_owned(),
                ),
                "list_workflows" => (
                    "limit",
                    "must be a whole number between 1 and 500".to_owned(),
                ),
                "list_events" => ("limit", "must be between 1 and 1000".to_owned()),
                "stream_events" => ("after", "must be an event id (a whole number)".to_owned()),
                "create_consultation" => ("question", "must be 10-10000 characters".to_owned()),
                "create_webhook" => ("url", "must be an absolute http(s) URL".to_owned()),
                "list_deliveries" => (
                    "status",
                    "must be one of pending, delivered, failed".to_owned(),
                ),
                // It has no body and no feature id: its key is all it reads.
                "redeliver" => (
                    "Idempotency-Key",
                    "must be 1-255 printable ASCII characters".to_owned(),
                ),
                _ => (
                    "feature_id",
                    "must be 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
                        .to_owned(),
                ),
            };
            let detail = format!("{field}: {rule}");
            envelope(&detail, Some(vec![&detail]))
        }
        InvalidJson => envelope(
            "request body is not valid JSON for this endpoint",
            Some(vec!["EOF while parsing an object at line 1 column 1"]),
        ),
        UnsupportedMediaType => envelope(
            "request body must be sent with Content-Type: application/json",
            None,
        ),
        PayloadTooLarge if matches!(operation_id, "create_board_session" | "board_sign_out") => {
            envelope("request body is larger than 8192 bytes", None)
        }
        PayloadTooLarge => envelope("request body is larger than 262144 bytes", None),
        Unauthorized => envelope("missing or invalid bearer token", None),
        Forbidden if operation_id == "respond_to_consultation" => envelope(
            "only a human answers an escalation",
            Some(vec![
                "actor_kind: agent; only a human answers an escalation",
            ]),
        ),
        Forbidden if operation_id == "advance_workflow" => envelope(
            "agents may not 'human_approved': only a human decides at the gate",
            Some(vec!["actor_kind: agent"]),
        ),
        // Without principals a token holds every role: a 403 is the board's session cookie
        // reaching what the board does not do (a write without its CSRF token is the other).
        Forbidden if !principals => {
            let why = "the board's session reads, approves, rejects and answers escalations; \
                       anything else needs a token in Authorization";
            envelope(&format!("forbidden: {why}"), Some(vec![why]))
        }
        // Principals mode: the caller's roles lack the one the operation needs.
        Forbidden => {
            let role = if operation_id.contains("webhook")
                || operation_id == "redeliver"
                || operation_id == "list_deliveries"
            {
                "admin"
            } else {
                "agent"
            };
            let why = format!("role needed: {role}");
            envelope(&format!("forbidden: {why}"), Some(vec![&why]))
        }
        NotFound => envelope("no route for /nope", None),
        MethodNotAllowed => envelope(
            "method PUT is not allowed here; allowed: GET, HEAD, POST",
            None,
        ),
        WorkflowNotFound => envelope(&format!("workflow '{id}' not found"), None),
        WorkflowAlreadyExists => envelope(&format!("workflow '{id}' already exists"), None),
        InvalidTransition => envelope(
            "trigger 'human_approved' is not allowed in state PHASE_1",
            Some(vec![
                "state: PHASE_1",
                "allowed_triggers: agent_complete, cancel",
            ]),
        ),
        VersionConflict => envelope(
            "version conflict: expected 2, current 3",
            Some(vec!["expected_version: 2", "current_version: 3"]),
        ),
        AlreadyApproved => envelope(
            "'alice' approved this gate already",
            Some(vec!["actor: alice approved this stay at the gate already"]),
        ),
        SelfApproval => envelope(
            "'spec-agent' made the work at this gate and may not approve it",
            Some(vec!["actor: spec-agent made the work at this gate"]),
        ),
        GateBlocked => envelope(
            "the gate is blocked by 1 escalation waiting for a human and 1 consultation the Agent Hub has not answered",
            Some(vec![
                "esc-7f3a",
                "consultation 6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f is still being asked",
            ]),
        ),
        WorkflowNotActive => envelope(
            &format!("workflow '{id}' is DONE; consultations need PHASE_1, GATE_1 or PHASE_2"),
            Some(vec!["state: DONE"]),
        ),
        ConsultationNotFound => envelope(
            &format!("workflow '{id}' has no consultation 6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f"),
            None,
        ),
        WebhookNotFound => envelope(
            "webhook 'wh_2f0c0d7b5e8a4f6e9a1b3c5d7e9f1a2b' not found",
            None,
        ),
        DeliveryNotFound => envelope(
            "delivery 'msg_8b1e2d4c6a0f4e1b9c3d5f7a9b1c3d5e' not found",
            None,
        ),
        ConsultationNotPending => envelope(
            "consultation 6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f is resolved, not waiting for a human",
            Some(vec!["status: resolved"]),
        ),
        EventsExpired => envelope(
            "the events after 12 up to 40 were deleted (retention); resume after 40 (`after` or `Last-Event-ID`) to skip them",
            Some(vec![
                "resume after the id the message names, or read the list without `after` (it starts at the oldest event kept; a stream without one starts from now)",
            ]),
        ),
        EventsCursorAhead => envelope(
            "the event log ends at 7, before 40: it has no such id (a mistyped id, or a store restored from an older copy or replaced); start again after 7, or from the start",
            Some(vec![
                "last_id: 7",
                "read again with `after` (or `Last-Event-ID`) at most last_id, or without it (from the oldest event kept); the events after last_id are new, whatever ids you saw before",
            ]),
        ),
        IdempotencyKeyInUse => envelope(
            "a request with this Idempotency-Key is still being answered; retry later",
            None,
        ),
        IdempotencyKeyReused => envelope(
            "this Idempotency-Key was used for a different request (method, path, If-Match or body)",
            None,
        ),
        AlreadyResolved => envelope(
            "consultation 6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f's escalation was answered already",
            Some(vec![
                "a human answered this escalation at the agent hub already; the consultation shows that answer",
            ]),
        ),
        AgentHubUnavailable => envelope(
            "the agent hub cannot be reached or did not answer in time",
            Some(vec![
                "nothing was stored; try again once the agent hub answers",
            ]),
        ),
        AgentHubError => envelope(
            "the agent hub answered with an error",
            Some(vec![
                "nothing was stored; the agent hub's words are in the server's log",
            ]),
        ),
        DatabaseUnavailable => envelope("the database is unavailable", None),
        BadRequest => envelope("the request is not well-formed HTTP", None),
        RequestTimeout => envelope("the request body did not arrive in time", None),
        UriTooLong => envelope("the request URI is too long", None),
        HeadersTooLarge => envelope("the request headers are too large or too many", None),
        ServiceUnavailable => envelope(
            "the request could not be answered in time; retry later",
            None,
        ),
        Internal | Unknown => envelope("internal error", None),
    }
}

/// The fields of an answer that are left out when they have no value (the rest are sent
/// always, as `null` when they have none).
const MAY_BE_ABSENT: [(&str, &str); 3] = [
    ("ApiErrorBody", "details"),
    ("Approval", "on_behalf_of"),
    ("HealthCheck", "message"),
];

/// Marks every field of what the server answers as required, as it is sent (`null` when it
/// has no value) but for [`MAY_BE_ABSENT`]: the derive takes an `Option` for a field that may
/// be left out, and a client generated from the document would read every such field as
/// "absent, null or a value". Request bodies (`…Request`, `…Form`) keep their optional fields.
fn require_what_answers_send(doc: &mut Value) {
    let Some(schemas) = doc["components"]["schemas"].as_object_mut() else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        if name.ends_with("Request") || name.ends_with("Form") {
            continue;
        }
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        let required: Vec<Value> = properties
            .keys()
            .filter(|field| !MAY_BE_ABSENT.contains(&(name.as_str(), field.as_str())))
            .map(|field| json!(field))
            .collect();
        schema["required"] = Value::Array(required);
    }
}

/// States what answers' values are, where their Rust types say less: the five states every
/// summary counts, a confidence's range, the closed lists of a health check's and a failed
/// consultation's codes, the shape of webhook and delivery ids, and error details that are
/// absent rather than null.
fn state_answer_values(doc: &mut Value) {
    use orchestrator_core::WorkflowState;

    let schemas = &mut doc["components"]["schemas"];
    let states: Vec<&str> = WorkflowState::ALL.iter().map(|s| s.as_str()).collect();
    let count = json!({"type": "integer", "format": "int64", "minimum": 0});
    let counts = &mut schemas["SummaryResponse"]["properties"]["counts"];
    let description = counts["description"].clone();
    *counts = json!({
        "type": "object",
        "description": description,
        "properties": states.iter().map(|s| (s.to_string(), count.clone())).collect::<Map<_, _>>(),
        "required": states,
        "additionalProperties": false,
    });
    schemas["Consultation"]["properties"]["confidence"]["maximum"] = json!(100);
    schemas["HealthCheck"]["properties"]["status"]["enum"] = json!(["ok", "error"]);
    // What an event always says, as a validator can check it.
    for (field, value) in [
        ("specversion", "1.0"),
        ("source", "orchestrator"),
        ("datacontenttype", "application/json"),
    ] {
        schemas["CloudEvent"]["properties"][field]["enum"] = json!([value]);
    }
    schemas["ConsultationError"]["properties"]["code"]["enum"] =
        json!(orchestrator_core::consultation::ConsultationError::CODES);
    schemas["Webhook"]["properties"]["id"]["pattern"] = json!("^wh_[0-9a-f]{32}$");
    schemas["Delivery"]["properties"]["id"]["pattern"] = json!("^msg_[0-9a-f]{32}$");
    // Left out when there are none; never null.
    schemas["ApiErrorBody"]["properties"]["details"]["type"] = json!("array");
}

/// Leaves out what the library reads from a newer server but this one never sends: the error
/// code `UNKNOWN` and the blocker kind `unknown`.
fn drop_unknowns(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    if let Some(codes) = schemas["ErrorCode"]["enum"].as_array_mut() {
        codes.retain(|code| code != "UNKNOWN");
    }
    if let Some(kinds) = schemas["Blocker"]["oneOf"].as_array_mut() {
        kinds.retain(|kind| kind["properties"]["kind"]["enum"] != json!(["unknown"]));
    }
}

/// Puts the field rules on every schema property and parameter they govern.
fn apply_field_rules(doc: &mut Value) {
    let rules = field_rules();
    let targets: [(&str, &str, &str); 13] = [
        ("StartWorkflowRequest", "feature_id", "feature_id"),
        ("StartWorkflowRequest", "description", "description"),
        ("StartWorkflowRequest", "metadata", "metadata"),
        ("StartWorkflowRequest", "use_existing", "use_existing"),
        ("AdvanceRequest", "actor", "actor"),
        ("AdvanceRequest", "reason", "reason"),
        ("AdvanceRequest", "metadata", "metadata"),
        ("AdvanceRequest", "expected_version", "expected_version"),
        ("ConsultRequest", "topic", "topic"),
        ("ConsultRequest", "question", "question"),
        ("ConsultRequest", "context", "context"),
        ("WorkflowResponse", "feature_id", "feature_id"),
        ("HistoryResponse", "feature_id", "feature_id"),
    ];
    for (schema, property, rule) in targets {
        let slot = &mut doc["components"]["schemas"][schema]["properties"][property];
        let description = slot.get("description").cloned();
        *slot = rules[rule].clone();
        if let Some(description) = description {
            slot["description"] = description;
        }
    }
    let webhook = &mut doc["components"]["schemas"]["CreateWebhookRequest"]["properties"];
    webhook["url"] = json!({
        "type": "string", "format": "uri", "minLength": 1, "maxLength": 2048,
        "pattern": webhook_url_pattern(),
        "description": "an absolute http(s) URL without credentials or port 0, at most 2048 characters once percent-encoded (any the URL standard reads; the pattern is a safe subset: a host name, its last label starting with a letter and no label with two hyphens running, or an IPv4 address, and an optional port; an IPv6 address in brackets, which the pattern leaves out, is taken too); a host that does not resolve, or resolves to a loopback, private or link-local address, is refused unless WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
        "example": "https://example.com/orchestrator",
    });
    webhook["event_types"] = json!({
        "type": ["array", "null"],
        "items": { "type": "string", "enum": orchestrator_core::EventType::ALL.map(|t| t.as_str()) },
        "description": "the types to send; absent or empty: every type",
    });
    webhook["description"] = json!({
        "type": ["string", "null"], "maxLength": 500, "pattern": format!("^{TEXT_CHAR}*$"),
        "description": "free text for people: no control character but tab, line feed and carriage return",
    });
    // A gate needs 1-10 approvals.
    doc["components"]["schemas"]["GateRequest"]["properties"]["required_approvals"] = json!({
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": orchestrator_core::gate::MAX_REQUIRED_APPROVALS,
        "description": "distinct people who must approve, 1-10 (default GATE_REQUIRED_APPROVALS; with principals, fewer than that is an admin's to ask for: 403 FORBIDDEN for anyone else)",
    });
    // A reviewer's answer: `response` (free text, not blank) is required unless confirming.
    let respond = &mut doc["components"]["schemas"]["RespondRequest"];
    let mut response = rules["description"].clone();
    response["description"] = json!(
        "the correction or the context; required for correct and add_context (with confirm it may be left out or null)"
    );
    response["type"] = json!(["string", "null"]);
    response["example"] = examples::respond_request()["response"].clone();
    respond["properties"]["action"] = json!({
        "type": "string",
        "enum": ["confirm", "correct", "add_context"],
        "description": "confirm: the expert's answer stands; correct: yours replaces it; add_context: ask again with it",
    });
    respond["properties"]["response"] = response;
    respond["properties"]["actor"] = rules["actor"].clone();
    // What a caller may say it is: the orchestrator's own kind, `system`, is not for requests.
    for schema in ["AdvanceRequest", "RespondRequest"] {
        let kind = &mut doc["components"]["schemas"][schema]["properties"]["actor_kind"];
        let description = kind.get("description").cloned();
        *kind = json!({ "type": ["string", "null"], "enum": ["human", "agent", null] });
        if let Some(description) = description {
            kind["description"] = description;
        }
    }
    let respond = &mut doc["components"]["schemas"]["RespondRequest"];
    respond["anyOf"] = json!([
        { "properties": { "action": { "const": "confirm" } } },
        // Present and not null: a null `response` is as good as none.
        { "required": ["response"], "properties": { "response": { "type": "string" } } },
    ]);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let of_webhooks = operation["operationId"] == "create_webhook";
            let of_assets = operation["operationId"] == "get_board_asset";
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                for response in responses.values_mut() {
                    let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut)
                    else {
                        continue;
                    };
                    for (name, header) in headers.iter_mut() {
                        if of_webhooks && name == "Location" {
                            header["schema"] = json!({
                                "type": "string", "pattern": "^/webhooks/wh_[0-9a-f]{32}$",
                                "example": "/webhooks/wh_2f0c0d7b5e8a4f6e9a1b3c5d7e9f1a2b",
                            });
                            header["required"] = json!(true);
                            continue;
                        }
                        if of_assets && name == "ETag" {
                            // An asset's tag: the start of its content's hash.
                            header["schema"] = json!({
                                "type": "string", "pattern": "^\"[0-9a-f]{16}\"$",
                                "example": "\"1c0a2cec6877d0fd\"",
                            });
                            header["required"] = json!(true);
                            continue;
                        }
                        if name == "Event-Heartbeat-Seconds" {
                            // EVENTS_HEARTBEAT_SECONDS, as the setting takes it.
                            header["schema"] =
                                json!({"type": "integer", "minimum": 1, "maximum": 3600});
                            header["required"] = json!(true);
                            continue;
                        }
                        let rule = match name.as_str() {
                            "ETag" => "etag",
                            "Location" => "location",
                            _ => continue,
                        };
                        header["schema"] = rules[rule].clone();
                        header["required"] = json!(true);
                    }
                }
            }
            let of_events = matches!(
                operation["operationId"].as_str(),
                Some("list_events" | "stream_events")
            );
            let of_deliveries = operation["operationId"] == "list_deliveries";
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default();
                if of_events && let Some(schema) = event_parameter(name) {
                    parameter["schema"] = schema;
                    continue;
                }
                if of_deliveries && name == "status" {
                    parameter["schema"] = json!({
                        "type": "string",
                        "enum": orchestrator_core::webhook::DeliveryStatus::ALL.map(|s| s.as_str()),
                    });
                    continue;
                }
                if of_deliveries && name == "cursor" {
                    parameter["schema"] = json!({
                        "type": "string", "pattern": "^e[1-9][0-9]{0,17}$", "example": "e42",
                    });
                    continue;
                }
                let rule = match name {
                    "feature_id" => "feature_id",
                    "If-Match" => "if_match",
                    "state" => "state",
                    "limit" => "limit",
                    "cursor" => "cursor",
                    "consultation_id" => "consultation_id",
                    _ => continue,
                };
                parameter["schema"] = rules[rule].clone();
            }
        }
    }
}

/// The schemas of the event log's own parameters: ids, its page size, its types.
fn event_parameter(name: &str) -> Option<Value> {
    let types = orchestrator_core::EventType::ALL
        .map(|t| t.as_str().replace('.', r"\."))
        .join("|");
    Some(match name {
        "after" => json!({
            "type": "string", "pattern": format!("^{}$", u64_decimal()), "example": "42",
        }),
        // Empty, it names nothing (as a browser's `EventSource` may send it).
        "Last-Event-ID" => json!({
            "type": "string", "pattern": format!("^({})?$", u64_decimal()), "example": "42",
        }),
        "limit" => json!({
            "type": "integer", "minimum": 1,
            "maximum": orchestrator_core::api::EventsQuery::MAX_LIMIT, "default": 100,
        }),
        "type" => json!({
            "type": "string",
            "pattern": format!("^({types})(,({types}))*$"),
            "example": "workflow.transitioned,gate.overdue",
        }),
        _ => return None,
    })
}

/// The invisible characters (`values::INVISIBLE`) as the inside of a character class.
fn invisible_ranges() -> String {
    orchestrator_core::values::INVISIBLE
        .iter()
        .map(|&(from, to)| match (u32::from(from), u32::from(to)) {
            (from, to) if from == to => format!("\\u{from:04X}"),
            (from, to) => format!("\\u{from:04X}-\\u{to:04X}"),
        })
        .collect()
}

/// A character of free text that shows: not white space, not invisible (text without one is
/// blank: `values::is_blank`).
fn text_visible() -> String {
    format!(
        r"[^\s\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F{}]",
        invisible_ranges()
    )
}

/// Control characters free text may not hold: all but tab, line feed and carriage return.
const TEXT_CHAR: &str = r"[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]";
/// A character of free text that is not white space.
const TEXT_NON_SPACE: &str = r"[^\s\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]";

/// What a name given now may have around it, and drops: white space (not a control
/// character) and U+FEFF.
const NAME_AROUND: &str = r"(?:[^\S\x00-\x1F\x7F-\x9F]|\uFEFF)";

/// The webhook URLs the document promises to take: every one it matches parses (a host
/// whose last label is a number is read as an IPv4 address by the URL standard, so a name's
/// last label starts with a letter; a label has no two hyphens running, as the IDNA rules
/// read `xn--` as an encoded name; an address's parts have no leading zero, which would make
/// them octal; a port is 1 to 65535, without a leading zero).
fn webhook_url_pattern() -> String {
    let label = "[A-Za-z0-9]+(-[A-Za-z0-9]+)*";
    let last = "[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*";
    let name = format!("({label}\\.)*{last}\\.?");
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let port =
        "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
    format!("^[Hh][Tt][Tt][Pp][Ss]?://({name}|({octet}\\.){{3}}{octet})(:{port})?([/?#][!-~]*)?$")
}

/// A name given now (`Actor::parse_name`): no control character anywhere; white space (and
/// U+FEFF) around a name that is not blank and holds no invisible character.
fn actor_pattern() -> String {
    let invisible = invisible_ranges();
    let visible = format!(r"[^\s\x00-\x1F\x7F-\x9F{invisible}]");
    let inner = format!(r"[^\x00-\x1F\x7F-\x9F{invisible}]");
    format!("^{NAME_AROUND}*{visible}(?:{inner}*{visible})?{NAME_AROUND}*$")
}

/// The orchestrator's own name (`Actor::system`) as a name given now may spell it: in any
/// letter case (`ſ`, the long s, is an `s` in upper case), white space around it.
fn system_name_pattern() -> String {
    format!("^{NAME_AROUND}*[Ssſ][Yy][Ssſ][Tt][Ee][Mm]{NAME_AROUND}*$")
}

/// The field rules (docs/API.md) as JSON schemas, by name.
fn field_rules() -> BTreeMap<&'static str, Value> {
    let feature_id = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": orchestrator_core::values::FEATURE_ID_MAX_CHARS,
        "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
        "example": examples::FEATURE_ID,
    });
    BTreeMap::from([
        (
            "consultation_id",
            json!({
                "type": "string",
                "format": "uuid",
                "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                "example": "6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f",
            }),
        ),
        ("feature_id", feature_id),
        (
            "description",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": orchestrator_core::values::DESCRIPTION_MAX_CHARS,
                "pattern": format!("^{TEXT_CHAR}*{}{TEXT_CHAR}*$", text_visible()),
                "example": "Refactor to microservices",
            }),
        ),
        (
            "actor",
            json!({
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": orchestrator_core::values::ACTOR_MAX_CHARS,
                "pattern": actor_pattern(),
                "not": { "type": "string", "pattern": system_name_pattern() },
                "example": "alice",
            }),
        ),
        (
            "reason",
            json!({
                "type": ["string", "null"],
                "maxLength": orchestrator_core::values::REASON_MAX_CHARS,
                "pattern": format!("^{TEXT_CHAR}*$"),
                "example": "spec reviewed",
            }),
        ),
        (
            "metadata",
            json!({
                "type": ["object", "null"],
                "additionalProperties": true,
                "example": { "owner": "platform-team" },
            }),
        ),
        (
            "use_existing",
            json!({ "type": ["boolean", "null"], "example": false }),
        ),
        (
            "expected_version",
            json!({
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": u64::MAX,
                "example": 1,
            }),
        ),
        (
            "topic",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": "^[A-Za-z0-9_-]+$",
                "example": "security",
            }),
        ),
        (
            "question",
            json!({
                "type": "string",
                "minLength": orchestrator_core::consultation::QUESTION_MIN_CHARS,
                "maxLength": orchestrator_core::consultation::QUESTION_MAX_CHARS,
                // At least 10 characters from the first to the last that is not white space.
                "pattern": format!(
                    "^{TEXT_CHAR}*{TEXT_NON_SPACE}{TEXT_CHAR}{{8,}}{TEXT_NON_SPACE}{TEXT_CHAR}*$"
                ),
                "example": "Is AES-GCM with a per-tenant key sound for backups?",
            }),
        ),
        (
            "context",
            json!({
                "type": ["string", "null"],
                "maxLength": orchestrator_core::consultation::CONTEXT_MAX_CHARS,
                "pattern": format!("^{TEXT_CHAR}*$"),
                "example": "backups are written nightly to object storage",
            }),
        ),
        (
            "if_match",
            json!({
                "type": "string",
                "pattern": format!("^(\\*|(W/)?(\"{u64}\"|{u64}))$", u64 = u64_decimal()),
                "example": "\"1\"",
            }),
        ),
        (
            "state",
            json!({ "$ref": "#/components/schemas/WorkflowState" }),
        ),
        (
            "etag",
            json!({ "type": "string", "pattern": "^\"[0-9]+\"$", "example": "\"2\"" }),
        ),
        (
            "location",
            json!({
                "type": "string",
                "pattern": "^/workflow/[A-Za-z0-9][A-Za-z0-9._-]*$",
                "example": format!("/workflow/{}", examples::FEATURE_ID),
            }),
        ),
        (
            "limit",
            json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50, "example": 50 }),
        ),
        (
            "cursor",
            json!({
                "type": "string",
                "minLength": 6,
                "maxLength": 175,
                "pattern": cursor_pattern(),
                "example": orchestrator_core::api::cursor::encode(
                    &orchestrator_core::FeatureId::parse(examples::FEATURE_ID)
                        .unwrap_or_else(|e| panic!("the example feature id is valid: {e}"))
                ),
            }),
        ),
    ])
}

/// A regex for the decimal numbers Rust's `u64::from_str` accepts: an optional `+`, any
/// leading zeros, and a value of at most `u64::MAX`.
fn u64_decimal() -> String {
    let max = u64::MAX.to_string();
    let digits: Vec<u32> = max.chars().filter_map(|c| c.to_digit(10)).collect();
    let mut alternatives = vec![format!("[0-9]{{1,{}}}", digits.len() - 1)];
    for (i, digit) in digits.iter().enumerate() {
        // A smaller digit here, after the same prefix, leaves the rest free. (A first digit
        // below `1` is a leading zero, which the shorter alternatives cover.)
        if *digit == 0 || i == 0 {
            continue;
        }
        let rest = digits.len() - i - 1;
        let lower = if *digit == 1 {
            "0".to_owned()
        } else {
            format!("[0-{}]", digit - 1)
        };
        let free = if rest == 0 {
            String::new()
        } else {
            format!("[0-9]{{{rest}}}")
        };
        alternatives.push(format!("{}{lower}{free}", &max[..i]));
    }
    alternatives.push(max.clone());
    format!("\\+?0*(?:{})", alternatives.join("|"))
}

/// The URL-safe base64 alphabet.
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A regex for exactly the cursors the server accepts: URL-safe base64 without padding of
/// `v1:` followed by a feature id. `v1:` is three bytes, so it encodes alone (`djE6`) and the
/// feature id starts on a 3-byte group of its own.
fn cursor_pattern() -> String {
    let any = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let first = |b: u8| b.is_ascii_alphanumeric();
    let full = |lead: &dyn Fn(u8) -> bool| base64_group(lead, &any, 3);
    let tail = |lead: &dyn Fn(u8) -> bool, bytes: usize| base64_group(lead, &any, bytes);
    format!(
        "^djE6(?:{first_full}(?:{full})*(?:{t1}|{t2})?|{first_t1}|{first_t2})$",
        first_full = full(&first),
        full = full(&any),
        t1 = tail(&any, 1),
        t2 = tail(&any, 2),
        first_t1 = tail(&first, 1),
        first_t2 = tail(&first, 2),
    )
}

/// A regex for the base64 of `bytes` (1–3) bytes, the first allowed by `lead`, the others by
/// `rest`, with the unused bits of a short group zero as the decoder requires.
fn base64_group(lead: &dyn Fn(u8) -> bool, rest: &dyn Fn(u8) -> bool, bytes: usize) -> String {
    let class = |sextets: &[u8]| -> String {
        let chars: String = sextets
            .iter()
            .map(|s| match BASE64_URL[usize::from(*s)] {
                b'-' => "\\-".to_owned(),
                c => char::from(c).to_string(),
            })
            .collect();
        format!("[{chars}]")
    };
    let alternation = |parts: Vec<String>| -> String {
        if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            format!("(?:{})", parts.join("|"))
        }
    };
    // Third and fourth characters, given the second byte's high nibble: the low nibble `l`
    // and, with three bytes, the third byte's two top bits `y`, then its six low bits.
    let after_nibble = |high: u8| -> String {
        let lows: Vec<u8> = (0..16u8).filter(|l| rest(high << 4 | l)).collect();
        if bytes == 2 {
            return class(&lows.iter().map(|l| l << 2).collect::<Vec<_>>());
        }
        let mut parts = Vec::new();
        for y in 0..4u8 {
            let last: Vec<u8> = (0..64u8).filter(|s| rest(y << 6 | s)).collect();
            if last.is_empty() {
                continue;
            }
            let third: Vec<u8> = lows.iter().map(|l| l << 2 | y).collect();
            parts.push(format!("{}{}", class(&third), class(&last)));
        }
        alternation(parts)
    };
    // Group the first characters by which two low bits of the first byte they leave open.
    let mut by_low_bits: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for s1 in 0..64u8 {
        let lows: Vec<u8> = (0..4u8).filter(|x| lead(s1 << 2 | x)).collect();
        if !lows.is_empty() {
            by_low_bits.entry(lows).or_default().push(s1);
        }
    }
    let mut parts = Vec::new();
    for (lows, firsts) in by_low_bits {
        if bytes == 1 {
            let second: Vec<u8> = lows.iter().map(|x| x << 4).collect();
            parts.push(format!("{}{}", class(&firsts), class(&second)));
            continue;
        }
        // Second characters, grouped by what may follow them.
        let mut by_follow: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for high in 0..16u8 {
            if !(0..16u8).any(|l| rest(high << 4 | l)) {
                continue;
            }
            let follow = after_nibble(high);
            let entry = by_follow.entry(follow).or_default();
            entry.extend(lows.iter().map(|x| x << 4 | high));
        }
        let seconds: Vec<String> = by_follow
            .into_iter()
            .map(|(follow, mut seconds)| {
                seconds.sort_unstable();
                format!("{}{follow}", class(&seconds))
            })
            .collect();
        parts.push(format!("{}{}", class(&firsts), alternation(seconds)));
    }
    alternation(parts)
}

/// Example values shared by the annotations and the error examples.
pub(crate) mod examples {
    use serde_json::{Value, json};

    /// The feature every example is about.
    pub const FEATURE_ID: &str = "008-services-architecture";

    /// A workflow as the API shows it, in `state` at `version`; at GATE_1 from version 3 on,
    /// with one approval given (version 2 is the gate just entered).
    pub fn workflow(state: &str, version: u64) -> Value {
        let approved = state == "GATE_1" && version >= 3;
        // As answered when the state was entered (a start, an advance), or (at the gate, with
        // an approval) when that came, ten minutes on.
        let at_gate = if approved { 600 } else { 0 };
        let (percent, time_in_state) = match state {
            "PHASE_1" => (25, json!({ "PHASE_1": 0 })),
            "GATE_1" => (50, json!({ "PHASE_1": 3600, "GATE_1": at_gate })),
            "PHASE_2" => (75, json!({ "PHASE_1": 3600, "GATE_1": 900, "PHASE_2": 0 })),
            _ => (0, json!({})),
        };
        json!({
            "feature_id": FEATURE_ID,
            "description": "Refactor to microservices",
            "state": state,
            "version": version,
            "progress": { "percent": percent, "rework_count": 0, "time_in_state_seconds": time_in_state },
            "metadata": { "owner": "platform-team" },
            "created_at": "2026-11-24T10:00:00.123456Z",
            "updated_at": match (version, approved) {
                // A workflow just started has not changed since.
                (1, _) => "2026-11-24T10:00:00.123456Z",
                (_, true) => "2026-11-24T11:10:00Z",
                (_, false) => "2026-11-24T11:00:00.654321Z",
            },
            "completed_at": null,
            "gate": gate(state, approved),
        })
    }

    /// A workflow's gate: two approvals within a day; at GATE_1, none so far or one
    /// (`approved`).
    fn gate(state: &str, approved: bool) -> Value {
        let at_gate = state == "GATE_1";
        let approvals = if approved {
            json!([{ "actor": "alice", "at": "2026-11-24T11:10:00Z" }])
        } else {
            json!([])
        };
        json!({
            "required_approvals": 2,
            "allow_self_approval": false,
            "due_in_seconds": 86_400,
            "on_expiry": "flag",
            "entered_at": if at_gate { json!("2026-11-24T11:00:00.654321Z") } else { Value::Null },
            "due_at": if at_gate { json!("2026-11-25T11:00:00.654321Z") } else { Value::Null },
            "overdue": false,
            "authors": if at_gate { json!(["planner-agent"]) } else { json!([]) },
            "approvals": approvals,
            "blocked_by": if at_gate { json!([{ "kind": "approvals", "have": u8::from(approved), "need": 2 }]) } else { json!([]) },
        })
    }

    /// `POST /workflow/start`'s body.
    pub fn start_request() -> Value {
        json!({
            "feature_id": FEATURE_ID,
            "description": "Refactor to microservices",
            "metadata": { "owner": "platform-team" },
            "gate": { "required_approvals": 2, "due_in_seconds": 86_400, "on_expiry": "flag" },
        })
    }

    /// `POST /workflow/{feature_id}/advance`'s body.
    pub fn advance_request() -> Value {
        json!({
            "trigger": "agent_complete",
            "actor": "planner-agent",
            "reason": "spec and plan written",
            "expected_version": 1,
        })
    }

    /// A history of three transitions.
    pub fn history() -> Value {
        let entry =
            |seq: u64, from: &str, to: &str, trigger: &str, actor: Value, kind: Value, at: &str| {
                json!({
                    "seq": seq, "from": from, "to": to, "trigger": trigger, "actor": actor,
                    "actor_kind": kind, "on_behalf_of": null, "reason": null, "override": false,
                    "metadata": {}, "at": at,
                })
            };
        json!({
            "feature_id": FEATURE_ID,
            "transitions": [
                entry(1, "IDLE", "PHASE_1", "start", Value::Null, Value::Null, "2026-11-24T10:00:00.123456Z"),
                entry(2, "PHASE_1", "GATE_1", "agent_complete", json!("planner-agent"), json!("agent"), "2026-11-24T11:00:00.654321Z"),
                entry(3, "GATE_1", "PHASE_2", "human_approved", json!("alice"), json!("human"), "2026-11-24T11:15:00.000001Z"),
            ],
        })
    }

    /// One page of `GET /workflows`.
    pub fn list() -> Value {
        json!({ "items": [workflow("GATE_1", 3)], "next_cursor": "djE6MDA4LXNlcnZpY2VzLWFyY2hpdGVjdHVyZQ" })
    }

    /// One `workflow.transitioned` event.
    pub fn event() -> Value {
        json!({
            "specversion": "1.0", "id": "42", "source": "orchestrator",
            "type": "workflow.transitioned", "subject": FEATURE_ID,
            "time": "2026-11-24T10:05:00Z", "datacontenttype": "application/json",
            "data": {
                "feature_id": FEATURE_ID, "version": 2, "state": "GATE_1", "seq": 2,
                "from": "PHASE_1", "to": "GATE_1", "trigger": "agent_complete",
                "actor": "spec-agent", "actor_kind": "agent", "on_behalf_of": null,
                "reason": null, "override": false, "metadata": {},
                "at": "2026-11-24T10:05:00Z"
            }
        })
    }

    /// `POST /webhooks`' body.
    pub fn create_webhook() -> Value {
        json!({
            "url": "https://example.com/orchestrator",
            "event_types": ["workflow.transitioned", "gate.overdue"],
            "description": "reviewers' chat bot",
        })
    }

    /// A webhook as listed.
    pub fn webhook() -> Value {
        json!({
            "id": "wh_2f0c0d7b5e8a4f6e9a1b3c5d7e9f1a2b",
            "url": "https://example.com/orchestrator",
            "event_types": ["workflow.transitioned", "gate.overdue"],
            "description": "reviewers' chat bot",
            "created_at": "2026-12-01T09:00:00Z",
        })
    }

    /// `201` of `POST /webhooks`.
    pub fn created_webhook() -> Value {
        let mut created = webhook();
        created["secret"] = json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=");
        created
    }

    /// `GET /webhooks`.
    pub fn webhooks() -> Value {
        json!({ "items": [webhook()] })
    }

    /// A page of deliveries.
    pub fn deliveries() -> Value {
        json!({
            "items": [
                {
                    "id": "msg_8b1e2d4c6a0f4e1b9c3d5f7a9b1c3d5e",
                    "event_id": "43",
                    "event_type": "gate.overdue",
                    "status": "pending",
                    "attempts": 2,
                    "last_status_code": 503,
                    "last_error": "the target answered 503",
                    "next_attempt_at": "2026-12-01T09:35:05Z",
                    "delivered_at": null,
                    "created_at": "2026-12-01T09:30:00.310Z",
                },
                {
                    "id": "msg_1c3d5e7f9a1b4c6d8e0f2a4b6c8d0e2f",
                    "event_id": "42",
                    "event_type": "workflow.transitioned",
                    "status": "delivered",
                    "attempts": 1,
                    "last_status_code": 200,
                    "last_error": null,
                    "next_attempt_at": null,
                    "delivered_at": "2026-12-01T09:30:00.120Z",
                    "created_at": "2026-12-01T09:30:00.080Z",
                },
            ],
            "next_cursor": "e42",
        })
    }

    /// A page of the event log.
    pub fn events() -> Value {
        json!({ "items": [event()], "next_after": "42" })
    }

    /// The start of an event stream.
    pub fn stream() -> Value {
        Value::String(format!(
            "id: 41\n\nid: 42\nevent: workflow.transitioned\ndata: {}\n\n: heartbeat\n\n",
            event()
        ))
    }

    /// `GET /workflows/summary`.
    pub fn summary() -> Value {
        json!({
            "counts": { "IDLE": 1, "PHASE_1": 3, "GATE_1": 1, "PHASE_2": 2, "DONE": 5 },
            "total": 12,
            "overdue": 1,
        })
    }

    /// `POST /workflow/{feature_id}/consultations`' body.
    pub fn consult_request() -> Value {
        json!({
            "topic": "security",
            "question": "Is AES-GCM with a per-tenant key sound for backups?",
            "context": "backups are written nightly to object storage",
        })
    }

    /// A consultation the hub escalated to a human.
    pub fn consultation() -> Value {
        json!({
            "id": "6f1c2b1e-9a3d-4c5e-8f00-0a1b2c3d4e5f",
            "feature_id": FEATURE_ID,
            "topic": "security",
            "question": "Is AES-GCM with a per-tenant key sound for backups?",
            "context": "backups are written nightly to object storage",
            "answer": "Yes, if nonces never repeat per key.",
            "rationale": "AES-GCM is standard; nonce reuse breaks it.",
            "confidence": 62,
            "status": "pending_human",
            "escalation_id": "esc-7f3a",
            "final_answer": null,
            "human_action": null,
            "human_response": null,
            "uncertainty_reasons": ["nonce handling across writers is not described"],
            "human_responder": null,
            "resolved_at": null,
            "error": null,
            "asked_in_state": "PHASE_1",
            "created_at": "2026-11-24T10:30:00Z",
            "updated_at": "2026-11-24T10:30:00Z",
        })
    }

    /// A consultation the hub has not answered within the wait.
    pub fn asking() -> Value {
        let mut asking = consultation();
        for field in ["answer", "rationale", "confidence", "escalation_id"] {
            asking[field] = Value::Null;
        }
        asking["status"] = json!("asking");
        asking["uncertainty_reasons"] = json!([]);
        asking
    }

    /// `POST …/consultations/{consultation_id}/respond`'s body.
    pub fn respond_request() -> Value {
        json!({
            "action": "correct",
            "response": "Use AES-GCM-SIV: nonces cannot be coordinated across writers.",
            "actor": "sec-team",
        })
    }

    /// A consultation a reviewer corrected.
    pub fn responded() -> Value {
        let mut answered = consultation();
        answered["status"] = json!("resolved");
        answered["final_answer"] =
            json!("Use AES-GCM-SIV: nonces cannot be coordinated across writers.");
        answered["human_action"] = json!("correct");
        answered["human_response"] = answered["final_answer"].clone();
        answered["human_responder"] = json!("sec-team");
        answered["resolved_at"] = json!("2026-11-24T11:02:00Z");
        answered["updated_at"] = json!("2026-11-24T11:02:00Z");
        answered
    }

    /// `GET /workflow/{feature_id}/consultations`.
    pub fn consultations() -> Value {
        json!({ "items": [consultation()] })
    }

    /// `GET /`.
    pub fn service_info() -> Value {
        json!({
            "service": "orchestrator", "version": crate::VERSION, "docs": "/docs",
            "redoc": "/redoc", "openapi": "/openapi.json", "health": "/health",
            "board": "/board", "events": "/events", "metrics": "/metrics",
        })
    }

    /// `GET /health` when all is well.
    pub fn health_ok() -> Value {
        json!({
            "status": "healthy", "version": crate::VERSION, "service": "orchestrator",
            "uptime_seconds": 3600,
            "checks": { "database": { "status": "ok" }, "agent_hub": { "status": "ok" } },
        })
    }

    /// `GET /health` when the database is down.
    pub fn health_down() -> Value {
        json!({
            "status": "unhealthy", "version": crate::VERSION, "service": "orchestrator",
            "uptime_seconds": 3600,
            "checks": {
                "database": { "status": "error", "message": "the database cannot be read or written" },
                "agent_hub": { "status": "ok" },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the server serves is in the document, with each method it serves but HEAD
    /// (every GET answers HEAD too) — but the pages that render the document, which are HTML
    /// for people. A new route cannot go undocumented.
    #[test]
    fn every_route_is_documented_with_its_methods() {
        const PAGES_FOR_PEOPLE: [&str; 4] = ["/docs", "/docs/", "/docs/{*file}", "/redoc"];
        for doc in [ApiDoc::for_server(false), ApiDoc::for_principals()] {
            for (pattern, route) in Route::TABLE {
                if PAGES_FOR_PEOPLE.contains(&pattern) {
                    continue;
                }
                for method in route.methods() {
                    if *method == http::Method::HEAD {
                        continue;
                    }
                    let method = method.as_str().to_ascii_lowercase();
                    assert!(
                        doc["paths"][pattern][&method].is_object(),
                        "{method} {pattern} is not documented"
                    );
                }
            }
        }
    }
}
