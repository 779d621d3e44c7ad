//! The OpenAPI document and the docs pages, served from memory with no CDN.

use orchestrator_core::api::ErrorCode;
use orchestrator_server::http::ApiDoc;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};

/// Operations anyone may call with a token configured.
const PUBLIC: [&str; 3] = ["get_health", "get_metrics", "get_openapi"];

/// An operation of a document: (path, method, operation).
type Operation = (String, String, Value);

/// Every operation of a document's JSON API.
fn operations(doc: &Value) -> Vec<Operation> {
    let (api, board) = all_operations(doc);
    assert_eq!(api.len(), 22, "every operation is documented");
    assert_eq!(board.len(), 5, "every board route is documented");
    api
}

/// A document's operations: the JSON API's, and the board's HTML routes.
fn all_operations(doc: &Value) -> (Vec<Operation>, Vec<Operation>) {
    let (mut api, mut board) = (Vec::new(), Vec::new());
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let entry = (path.clone(), method.clone(), operation.clone());
            if path.starts_with("/board") {
                board.push(entry);
            } else {
                api.push(entry);
            }
        }
    }
    (api, board)
}

#[test]
fn board_routes_are_documented_as_pages_that_need_no_bearer_token() {
    for doc in [ApiDoc::for_server(true), ApiDoc::for_principals()] {
        let (_, board) = all_operations(&doc);
        for (path, method, operation) in board {
            let responses = operation["responses"].as_object().expect("responses");
            assert!(operation.get("security").is_none(), "{method} {path}");
            assert!(
                !responses.contains_key("401") || method == "post",
                "{method} {path}"
            );
            let success = if method == "post" { "303" } else { "200" };
            assert!(responses.contains_key(success), "{method} {path}");
            // A bug, the deadline, a form too large or too slow: pages, wherever they are met.
            // Only malformed HTTP, refused before a route is known, is the envelope.
            let mut pages = vec!["500", "503"];
            if method == "post" {
                pages.extend(["408", "413"]);
            }
            // Said once, in a page's words (no keys, streams or hub).
            assert_eq!(
                responses["500"]["description"],
                json!("a page: a bug"),
                "{method} {path}"
            );
            assert!(
                !responses["503"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key"),
                "{method} {path}"
            );
            for status in pages {
                let content = &responses[status]["content"];
                assert!(
                    content.get("text/html").is_some(),
                    "{method} {path} {status}"
                );
                assert!(
                    content.get("application/json").is_none(),
                    "{method} {path} {status}"
                );
            }
            assert_eq!(
                codes(&responses["414"]),
                ["URI_TOO_LONG"],
                "{method} {path}"
            );
            assert!(
                codes(&responses["400"]).contains(&"BAD_REQUEST".to_owned()),
                "{method} {path}"
            );
            if method == "post" {
                for status in ["400", "403", "408", "413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
                assert!(
                    operation["requestBody"]["content"]
                        .get("application/x-www-form-urlencoded")
                        .is_some()
                );
            }
        }
    }
}

fn id_of(operation: &Value) -> &str {
    operation["operationId"].as_str().expect("operationId")
}

/// The error codes a response lists, from its schema's `enum`.
fn codes(response: &Value) -> Vec<String> {
    let schema = &response["content"]["application/json"]["schema"];
    let all_of = schema["allOf"]
        .as_array()
        .or_else(|| schema["oneOf"][1]["allOf"].as_array())
        .unwrap_or_else(|| panic!("no error schema in {response}"));
    all_of[1]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("code enum")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect()
}

fn status_of(code: &str) -> u16 {
    serde_json::from_value::<ErrorCode>(json!(code))
        .expect("a known code")
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_documents_no_security_and_no_401() {
    let app = spawn_app().await;
    let doc: Value = reqwest::get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc, ApiDoc::for_server(false));
    assert!(doc["components"]["securitySchemes"].is_null());
    for (path, method, operation) in operations(&doc) {
        assert!(operation.get("security").is_none(), "{method} {path}");
        assert!(
            operation["responses"].get("401").is_none(),
            "{method} {path}"
        );
    }
    // Every operation but the public ones (and the board's assets) is refused to a request
    // addressed to a name the server does not answer to.
    let (api, board) = all_operations(&doc);
    for (path, method, operation) in api.iter().chain(&board) {
        let public = ["/health", "/metrics", "/openapi.json", "/docs", "/redoc"]
            .iter()
            .any(|p| path.starts_with(p))
            || path.starts_with("/board/assets");
        let forbidden = &operation["responses"]["403"];
        assert_eq!(forbidden.is_null(), public, "{method} {path}");
        if !public {
            let said = forbidden["description"].as_str().unwrap_or_default();
            assert!(said.contains("ALLOWED_HOSTS"), "{method} {path}: {said}");
        }
    }
}

#[test]
fn with_a_token_every_protected_operation_requires_the_bearer_scheme_and_lists_401() {
    let doc = ApiDoc::for_server(true);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": "the value of ORCHESTRATOR_API_TOKEN"})
    );
    for (path, method, operation) in operations(&doc) {
        let responses = &operation["responses"];
        if PUBLIC.contains(&id_of(&operation)) {
            assert!(operation.get("security").is_none(), "{method} {path}");
            assert!(responses.get("401").is_none(), "{method} {path}");
        } else {
            // Required, not optional: no empty requirement beside it.
            assert_eq!(
                operation["security"],
                json!([{"bearer": []}]),
                "{method} {path}"
            );
            assert_eq!(
                codes(&responses["401"]),
                ["UNAUTHORIZED"],
                "{method} {path}"
            );
            assert_eq!(
                responses["401"]["headers"]["WWW-Authenticate"]["required"],
                true
            );
            // A write with the board's session cookie and no CSRF token is refused.
            if method != "get" {
                assert!(
                    codes(&responses["403"]).contains(&"FORBIDDEN".to_owned()),
                    "{method} {path}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_exactly_the_operations_the_document_protects() {
    let app = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let http = reqwest::Client::new();
    for (path, method, operation) in operations(&ApiDoc::for_server(true)) {
        let url = app.url(&path.replace("{feature_id}", "f-1"));
        let request = match method.as_str() {
            "get" => http.get(&url),
            "post" => http.post(&url).json(&json!({})),
            "delete" => http.delete(&url),
            other => panic!("unexpected method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        let protected = operation.get("security").is_some();
        assert_eq!(
            status == 401,
            protected,
            "{method} {path} answered {status}"
        );
    }
}

#[test]
fn every_operation_lists_500_503_and_the_malformed_request_answers() {
    for auth in [false, true] {
        for (path, method, operation) in operations(&ApiDoc::for_server(auth)) {
            let responses = &operation["responses"];
            let id = id_of(&operation);
            assert!(
                codes(&responses["500"]).contains(&"INTERNAL".to_owned()),
                "{id}"
            );
            let unavailable = codes(&responses["503"]);
            assert!(
                unavailable.contains(&"SERVICE_UNAVAILABLE".to_owned()),
                "{id}"
            );
            // `GET /` looks up a board session's cookie when the server needs a token.
            let touches_storage = match id {
                "get_health" | "get_metrics" | "get_openapi" => false,
                "get_service_info" => auth,
                _ => true,
            };
            assert_eq!(
                unavailable.contains(&"DATABASE_UNAVAILABLE".to_owned()),
                touches_storage,
                "{method} {path}"
            );
            assert_eq!(codes(&responses["414"]), ["URI_TOO_LONG"], "{id}");
            assert_eq!(codes(&responses["431"]), ["HEADERS_TOO_LARGE"], "{id}");
            assert!(
                codes(&responses["400"]).contains(&"BAD_REQUEST".to_owned()),
                "{id}"
            );
            if path.contains("{feature_id}") {
                assert!(
                    codes(&responses["400"]).contains(&"VALIDATION_ERROR".to_owned()),
                    "{id}"
                );
                assert!(
                    codes(&responses["404"]).contains(&"WORKFLOW_NOT_FOUND".to_owned()),
                    "{id}"
                );
            }
        }
    }
}

#[test]
fn every_operation_with_a_body_lists_400_408_413_and_415() {
    let doc = ApiDoc::for_server(true);
    let mut with_body = 0;
    for (_, _, operation) in operations(&doc) {
        if operation.get("requestBody").is_none() {
            continue;
        }
        with_body += 1;
        let responses = &operation["responses"];
        let id = id_of(&operation);
        let bad = codes(&responses["400"]);
        assert!(bad.contains(&"INVALID_JSON".to_owned()), "{id}");
        assert!(bad.contains(&"VALIDATION_ERROR".to_owned()), "{id}");
        assert_eq!(codes(&responses["408"]), ["REQUEST_TIMEOUT"], "{id}");
        assert_eq!(codes(&responses["413"]), ["PAYLOAD_TOO_LARGE"], "{id}");
        assert_eq!(codes(&responses["415"]), ["UNSUPPORTED_MEDIA_TYPE"], "{id}");
        // Every POST takes an idempotency key.
        assert!(
            codes(&responses["409"]).contains(&"IDEMPOTENCY_KEY_IN_USE".to_owned()),
            "{id}"
        );
        assert_eq!(codes(&responses["422"]), ["IDEMPOTENCY_KEY_REUSED"], "{id}");
        let parameters = operation["parameters"].as_array().expect("parameters");
        assert!(
            parameters
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{id}"
        );
    }
    assert_eq!(with_body, 5);
}

#[test]
fn advance_lists_every_conflict_and_the_hub_failures() {
    let doc = ApiDoc::for_server(false);
    let responses = &doc["paths"]["/workflow/{feature_id}/advance"]["post"]["responses"];
    assert_eq!(
        codes(&responses["409"]),
        [
            "INVALID_TRANSITION",
            "VERSION_CONFLICT",
            "GATE_BLOCKED",
            "SELF_APPROVAL",
            "ALREADY_APPROVED",
            "IDEMPOTENCY_KEY_IN_USE"
        ]
    );
    assert_eq!(codes(&responses["502"]), ["AGENT_HUB_ERROR"]);
    assert!(codes(&responses["503"]).contains(&"AGENT_HUB_UNAVAILABLE".to_owned()));
    assert_eq!(responses["200"]["headers"]["ETag"]["required"], true);
    let start = &doc["paths"]["/workflow/start"]["post"]["responses"];
    for status in ["200", "201"] {
        assert_eq!(
            start[status]["headers"]["ETag"]["required"], true,
            "{status}"
        );
    }
    assert_eq!(start["201"]["headers"]["Location"]["required"], true);
    // A stream's heartbeat is EVENTS_HEARTBEAT_SECONDS, as that setting takes it.
    let heartbeat = &doc["paths"]["/events/stream"]["get"]["responses"]["200"]["headers"]["Event-Heartbeat-Seconds"];
    assert_eq!(
        heartbeat["schema"],
        serde_json::json!({"type": "integer", "minimum": 1, "maximum": 3600})
    );
    // Where sign-in leads: any board page it may be asked to return to, a later page of a
    // state's list included.
    let signed_in = &doc["paths"]["/board/session"]["post"]["responses"]["303"]["headers"];
    let pattern = signed_in["Location"]["schema"]["pattern"].as_str().unwrap();
    let pattern = regex::Regex::new(pattern).unwrap();
    for next in [
        "/board",
        "/board/feature/checkout-v2",
        "/board?state=GATE_1",
        "/board?state=DONE&after=f-1",
    ] {
        assert!(pattern.is_match(next), "{next}");
    }
    // An empty Last-Event-ID names nothing, and the document takes it.
    let stream = &doc["paths"]["/events/stream"]["get"]["parameters"];
    let last_event_id = stream
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Last-Event-ID")
        .unwrap();
    let pattern = regex::Regex::new(last_event_id["schema"]["pattern"].as_str().unwrap()).unwrap();
    assert!(pattern.is_match("") && pattern.is_match("42") && !pattern.is_match("x"));
}

/// The routes whose POST the server refuses 415 before the idempotency key unless it says it
/// is JSON are exactly those whose documented body is JSON (a route left out would keep its
/// 415 for the key's day).
#[test]
fn the_routes_checked_for_a_json_body_before_the_key_are_those_that_take_one() {
    use orchestrator_server::http::router::Route;
    let doc = ApiDoc::for_server(false);
    for (path, method, operation) in operations(&doc) {
        let Some(route) = Route::with_pattern(&path) else {
            panic!("{path} is a route");
        };
        let json_body = operation["requestBody"]["content"]
            .get("application/json")
            .is_some();
        assert_eq!(
            method == "post" && json_body,
            method == "post" && route.reads_json(),
            "{method} {path}"
        );
    }
}

/// A 403 is a kept answer (`Idempotent-Replayed`) only where the body brings it about: a role
/// every request to the route needs is checked before the key.
#[test]
fn only_the_403s_a_body_brings_about_may_be_replayed() {
    let doc = ApiDoc::for_principals();
    let replayed = |path: &str| {
        doc["paths"][path]["post"]["responses"]["403"]["headers"]
            .get("Idempotent-Replayed")
            .is_some()
    };
    for path in [
        "/workflow/{feature_id}/consultations",
        "/webhooks",
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    ] {
        assert!(!replayed(path), "{path}: the role comes before the key");
    }
    for path in [
        "/workflow/{feature_id}/advance",
        "/workflow/{feature_id}/consultations/{consultation_id}/respond",
        // A gate below the server's defaults needs admin: judged on the body.
        "/workflow/start",
    ] {
        assert!(
            replayed(path),
            "{path}: a 403 the body brings about is the handler's"
        );
    }
    // Without principals no start is refused for its gate, and a 403 is the board's, first.
    let shared = ApiDoc::for_server(true);
    let start = &shared["paths"]["/workflow/start"]["post"]["responses"]["403"]["headers"];
    assert!(start.get("Idempotent-Replayed").is_none());
}

#[test]
fn every_response_and_request_body_has_an_example_and_error_examples_match_their_status() {
    for (path, method, operation) in operations(&ApiDoc::for_server(true)) {
        if let Some(body) = operation.get("requestBody") {
            assert!(
                body["content"]["application/json"]["example"].is_object(),
                "{method} {path} request"
            );
        }
        for (status, response) in operation["responses"].as_object().expect("responses") {
            // A delete's 204 and a redelivery's 202 answer no body.
            if response.get("content").is_none() && (status == "204" || status == "202") {
                continue;
            }
            let (media, content) = response["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .unwrap_or_else(|| panic!("{method} {path} {status} has no content"));
            let examples: Vec<Value> = match content.get("examples") {
                Some(named) => named
                    .as_object()
                    .expect("examples")
                    .values()
                    .map(|e| e["value"].clone())
                    .collect(),
                None => vec![content["example"].clone()],
            };
            assert!(
                examples.iter().all(|e| !e.is_null()),
                "{method} {path} {status} ({media}) lacks an example"
            );
            if status.starts_with('2') {
                continue;
            }
            let listed = if status == "503" && path == "/health" {
                vec![]
            } else {
                codes(response)
            };
            for example in examples.iter().filter(|e| e.get("error").is_some()) {
                let code = example["error"]["code"].as_str().expect("code");
                assert_eq!(
                    status_of(code).to_string(),
                    *status,
                    "{method} {path} {code}"
                );
                assert!(
                    example["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{method} {path} {code}"
                );
                if !listed.is_empty() {
                    assert!(listed.contains(&code.to_owned()), "{method} {path} {code}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_examples_are_accepted_by_the_server() {
    let app = spawn_app().await;
    let doc = ApiDoc::for_server(false);
    let example = |path: &str| {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"].clone()
    };
    let http = reqwest::Client::new();
    let created = http
        .post(app.url("/workflow/start"))
        .json(&example("/workflow/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["feature_id"].as_str().unwrap().to_owned();
    let advanced = http
        .post(app.url(&format!("/workflow/{id}/advance")))
        .json(&example("/workflow/{feature_id}/advance"))
        .send()
        .await
        .unwrap();
    assert_eq!(advanced.status(), 200);
    let asked = http
        .post(app.url(&format!("/workflow/{id}/consultations")))
        .json(&example("/workflow/{feature_id}/consultations"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 201);
}

#[test]
fn field_rules_are_in_the_schema() {
    let doc = ApiDoc::for_server(false);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["AdvanceRequest"]["properties"]["trigger"]["$ref"],
        "#/components/schemas/Trigger"
    );
    assert_eq!(
        schemas["Trigger"]["enum"],
        json!([
            "start",
            "agent_complete",
            "human_approved",
            "human_rejected",
            "cancel"
        ])
    );
    assert_eq!(
        schemas["AdvanceRequest"]["properties"]["actor"]["maxLength"],
        128
    );
    let question = &schemas["ConsultRequest"]["properties"]["question"];
    assert_eq!(
        (question["minLength"].clone(), question["maxLength"].clone()),
        (json!(10), json!(10_000))
    );
    let feature_id = &schemas["StartWorkflowRequest"]["properties"]["feature_id"];
    assert_eq!(feature_id["pattern"], "^[A-Za-z0-9][A-Za-z0-9._-]*$");
    assert_eq!(feature_id["maxLength"], 128);
    let list = &doc["paths"]["/workflows"]["get"]["parameters"];
    let param = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(
        (
            param("limit")["minimum"].clone(),
            param("limit")["maximum"].clone()
        ),
        (json!(1), json!(500))
    );
    assert_eq!(param("state")["$ref"], "#/components/schemas/WorkflowState");
    assert!(
        param("cursor")["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^djE6")
    );
    for (path, method, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["name"] == "feature_id" {
                for keyword in ["type", "pattern", "minLength", "maxLength"] {
                    assert_eq!(
                        parameter["schema"][keyword], feature_id[keyword],
                        "{method} {path}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_created_workflow_links_to_the_operations_on_it() {
    let doc = ApiDoc::for_server(true);
    let links = &doc["paths"]["/workflow/start"]["post"]["responses"]["201"]["links"];
    let mut targets: Vec<&str> = links
        .as_object()
        .unwrap()
        .values()
        .map(|l| {
            assert_eq!(l["parameters"]["feature_id"], "$response.body#/feature_id");
            l["operationId"].as_str().unwrap()
        })
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "advance_workflow",
            "create_consultation",
            "get_history",
            "get_workflow",
            "list_consultations"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/workflow/start",
        "/workflow/{feature_id}",
        "/workflow/{feature_id}/advance",
        "/workflow/{feature_id}/history",
        "/workflow/{feature_id}/consultations",
        "/workflows",
        "/workflows/summary",
        "/events",
        "/events/stream",
        "/health",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "WorkflowResponse",
        "ErrorEnvelope",
        "ErrorCode",
        "StartWorkflowRequest",
        "AdvanceRequest",
        "CloudEvent",
        "EventsResponse",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    // What the library reads from a newer server is not what this one sends.
    let schemas = &doc["components"]["schemas"];
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    assert!(codes.iter().any(|code| code == "WORKFLOW_NOT_FOUND"));
    assert!(!codes.iter().any(|code| code == "UNKNOWN"), "{codes:?}");
    let kinds: Vec<&Value> = schemas["Blocker"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| &kind["properties"]["kind"]["enum"][0])
        .collect();
    assert_eq!(kinds, ["approvals", "escalation", "asking"]);
    // What every event says alike, a validator checks.
    let event = &schemas["CloudEvent"]["properties"];
    assert_eq!(event["specversion"]["enum"], json!(["1.0"]));
    assert_eq!(event["source"]["enum"], json!(["orchestrator"]));
    assert_eq!(
        event["datacontenttype"]["enum"],
        json!(["application/json"])
    );
    // The board's files are each named, with the type each is served as; every board answer
    // carries the policy the server sends.
    let asset = &doc["paths"]["/board/assets/{file}"]["get"];
    let names = asset["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "file")
        .map(|p| p["schema"]["enum"].clone())
        .unwrap();
    let types = asset["responses"]["200"]["content"].as_object().unwrap();
    for name in names.as_array().unwrap() {
        let served = reqwest::get(app.url(&format!("/board/assets/{}", name.as_str().unwrap())))
            .await
            .unwrap();
        assert_eq!(served.status(), reqwest::StatusCode::OK, "{name}");
        let media_type = served.headers()["content-type"].to_str().unwrap();
        let media_type = media_type.split(';').next().unwrap().to_owned();
        assert!(types.contains_key(&media_type), "{name}: {media_type}");
        let policy = &served.headers()["content-security-policy"];
        let documented = &asset["responses"]["200"]["headers"]["Content-Security-Policy"];
        assert_eq!(documented["schema"]["example"], policy.to_str().unwrap());
    }
    assert_eq!(names.as_array().unwrap().len(), 3, "{names}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/board") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                // Malformed HTTP, refused before any page.
                let enveloped = ["414", "431"].contains(&status.as_str());
                assert_eq!(
                    response["headers"]["Content-Security-Policy"].is_object(),
                    !enveloped,
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_and_redoc_are_served_without_any_external_asset() {
    let app = spawn_app().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // `/docs` is the page itself (no redirect), its relative assets based at `/docs/`.
    let page = no_redirects.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // The docs share the board's origin and its cookie: no other site frames them, and they
    // run only their own files' scripts (the browser test renders them under the policy).
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    let page = page.text().await.unwrap();
    assert!(page.contains("<base href=\"/docs/\">"), "{page}");
    assert!(page.contains("swagger-ui-bundle.js"));

    let index = reqwest::get(app.url("/docs/")).await.unwrap();
    assert_eq!(index.status(), 200);
    let html = index.text().await.unwrap();
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "{asset} not referenced");
        let response = reqwest::get(app.url(&format!("/docs/{asset}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty());
        if asset == "swagger-initializer.js" {
            assert!(
                body.contains("/openapi.json"),
                "initializer does not load our document"
            );
            // No validator badge, which swagger.io would serve.
            assert!(body.contains("\"validatorUrl\": \"none\""), "{body}");
        }
    }
    assert!(
        !html.contains("src=\"http"),
        "swagger page loads a remote script"
    );

    let redoc = reqwest::get(app.url("/redoc")).await.unwrap();
    assert_eq!(redoc.status(), 200);
    // Its scripts are inline: the policy names each by its digest, and allows no other.
    let policy = redoc.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    let html = redoc.text().await.unwrap();
    // The page's one inline script, as a browser splits it (the bundle writes its own closing
    // tag escaped, `<\/script>`), is the one the policy names.
    let start = html.find("<script>").expect("an inline script") + "<script>".len();
    let end = start + html[start..].find("</script>").expect("its end");
    let digest = {
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&html[start..end]))
    };
    assert!(
        policy.contains(&format!("script-src 'sha256-{digest}'")),
        "{policy}"
    );
    assert!(!policy.contains("script-src 'unsafe"), "{policy}");
    assert!(html.contains("/openapi.json"));
    // The bundle is inline; no script or stylesheet comes from elsewhere.
    assert!(
        !html.contains("<script src"),
        "redoc page loads an external script"
    );
    assert!(
        !html.contains("<link"),
        "redoc page loads an external stylesheet"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feature_id_start_reads_like_any_other_and_the_document_says_so() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/workflow/start")).await.unwrap();
    assert_eq!(
        response.status(),
        404,
        "no such workflow, not a refused method"
    );
    let doc = ApiDoc::for_server(false);
    let responses = &doc["paths"]["/workflow/{feature_id}"]["get"]["responses"];
    assert!(responses.get("405").is_none(), "{responses}");
    // The fixed path is matched before the template: its GET is an operation of its own.
    let named_start = &doc["paths"]["/workflow/start"]["get"]["responses"];
    assert!(named_start.get("200").is_some(), "{named_start}");
    assert_eq!(codes(&named_start["404"]), ["WORKFLOW_NOT_FOUND"]);
}

/// Every string of up to three characters from an alphabet of the hard cases (white space of
/// several kinds, invisible characters, controls, letters), checked against a field's pattern
/// and the rule the server applies: schemathesis fuzzes the server against these patterns, and
/// a difference either way is a finding.
fn pattern_agrees_with_the_rule(pattern: &str, rule: impl Fn(&str) -> bool) {
    let pattern = regex::Regex::new(pattern).expect("the pattern is a regular expression");
    let alphabet = [
        'a', 'Z', 'é', ' ', '\t', '\n', '\u{a0}', '\u{3000}', '\u{2028}', '\u{feff}', '\u{200b}',
        '\u{200d}', '\u{202e}', '\u{ad}', '\u{fe0f}', '\u{180e}', '\0', '\u{7f}', '\u{85}',
        '\u{1c}',
    ];
    let mut strings = vec![String::new()];
    for _ in 0..3 {
        let longer: Vec<String> = strings
            .iter()
            .filter(|s| s.chars().count() == strings.last().map_or(0, |l| l.chars().count()))
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        strings.extend(longer);
    }
    for text in strings {
        assert_eq!(
            pattern.is_match(&text),
            rule(&text),
            "{text:?} against {pattern}"
        );
    }
}

#[test]
fn the_name_and_text_patterns_accept_exactly_what_the_server_does() {
    let doc = ApiDoc::for_server(true);
    let schemas = &doc["components"]["schemas"];
    let pattern = |schema: &str, field: &str| {
        schemas[schema]["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{field} has a pattern"))
            .to_owned()
    };
    let name = |text: &str| orchestrator_core::Actor::parse_name(text).is_ok();
    for schema in ["AdvanceRequest", "RespondRequest"] {
        // Names of up to three characters against the pattern; the orchestrator's own name,
        // which the server refuses too, against the `not` beside it (the patterns' dialect
        // has no look-ahead).
        pattern_agrees_with_the_rule(&pattern(schema, "actor"), name);
        let actor = &schemas[schema]["properties"]["actor"];
        let given = regex::Regex::new(actor["pattern"].as_str().unwrap()).unwrap();
        let kept = regex::Regex::new(actor["not"]["pattern"].as_str().unwrap()).unwrap();
        for text in [
            "system",
            "System",
            " SYSTEM\u{feff}",
            "ſyſtem",
            "systems",
            "a system",
        ] {
            assert_eq!(
                given.is_match(text) && !kept.is_match(text),
                name(text),
                "{schema}: {text:?}"
            );
        }
    }
    let description = |text: &str| orchestrator_core::Description::parse(text).is_ok();
    pattern_agrees_with_the_rule(&pattern("StartWorkflowRequest", "description"), description);
    // A gate's rules hold no field the server does not know (a misspelt one is refused).
    assert_eq!(schemas["GateRequest"]["additionalProperties"], false);
    // A confirmation may carry `"response": null`, which the server reads as none.
    let confirm = serde_json::json!({"action": "confirm", "response": null});
    let read: orchestrator_core::api::RespondRequest =
        serde_json::from_value(confirm).expect("a null response is read");
    assert_eq!(read.response, None);
    let response = &schemas["RespondRequest"]["properties"]["response"];
    assert_eq!(response["type"], serde_json::json!(["string", "null"]));
    assert!(
        response["example"]
            .as_str()
            .is_some_and(|e| e.contains("AES"))
    );
}

/// The webhook URL's pattern takes the receivers people run (an address, a port past 9999,
/// a name whose first label is a number) and nothing the URL standard would read otherwise
/// (a name ending in a number is an IPv4 address; a leading zero makes a part octal).
#[test]
fn the_webhook_url_pattern_takes_common_receivers_and_only_urls_that_parse() {
    let doc = ApiDoc::for_server(false);
    let url = &doc["components"]["schemas"]["CreateWebhookRequest"]["properties"]["url"];
    let pattern = regex::Regex::new(url["pattern"].as_str().unwrap()).unwrap();
    for taken in [
        "https://hooks.example.com/orchestrator",
        "https://8.8.8.8:18443/x",
        "http://1password.com/hook?x=1",
        "http://receiver:65535",
        "HTTPS://hooks.example.com./in#frag",
        "http://255.255.255.255/",
    ] {
        assert!(pattern.is_match(taken), "{taken}");
        let parsed = reqwest::Url::parse(taken).unwrap_or_else(|e| panic!("{taken}: {e}"));
        assert!(parsed.host_str().is_some_and(|h| !h.is_empty()), "{taken}");
    }
    for left_out in [
        "http://1.2.3.4.5/",
        "http://01.2.3.4/",
        "http://receiver:65536/",
        "http://receiver:0/",
        "http://receiver:08080/",
        "http://a.123/",
        "ftp://hooks.example.com/",
        "http://user:pw@hooks.example.com/",
        "http:///path",
        "http://xn--.example.com/",
        "http://hooks-.example.com/",
    ] {
        assert!(!pattern.is_match(left_out), "{left_out}");
    }
}

/// What the document says an answer always holds, it holds: a field with no value is sent as
/// `null`, not left out (but for the few the document leaves optional).
#[tokio::test(flavor = "multi_thread")]
async fn answers_hold_every_field_their_schema_requires() {
    let app = spawn_app().await;
    app.start_workflow("held").await;
    let doc = ApiDoc::for_server(false);
    let schemas = &doc["components"]["schemas"];
    let holds_required = |schema: &str, answer: &Value| {
        for field in schemas[schema]["required"].as_array().expect("required") {
            let field = field.as_str().unwrap();
            assert!(
                answer.get(field).is_some(),
                "{schema}.{field} missing from {answer}"
            );
        }
    };
    let get = |path: &str| {
        let url = app.url(path);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let workflow = get("/workflow/held").await;
    holds_required("WorkflowResponse", &workflow);
    holds_required("GateView", &workflow["gate"]);
    assert!(workflow["completed_at"].is_null() && workflow["gate"]["due_at"].is_null());
    let history = get("/workflow/held/history").await;
    holds_required("Transition", &history["transitions"][0]);
    let listed = get("/workflows").await;
    holds_required("ListWorkflowsResponse", &listed);
    let summary = get("/workflows/summary").await;
    holds_required("SummaryResponse", &summary);
    // Every state, always, and nothing else.
    let counts = &schemas["SummaryResponse"]["properties"]["counts"];
    assert_eq!(counts["additionalProperties"], json!(false));
    let keys: Vec<&String> = summary["counts"].as_object().unwrap().keys().collect();
    let mut required: Vec<&str> = counts["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|state| state.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(keys, required);
    holds_required("ServiceInfo", &get("/").await);
}

/// Every answer the document lists says it carries `X-Request-Id`, as every answer of the
/// service does.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_names_its_request_id() {
    let doc = ApiDoc::for_principals();
    let (api, board) = all_operations(&doc);
    for (path, method, operation) in api.iter().chain(&board) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            assert!(response.get("$ref").is_none(), "{method} {path} {status}");
            assert!(
                response["headers"]["X-Request-Id"]["schema"].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    let app = spawn_app().await;
    let answer = reqwest::get(app.url("/workflow/nope")).await.unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer.headers().contains_key("x-request-id"));
}
