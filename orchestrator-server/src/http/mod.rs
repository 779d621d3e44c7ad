//! The HTTP API on hyper 1.x: accepting connections, graceful shutdown, per-request
//! bookkeeping (request id, tracing span, metrics, authentication), and the one dispatch
//! from route to handler.
//!
//! Handlers live in `handlers/`; the route table in `router`; JSON in `body`; the error
//! mapping in `error`. Nothing here holds a transition rule or a query.

mod asks;
pub mod auth;
pub mod board;
pub mod body;
mod conn;
pub mod error;
pub mod events;
pub mod handlers;
pub mod hosts;
pub(crate) mod housekeeping;
pub(crate) mod idempotency;
mod openapi;
pub mod router;
mod stream_queue;
pub mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use orchestrator_core::api::HealthCheck;
use orchestrator_core::{Orchestrator, Timestamp};
use tokio::net::TcpListener;
use tracing::Instrument;

pub use asks::AskPolicy;
pub use openapi::ApiDoc;

use crate::config::Secret;
use crate::metrics::{Metrics, Worker};
use crate::storage::SessionRepository;
use error::ApiError;
use handlers::docs::DocsAssets;
use handlers::{consultations, system, workflows};
use housekeeping::supervised;
use router::Route;

/// The body of every answer: whole, or a stream of server-sent events.
pub type Body = Either<Full<Bytes>, events::SseBody>;

/// The address a request came from (its connection's peer), for its log lines: a proxy's,
/// behind one.
#[derive(Debug, Clone, Copy)]
struct Peer(std::net::SocketAddr);

/// How long shutdown waits for in-flight requests before it gives up on them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's headers; an idle kept-alive connection is
/// closed after as long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The time bounds and the connection limit the HTTP layer enforces, so that slow or stalled
/// clients and dependencies hold neither connections nor memory for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a request may take from its headers to its answer (then 503
    /// `SERVICE_UNAVAILABLE`).
    pub request_timeout: Duration,
    /// Longest a client may take to send a body (then 408 `REQUEST_TIMEOUT`).
    pub body_timeout: Duration,
    /// Longest an answer may wait for a client that does not read it (then the connection is
    /// closed).
    pub write_timeout: Duration,
    /// How consultations wait for the Agent Hub, and how many may be asked at once.
    pub asks: AskPolicy,
    /// How long events are kept, and the streams' heartbeat.
    pub events: events::EventPolicy,
    /// How long a stop waits for in-flight requests before it closes their connections.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            request_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            asks: AskPolicy::default(),
            events: events::EventPolicy::default(),
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

/// Everything a request needs, shared by all connections.
#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    orchestrator: Orchestrator,
    /// Who may call: open, one shared token, or principals.
    auth: auth::Auth,
    /// The names an open server answers to (see [`hosts`]).
    hosts: hosts::AllowedHosts,
    /// Shared with the Agent Hub client, which counts its calls.
    metrics: Arc<Metrics>,
    started: Instant,
    router: matchit::Router<Route>,
    docs: DocsAssets,
    /// The last Agent Hub probe, so `/health` does not call the hub on every request.
    hub_probe: system::Cached<HealthCheck>,
    /// The last storage probe (a write), so `/health` writes at most once a second.
    database_probe: system::Cached<HealthCheck>,
    /// The last reading of the store for `/metrics` (workflows by state, gates overdue, the
    /// webhook backlog), so scrapes read it at most once a second.
    metrics_read: system::Cached<crate::metrics::StoreReading>,
    limits: Limits,
    /// Request bodies being read, bounded in total size and time.
    bodies: body::BodyGate,
    asks: asks::Asks,
    /// New events, broadcast to this server's streams.
    feed: events::Feed,
    /// The event streams this server may hold open at once (see [`events::stream_slots`]).
    streams: Arc<tokio::sync::Semaphore>,
    /// How many streams each share (with principals, a person's token streams, or their board
    /// pages') has open here.
    holders: events::Holders,
    /// Turns true when the server stops, which ends every stream.
    closing: tokio::sync::watch::Sender<bool>,
    /// Counts the times someone lost the right to read here (a board session ended, the
    /// principals file re-read): each time, this server's streams ask their holders again at
    /// once rather than at their next heartbeat.
    revocations: tokio::sync::watch::Sender<u64>,
    /// Subscriptions and their deliveries; `None` over a store that keeps none.
    webhooks: Option<Arc<webhooks::Webhooks>>,
    /// The board's sessions; `None` over a store that keeps none (then nobody signs in).
    sessions: Option<Arc<dyn SessionRepository>>,
}

impl App {
    /// An application over `orchestrator`, requiring `token` when one is given, counting into
    /// `metrics`, with the default [`Limits`].
    pub fn new(orchestrator: Orchestrator, token: Option<Secret>, metrics: Arc<Metrics>) -> Self {
        let auth = match token.filter(|t| !t.expose().is_empty()) {
            Some(token) => auth::Auth::Shared(token),
            None => auth::Auth::Open,
        };
        Self::with(
            orchestrator,
            auth,
            hosts::AllowedHosts::default(),
            metrics,
            Limits::default(),
            None,
            None,
        )
    }

    /// An application as [`App::new`] makes it, authenticating by `auth` (when open, answering
    /// only requests addressed to an IP address, `localhost` or one of `hosts`), with other limits,
    /// delivering webhooks when given their store (the `/webhooks` routes answer 404
    /// `NOT_FOUND` without one), and keeping the board's sessions in `sessions` (without it,
    /// nobody signs in to the board).
    pub fn with(
        orchestrator: Orchestrator,
        auth: auth::Auth,
        hosts: hosts::AllowedHosts,
        metrics: Arc<Metrics>,
        limits: Limits,
        webhooks: Option<webhooks::Webhooks>,
        sessions: Option<Arc<dyn SessionRepository>>,
    ) -> Self {
        let docs = if auth.principals() {
            DocsAssets::for_principals()
        } else {
            DocsAssets::for_server(auth.required())
        };
        // Every gate expiry this orchestrator notes, by the sweep or before a late decision, is
        // counted and logged.
        let orchestrator =
            orchestrator.observing_expiries(housekeeping::expiry_observer(metrics.clone()));
        App(Arc::new(Inner {
            orchestrator,
            auth,
            hosts,
            metrics,
            started: Instant::now(),
            router: router::build(),
            docs,
            hub_probe: system::Cached::new(system::HUB_PROBE_TTL),
            database_probe: system::Cached::new(system::DATABASE_PROBE_TTL),
            metrics_read: system::Cached::new(system::METRICS_READ_TTL),
            limits,
            bodies: body::BodyGate::new(limits.body_timeout),
            asks: asks::Asks::new(limits.asks),
            feed: events::Feed::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(events::stream_slots(
                limits.max_connections,
            ))),
            holders: Arc::default(),
            closing: tokio::sync::watch::channel(false).0,
            revocations: tokio::sync::watch::channel(0).0,
            webhooks: webhooks.map(Arc::new),
            sessions,
        }))
    }

    /// The limits this application enforces.
    pub fn limits(&self) -> Limits {
        self.0.limits
    }

    /// Re-reads the principals file (principals mode; SIGHUP). A bad file keeps the
    /// principals in force.
    pub fn reload_principals(&self) {
        self.0.auth.reload();
        self.revoked();
    }

    /// Says someone may have lost the right to read: this server's streams check their holders
    /// now.
    pub(crate) fn revoked(&self) {
        self.0.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Told of each [`App::revoked`].
    pub(crate) fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.revocations.subscribe()
    }

    /// Fails the consultations a stopped server left `asking` (see `Asks::recover`).
    pub async fn recover_asks(&self, sole: bool) {
        self.0.asks.recover(&self.0.orchestrator, sole).await;
    }

    /// Forgets the unanswered idempotency keys a stopped server left; for a server alone on
    /// its store, before it serves.
    pub async fn forget_left_keys(&self) {
        match self
            .0
            .orchestrator
            .repository()
            .forget_unanswered_keys()
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                keys = n,
                "idempotency keys left unanswered by a stopped server let go; their retries run"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not look for idempotency keys left unanswered")
            }
        }
    }

    /// Lets go of the leases of the webhook deliveries a stopped server was attempting (its
    /// store's only server, at start-up): they are attempted again at once.
    pub(crate) async fn release_delivery_leases(&self) {
        let Some(webhooks) = self.webhooks() else {
            return;
        };
        match webhooks.store().release_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deliveries = n,
                "webhook deliveries left under way by a stopped server let go; they are \
                 attempted again"
            ),
            Err(e) => tracing::warn!(error = %e, "could not let go of webhook deliveries' leases"),
        }
    }

    pub(crate) fn asks(&self) -> &asks::Asks {
        &self.0.asks
    }

    pub(crate) fn feed(&self) -> &events::Feed {
        &self.0.feed
    }

    /// A slot for one more event stream, held while it is open, counted in `share` (see
    /// [`App::stream_share`]; `None`: nobody's), if the server has one left
    /// (else `TooManyStreams`) and the share is not full ([`events::streams_per_holder`]; else
    /// `CallersStreams`).
    pub(crate) fn stream_slot(
        &self,
        share: Option<String>,
    ) -> std::result::Result<events::StreamSlot, ApiError> {
        let permit = self
            .0
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams)?;
        let most = events::streams_per_holder(self.0.limits.max_connections);
        events::StreamSlot::new(permit, share, &self.0.holders, most)
            .map_err(|_| ApiError::CallersStreams(most))
    }

    /// Whose share of the streams a stream of `caller` counts in: with principals, the
    /// person's — their token's streams in one share, their board sessions' in another (so
    /// their own leaky agent does not shut their board out), however many sessions they
    /// sign in; without principals nobody can be told apart, and none.
    pub fn stream_share(caller: &auth::Caller, board: bool) -> Option<String> {
        let person = caller.principal()?.name.person();
        Some(format!(
            "{} {person}",
            if board { "board" } else { "token" }
        ))
    }

    /// How many event streams are open.
    pub(crate) fn open_streams(&self) -> usize {
        events::stream_slots(self.0.limits.max_connections)
            .saturating_sub(self.0.streams.available_permits())
    }

    /// The webhooks and their deliveries, when the store keeps them.
    pub(crate) fn webhooks(&self) -> Option<&Arc<webhooks::Webhooks>> {
        self.0.webhooks.as_ref()
    }

    /// The board's sessions, when the store keeps them.
    pub(crate) fn sessions(&self) -> Option<&Arc<dyn SessionRepository>> {
        self.0.sessions.as_ref()
    }

    /// How requests are authenticated.
    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.0.auth
    }

    /// Turns true when the server stops.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    pub(crate) fn database_probe(&self) -> &system::Cached<HealthCheck> {
        &self.0.database_probe
    }

    pub(crate) fn metrics_read(&self) -> &system::Cached<crate::metrics::StoreReading> {
        &self.0.metrics_read
    }

    /// The orchestrator behind the API.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.0.orchestrator
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.0.orchestrator.now()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    pub(crate) fn hub_probe(&self) -> &system::Cached<HealthCheck> {
        &self.0.hub_probe
    }

    /// Answers one request; never fails, every error becomes an error envelope.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id(&request);
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            peer = request.extensions().get::<Peer>().map(|peer| tracing::field::display(peer.0)),
            method = %method,
            path = %request.uri().path(),
            feature_id = tracing::field::Empty,
            principal = tracing::field::Empty,
        );
        // The route a request that runs out of time is counted under.
        let found = self.0.router.at(request.uri().path()).ok();
        let matched = found.as_ref().map(|found| *found.value);
        // Its feature, from the path, on every log line of the request: those of a refusal
        // before the handler reads the path too (a role, a token, a board's CSRF check).
        if let Some(id) = found
            .and_then(|found| found.params.get("feature_id"))
            .and_then(|raw| orchestrator_core::FeatureId::parse(path_param(raw)).ok())
        {
            span.record("feature_id", id.as_str());
        }
        // Errors on the board's paths are pages, wherever they are met.
        let page = board::owns(request.uri().path());
        let failed = move |error: ApiError| {
            if page {
                board::error_page(error)
            } else {
                error.into_response()
            }
        };
        // Whether the request runs on past its deadline (a keyed POST whose body was read,
        // see `route`): its late answer then says so. Only a keyed POST may.
        let runs_on = (request.method() == Method::POST
            && request.headers().contains_key(idempotency::KEY_HEADER))
        .then(|| Arc::new(AtomicBool::new(false)));
        async move {
            // Counts the request as 499 should its client go away before the answer (hyper
            // then drops this future): during a stall those are the requests that would have
            // been 503s, and they should show.
            let mut abandoned = Abandoned {
                metrics: &self.0.metrics,
                closing: &self.0.closing,
                route: matched,
                method: &method,
                started,
                answered: false,
            };
            // A panic in a handler (a bug) is answered 500 and counted like any other
            // answer, rather than resetting the connection unanswered and uncounted.
            let answered = tokio::time::timeout(
                self.0.limits.request_timeout,
                AssertUnwindSafe(self.route(request, runs_on.clone())).catch_unwind(),
            );
            let (route, mut response) = match answered.await {
                Ok(Ok(Ok((route, response)))) => (route, response),
                Ok(Ok(Err((route, error)))) => (route, failed(error).map(Either::Left)),
                Ok(Err(panic)) => (
                    matched,
                    failed(ApiError::panicked(&*panic)).map(Either::Left),
                ),
                Err(_) => {
                    let late = if runs_on.is_some_and(|r| r.load(Ordering::Relaxed)) {
                        ApiError::KeyedDeadline
                    } else {
                        ApiError::Deadline
                    };
                    (matched, failed(late).map(Either::Left))
                }
            };
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
            let label = route.map_or("unmatched", Route::pattern);
            abandoned.answered = true;
            self.0.metrics.request(label, &method, status, elapsed);
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert("x-request-id", value);
            }
            // Every answer is taken as the type it says, and one that does not say how long
            // it may be kept (the API's JSON: a feature's state, a webhook's secret) is kept
            // by no cache, the browser's included.
            headers
                .entry(http::header::X_CONTENT_TYPE_OPTIONS)
                .or_insert(HeaderValue::from_static("nosniff"));
            headers
                .entry(http::header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static("no-store"));
            tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1e3, "answered");
            response
        }
        .instrument(span)
        .await
    }
}

/// A request under way, counted (status 499, as proxies call it) and logged if it is dropped
/// unanswered: its client closed the connection first. One cut off because the server is
/// stopping (past the drain's wait) is logged as such, and not counted.
struct Abandoned<'a> {
    metrics: &'a Metrics,
    closing: &'a tokio::sync::watch::Sender<bool>,
    route: Option<Route>,
    method: &'a Method,
    started: Instant,
    answered: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        if *self.closing.borrow() {
            tracing::info!(
                latency_ms = elapsed.as_secs_f64() * 1e3,
                "cut off: the server stopped before the answer"
            );
            return;
        }
        let label = self.route.map_or("unmatched", Route::pattern);
        self.metrics.request(label, self.method, 499, elapsed);
        tracing::info!(
            status = 499,
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "abandoned: the client went away before the answer"
        );
    }
}

/// A path parameter as written, percent-decoded: `rk%2D1` is `rk-1`, as RFC 3986 has it. One
/// that decodes to no UTF-8 is left as written, for its handler to refuse.
fn path_param(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_or_else(|_| raw.to_owned(), std::borrow::Cow::into_owned)
}

impl App {
    /// Finds the route, checks method and token, and dispatches; sets `runs_on` (given for a
    /// keyed POST) once the request is handed to a task that runs to its end whether or not
    /// its answer is waited for (its body read).
    async fn route(
        &self,
        request: Request<Incoming>,
        runs_on: Option<Arc<AtomicBool>>,
    ) -> Result<(Option<Route>, Response<Body>), (Option<Route>, ApiError)> {
        let path = request.uri().path().to_owned();
        let (route, params) = match self.0.router.at(&path) {
            Ok(found) => (
                *found.value,
                found
                    .params
                    .iter()
                    .map(|(_, v)| path_param(v))
                    .collect::<Vec<_>>(),
            ),
            Err(_) => return Err((None, ApiError::NotFound(path))),
        };
        let fail = |e: ApiError| (Some(route), e);
        if !route.methods().contains(request.method()) {
            let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
            return Err(fail(ApiError::MethodNotAllowed {
                method: request.method().to_string(),
                allow: allow.join(", "),
            }));
        }
        // Before anything else is read: a page that rebound a name of its own to this open
        // server is refused (the public routes answer any name, as with a token, and so do
        // the board's stylesheet and script, so that the refusal's page is readable).
        if !self.0.auth.required() && !route.is_public() && route != Route::BoardAsset {
            self.0
                .hosts
                .check(request.headers(), request.uri())
                .map_err(fail)?;
        }
        if route.is_board() {
            let (parts, body) = request.into_parts();
            let body = if parts.method == Method::POST {
                body::read_body(&parts.headers, body, &self.0.bodies, body::FORM_LIMIT)
                    .await
                    .map_err(fail)?
            } else {
                Bytes::new()
            };
            let param = params.first().map_or("", String::as_str);
            let response = board::handle(self, route, param, &parts, &body).await;
            return Ok((Some(route), response.map(Either::Left)));
        }
        let (parts, body) = request.into_parts();
        // The board's session, when the board's script calls: it acts as its signed-in person.
        let mut board_session = None;
        let caller = if route.is_public() {
            auth::Caller::Trusted
        } else if self.0.auth.required()
            && !parts.headers.contains_key(http::header::AUTHORIZATION)
            && board::has_session_cookie(&parts.headers)
        {
            let (caller, key) = board::api_caller(self, &parts).await.map_err(fail)?;
            board_session = Some(key);
            caller
        } else {
            self.0.auth.authenticate(&parts.headers).map_err(fail)?
        };
        // Who called, on every line the request logs (a refused approval among them).
        if let Some(principal) = caller.principal() {
            tracing::Span::current().record("principal", principal.name.as_str());
        }
        if route == Route::EventStream {
            let share = App::stream_share(&caller, board_session.is_some());
            let holder = match (board_session, caller.principal()) {
                (Some(key), _) => Some(events::Holder::Session(key)),
                (None, Some(principal)) => {
                    auth::Auth::token_sha256(&parts.headers).map(|token_sha256| {
                        events::Holder::Principal {
                            token_sha256,
                            name: principal.name.clone(),
                        }
                    })
                }
                (None, None) => None,
            };
            let response =
                events::stream_events(self, &parts.headers, parts.uri.query(), holder, share)
                    .await
                    .map_err(fail)?;
            return Ok((Some(route), response.map(Either::Right)));
        }
        if parts.method != Method::POST {
            let response = self
                .dispatch(route, &params, &caller, &parts, &Bytes::new(), None)
                .await
                .map_err(fail)?;
            return Ok((Some(route), response.map(Either::Left)));
        }
        if let Some(action) = route.post_action() {
            caller.may(action).map_err(fail)?;
        }
        // Before the key too: a request sent without its JSON content type, then again with
        // it, is one request (same key, same body), and its first answer must not be kept.
        if route.reads_json() {
            body::require_json(&parts.headers).map_err(fail)?;
        }
        if route == Route::Advance {
            workflows::if_match_once(&parts.headers).map_err(fail)?;
        }
        let key = idempotency::key(&parts.headers, &caller).map_err(fail)?;
        let body = body::read_body(&parts.headers, body, &self.0.bodies, body::BODY_LIMIT)
            .await
            .map_err(fail)?;
        if route == Route::Advance {
            workflows::may_advance(&caller, &parts.headers, &body).map_err(fail)?;
        }
        let response = match key {
            None => {
                self.dispatch(route, &params, &caller, &parts, &body, None)
                    .await
            }
            Some(key) => {
                // Run to the end even if the client goes away, so the answer is kept and its
                // retry gets it (instead of a key held by nobody until its lease ends).
                let app = self.clone();
                let fingerprint = idempotency::fingerprint(&parts, &body);
                let run = async move {
                    idempotency::run(&app, key, &fingerprint, |claimed| {
                        app.dispatch(route, &params, &caller, &parts, &body, Some(claimed))
                    })
                    .await
                };
                if let Some(runs_on) = &runs_on {
                    runs_on.store(true, Ordering::Relaxed);
                }
                tokio::spawn(run.in_current_span())
                    .await
                    .unwrap_or_else(|e| {
                        Err(ApiError::Internal(format!("a request task failed: {e}")))
                    })
            }
        };
        let response = response.map_err(fail)?;
        if response.status().is_success() {
            // It may have written events: this server's streams get them without the poll's wait.
            self.feed().wake();
        }
        Ok((Some(route), response.map(Either::Left)))
    }

    async fn dispatch(
        &self,
        route: Route,
        params: &[String],
        caller: &auth::Caller,
        parts: &http::request::Parts,
        body: &Bytes,
        claimed: Option<idempotency::Claimed>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let param = params.first().map_or("", String::as_str);
        match route {
            Route::Root => system::get_service_info().await,
            Route::Health => system::get_health(self).await,
            Route::Metrics => system::get_metrics(self).await,
            Route::OpenApi => Ok(handlers::docs::get_openapi(&self.0.docs)),
            Route::Docs => self.0.docs.docs_page(),
            Route::DocsFile => self.0.docs.swagger_file(param),
            Route::Redoc => Ok(self.0.docs.redoc()),
            Route::Start if parts.method == Method::POST => {
                workflows::create_workflow(self, caller, &parts.headers, body, claimed).await
            }
            Route::Start => workflows::get_workflow_named_start(self).await,
            Route::Workflow => workflows::get_workflow(self, param).await,
            Route::Advance => {
                workflows::advance_workflow(self, caller, param, &parts.headers, body, claimed)
                    .await
            }
            Route::History => workflows::get_history(self, param).await,
            Route::Consultations if parts.method == Method::POST => {
                consultations::create_consultation(
                    self,
                    caller,
                    param,
                    &parts.headers,
                    body,
                    claimed,
                )
                .await
            }
            Route::Consultations => consultations::list_consultations(self, param).await,
            Route::Respond => {
                let consultation = params.get(1).map_or("", String::as_str);
                consultations::respond_to_consultation(
                    self,
                    caller,
                    param,
                    consultation,
                    &parts.headers,
                    body,
                    claimed,
                )
                .await
            }
            Route::Workflows => workflows::list_workflows(self, parts.uri.query()).await,
            Route::Summary => workflows::get_summary(self).await,
            Route::Events => events::list_events(self, parts.uri.query()).await,
            Route::Webhooks if parts.method == Method::POST => {
                handlers::webhooks::create_webhook(self, caller, &parts.headers, body, claimed)
                    .await
            }
            Route::Webhooks => handlers::webhooks::list_webhooks(self, caller).await,
            Route::Webhook if parts.method == Method::DELETE => {
                handlers::webhooks::delete_webhook(self, caller, param).await
            }
            Route::Webhook => handlers::webhooks::get_webhook(self, caller, param).await,
            Route::Deliveries => {
                handlers::webhooks::list_deliveries(self, caller, param, parts.uri.query()).await
            }
            Route::Redeliver => {
                let delivery = params.get(1).map_or("", String::as_str);
                handlers::webhooks::redeliver(self, caller, param, delivery, claimed).await
            }
            // Answered by `route`: the stream's body is a stream, the board answers in HTML.
            Route::EventStream
            | Route::Board
            | Route::BoardFeature
            | Route::BoardSession
            | Route::BoardSignOut
            | Route::BoardAsset => Err(ApiError::Internal(format!(
                "{} reached dispatch",
                route.pattern()
            ))),
        }
    }
}

/// The caller's `x-request-id` when it is short and printable, else a new one: this process's
/// random prefix and a counter, unique without a system call per request.
fn request_id(request: &Request<Incoming>) -> String {
    static PREFIX: std::sync::LazyLock<u32> =
        std::sync::LazyLock::new(|| uuid::Uuid::new_v4().as_u128() as u32);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || {
                let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{:08x}{n:012x}", *PREFIX)
            },
            str::to_owned,
        )
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (up to 30 s) and webhook attempts in flight end (up to 10 s),
/// lets consultations asked in the background finish
/// (up to 10 s; the rest become `failed`, `interrupted`), closes storage (on SQLite: the
/// write-ahead log is emptied into the database file), and returns.
///
/// At most `app.limits().max_connections` connections are served at once; while that many
/// are open, new ones wait in the listen backlog.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(conn::MAX_HEAD);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(app.limits().max_connections));
    let write_timeout = app.limits().write_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    let (stop_housekeeping, housekeeping_stopped) = tokio::sync::watch::channel(false);
    let sweep = {
        let (app, stopped) = (app.clone(), housekeeping_stopped.clone());
        tokio::spawn(async move {
            supervised(Worker::AsksSweep, app.metrics(), stopped, || {
                app.asks().sweep(app.orchestrator().clone())
            })
            .await;
        })
    };
    let housekeeping = tokio::spawn(housekeeping::run(app.clone(), housekeeping_stopped.clone()));
    let deliveries = {
        let (app, stopped) = (app.clone(), housekeeping_stopped.clone());
        tokio::spawn(async move {
            supervised(Worker::Webhooks, app.metrics(), stopped.clone(), || {
                webhooks::run(app.clone(), stopped.clone())
            })
            .await;
        })
    };
    let feed = {
        let (app, stopped) = (app.clone(), housekeeping_stopped.clone());
        tokio::spawn(async move {
            supervised(Worker::EventFeed, app.metrics(), stopped.clone(), || {
                app.feed().run(app.orchestrator().clone(), stopped.clone())
            })
            .await;
        })
    };
    // The connections' tasks, so a drain that runs out of time can close them.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Finished connections' results are not kept.
        while connections.try_join_next().is_some() {}
        let accepted = async {
            // A closed semaphore cannot happen: nobody closes it.
            let slot = slots.clone().acquire_owned().await.ok();
            (slot, listener.accept().await)
        };
        let (slot, stream) = tokio::select! {
            (slot, accepted) = accepted => match accepted {
                Ok((stream, peer)) => (slot, (stream, peer)),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let stopping = app.closing();
        let app = app.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            let app = app.clone();
            // Who called, for the request's log lines (`peer`).
            request.extensions_mut().insert(Peer(peer));
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let io = TokioIo::new(conn::EnvelopeIo::new(stream, write_timeout).stopping_with(stopping));
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    // Streams never end by themselves: end them, so their connections can close.
    app.0.closing.send_replace(true);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.0.limits.drain_timeout) => {
            // Their requests end unanswered, as a crash would leave them (a consultation
            // still being asked is failed as interrupted below, not answered `asking`).
            while connections.try_join_next().is_some() {}
            tracing::warn!(
                connections = connections.len(),
                "drain timed out; closing the connections left"
            );
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
    }
    stop_housekeeping.send_replace(true);
    let _ = housekeeping.await;
    let _ = feed.await;
    // Attempts in flight finish (each within its timeout) and their outcomes are stored.
    let _ = deliveries.await;
    app.asks().drain().await;
    let _ = sweep.await;
    app.orchestrator().repository().close().await;
}
