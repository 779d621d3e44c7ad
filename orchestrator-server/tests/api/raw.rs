//! Malformed, oversized and wrongly typed requests, unknown routes and methods: every one
//! answers the error envelope with the right status and code, and stores nothing.

use orchestrator_core::api::{ErrorCode, ErrorEnvelope};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, spawn_app};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, ErrorEnvelope) {
    let mut request = reqwest::Client::new()
        .request(method, app.url(path))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let envelope: ErrorEnvelope = response.json().await.expect("an error envelope");
    (status, envelope)
}

async fn expect(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: &str,
    status: u16,
    code: ErrorCode,
) -> Vec<String> {
    let (got_status, envelope) = send(
        app,
        Method::POST,
        path,
        content_type,
        body.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        (got_status.as_u16(), envelope.error.code),
        (status, code),
        "{body}: {envelope:?}"
    );
    envelope.error.details.unwrap_or_default()
}

/// `POST /workflow/start` with `body` as JSON, as given.
async fn start_with(app: &TestApp, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/workflow/start"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn nothing_stored(app: &TestApp) {
    assert_eq!(app.client.get_summary().await.unwrap().total, 0);
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_invalid_json() {
    let app = spawn_app().await;
    for body in [
        "{",
        "not json",
        "[1,2]",
        "",
        "   ",
        r#"{"feature_id": "a"}"#,
        "null",
    ] {
        expect(
            &app,
            "/workflow/start",
            JSON,
            body,
            400,
            ErrorCode::InvalidJson,
        )
        .await;
    }
    nothing_stored(&app).await;
}

/// A body that is JSON but no object is told so plainly, without the server's type names.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_no_object_is_told_so() {
    let app = spawn_app().await;
    for body in ["[]", "[1,2]", "null", " \"start\"", "3"] {
        let (status, envelope) = send(
            &app,
            Method::POST,
            "/workflow/start",
            JSON,
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status.as_u16(), 400, "{body}");
        let said = format!("{} {:?}", envelope.error.message, envelope.error.details);
        assert!(said.contains("must be a JSON object"), "{body}: {said}");
        assert!(!said.contains("struct"), "{body}: {said}");
    }
    nothing_stored(&app).await;
    // An object after a UTF-8 byte order mark is read.
    let started = start_with(
        &app,
        "\u{feff}{\"feature_id\": \"marked\", \"description\": \"d\"}",
    )
    .await;
    assert_eq!(started.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrongly_typed_fields_are_invalid_json() {
    let app = spawn_app().await;
    for body in [
        r#"{"feature_id": 8, "description": "d"}"#,
        r#"{"feature_id": "a", "description": ["d"]}"#,
        r#"{"feature_id": "a", "description": "d", "use_existing": "yes"}"#,
    ] {
        expect(
            &app,
            "/workflow/start",
            JSON,
            body,
            400,
            ErrorCode::InvalidJson,
        )
        .await;
    }
    app.start_workflow("typed").await;
    for body in [
        r#"{"trigger": 1}"#,
        r#"{"trigger": "cancel", "expected_version": -1}"#,
        r#"{"trigger": "cancel", "expected_version": "1"}"#,
    ] {
        expect(
            &app,
            "/workflow/typed/advance",
            JSON,
            body,
            400,
            ErrorCode::InvalidJson,
        )
        .await;
    }
    assert_eq!(app.client.get_summary().await.unwrap().total, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_breaking_a_rule_are_validation_errors_naming_the_field() {
    let app = spawn_app().await;
    let long = "x".repeat(129);
    let cases = [
        (
            format!(r#"{{"feature_id": "{long}", "description": "d"}}"#),
            "feature_id",
        ),
        (
            r#"{"feature_id": "-x", "description": "d"}"#.to_owned(),
            "feature_id",
        ),
        (
            r#"{"feature_id": "a b", "description": "d"}"#.to_owned(),
            "feature_id",
        ),
        (
            r#"{"feature_id": "ok", "description": "   "}"#.to_owned(),
            "description",
        ),
        (
            r#"{"feature_id": "ok", "description": "d", "metadata": [1]}"#.to_owned(),
            "metadata",
        ),
        // Whole numbers out of the range, negative or beyond 64 bits, name their field.
        (
            r#"{"feature_id": "ok", "description": "d", "gate": {"required_approvals": -1}}"#
                .to_owned(),
            "gate.required_approvals",
        ),
        (
            r#"{"feature_id": "ok", "description": "d", "gate": {"due_in_seconds": -5.0}}"#
                .to_owned(),
            "gate.due_in_seconds",
        ),
        (
            r#"{"feature_id": "ok", "description": "d", "gate": {"due_in_seconds": 18446744073709551616}}"#
                .to_owned(),
            "gate.due_in_seconds",
        ),
    ];
    for (body, field) in cases {
        let details = expect(
            &app,
            "/workflow/start",
            JSON,
            &body,
            400,
            ErrorCode::ValidationError,
        )
        .await;
        assert!(details[0].starts_with(field), "{details:?}");
    }
    nothing_stored(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_gate_rule_is_refused_not_ignored() {
    let app = spawn_app().await;
    let start =
        |gate: &str| format!(r#"{{"feature_id": "weak", "description": "d", "gate": {gate}}}"#);
    let mut refusals = vec![(
        start(r#"{"required_aprovals": 3}"#),
        "unknown field `required_aprovals`",
    )];
    // Nor are the rules taken without their names, as an array of values in order.
    for gate in [
        r#"[1, true]"#,
        r#"[3, false, 60, "reject"]"#,
        "[]",
        "2",
        r#""strict""#,
    ] {
        refusals.push((start(gate), "expected a JSON object"));
    }
    // Nor a rule given twice (the last would be taken).
    refusals.push((
        start(r#"{"required_approvals": 1, "required_approvals": 3}"#),
        "duplicate field `required_approvals`",
    ));
    for (body, said) in refusals {
        let details = expect(
            &app,
            "/workflow/start",
            JSON,
            &body,
            400,
            ErrorCode::InvalidJson,
        )
        .await;
        assert!(details[0].contains(said), "{body}: {details:?}");
    }
    nothing_stored(&app).await;
    // No gate, or an empty one, is the server's defaults.
    for (feature, gate) in [("null-gate", "null"), ("empty-gate", "{}")] {
        let body = format!(r#"{{"feature_id": "{feature}", "description": "d", "gate": {gate}}}"#);
        let response = start_with(&app, body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{gate}");
        let started = app
            .client
            .get_workflow(&crate::helpers::id(feature))
            .await
            .unwrap();
        assert_eq!(started.gate.required_approvals, 1, "{gate}");
    }
    // Elsewhere an unknown field is still ignored, so older servers take newer clients' bodies.
    let body = r#"{"feature_id": "weak", "description": "d", "newer": 1, "gate": {"required_approvals": 3}}"#;
    let response = start_with(&app, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blank_actor_or_the_orchestrators_own_name_is_refused() {
    let app = spawn_app().await;
    app.start_workflow("blank").await;
    for actor in ["", "   "] {
        let body = format!(r#"{{"trigger": "agent_complete", "actor": "{actor}"}}"#);
        let path = "/workflow/blank/advance";
        let details = expect(&app, path, JSON, &body, 400, ErrorCode::ValidationError).await;
        assert_eq!(details, ["actor: must not be blank"]);
    }
    // Nor may anybody's decision read as the orchestrator's own (a gate's expiry).
    for actor in ["system", " System "] {
        let body = format!(r#"{{"trigger": "cancel", "actor": "{actor}"}}"#);
        let path = "/workflow/blank/advance";
        let details = expect(&app, path, JSON, &body, 400, ErrorCode::ValidationError).await;
        assert!(
            details[0].starts_with("actor: must not be system"),
            "{details:?}"
        );
    }
    let stored = app.client.get_workflow(&crate::helpers::id("blank")).await;
    assert_eq!(stored.unwrap().version, 1, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_a_json_content_type_is_unsupported() {
    let app = spawn_app().await;
    let body = r#"{"feature_id": "a", "description": "d"}"#;
    expect(
        &app,
        "/workflow/start",
        None,
        body,
        415,
        ErrorCode::UnsupportedMediaType,
    )
    .await;
    expect(
        &app,
        "/workflow/start",
        Some("text/plain"),
        body,
        415,
        ErrorCode::UnsupportedMediaType,
    )
    .await;
    // Parameters and +json types are fine.
    let (status, _) = {
        let response = reqwest::Client::new()
            .post(app.url("/workflow/start"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status(), ())
    };
    assert_eq!(status, 201);
    // An encoded body is not read as it was not sent: 415 naming the encoding, nothing stored.
    for (path, content_type) in [
        ("/workflow/start", "application/json"),
        ("/board/session", "application/x-www-form-urlencoded"),
    ] {
        let encoded = reqwest::Client::new()
            .post(app.url(path))
            .header("content-type", content_type)
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0x08, 0x00])
            .send()
            .await
            .unwrap();
        assert_eq!(encoded.status(), 415, "{path}");
        let text = encoded.text().await.unwrap();
        assert!(text.contains("Content-Encoding: gzip"), "{path}: {text}");
    }
    // `identity` is no encoding.
    let identity = reqwest::Client::new()
        .post(app.url("/workflow/start"))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(r#"{"feature_id": "b", "description": "d"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(identity.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_256_kib_is_too_large() {
    let app = spawn_app().await;
    let description = "x".repeat(300 * 1024);
    let body = format!(r#"{{"feature_id": "big", "description": "{description}"}}"#);
    expect(
        &app,
        "/workflow/start",
        JSON,
        &body,
        413,
        ErrorCode::PayloadTooLarge,
    )
    .await;
    nothing_stored(&app).await;
}

/// The board's forms are read before anyone is known, so they may hold only a few KiB: a
/// stranger's declared 256 KiB cannot reserve the memory the API's requests read bodies in.
#[tokio::test(flavor = "multi_thread")]
async fn a_board_form_over_8_kib_is_too_large() {
    let app = spawn_app().await;
    let form = format!("token={}", "x".repeat(9 * 1024));
    for path in ["/board/session", "/board/sign-out"] {
        // A page, as every board answer is.
        let response = reqwest::Client::new()
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("larger than 8192 bytes"), "{path}: {page}");
    }
}

/// A chunked body declares no length; the cap applies while reading.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let head = "POST /workflow/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..5 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"));
}

/// A body whose chunks are not well-formed is HTTP's fault, not JSON's: 400 `BAD_REQUEST`
/// (which every operation lists), on a JSON route, a route without a body and a board form.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_whose_chunks_are_broken_is_a_bad_request() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/workflow/start", "application/json"),
        (
            "/webhooks/wh_x/deliveries/msg_y/redeliver",
            "application/json",
        ),
        ("/board/session", "application/x-www-form-urlencoded"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        // The board's answer is a page; the API's the envelope.
        let said = if path.starts_with("/board") {
            "<!DOCTYPE html>"
        } else {
            r#""code":"BAD_REQUEST""#
        };
        assert!(answer.contains(said), "{path}: {answer}");
        // In the orchestrator's words, not the HTTP library's.
        assert!(!answer.contains("error reading"), "{path}: {answer}");
    }
    assert_eq!(
        app.client
            .list_workflows(&Default::default())
            .await
            .unwrap()
            .items,
        []
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_the_envelope() {
    let app = spawn_app().await;
    let (status, envelope) = send(&app, Method::GET, "/nope", None, vec![]).await;
    assert_eq!(
        (status.as_u16(), envelope.error.code),
        (404, ErrorCode::NotFound)
    );
    let (status, envelope) = send(&app, Method::GET, "/workflow/a/b/c", None, vec![]).await;
    assert_eq!(
        (status.as_u16(), envelope.error.code),
        (404, ErrorCode::NotFound)
    );

    for (method, path) in [
        (Method::PUT, "/workflow/start"),
        (Method::DELETE, "/workflow/x"),
        (Method::PUT, "/workflows"),
        (Method::GET, "/workflow/x/advance"),
    ] {
        let response = reqwest::Client::new()
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert!(response.headers().contains_key("allow"));
        let envelope: ErrorEnvelope = response.json().await.unwrap();
        assert_eq!(envelope.error.code, ErrorCode::MethodNotAllowed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_feature_id_in_the_path_is_a_validation_error() {
    let app = spawn_app().await;
    let (status, envelope) = send(&app, Method::GET, "/workflow/-bad", None, vec![]).await;
    assert_eq!(
        (status.as_u16(), envelope.error.code),
        (400, ErrorCode::ValidationError)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn created_workflows_carry_location_and_etag() {
    let app = spawn_app().await;
    let response = reqwest::Client::new()
        .post(app.url("/workflow/start"))
        .json(&serde_json::json!({"feature_id": "008-services-architecture", "description": "Refactor to microservices"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        "/workflow/008-services-architecture"
    );
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert!(response.headers().contains_key("x-request-id"));
    let get = reqwest::get(app.url("/workflow/008-services-architecture"))
        .await
        .unwrap();
    assert_eq!(get.headers()["etag"], "\"1\"");
}

/// The API's answers (a feature, an error, the health check) are kept by no cache and taken
/// as the type they say; the documentation, which may be cached, says so itself.
#[tokio::test(flavor = "multi_thread")]
async fn api_answers_are_not_stored_by_caches_and_not_sniffed() {
    let app = spawn_app().await;
    app.client
        .start_workflow(&orchestrator_core::api::StartWorkflowRequest::new(
            "f-1",
            "a feature",
        ))
        .await
        .unwrap();
    for (path, status) in [
        ("/workflow/f-1", 200),
        ("/workflow/f-2", 404),
        ("/health", 200),
    ] {
        let response = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
    let document = reqwest::get(app.url("/openapi.json")).await.unwrap();
    assert_eq!(document.headers()["cache-control"], "public, max-age=3600");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_guards_an_advance_like_expected_version() {
    let app = spawn_app().await;
    app.start_workflow("etag").await;
    let http = reqwest::Client::new();
    let post = |if_match: &str, body: &str| {
        http.post(app.url("/workflow/etag/advance"))
            .header("content-type", "application/json")
            .header("if-match", if_match)
            .body(body.to_owned())
            .send()
    };
    let stale = post("\"7\"", r#"{"trigger": "agent_complete"}"#)
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let envelope: ErrorEnvelope = stale.json().await.unwrap();
    assert_eq!(envelope.error.code, ErrorCode::VersionConflict);

    let differ = post(
        "\"1\"",
        r#"{"trigger": "agent_complete", "expected_version": 2}"#,
    )
    .await
    .unwrap();
    assert_eq!(differ.status(), 400);

    let garbage = post("soon", r#"{"trigger": "agent_complete"}"#)
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    // Twice, even the same: refused, as a list of versions on one line is.
    for second in ["\"1\"", "\"2\""] {
        let twice = http
            .post(app.url("/workflow/etag/advance"))
            .header("content-type", "application/json")
            .header("if-match", "\"1\"")
            .header("if-match", second)
            .body(r#"{"trigger": "agent_complete"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(twice.status(), 400);
        let envelope: ErrorEnvelope = twice.json().await.unwrap();
        assert!(envelope.error.message.contains("If-Match"), "{envelope:?}");
    }
    let listed = post("\"1\", \"2\"", r#"{"trigger": "agent_complete"}"#)
        .await
        .unwrap();
    assert_eq!(listed.status(), 400);
    // Refused before its idempotency key is taken: the same key with one If-Match is carried
    // out, not answered the kept 400.
    let keyed = |twice: bool| {
        let mut request = http
            .post(app.url("/workflow/etag/advance"))
            .header("content-type", "application/json")
            .header("idempotency-key", "if-match-twice")
            .header("if-match", "\"1\"");
        if twice {
            request = request.header("if-match", "\"1\"");
        }
        // If-Match and expected_version agreeing.
        request
            .body(r#"{"trigger": "agent_complete", "expected_version": 1}"#)
            .send()
    };
    assert_eq!(keyed(true).await.unwrap().status(), 400);
    let once = keyed(false).await.unwrap();
    assert_eq!(once.status(), 200);
    assert!(once.headers().get("idempotent-replayed").is_none());
    assert_eq!(once.headers()["etag"], "\"2\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_star_names_no_version() {
    let app = spawn_app().await;
    app.start_workflow("any").await;
    let response = reqwest::Client::new()
        .post(app.url("/workflow/any/advance"))
        .header("content-type", "application/json")
        .header("if-match", "*")
        .body(r#"{"trigger": "agent_complete"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_request_id_is_echoed_and_a_new_one_made_otherwise() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let mine = http
        .get(app.url("/health"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "trace-42");
    let first = http.get(app.url("/health")).send().await.unwrap();
    let second = http.get(app.url("/health")).send().await.unwrap();
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
    // An unprintable or overlong id is replaced, not echoed.
    let long = "x".repeat(65);
    let replaced = http
        .get(app.url("/health"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], long.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    app.start_workflow("headed").await;
    let response = reqwest::Client::new()
        .head(app.url("/workflow/headed"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert!(response.bytes().await.unwrap().is_empty());
}

/// A feature may be named `start`: `/workflow/start` is then its workflow for GET and HEAD
/// (the path a start's `Location` names), as `/workflow/{id}` is any other's.
#[tokio::test(flavor = "multi_thread")]
async fn a_feature_named_start_is_read_at_its_location() {
    let app = spawn_app().await;
    let started = reqwest::Client::new()
        .post(app.url("/workflow/start"))
        .json(&serde_json::json!({"feature_id": "start", "description": "named start"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    assert_eq!(started.headers()["location"], "/workflow/start");
    let read = reqwest::get(app.url("/workflow/start")).await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");
    let head = reqwest::Client::new()
        .head(app.url("/workflow/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let id = orchestrator_core::FeatureId::parse("start").unwrap();
    let workflow = app.client.get_workflow(&id).await.unwrap();
    assert_eq!(workflow.description.as_str(), "named start");
    // Another method than those is still refused, naming the three.
    let put = reqwest::Client::new()
        .put(app.url("/workflow/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, HEAD, POST");
}

/// Metadata nested past 32 levels is refused: answers carry it a few levels deeper, and past
/// 128 a JSON reader (this project's client among them) could not read the pages holding it.
/// At 32 it goes through the typed client's lists, history and events.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_nested_too_deep_is_refused_and_what_fits_reads_back() {
    let app = spawn_app().await;
    let nested = |levels: usize| {
        let mut value = serde_json::json!(1);
        for _ in 0..levels {
            value = serde_json::json!({ "k": value });
        }
        value
    };
    let start = |id: &str, metadata: serde_json::Value| {
        serde_json::json!({"feature_id": id, "description": "deep", "metadata": metadata})
            .to_string()
            .into_bytes()
    };
    let (status, envelope) = send(
        &app,
        Method::POST,
        "/workflow/start",
        Some("application/json"),
        start("too-deep", nested(33)),
    )
    .await;
    assert_eq!(
        (status.as_u16(), envelope.error.code),
        (400, ErrorCode::ValidationError)
    );
    assert!(envelope.error.message.contains("metadata"), "{envelope:?}");
    let created = start_with(&app, start("deep-enough", nested(32))).await;
    assert_eq!(created.status(), 201);
    let id = orchestrator_core::FeatureId::parse("deep-enough").unwrap();
    assert_eq!(
        app.client
            .list_workflows(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        app.client.get_history(&id).await.unwrap().transitions.len(),
        1
    );
    assert_eq!(
        app.client
            .list_events(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// A query parameter the server reads, given twice, is refused naming it: neither is taken
/// for the other. The events' `type` adds up instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_parameter_given_twice_is_refused() {
    let app = spawn_app().await;
    for path in [
        "/events?feature_id=a&feature_id=b",
        "/workflows?limit=5&limit=50",
        "/events/stream?after=0&after=1",
    ] {
        let (status, envelope) = send(&app, Method::GET, path, None, vec![]).await;
        assert_eq!(
            (status.as_u16(), envelope.error.code),
            (400, ErrorCode::ValidationError),
            "{path}"
        );
        assert!(
            envelope.error.message.contains("given once"),
            "{path}: {envelope:?}"
        );
    }
    let types = reqwest::get(app.url("/events?type=gate.overdue&type=workflow.transitioned"))
        .await
        .unwrap();
    assert_eq!(types.status(), 200);
}

/// A stop whose drain runs out of time closes the connections left rather than leaving them
/// to run on: here a request whose body never comes, which its body timeout (5 minutes) and
/// the request's bound (a minute) would otherwise hold open long after the server stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_that_runs_out_of_time_closes_the_connections_left() {
    use std::sync::Arc;
    use std::time::Duration;

    use orchestrator_core::{InMemoryWorkflowRepository, Orchestrator};
    use orchestrator_server::http::Limits;

    let limits = Limits {
        body_timeout: Duration::from_secs(300),
        drain_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let app = crate::helpers::open_app(
        Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new())),
        limits,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orchestrator_server::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let mut held = tokio::net::TcpStream::connect(address).await.unwrap();
    held.write_all(
        b"POST /workflow/start HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    // The request is under way before the stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), held.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection outlived the drain's 1 s by 20 s"
    );
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stopped")
        .unwrap();
}

/// A path's ids are read percent-decoded, as RFC 3986 has them: an encoded character is the
/// character. What decodes to no id (a slash, a space, bytes that are no UTF-8) is refused as
/// any bad id is.
#[tokio::test(flavor = "multi_thread")]
async fn path_ids_are_read_percent_decoded() {
    let app = spawn_app().await;
    app.client
        .start_workflow(&orchestrator_core::api::StartWorkflowRequest::new(
            "rk-1", "encoded",
        ))
        .await
        .unwrap();
    let found = reqwest::get(app.url("/workflow/rk%2D1")).await.unwrap();
    assert_eq!(found.status(), StatusCode::OK);
    let body: serde_json::Value = found.json().await.unwrap();
    assert_eq!(body["feature_id"], "rk-1");
    let history = reqwest::get(app.url("/workflow/%72k-1/history"))
        .await
        .unwrap();
    assert_eq!(history.status(), StatusCode::OK);
    for bad in ["/workflow/rk%2F1", "/workflow/rk%201", "/workflow/rk%FF1"] {
        let (status, envelope) = send(&app, Method::GET, bad, None, Vec::new()).await;
        assert_eq!(
            (status, envelope.error.code),
            (StatusCode::BAD_REQUEST, ErrorCode::ValidationError),
            "{bad}: {envelope:?}"
        );
    }
}
