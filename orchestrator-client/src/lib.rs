//! A typed async client for the orchestrator's HTTP API.
//!
//! Every body is a type from `orchestrator_core::api`, the same types the server encodes, so
//! client and server cannot drift apart. Errors the server answers come back as
//! [`ClientError::Api`] with the server's error body.
//!
//! ```no_run
//! # async fn demo() -> Result<(), orchestrator_client::ClientError> {
//! use orchestrator_client::Client;
//! use orchestrator_core::api::{AdvanceRequest, StartWorkflowRequest};
//!
//! let client = Client::new("http://localhost:8000")?;
//! let started = client
//!     .start_workflow(&StartWorkflowRequest::new("008-services-architecture", "Refactor to microservices"))
//!     .await?;
//! let gate = client
//!     .advance_workflow(&started.feature_id, &AdvanceRequest::new("agent_complete"))
//!     .await?;
//! println!("{} is at {}", gate.feature_id, gate.state);
//! # Ok(())
//! # }
//! ```
#![warn(clippy::unwrap_used)]

#[cfg(feature = "cli")]
pub mod cli;
mod events;
pub mod webhooks;

pub use events::EventStream;
/// The domain and wire types this client's calls take and return, at the version it was
/// built with.
pub use orchestrator_core;
/// The HTTP client underneath ([`ClientBuilder::http_client`], [`ClientError::Transport`]).
pub use reqwest;

use std::time::{Duration, Instant};

use orchestrator_core::api::{
    AdvanceRequest, ApiErrorBody, ErrorCode, ErrorEnvelope, EventsQuery, EventsResponse,
    HealthResponse, HistoryResponse, ListWorkflowsParams, ListWorkflowsResponse, ServiceInfo,
    StartWorkflowRequest, SummaryResponse, WorkflowResponse, paths,
};
use orchestrator_core::api::{ConsultRequest, ConsultationsResponse, RespondRequest};
use orchestrator_core::{Consultation, ConsultationId, FeatureId};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error envelope. Shown with its details and request id.
    #[error(
        "{status}: {} ({wire_code}){}{}",
        body.message,
        details_shown(body.details.as_deref()),
        request_id.as_deref().map(|id| format!(" [request {id}]")).unwrap_or_default()
    )]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's error body. A code this version does not know (from a newer server)
        /// is [`ErrorCode::Unknown`] here; `wire_code` keeps it as sent.
        body: ApiErrorBody,
        /// The code as the server spelled it.
        wire_code: String,
        /// The answer's `x-request-id`: the id the server's log records the request under.
        request_id: Option<String>,
    },
    /// The server answered with an error that is not an error envelope (a proxy's page, say).
    #[error("{status}: unexpected body: {text}")]
    UnexpectedBody {
        /// The HTTP status.
        status: StatusCode,
        /// The body, as text (its first 4 KiB, marked where cut).
        text: String,
    },
    /// The request did not complete: connection refused, timeout, TLS. Shown with its causes
    /// (reqwest's own message says only which URL failed).
    #[error("transport error: {}", with_causes(.0))]
    Transport(#[from] reqwest::Error),
    /// A success answer whose body does not decode into the expected type.
    #[error("cannot decode the {status} answer: {source}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What did not fit.
        source: serde_json::Error,
    },
    /// An event of the stream this version cannot read (a type a newer server added): passed
    /// over, the stream goes on after it. `id` is the message's event id, to look it up
    /// later (`GET /events?after=<id - 1>&limit=1` answers it as JSON).
    #[error(
        "cannot read event {} of the stream: {source}",
        id.map_or_else(|| "(without an id)".to_owned(), |id| id.to_string())
    )]
    UnreadableEvent {
        /// The event's id, if its message had one.
        id: Option<u64>,
        /// What did not fit.
        source: serde_json::Error,
    },
    /// The base URL is not a usable http(s) URL (shown without any user name and password in
    /// it).
    #[error(
        "invalid base url '{0}': a usable http:// or https:// URL without a query or fragment, such as http://localhost:8000"
    )]
    InvalidBaseUrl(String),
    /// The token holds a character an HTTP header cannot carry (a control character, such as
    /// the line ending of a file it was read from). Not shown.
    #[error("the token holds a character a header cannot carry (a line ending?)")]
    InvalidToken,
    /// A server took longer than `waited` to answer a request for an event stream (it was
    /// out of connections, or the network dropped the way to it); the stream tries again.
    #[error("the server did not answer the stream's request within {waited:?}")]
    NoAnswer {
        /// How long the client waited.
        waited: Duration,
    },
    /// An event stream sent a message longer than the client holds (the server's are far
    /// shorter: this is not an orchestrator, or something between garbles the stream). The
    /// stream ends.
    #[error("an event stream message grew past {limit} bytes without ending")]
    MessageTooLong {
        /// The most bytes one message may hold.
        limit: usize,
    },
}

impl ClientError {
    /// The server's error code, when it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// The server's error body (code, message, details), when it sent one.
    pub fn body(&self) -> Option<&ApiErrorBody> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::UnexpectedBody { status, .. } => {
                Some(*status)
            }
            ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 404: no such workflow, consultation, webhook or delivery (or route);
    /// [`ClientError::code`] says which.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// Any 409: the workflow exists, the trigger is not allowed, the version moved on, the
    /// gate is blocked, an approval is the author's own or given twice, the workflow is not
    /// active, an escalation is answered already, the idempotency key is in use, the event
    /// cursor is ahead…; match on [`ClientError::code`] before treating one as a version race.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// A 400: the request broke a rule or was not JSON.
    pub fn is_bad_request(&self) -> bool {
        self.status() == Some(StatusCode::BAD_REQUEST)
    }

    /// A 401: the token is missing or wrong.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
    }

    /// A 403: the caller may not do this (an agent deciding at the gate, a role that does not
    /// allow it, an admin's gate policy asked for by someone else); the message says which.
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(StatusCode::FORBIDDEN)
    }

    /// A 410 `EVENTS_EXPIRED`: the events after the cursor were deleted by retention; read on
    /// from the oldest kept (`after` unset) or start from now.
    pub fn is_gone(&self) -> bool {
        self.status() == Some(StatusCode::GONE)
    }

    /// The error code as the server spelled it (also a code this version does not know).
    pub fn wire_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { wire_code, .. } => Some(wire_code),
            _ => None,
        }
    }

    /// The answer's `x-request-id`, when the server sent an error envelope: the id its log
    /// records the request under, to quote when reporting the failure.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long opening a connection may take (the whole request has its own bound).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries of a call, unless the builder says otherwise.
const DEFAULT_RETRIES: u32 = 2;

/// The header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The pause before retry `attempt` (1, 2, …): what the server asked for (at most 5 s), else
/// 200 ms doubling, up to [`MAX_BACKOFF`].
fn backoff(attempt: u32, asked: Option<Duration>) -> Duration {
    asked.map_or_else(
        || (Duration::from_millis(200) * 2_u32.saturating_pow(attempt - 1)).min(MAX_BACKOFF),
        |asked| asked.min(Duration::from_secs(5)),
    )
}

/// The longest pause between two attempts of one call, however many retries it may make.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a call whose earlier attempt the server is still answering
/// (`IDEMPOTENCY_KEY_IN_USE`) keeps asking for that attempt's answer. The server holds such a
/// key for its request bound plus 5 s at most (65 s by default; longer when the Agent Hub's
/// wait is raised), then lets the next attempt take it over; this only bounds a server that
/// would say "in use" for ever.
const IN_USE_PATIENCE: Duration = Duration::from_secs(600);

/// The shortest pause before asking again about a call whose earlier attempt is still being
/// answered.
const IN_USE_PAUSE: Duration = Duration::from_millis(200);

/// The pause before retrying after `response`, if it is worth retrying: 503, or 409
/// `IDEMPOTENCY_KEY_IN_USE` (the same call's earlier attempt is still being answered).
fn retry_after(response: &reqwest::Response, attempt: u32) -> Option<Duration> {
    let status = response.status();
    let in_use = status == StatusCode::CONFLICT
        && response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .is_some();
    if status != StatusCode::SERVICE_UNAVAILABLE && !in_use {
        return None;
    }
    Some(backoff(attempt, asked_pause(response)))
}

/// The pause an answer's `Retry-After` asks for (whole seconds; a date is not read).
fn asked_pause(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The id the server's log records the request under (`x-request-id`).
fn request_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error an unsuccessful answer's body says: the server's envelope, or the body as text.
fn error_from(status: StatusCode, request_id: Option<String>, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorEnvelope>(bytes) {
        Ok(envelope) => ClientError::Api {
            status,
            wire_code: wire_code(bytes).unwrap_or_else(|| envelope.error.code.as_str().into()),
            body: envelope.error,
            request_id,
        },
        Err(_) => ClientError::UnexpectedBody {
            status,
            text: shown_text(bytes),
        },
    }
}

/// How much of a body that is no error envelope (a proxy's page) an error keeps.
const SHOWN_BODY: usize = 4096;

/// Whether a `Content-Type` names JSON (`application/json`, or a `+json` type).
fn is_json(content_type: &str) -> bool {
    let media = media_type(content_type);
    media == "application/json" || media.ends_with("+json")
}

/// The media type a `Content-Type` names: lower case, without its parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The start of `bytes` as text, up to [`SHOWN_BODY`] bytes and marked where cut.
fn shown_text(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_BODY {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // Cut before a character the limit would split.
    let kept = &bytes[..SHOWN_BODY];
    let kept = match std::str::from_utf8(kept) {
        Err(e) if e.error_len().is_none() => &kept[..e.valid_up_to()],
        _ => kept,
    };
    let mut text = String::from_utf8_lossy(kept).into_owned();
    text.push_str(&format!("… ({} bytes in all)", bytes.len()));
    text
}

/// The error code of an error envelope, as its text spells it.
fn wire_code(envelope: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Code,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    serde_json::from_slice::<Envelope>(envelope)
        .ok()
        .map(|envelope| envelope.error.code)
}

/// An error body's details, as the error's text shows them.
fn details_shown(details: Option<&[String]>) -> String {
    match details {
        Some(details) if !details.is_empty() => format!(": {}", details.join("; ")),
        _ => String::new(),
    }
}

/// `error` and each of its causes, `: ` between them, a cause that repeats the one before it
/// left out.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !last.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        last = said;
        cause = next.source();
    }
    text
}

/// What [`Client::start_workflow_reporting`] found: the workflow, and whether the call made it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome {
    /// The workflow as it stands.
    pub workflow: WorkflowResponse,
    /// True when this call created it (201); false when `use_existing` found it (200,
    /// unchanged).
    pub created: bool,
}

/// A client of one orchestrator server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
    retries: u32,
    /// How long a call asks again while the server says its earlier attempt is still being
    /// answered ([`IN_USE_PATIENCE`]; shorter in tests).
    in_use_patience: Duration,
    /// The key every POST sends; a new one per call when `None`.
    idempotency_key: Option<String>,
}

/// Builds a [`Client`] with a timeout, a token, or a caller's own `reqwest::Client`.
#[derive(Default)]
pub struct ClientBuilder {
    base_url: String,
    timeout: Option<Duration>,
    token: Option<String>,
    http: Option<reqwest::Client>,
    retries: Option<u32>,
}

/// What a token shows in `Debug`: whether there is one, never the token.
fn token_shown(token: Option<&String>) -> &'static str {
    token.map_or("none", |_| "<redacted>")
}

/// Whether `url` names this machine ([`orchestrator_core::webhook::is_this_machine`]): proxy
/// settings in the environment then do not apply.
fn on_this_machine(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(orchestrator_core::webhook::is_this_machine)
        })
        .unwrap_or(false)
}

/// `url` as it may be shown: a user name and password in it (`https://u:pw@host`) are left
/// out. Of what is no http(s) URL (a scheme forgotten, a `/` in a password), everything up
/// to its last `@` is.
fn url_shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "http" | "https") => {
            if parsed.username().is_empty() && parsed.password().is_none() {
                return url.to_owned();
            }
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string().replacen("://", "://…@", 1)
        }
        _ => match url.rfind('@') {
            Some(at) => format!("…@{}", &url[at + 1..]),
            None => url.to_owned(),
        },
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &url_shown(&self.base_url))
            .field("token", &token_shown(self.token.as_ref()))
            .field("retries", &self.retries)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &url_shown(&self.base_url))
            .field("timeout", &self.timeout)
            .field("token", &token_shown(self.token.as_ref()))
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The server's base URL, e.g. `http://localhost:8000`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// A timeout for each whole request (default 60 s, the server's own request bound with its
    /// default settings, so a consultation's wait for the hub fits); ignored with
    /// [`ClientBuilder::http_client`]. Opening a connection is bounded apart, by 10 s: an
    /// address where nothing answers (a host that drops packets) fails each try that soon,
    /// not after the whole request's time. A server whose `REQUEST_TIMEOUT_SECONDS` or
    /// `AGENT_HUB_WAIT_SECONDS` is raised may take longer to answer a consultation: give its
    /// clients a timeout at least as long as that server's request bound.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bearer token to send, for a server started with `ORCHESTRATOR_API_TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How often a call is retried after a failure worth retrying (default 2): the server could
    /// not be reached, dropped the connection or did not answer in time (its answer's body cut
    /// off on the way included: the answer is asked for again), it answered 503 (it
    /// honours `Retry-After` up to 5 s), or a proxy in front of it answered 502 or 504 with a
    /// page of its own (the server's own 502, an Agent Hub failure, is not retried). A POST
    /// carries an `Idempotency-Key` (a new UUID per call, the same on every attempt), so a
    /// retried start, advance or question is carried out once and its first answer comes back.
    /// While the server says an earlier attempt of the call is still being answered
    /// (`IDEMPOTENCY_KEY_IN_USE`: a question the Agent Hub takes its time with, an attempt cut
    /// off by this client's timeout), the call asks again every second or so for that answer,
    /// whatever its retries (up to ten minutes; the server lets a key go well before). A 503
    /// about the Agent Hub (`AGENT_HUB_UNAVAILABLE`) is returned at once: the server keeps
    /// nothing of it, so a retry would put the question to the hub again. 0 turns retries off.
    ///
    /// Retries reuse the call's key; a call made again by the caller after an error gets a
    /// new one. A write that must be carried out once across the caller's own attempts (after
    /// a transport error, a 5xx or `IDEMPOTENCY_KEY_IN_USE`, it may have been) is made through
    /// [`Client::with_idempotency_key`] with a key of the caller's, repeated with that key.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Uses the caller's `reqwest::Client` (its own timeouts, proxies, TLS settings). Its
    /// settings are taken as they are: the built-in client's refusal to follow redirects (the
    /// API never redirects, and following one would turn a write into a GET of another page),
    /// its connect bound and its direct calls to this machine are for the caller to set
    /// (`redirect(Policy::none())`, `connect_timeout`, `no_proxy`).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the client.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), orchestrator_client::ClientError> {
    /// use std::time::Duration;
    /// let client = orchestrator_client::Client::builder()
    ///     .base_url("http://localhost:8000")
    ///     .timeout(Duration::from_secs(90))
    ///     .token("s3cret")
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn build(self) -> Result<Client> {
        // Refused here, not as a transport failure of the first call (which would read as a
        // server that could not be reached, a write as one that may have been made). Spaces
        // around it (an environment variable's) are no part of it; a query or a fragment
        // would end up before every path. Kept as parsed: what the parser passes over (a tab
        // inside) is not joined to every path.
        let given = self.base_url.trim();
        let base_url = reqwest::Url::parse(given)
            .ok()
            .filter(|url| {
                (given.starts_with("http://") || given.starts_with("https://"))
                    && url.has_host()
                    && url.query().is_none()
                    && url.fragment().is_none()
            })
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
            .ok_or_else(|| ClientError::InvalidBaseUrl(url_shown(&self.base_url)))?;
        if let Some(token) = &self.token
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return Err(ClientError::InvalidToken);
        }
        let http = match self.http {
            Some(http) => http,
            // The API never redirects: one is something in between (a sign-in proxy), and
            // following it would turn a write into a GET of another page.
            None => {
                let mut http = reqwest::Client::builder();
                if on_this_machine(&base_url) {
                    http = http.no_proxy();
                }
                http.timeout(self.timeout.unwrap_or(Duration::from_secs(60)))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?
            }
        };
        Ok(Client {
            http,
            base_url,
            token: self.token,
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            in_use_patience: IN_USE_PATIENCE,
            idempotency_key: None,
        })
    }
}

impl Client {
    /// A client of the server at `base_url`, with default settings.
    ///
    /// ```no_run
    /// let client = orchestrator_client::Client::new("http://localhost:8000")?;
    /// # Ok::<(), orchestrator_client::ClientError>(())
    /// ```
    pub fn new(base_url: impl Into<String>) -> Result<Self> {
        Self::builder().base_url(base_url).build()
    }

    /// A builder, for a timeout, a token, or a caller's `reqwest::Client`.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// This client, sending `key` as the `Idempotency-Key` of its writes instead of a new key
    /// per call: for a write that must be carried out once even when the caller itself is
    /// restarted and sends it again (the server keeps a key's answer for 24 hours and gives it
    /// to a repeat of the same request). Use the returned client for that one write; the key
    /// is 1–255 printable ASCII characters, spaces inside only: the server answers 400 to
    /// others, but a control character fails here, before anything is sent, as a
    /// [`ClientError::Transport`], and spaces around a key are dropped on the way (HTTP's
    /// rule), so the server keeps the key without them.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::AdvanceRequest;
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// let approve = AdvanceRequest::new("human_approved");
    /// // Sent again after a crash, the same key gets the first answer back.
    /// client
    ///     .with_idempotency_key("approve-008-round-1")
    ///     .advance_workflow(&id, &approve)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_idempotency_key(&self, key: impl Into<String>) -> Client {
        Client {
            idempotency_key: Some(key.into()),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `builder`, again after failures worth retrying (see [`ClientBuilder::retries`]).
    async fn send<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        self.send_counted(builder).await.0
    }

    /// [`Client::send`], saying too whether an earlier attempt may have been carried out (it
    /// timed out or its connection dropped, or the server answered 503 or "in use" and was
    /// retried).
    pub(crate) async fn send_counted<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> (Result<T>, bool) {
        let (received, maybe_done) = self.respond(builder).await;
        (received.and_then(Received::decode), maybe_done)
    }

    /// Sends `builder`, again after failures worth retrying, until a successful answer, read
    /// whole, or an error; and whether an earlier attempt may have been carried out.
    async fn respond(&self, builder: RequestBuilder) -> (Result<Received>, bool) {
        let mut attempt = 0;
        // The first failure after which the request may have been carried out (`Some`: an
        // earlier attempt may have been). A call whose last attempt then finds no server (it
        // stopped, and has not started again) fails with it, so that a refused connection
        // always means nothing was sent.
        let mut uncertain: Option<ClientError> = None;
        // Since when the server has said, answer after answer, that the call's earlier attempt
        // is still being answered (`None` once it says anything else).
        let mut in_use_since: Option<Instant> = None;
        loop {
            let maybe_done = uncertain.is_some();
            // A call whose earlier attempt is still under way is asked about again, beyond
            // its retries (up to `in_use_patience`), until that attempt's answer comes back:
            // giving up would leave the caller to send it again under a new key, and so carry
            // it out twice.
            let may_retry = match in_use_since {
                Some(since) => since.elapsed() < self.in_use_patience,
                None => attempt < self.retries,
            };
            let again = may_retry.then(|| builder.try_clone()).flatten();
            let Some(again) = again else {
                let answer = match builder.send().await {
                    Ok(response) => match self.successful(response).await {
                        Ok(response) => Received::read(response).await.map_err(Into::into),
                        Err(error) => Err(error),
                    },
                    Err(e) if e.is_connect() => Err(uncertain.unwrap_or_else(|| e.into())),
                    Err(e) => Err(e.into()),
                };
                return (answer, maybe_done);
            };
            // This retry's number; counted once the server says anything but "in use".
            let retry = attempt + 1;
            let in_use = in_use_since.take();
            let pause = match again.send().await {
                Err(e) if e.is_connect() => backoff(retry, None),
                // No answer in time, or the connection dropped (a replica that stopped): the
                // request may have been carried out, and its retry is safe (a read, a write
                // with its key, a delete that treats "not found" as done).
                Err(e) if e.is_timeout() || e.is_request() => {
                    uncertain.get_or_insert(e.into());
                    backoff(retry, None)
                }
                Err(e) => return (Err(e.into()), maybe_done),
                // A proxy's 502 or 504 (no error envelope): the replica behind it stopped or
                // did not answer, so the request may have been carried out, and its retry is
                // as safe as after a dropped connection. The server's own 502 (the Agent Hub
                // failed: nothing stored) is returned.
                Ok(response)
                    if matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    let error = self.error_of(response).await;
                    if !matches!(error, ClientError::UnexpectedBody { .. }) {
                        return (Err(error), maybe_done);
                    }
                    uncertain.get_or_insert(error);
                    backoff(retry, None)
                }
                Ok(response) => match retry_after(&response, retry) {
                    Some(pause) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        let error = self.error_of(response).await;
                        if error.code() == Some(ErrorCode::AgentHubUnavailable) {
                            return (Err(error), maybe_done);
                        }
                        uncertain.get_or_insert(error);
                        pause
                    }
                    Some(pause) => {
                        // IDEMPOTENCY_KEY_IN_USE: not counted as a retry (see `may_retry`),
                        // and never asked again at once, whatever `Retry-After` says.
                        let error = self.error_of(response).await;
                        uncertain.get_or_insert(error);
                        in_use_since = Some(in_use.unwrap_or_else(Instant::now));
                        pause.max(IN_USE_PAUSE)
                    }
                    None => match self.successful(response).await {
                        Ok(response) => match Received::read(response).await {
                            Ok(received) => return (Ok(received), maybe_done),
                            // The answer was cut off on its way (a timeout, a dropped
                            // connection; reqwest says "decode" for a body that ended
                            // early): the request was carried out, and its answer is
                            // asked for again — a write's key gives back the one it kept (a
                            // new webhook's secret is in no other answer).
                            Err(e) if e.is_timeout() || e.is_body() || e.is_decode() => {
                                uncertain.get_or_insert(e.into());
                                backoff(retry, None)
                            }
                            Err(e) => return (Err(e.into()), maybe_done),
                        },
                        Err(error) => return (Err(error), maybe_done),
                    },
                },
            };
            if in_use_since.is_none() {
                attempt = retry;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// `response` if it is a success, else the error it says.
    async fn successful(&self, response: reqwest::Response) -> Result<reqwest::Response> {
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.error_of(response).await)
        }
    }

    /// The error an unsuccessful answer says.
    async fn error_of(&self, response: reqwest::Response) -> ClientError {
        let (status, request_id) = (response.status(), request_id(&response));
        match response.bytes().await {
            Ok(bytes) => error_from(status, request_id, &bytes),
            Err(e) => e.into(),
        }
    }

    /// POSTs `body` with an idempotency key (the client's, else a new one), so retries are
    /// carried out once.
    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.keyed_post(path, body)).await
    }

    /// A POST of `body` with an idempotency key (the client's, else a new one).
    fn keyed_post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> RequestBuilder {
        let key = self
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.request(Method::POST, path)
            .header(IDEMPOTENCY_KEY, key)
            .json(body)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    /// Starts a feature's workflow (`POST /workflow/start`). With `use_existing` set, an
    /// existing workflow is returned unchanged instead of a 409.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::StartWorkflowRequest;
    /// let workflow = client
    ///     .start_workflow(&StartWorkflowRequest::new("008-services-architecture", "Refactor to microservices"))
    ///     .await?;
    /// assert_eq!(workflow.version, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_workflow(&self, request: &StartWorkflowRequest) -> Result<WorkflowResponse> {
        Ok(self.start_workflow_reporting(request).await?.workflow)
    }

    /// [`Client::start_workflow`], saying too whether this call created the workflow (201)
    /// or, with `use_existing`, found it and left it unchanged (200). A retried call says
    /// what its first attempt did: the server replays that answer.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::StartWorkflowRequest;
    /// let mut request = StartWorkflowRequest::new("008-services-architecture", "Refactor to microservices");
    /// request.use_existing = Some(true);
    /// let started = client.start_workflow_reporting(&request).await?;
    /// if !started.created {
    ///     println!("already there, at {}", started.workflow.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_workflow_reporting(
        &self,
        request: &StartWorkflowRequest,
    ) -> Result<StartOutcome> {
        let builder = self.keyed_post(paths::WORKFLOW_START, request);
        let received = self.respond(builder).await.0?;
        let created = received.status == StatusCode::CREATED;
        let workflow = received.decode()?;
        Ok(StartOutcome { workflow, created })
    }

    /// Reads a workflow (`GET /workflow/{feature_id}`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// match client.get_workflow(&id).await {
    ///     Ok(workflow) => println!("{} at {}%", workflow.state, workflow.progress.percent),
    ///     Err(e) if e.is_not_found() => println!("no such feature"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_workflow(&self, feature_id: &FeatureId) -> Result<WorkflowResponse> {
        self.get(&paths::workflow(feature_id)).await
    }

    /// Applies one trigger (`POST /workflow/{feature_id}/advance`). Set `expected_version` to
    /// make it conditional: a workflow that moved on answers `VERSION_CONFLICT`.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::{AdvanceRequest, ErrorCode};
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// let mut approve = AdvanceRequest::new("human_approved");
    /// approve.actor = Some("reviewer@example.com".into());
    /// approve.expected_version = Some(2);
    /// match client.advance_workflow(&id, &approve).await {
    ///     Ok(workflow) => println!("now {}", workflow.state),
    ///     Err(e) if e.code() == Some(ErrorCode::VersionConflict) => println!("someone was faster"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn advance_workflow(
        &self,
        feature_id: &FeatureId,
        request: &AdvanceRequest,
    ) -> Result<WorkflowResponse> {
        self.post(&paths::advance(feature_id), request).await
    }

    /// A workflow's transitions, oldest first (`GET /workflow/{feature_id}/history`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// for t in client.get_history(&id).await?.transitions {
    ///     println!("#{} {} -> {} by {:?}", t.seq, t.from, t.to, t.actor);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_history(&self, feature_id: &FeatureId) -> Result<HistoryResponse> {
        self.get(&paths::history(feature_id)).await
    }

    /// One page of workflows (`GET /workflows`); pass `next_cursor` back for the next page.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::WorkflowState;
    /// use orchestrator_core::api::ListWorkflowsParams;
    /// let mut params = ListWorkflowsParams { state: Some(WorkflowState::Gate1), ..Default::default() };
    /// loop {
    ///     let page = client.list_workflows(&params).await?;
    ///     for w in &page.items {
    ///         println!("{} waits for review", w.feature_id);
    ///     }
    ///     match page.next_cursor {
    ///         Some(cursor) => params.cursor = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_workflows(
        &self,
        params: &ListWorkflowsParams,
    ) -> Result<ListWorkflowsResponse> {
        let query = params.to_query();
        if query.is_empty() {
            self.get(paths::WORKFLOWS).await
        } else {
            self.get(&format!("{}?{query}", paths::WORKFLOWS)).await
        }
    }

    /// Asks the Agent Hub's experts a question for a workflow in PHASE_1, GATE_1 or PHASE_2
    /// (`POST /workflow/{feature_id}/consultations`). A `pending_human` answer blocks the gate
    /// until a human acts on its escalation. When the hub is slower than the server's wait
    /// (`AGENT_HUB_WAIT_SECONDS`), the consultation comes back `asking` (HTTP 202; it blocks
    /// the gate too): the ask goes on at the server, and [`Client::list_consultations`] later
    /// shows how it ended (`failed` ones carry `error`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::ConsultRequest;
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// let question = ConsultRequest::new("architecture", "Should the order service own its database?");
    /// let consultation = client.create_consultation(&id, &question).await?;
    /// println!("{:?}: {:?}", consultation.status, consultation.answer);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_consultation(
        &self,
        feature_id: &FeatureId,
        request: &ConsultRequest,
    ) -> Result<Consultation> {
        self.post(&paths::consultations(feature_id), request).await
    }

    /// Answers a consultation's escalation as a human reviewer
    /// (`POST /workflow/{feature_id}/consultations/{consultation_id}/respond`): `confirm`,
    /// `correct` or `add_context` (the last two with a `response`). Returns the consultation
    /// as it stands afterwards.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client, consultation: orchestrator_core::ConsultationId) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::RespondRequest;
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// let mut answer = RespondRequest::new("correct");
    /// answer.response = Some("Use AES-GCM-SIV".to_owned());
    /// let consultation = client.respond_to_consultation(&id, &consultation, &answer).await?;
    /// println!("{:?}: {:?}", consultation.status, consultation.final_answer);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn respond_to_consultation(
        &self,
        feature_id: &FeatureId,
        consultation: &ConsultationId,
        request: &RespondRequest,
    ) -> Result<Consultation> {
        self.post(&paths::respond(feature_id, consultation), request)
            .await
    }

    /// A workflow's consultations, oldest first, pending ones refreshed from the hub
    /// (`GET /workflow/{feature_id}/consultations`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let id = "008-services-architecture".parse().expect("a valid feature id");
    /// for c in client.list_consultations(&id).await?.items {
    ///     println!("{}: {:?} -> {:?}", c.topic, c.status, c.final_answer);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_consultations(
        &self,
        feature_id: &FeatureId,
    ) -> Result<ConsultationsResponse> {
        self.get(&paths::consultations(feature_id)).await
    }

    /// How many workflows are in each state (`GET /workflows/summary`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let summary = client.get_summary().await?;
    /// println!("{} workflows", summary.total);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_summary(&self) -> Result<SummaryResponse> {
        self.get(paths::SUMMARY).await
    }

    /// A page of the event log (`GET /events`): events after `query.after` (from the oldest
    /// kept when `None`), filtered, at most `query.limit` (100 when 0). Pass the answer's
    /// `next_after` as the next `after` until it comes back equal to the `after` sent: a page
    /// may be short or empty with more after it (one cut at about 4 MiB, or a `type` filter
    /// that looked at its 10 000 ids), so an empty `items` is not the end. 410
    /// `EVENTS_EXPIRED` when retention deleted events
    /// after `after`; 409 `EVENTS_CURSOR_AHEAD` when `after` is past the newest event (the
    /// server's store was restored from an older copy, or replaced).
    ///
    /// An event this version cannot read (a type a newer server added) is left out of
    /// `items`; `next_after` still passes it, so a reader paging on never stalls at it.
    /// [`Client::list_events_reporting`] also says which were left out.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// use orchestrator_core::api::EventsQuery;
    /// let mut query = EventsQuery::default();
    /// loop {
    ///     let page = client.list_events(&query).await?;
    ///     for event in &page.items {
    ///         println!("{} {} {}", event.id, event.event_type, event.subject);
    ///     }
    ///     let next = page.next_after.parse().ok();
    ///     if next == query.after || next.is_none() {
    ///         break; // the end of the log, for now
    ///     }
    ///     query.after = next;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_events(&self, query: &EventsQuery) -> Result<EventsResponse> {
        Ok(self.list_events_reporting(query).await?.0)
    }

    /// [`Client::list_events`], with the ids of the events left out because this version
    /// does not know their type (one a newer server added), in id order. Any other event that
    /// does not decode fails the page with [`ClientError::Decode`].
    pub async fn list_events_reporting(
        &self,
        query: &EventsQuery,
    ) -> Result<(EventsResponse, Vec<String>)> {
        /// The page as sent, each item read on its own.
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<serde_json::Value>,
            next_after: String,
        }
        let mut query = query.clone();
        if query.limit == 0 {
            query.limit = EventsQuery::DEFAULT_LIMIT;
        }
        let page: Page = self
            .get(&format!("{}?{}", paths::EVENTS, query.to_query()))
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        let mut unreadable = Vec::new();
        for item in page.items {
            // Only a type this version does not know is left out; any other misfit is the
            // page's error, as it would be for any answer.
            if events::of_unknown_type(&item) {
                let id = item.get("id").and_then(serde_json::Value::as_str);
                unreadable.push(id.unwrap_or_default().to_owned());
                continue;
            }
            let event = serde_json::from_value(item).map_err(|source| ClientError::Decode {
                status: StatusCode::OK,
                source,
            })?;
            items.push(event);
        }
        let page = EventsResponse {
            items,
            next_after: page.next_after,
        };
        Ok((page, unreadable))
    }

    /// The live event stream (`GET /events/stream`): events after `query.after` (only new
    /// ones when `None`) passing its filters, resumed by id after every disconnect.
    ///
    /// An `Err` item may be passing (a transport failure, a 5xx, 408 or 429, an event this
    /// version cannot read): the stream goes on after it. Any other refusal (a 400, 401, 403,
    /// 409 or 410, an answer that is no event stream) or a message too long ends it: `None`
    /// follows.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) {
    /// use orchestrator_core::api::EventsQuery;
    /// let mut events = client.stream_events(EventsQuery::default());
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(event) => println!("{} {} {}", event.id, event.event_type, event.subject),
    ///         Err(e) => eprintln!("passing: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn stream_events(&self, query: EventsQuery) -> EventStream {
        EventStream::new(self.clone(), query)
    }

    /// The service's health (`GET /health`). An unhealthy server answers 503 with the same
    /// body; that comes back as `Ok` too, so the checks can be read.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let health = client.get_health().await?;
    /// println!("{:?}, up {} s", health.status, health.uptime_seconds);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_health(&self) -> Result<HealthResponse> {
        let response = self.request(Method::GET, paths::HEALTH).send().await?;
        let (status, request_id) = (response.status(), request_id(&response));
        let bytes = response.bytes().await?;
        // An unhealthy server answers 503 with the health body; any other answer is an error
        // (the server's envelope, when it gave one: its request deadline passed, say). JSON
        // that is neither, answered 200 or 503, is a health this version cannot read (a newer
        // server's).
        serde_json::from_slice(&bytes).map_err(|source| {
            let health_status = matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE);
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
            match error_from(status, request_id, &bytes) {
                ClientError::UnexpectedBody { .. } if health_status && json => {
                    ClientError::Decode { status, source }
                }
                error => error,
            }
        })
    }

    /// What the service is (`GET /`).
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// println!("{}", client.get_service_info().await?.version);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_service_info(&self) -> Result<ServiceInfo> {
        self.get(paths::ROOT).await
    }

    /// The service's metrics (`GET /metrics`), as the OpenMetrics text a Prometheus scraper
    /// reads.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let text = client.get_metrics().await?;
    /// assert!(text.contains("orchestrator_workflows"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_metrics(&self) -> Result<String> {
        self.send_text(self.request(Method::GET, paths::METRICS))
            .await
    }

    /// The service's OpenAPI document (`GET /openapi.json`): every operation with its
    /// statuses, fields' rules and examples.
    ///
    /// ```no_run
    /// # async fn demo(client: orchestrator_client::Client) -> orchestrator_client::Result<()> {
    /// let document = client.get_openapi().await?;
    /// println!("{}", document["info"]["version"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_openapi(&self) -> Result<serde_json::Value> {
        self.get(paths::OPENAPI).await
    }

    /// Sends `builder` as [`Client::send`] does and returns the answer's body as text: the
    /// metrics' (OpenMetrics, or Prometheus's plain text), or
    /// [`ClientError::UnexpectedBody`] for another kind (a proxy's sign-in page, say).
    async fn send_text(&self, builder: RequestBuilder) -> Result<String> {
        let Received {
            status,
            media,
            bytes,
        } = self.respond(builder).await.0?;
        let text = media
            .as_deref()
            .is_none_or(|media| matches!(media, "text/plain" | "application/openmetrics-text"));
        if !text {
            return Err(ClientError::UnexpectedBody {
                status,
                text: shown_text(&bytes),
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A successful answer, its body read whole.
struct Received {
    status: StatusCode,
    /// What its `Content-Type` says it is (lower case, no parameters), if it says.
    media: Option<String>,
    bytes: Vec<u8>,
}

impl Received {
    async fn read(response: reqwest::Response) -> std::result::Result<Self, reqwest::Error> {
        let status = response.status();
        let media = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media_type);
        let bytes = response.bytes().await?.into();
        Ok(Received {
            status,
            media,
            bytes,
        })
    }

    /// The call's result from the answer.
    fn decode<T: DeserializeOwned>(self) -> Result<T> {
        let Received {
            status,
            media,
            bytes,
        } = self;
        // It says it is JSON, or says nothing of what it is.
        let json = media.as_deref().is_none_or(is_json);
        // Something between that answered in its stead (a sign-in page, a proxy's): shown,
        // rather than a JSON syntax error about its first byte.
        if !json && !bytes.is_empty() {
            return Err(ClientError::UnexpectedBody {
                status,
                text: shown_text(&bytes),
            });
        }
        // 202 and 204 answer no body: read as JSON `null` (the unit type).
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|source| ClientError::Decode { status, source })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_base_url_must_be_http() {
        assert!(matches!(
            Client::new("localhost:8000"),
            Err(ClientError::InvalidBaseUrl(_))
        ));
        // A password in a refused URL, or in a client's, is not shown.
        for bad in [
            "ftp://me:s3cret@h/x",
            "me:s3cret@localhost:8000",
            "http://me:s3/cret@h",
        ] {
            let refused = Client::new(bad).unwrap_err().to_string();
            assert!(!refused.contains("s3"), "{refused}");
            assert!(refused.contains("…@"), "{refused}");
        }
        let client = Client::new("http://me:s3cret@h:1/").unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
        let builder = Client::builder().base_url("http://me:s3cret@h:1/");
        assert!(!format!("{builder:?}").contains("s3cret"));
        assert_eq!(url_shown("http://me:s3cret@h:1/"), "http://…@h:1/");
        assert_eq!(url_shown("http://h/a@b"), "http://h/a@b");
        assert_eq!(Client::new("http://h:1/").unwrap().base_url(), "http://h:1");
        // Refused before anything is sent, not as a call's transport failure.
        for url in [
            "http://localhost:80000",
            "http://",
            "https://a b",
            "http://h:1?x=1",
            "http://h:1/?",
            "http://h:1#f",
        ] {
            assert!(
                matches!(Client::new(url), Err(ClientError::InvalidBaseUrl(_))),
                "{url}"
            );
        }
        // Spaces around it (an environment variable's) are no part of it; what the parser
        // passes over is not joined to every path.
        for url in ["http://h:1 ", " http://h:1/\n", "http://h:\t1"] {
            assert_eq!(
                Client::new(url).unwrap().base_url(),
                "http://h:1",
                "{url:?}"
            );
        }
        assert_eq!(
            Client::new("http://h:1/api/").unwrap().base_url(),
            "http://h:1/api"
        );
    }

    #[test]
    fn a_long_body_that_is_no_envelope_is_cut_in_the_error() {
        let page = "<p>busy</p>".repeat(10_000);
        let error = error_from(StatusCode::BAD_GATEWAY, None, page.as_bytes());
        let ClientError::UnexpectedBody { text, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(text.len() < SHOWN_BODY + 100, "{} bytes kept", text.len());
        assert!(text.ends_with("(110000 bytes in all)"), "{text}");
        // A character the limit would split is left out whole.
        let page = format!("x{}", "é".repeat(4000));
        let error = error_from(StatusCode::BAD_GATEWAY, None, page.as_bytes());
        let ClientError::UnexpectedBody { text, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(!text.contains('\u{fffd}'), "{text}");
        assert!(text.starts_with(&page[..SHOWN_BODY - 1]), "{text}");
        let short = error_from(StatusCode::BAD_GATEWAY, None, b"<p>busy</p>");
        assert!(matches!(short, ClientError::UnexpectedBody { text, .. } if text == "<p>busy</p>"));
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_refused_and_not_shown() {
        let built = Client::builder()
            .base_url("http://h:1")
            .token("s3cret\r")
            .build();
        let Err(error) = built else {
            panic!("a token with a line ending is refused")
        };
        assert!(matches!(error, ClientError::InvalidToken));
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(
            Client::builder()
                .base_url("http://h:1")
                .token("s3cret")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn retries_back_off_doubling_up_to_a_bound() {
        assert_eq!(backoff(1, None), Duration::from_millis(200));
        assert_eq!(backoff(3, None), Duration::from_millis(800));
        assert_eq!(backoff(16, None), MAX_BACKOFF);
        assert_eq!(backoff(40, None), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let builder = Client::builder()
            .base_url("http://h:1")
            .token("s3cret-token");
        assert!(!format!("{builder:?}").contains("s3cret"));
        let client = builder.build().unwrap();
        let shown = format!("{client:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_transport_error_says_why() {
        // Nothing listens on port 9 of this machine's loopback (discard is not served).
        let client = Client::builder()
            .base_url("http://127.0.0.1:9")
            .retries(0)
            .build()
            .unwrap();
        let error = client.get_summary().await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ClientError::Transport(_)), "{text}");
        // reqwest's own line names only the URL; the cause follows it.
        assert!(text.matches(": ").count() >= 2, "{text}");
    }

    #[tokio::test]
    async fn an_error_keeps_a_code_this_version_does_not_know_and_the_request_id() {
        let answer = http::Response::builder()
            .status(409)
            .header("x-request-id", "req-7")
            .body(r#"{"error": {"code": "GATE_FROZEN", "message": "the gate is frozen"}}"#)
            .unwrap();
        let client = Client::new("http://h:1").unwrap();
        let error = client.error_of(reqwest::Response::from(answer)).await;
        let ClientError::Api {
            body,
            wire_code,
            request_id,
            ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(body.code, ErrorCode::Unknown);
        assert_eq!(wire_code, "GATE_FROZEN");
        assert_eq!(request_id.as_deref(), Some("req-7"));
        assert_eq!(error.wire_code(), Some("GATE_FROZEN"));
        assert_eq!(error.request_id(), Some("req-7"));
        assert!(error.is_conflict() && !error.is_forbidden() && !error.is_gone());
        assert_eq!(
            error.to_string(),
            "409 Conflict: the gate is frozen (GATE_FROZEN) [request req-7]"
        );
    }

    #[tokio::test]
    async fn an_errors_text_shows_its_details() {
        let answer = http::Response::builder()
            .status(409)
            .body(
                r#"{"error": {"code": "GATE_BLOCKED", "message": "consultations hold the gate",
                    "details": ["esc_1", "esc_2"]}}"#,
            )
            .unwrap();
        let client = Client::new("http://h:1").unwrap();
        let error = client.error_of(reqwest::Response::from(answer)).await;
        assert_eq!(
            error.to_string(),
            "409 Conflict: consultations hold the gate (GATE_BLOCKED): esc_1; esc_2"
        );
    }

    /// A request's head as `conn` sends it, up to its blank line.
    fn read_head(conn: &mut impl std::io::Read) -> String {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// A server that takes one request, sends `answer` (raw HTTP; none: it answers nothing)
    /// and is gone: later attempts find no server at all. Its URL.
    fn gone_after(answer: Option<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.read(&mut [0; 4096]);
            if let Some(answer) = answer {
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        address
    }

    /// A server that answers its connections in turn with `answers` (status, content type,
    /// body), the last one again for any after them; and how many connections it had.
    pub(crate) fn scripted(
        answers: Vec<(u16, &'static str, String)>,
    ) -> (String, Arc<AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let head = read_head(&mut conn);
                // The body too: a socket closed with it unread is reset, and the client may
                // see the reset instead of the answer.
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                let _ = conn.read_exact(&mut vec![0; length]);
                let (status, kind, body) = &answers[n.min(answers.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} Whatever\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn a_health_this_version_cannot_read_is_a_decode_error() {
        let newer = r#"{"status": "sideways", "checks": {}}"#.to_owned();
        for status in [200, 503] {
            let (address, _) = scripted(vec![(status, "application/json", newer.clone())]);
            let client = Client::new(address).unwrap();
            let error = client.get_health().await.unwrap_err();
            assert!(
                matches!(error, ClientError::Decode { .. }),
                "{status}: {error:?}"
            );
        }
        // A proxy's page and the server's own envelope stay what they are.
        let page = (503, "text/html", "<h1>busy</h1>".to_owned());
        let (address, _) = scripted(vec![page]);
        let error = Client::new(address)
            .unwrap()
            .get_health()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::UnexpectedBody { .. }),
            "{error:?}"
        );
        let envelope = r#"{"error": {"code": "DATABASE_UNAVAILABLE", "message": "m"}}"#;
        let (address, _) = scripted(vec![(503, "application/json", envelope.to_owned())]);
        let error = Client::new(address)
            .unwrap()
            .get_health()
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Api { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_proxys_502_or_504_is_retried_and_the_servers_own_502_is_not() {
        let ok = (200, "application/json", r#"{"a": "ok"}"#.to_owned());
        for proxy in [502, 504] {
            let page = (proxy, "text/html", "<h1>Bad Gateway</h1>".to_owned());
            let (address, connections) = scripted(vec![page, ok.clone()]);
            let client = Client::new(address).unwrap();
            assert_eq!(client.get_openapi().await.unwrap()["a"], "ok");
            assert_eq!(connections.load(Ordering::SeqCst), 2, "{proxy}");
        }
        let hub = (
            502,
            "application/json",
            r#"{"error": {"code": "AGENT_HUB_ERROR", "message": "the agent hub answered with an error"}}"#
                .to_owned(),
        );
        let (address, connections) = scripted(vec![hub, ok]);
        let client = Client::new(address).unwrap();
        let error = client.get_openapi().await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::AgentHubError), "{error:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_whose_first_attempt_is_still_answered_waits_for_it_beyond_its_retries() {
        // An error envelope answered with `Retry-After: 0` (the stub writes the content type
        // as given: the header rides on it).
        let asking_again = |status, code: &str| {
            let body = format!(r#"{{"error": {{"code": "{code}", "message": "{code}"}}}}"#);
            (status, "application/json\r\nretry-after: 0", body)
        };
        let in_use = asking_again(409, "IDEMPOTENCY_KEY_IN_USE");
        let ok = (200, "application/json", r#"{"a": "ok"}"#.to_owned());
        let (address, connections) = scripted(vec![
            in_use.clone(),
            in_use.clone(),
            in_use.clone(),
            in_use.clone(),
            ok,
        ]);
        let client = Client::builder().base_url(address).build().unwrap();
        let answer: serde_json::Value = client.post("/anything", &()).await.unwrap();
        assert_eq!(
            answer["a"], "ok",
            "four answers 'in use', more than its 2 retries"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 5);

        // A server that says "in use" for ever is asked no longer than the patience.
        let (address, connections) = scripted(vec![in_use.clone()]);
        let mut client = Client::builder().base_url(address).build().unwrap();
        client.in_use_patience = Duration::from_secs(1);
        let error = client
            .post::<_, serde_json::Value>("/anything", &())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::IdempotencyKeyInUse));
        assert!(
            connections.load(Ordering::SeqCst) > 3,
            "asked again past its retries"
        );

        // Once the server says something else, the retries count again: after one "in use"
        // (not counted), 503s are asked again twice, and the third is the answer.
        let unavailable = asking_again(503, "SERVICE_UNAVAILABLE");
        let (address, connections) = scripted(vec![in_use.clone(), unavailable]);
        let client = Client::builder().base_url(address).build().unwrap();
        let error = client
            .post::<_, serde_json::Value>("/anything", &())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::ServiceUnavailable));
        assert_eq!(connections.load(Ordering::SeqCst), 4);

        // Retries off: nothing is asked again.
        let (address, connections) = scripted(vec![in_use]);
        let client = Client::builder()
            .base_url(address)
            .retries(0)
            .build()
            .unwrap();
        let error = client
            .post::<_, serde_json::Value>("/anything", &())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::IdempotencyKeyInUse));
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_cut_off_on_its_way_is_asked_for_again_under_the_same_key() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = keys.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { break };
                let head = read_head(&mut conn).to_lowercase();
                let key = head
                    .lines()
                    .find_map(|line| line.strip_prefix("idempotency-key: "))
                    .map(str::to_owned);
                seen.lock().unwrap().push(key);
                let _ = conn.read(&mut [0; 1024]);
                // The first answer says 201 and its length, then its connection drops.
                let _ = if n == 0 {
                    write!(
                        conn,
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{{\"secret\""
                    )
                } else {
                    let body = r#"{"secret": "kept"}"#;
                    write!(
                        conn,
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nidempotent-replayed: true\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
            }
        });
        let client = Client::new(address).unwrap();
        let answer: serde_json::Value = client.post("/webhooks", &()).await.unwrap();
        assert_eq!(answer["secret"], "kept");
        let keys = keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys[0].is_some());
        assert_eq!(
            keys[0], keys[1],
            "the retry carries the first attempt's key"
        );
    }

    #[tokio::test]
    async fn a_call_whose_server_went_away_mid_request_fails_with_that_not_a_later_refusal() {
        // The server takes the request and stops without answering.
        let client = Client::new(gone_after(None)).unwrap();
        let (result, maybe_done) = client
            .send_counted::<serde_json::Value>(client.keyed_post("/workflow/start", &()))
            .await;
        assert!(maybe_done);
        match result {
            Err(ClientError::Transport(e)) => assert!(!e.is_connect(), "{e:?}"),
            other => panic!("{other:?}"),
        }

        // Likewise after an answer that leaves the outcome open (a 503 past the request's
        // bound), then no server.
        let body =
            r#"{"error": {"code": "SERVICE_UNAVAILABLE", "message": "may still be carried out"}}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let client = Client::new(gone_after(Some(answer))).unwrap();
        let (result, maybe_done) = client
            .send_counted::<serde_json::Value>(client.keyed_post("/workflow/start", &()))
            .await;
        assert!(maybe_done);
        let error = result.unwrap_err();
        assert_eq!(
            error.code(),
            Some(ErrorCode::ServiceUnavailable),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_success_that_is_not_json_shows_what_answered() {
        let page = (
            200,
            "text/html; charset=utf-8",
            "<html><body>Sign in to the proxy</body></html>".to_owned(),
        );
        let (address, _) = scripted(vec![page]);
        let error = Client::new(address)
            .unwrap()
            .get_summary()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::UnexpectedBody { status, text }
                if *status == StatusCode::OK && text.contains("Sign in to the proxy")),
            "{error:?}"
        );
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/html"));
    }

    #[tokio::test]
    async fn health_that_is_no_health_answer_says_the_servers_error() {
        let deadline = (
            503,
            "application/json",
            r#"{"error": {"code": "SERVICE_UNAVAILABLE", "message": "the request could not be answered in time"}}"#
                .to_owned(),
        );
        let (address, _) = scripted(vec![deadline]);
        let error = Client::new(address)
            .unwrap()
            .get_health()
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(ErrorCode::ServiceUnavailable),
            "{error:?}"
        );
    }

    #[test]
    fn an_api_error_prints_the_code_as_the_wire_spells_it() {
        let error = ClientError::Api {
            status: StatusCode::CONFLICT,
            body: ApiErrorBody {
                code: ErrorCode::ConsultationNotPending,
                message: "consultation c-1 is resolved; there is nothing to answer".into(),
                details: None,
            },
            wire_code: "CONSULTATION_NOT_PENDING".into(),
            request_id: None,
        };
        assert_eq!(
            error.to_string(),
            "409 Conflict: consultation c-1 is resolved; there is nothing to answer \
             (CONSULTATION_NOT_PENDING)"
        );
    }
}
