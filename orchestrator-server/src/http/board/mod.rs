//! The reviewer board: `/board`, a web page for the people at the gate.
//!
//! This module owns the board's routes (the overview, a feature's page, sign-in and sign-out,
//! the page's own CSS and script) and the data each page shows; the markup is in `views`, the
//! sessions (cookie, credential, CSRF, `Origin`) in `session`. The pages are rendered here, whole; the script (`board.js`) follows the event
//! stream and, on an event, fetches the page again and swaps its `<main>`: one rendering, on
//! the server. Approve and Reject are the API's own `POST /workflow/{id}/advance`, sent by the
//! script with `If-Match`.
//!
//! Sessions: sign-in exchanges a token (principals and shared-token modes) or a name (open
//! mode; shared-token mode asks for both, since one token names no one) for a random session
//! id in an HttpOnly, SameSite=Strict cookie, kept in the store by its SHA-256 for 12 hours and
//! deleted by sign-out. A request to the API without `Authorization` but with the cookie acts
//! as the session (`api_caller`); a write that way must carry the session's CSRF token in
//! `X-CSRF-Token`, and a request that says its `Origin` must come from this server's.
//!
//! Every board answer carries a `Content-Security-Policy` that allows nothing outside the
//! server's origin, no inline script, and no framing.

mod session;
mod views;

use super::App;
use super::auth::Auth;
use super::error::ApiError;
use super::handlers::workflows::held;
use super::router::Route;
use crate::principals::{to_hex, token_hash};
use crate::storage::BoardSession;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use orchestrator_core::api::WorkflowResponse;
use orchestrator_core::{
    Action, Actor, ActorKind, FeatureId, GateFacts, ListQuery, PageLimit, TransitionContext,
    TransitionError, Trigger, ValidationError, WorkflowState,
};
use session::{
    SESSION_HOURS, Session, credential, random_hex, same_origin, session, session_by_key,
    session_cookie, session_key,
};
pub(crate) use session::{api_caller, has_session_cookie, still_signed_in};

/// Nothing outside the server's origin, no inline script or style, no framing.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                              img-src 'self'; connect-src 'self'; form-action 'self'; \
                              base-uri 'none'; frame-ancestors 'none'";
/// The most features one list on the overview shows.
const LIST_LIMIT: u32 = 200;
/// The most features of one state the unfiltered overview shows.
const GROUP_LIMIT: u32 = 50;

const CSS: &str = include_str!("board.css");
const SCRIPT: &str = include_str!("board.js");
const ICON: &str = include_str!("icon.svg");
/// The board's files: name, content type, content.
pub(crate) const ASSETS: [(&str, &str, &str); 3] = [
    ("board.css", "text/css; charset=utf-8", CSS),
    ("board.js", "text/javascript; charset=utf-8", SCRIPT),
    ("icon.svg", "image/svg+xml", ICON),
];

type HttpResponse = Response<Full<Bytes>>;

/// Answers a board route; errors become pages too, never JSON.
pub(crate) async fn handle(
    app: &App,
    route: Route,
    param: &str,
    parts: &Parts,
    body: &Bytes,
) -> HttpResponse {
    let answered = match route {
        Route::Board => overview(app, parts).await,
        Route::BoardFeature => feature(app, param, parts).await,
        Route::BoardSession => sign_in(app, parts, body).await,
        Route::BoardSignOut => sign_out(app, parts, body).await,
        Route::BoardAsset => asset(param, &parts.headers),
        _ => Err(ApiError::NotFound(parts.uri.path().to_owned())),
    };
    dressed(answered.unwrap_or_else(problem))
}

/// An error met on a board path outside the board's handlers (a wrong method, a form too
/// large or too slow, the request's deadline, a panic, a path no page has) as a page with the
/// board's headers, not the API's JSON.
pub(crate) fn error_page(error: ApiError) -> HttpResponse {
    dressed(problem(error))
}

/// Whether `path` is the board's: its errors are pages.
pub(crate) fn owns(path: &str) -> bool {
    path == "/board" || path.starts_with("/board/")
}

/// A board answer with the headers every board answer carries.
fn dressed(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with the latter a form sends `Origin: null`.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The sign-in form, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct SignInForm {
    /// The API token (principals and shared-token modes).
    token: Option<String>,
    /// Your name (open and shared-token modes), recorded as the actor of your decisions.
    name: Option<String>,
    /// The board page to return to.
    next: Option<String>,
}

/// The sign-out form, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct SignOutForm {
    /// The session's CSRF token.
    csrf: Option<String>,
}

/// How sign-in works in the server's mode: (a token is needed, a name is asked for).
fn sign_in_fields(auth: &Auth) -> (bool, bool) {
    match auth {
        Auth::Open => (false, true),
        Auth::Shared(_) => (true, true),
        Auth::Principals { .. } => (true, false),
    }
}

/// The reviewer board's overview.
#[utoipa::path(
    get, path = "/board", tag = "board", operation_id = "get_board",
    params(("state" = Option<String>, Query, description = "list only the other features in this state; empty: every state but GATE_1"),
           ("after" = Option<String>, Query, description = "with `state`: list that state's features whose id sorts after this one (the page's \"Next page\" link); a feature id (400 if not, with `state` or without); without `state` it is not used")),
    responses(
        (status = 200, description = "the overview page; or, when the server needs a token and no session is signed in, the sign-in page; or, asked for by a link from another site (`Sec-Fetch-Site: cross-site`, `Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`) without a session cookie, a page that asks for the same address again from this origin (`<meta http-equiv=\"refresh\">`), so that the browser sends the SameSite=Strict cookie", content_type = "text/html", body = String),
        (status = 400, description = "a page: `state` is not a state, or `after` not a feature id", content_type = "text/html", body = String),
        (status = 500, description = "a page: a bug", content_type = "text/html", body = String),
        (status = 503, description = "a page: the database is unavailable", content_type = "text/html", body = String),
    ),
)]
pub(crate) async fn overview(app: &App, parts: &Parts) -> Result<HttpResponse, ApiError> {
    let filter = state_filter(parts.uri.query())?;
    // A later page of the one state asked for (no other list has pages); checked either way,
    // as the API's document states its rule.
    let after = after_filter(parts.uri.query())?.filter(|_| filter.is_some());
    let here = filter.map_or_else(
        || "/board".to_owned(),
        |state| state_page(state, after.as_ref()),
    );
    if let Some(again) = from_another_site(&parts.headers, &here) {
        return Ok(again);
    }
    let session = session(app, &parts.headers).await?;
    let (token_required, name_asked) = sign_in_fields(app.auth());
    if token_required && session.is_none() {
        return Ok(html(
            StatusCode::OK,
            views::sign_in_page(token_required, name_asked, &here, None),
        ));
    }
    let orchestrator = app.orchestrator();
    let now = app.now();
    let last_event_id = orchestrator.last_event_id().await?;
    let summary = orchestrator.summary().await?;
    // Each list asks for no more than its state's count: a store that finds a state's rows by
    // walking every workflow in order (PostgreSQL, whose advances keep no index on the state)
    // stops at the last of them rather than at the end of the table, and a state with none
    // (IDLE, which no stored workflow is in) is not read at all. A change after the count
    // shows at the next refresh, which its event brings.
    let at_most = |state: WorkflowState, limit: u32| {
        u32::try_from(summary.counts.get(state))
            .unwrap_or(u32::MAX)
            .min(limit)
    };
    // The earliest due first (the overdue ones among them), up to the limit.
    let gates = match at_most(WorkflowState::Gate1, LIST_LIMIT) {
        0 => Vec::new(),
        limit => orchestrator.gates_by_due(limit).await?,
    };
    let mut waiting: Vec<WorkflowResponse> = gates
        .iter()
        .map(|workflow| WorkflowResponse::new(workflow, now))
        .collect();
    held(app, &mut waiting).await?;
    // Overdue first, then the earliest due; gates without a deadline last, longest waiting
    // first.
    waiting.sort_by_key(|w| {
        let gate = &w.gate;
        (
            !gate.overdue,
            gate.due_at.is_none(),
            gate.due_at,
            gate.entered_at,
        )
    });
    // The other features by state: one state when filtered, else each state but GATE_1.
    let (states, per_state) = match filter {
        Some(state) => (vec![state], LIST_LIMIT),
        None => (
            WorkflowState::ALL
                .into_iter()
                .filter(|s| *s != WorkflowState::Gate1)
                .collect(),
            GROUP_LIMIT,
        ),
    };
    let mut others = Vec::with_capacity(states.len());
    for state in states {
        let (items, next_after) = match at_most(state, per_state) {
            0 => (Vec::new(), None),
            limit => {
                let query = ListQuery {
                    state: Some(state),
                    overdue: false,
                    after: after.clone(),
                    limit: PageLimit::parse(limit).unwrap_or_default(),
                };
                let page = orchestrator.list(&query).await?;
                let items = page
                    .items
                    .iter()
                    .map(|w| WorkflowResponse::new(w, now))
                    .collect();
                (items, page.next_after)
            }
        };
        // Pages only for the state asked for (`after` comes with it): the overview's short
        // lists say to ask.
        others.push(views::Group {
            state,
            total: summary.counts.get(state),
            items,
            next: next_after
                .filter(|_| filter.is_some())
                .map(|id| state_page(state, Some(&id))),
            first: after.as_ref().map(|_| state_page(state, None)),
        });
    }
    // A filtered overview says so in its title (a tab, a screen reader's first words).
    let title = filter.map_or_else(
        || "Features".to_owned(),
        |state| format!("Features in {state}"),
    );
    let data = views::Overview {
        waiting_total: summary.counts.get(WorkflowState::Gate1),
        summary,
        waiting,
        others,
        filter,
        now,
    };
    let frame = views::Frame {
        title: &title,
        who: session.as_ref().map(Session::who),
        feature: None,
        here: &here,
        last_event_id,
        token_required,
        name_asked,
        request_timeout_ms: app.limits().request_timeout.as_millis(),
    };
    Ok(html(
        StatusCode::OK,
        views::page(&frame, views::overview(&data)),
    ))
}

/// The overview's `state` filter: absent or empty for every state but GATE_1, else one state
/// (given once).
fn state_filter(query: Option<&str>) -> Result<Option<WorkflowState>, ApiError> {
    one_value(query, "state")?
        .map(|value| {
            value.parse::<WorkflowState>().map_err(|_| {
                ValidationError::new(
                    "state",
                    "must be one of IDLE, PHASE_1, GATE_1, PHASE_2, DONE",
                )
                .into()
            })
        })
        .transpose()
}

/// The overview's page of the features in `state`: the first, or the one after `after`.
fn state_page(state: WorkflowState, after: Option<&FeatureId>) -> String {
    match after {
        None => format!("/board?state={state}"),
        Some(after) => format!("/board?state={state}&after={after}"),
    }
}

/// The overview's `after`: absent or empty for the first page, else the feature id the page
/// starts after (given once).
fn after_filter(query: Option<&str>) -> Result<Option<FeatureId>, ApiError> {
    one_value(query, "after")?
        .map(|value| {
            FeatureId::parse(value).map_err(|e| ValidationError::new("after", e.rule).into())
        })
        .transpose()
}

/// The value of the query's parameter `name`: `None` when it is absent or empty; given twice,
/// refused.
fn one_value(query: Option<&str>, name: &'static str) -> Result<Option<String>, ApiError> {
    let mut given = super::body::query_pairs(query)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, value)| value);
    match (given.next(), given.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value).filter(|v| !v.is_empty())),
        (Some(_), Some(_)) => Err(ValidationError::new(name, "may be given once").into()),
    }
}

/// For a page asked for by a link on another site (`Sec-Fetch-Site: cross-site`, a document's
/// navigation) without a session cookie: the page that asks for `here` again from this origin
/// (the browser withheld the SameSite=Strict cookie from the cross-site navigation, and sends
/// it with this one). `None` otherwise: with a cookie (valid or not), or from this origin,
/// there is nothing to gain, and the second request is same-origin, so it never comes back
/// here.
fn from_another_site(headers: &HeaderMap, here: &str) -> Option<HttpResponse> {
    let says = |name: &str, value: &[u8]| headers.get(name).is_some_and(|v| v.as_bytes() == value);
    let cross_site = says("sec-fetch-site", b"cross-site")
        && says("sec-fetch-mode", b"navigate")
        && says("sec-fetch-dest", b"document");
    (cross_site && !has_session_cookie(headers))
        .then(|| html(StatusCode::OK, views::continue_page(here)))
}

/// A feature's page on the reviewer board.
#[utoipa::path(
    get, path = "/board/feature/{feature_id}", tag = "board", operation_id = "get_board_feature",
    params(("feature_id" = String, Path, description = "the feature id")),
    responses(
        (status = 200, description = "the feature's page; or, when the server needs a token and no session is signed in, the sign-in page; or, asked for by a link from another site (`Sec-Fetch-Site: cross-site`, `Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`) without a session cookie, a page that asks for the same address again from this origin (`<meta http-equiv=\"refresh\">`), so that the browser sends the SameSite=Strict cookie", content_type = "text/html", body = String),
        (status = 400, description = "a page: the feature id is malformed", content_type = "text/html", body = String),
        (status = 404, description = "a page: no such feature", content_type = "text/html", body = String),
        (status = 500, description = "a page: a bug", content_type = "text/html", body = String),
        (status = 503, description = "a page: the database is unavailable", content_type = "text/html", body = String),
    ),
)]
pub(crate) async fn feature(
    app: &App,
    raw_id: &str,
    parts: &Parts,
) -> Result<HttpResponse, ApiError> {
    let id = FeatureId::parse(raw_id)?;
    let here = format!("/board/feature/{}", id.as_str());
    if let Some(again) = from_another_site(&parts.headers, &here) {
        return Ok(again);
    }
    let session = session(app, &parts.headers).await?;
    let (token_required, name_asked) = sign_in_fields(app.auth());
    if token_required && session.is_none() {
        return Ok(html(
            StatusCode::OK,
            views::sign_in_page(token_required, name_asked, &here, None),
        ));
    }
    let orchestrator = app.orchestrator();
    let now = app.now();
    let last_event_id = orchestrator.last_event_id().await?;
    let workflow = orchestrator.get(&id).await?;
    let history = orchestrator.history(&id).await?;
    // As stored: a page view (and each live refresh) does not call the Agent Hub.
    let consultations = orchestrator.repository().consultations(&id).await?;
    let blockers: Vec<_> = consultations
        .iter()
        .filter(|c| c.blocks_gate())
        .cloned()
        .collect();
    let mut view = WorkflowResponse::new(&workflow, now);
    view.gate.hold(&blockers);
    let verdict = match &session {
        _ if workflow.state() != WorkflowState::Gate1 => views::Verdict::SignedOut,
        None => views::Verdict::SignedOut,
        Some(session) => {
            let may_reject = session.kind == ActorKind::Human
                && session
                    .caller
                    .may(Action::Trigger(Trigger::HumanRejected))
                    .is_ok();
            if session.kind == ActorKind::Agent {
                // No role lifts the kind rule: say that, not which role is missing.
                views::Verdict::MayNot {
                    why: views::why_not(&TransitionError::AgentMayNotDecide {
                        trigger: Trigger::HumanApproved,
                    }),
                    may_reject: false,
                    ask_hub: false,
                }
            } else if let Err(refused) = session.caller.may(Action::Trigger(Trigger::HumanApproved))
            {
                views::Verdict::MayNot {
                    // The role it takes, in words: a viewer reads "role needed" as jargon.
                    why: match refused {
                        ApiError::RoleNeeded(role) => format!(
                            "your roles do not allow it: approving takes the {role} role, which \
                             your token does not carry."
                        ),
                        other => format!("your roles do not allow it ({}).", other.body().message),
                    },
                    may_reject,
                    ask_hub: false,
                }
            } else {
                // Names were checked when the session began.
                let actor = Actor::parse(&session.record.actor)?;
                let judged = orchestrator
                    .may_approve(&workflow, &actor, session.kind)
                    .await?;
                match judged {
                    Ok(()) => views::Verdict::May,
                    Err(refused) => views::Verdict::MayNot {
                        // Only escalations waiting for a human in the way, as stored, and the
                        // gate's other rules would take this person's approval: one answered
                        // at the hub itself counts once the hub is asked, which an approval
                        // does.
                        ask_hub: matches!(&refused, TransitionError::GateBlocked { escalations, asking }
                            if !escalations.is_empty() && asking.is_empty())
                            && workflow
                                .decide(
                                    Trigger::HumanApproved,
                                    TransitionContext {
                                        actor: Some(actor.clone()),
                                        actor_kind: Some(session.kind),
                                        ..TransitionContext::at(now)
                                    },
                                    &GateFacts::default(),
                                )
                                .is_ok(),
                        why: views::why_not(&refused),
                        may_reject,
                    },
                }
            }
        }
    };
    // The respond endpoint's own rule: a human with the reviewer role.
    let may_respond = session.as_ref().is_some_and(|session| {
        session.kind == ActorKind::Human && session.caller.may(Action::Respond).is_ok()
    });
    let data = views::Feature {
        workflow: view,
        history,
        consultations,
        verdict,
        may_respond,
        now,
    };
    let here = format!("/board/feature/{id}");
    let frame = views::Frame {
        title: id.as_str(),
        who: session.as_ref().map(Session::who),
        feature: Some(id.as_str()),
        here: &here,
        last_event_id,
        token_required,
        name_asked,
        request_timeout_ms: app.limits().request_timeout.as_millis(),
    };
    Ok(html(
        StatusCode::OK,
        views::page(&frame, views::feature(&data)),
    ))
}

/// Sign in to the board: a form with `token` and/or `name` (and `next`, the board page to
/// return to) becomes a session cookie and a redirect.
#[utoipa::path(
    post, path = "/board/session", tag = "board", operation_id = "create_board_session",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "signed in: the session cookie, and on to `next`",
         headers(("Location" = String, description = "`next` if it is a board page, else `/board`"),
                 ("Set-Cookie" = String, description = "`orchestrator_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200`; behind `X-Forwarded-Proto: https` the cookie is `__Host-orchestrator_session` and `Secure`"))),
        (status = 400, description = "the sign-in page again: the name is blank or invalid", content_type = "text/html", body = String),
        (status = 401, description = "the sign-in page again: the token is not valid", content_type = "text/html", body = String),
        (status = 403, description = "a page: the request came from another origin", content_type = "text/html", body = String),
        (status = 415, description = "a page: the body is not a form, or is encoded (`Content-Encoding`)", content_type = "text/html", body = String),
        (status = 500, description = "a page: a bug", content_type = "text/html", body = String),
        (status = 503, description = "a page: the database is unavailable", content_type = "text/html", body = String),
    ),
)]
pub(crate) async fn sign_in(
    app: &App,
    parts: &Parts,
    body: &Bytes,
) -> Result<HttpResponse, ApiError> {
    same_origin(&parts.headers)?;
    let form = form_fields(&parts.headers, body)?;
    let field = |name| form_field(&form, name);
    let next = board_path(field("next"));
    let (token_required, name_asked) = sign_in_fields(app.auth());
    let typed_name = field("name").trim();
    let refuse = |status, message: &str, field| {
        let refused = views::Refused {
            message,
            field,
            name: typed_name,
        };
        Ok(html(
            status,
            views::sign_in_page(token_required, name_asked, next, Some(&refused)),
        ))
    };
    // A token pasted with a space or a line break around it is the same token.
    let token = field("token").trim();
    let caller = match app.auth().check_token(token) {
        Ok(caller) => caller,
        Err(_) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "That token is not valid.",
                views::Field::Token,
            );
        }
    };
    let actor = match caller.principal() {
        Some(principal) => principal.name.to_string(),
        // The rule of an `actor` in a request, so a name signed in with is one a decision takes.
        None => match Actor::parse_name(typed_name) {
            Ok(name) => name.to_string(),
            Err(e) => {
                let message = format!("Name {}.", e.rule);
                return refuse(StatusCode::BAD_REQUEST, &message, views::Field::Name);
            }
        },
    };
    let Some(store) = app.sessions() else {
        return Err(ApiError::NotFound("/board/session".into()));
    };
    let id = random_hex()?;
    let now = app.now();
    let session = BoardSession {
        id_sha256: to_hex(&token_hash(&id)),
        actor,
        credential: credential(app.auth(), token),
        csrf: random_hex()?,
        created_at: now,
        expires_at: now + chrono::Duration::hours(SESSION_HOURS),
    };
    store
        .create_session(&session)
        .await
        .map_err(|e| ApiError::Core(e.into()))?;
    // Signing in again replaces the browser's earlier session.
    if let Some(earlier) = session_key(&parts.headers) {
        store
            .delete_session(&earlier)
            .await
            .map_err(|e| ApiError::Core(e.into()))?;
        app.revoked();
    }
    let cookie = session_cookie(&parts.headers, &id, SESSION_HOURS * 3600);
    Ok(redirect(next, Some(&cookie)))
}

/// Sign out of the board: ends the session on the server (its cookie no longer works
/// anywhere) and clears the cookie. The form carries the session's CSRF token.
#[utoipa::path(
    post, path = "/board/sign-out", tag = "board", operation_id = "board_sign_out",
    request_body(content = SignOutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "signed out (or was not signed in): the cookie cleared, on to `/board`",
         headers(("Location" = String, description = "`/board`"),
                 ("Set-Cookie" = String, description = "`orchestrator_session=; …; Max-Age=0` (behind `X-Forwarded-Proto: https`, `__Host-orchestrator_session=; …; Max-Age=0; Secure`)"))),
        (status = 403, description = "a page: the request came from another origin, or, sent without `Origin`, its CSRF token is wrong", content_type = "text/html", body = String),
        (status = 415, description = "a page: the body is not a form, or is encoded (`Content-Encoding`)", content_type = "text/html", body = String),
        (status = 500, description = "a page: a bug", content_type = "text/html", body = String),
        (status = 503, description = "a page: the database is unavailable", content_type = "text/html", body = String),
    ),
)]
pub(crate) async fn sign_out(
    app: &App,
    parts: &Parts,
    body: &Bytes,
) -> Result<HttpResponse, ApiError> {
    same_origin(&parts.headers)?;
    let form = form_fields(&parts.headers, body)?;
    if let Some(key) = session_key(&parts.headers) {
        // A session that holds signs out with its CSRF token, or from a page of this origin
        // (`Origin` checked above): a tab left open from before the person signed in again
        // holds the old session's token, and its Sign out must still sign out. One that no
        // longer holds (its credential gone) is deleted all the same, holding its cookie being
        // proof enough: the credential restored must not bring back a session signed out of.
        if let Some(session) = session_by_key(app, &key).await?
            && !session.csrf_matches(form_field(&form, "csrf").as_bytes())
            && !parts.headers.contains_key(header::ORIGIN)
        {
            return Err(ApiError::Forbidden(
                "the sign-out form's CSRF token is wrong".into(),
            ));
        }
        if let Some(store) = app.sessions() {
            store
                .delete_session(&key)
                .await
                .map_err(|e| ApiError::Core(e.into()))?;
            // Its streams on this server end now; on other replicas at their next heartbeat.
            app.revoked();
        }
    }
    let cookie = session_cookie(&parts.headers, "", 0);
    Ok(redirect("/board", Some(&cookie)))
}

/// The board's stylesheet, script and icon, embedded at build time. Each is sent with an
/// `ETag` (its content's hash) and `Cache-Control: no-cache`: a browser asks again on every
/// page, and gets 304 without the file while it has not changed.
#[utoipa::path(
    get, path = "/board/assets/{file}", tag = "board", operation_id = "get_board_asset",
    params(
        ("file" = String, Path, description = "`board.css`, `board.js` or `icon.svg`"),
        ("If-None-Match" = Option<String>, Header, description = "the `ETag` of the copy the browser holds"),
    ),
    responses(
        (status = 200, description = "the file (`text/css`, `text/javascript` or `image/svg+xml`)", content_type = "text/css", body = String,
         headers(("ETag" = String, description = "the file's version: its content's hash"))),
        (status = 304, description = "the copy named by `If-None-Match` is current",
         headers(("ETag" = String, description = "the file's version: its content's hash"))),
        (status = 404, description = "a page: no such file", content_type = "text/html", body = String),
    ),
)]
pub(crate) fn asset(file: &str, headers: &HeaderMap) -> Result<HttpResponse, ApiError> {
    let Some(&(_, content_type, text)) = ASSETS.iter().find(|(name, ..)| *name == file) else {
        return Err(ApiError::NotFound(format!("/board/assets/{file}")));
    };
    let etag = asset_tag(text);
    let current = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        });
    let mut response = if current {
        super::body::bytes_response(StatusCode::NOT_MODIFIED, content_type, Bytes::new())
    } else {
        super::body::bytes_response(
            StatusCode::OK,
            content_type,
            Bytes::from_static(text.as_bytes()),
        )
    };
    if current {
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// An asset's entity tag: the start of its SHA-256, quoted.
fn asset_tag(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    format!("\"{}\"", &to_hex(&Sha256::digest(text.as_bytes()))[..16])
}

/// A form body's fields: 415 unless it says it is `application/x-www-form-urlencoded`.
fn form_fields(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::UnsupportedMediaType(
            "application/x-www-form-urlencoded",
        ));
    }
    super::body::not_encoded(headers)?;
    Ok(form_urlencoded::parse(body).into_owned().collect())
}

/// A form field's value; empty when absent.
fn form_field<'f>(form: &'f [(String, String)], name: &str) -> &'f str {
    form.iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

/// `next` if it is a board page (the overview, filtered by a state or not, or a feature's
/// page), else the overview: a sign-in never sends anyone elsewhere.
fn board_path(next: &str) -> &str {
    let safe = next == "/board"
        || next.strip_prefix("/board?state=").is_some_and(|rest| {
            // A state, and maybe the page of it (`&after=` a feature id).
            let (state, after) = match rest.split_once("&after=") {
                Some((state, after)) => (state, Some(after)),
                None => (rest, None),
            };
            state.parse::<WorkflowState>().is_ok()
                && after.is_none_or(|id| FeatureId::parse(id).is_ok())
        })
        || next
            .strip_prefix("/board/feature/")
            .is_some_and(|id| FeatureId::parse(id).is_ok());
    if safe { next } else { "/board" }
}

fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    super::body::bytes_response(
        status,
        "text/html; charset=utf-8",
        Bytes::from(markup.into_string()),
    )
}

fn redirect(to: &str, cookie: Option<&str>) -> HttpResponse {
    let mut response = super::body::bytes_response(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(to) {
        headers.insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// An error as a page, with the status the API would answer.
fn problem(error: ApiError) -> HttpResponse {
    let body = error.body();
    let status = super::error::status_of(body.code);
    if status.is_server_error() {
        tracing::error!(error = %error, "board page failed");
    }
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        s if s.is_client_error() => "Cannot show that",
        _ => "Something went wrong",
    };
    let mut message = body.message;
    if let Some(details) = body
        .details
        .filter(|d| !d.iter().all(|d| message.contains(d.as_str())))
    {
        message = format!("{message} ({})", details.join("; "));
    }
    let mut response = html(status, views::problem_page(title, &message));
    error.add_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_returns_only_to_board_pages() {
        assert_eq!(board_path("/board/feature/f-1"), "/board/feature/f-1");
        assert_eq!(board_path("/board"), "/board");
        assert_eq!(board_path("/board?state=DONE"), "/board?state=DONE");
        assert_eq!(board_path("/board?state=DONE&x=//evil"), "/board");
        assert_eq!(
            board_path("/board?state=DONE&after=f-1"),
            "/board?state=DONE&after=f-1"
        );
        assert_eq!(board_path("/board?state=DONE&after=//evil"), "/board");
        assert_eq!(board_path("/board?state=DONE&after=f-1&x=1"), "/board");
        assert_eq!(board_path("/board?state=//evil.example"), "/board");
        assert_eq!(board_path("https://evil.example/"), "/board");
        assert_eq!(board_path("//evil.example"), "/board");
        assert_eq!(board_path("/board/feature/../../x"), "/board");
    }
}
