//! Idempotency keys on POST through the real server: a repeat gets the kept answer (and
//! changes nothing), another request with the key is 422, one still being answered is 409,
//! 5xx answers are not kept, keys are per principal, they survive a restart, and the typed
//! client's retries are carried out once.

use std::time::Duration;

use orchestrator_core::api::{ErrorCode, ErrorEnvelope};
use orchestrator_core::{ActorKind, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};

use orchestrator_server::hub::stand_in::Fault;

use crate::helpers::{TestApp, id, spawn_app, spawn_app_with, stub_server};

/// POSTs `body` to `path` with `key` (and `token`), returning the status, whether the answer
/// was a replay, the `ETag`, and the body.
async fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, bool, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(app.url(path))
        .header("Idempotency-Key", key)
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let replayed = headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        replayed,
        etag,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn code(body: &Value) -> ErrorCode {
    serde_json::from_value::<ErrorEnvelope>(body.clone())
        .expect("an error envelope")
        .error
        .code
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_start_or_advance_gets_the_kept_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let start = json!({"feature_id": "once", "description": "started once"});
    let (status, replayed, etag, first) =
        post(&app, "/workflow/start", "start-once", None, &start).await;
    assert_eq!(
        (status, replayed, etag.as_deref()),
        (StatusCode::CREATED, false, Some("\"1\""))
    );
    let (status, replayed, etag, again) =
        post(&app, "/workflow/start", "start-once", None, &start).await;
    assert_eq!(
        (status, replayed, etag.as_deref()),
        (StatusCode::CREATED, true, Some("\"1\""))
    );
    assert_eq!(again, first);

    let advance = json!({"trigger": "agent_complete"});
    let (status, _, _, first) = post(
        &app,
        "/workflow/once/advance",
        "complete-once",
        None,
        &advance,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["version"], 2);
    let (status, replayed, etag, again) = post(
        &app,
        "/workflow/once/advance",
        "complete-once",
        None,
        &advance,
    )
    .await;
    assert_eq!(
        (status, replayed, etag.as_deref()),
        (StatusCode::OK, true, Some("\"2\""))
    );
    assert_eq!(again, first);
    // The same path written with an encoded character is the same request.
    let (status, replayed, _, encoded) = post(
        &app,
        "/workflow/%6Fnce/advance",
        "complete-once",
        None,
        &advance,
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{encoded}");
    let history = app.client.get_history(&id("once")).await.unwrap();
    assert_eq!(history.transitions.len(), 2, "each change made once");

    // The same key for another request: 422, nothing done.
    let other = json!({"trigger": "cancel"});
    let (status, _, _, body) = post(
        &app,
        "/workflow/once/advance",
        "complete-once",
        None,
        &other,
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (422, ErrorCode::IdempotencyKeyReused)
    );
    let (status, _, _, body) = post(&app, "/workflow/start", "complete-once", None, &advance).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (422, ErrorCode::IdempotencyKeyReused)
    );
    assert_eq!(
        app.client.get_workflow(&id("once")).await.unwrap().version,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_kept_too_but_not_server_failures() {
    let app = spawn_app().await;
    // A 404 is kept: the workflow started later does not change the answer to the key.
    let advance = json!({"trigger": "agent_complete"});
    let (status, _, _, _) = post(&app, "/workflow/later/advance", "k-404", None, &advance).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.start_workflow("later").await;
    let (status, replayed, _, body) =
        post(&app, "/workflow/later/advance", "k-404", None, &advance).await;
    assert_eq!((status, replayed), (StatusCode::NOT_FOUND, true));
    assert_eq!(code(&body), ErrorCode::WorkflowNotFound);
    assert_eq!(
        app.client.get_workflow(&id("later")).await.unwrap().version,
        1
    );

    // A 5xx (the Agent Hub failed) is not kept: the retry runs again.
    let ask = json!({"topic": "architecture", "question": "Is the hub up at all today?"});
    app.hub.inject(Fault::PlainText500);
    let (status, _, _, _) = post(&app, "/workflow/later/consultations", "k-503", None, &ask).await;
    assert!(status.is_server_error(), "{status}");
    let (status, replayed, _, body) =
        post(&app, "/workflow/later/consultations", "k-503", None, &ask).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{body}");
    let (status, replayed, _, again) =
        post(&app, "/workflow/later/consultations", "k-503", None, &ask).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, body);
    assert_eq!(
        app.client
            .list_consultations(&id("later"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // A body not said to be JSON is refused before the key: sent again with its content
    // type, the same request runs (it is not given the 415 back).
    let body = r#"{"feature_id": "typed-later", "description": "sent twice"}"#;
    let send = async |content_type: &str| {
        reqwest::Client::new()
            .post(app.url("/workflow/start"))
            .header("Idempotency-Key", "k-415")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(
        send("text/plain").await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let started = send("application/json").await;
    assert_eq!(started.status(), StatusCode::CREATED);
    assert!(!started.headers().contains_key("idempotent-replayed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_while_the_first_is_still_answered_is_409_in_use() {
    let app = spawn_app_with(|c| c.agent_hub_wait_seconds = 5).await;
    app.start_workflow("slow").await;
    let ask = json!({"topic": "architecture", "question": "Think it over, please"});
    app.hub.inject(Fault::Hold);
    let first = {
        let app_url = app.url("/workflow/slow/consultations");
        let ask = ask.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(app_url)
                .header("Idempotency-Key", "slow-one")
                .json(&ask)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::timeout(Duration::from_secs(30), app.hub.until_held(1))
        .await
        .expect("the first question reaches the hub");
    let (status, _, _, body) =
        post(&app, "/workflow/slow/consultations", "slow-one", None, &ask).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (409, ErrorCode::IdempotencyKeyInUse)
    );
    app.hub.release();
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    let (status, replayed, _, _) =
        post(&app, "/workflow/slow/consultations", "slow-one", None, &ask).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
}

/// A request that outlives its hold on its key (a stalled write, a replica whose clock runs
/// ahead) while a retry takes the key over stores nothing when it finally gets there: it is
/// 409 `IDEMPOTENCY_KEY_IN_USE` saying why, the question is stored once, by the retry, and
/// the key's answer is the retry's.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_key_a_retry_took_over_stores_nothing() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;

    // The hub holds both asks until released: the wait only has to outlast the writes.
    let app = spawn_app_with(|c| c.agent_hub_wait_seconds = 30).await;
    app.start_workflow("outlived").await;
    let ask = json!({"topic": "architecture", "question": "Which queue suits the retries?"});
    let path = "/workflow/outlived/consultations";
    let send = || {
        let url = app.url(path);
        let ask = ask.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Idempotency-Key", "outlived")
                .json(&ask)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            (status, retry_after, response.json::<Value>().await.unwrap())
        })
    };
    let answered = async |request: tokio::task::JoinHandle<_>| {
        tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("the request is answered")
            .unwrap()
    };
    let held = async |count| {
        tokio::time::timeout(Duration::from_secs(30), app.hub.until_held(count))
            .await
            .expect("the question reaches the hub");
    };
    app.hub.inject(Fault::Hold);
    app.hub.inject(Fault::Hold);
    let first = send();
    held(1).await;
    // The first request's lease ends while the hub still has its question.
    let file = app.dir.path().join("orchestrator.db");
    let mut conn = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; UPDATE idempotency_keys SET lease_until = 0 WHERE name = 'outlived';",
    )
    .unwrap();
    let retry = send();
    held(2).await;

    // The first answer comes back and is refused; then the retry's lands.
    app.hub.release();
    let (status, retry_after, body) = answered(first).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (409, ErrorCode::IdempotencyKeyInUse),
        "{body}"
    );
    assert!(body.to_string().contains("took it over"), "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    app.hub.release();
    let (status, _, created) = answered(retry).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let stored = app
        .client
        .list_consultations(&id("outlived"))
        .await
        .unwrap();
    assert_eq!(stored.items.len(), 1, "{stored:?}");
    assert_eq!(
        stored.items[0].id.to_string(),
        created["id"].as_str().unwrap()
    );
    let (status, replayed, _, again) = post(&app, path, "outlived", None, &ask).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, created);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_breaks_the_rules_is_400_naming_the_header() {
    let app = spawn_app().await;
    let start = json!({"feature_id": "never", "description": "x"});
    for key in [&"k".repeat(256), "tab\there", "é"] {
        let response = reqwest::Client::new()
            .post(app.url("/workflow/start"))
            .header("Idempotency-Key", key)
            .json(&start)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key:?}");
        let body: ErrorEnvelope = response.json().await.unwrap();
        assert_eq!(body.error.code, ErrorCode::ValidationError);
        assert!(
            body.error.message.starts_with("Idempotency-Key"),
            "{}",
            body.error.message
        );
    }
    // Two keys: neither is taken for the request's.
    let response = reqwest::Client::new()
        .post(app.url("/workflow/start"))
        .header("Idempotency-Key", "client")
        .header("Idempotency-Key", "proxy")
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: ErrorEnvelope = response.json().await.unwrap();
    assert_eq!(
        body.error.message,
        "Idempotency-Key: must be given once, not twice"
    );
    assert_eq!(app.client.get_summary().await.unwrap().total, 0);
    // 255 characters are fine, and spaces inside a key (printable ASCII).
    let (status, _, _, _) = post(&app, "/workflow/start", &"k".repeat(255), None, &start).await;
    assert_eq!(status, StatusCode::CREATED);
    let spaced = json!({"feature_id": "spaced", "description": "x"});
    let (status, replayed, _, _) = post(&app, "/workflow/start", "order 42", None, &spaced).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, replayed, _, _) = post(&app, "/workflow/start", "order 42", None, &spaced).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_belong_to_their_principal() {
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let mint = |name: &str| {
        let roles = [Role::Agent].into_iter().collect();
        orchestrator_server::principals::add(
            &file,
            &orchestrator_core::Actor::parse(name).unwrap(),
            ActorKind::Agent,
            &roles,
        )
        .unwrap()
    };
    let (one, two) = (mint("bot-one"), mint("bot-two"));
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let (status, _, _, _) = post(
        &app,
        "/workflow/start",
        "shared-key",
        Some(&one),
        &json!({"feature_id": "first", "description": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The other principal's key of the same name is its own: a different body is no reuse.
    let (status, replayed, _, _) = post(
        &app,
        "/workflow/start",
        "shared-key",
        Some(&two),
        &json!({"feature_id": "second", "description": "y"}),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    // Within one principal's scope the key holds: the same request is replayed, another body
    // is a reuse.
    let (status, replayed, _, _) = post(
        &app,
        "/workflow/start",
        "shared-key",
        Some(&one),
        &json!({"feature_id": "first", "description": "x"}),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    let (status, _, _, body) = post(
        &app,
        "/workflow/start",
        "shared-key",
        Some(&one),
        &json!({"feature_id": "third", "description": "z"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_answers_survive_a_restart() {
    let app = spawn_app().await;
    let start = json!({"feature_id": "durable", "description": "x"});
    let (status, _, _, first) = post(&app, "/workflow/start", "durable-key", None, &start).await;
    assert_eq!(status, StatusCode::CREATED);
    let app = app.restart().await;
    let (status, replayed, _, again) =
        post(&app, "/workflow/start", "durable-key", None, &start).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, first);
}

/// A key a stopped server left unanswered (its request cut off by the stop or a crash) is let
/// go when the server starts again alone on its database: the retry runs at once instead of
/// answering "in use" until the claim's lease ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_left_unanswered_by_a_stopped_server_is_let_go_at_start_up() {
    let mut app = spawn_app().await;
    let start = json!({"feature_id": "left", "description": "x", "use_existing": true});
    let (status, ..) = post(&app, "/workflow/start", "left-key", None, &start).await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
    // As a claim whose request never got its answer stored, its lease an hour away.
    let lease = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    crate::helpers::run_sql(
        &app.config.database_url,
        &format!("UPDATE idempotency_keys SET answer = NULL, lease_until = {lease}"),
    )
    .await;
    let app = app.restart().await;
    let (status, replayed, ..) = post(&app, "/workflow/start", "left-key", None, &start).await;
    assert_eq!(
        (status, replayed),
        (StatusCode::OK, false),
        "run again, not in use"
    );
}

/// The typed client retries a start whose first attempt timed out after the server had made
/// it: the retry carries the same key, so the feature is started once and the answer is 201.
#[tokio::test(flavor = "multi_thread")]
async fn the_typed_client_retries_a_post_once_and_gets_the_first_answer() {
    let app = spawn_app_with(|c| c.agent_hub_wait_seconds = 5).await;
    app.start_workflow("retried").await;
    let client = orchestrator_client::Client::builder()
        .base_url(app.url(""))
        .timeout(Duration::from_millis(700))
        .retries(4)
        .build()
        .unwrap();
    // The hub takes 1.5 s: the first attempt times out, the next ones meet 409 in use and
    // wait, and the last one gets the kept answer.
    app.hub.inject(Fault::Delay(Duration::from_millis(1500)));
    let asked = client
        .create_consultation(
            &id("retried"),
            &orchestrator_core::api::ConsultRequest::new("architecture", "Take a moment, please"),
        )
        .await
        .expect("the retried question is answered");
    assert_eq!(asked.question.as_str(), "Take a moment, please");
    let items = app
        .client
        .list_consultations(&id("retried"))
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 1, "asked once");
}

/// The typed client returns the Agent Hub's 503 at once (the server kept nothing of it: a
/// retry would put the question to the hub again), retries the server's own 503, and retries
/// a request whose connection dropped before its answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_typed_client_retries_what_is_safe_to_retry_and_not_the_hubs_503() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const HUB_DOWN: &str =
        r#"{"error":{"code":"AGENT_HUB_UNAVAILABLE","message":"the agent hub is unreachable"}}"#;
    const BUSY: &str = r#"{"error":{"code":"SERVICE_UNAVAILABLE","message":"retry later"}}"#;
    let client = |url: String| {
        orchestrator_client::Client::builder()
            .base_url(url)
            .retries(2)
            .build()
            .unwrap()
    };
    let question = orchestrator_core::api::ConsultRequest::new("testing", "Is the hub up today?");
    for (body, code, attempts) in [
        (HUB_DOWN, ErrorCode::AgentHubUnavailable, 1),
        (BUSY, ErrorCode::ServiceUnavailable, 3),
    ] {
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = asked.clone();
        let url = stub_server(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            (503, "retry-after: 0\r\n", body)
        })
        .await;
        let error = client(url)
            .create_consultation(&id("hub-down"), &question)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(code), "{error}");
        assert_eq!(asked.load(Ordering::SeqCst), attempts, "{code:?}");
    }
    // The first connection closes without an answer (a replica that stopped); the retry reads.
    let url = stub_server(|n| match n {
        0 => (0, "", ""),
        _ => (200, "", r#"{"openapi":"3.1.0"}"#),
    })
    .await;
    let document = client(url)
        .get_openapi()
        .await
        .expect("retried after the drop");
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_webhook_creation_gets_the_same_webhook_and_secret() {
    let app = spawn_app().await;
    let body = serde_json::json!({"url": "http://127.0.0.1:9/hook"});
    let send = async || {
        reqwest::Client::new()
            .post(app.url("/webhooks"))
            .header("Idempotency-Key", "hook-once")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let first = send().await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].clone();
    let created: Value = first.json().await.unwrap();
    let (status, replayed, _, again) = post(&app, "/webhooks", "hook-once", None, &body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again["id"], created["id"]);
    assert_eq!(again["secret"], created["secret"]);
    assert_eq!(send().await.headers()["location"], location);
    assert_eq!(app.client.list_webhooks().await.unwrap().items.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_is_part_of_the_request_a_key_stands_for() {
    let app = spawn_app().await;
    app.start_workflow("matched").await;
    let advance = |if_match: &'static str| {
        reqwest::Client::new()
            .post(app.url("/workflow/matched/advance"))
            .header("Idempotency-Key", "k-match")
            .header("If-Match", if_match)
            .json(&json!({"trigger": "agent_complete"}))
            .send()
    };
    let first = advance("\"2\"").await.unwrap();
    assert_eq!(first.status(), StatusCode::CONFLICT, "version 1, not 2");
    // Sent again as it was: the kept refusal.
    let again = advance("\"2\"").await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // With another If-Match it is another request: the key is not its.
    let other = advance("\"1\"").await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.client
            .get_workflow(&id("matched"))
            .await
            .unwrap()
            .version,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_answer_goes_back_only_to_a_caller_who_may_still_make_the_request() {
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let roles = [Role::Admin].into_iter().collect();
    let token = orchestrator_server::principals::add(
        &file,
        &orchestrator_core::Actor::parse("ops-bot").unwrap(),
        ActorKind::Agent,
        &roles,
    )
    .unwrap();
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let create = json!({"url": "http://127.0.0.1:9/hook"});
    let (status, _, _, created) = post(&app, "/webhooks", "k-hook", Some(&token), &create).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["secret"].is_string());

    // The bot is made a viewer (its token kept): the kept answer, with the webhook's secret,
    // is not given back to it.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"admin\"", "\"viewer\"")).unwrap();
    app.reload_principals();
    let (status, replayed, _, refused) =
        post(&app, "/webhooks", "k-hook", Some(&token), &create).await;
    assert_eq!(
        (status, replayed),
        (StatusCode::FORBIDDEN, false),
        "{refused}"
    );
    assert!(refused.get("secret").is_none());
}

/// An advance whose trigger the caller's roles do not allow is refused before its key is
/// looked at, as on the other routes: the 403 is not kept, so once given the role the same
/// request runs, and a kept approval is not given back to one who may no longer approve.
#[tokio::test(flavor = "multi_thread")]
async fn an_advance_the_callers_roles_do_not_allow_is_not_kept_against_its_key() {
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let mint = |name: &str, role: Role| {
        orchestrator_server::principals::add(
            &file,
            &orchestrator_core::Actor::parse(name).unwrap(),
            ActorKind::Agent,
            &[role].into_iter().collect(),
        )
        .unwrap()
    };
    let (bot, watcher) = (
        mint("build-bot", Role::Agent),
        mint("watcher", Role::Viewer),
    );
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let start = json!({"feature_id": "watched", "description": "x"});
    let (status, _, _, _) = post(&app, "/workflow/start", "k-start", Some(&bot), &start).await;
    assert_eq!(status, StatusCode::CREATED);
    let complete = json!({"trigger": "agent_complete"});
    let path = "/workflow/watched/advance";
    let (status, _, _, refused) = post(&app, path, "k-done", Some(&watcher), &complete).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["details"][0], "role needed: agent");
    // Made an agent, the same request with the same key runs.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"viewer\"", "\"agent\"")).unwrap();
    app.reload_principals();
    let (status, replayed, _, done) = post(&app, path, "k-done", Some(&watcher), &complete).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{done}");
    assert_eq!(done["state"], "GATE_1");
    // An approval of theirs is not given back once they may no longer approve.
    let alice = crate::helpers::mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    app.reload_principals();
    let approve = json!({"trigger": "human_approved"});
    let (status, _, _, _) = post(&app, path, "k-approve", Some(&alice), &approve).await;
    assert_eq!(status, StatusCode::OK);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"reviewer\"", "\"viewer\"")).unwrap();
    app.reload_principals();
    let (status, replayed, _, refused) =
        post(&app, path, "k-approve", Some(&alice), &approve).await;
    assert_eq!(
        (status, replayed),
        (StatusCode::FORBIDDEN, false),
        "{refused}"
    );
    assert_eq!(refused["error"]["details"][0], "role needed: reviewer");
}
