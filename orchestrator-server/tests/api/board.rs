//! The reviewer board over plain HTTP: sign-in in each of the three modes, the session cookie
//! and what it may do against the API (reads; writes only with the session's CSRF token and
//! from the server's own origin), sign-out ending the session on the server, the content
//! security policy on every board answer, bad input answered with pages, who may approve and
//! why not, and the session store on both back ends. `browser` drives the same pages in
//! Chromium.

use orchestrator_client::Client;
use orchestrator_core::api::{AdvanceRequest, GateRequest, StartWorkflowRequest};
use orchestrator_core::{ActorKind, Role};
use orchestrator_server::storage::{BoardSession, DatabaseUrl};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, SET_COOKIE};
use tempfile::TempDir;

use crate::helpers::{TestApp, id, mint, spawn_app, spawn_app_with};
use crate::postgres::TestDatabase;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Page {
    let mut request = http().get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    page(request.send().await.unwrap()).await
}

async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// Signs in with the form's fields; answers the `name=value` cookie.
async fn sign_in(app: &TestApp, fields: &[(&str, &str)]) -> String {
    let answer = post_form(app, "/board/session", fields, None).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let set = answer.headers[SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

async fn post_form(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> Page {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut request = http()
        .post(app.url(path))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", app.url(""))
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    page(request.send().await.unwrap()).await
}

/// The CSRF token a board page carries for its session.
fn csrf_of(page: &Page) -> String {
    let start = page.text.find("data-csrf=\"").expect("a signed-in page") + "data-csrf=\"".len();
    page.text[start..start + 64].to_owned()
}

async fn advance_with_cookie(
    app: &TestApp,
    feature: &str,
    body: serde_json::Value,
    cookie: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http()
        .post(app.url(&format!("/workflow/{feature}/advance")))
        .header("cookie", cookie)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn at_gate(client: &Client, name: &str) {
    client
        .start_workflow(&StartWorkflowRequest::new(
            name,
            format!("{name}: the work"),
        ))
        .await
        .unwrap();
    client
        .advance_workflow(&id(name), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_becomes_a_session_cookie_that_writes_only_with_its_csrf_token() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let alice = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let agent = app.client_with(&bot);
    at_gate(&agent, "gated").await;

    // Signed out: a sign-in page asking for a token only, under the policy.
    let signed_out = get(&app, "/board", None).await;
    assert_eq!(signed_out.status, StatusCode::OK);
    assert_eq!(signed_out.headers["content-security-policy"], CSP);
    assert!(
        signed_out
            .text
            .contains(r#"<label for="token">Token</label>"#)
    );
    assert!(!signed_out.text.contains(r#"name="name""#));
    assert!(
        signed_out
            .text
            .contains(r#"method="post" action="/board/session""#)
    );
    assert!(
        !signed_out.text.contains("gated"),
        "nothing shown before sign-in"
    );

    // A link from another site carries no SameSite=Strict cookie: the page it lands on loads
    // the same address again from this origin, which does (and nothing else is shown).
    for (path, again) in [
        ("/board/feature/gated", "/board/feature/gated"),
        ("/board?state=GATE_1", "/board?state=GATE_1"),
    ] {
        let linked = http()
            .get(app.url(path))
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .send()
            .await
            .unwrap();
        let linked = page(linked).await;
        assert_eq!(linked.status, StatusCode::OK);
        assert_eq!(linked.headers["content-security-policy"], CSP);
        assert!(
            linked.text.contains(&format!(
                r#"<meta http-equiv="refresh" content="0; url={again}">"#
            )),
            "{}",
            linked.text
        );
        assert!(!linked.text.contains("Sign in"), "{}", linked.text);
        // From this origin, or with a cookie: the sign-in page, never the bounce again.
        for (site, cookie) in [
            ("same-origin", None),
            ("cross-site", Some("orchestrator_session=ended")),
        ] {
            let mut request = http()
                .get(app.url(path))
                .header("sec-fetch-site", site)
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-dest", "document");
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let shown = page(request.send().await.unwrap()).await;
            assert!(
                shown.text.contains(r#"<label for="token">Token</label>"#),
                "{site}"
            );
            assert!(!shown.text.contains("http-equiv"), "{site}");
        }
    }

    // A wrong token: 401 and the form again, no cookie.
    let refused = post_form(&app, "/board/session", &[("token", "orc_nope")], None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.text.contains("That token is not valid."));
    assert!(!refused.headers.contains_key(SET_COOKIE));

    // A sign-in from another site's page is refused.
    let forged = http()
        .post(app.url("/board/session"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .body(format!("token={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // The right one: a cookie the page's script cannot read, for this site only, 12 h.
    let answer = post_form(
        &app,
        "/board/session",
        &[("token", &alice), ("next", "/board/feature/gated")],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers[LOCATION], "/board/feature/gated");
    let set = answer.headers[SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(!set.contains(&alice), "the cookie is not the token");
    let cookie = set.split(';').next().unwrap().to_owned();

    let board = get(&app, "/board/feature/gated", Some(&cookie)).await;
    assert_eq!(board.status, StatusCode::OK);
    assert_eq!(board.headers["content-security-policy"], CSP);
    assert!(
        board
            .text
            .contains("Signed in as <strong>alice</strong> (human)")
    );
    assert!(board.text.contains("You may approve."));
    let csrf = csrf_of(&board);

    // The API reads with the cookie; it writes only with the CSRF token, from this origin.
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let approve = serde_json::json!({"trigger": "human_approved"});
    let without = advance_with_cookie(&app, "gated", approve.clone(), &cookie, &[]).await;
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let wrong = advance_with_cookie(
        &app,
        "gated",
        approve.clone(),
        &cookie,
        &[("x-csrf-token", "0000")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let elsewhere = advance_with_cookie(
        &app,
        "gated",
        approve.clone(),
        &cookie,
        &[("x-csrf-token", &csrf), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    // The server, not only the page, refuses a rejection without a reason.
    let no_reason = advance_with_cookie(
        &app,
        "gated",
        serde_json::json!({"trigger": "human_rejected"}),
        &cookie,
        &[("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(no_reason.status(), StatusCode::BAD_REQUEST);
    let envelope: serde_json::Value = no_reason.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "VALIDATION_ERROR");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    // A stale version is a conflict.
    let stale = advance_with_cookie(
        &app,
        "gated",
        approve.clone(),
        &cookie,
        &[("x-csrf-token", &csrf), ("if-match", "\"1\"")],
    )
    .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let approved = advance_with_cookie(
        &app,
        "gated",
        approve,
        &cookie,
        &[
            ("x-csrf-token", &csrf),
            ("if-match", "\"2\""),
            ("origin", &app.url("")),
        ],
    )
    .await;
    assert_eq!(approved.status(), StatusCode::OK);
    let history = agent.get_history(&id("gated")).await.unwrap();
    let last = history.transitions.last().unwrap();
    assert_eq!(last.actor.as_ref().map(|a| a.as_str()), Some("alice"));
    assert_eq!(last.actor_kind, Some(ActorKind::Human));

    // Sign-out needs the session's token, or this origin's page; then the cookie is dead
    // everywhere.
    let forged = page(
        http()
            .post(app.url("/board/sign-out"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("cookie", &cookie)
            .body("csrf=0000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let out = post_form(&app, "/board/sign-out", &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        get(&app, "/board", Some(&cookie))
            .await
            .text
            .contains("<h1>Sign in</h1>")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_holds_only_while_the_credential_that_made_it_does() {
    // An open server's session (a typed name) is no session once the server needs a token.
    let app = spawn_app().await;
    let cookie = sign_in(&app, &[("name", "admin")]).await;
    assert!(
        get(&app, "/board", Some(&cookie))
            .await
            .text
            .contains("Signed in as")
    );
    let mut app = app;
    app.config.api_token = Some("s3cret".into());
    let app = app.restart().await;
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        get(&app, "/board", Some(&cookie))
            .await
            .text
            .contains("<h1>Sign in</h1>")
    );
    // Signing out ends it for good, though it does not hold now: the server opened again
    // does not bring it back.
    let out = post_form(&app, "/board/sign-out", &[], Some(&cookie)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    let mut app = app;
    app.config.api_token = None;
    let app = app.restart().await;
    let page = get(&app, "/board", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains("Signed in as"), "{}", page.text);

    // A principal's session ends when its token is replaced, even under the same name.
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let old_token = mint(&file, "bob", ActorKind::Human, &[Role::Reviewer]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let cookie = sign_in(&app, &[("token", &old_token)]).await;
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::OK
    );
    std::fs::remove_file(&file).unwrap();
    let new_token = mint(&file, "bob", ActorKind::Human, &[Role::Reviewer]);
    let app = app.restart().await;
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Signing in again replaces the browser's earlier session.
    let fresh = sign_in(&app, &[("token", &new_token)]).await;
    let again = http()
        .post(app.url("/board/session"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("cookie", fresh.clone())
        .body(format!("token={new_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        get(&app, "/workflows", Some(&fresh)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A server whose streams hear no heartbeat within a test, a reviewer signed in to its board
/// (the session's cookie), and a stream opened with that cookie, its first message read: the
/// stream says where it starts while the session holds.
async fn a_session_streaming() -> (TestApp, TempDir, String, reqwest::Response) {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let token = mint(&file, "carol", ActorKind::Human, &[Role::Viewer]);
    let app = spawn_app_with(|c| {
        c.principals_file = Some(file.clone());
        c.events_heartbeat_seconds = 3600;
    })
    .await;
    let cookie = sign_in(&app, &[("token", &token)]).await;
    let mut stream = http()
        .get(app.url("/events/stream?after=0"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk())
        .await
        .expect("the stream's first message")
        .unwrap();
    assert!(first.is_some());
    (app, keys, cookie, stream)
}

/// Whether `stream` ends within `seconds`.
async fn ends_within(stream: &mut reqwest::Response, seconds: u64) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(seconds), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_opened_with_a_session_ends_with_it() {
    let (app, _keys, cookie, mut stream) = a_session_streaming().await;
    let csrf = csrf_of(&get(&app, "/board", Some(&cookie)).await);
    let out = post_form(&app, "/board/sign-out", &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    // The stream ends at once, not at its next heartbeat.
    assert!(
        ends_within(&mut stream, 5).await,
        "the stream outlived its session"
    );
}

/// A session ended where this server cannot hear of it (another replica's sign-out, here its
/// row deleted by hand): the stream asks at least every 15 s, however long the heartbeat.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_ends_within_seconds_of_a_session_ended_elsewhere() {
    let (app, _keys, _cookie, mut stream) = a_session_streaming().await;
    crate::helpers::run_sql(&app.config.database_url, "DELETE FROM board_sessions").await;
    assert!(
        ends_within(&mut stream, 20).await,
        "the stream outlived its session by 20 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_mode_signs_in_by_name_and_shared_token_mode_by_token_and_name() {
    let open = spawn_app().await;
    at_gate(&open.client, "open-gate").await;
    // Open: the board shows everything, and offers a sign-in by name to decide.
    let board = get(&open, "/board", None).await;
    assert_eq!(board.status, StatusCode::OK);
    assert!(board.text.contains("open-gate"));
    assert!(board.text.contains(r#"<label for="name">Name</label>"#));
    assert!(!board.text.contains(r#"name="token""#));
    let field = |text: &str, id: &str| -> String {
        let start = text.find(&format!(r#"id="{id}""#)).expect("the field");
        let from = text[..start].rfind('<').expect("its tag");
        text[from..start + text[start..].find('>').expect("its end")].to_owned()
    };
    let feature = get(&open, "/board/feature/open-gate", None).await;
    assert!(feature.text.contains("Sign in to approve or reject."));
    // The form above an open board's page leaves the focus to the page.
    assert!(!field(&feature.text, "name").contains("autofocus"));
    // Signing in from a filtered list comes back to it.
    let filtered = get(&open, "/board?state=PHASE_1", None).await;
    assert!(
        filtered
            .text
            .contains(r#"<input type="hidden" name="next" value="/board?state=PHASE_1">"#),
        "{}",
        filtered.text
    );
    let nameless = post_form(&open, "/board/session", &[("name", " ")], None).await;
    assert_eq!(nameless.status, StatusCode::BAD_REQUEST);
    assert!(nameless.text.contains("Name "), "{}", nameless.text);
    let cookie = sign_in(&open, &[("name", "carol")]).await;
    let feature = get(&open, "/board/feature/open-gate", Some(&cookie)).await;
    assert!(
        feature
            .text
            .contains("Signed in as <strong>carol</strong> (human)")
    );
    assert!(feature.text.contains(r#"data-actor="carol""#));
    assert!(feature.text.contains("You may approve."));

    // Shared token: the token, and a name (the token names no one).
    let shared = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let page = get(&shared, "/board", None).await;
    assert!(page.text.contains(r#"<label for="token">Token</label>"#));
    assert!(page.text.contains(r#"<label for="name">Name</label>"#));
    // A page for signing in only: its first field has the focus.
    assert!(field(&page.text, "token").contains("autofocus"));
    assert!(!field(&page.text, "name").contains("autofocus"));
    let refused = post_form(
        &shared,
        "/board/session",
        &[("token", "wrong"), ("name", "dave")],
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // The token is marked wrong, and the name typed is given back (the token never is).
    // The focus is in the field to type again.
    let token = field(&refused.text, "token");
    assert!(token.contains(r#"aria-invalid="true""#), "{token}");
    assert!(token.contains("autofocus"), "{token}");
    assert!(!token.contains("value="), "{token}");
    let name = field(&refused.text, "name");
    assert!(name.contains(r#"value="dave""#), "{name}");
    assert!(!name.contains("aria-invalid"), "{name}");
    assert!(!name.contains("autofocus"), "{name}");
    let refused = post_form(
        &shared,
        "/board/session",
        &[("token", "s3cret"), ("name", "da\u{7}ve")],
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let name = field(&refused.text, "name");
    assert!(name.contains(r#"aria-invalid="true""#), "{name}");
    assert!(name.contains("autofocus"), "{name}");
    assert!(
        !field(&refused.text, "token").contains("aria-invalid"),
        "the token was right"
    );
    // A token pasted with blanks around it is the same token.
    let cookie = sign_in(&shared, &[("token", " s3cret\n"), ("name", "dave")]).await;
    let board = get(&shared, "/board", Some(&cookie)).await;
    assert!(
        board
            .text
            .contains("Signed in as <strong>dave</strong> (human)")
    );
    assert_eq!(
        get(&shared, "/workflows", Some(&cookie)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&shared, "/workflows", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The session's decisions are recorded as the name's, a person's, whatever the body says
    // (or does not say).
    at_gate(&shared.client, "shared-gate").await;
    let page = get(&shared, "/board/feature/shared-gate", Some(&cookie)).await;
    let approve = serde_json::json!({"trigger": "human_approved"});
    let csrf = csrf_of(&page);
    let origin = shared.url("");
    let headers = [("x-csrf-token", csrf.as_str()), ("origin", origin.as_str())];
    let approved = advance_with_cookie(&shared, "shared-gate", approve, &cookie, &headers).await;
    assert_eq!(approved.status(), StatusCode::OK);
    let history = shared
        .client
        .get_history(&id("shared-gate"))
        .await
        .unwrap()
        .transitions;
    let decision = history.last().unwrap();
    assert_eq!(
        (
            decision.actor.as_ref().map(|a| a.as_str()),
            decision.actor_kind
        ),
        (Some("dave"), Some(ActorKind::Human))
    );
}

/// The session's cookie and CSRF token are on the board's pages: with them the API does what
/// the board does — read, approve, reject, answer escalations — and nothing else, whatever
/// the token that signed in may do (here the shared token: every role).
#[tokio::test(flavor = "multi_thread")]
async fn a_board_session_writes_only_what_the_board_does() {
    let shared = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let api = Client::builder()
        .base_url(shared.url(""))
        .token("s3cret")
        .build()
        .unwrap();
    at_gate(&api, "gated").await;
    let cookie = sign_in(&shared, &[("token", "s3cret"), ("name", "dave")]).await;
    let csrf = csrf_of(&get(&shared, "/board", Some(&cookie)).await);
    let with_session = [("x-csrf-token", csrf.as_str())];
    for refused in [
        serde_json::json!({"trigger": "cancel", "actor": "dave"}),
        serde_json::json!({"trigger": "agent_complete", "actor": "dave"}),
        serde_json::json!({"trigger": "human_approved", "actor": "dave", "override": true,
                           "reason": "ship it"}),
        // Without principals a body that says it is an agent's is refused a decision, the
        // board's session's included (signed in as a person only by its own word).
        serde_json::json!({"trigger": "human_approved", "actor": "dave", "actor_kind": "agent"}),
        serde_json::json!({"trigger": "human_rejected", "actor_kind": "agent", "reason": "no"}),
    ] {
        let answer =
            advance_with_cookie(&shared, "gated", refused.clone(), &cookie, &with_session).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{refused}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    }
    let webhook = http()
        .post(shared.url("/webhooks"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"url": "https://example.com/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), StatusCode::FORBIDDEN);
    let start = http()
        .post(shared.url("/workflow/start"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"feature_id": "sneaked", "description": "not the board's"}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        api.get_workflow(&id("gated")).await.unwrap().version,
        2,
        "nothing changed"
    );
    let webhooks = get(&shared, "/webhooks", Some(&cookie)).await;
    assert_eq!(webhooks.status, StatusCode::FORBIDDEN, "{}", webhooks.text);
    // What the board does, it still does.
    assert_eq!(
        get(&shared, "/events?limit=1", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let rejected = advance_with_cookie(
        &shared,
        "gated",
        serde_json::json!({"trigger": "human_rejected", "actor": "dave", "reason": "not yet"}),
        &cookie,
        &with_session,
    )
    .await;
    assert_eq!(rejected.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_says_who_may_not_approve_and_why() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let author = mint(
        &file,
        "erin",
        ActorKind::Human,
        &[Role::Agent, Role::Reviewer],
    );
    let watcher = mint(&file, "wes", ActorKind::Human, &[Role::Viewer]);
    let bot = mint(
        &file,
        "build-bot",
        ActorKind::Agent,
        &[Role::Agent, Role::Reviewer],
    );
    let plain_bot = mint(&file, "lint-bot", ActorKind::Agent, &[Role::Agent]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let erin = app.client_with(&author);
    at_gate(&erin, "own-work").await;

    let verdict = |page: &Page| {
        let start =
            page.text.find(r#"id="verdict">"#).expect("a verdict") + r#"id="verdict">"#.len();
        let end = start + page.text[start..].find('<').unwrap();
        page.text[start..end].to_owned()
    };
    let as_erin = sign_in(&app, &[("token", &author)]).await;
    let page = get(&app, "/board/feature/own-work", Some(&as_erin)).await;
    assert_eq!(
        verdict(&page),
        "You may not approve: this is your own work, and its author may not approve it."
    );
    assert!(
        page.text.contains(">Reject</button>"),
        "an author may still reject"
    );
    assert!(!page.text.contains(">Approve</button>"));
    // Off until the page's script binds it (a click before would submit the reason in a URL),
    // and a reason as long as the API takes.
    assert!(
        page.text.contains(" disabled>Reject</button>"),
        "{}",
        page.text
    );
    assert!(page.text.contains(r#"maxlength="10000""#));

    let as_wes = sign_in(&app, &[("token", &watcher)]).await;
    let page = get(&app, "/board/feature/own-work", Some(&as_wes)).await;
    assert!(
        verdict(&page).contains("your roles do not allow it"),
        "{}",
        verdict(&page)
    );
    assert!(
        verdict(&page).contains("approving takes the reviewer role"),
        "{}",
        verdict(&page)
    );
    assert!(!page.text.contains(r#"id="decide""#), "no decision form");

    let as_bot = sign_in(&app, &[("token", &bot)]).await;
    let page = get(&app, "/board/feature/own-work", Some(&as_bot)).await;
    assert!(
        verdict(&page).contains("you are an agent"),
        "{}",
        verdict(&page)
    );
    assert!(!page.text.contains(">Reject</button>"));
    // An agent with no reviewer role hears the same: no role would let it decide.
    let as_plain_bot = sign_in(&app, &[("token", &plain_bot)]).await;
    let page = get(&app, "/board/feature/own-work", Some(&as_plain_bot)).await;
    assert_eq!(
        verdict(&page),
        "You may not approve: you are an agent, and only a person decides at the gate."
    );
    assert!(!page.text.contains(r#"id="decide""#), "no decision form");

    // An escalation waiting for a human: Approve is offered to whoever the gate's other rules
    // would take (the approval asks the hub again), not to the author.
    erin.create_consultation(
        &id("own-work"),
        &orchestrator_core::api::ConsultRequest::new(
            "security",
            "May we log the token? [confidence=30]",
        ),
    )
    .await
    .unwrap();
    let page = get(&app, "/board/feature/own-work", Some(&as_erin)).await;
    assert!(
        verdict(&page).contains("blocked by 1 escalation"),
        "{}",
        verdict(&page)
    );
    assert!(!page.text.contains(">Approve</button>"));
    assert!(!page.text.contains("Approve asks the Agent Hub again"));
    assert!(page.text.contains(">Reject</button>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_page_with_the_status_the_api_would_answer() {
    let app = spawn_app().await;
    app.start_workflow("known").await;
    let unknown = get(&app, "/board/feature/unknown-one", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(unknown.headers["content-security-policy"], CSP);
    assert_eq!(
        get(&app, "/board/feature/NOT%20AN%20ID", None).await.status,
        StatusCode::BAD_REQUEST
    );
    let filter = get(&app, "/board?state=NOPE", None).await;
    assert_eq!(filter.status, StatusCode::BAD_REQUEST);
    assert!(filter.text.contains("state"));
    let filtered = get(&app, "/board?state=PHASE_1", None).await;
    assert!(filtered.text.contains("known"));
    assert!(
        filtered
            .text
            .contains("<title>Features in PHASE_1 · Orchestrator board</title>"),
        "{}",
        filtered.text
    );
    assert!(
        !get(&app, "/board?state=DONE", None)
            .await
            .text
            .contains(">known<")
    );
    assert_eq!(
        get(&app, "/board/assets/nope.js", None).await.status,
        StatusCode::NOT_FOUND
    );
    let script = get(&app, "/board/assets/board.js", None).await;
    assert_eq!(
        script.headers[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text.contains("EventSource"));
    let style = get(&app, "/board/assets/board.css", None).await;
    assert_eq!(style.headers[CONTENT_TYPE], "text/css; charset=utf-8");
    // Asked again with the tag it came with, a file not changed since is 304, without it.
    let tag = style.headers["etag"].clone();
    let again = http()
        .get(app.url("/board/assets/board.css"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], tag);
    // Asked again each time (not kept unasked, nor never kept), the 304 included.
    assert_eq!(style.headers["cache-control"], "no-cache");
    assert_eq!(again.headers()["cache-control"], "no-cache");
    assert_eq!(again.bytes().await.unwrap().len(), 0);
    let other = http()
        .get(app.url("/board/assets/board.js"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK, "another file's tag");
    // The pages' icon is the board's own, so a browser asking for one is not told 404.
    let icon = get(&app, "/board/assets/icon.svg", None).await;
    assert_eq!(icon.headers[CONTENT_TYPE], "image/svg+xml");
    assert!(icon.text.starts_with("<svg"), "{}", icon.text);
    let overview = get(&app, "/board", None).await;
    assert!(
        overview
            .text
            .contains(r#"<link rel="icon" href="/board/assets/icon.svg" type="image/svg+xml">"#),
        "{}",
        overview.text
    );
    let json = http()
        .post(app.url("/board/session"))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The page names the type a sign-in takes, not the API's.
    let refused = json.text().await.unwrap();
    assert!(
        refused.contains("Content-Type: application/x-www-form-urlencoded"),
        "{refused}"
    );
    let next = post_form(
        &app,
        "/board/session",
        &[("name", "x"), ("next", "https://evil.example/")],
        None,
    )
    .await;
    assert_eq!(
        next.headers[LOCATION], "/board",
        "a sign-in never leads off the board"
    );
    assert!(
        !next.headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    // Behind a TLS-terminating proxy, the cookie is for HTTPS only.
    let proxied = http()
        .post(app.url("/board/session"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert!(
        proxied.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    assert!(
        proxied.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("__Host-orchestrator_session=")
    );
    // ...and over HTTPS the plain cookie counts for nothing: another host of the domain, or a
    // plain-HTTP answer, could have planted it.
    let plain = next.headers[SET_COOKIE].to_str().unwrap();
    let plain = plain.split(';').next().unwrap();
    let signed_in = |page: &Page| page.text.contains("Signed in as");
    assert!(signed_in(&get(&app, "/board", Some(plain)).await));
    let over_https = page(
        http()
            .get(app.url("/board"))
            .header("cookie", plain)
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!signed_in(&over_https), "{}", over_https.text);
    // A name is blank by the rule of a request's actor (U+FEFF included).
    let blank = post_form(&app, "/board/session", &[("name", "\u{feff}")], None).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert!(
        blank.text.contains("Name must not be blank."),
        "{}",
        blank.text
    );
    let system = post_form(&app, "/board/session", &[("name", "SYSTEM")], None).await;
    assert_eq!(system.status, StatusCode::BAD_REQUEST);
    assert!(
        system.text.contains("Name must not be system"),
        "{}",
        system.text
    );
    // A value that would be markup is shown as text.
    let hostile = StartWorkflowRequest::new("hostile", "<script>alert(1)</script>");
    app.client.start_workflow(&hostile).await.unwrap();
    let page = get(&app, "/board/feature/hostile", None).await;
    assert!(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.text.contains("<script>alert"));
    // So are a decider's name and a rejection's reason, in the timeline, the earlier
    // rejections and the approvals, and on the overview.
    let two = StartWorkflowRequest {
        gate: Some(GateRequest {
            required_approvals: Some(2),
            ..GateRequest::default()
        }),
        ..StartWorkflowRequest::new("hostile-decisions", "needs two")
    };
    app.client.start_workflow(&two).await.unwrap();
    let decide = |trigger: &str, actor: &str, reason: Option<&str>| AdvanceRequest {
        actor: Some(actor.into()),
        actor_kind: Some("human".into()),
        reason: reason.map(Into::into),
        ..AdvanceRequest::new(trigger)
    };
    let hostile_id = id("hostile-decisions");
    let reject = decide(
        "human_rejected",
        "<img src=x onerror=alert(2)>",
        Some("<script>alert(3)</script>"),
    );
    let complete = AdvanceRequest::new("agent_complete");
    app.client
        .advance_workflow(&hostile_id, &complete)
        .await
        .unwrap();
    app.client
        .advance_workflow(&hostile_id, &reject)
        .await
        .unwrap();
    app.client
        .advance_workflow(&hostile_id, &complete)
        .await
        .unwrap();
    let approve = decide("human_approved", "<b>bold</b>", None);
    app.client
        .advance_workflow(&hostile_id, &approve)
        .await
        .unwrap();
    let page = get(&app, "/board/feature/hostile-decisions", None).await;
    let overview = get(&app, "/board", None).await;
    for text in [&page.text, &overview.text] {
        assert!(!text.contains("<img src=x"), "{text}");
        assert!(!text.contains("<script>alert"), "{text}");
        assert!(!text.contains("<b>bold"), "{text}");
    }
    assert!(page.text.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(page.text.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));
    assert!(
        page.text.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "{}",
        page.text
    );
}

/// Errors met before a board page's handler runs (a wrong method, a path no page has, a form
/// too large) are pages with the board's headers too, not the API's JSON.
#[tokio::test(flavor = "multi_thread")]
async fn errors_outside_the_pages_handlers_are_pages_too() {
    let app = spawn_app().await;
    let is_page = |page: &Page, status: StatusCode| {
        assert_eq!(page.status, status, "{}", page.text);
        assert!(
            page.headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{:?}",
            page.headers
        );
        assert_eq!(page.headers["content-security-policy"], CSP);
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert!(page.text.contains("<main"), "{}", page.text);
    };
    let wrong_method = get(&app, "/board/session", None).await;
    is_page(&wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers["allow"], "POST");
    is_page(&get(&app, "/board/", None).await, StatusCode::NOT_FOUND);
    is_page(
        &get(&app, "/board/feature/", None).await,
        StatusCode::NOT_FOUND,
    );
    let name = "x".repeat(10_000);
    let too_large = post_form(&app, "/board/session", &[("name", &name)], None).await;
    is_page(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    // The API's paths keep answering JSON.
    let api = http().get(app.url("/workflows/")).send().await.unwrap();
    assert_eq!(api.headers()[CONTENT_TYPE], "application/json");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_lists_the_gate_first_and_the_others_by_state() {
    let app = spawn_app().await;
    at_gate(&app.client, "b-at-gate").await;
    app.start_workflow("a-started").await;
    app.start_workflow("c-started").await;
    let board = get(&app, "/board", None).await;
    let waiting = board.text.find("Waiting for review").unwrap();
    let others = board.text.find("Other features").unwrap();
    let at_gate = board.text.find(">b-at-gate<").unwrap();
    assert!(
        waiting < at_gate && at_gate < others,
        "the gate's feature waits for review"
    );
    assert!(
        board
            .text
            .contains(r#"PHASE_1 <span class="total">(2)</span>"#)
    );
    assert!(
        board
            .text
            .contains(r#"DONE <span class="total">(0)</span>"#)
    );
    assert!(
        !board.text.contains(r#"GATE_1 <span class="total">"#),
        "GATE_1 is above"
    );
    // Each state's count leads to its list.
    assert!(
        board
            .text
            .contains(r#"<a href="/board?state=PHASE_1"><span class="n">2</span>"#),
        "{}",
        board.text
    );
    let filtered = get(&app, "/board?state=GATE_1", None).await;
    let list = filtered
        .text
        .find(r#"GATE_1 <span class="total">(1)</span>"#)
        .unwrap();
    assert!(!filtered.text.contains(r#"PHASE_1 <span class="total">"#));
    // The list asked for comes before the one waiting for review.
    let waiting = filtered.text.find("Waiting for review").unwrap();
    assert!(list < waiting, "the filtered list first");
}

/// The store's side on both back ends: a session is found by its hash until it ends, deleted
/// once, and purged when it has ended.
async fn sessions_live_until_they_end_or_are_deleted(
    store: std::sync::Arc<dyn orchestrator_server::storage::DurableRepository>,
) {
    let now = chrono::Utc::now();
    let session = |hash: &str, hours: i64| BoardSession {
        id_sha256: hash.to_owned(),
        actor: "alice".to_owned(),
        credential: "open".to_owned(),
        csrf: "c".repeat(64),
        created_at: now - chrono::Duration::hours(13),
        expires_at: now + chrono::Duration::hours(hours),
    };
    store.create_session(&session("live", 1)).await.unwrap();
    store.create_session(&session("ended", -1)).await.unwrap();
    let found = store.session("live", now).await.unwrap().expect("live");
    assert_eq!(found.actor, "alice");
    assert_eq!(found.credential, "open");
    assert_eq!(
        found.expires_at.timestamp_micros(),
        session("live", 1).expires_at.timestamp_micros()
    );
    assert!(
        store.session("ended", now).await.unwrap().is_none(),
        "an ended session is absent"
    );
    assert!(store.session("never", now).await.unwrap().is_none());
    assert_eq!(store.purge_sessions(now).await.unwrap(), 1);
    assert!(store.delete_session("live").await.unwrap());
    assert!(!store.delete_session("live").await.unwrap());
    assert!(store.session("live", now).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_keeps_board_sessions() {
    let store = orchestrator_server::storage::connect(&DatabaseUrl::SqliteMemory, 2)
        .await
        .unwrap();
    sessions_live_until_they_end_or_are_deleted(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_board_sessions() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = orchestrator_server::storage::connect(&DatabaseUrl::Postgres(db.url.clone()), 2)
        .await
        .unwrap();
    sessions_live_until_they_end_or_are_deleted(store).await;
}

/// A person's answer to an escalation is shown as theirs, not the expert's, with the expert's
/// first answer and doubts beside it, line breaks kept; each cell names its column for
/// narrow screens, where the table's head is hidden.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_who_answered_an_escalation_and_what_the_expert_had_said() {
    let app = spawn_app().await;
    at_gate(&app.client, "logged").await;
    let f = id("logged");
    let asked = app
        .client
        .create_consultation(
            &f,
            &orchestrator_core::api::ConsultRequest::new(
                "security",
                "May we log the token? [confidence=30]",
            ),
        )
        .await
        .unwrap();
    let escalation = asked.escalation_id.expect("an escalation").to_string();
    let correction = "Never log it.\nNot even hashed.";
    assert!(app.hub.resolve(
        &escalation,
        orchestrator_core::hub::HumanAction::Correct,
        Some(correction)
    ));
    // Listing refreshes the escalation from the hub.
    let listed = app.client.list_consultations(&f).await.unwrap().items;
    assert_eq!(listed[0].final_answer.as_deref(), Some(correction));

    let page = get(&app, "/board/feature/logged", None).await;
    assert_eq!(page.status, StatusCode::OK);
    for expected in [
        format!(r#"<span class="text">{correction}</span>"#),
        r#"Corrected by stand-in reviewer; the expert had said: <q class="text">"#.to_owned(),
        "<summary>The expert's reasoning</summary>".to_owned(),
        "Unsure because:".to_owned(),
        r#"<td data-label="Answer">"#.to_owned(),
    ] {
        assert!(
            page.text.contains(&expected),
            "{expected} missing from:\n{}",
            page.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_inside_its_wait_is_on_no_page_and_holds_no_gate() {
    let app = spawn_app_with(|c| {
        c.agent_hub_wait_seconds = 5;
        c.agent_hub_timeout_seconds = 30;
    })
    .await;
    at_gate(&app.client, "held-page").await;
    let cookie = sign_in(&app, &[("name", "rita")]).await;
    let asking = crate::helpers::ask_held(&app, &id("held-page")).await;

    // Inside its wait it is a reservation: no page shows it, and the gate is open to an
    // approval (should the hub fail, nothing would be left of it).
    let page = get(&app, "/board/feature/held-page", Some(&cookie)).await;
    assert!(page.text.contains(">Approve</button>"), "{}", page.text);
    assert!(page.text.contains("No consultations."), "{}", page.text);
    let overview = get(&app, "/board", Some(&cookie)).await;
    assert!(
        !overview.text.contains("question to the Agent Hub"),
        "{}",
        overview.text
    );

    // Answered, it is listed.
    app.hub.release();
    assert_eq!(asking.await.unwrap().unwrap().status(), 201);
    let answered = get(&app, "/board/feature/held-page", Some(&cookie)).await;
    assert!(
        answered.text.contains("<table class=\"consultations\""),
        "{}",
        answered.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_with_more_features_than_a_page_has_pages() {
    let app = spawn_app().await;
    for n in 0..201 {
        app.start_workflow(&format!("page-{n:03}")).await;
    }
    let first = get(&app, "/board?state=PHASE_1", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.text.contains("page-199"), "{}", first.text);
    assert!(!first.text.contains("page-200"));
    assert!(
        first
            .text
            .contains(r#"href="/board?state=PHASE_1&amp;after=page-199" rel="next""#),
        "{}",
        first.text
    );
    let second = get(&app, "/board?state=PHASE_1&after=page-199", None).await;
    assert!(second.text.contains(">page-200<"), "{}", second.text);
    assert!(!second.text.contains(">page-199<"));
    // Signing in from it comes back to it.
    assert!(second.text.contains(
        r#"<input type="hidden" name="next" value="/board?state=PHASE_1&amp;after=page-199">"#
    ));
    assert!(
        second
            .text
            .contains(r#"<a href="/board?state=PHASE_1">First page</a>"#)
    );
    assert!(!second.text.contains("Next page"));
    // A page past the end (its features moved on) still leads back to the first.
    let past = get(&app, "/board?state=PHASE_1&after=zzz", None).await;
    assert!(
        past.text
            .contains(r#"<a href="/board?state=PHASE_1">First page</a>"#)
    );
    // Signing in from a later page comes back to it.
    let signed = post_form(
        &app,
        "/board/session",
        &[
            ("name", "rita"),
            ("next", "/board?state=PHASE_1&after=page-199"),
        ],
        None,
    )
    .await;
    assert_eq!(
        signed.headers[LOCATION],
        "/board?state=PHASE_1&after=page-199"
    );
    // Not a feature id: refused, and said why.
    let bad = get(&app, "/board?state=PHASE_1&after=Not%20an%20id", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("after"), "{}", bad.text);
    // Without a state too, as the API's document states the rule; empty is not given.
    let bad = get(&app, "/board?after=Not%20an%20id", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let empty = get(&app, "/board?after=", None).await;
    assert_eq!(empty.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_gates_than_the_overview_shows_are_reached_from_it() {
    let app = spawn_app().await;
    for n in 0..201 {
        at_gate(&app.client, &format!("gate-{n:03}")).await;
    }
    let overview = get(&app, "/board", None).await;
    assert!(
        overview.text.contains(
            r#"Showing 200 of 201; <a href="/board?state=GATE_1">every feature at the gate</a>"#
        ),
        "{}",
        overview.text
    );
    // That list pages through all of them.
    let first = get(&app, "/board?state=GATE_1", None).await;
    assert!(first.text.contains("gate-199"), "{}", first.text);
    let second = get(&app, "/board?state=GATE_1&after=gate-199", None).await;
    assert!(second.text.contains("gate-200"), "{}", second.text);
}

/// A person's board pages share one quarter of the stream slots, however many sessions they
/// sign in, apart from the streams their token opens: signing in again does not get past it,
/// and their own agent's streams do not shut their board out.
#[tokio::test(flavor = "multi_thread")]
async fn a_persons_board_sessions_share_one_quarter_of_the_streams() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let token = mint(&file, "carol", ActorKind::Human, &[Role::Viewer]);
    // 16 connections: 12 stream slots, 3 for carol's board and 3 for her token.
    let app = spawn_app_with(|c| {
        c.principals_file = Some(file.clone());
        c.max_connections = 16;
    })
    .await;
    let (first, second) = (
        sign_in(&app, &[("token", &token)]).await,
        sign_in(&app, &[("token", &token)]).await,
    );
    let open = async |cookie: Option<&str>| {
        let request = http().get(app.url("/events/stream"));
        let request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request.bearer_auth(&token),
        };
        request.send().await.unwrap()
    };
    let mut held = Vec::new();
    for cookie in [&first, &first, &second] {
        let stream = open(Some(cookie)).await;
        assert_eq!(stream.status(), StatusCode::OK);
        held.push(stream);
    }
    let refused = open(Some(&second)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let third = sign_in(&app, &[("token", &token)]).await;
    assert_eq!(
        open(Some(&third)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a new session is still carol's board"
    );
    // Her token's streams count apart.
    for _ in 0..3 {
        let stream = open(None).await;
        assert_eq!(stream.status(), StatusCode::OK);
        held.push(stream);
    }
    assert_eq!(open(None).await.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// DNS rebinding: a web page that points a name of its own at an open server is the server's
/// own site to the browser (its `Origin` matches `Host`), so an open server answers only
/// requests addressed to an IP address, `localhost` or a name it is told of. With a token the
/// page can do nothing, and any name is answered.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_answers_only_requests_addressed_to_its_own_names() {
    let open = spawn_app().await;
    let port = open.address.port();
    let evil = format!("evil.example:{port}");
    let from = |app: &TestApp, method: reqwest::Method, path: &str, host: &str| {
        http()
            .request(method, app.url(path))
            .header("host", host)
            .header("origin", format!("http://{host}"))
    };
    let board = page(
        from(&open, reqwest::Method::GET, "/board", &evil)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(board.status, StatusCode::FORBIDDEN);
    assert!(board.text.contains("Not allowed"), "{}", board.text);
    assert!(
        board
            .text
            .contains("start it with ALLOWED_HOSTS=evil.example,"),
        "{}",
        board.text
    );
    // Its stylesheet is served, so the refusal reads as a page.
    let style = from(
        &open,
        reqwest::Method::GET,
        "/board/assets/board.css",
        &evil,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(style.status(), StatusCode::OK);
    let sign_in = from(&open, reqwest::Method::POST, "/board/session", &evil)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("name=mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), StatusCode::FORBIDDEN);
    assert!(!sign_in.headers().contains_key(SET_COOKIE));
    let start = from(&open, reqwest::Method::POST, "/workflow/start", &evil)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"feature_id":"rebound","description":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FORBIDDEN);
    let envelope: orchestrator_core::api::ErrorEnvelope = start.json().await.unwrap();
    assert_eq!(
        envelope.error.code,
        orchestrator_core::api::ErrorCode::Forbidden
    );
    assert_eq!(open.client.get_summary().await.unwrap().total, 0);
    // The public routes answer any name, as they do with a token.
    let health = from(&open, reqwest::Method::GET, "/health", &evil)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Its own names are answered: an address (every other test), localhost, a listed name.
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let board = from(&open, reqwest::Method::GET, "/board", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(board.status(), StatusCode::OK, "{host}");
    }
    let listed = spawn_app_with(|c| {
        c.allowed_hosts =
            Some(orchestrator_server::http::hosts::AllowedHosts::parse("orchestrator").unwrap())
    })
    .await;
    let host = format!("orchestrator:{}", listed.address.port());
    let workflows = from(&listed, reqwest::Method::GET, "/workflows", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(workflows.status(), StatusCode::OK);
    let other = format!("evil.example:{}", listed.address.port());
    let workflows = from(&listed, reqwest::Method::GET, "/workflows", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(workflows.status(), StatusCode::FORBIDDEN);

    // With a token, a page holds nothing that passes: any name is answered.
    let shared = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let host = format!("evil.example:{}", shared.address.port());
    let workflows = from(&shared, reqwest::Method::GET, "/workflows", &host)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(workflows.status(), StatusCode::OK);
}

/// The overview shows what each feature is about, not its whole description: it lists
/// hundreds and is fetched again after every event. The feature's page has all of it.
#[tokio::test]
async fn the_overview_shows_the_start_of_a_long_description() {
    let app = spawn_app().await;
    let description = format!("{}the end", "a long story. ".repeat(700));
    app.client
        .start_workflow(&StartWorkflowRequest::new("long-story", &description))
        .await
        .unwrap();
    let overview = get(&app, "/board", None).await;
    assert!(overview.text.contains("long-story"));
    assert!(overview.text.contains("a long story. a long story."));
    assert!(overview.text.contains("…"));
    assert!(!overview.text.contains("the end"), "the whole description");
    let page = get(&app, "/board/feature/long-story", None).await;
    assert!(page.text.contains("the end"));
}

/// A tab left open from before its person signed in again (in another tab: a new session, a
/// new CSRF token) still signs out: its form comes from this origin.
#[tokio::test]
async fn a_tab_from_an_earlier_session_still_signs_out() {
    let app = spawn_app().await;
    let first = sign_in(&app, &[("name", "carol")]).await;
    let old_csrf = csrf_of(&get(&app, "/board", Some(&first)).await);
    let second = sign_in(&app, &[("name", "carol")]).await;
    assert_ne!(first, second);
    let out = post_form(
        &app,
        "/board/sign-out",
        &[("csrf", &old_csrf)],
        Some(&second),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert!(
        get(&app, "/board", Some(&first))
            .await
            .text
            .contains("Signed in as")
    );
    assert!(
        !get(&app, "/board", Some(&second))
            .await
            .text
            .contains("Signed in as")
    );
}

/// Gates by their deadline, the overdue one first and marked so, gates without one last:
/// whatever the names.
#[tokio::test]
async fn the_gates_waiting_are_listed_by_deadline_overdue_first_none_last() {
    let app = spawn_app().await;
    for (name, due) in [
        ("a-no-deadline", None),
        ("b-due-in-a-day", Some(86_400)),
        ("c-due-in-an-hour", Some(3_600)),
        ("d-overdue", Some(1)),
    ] {
        let mut start = StartWorkflowRequest::new(name, "the work");
        start.gate = Some(GateRequest {
            due_in_seconds: due,
            ..GateRequest::default()
        });
        app.client.start_workflow(&start).await.unwrap();
        app.client
            .advance_workflow(&id(name), &AdvanceRequest::new("agent_complete"))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let board = get(&app, "/board", None).await;
    let at = |name: &str| {
        board
            .text
            .find(&format!(r#"data-feature-id="{name}""#))
            .unwrap_or_else(|| panic!("{name} waits: {}", board.text))
    };
    let order = [
        at("d-overdue"),
        at("c-due-in-an-hour"),
        at("b-due-in-a-day"),
        at("a-no-deadline"),
    ];
    assert!(order.is_sorted(), "{order:?}");
    let overdue = &board.text[order[0]..order[1]];
    assert!(overdue.contains("Overdue"), "{overdue}");
    // Each deadline says how far off it is, the past one how long ago it was.
    assert!(overdue.contains(" s ago</time>)"), "{overdue}");
    let in_an_hour = &board.text[order[1]..order[2]];
    assert!(in_an_hour.contains(">in 59 min</time>)"), "{in_an_hour}");
    assert!(!board.text[order[1]..].contains(r#"class="badge overdue""#));
}

/// A session ends when its time is up on the server, whatever the browser keeps: the store's
/// expiry is what counts, not the cookie's `Max-Age`.
#[tokio::test]
async fn a_session_past_its_expiry_is_no_longer_signed_in() {
    let app = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let cookie = sign_in(&app, &[("token", "s3cret"), ("name", "carol")]).await;
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::OK
    );
    crate::helpers::run_sql(
        &app.config.database_url,
        "UPDATE board_sessions SET expires_at = created_at + 1",
    )
    .await;
    assert_eq!(
        get(&app, "/workflows", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        get(&app, "/board", Some(&cookie))
            .await
            .text
            .contains("<h1>Sign in</h1>")
    );
}

/// What the agent gave with the feature and with its steps (a spec, a plan, a pull request) is
/// on the feature page for the reviewer: an http(s) address as a link, text as text, anything
/// else as its JSON, all escaped; no other scheme is ever a link.
#[tokio::test(flavor = "multi_thread")]
async fn what_was_given_with_the_feature_and_its_steps_is_on_its_page() {
    let app = spawn_app().await;
    let mut start = StartWorkflowRequest::new("given", "Work with links");
    start.metadata = Some(serde_json::json!({
        "spec": "https://docs.example/specs/given",
        "plan": "1. <b>read</b>\n2. write",
    }));
    app.client.start_workflow(&start).await.unwrap();
    let mut done = AdvanceRequest::new("agent_complete");
    done.metadata = Some(serde_json::json!({
        "pr": "https://git.example/org/repo/pull/7",
        "checks": {"passed": 12},
        "trap": "javascript:alert(1)",
    }));
    app.client
        .advance_workflow(&id("given"), &done)
        .await
        .unwrap();

    let page = get(&app, "/board/feature/given", None).await.text;
    for shown in [
        r#"<dl class="metadata" aria-label="What was given with the feature">"#,
        r#"<dt>spec</dt><dd><a href="https://docs.example/specs/given" rel="noreferrer">https://docs.example/specs/given</a></dd>"#,
        "<dt>plan</dt><dd>1. &lt;b&gt;read&lt;/b&gt;\n2. write</dd>",
        r#"<dl class="metadata" aria-label="What was given with this step">"#,
        r#"<a href="https://git.example/org/repo/pull/7" rel="noreferrer">"#,
        r#"<dt>checks</dt><dd><code>{&quot;passed&quot;:12}</code></dd>"#,
        "<dt>trap</dt><dd>javascript:alert(1)</dd>",
    ] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    // Steps given nothing show nothing.
    assert_eq!(page.matches(r#"<dl class="metadata""#).count(), 2, "{page}");
}
